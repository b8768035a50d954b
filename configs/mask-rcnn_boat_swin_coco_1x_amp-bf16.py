# mask-rcnn_boat_swin_coco_1x.py in bf16 mixed precision: mmengine's AmpOptimWrapper autocasting to bfloat16 (Ampere and
# newer GPUs). Without CUDA, tools/train.py trains it on the CPU (bf16 autocast, no loss scaler: see
# boat_mm/engine/optimizers/cpu_amp_optim_wrapper.py). FSLA clusters in float32 whatever the autocast dtype.
_base_ = './mask-rcnn_boat_swin_coco_1x.py'

optim_wrapper = dict(type='AmpOptimWrapper', dtype='bfloat16', loss_scale='dynamic')
