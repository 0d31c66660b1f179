"""Input checks shared by the sampling modules (errors name the offending argument)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wbaug._checks import check_generator
from wbaug.ot._validation import check_positive_int

__all__ = ["Clouds", "as_clouds", "check_finite", "check_generator", "check_nonnegative_int"]

Clouds = Tensor | list[Tensor]


def _to_float_tensor(value: Any, name: str) -> Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}")
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    if not value.is_floating_point() or value.dtype in (torch.float16, torch.bfloat16):
        value = value.to(torch.float32)
    return value


def check_finite(value: Tensor, name: str) -> None:
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def as_clouds(landmarks: Any, name: str = "landmarks", *, min_count: int = 2) -> Clouds:
    """Validate ``(M, N, D)`` landmark sets or a list of ``(N_i, D)`` clouds.

    Returns a float tensor ``(M, N, D)`` (NumPy arrays are converted, integers become float32) or a list of
    float tensors sharing one dtype and device. Raises ``TypeError``/``ValueError`` naming ``name``.
    """
    if isinstance(landmarks, (list, tuple)):
        if len(landmarks) < min_count:
            raise ValueError(f"{name} must hold at least {min_count} landmark sets, got {len(landmarks)}")
        clouds = [_to_float_tensor(c, f"{name}[{i}]") for i, c in enumerate(landmarks)]
        dims = set()
        for i, c in enumerate(clouds):
            if c.ndim != 2:
                raise ValueError(f"{name}[{i}] must have shape (N_i, D), got {tuple(c.shape)}")
            if c.shape[0] < 1 or c.shape[1] < 1:
                raise ValueError(f"{name}[{i}] must hold at least one point, got shape {tuple(c.shape)}")
            check_finite(c, f"{name}[{i}]")
            dims.add(c.shape[1])
        if len(dims) != 1:
            raise ValueError(f"{name}: every cloud must have the same dimension D, got {sorted(dims)}")
        dtype = clouds[0].dtype
        device = clouds[0].device
        clouds = [c.to(device=device, dtype=dtype) for c in clouds]
        if len({c.shape[0] for c in clouds}) == 1:
            return torch.stack(clouds)
        return clouds
    x = _to_float_tensor(landmarks, name)
    if x.ndim != 3:
        raise ValueError(
            f"{name} must have shape (M, N, D) or be a list of (N_i, D) clouds, got {tuple(x.shape)}"
        )
    if x.shape[0] < min_count:
        raise ValueError(
            f"{name} must hold at least {min_count} landmark sets (M >= {min_count}), got M={x.shape[0]}"
        )
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"{name} must have N >= 1 points of D >= 1 coordinates, got {tuple(x.shape)}")
    check_finite(x, name)
    return x


def cloud_count(clouds: Clouds) -> int:
    return clouds.shape[0] if isinstance(clouds, Tensor) else len(clouds)


def cloud_dim(clouds: Clouds) -> int:
    return clouds.shape[-1] if isinstance(clouds, Tensor) else clouds[0].shape[-1]


def select(clouds: Clouds, index: Sequence[int] | Tensor) -> Clouds:
    if isinstance(clouds, Tensor):
        return clouds[torch.as_tensor(index, dtype=torch.long, device=clouds.device)]
    idx = index.tolist() if isinstance(index, Tensor) else list(index)
    picked = [clouds[i] for i in idx]
    if len({c.shape[0] for c in picked}) == 1 and picked:
        return torch.stack(picked)
    return picked


def check_nonnegative_int(value: Any, name: str, *, minimum: int = 0) -> int:
    """:func:`wbaug.ot._validation.check_positive_int` with a default minimum of 0."""
    return check_positive_int(value, name, minimum=minimum)


def check_positive_float(value: Any, name: str, *, allow_none: bool = False, allow_zero: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or value < 0 or (value == 0 and not allow_zero) or math.isinf(value):
        raise ValueError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value}")
    return value
