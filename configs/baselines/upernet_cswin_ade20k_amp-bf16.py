# The FSLA-off twin of configs/upernet_boat_cswin_ade20k_amp-bf16.py:
# configs/baselines/upernet_cswin_ade20k.py in the same mixed precision.
_base_ = './upernet_cswin_ade20k.py'

optim_wrapper = dict(type='AmpOptimWrapper', dtype='bfloat16', loss_scale='dynamic')
