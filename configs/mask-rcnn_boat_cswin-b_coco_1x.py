# Mask R-CNN + FPN with BOAT-CSWin-B, COCO, 1x schedule (12 epochs).
_base_ = './mask-rcnn_boat_cswin_coco_1x.py'
model = dict(backbone=dict(arch='base', drop_path_rate=0.4,
                           init_cfg=dict(checkpoint='checkpoints/boat_cswin_base_in1k.pth')),
             neck=dict(in_channels=[96, 192, 384, 768]))
