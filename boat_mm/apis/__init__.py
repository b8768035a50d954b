"""What the tools call: single-image inference and drawing (``inference``), ONNX export and check
(``deployment``), checkpoint conversion with architecture inference (``checkpoint_conversion``) and the
release step (``publish``). Imported one module at a time: each needs different toolboxes."""
__all__ = []
