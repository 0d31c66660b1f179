"""Deterministic random streams for trainers: per rank, per worker, per sample.

wbaug itself never seeds global state; a trainer owns its process and may (:func:`seed_process`).
Everything else draws from explicit ``torch.Generator`` objects derived from one base seed with
:func:`derive_seed`, a stable hash of integers and strings (BLAKE2b), so that

* every ``torchrun`` rank gets its own stream: ``derive_seed(seed, "data", rank)``;
* every DataLoader worker gets its own stream: :func:`worker_generator`;
* per-sample augmentation can be keyed by ``(seed, epoch, index)`` and is then identical whatever the
  number of workers, and replayed exactly after ``--resume`` (:func:`sample_generator`).
"""

from __future__ import annotations

import hashlib
import random

import torch

__all__ = [
    "derive_seed",
    "make_generator",
    "sample_generator",
    "seed_process",
    "worker_generator",
]

_MASK63 = (1 << 63) - 1


def derive_seed(*keys: int | str) -> int:
    """Stable 63-bit seed from a sequence of ints/strings (same on every platform and Python run).

    ``derive_seed(s, "data", 0) != derive_seed(s, "data", 1)``: independent streams for ranks, workers,
    epochs or samples all come from one user seed. Unlike ``hash()`` it does not depend on
    ``PYTHONHASHSEED``.

    Example:
        >>> derive_seed(0, "data", 3) == derive_seed(0, "data", 3)
        True
    """
    if not keys:
        raise ValueError("keys must contain at least one int or str")
    h = hashlib.blake2b(digest_size=8)
    for key in keys:
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise TypeError(f"keys must be ints or strs, got {type(key).__name__}")
        h.update(b"i" if isinstance(key, int) else b"s")
        h.update(str(key).encode())
        h.update(b"\x00")
    return int.from_bytes(h.digest(), "little") & _MASK63


def make_generator(seed: int, *, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    g = torch.Generator(device=device)
    g.manual_seed(seed & _MASK63)
    return g


def sample_generator(seed: int, epoch: int, index: int, *, stream: str = "aug") -> torch.Generator:
    """CPU generator for one sample of one epoch: augmentation that replays exactly on resume."""
    return make_generator(derive_seed(seed, stream, epoch, index))


def worker_generator(base_seed: int, *, stream: str = "worker") -> torch.Generator:
    """Generator for the current DataLoader worker (or the main process when not in a worker).

    Inside a worker the stream is keyed by the worker's id and the loader-assigned worker seed, so
    each worker of each rank draws a different, reproducible stream.
    """
    info = torch.utils.data.get_worker_info()
    if info is None:
        return make_generator(derive_seed(base_seed, stream, "main"))
    return make_generator(derive_seed(base_seed, stream, info.id, info.seed & _MASK63))


def seed_process(seed: int, rank: int = 0) -> int:
    """Seed this process's global ``torch`` (CPU and CUDA) and ``random`` state for rank ``rank``.

    Only trainers call this (for weight initialisation, dropout); library code never does. Every rank
    gets a different seed for dropout etc.; models built before DDP wrapping are synchronised by DDP's
    broadcast of rank 0's parameters anyway.

    Returns:
        The derived per-rank seed.
    """
    s = derive_seed(seed, "process", rank)
    torch.manual_seed(s)
    random.seed(s)
    return s
