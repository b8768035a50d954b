"""Helpers for testing BOAT: comparing two arithmetics (``arithmetic``). Importing this package imports no
OpenMMLab toolbox beyond what ``boat_mm`` itself needs."""
__all__ = []
