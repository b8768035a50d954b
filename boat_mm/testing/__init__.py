"""Helpers for testing BOAT: comparing two arithmetics (``arithmetic``) and the demo datasets
(``demo_data``). Importing ``demo_data`` imports no OpenMMLab toolbox."""
__all__ = []
