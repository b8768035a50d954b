# Baseline of mask-rcnn_boat_swin-b_coco_1x.py: the same model, recipe and schedule with FSLA switched off:
# Swin-B, i.e. BOAT-Swin-B without its feature-space attention, for BOAT-vs-baseline comparisons.
# Initialised from the official Swin-B ImageNet-1K weights converted with
# tools/model_converters/boat2mm.py (see docs/benchmarking.md).
_base_ = '../mask-rcnn_boat_swin-b_coco_1x.py'
model = dict(backbone=dict(fsla_stages=(),
                           init_cfg=dict(checkpoint='checkpoints/swin_base_in1k.pth')))
