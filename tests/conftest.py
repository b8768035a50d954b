"""Test isolation: each test starts with the mmengine default scope it found (none, normally).

``init_default_scope`` and the Runner set a process-wide default scope, and a backbone built without
``out_indices`` follows the scope's toolbox (mmpretrain: last stage only), so a scope left behind by one
test would change what the next one builds."""
import pytest
from mmengine.registry import DefaultScope


@pytest.fixture(autouse=True)
def restore_default_scope():
    saved = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict = type(DefaultScope._instance_dict)(saved)


@pytest.fixture
def grace_hopper() -> str:
    """A real photograph (512x600 RGB JPEG) that matplotlib ships: test images without downloads."""
    import os.path as osp

    import matplotlib
    return osp.join(matplotlib.get_data_path(), 'sample_data', 'grace_hopper.jpg')
