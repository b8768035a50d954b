"""Optimizer wrappers and their constructors, registered in mmengine's root registries (which every toolbox's
falls back to): ``cpu_amp_optim_wrapper`` (bf16 AMP on the CPU; ``tools/train.py`` swaps it in without CUDA)
and ``layer_decay_optim_wrapper_constructor`` (layer-wise lr decay for detectors and segmentors; needs
mmpretrain, so a config imports it by name)."""
__all__ = []
