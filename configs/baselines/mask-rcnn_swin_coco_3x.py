# Baseline of mask-rcnn_boat_swin_coco_3x.py: the same model, recipe and schedule with FSLA switched off:
# Swin-T, i.e. BOAT-Swin-T without its feature-space attention, for BOAT-vs-baseline comparisons.
# Initialised from the official Swin-T ImageNet-1K weights converted with
# tools/model_converters/boat2mm.py (see docs/benchmarking.md).
_base_ = '../mask-rcnn_boat_swin_coco_3x.py'
model = dict(backbone=dict(fsla_stages=(),
                           init_cfg=dict(checkpoint='checkpoints/swin_tiny_in1k.pth')))
