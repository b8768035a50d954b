# UperNet with BOAT-Swin-S, ADE20K 512x512, 160k iterations.
_base_ = './upernet_boat_swin_ade20k.py'
model = dict(backbone=dict(arch='small', init_cfg=dict(checkpoint='checkpoints/boat_swin_small_in1k.pth')))
