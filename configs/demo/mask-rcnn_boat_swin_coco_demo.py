# configs/mask-rcnn_boat_swin_coco_1x.py on the synthetic COCO-format demo data, sized for a CPU.
_base_ = '../mask-rcnn_boat_swin_coco_1x.py'

data_root = 'data/demo/coco/'
image_scale = (160, 128)
metainfo = dict(classes=('red_stripes', 'green_checks', 'blue_dots'),
                palette=[(220, 60, 50), (60, 200, 80), (50, 90, 230)])
num_classes = 3

model = dict(
    backbone=dict(init_cfg=None),
    roi_head=dict(bbox_head=dict(num_classes=num_classes), mask_head=dict(num_classes=num_classes)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline,
                 ann_file='annotations/instances_train2017.json', data_prefix=dict(img='train2017/')))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline,
                 ann_file='annotations/instances_val2017.json', data_prefix=dict(img='val2017/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=2e-4))
param_scheduler = [dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=10)]
train_cfg = dict(max_epochs=2, val_interval=2)
default_hooks = dict(logger=dict(interval=4), checkpoint=dict(interval=1))

# --tta at the demo's size: mmdet's three TTA scales relative to the test scale (1x, 0.5x, 1.5x), x 2 flips
tta_scales = [image_scale, (image_scale[0] // 2, image_scale[1] // 2),
              (image_scale[0] * 3 // 2, image_scale[1] * 3 // 2)]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=scale, keep_ratio=True) for scale in tta_scales],
        [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
        [dict(type='LoadAnnotations', with_bbox=True, with_mask=True)],
        [dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                                                'flip', 'flip_direction'))],
    ]),
]
