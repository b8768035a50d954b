"""boat_mm.utils.setup_env: freed CPU memory stays with the process (and is reused) once tuned."""
import platform
import subprocess
import sys

import pytest
from conftest import REPO  # noqa: E402

FREED_MIB = 256

# Allocates and frees one big tensor, then prints how much resident memory the free gave back (MiB).
PROBE = f'''
import sys
sys.path.insert(0, {REPO!r})
import torch
from boat_mm.utils.setup_env import retain_freed_memory
print(retain_freed_memory())
def rss_mib():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20
x = torch.ones({FREED_MIB} * 2 ** 18)  # {FREED_MIB} MiB of float32, every page touched
before = rss_mib()
del x
print(round(before - rss_mib()))
'''

pytestmark = pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
                                reason='glibc malloc tuning')


def probe(env_value):
    env = {'PATH': '/usr/bin:/bin', 'BOAT_MM_RETAIN_FREED_MEMORY': env_value}
    result = subprocess.run([sys.executable, '-c', PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    description, returned = result.stdout.split('\n')[:2]
    return description, int(returned)


def test_defaults_give_a_big_free_back_to_the_os():
    description, returned = probe('0')
    assert description == 'None'  # opted out: nothing tuned
    assert returned > FREED_MIB * 0.9


def test_retained_memory_stays_for_reuse():
    description, returned = probe('1')
    assert 'keeps freed memory' in description
    assert returned < FREED_MIB * 0.1

