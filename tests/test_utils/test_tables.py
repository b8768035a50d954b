"""The one markdown table writer: rows as sequences or as mappings give the same table."""
from boat_mm.utils.tables import markdown_table


def test_sequences_and_mappings():
    columns = ['model', 'ms']
    expected = '| model | ms |\n|---|---|\n| a | 1.5 |\n| b | 2 |'
    assert markdown_table([['a', 1.5], ['b', 2]], columns) == expected
    assert markdown_table([dict(ms=1.5, model='a'), dict(model='b', ms=2)], columns) == expected
