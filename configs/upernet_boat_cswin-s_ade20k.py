# UperNet with BOAT-CSWin-S, ADE20K 512x512, 160k iterations; drop path 0.4 (public CSWin-S recipe).
_base_ = './upernet_boat_cswin_ade20k.py'
model = dict(backbone=dict(arch='small', drop_path_rate=0.4,
                           init_cfg=dict(checkpoint='checkpoints/boat_cswin_small_in1k.pth')))
