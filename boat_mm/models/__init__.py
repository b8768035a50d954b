"""BOAT models: the backbones (``backbones``), the layers they are made of (``layers``: feature-space local
attention, clustering, shared transformer layers), their argument checks and state-dict conversion
(``utils``) and Mask R-CNN test-time augmentation (``test_time_augs``, imported by the TTA config: it
needs mmdet). Importing this registers the backbones (``boat_mm.registry``)."""
from .backbones import BOATCSWinTransformer, BOATSwinTransformer
from .layers import FeatureSpaceLocalAttention

__all__ = ['BOATSwinTransformer', 'BOATCSWinTransformer', 'FeatureSpaceLocalAttention']
