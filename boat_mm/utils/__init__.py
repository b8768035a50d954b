"""Utilities that import no OpenMMLab toolbox: torch feature detection (``torch_features``)."""
__all__ = []
