"""Input checks shared by the optimal-transport functions.

Every check raises :class:`TypeError` or :class:`ValueError` whose message names the offending argument,
and never modifies its input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def as_points(value: object, name: str, *, min_rank: int = 2) -> Tensor:
    """Return ``value`` as a floating tensor of shape ``(..., N, D)`` with ``N >= 1`` finite points."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float32 or float64), got {value.dtype}")
    if value.ndim < min_rank:
        raise ValueError(
            f"{name} must have at least {min_rank} dimensions (..., N, D), got shape {tuple(value.shape)}"
        )
    if value.shape[-2] == 0:
        raise ValueError(f"{name} must contain at least one point (N >= 1), got shape {tuple(value.shape)}")
    if value.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one coordinate (D >= 1), got shape {tuple(value.shape)}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return value


def weight_tolerance(dtype: torch.dtype) -> float:
    """Tolerance on ``|sum(w) - 1|`` accepted for simplex weights of the given dtype."""
    return max(1e-6, 100.0 * torch.finfo(dtype).eps)


def as_simplex(
    value: object,
    name: str,
    shape: Sequence[int] | None,
    *,
    like: Tensor,
    mask: Tensor | None = None,
) -> Tensor:
    """Return ``value`` as weights of ``shape`` that are finite, non-negative and sum to one on the last axis.

    ``shape=None`` accepts any shape. Entries where ``mask`` is ``False`` are ignored (they may hold
    anything, finite or not) and set to zero.
    The result has the dtype and device of ``like``.
    """
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")
    if not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must be a floating tensor, got {value.dtype}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(value.shape)}")
    value = value.to(device=like.device, dtype=like.dtype)
    if mask is not None:
        value = torch.where(mask, value, torch.zeros((), dtype=value.dtype, device=value.device))
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    if bool((value < 0).any()):
        raise ValueError(f"{name} must be non-negative")
    if value.shape[-1] == 0:
        raise ValueError(f"{name} must not be empty")
    total = value.sum(-1)
    tol = weight_tolerance(value.dtype)
    # a row whose entries are all masked out (e.g. the point weights of a padded cloud) carries no mass
    error = (total - 1).abs()
    if mask is not None:
        error = torch.where(mask.any(-1), error, torch.zeros_like(error))
    if bool((error > tol).any()):
        worst = float(total.flatten()[error.flatten().argmax()])
        raise ValueError(
            f"{name} must sum to 1 along its last axis (within {tol:g}), found a sum of {worst:g}"
        )
    return value


def check_p(p: object) -> float:
    """Return the ground-cost exponent ``p`` as a float ``>= 1``."""
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"p must be a real number >= 1, got {type(p).__name__}")
    if not np.isfinite(p) or p < 1:
        raise ValueError(f"p must be a finite number >= 1, got {p}")
    return float(p)


def check_positive_int(value: object, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an int ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
