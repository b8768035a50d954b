"""Checkpoint I/O: what modern PyTorch forces on mmengine 0.10.7, applied once by ``import boat_mm``.

1. Safe checkpoint loading: since torch 2.6 ``torch.load`` defaults to ``weights_only=True``, and mmengine
0.10.7 calls it without the argument, so loading or resuming any checkpoint mmengine itself wrote fails
(its ``message_hub`` holds ``HistoryBuffer`` objects with numpy arrays and scalars). We keep the safe
loader and allow-list exactly what such checkpoints contain, so a checkpoint carrying any other pickle
payload is still refused without running it. Nothing installed is edited. On torch < 2.6 mmengine's own
loads work as they always did (``weights_only`` was off by default) and are left alone; boat_mm's own loads
(converters, Pretrained, publish) stay safe there through the same allow-list, applied by a restricted
unpickler where torch has no ``safe_globals`` (before 2.5).

2. Checkpoint files: every local load (``load_checkpoint``, resume, ``init_cfg`` Pretrained, the
converter) goes through ``load_checkpoint_file``, whose errors name the file and say whether it was
refused (pickle payload) or is damaged; every local save is atomic (temporary file + rename), so a job
killed mid-save never leaves a half-written checkpoint behind (``boat_mm.utils.file_io``).
"""
import _compat_pickle
import os.path as osp
import pickle
import re
import types

import numpy as np
import torch

from .file_io import save_checkpoint_atomic
from .torch_features import torch_at_least

__all__ = ['allow_mmengine_checkpoint_globals', 'MMENGINE_CHECKPOINT_GLOBALS', 'load_checkpoint_file',
           'DamagedCheckpointError', 'LOADS_WEIGHTS_ONLY_BY_DEFAULT', 'RefusedGlobalError', 'install_checkpoint_io']

# torch >= 2.6: torch.load(weights_only=True) by default, the break mmengine 0.10.7 needs the allow-list for.
LOADS_WEIGHTS_ONLY_BY_DEFAULT = torch_at_least(2, 6)
# torch >= 2.5: the allow-list context (torch.serialization.safe_globals; add_safe_globals came in 2.4).
_HAS_SAFE_GLOBALS = hasattr(torch.serialization, 'safe_globals')
_installed = False


def _numpy_multiarray():
    # numpy 2 moved numpy.core to numpy._core; pickles name whichever wrote them. (numpy 1.26 has a
    # numpy._core placeholder without multiarray: the module is imported by name, not found as an attribute.)
    import importlib
    try:
        return importlib.import_module('numpy._core.multiarray')
    except ImportError:
        return importlib.import_module('numpy.core.multiarray')


def _history_buffer_getattr(obj, name):
    """Stand-in for ``builtins.getattr`` inside checkpoints.

    ``HistoryBuffer._statistics_methods`` pickles its functions as ``getattr(HistoryBuffer, 'mean')``.
    Only that is allowed: a getattr on anything else (the usual gadget of pickle exploits) is refused."""
    from mmengine.logging import HistoryBuffer
    value = HistoryBuffer.__dict__.get(name) if obj is HistoryBuffer else None
    if not callable(value) or name.startswith('_'):
        raise torch.serialization.pickle.UnpicklingError(
            f'refused getattr({getattr(obj, "__name__", type(obj).__name__)}, {name!r}) in a checkpoint: '
            'only HistoryBuffer statistics methods may be referenced')
    return getattr(obj, name)


def _empty_bytes(*args):
    """Stand-in for ``builtins.bytes`` inside checkpoints.

    Pickle protocol 2 writes an empty ``bytes`` object as the call ``bytes()`` (numpy's payload of an empty
    array, e.g. a ``HistoryBuffer`` never updated); non-empty bytes use ``_codecs.encode``, which torch
    already allows. Only the no-argument call is allowed."""
    if args:
        raise torch.serialization.pickle.UnpicklingError('refused bytes(...) with arguments in a checkpoint: only '
                                                         'bytes() (an empty payload) may be built')
    return b''


def _numpy_dtype_classes():
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is None:
        return []
    return [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType') and isinstance(getattr(dtypes, n), type)]


def _build_allow_list():
    from mmengine.logging import HistoryBuffer
    multiarray = _numpy_multiarray()
    allowed = [HistoryBuffer, np.ndarray, np.dtype, (_history_buffer_getattr, 'builtins.getattr'),
               (_empty_bytes, 'builtins.bytes')]
    for package in ('numpy._core', 'numpy.core'):
        allowed.append((multiarray._reconstruct, f'{package}.multiarray._reconstruct'))
        allowed.append((multiarray.scalar, f'{package}.multiarray.scalar'))
    allowed.extend(_numpy_dtype_classes())
    return allowed


MMENGINE_CHECKPOINT_GLOBALS = _build_allow_list()


def allow_mmengine_checkpoint_globals() -> None:
    """Allow-list the globals of mmengine checkpoints for ``torch.load(weights_only=True)`` (torch >= 2.5;
    before, boat_mm's loads apply the list themselves and mmengine's need none)."""
    if _HAS_SAFE_GLOBALS:
        torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)


allow_mmengine_checkpoint_globals()


def _global_name(entry) -> tuple:
    """(pickled module.name, object) of an allow-list entry: a class or function, or (object, 'module.name')."""
    if isinstance(entry, tuple):
        obj, name = entry
        return name, obj
    return f'{entry.__module__}.{entry.__qualname__}', entry


