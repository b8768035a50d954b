# configs/cls_boat_swin_imagenet.py on the synthetic ImageNet-format demo data, sized for a CPU.
_base_ = '../cls_boat_swin_imagenet.py'

data_root = 'data/demo/imagenet'
image_size = 64
num_classes = 3

model = dict(head=dict(num_classes=num_classes), train_cfg=dict(_delete_=True))  # no Mixup/CutMix
data_preprocessor = dict(num_classes=num_classes)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=image_size, backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=image_size, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=image_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, ann_file='meta/train.txt',
                 data_prefix='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, ann_file='meta/val.txt',
                 data_prefix='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5)]
train_cfg = dict(by_epoch=True, max_epochs=2, val_interval=2)
auto_scale_lr = dict(enable=False)
default_hooks = dict(logger=dict(interval=2), checkpoint=dict(interval=1))
