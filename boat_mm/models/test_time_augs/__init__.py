"""Test-time augmentation models. ``det_tta`` (Mask R-CNN TTA with masks) needs mmdet and mmcv ops, so it is
not imported here: configs that use it import ``boat_mm.models.test_time_augs.det_tta``."""
__all__ = []
