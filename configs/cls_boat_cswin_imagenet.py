# BOAT-CSWin-T, ImageNet-1K 224x224, the released recipe on mmpretrain's Swin recipe (300 epochs, AdamW,
# cosine with 20-epoch warm-up, Mixup/CutMix, label smoothing 0.1), drop path 0.2.
_base_ = 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py'
custom_imports = dict(imports=['boat_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='BOATCSWinTransformer', arch='tiny', out_indices=(3, ),
                  drop_path_rate=0.2),
    head=dict(in_channels=512))
