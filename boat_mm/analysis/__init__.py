"""Analysis: parameters and FLOPs with FSLA counted (``complexity``, whose names this package exports),
whole-model speed and memory (``benchmark``), run comparison (``runs``), the timer (``timing``), the kernel
census of one FSLA module (``kernel_census``) and the resources of its Triton kernels on every NVIDIA
architecture (``kernel_resources``)."""
from .complexity import DEFAULT_SHAPES, complexity_of_config, count_complexity, fsla_flops

__all__ = ['fsla_flops', 'count_complexity', 'complexity_of_config', 'DEFAULT_SHAPES']
