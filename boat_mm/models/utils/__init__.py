"""What the backbones need besides layers: OpenMMLab argument checks (``toolbox_args``) and checkpoint
key conversion for ``Pretrained`` weights (``ckpt_convert``)."""
__all__ = []
