# Baseline of upernet_boat_cswin-s_ade20k.py: the same model, recipe and schedule with FSLA switched off:
# CSWin-S, i.e. BOAT-CSWin-S without its feature-space attention, for BOAT-vs-baseline comparisons.
# Initialised from the official CSWin-S ImageNet-1K weights converted with
# tools/model_converters/boat2mm.py (see docs/benchmarking.md).
_base_ = '../upernet_boat_cswin-s_ade20k.py'
model = dict(backbone=dict(fsla_stages=(),
                           init_cfg=dict(checkpoint='checkpoints/cswin_small_in1k.pth')))
