# The FSLA-off twin of configs/upernet_boat_cswin_ade20k_amp-fp16.py:
# configs/baselines/upernet_cswin_ade20k.py in the same mixed precision.
_base_ = './upernet_cswin_ade20k.py'

optim_wrapper = dict(type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic')
