"""Argument checks shared by the grid solvers."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_densities_weights(densities: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor]:
    """Validate ``densities (B, K, H, W)`` and ``weights (B, K)``; return weights normalised to sum 1.

    ``weights=None`` means uniform weights. Weights must be finite, non-negative, with a positive sum
    per row (they are rescaled onto the simplex). Densities must be finite and non-negative with
    positive mass.
    """
    if not isinstance(densities, Tensor):
        raise TypeError(f"densities must be a torch.Tensor, got {type(densities).__name__}")
    if densities.ndim != 4:
        raise ValueError(f"densities must have shape (B, K, H, W), got {tuple(densities.shape)}")
    if not densities.is_floating_point():
        raise TypeError(f"densities must be a floating tensor, got {densities.dtype}")
    b, k = densities.shape[:2]
    if b == 0 or k == 0 or densities.shape[2] == 0 or densities.shape[3] == 0:
        raise ValueError(f"densities must be non-empty, got shape {tuple(densities.shape)}")
    if not torch.isfinite(densities).all() or (densities < 0).any():
        raise ValueError("densities must be finite and non-negative")
    if (densities.sum(dim=(-1, -2)) <= 0).any():
        raise ValueError("every density in densities must have positive mass")
    if weights is None:
        weights = torch.full((b, k), 1.0 / k, dtype=densities.dtype, device=densities.device)
    if not isinstance(weights, Tensor):
        raise TypeError(f"weights must be a torch.Tensor or None, got {type(weights).__name__}")
    if weights.shape != (b, k):
        raise ValueError(f"weights must have shape (B, K) = {(b, k)}, got {tuple(weights.shape)}")
    weights = weights.to(dtype=densities.dtype, device=densities.device)
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("weights must be finite and non-negative")
    total = weights.sum(dim=-1, keepdim=True)
    if (total <= 0).any():
        raise ValueError("weights must have a positive sum in every row")
    return densities, weights / total


def check_reg(reg: float) -> float:
    if isinstance(reg, bool) or not isinstance(reg, (int, float)):
        raise TypeError(f"reg must be a positive float, got {type(reg).__name__}")
    reg = float(reg)
    if not (math.isfinite(reg) and reg > 0):
        raise ValueError(f"reg must be a positive finite float, got {reg}")
    return reg


def check_units(units: str) -> str:
    if units not in ("normalized", "pixel"):
        raise ValueError(f"units must be 'normalized' or 'pixel', got {units!r}")
    return units


def check_iter(max_iter: int, tol: float, check_every: int) -> None:
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol must be a non-negative float, got {tol!r}")
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be a positive int, got {check_every!r}")
