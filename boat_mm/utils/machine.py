"""The one description of the machine a number was measured on (benchmark headers, the GPU check)."""
import platform

import torch

__all__ = ['NATIVE_BF16_FLAGS', 'cpu_description', 'machine_description']

# CPU flags of native bf16 arithmetic; without them oneDNN emulates bf16 matmuls through fp32, slower than
# fp32 itself, and bf16 tables measure the emulation.
NATIVE_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')


def cpu_description() -> str:
    """CPU model and whether it computes bf16 natively (from /proc/cpuinfo; the architecture elsewhere)."""
    try:
        with open('/proc/cpuinfo') as info:
            text = info.read()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(':', 1)[1].strip() for line in text.splitlines() if line.startswith('model name')),
                 platform.machine())
    flags = next((line.split(':', 1)[1].split() for line in text.splitlines() if line.startswith('flags')), [])
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    return f'{model}, bf16 {"native (" + ", ".join(native) + ")" if native else "emulated (no avx512_bf16/amx_bf16)"}'


def machine_description(device: str = 'cpu') -> str:
    """'<GPU name> (torch X)' or '<CPU>, N threads (torch X)'."""
    if device == 'cuda':
        return f'{torch.cuda.get_device_name()} (torch {torch.__version__})'
    return f'{cpu_description()}, {torch.get_num_threads()} threads (torch {torch.__version__})'
