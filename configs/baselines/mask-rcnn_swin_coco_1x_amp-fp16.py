# The FSLA-off twin of configs/mask-rcnn_boat_swin_coco_1x_amp-fp16.py:
# configs/baselines/mask-rcnn_swin_coco_1x.py in the same mixed precision.
_base_ = './mask-rcnn_swin_coco_1x.py'

optim_wrapper = dict(type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic')
