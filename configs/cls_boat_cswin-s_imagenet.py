# BOAT-CSWin-S, ImageNet-1K 224x224 (drop path 0.4, as released).
_base_ = './cls_boat_cswin_imagenet.py'
model = dict(backbone=dict(arch='small', drop_path_rate=0.4))
