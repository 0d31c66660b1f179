"""Small input checks shared by the landmark toolkit, the losses and the metrics (private)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "check_points",
    "check_heatmaps",
    "check_matrices",
    "check_flip_indices",
    "check_reduction",
    "reduce",
]

_REDUCTIONS = ("none", "mean", "sum")


def check_points(
    x: object, name: str, *, dims: Sequence[int] = (2, 3), min_ndim: int = 2, finite: bool = False
) -> Tensor:
    """Check that ``x`` is a floating tensor of shape ``(..., N, D)`` with ``D`` in ``dims`` (and, with
    ``finite``, free of NaN/inf -- for functions with no notion of a missing landmark)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (..., N, D), got {type(x).__name__}")
    if x.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimensions (..., N, D), got shape {tuple(x.shape)}"
        )
    if x.shape[-1] not in tuple(dims):
        raise ValueError(f"{name} must have last dimension D in {tuple(dims)}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def check_heatmaps(h: object, name: str = "heatmaps") -> Tensor:
    """Check that ``h`` is a floating tensor ``(..., N, H, W)`` with ``H, W >= 1``."""
    if not isinstance(h, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, N, H, W), got {type(h).__name__}")
    if h.ndim < 3:
        raise ValueError(f"{name} must have shape (..., N, H, W), got shape {tuple(h.shape)}")
    if not h.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {h.dtype}")
    if h.shape[-1] < 1 or h.shape[-2] < 1:
        raise ValueError(f"{name} must have a non-empty spatial size, got shape {tuple(h.shape)}")
    return h


def check_matrices(m: object, name: str, batch: int | None = None, dim: int = 2) -> Tensor:
    """Check that ``m`` is ``(B, D+1, D+1)`` (or ``(D+1, D+1)``, broadcast) and return ``(B, D+1, D+1)``."""
    if not isinstance(m, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (B, {dim + 1}, {dim + 1}), got {type(m).__name__}"
        )
    if not m.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {m.dtype}")
    if m.ndim == 2:
        m = m.unsqueeze(0)
    if m.ndim != 3 or m.shape[-2:] != (dim + 1, dim + 1):
        raise ValueError(f"{name} must have shape (B, {dim + 1}, {dim + 1}), got shape {tuple(m.shape)}")
    if batch is not None and m.shape[0] not in (1, batch):
        raise ValueError(f"{name} has batch size {m.shape[0]} but the landmarks have batch size {batch}")
    return m.contiguous()  # batched LAPACK calls are ~100x slower on expanded (stride-0) inputs


def check_flip_indices(flip_indices: object, num_points: int, name: str = "flip_indices") -> Tensor:
    """Validate a left/right permutation of ``num_points`` landmarks; returns a long tensor ``(N,)``.

    The permutation must be a bijection of ``{0, ..., N-1}`` and an involution (``p[p[i]] == i``).
    """
    if isinstance(flip_indices, Tensor):
        idx = flip_indices.detach().to("cpu")
        if idx.is_floating_point() or idx.dtype == torch.bool:
            raise TypeError(f"{name} must hold integers, got dtype {idx.dtype}")
        idx = idx.long()
    else:
        try:
            idx = torch.as_tensor(list(flip_indices), dtype=torch.long)  # type: ignore[arg-type]
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a sequence of integers, got {flip_indices!r}") from err
    if idx.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {tuple(idx.shape)}")
    if idx.numel() != num_points:
        raise ValueError(f"{name} has length {idx.numel()} but there are {num_points} landmarks")
    if num_points and (idx.min() < 0 or idx.max() >= num_points):
        raise ValueError(f"{name} must contain indices in [0, {num_points - 1}]")
    if torch.unique(idx).numel() != num_points:
        raise ValueError(f"{name} must be a permutation (every index exactly once)")
    if not torch.equal(idx[idx], torch.arange(num_points)):
        raise ValueError(f"{name} must be an involution (flip_indices[flip_indices[i]] == i)")
    return idx


def check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def reduce(value: Tensor, reduction: str) -> Tensor:
    """Apply a kornia-style reduction to a per-sample loss tensor."""
    if reduction == "mean":
        return value.mean()
    if reduction == "sum":
        return value.sum()
    return value
