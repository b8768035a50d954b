# Baseline of mask-rcnn_boat_cswin-b_coco_1x.py: the same model, recipe and schedule with FSLA switched off:
# CSWin-B, i.e. BOAT-CSWin-B without its feature-space attention, for BOAT-vs-baseline comparisons.
# Initialised from the official CSWin-B ImageNet-1K weights converted with
# tools/model_converters/boat2mm.py (see docs/benchmarking.md).
_base_ = '../mask-rcnn_boat_cswin-b_coco_1x.py'
model = dict(backbone=dict(fsla_stages=(),
                           init_cfg=dict(checkpoint='checkpoints/cswin_base_in1k.pth')))
