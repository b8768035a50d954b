# Baseline of upernet_boat_cswin_ade20k_demo.py for side-by-side demo runs: the same data, seed and schedule
# with FSLA switched off (CSWin-T), as configs/baselines/upernet_cswin_ade20k.py is to the full config.
_base_ = './upernet_boat_cswin_ade20k_demo.py'
model = dict(backbone=dict(fsla_stages=()))
