"""FLOPs counting: one FSLA block against a hand formula; get_flops on a config."""
import math
import os.path as osp
import subprocess
import sys

import torch
from conftest import REPO  # noqa: E402

from boat_mm.analysis import count_complexity, fsla_flops
from boat_mm.models.layers.feature_space_attention import FeatureSpaceLocalAttention


def test_fsla_block_matches_hand_formula_at_released_size():
    # Stage 1 of BOAT-Swin-T at 224: N = 56*56 = 3136 = 49 * 2**6, C = 96, 3 heads, 69 keys per query.
    n, c, heads, levels, keys = 3136, 96, 3, 6, 49 + 20
    projections = 3 * n * c * c + n * c * c
    lepe = 9 * n * c
    attention = 2 * n * keys * c
    clustering = n * c + sum(n * c + 2 * 4 * n * c + 2 * n * c + heads * n * int(math.log2(n >> lvl))
                             for lvl in range(levels))
    parts = fsla_flops(n, c, heads)
    assert parts['attention'] == attention
    assert parts['total'] == projections + lepe + attention + clustering


def test_one_cluster_attends_to_all_tokens_and_skips_clustering():
    parts = fsla_flops(49, 64, 2)
    assert parts['attention'] == 2 * 49 * 49 * 64 and parts['clustering'] == 0


def test_model_count_replaces_the_generic_fsla_count():
    torch.manual_seed(0)
    module = FeatureSpaceLocalAttention(32, 2)

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fsla = module

        def forward(self, x):
            return self.fsla(x.flatten(2).transpose(1, 2), x.shape[2:])

    stats = count_complexity(Wrapper(), torch.randn(1, 32, 14, 14))
    assert stats['fsla_calls'] == 1
    assert stats['flops'] == fsla_flops(196, 32, 2)['total']
    assert 0 < stats['generic_flops_seen_in_fsla'] < stats['flops']


def test_get_flops_cli_on_a_config(tmp_path):
    config = tmp_path / 'small.py'
    config.write_text(f"_base_ = {osp.join(REPO, 'configs', 'upernet_boat_swin_ade20k.py')!r}\n"
                      "model = dict(backbone=dict(arch=dict(_delete_=True, embed_dims=16, depths=(2, 2, 2, 2), "
                      "num_heads=(1, 2, 2, 4))), decode_head=dict(in_channels=[16, 32, 64, 128], channels=16), "
                      "auxiliary_head=dict(in_channels=64, channels=16))\n")
    result = subprocess.run([sys.executable, 'tools/analysis_tools/get_flops.py', str(config), '--shape', '96', '128'],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'input:      1x3x96x128' in result.stdout
    assert 'of which FSLA' in result.stdout and 'in 3 calls' in result.stdout
    assert f'[get_flops] building {config} and counting its FLOPs: ' in result.stderr
