"""The OpenMMLab release step for a trained checkpoint (``tools/model_converters/publish_model.py``).

Training state goes (optimizer, message hub, parameter schedulers, and the raw weights ``EMAHook`` keeps
beside the EMA ones: ``state_dict`` already holds the EMA weights, the ones that were evaluated); ``meta``
and ``state_dict`` stay. The file's name gets the first 8 hex digits of its sha256, as in the model zoos
(``boat_cswin_tiny_ade20k.pth`` -> ``boat_cswin_tiny_ade20k-1a2b3c4d.pth``), so a download can be checked.
"""
import hashlib
import os.path as osp

import torch

from ..utils.checkpoint import load_checkpoint_file
from ..utils.file_io import write_atomically

__all__ = ['TRAINING_STATE_KEYS', 'publish_checkpoint', 'sha256_of']

TRAINING_STATE_KEYS = ('optimizer', 'message_hub', 'param_schedulers', 'ema_state_dict')
HASH_DIGITS = 8  # as mmdet / mmseg / mmpretrain name their released files


def sha256_of(path: str, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b''):
            digest.update(chunk)
    return digest.hexdigest()


def publish_checkpoint(src: str, dst: str) -> str:
    """Write ``src`` without training state as ``dst`` with its hash in the name; returns that path."""
    checkpoint = load_checkpoint_file(src)
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        raise ValueError(f'{src} is not an mmengine checkpoint (no state_dict)')
    published = {key: value for key, value in checkpoint.items() if key not in TRAINING_STATE_KEYS}
    stem = dst[:-len('.pth')] if dst.endswith('.pth') else dst
    final = []

    def hashed_name(written: str) -> str:
        final.append(f'{stem}-{sha256_of(written)[:HASH_DIGITS]}.pth')
        return final[0]
    write_atomically(f'{stem}.pth', lambda f: torch.save(published, f), rename_to=hashed_name)
    return osp.abspath(final[0])
