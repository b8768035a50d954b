# BOAT-CSWin-T, ImageNet-1K 224x224, the released recipe on mmpretrain's Swin recipe (300 epochs, AdamW,
# cosine with 20-epoch warm-up, Mixup/CutMix, label smoothing 0.1), drop path 0.2.
_base_ = 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py'
custom_imports = dict(imports=['boat_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='BOATCSWinTransformer', arch='tiny', out_indices=(3, ),
                  drop_path_rate=0.2),
    head=dict(in_channels=512))

# Model EMA as the released BOAT-CSWin (and CSWin) models were trained: decay 0.99984 per iteration for T and S
# (0.99992 for B), validated and tested on the EMA weights (EMAHook swaps them in for evaluation and saves
# them in the checkpoint as `ema_state_dict`). mmengine's momentum is the weight of the new value: 1 - decay.
ema_decay = 0.99984
custom_hooks = [dict(type='EMAHook', momentum=1 - ema_decay, priority='ABOVE_NORMAL')]

# Evaluation as the released BOAT-CSWin models were: bicubic resize of the short side to 224 / 0.9, centre crop.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=248, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
