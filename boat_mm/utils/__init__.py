"""Utilities of every part of boat_mm: torch feature detection (``torch_features``), the process set-up
(``setup_env``), checkpoint I/O (``checkpoint``, ``file_io``), the one single-process model builder
(``model_builder``), dataset helpers (``datasets``), tables (``tables``), the machine description
(``machine``) and the old module names' new homes (``moved_modules``)."""
__all__ = []
