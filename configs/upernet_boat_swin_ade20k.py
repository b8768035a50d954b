# UperNet (+ FCN auxiliary head) with BOAT-Swin-T, ADE20K 512x512, 160k iterations, 8 GPUs x 2 images;
# mmseg's Swin recipe (AdamW lr 6e-5, poly schedule with 1500-iteration warm-up, no weight decay on
# norms and position tables). ImageNet weights: see README, "Released weights".
_base_ = 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['boat_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True, type='BOATSwinTransformer', arch='tiny', out_indices=(0, 1, 2, 3), drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/boat_swin_tiny_in1k.pth',
                      prefix='backbone.')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))

# The learning rate is for 8 GPUs x 2 images: tools/train.py --auto-scale-lr rescales it for another total batch.
auto_scale_lr = dict(enable=False, base_batch_size=16)
