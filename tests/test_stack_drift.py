"""Behaviour does not drift between torch versions: the float64 outputs and gradients of both tiny backbones,
on saved weights and inputs, equal those the pinned stack (torch 2.14.1) computed, on every tested stack
(torch 2.1.2 to 2.15). The fixture holds the weights too, so initialisation differences between versions
cannot hide a change in the forward.

    python tests/test_stack_drift.py   # rewrite tests/data/stack_fixture.pt (on the pinned stack only)
"""
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from conftest import TINY_ARCHS  # noqa: E402

FIXTURE = osp.join(osp.dirname(osp.abspath(__file__)), 'data', 'stack_fixture.pt')
INPUT_SHAPES = ((1, 3, 224, 224), (1, 3, 97, 131))  # the released input size, and an odd one (padding)
TOLERANCE = 1e-12  # float64: two stacks with the same clusters agree to rounding (~1e-15 measured)
SAMPLES = 2048  # values kept of each output (fixed positions) beside its sum: the fixture stays small


def _outputs(model, x):
    """Of every stage output and of the input gradient (of the sum of output means), float64: the sum and
    ``SAMPLES`` values at positions fixed by a seeded generator."""
    x = x.clone().requires_grad_()
    outs = model(x)
    sum(out.mean() for out in outs).backward()
    summaries = []
    for tensor in [out.detach() for out in outs] + [x.grad]:
        flat = tensor.flatten()
        positions = torch.randint(0, flat.numel(), (SAMPLES,), generator=torch.Generator().manual_seed(2))
        summaries.append(torch.cat([flat.sum().view(1), flat[positions]]))
    return summaries


def _make_fixture():
    fixture = {'torch': str(torch.__version__), 'cases': {}}
    for cls in TINY_ARCHS:
        torch.manual_seed(0)
        model = cls(arch=TINY_ARCHS[cls]).eval()  # eval: no drop path (gradients still flow)
        model.init_weights()
        # weights stored in bfloat16 (2 MB instead of 9), used in float64: exact in both, whatever the torch
        weights = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in model.state_dict().items()}
        model.load_state_dict(weights)
        model.double()
        generator = torch.Generator().manual_seed(1)
        inputs = [torch.randn(*shape, generator=generator) for shape in INPUT_SHAPES]  # float32, used as float64
        fixture['cases'][cls.__name__] = dict(state_dict=weights, inputs=inputs,
                                              outputs=[_outputs(model, x.double()) for x in inputs])
    return fixture


def test_float64_outputs_and_gradients_equal_the_pinned_stacks():
    fixture = torch.load(FIXTURE, map_location='cpu', weights_only=True)
    for cls in TINY_ARCHS:
        case = fixture['cases'][cls.__name__]
        model = cls(arch=TINY_ARCHS[cls]).eval()
        model.load_state_dict(case['state_dict'])
        model.double()
        for x, expected in zip(case['inputs'], case['outputs']):
            got = _outputs(model, x.double())
            worst = max(float((a - b).abs().max()) for a, b in zip(got, expected))
            assert worst <= TOLERANCE, (f'{cls.__name__} {tuple(x.shape)}: max |diff| {worst:.2e} against '
                                        f'torch {fixture["torch"]} (this is torch {torch.__version__})')


if __name__ == '__main__':
    torch.save(_make_fixture(), FIXTURE)
    print(f'wrote {FIXTURE} (torch {torch.__version__})')
