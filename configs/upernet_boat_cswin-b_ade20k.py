# UperNet with BOAT-CSWin-B, ADE20K 512x512, 160k iterations; drop path 0.6 (public CSWin-B recipe).
_base_ = './upernet_boat_cswin_ade20k.py'
model = dict(backbone=dict(arch='base', drop_path_rate=0.6,
                           init_cfg=dict(checkpoint='checkpoints/boat_cswin_base_in1k.pth')),
             decode_head=dict(in_channels=[96, 192, 384, 768]), auxiliary_head=dict(in_channels=384))
