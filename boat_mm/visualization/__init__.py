"""Visualisation: the feature-space clusters of an FSLA block drawn over an image (``clusters``, whose names
this package exports) and text panels over pictures (``panels``, the image demo's legend and captions)."""
from .clusters import (
    attention_to_keys,
    capture_clusters,
    cluster_members,
    distinct_colours,
    draw_figure,
    fsla_blocks,
    paint_clusters,
    token_clusters,
)

__all__ = ['fsla_blocks', 'capture_clusters', 'token_clusters', 'cluster_members', 'attention_to_keys',
           'distinct_colours', 'paint_clusters', 'draw_figure']
