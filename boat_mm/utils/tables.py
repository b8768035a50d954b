"""The one markdown table writer of boat_mm (run comparison, whole-model and benchmark-script tables)."""
from typing import Mapping, Sequence, Union

__all__ = ['markdown_table']


def markdown_table(rows: Sequence[Union[Sequence, Mapping]], columns: Sequence[str]) -> str:
    """A markdown table: ``rows`` are sequences of cells in column order, or mappings from column name."""
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    for row in rows:
        cells = [row[column] for column in columns] if isinstance(row, Mapping) else row
        lines.append('| ' + ' | '.join(str(cell) for cell in cells) + ' |')
    return '\n'.join(lines)
