"""Analysis: parameters and FLOPs with FSLA counted (``complexity``, whose names this package exports),
whole-model speed and memory (``benchmark``), run comparison (``runs``) and the timer (``timing``)."""
from .complexity import DEFAULT_SHAPES, complexity_of_config, count_complexity, fsla_flops

__all__ = ['fsla_flops', 'count_complexity', 'complexity_of_config', 'DEFAULT_SHAPES']