# What torch's weights_only unpickler allows besides torch's tensor machinery (its own allow-list, torch 2.1).
_PLAIN_SAFE_GLOBALS = {('collections', 'OrderedDict'), ('_codecs', 'encode'), ('builtins', 'bytearray'),
                       ('builtins', 'set'), ('builtins', 'frozenset'), ('builtins', 'complex'),
                       ('torch.nn.parameter', 'Parameter'), ('torch.serialization', '_get_layout')}


def _torch_global_is_safe(module: str, name: str) -> bool:
    """What torch's weights_only unpickler allows of torch itself: tensor rebuilds, storages, dtypes, Size."""
    if (module, name) in _PLAIN_SAFE_GLOBALS:
        return True
    if module == 'torch._utils':
        return name.startswith('_rebuild_')
    if module == 'torch._tensor':
        return name == '_rebuild_from_type_v2'
    if module == 'torch':
        value = getattr(torch, name, None)
        return name.endswith('Storage') or name in ('Size', 'device', 'Tensor') or isinstance(value, torch.dtype)
    return False


class RefusedGlobalError(pickle.UnpicklingError):
    """The restricted unpickler met a global outside the allow-list (any other unpickling error there is a
    damaged file: without torch's own checks, random bytes fail in arbitrary ways)."""


def _restricted_pickle_module(allowed: dict) -> types.ModuleType:
    """A pickle module for ``torch.load(pickle_module=...)`` whose unpickler finds only ``allowed`` globals,
    and what torch's own weights_only unpickler allows: the allow-list on a torch without safe_globals."""
    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            # protocol-2 pickles name Python 2 modules (__builtin__): map them as pickle itself would
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            if f'{module}.{name}' in allowed:
                return allowed[f'{module}.{name}']
            if _torch_global_is_safe(module, name):
                return super().find_class(module, name)
            raise RefusedGlobalError(f'Unsupported global: GLOBAL {module}.{name} was not an allowed global')

    restricted = types.ModuleType('boat_mm_restricted_pickle')
    restricted.__dict__.update({k: getattr(pickle, k) for k in dir(pickle) if not k.startswith('__')})
    restricted.Unpickler = RestrictedUnpickler
    restricted.load = lambda file, **kwargs: RestrictedUnpickler(file, **kwargs).load()
    return restricted


def _safe_load(filename: str, map_location, extra_globals):
    if _HAS_SAFE_GLOBALS:
        with torch.serialization.safe_globals(list(extra_globals)):
            return torch.load(filename, map_location=map_location, weights_only=True)
    allowed = dict(_global_name(entry) for entry in [*MMENGINE_CHECKPOINT_GLOBALS, *extra_globals])
    return torch.load(filename, map_location=map_location, weights_only=False,
                      pickle_module=_restricted_pickle_module(allowed))


class DamagedCheckpointError(RuntimeError):
    """A checkpoint file that exists but cannot be read (truncated, corrupted, not a checkpoint)."""


# A refusal names the global it met as a dotted Python name ("Unsupported global: GLOBAL os.system ...",
# torch's unpickler and the restricted one alike) or is the getattr guard's; random bytes read as opcodes
# fail in arbitrary ways (unknown opcodes, KeyError, IndexError, truncation, a "global" of unprintable
# bytes): those are damage.
_REFUSED_GLOBAL = re.compile(r'GLOBAL [A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+\b|refused getattr\(')


def _refused_global(error: BaseException):
    """The line of a refusal to unpickle a non-allow-listed global, or None when ``error`` is not one."""
    if not isinstance(error, pickle.UnpicklingError):
        return None
    return next((line.strip() for line in str(error).splitlines() if _REFUSED_GLOBAL.search(line)), None)


def load_checkpoint_file(filename: str, map_location='cpu', extra_globals=()):
    """``torch.load(weights_only=True)`` with errors that name the file and say what is wrong: a refusal
    (an object outside the allow-list; nothing in the file was run) or damage (anything else the bytes do)."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        return _safe_load(filename, map_location, extra_globals)
    except (PermissionError, IsADirectoryError):
        raise
    except Exception as error:  # noqa: BLE001 -- every other failure of reading the bytes is damage
        refusal = _refused_global(error)
        if refusal is not None:
            raise pickle.UnpicklingError(
                f'refused to load {filename}: it holds objects outside the allow-list of safe checkpoint '
                f'contents, and nothing in it was run ({refusal})') from None
        raise DamagedCheckpointError(f'cannot load {filename}: the file is damaged (truncated or corrupted) '
                                     f'or is not a PyTorch checkpoint ({type(error).__name__}: {error})') from None


def install_checkpoint_io() -> None:
    """Route mmengine's local saves through ``save_checkpoint_atomic`` and, on torch >= 2.6, its local loads
    through ``load_checkpoint_file`` (``import boat_mm`` calls it; calling it again changes nothing)."""
    global _installed
    if _installed:
        return
    _installed = True
    import mmengine.runner.checkpoint as mm_checkpoint
    import mmengine.runner.runner as mm_runner
    original_save = mm_checkpoint.save_checkpoint

    def save_checkpoint(checkpoint, filename, file_client_args=None, backend_args=None):
        if '://' in str(filename) or file_client_args or backend_args:
            return original_save(checkpoint, filename, file_client_args, backend_args)
        save_checkpoint_atomic(checkpoint, filename)

    mm_checkpoint.save_checkpoint = mm_runner.save_checkpoint = save_checkpoint
    if LOADS_WEIGHTS_ONLY_BY_DEFAULT:  # before torch 2.6 mmengine's local loads need no help: left alone
        mm_checkpoint.CheckpointLoader.register_scheme(prefixes='', force=True)(load_checkpoint_file)
