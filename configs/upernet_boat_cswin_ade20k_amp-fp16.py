# upernet_boat_cswin_ade20k.py in fp16 mixed precision: mmengine's AmpOptimWrapper (autocast to float16, dynamic loss
# scaling), the toolboxes' convention (`tools/train.py --amp` does the same to any config). Needs a CUDA GPU.
# FSLA clusters in float32 whatever the autocast dtype.
_base_ = './upernet_boat_cswin_ade20k.py'

optim_wrapper = dict(type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic')
