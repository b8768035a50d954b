# Baseline of cls_boat_cswin-s_imagenet.py: the same model, recipe and schedule with FSLA switched off:
# CSWin-S, i.e. BOAT-CSWin-S without its feature-space attention, for BOAT-vs-baseline comparisons.
# Trained from scratch on ImageNet-1K like its BOAT twin.
_base_ = '../cls_boat_cswin-s_imagenet.py'
model = dict(backbone=dict(fsla_stages=()))
