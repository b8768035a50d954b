# Mask R-CNN + FPN with BOAT-Swin-B, COCO, 3x multi-scale crop schedule (36 epochs).
_base_ = './mask-rcnn_boat_swin_coco_3x.py'
model = dict(backbone=dict(arch='base', drop_path_rate=0.3,
                           init_cfg=dict(checkpoint='checkpoints/boat_swin_base_in1k.pth')),
             neck=dict(in_channels=[128, 256, 512, 1024]))
