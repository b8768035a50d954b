# Multi-scale + flip test-time augmentation for the Mask R-CNN configs (`tools/test.py CONFIG CKPT --tta`), with
# mmdet's TTA scales: 3 scales x 2 flips = 6 views per image, boxes merged by NMS, each kept box with its own mask
# (boat_mm.models.test_time_augs.det_tta.MaskDetTTAModel: mmdet 3.3's DetTTAModel refuses masks).
custom_imports = dict(imports=['boat_mm', 'boat_mm.models.test_time_augs.det_tta'], allow_failed_imports=False)

tta_scales = [(1333, 800), (666, 400), (2000, 1200)]
tta_model = dict(type='MaskDetTTAModel',
                 tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=scale, keep_ratio=True) for scale in tta_scales],
        [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
        [dict(type='LoadAnnotations', with_bbox=True, with_mask=True)],
        [dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                                                'flip', 'flip_direction'))],
    ]),
]
