"""The runner side of ``tools/train.py`` and ``tools/test.py``: config adaptation and runner set-up
(``runner_setup``), the test options (``test_options``: TTA, --out, --show-dir) and hooks (``hooks``)."""
__all__ = []
