# The FSLA-off twin of configs/cls_boat_swin_imagenet_amp-fp16.py:
# configs/baselines/cls_swin_imagenet.py in the same mixed precision.
_base_ = './cls_swin_imagenet.py'

optim_wrapper = dict(type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic')
