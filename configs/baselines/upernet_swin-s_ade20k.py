# Baseline of upernet_boat_swin-s_ade20k.py: the same model, recipe and schedule with FSLA switched off:
# Swin-S, i.e. BOAT-Swin-S without its feature-space attention, for BOAT-vs-baseline comparisons.
# Initialised from the official Swin-S ImageNet-1K weights converted with
# tools/model_converters/boat2mm.py (see docs/benchmarking.md).
_base_ = '../upernet_boat_swin-s_ade20k.py'
model = dict(backbone=dict(fsla_stages=(),
                           init_cfg=dict(checkpoint='checkpoints/swin_small_in1k.pth')))
