"""tools/visualize_clusters.py: figure size, cluster colours, highlighted members."""
import importlib.util
import os.path as osp

import numpy as np
import pytest
import torch
from conftest import REPO  # noqa: E402
from PIL import Image

from boat_mm.visualization.clusters import FIGURE_DPI, PANEL_INCHES, TITLE_INCHES, distinct_colours

SPEC = importlib.util.spec_from_file_location('visualize_clusters', osp.join(REPO, 'tools', 'visualize_clusters.py'))
TOOL = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(TOOL)

SMALL = {
    'cswin': ('configs/demo/upernet_boat_cswin_ade20k_demo.py',
              "model = dict(backbone=dict(arch=dict(_delete_=True, embed_dims=16, depths=(1, 2, 2, 1), "
              "num_heads=(2, 2, 4, 4), split_sizes=(1, 2, 7, 7))), decode_head=dict(in_channels=[16, 32, 64, 128], "
              "channels=16), auxiliary_head=dict(in_channels=64, channels=16))\n"),
    'swin': ('configs/upernet_boat_swin_ade20k.py',
             "model = dict(backbone=dict(arch=dict(_delete_=True, embed_dims=16, depths=(2, 2, 2, 2), "
             "num_heads=(2, 2, 4, 4))), decode_head=dict(in_channels=[16, 32, 64, 128], channels=16), "
             "auxiliary_head=dict(in_channels=64, channels=16))\n"),
}


@pytest.fixture
def odd_image(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / 'odd.png'
    Image.fromarray(rng.integers(0, 255, (97, 131, 3), dtype=np.uint8)).save(path)
    return str(path)


def small_config(tmp_path, family):
    base, body = SMALL[family]
    path = tmp_path / f'{family}.py'
    path.write_text(f'_base_ = {osp.join(REPO, base)!r}\n' + body)
    return str(path)


def expected_size(panels):
    return round(PANEL_INCHES * panels * FIGURE_DPI), round((PANEL_INCHES + TITLE_INCHES) * FIGURE_DPI)


def module_clusters(perm, plan, head):
    """Cluster of every real token, read straight from the module's permutation."""
    clusters = {}
    for slot, token in enumerate(perm[head].tolist()):
        if token < plan.num_tokens:
            clusters.setdefault(slot // plan.slots_per_cluster, set()).add(token)
    return clusters


@pytest.mark.parametrize('family', ['swin', 'cswin'])
def test_tool_writes_png_of_expected_size_and_paints_every_cluster(tmp_path, odd_image, family):
    out = tmp_path / 'clusters.png'
    torch.manual_seed(0)
    drawn = TOOL.main([odd_image, small_config(tmp_path, family), '--out', str(out), '--head', '1'])
    assert Image.open(out).size == expected_size(2)
    record_clusters = drawn['cluster_ids']
    # every patch painted exactly once, with as many distinct colours as the module made clusters
    assert (record_clusters >= 0).all()
    colours = drawn['colours'].reshape(-1, 3)
    assert len({tuple(c) for c in colours}) == drawn['num_clusters'] > 1
    assert colours.shape[0] == record_clusters.numel()


def test_point_highlights_exactly_its_cluster(tmp_path, odd_image):
    out = tmp_path / 'point.png'
    config = small_config(tmp_path, 'cswin')
    captured = {}
    original = TOOL.capture_clusters

    def spy(*args, **kwargs):
        captured.update(original(*args, **kwargs))
        return captured

    TOOL.capture_clusters = spy
    try:
        drawn = TOOL.main([odd_image, config, '--out', str(out), '--point', '50', '40', '--stage', '2'])
    finally:
        TOOL.capture_clusters = original
    assert Image.open(out).size == expected_size(3)
    clusters = module_clusters(captured['perm'], captured['plan'], head=0)
    token = drawn['token']
    members = next(c for c in clusters.values() if token in c)
    assert set(drawn['members']) == members
    highlighted = np.flatnonzero((drawn['highlight'].reshape(-1, 4)[:, :3] == (1.0, 0.85, 0.0)).all(1))
    assert set(highlighted.tolist()) == members
    assert not set(drawn['overlap']) & members and len(drawn['overlap']) == captured['plan'].overlap


def test_distinct_colours_are_distinct():
    colours = distinct_colours(300)
    assert len({tuple(c) for c in colours}) == 300


def test_bad_stage_is_reported(tmp_path, odd_image):
    with pytest.raises(SystemExit, match='has no FSLA block'):
        TOOL.main([odd_image, small_config(tmp_path, 'swin'), '--out', str(tmp_path / 'x.png'), '--stage', '4'])
