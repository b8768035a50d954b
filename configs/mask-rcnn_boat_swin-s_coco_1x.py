# Mask R-CNN + FPN with BOAT-Swin-S, COCO, 1x schedule (12 epochs).
_base_ = './mask-rcnn_boat_swin_coco_1x.py'
model = dict(backbone=dict(arch='small', drop_path_rate=0.3,
                           init_cfg=dict(checkpoint='checkpoints/boat_swin_small_in1k.pth')))
