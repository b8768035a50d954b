"""Hooks: the train-setup log line (``train_setup_hook``) and mmpretrain's visualisation with TTA
(``visualization_hook``, needs mmpretrain: imported where used)."""
__all__ = []
