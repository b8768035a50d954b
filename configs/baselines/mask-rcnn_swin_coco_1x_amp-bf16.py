# The FSLA-off twin of configs/mask-rcnn_boat_swin_coco_1x_amp-bf16.py:
# configs/baselines/mask-rcnn_swin_coco_1x.py in the same mixed precision.
_base_ = './mask-rcnn_swin_coco_1x.py'

optim_wrapper = dict(type='AmpOptimWrapper', dtype='bfloat16', loss_scale='dynamic')
