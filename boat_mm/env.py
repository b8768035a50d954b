"""On/off switches read from the environment (``BOAT_MM_NATIVE``, ``BOAT_MM_RETAIN_FREED_MEMORY``)."""
import os

__all__ = ['switched_on']

OFF_VALUES = ('0', 'false', 'no', 'off')


def switched_on(name: str) -> bool:
    """True unless the variable is set to 0 / false / no / off (any case): these switches default to on."""
    return os.environ.get(name, '1').strip().lower() not in OFF_VALUES
