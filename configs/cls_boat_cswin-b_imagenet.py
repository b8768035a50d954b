# BOAT-CSWin-B, ImageNet-1K 224x224 (drop path 0.5, weight decay 0.1, EMA 0.99992, as released).
_base_ = './cls_boat_cswin_imagenet.py'
model = dict(backbone=dict(arch='base', drop_path_rate=0.5), head=dict(in_channels=768))
# The public CSWin-B / BOAT-CSWin-B recipe: weight decay 0.1 (T and S: 0.05) and EMA decay 0.99992.
optim_wrapper = dict(optimizer=dict(weight_decay=0.1))
ema_decay = 0.99992
custom_hooks = [dict(type='EMAHook', momentum=1 - ema_decay, priority='ABOVE_NORMAL')]
