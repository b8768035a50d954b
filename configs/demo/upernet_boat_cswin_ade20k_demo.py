# `make demo`: configs/upernet_boat_cswin_ade20k.py (BOAT-CSWin-T + UperNet, architecture unchanged) on the
# synthetic ADE20K-format demo data, sized for a CPU: only data root, crop, schedule and norm differ.
_base_ = '../upernet_boat_cswin_ade20k.py'

data_root = 'data/demo/ade20k'
crop_size = (128, 128)
demo_iters = 60
metainfo = dict(classes=('red_stripes', 'green_checks', 'blue_dots'),
                palette=[[220, 60, 50], [60, 200, 80], [50, 90, 230]])
num_classes = 3
norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN has no CPU kernel

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=None),  # trained from scratch: no ImageNet weights needed for the demo
    decode_head=dict(num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=dict(num_classes=num_classes, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.9),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
demo_dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo, img_suffix='.jpg',
                    seg_map_suffix='.png', reduce_zero_label=True)
train_dataloader = dict(
    batch_size=4, num_workers=2,
    dataset=dict(_delete_=True, **demo_dataset, pipeline=train_pipeline,
                 data_prefix=dict(img_path='images/training', seg_map_path='annotations/training')))
val_dataloader = dict(
    batch_size=1, num_workers=2,
    dataset=dict(_delete_=True, **demo_dataset, pipeline=test_pipeline,
                 data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation')))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=4e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=10),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=10, end=demo_iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=demo_iters, val_interval=demo_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=30, max_keep_ckpts=2))
randomness = dict(seed=0)  # the demo reports one reproducible number
