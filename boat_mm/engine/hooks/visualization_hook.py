"""mmpretrain's ``VisualizationHook`` for ``tools/test.py --tta --show-dir``.

mmpretrain's hook draws the batch tensor it is given; under test-time augmentation the batch holds one list
per view instead, and the hook fails (``'tuple' object has no attribute 'permute'``). This one draws the
merged prediction on the image file itself then, as mmdet's and mmseg's hooks always do; without TTA it is
mmpretrain's hook unchanged.
"""
import mmcv
import torch
from mmpretrain.engine.hooks import VisualizationHook
from mmpretrain.registry import HOOKS

__all__ = ['TTAAwareVisualizationHook']


@HOOKS.register_module()
class TTAAwareVisualizationHook(VisualizationHook):

    def _draw_samples(self, batch_idx, data_batch, data_samples, step=0):
        inputs = data_batch['inputs']
        if isinstance(inputs, (list, tuple)) and inputs and not isinstance(inputs[0], torch.Tensor):  # views
            images = [torch.from_numpy(mmcv.imread(sample.img_path, channel_order='rgb')).permute(2, 0, 1)
                      for sample in data_samples]
            data_batch = {**data_batch, 'inputs': images}
        super()._draw_samples(batch_idx, data_batch, data_samples, step)
