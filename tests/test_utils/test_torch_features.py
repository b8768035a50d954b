"""The torch-version shims of ``boat_mm.utils.torch_features`` that the model code relies on."""
import pytest
import torch

from boat_mm.utils.torch_features import autocast_available, constant_under_compile, torch_at_least


def test_constant_under_compile_marks_its_call_as_dynamo_does():
    """Our mark is dynamo's own (set without importing torch._dynamo): if a torch release changes
    ``assume_constant_result``, this fails instead of plans and masks silently becoming traced ops again."""
    import torch._dynamo

    def build(n):
        return torch.arange(n)

    def dynamos():
        return 0
    ours = constant_under_compile(build)
    assert vars(ours.constant_call) == vars(torch._dynamo.assume_constant_result(dynamos)) != {}
    assert torch.equal(ours(3), torch.arange(3)) and ours.__name__ == 'build'


@pytest.mark.skipif(not torch_at_least(2, 5), reason='torch.compile of the backbones needs torch >= 2.5')
def test_constants_of_different_shapes_meet_in_one_graph():
    """Two constants of different shapes read in one fullgraph compile: a bare tensor result of
    ``assume_constant_result`` broke exactly this ('GetAttrVariable ... shape', torch 2.14)."""
    import torch._dynamo
    torch._dynamo.reset()
    ones = constant_under_compile(lambda n: torch.ones(n, n + 1))

    def forward(x):
        return x + ones(2).shape[0] + ones(3).shape[1] + ones(3).sum()
    assert torch.compile(forward, fullgraph=True, backend='eager')(torch.zeros(1)).item() == 2 + 4 + 12


def test_autocast_available_on_every_torch():
    assert autocast_available('cpu') and not autocast_available('meta')
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert autocast_available('cpu')
