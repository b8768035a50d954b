# UperNet with BOAT-CSWin-S, ADE20K 512x512, 160k iterations.
_base_ = './upernet_boat_cswin_ade20k.py'
model = dict(backbone=dict(arch='small', drop_path_rate=0.3,
                           init_cfg=dict(checkpoint='checkpoints/boat_cswin_small_in1k.pth')))
