"""Layer-wise learning-rate decay in mmdet and mmseg configs, as mmpretrain does it for classifiers.

mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` asks the *model* for ``get_layer_depth``: its
classifiers have one (delegating to the backbone), mmdet's detectors and mmseg's segmentors do not, so the
stock constructor refuses them. ``BackboneLayerDecayOptimWrapperConstructor`` is that constructor with one
change: a model without ``get_layer_depth`` takes its backbone's (``backbone.`` names at the backbone's
depths; necks, heads and everything else at the last depth, the full learning rate). Import it in a config:

    custom_imports = dict(imports=['boat_mm', 'boat_mm.engine.optimizers.layer_decay_optim_wrapper_constructor'],
                          allow_failed_imports=False)
    optim_wrapper = dict(constructor='BackboneLayerDecayOptimWrapperConstructor',
                         paramwise_cfg=dict(layer_decay_rate=0.9), ...)
"""
from functools import partial

from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmpretrain.engine.optimizers import LearningRateDecayOptimWrapperConstructor

__all__ = ['BackboneLayerDecayOptimWrapperConstructor', 'BACKBONE_PREFIX']

BACKBONE_PREFIX = 'backbone.'  # where mmpretrain, mmdet and mmseg models keep their backbone


# Registered in mmengine's root registry, which mmpretrain's, mmdet's and mmseg's registries fall back to.
@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class BackboneLayerDecayOptimWrapperConstructor(LearningRateDecayOptimWrapperConstructor):
    """mmpretrain's layer-wise lr decay (``paramwise_cfg.layer_decay_rate``: lr x rate ** (num_layers - depth
    - 1)), with the depths of ``model.backbone.get_layer_depth`` when the model itself has none."""

    def add_params(self, params, module, prefix='', get_layer_depth=None, **kwargs) -> None:
        if get_layer_depth is None and not hasattr(module, 'get_layer_depth'):
            backbone = getattr(module, 'backbone', None)
            if not hasattr(backbone, 'get_layer_depth'):
                raise TypeError(f'{type(self).__name__}: neither {type(module).__name__} nor its backbone '
                                f'({type(backbone).__name__}) has get_layer_depth; layer-wise lr decay needs '
                                'the depth of every parameter (BOAT backbones and mmpretrain backbones have it)')
            get_layer_depth = partial(backbone.get_layer_depth, prefix=BACKBONE_PREFIX)
        super().add_params(params, module, prefix=prefix, get_layer_depth=get_layer_depth, **kwargs)
