"""The package's one seed-mixing rule and its one "which generator" rule.

Randomness follows torchvision: a function or transform draws from the ``generator`` it is given and only
from it; without one it draws from torch's global RNG, so ``torch.manual_seed`` and DataLoader worker
seeding (each worker's global RNG is seeded with ``base_seed + worker_id``) behave as users expect. wbaug
never seeds the global RNG. Where a stream must be derived from integers (dataset item ``i`` of epoch
``e``), :func:`mix_seed` turns them into one well-mixed seed.
"""

from __future__ import annotations

import torch

__all__ = ["generator_device", "mix_seed"]

_MASK = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """Deterministic 63-bit seed from integers (the SplitMix64 finaliser chained over the values).

    Example:
        >>> mix_seed(0, 1) == mix_seed(0, 1) != mix_seed(1, 0)
        True
    """
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK)) & _MASK
        h = (h + 0x9E3779B97F4A7C15) & _MASK
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        h = z ^ (z >> 31)
    return h >> 1


def generator_device(generator: torch.Generator | None) -> torch.device:
    """The device random numbers are drawn on: the generator's, or the CPU for torch's global RNG."""
    return generator.device if generator is not None else torch.device("cpu")
