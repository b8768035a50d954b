# BOAT-Swin-B, ImageNet-1K 224x224 (drop path 0.5, as released).
_base_ = './cls_boat_swin_imagenet.py'
model = dict(backbone=dict(arch='base', drop_path_rate=0.5), head=dict(in_channels=1024))
