# Mask R-CNN + FPN with BOAT-CSWin-T, COCO, 1x schedule (12 epochs);
# mmdet's Swin recipe (AdamW, no weight decay on norms and position tables), 8 GPUs x 2 images.
# ImageNet weights: see README, "Released weights".
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', './_base_/mask-rcnn_tta.py']
custom_imports = dict(imports=['boat_mm', 'boat_mm.models.test_time_augs.det_tta'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True, type='BOATCSWinTransformer', arch='tiny', out_indices=(0, 1, 2, 3), drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/boat_cswin_tiny_in1k.pth',
                      prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 256, 512]))
