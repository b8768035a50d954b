# UperNet with BOAT-Swin-B, ADE20K 512x512, 160k iterations.
_base_ = './upernet_boat_swin_ade20k.py'
model = dict(backbone=dict(arch='base', init_cfg=dict(checkpoint='checkpoints/boat_swin_base_in1k.pth')),
             decode_head=dict(in_channels=[128, 256, 512, 1024]), auxiliary_head=dict(in_channels=512))
