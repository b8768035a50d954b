# Mask R-CNN + FPN with BOAT-Swin-T, COCO, 3x multi-scale crop schedule (36 epochs);
# mmdet's Swin recipe (AdamW, no weight decay on norms and position tables), 8 GPUs x 2 images.
# ImageNet weights: see README, "Released weights".
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py', './_base_/mask-rcnn_tta.py']
custom_imports = dict(imports=['boat_mm', 'boat_mm.models.test_time_augs.det_tta'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True, type='BOATSwinTransformer', arch='tiny', out_indices=(0, 1, 2, 3), drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/boat_swin_tiny_in1k.pth',
                      prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]))
