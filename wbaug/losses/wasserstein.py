r"""Wasserstein losses between unordered landmark sets, and the heatmap cross-entropy.

The manifold-barycenters paper (§4) reconstructs landmarks with
:math:`L^L_{rec}(L_R, L) = c_1 H[L_R | L] + c_2 W_1(L_R, L)`, and BRULÉ trains with :math:`W_1` between
predicted and ground-truth landmarks divided by the outer-eye-corner distance "because the key-points
lack the pairwise correspondence". Both are here, batched and differentiable (exact OT from
:mod:`wbaug.ot`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wbaug.landmarks._checks import check_points, check_reduction, reduce
from wbaug.ot import wasserstein_distance

__all__ = [
    "wasserstein_landmark_loss",
    "WassersteinLandmarkLoss",
    "heatmap_cross_entropy",
    "HeatmapCrossEntropy",
]


def _as_batch(x: Tensor | Sequence[Tensor], name: str) -> list[Tensor] | Tensor:
    if isinstance(x, Tensor):
        check_points(x, name, finite=True)
        if x.ndim != 3:
            raise ValueError(f"{name} must have shape (B, N, D), got {tuple(x.shape)}")
        return x
    if not isinstance(x, Sequence) or len(x) == 0:
        raise TypeError(f"{name} must be a (B, N, D) tensor or a non-empty list of (N_i, D) tensors")
    for i, t in enumerate(x):
        check_points(t, f"{name}[{i}]", finite=True)
        if t.ndim != 2 or t.shape[0] == 0:
            raise ValueError(f"{name}[{i}] must have shape (N_i, D) with N_i >= 1, got {tuple(t.shape)}")
    return list(x)


def wasserstein_landmark_loss(
    pred: Tensor | Sequence[Tensor],
    target: Tensor | Sequence[Tensor],
    *,
    p: float = 1,
    squared: bool = False,
    pred_weights: Tensor | None = None,
    target_weights: Tensor | None = None,
    normalizer: Tensor | float | None = None,
    reduction: Literal["none", "mean", "sum"] = "mean",
) -> Tensor:
    r"""Order-free landmark loss: the exact Wasserstein distance between predicted and target sets.

    .. math::
        \ell_b = W_p(\hat X_b, X_b) / s_b \quad (\text{or } W_p^p / s_b^p \text{ with ``squared``})

    between the uniform (or weighted) empirical measures of the two sets, which may have different sizes
    and orders. ``p=1`` gives BRULÉ's training metric (with ``normalizer`` = inter-ocular distance),
    ``p=2, squared=True`` the :math:`W_2^2` used in its barycenter regularizer.

    Args:
        pred: ``(B, N, D)`` or a list of ``(N_b, D)``.
        target: ``(B, M, D)`` or a list of ``(M_b, D)`` (same batch size).
        p: ground-cost exponent (1 or 2 typically).
        squared: return :math:`W_p^p` instead of :math:`W_p`.
        pred_weights, target_weights: optional ``(B, N)`` / ``(B, M)`` masses (tensor inputs only).
        normalizer: optional ``(B,)`` or scalar scale ``s_b`` dividing the distance.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Example:
        >>> pred = torch.rand(4, 68, 2, requires_grad=True)
        >>> target = torch.rand(4, 68, 2)[:, torch.randperm(68)]
        >>> wasserstein_landmark_loss(pred, target, p=1).backward()

    Reference: BRULÉ §5 (W1 / IOD during training); *Data augmentation with manifold barycenters* §4.
    """
    check_reduction(reduction)
    x = _as_batch(pred, "pred")
    y = _as_batch(target, "target")
    if len(x) != len(y):
        raise ValueError(f"pred and target must have the same batch size, got {len(x)} and {len(y)}")
    if isinstance(x, Tensor) and isinstance(y, Tensor):
        if x.shape[-1] != y.shape[-1]:
            raise ValueError("pred and target must have the same point dimension D")
        value = wasserstein_distance(x, y, a=pred_weights, b=target_weights, p=p)
    else:
        if pred_weights is not None or target_weights is not None:
            raise ValueError("pred_weights/target_weights are only supported for tensor inputs")
        value = torch.stack([wasserstein_distance(xi, yi, p=p) for xi, yi in zip(x, y)])
    if normalizer is not None:
        s = torch.as_tensor(normalizer, dtype=value.dtype, device=value.device)
        if s.ndim > 1 or (s.ndim == 1 and s.shape[0] != value.shape[0]):
            raise ValueError(f"normalizer must be a scalar or have shape ({value.shape[0]},)")
        if bool((s <= 0).any()):
            raise ValueError("normalizer must be positive")
        value = value / s
    if squared:
        value = value.pow(p)
    return reduce(value, reduction)


class WassersteinLandmarkLoss(nn.Module):
    """Module form of :func:`wasserstein_landmark_loss`: ``forward(pred, target, normalizer=None)``.

    Example:
        >>> loss = WassersteinLandmarkLoss(p=2, squared=True)
        >>> loss(torch.rand(2, 30, 2, requires_grad=True), torch.rand(2, 25, 2)).backward()
    """

    def __init__(
        self, *, p: float = 1, squared: bool = False, reduction: Literal["none", "mean", "sum"] = "mean"
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        self.p = p
        self.squared = squared
        self.reduction = reduction

    def forward(
        self,
        pred: Tensor | Sequence[Tensor],
        target: Tensor | Sequence[Tensor],
        normalizer: Tensor | float | None = None,
    ) -> Tensor:
        return wasserstein_landmark_loss(
            pred, target, p=self.p, squared=self.squared, normalizer=normalizer, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return f"p={self.p}, squared={self.squared}, reduction={self.reduction!r}"


def heatmap_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    temperature: float = 1.0,
    reduction: Literal["none", "mean", "sum"] = "mean",
) -> Tensor:
    r"""Cross-entropy between target heatmaps and predicted per-channel spatial distributions.

    .. math::
        H[\hat L | L] = -\frac1N \sum_k \sum_{ij} \frac{L_k[i,j]}{\sum L_k}
                        \log \mathrm{softmax}(\hat L_k/\tau)[i,j]

    Works for per-landmark ``(B, N, H, W)`` and summed ``(B, 1, H, W)`` heatmaps; targets are normalised
    per channel (so :func:`wbaug.landmarks.gaussian_heatmaps` output of any normalisation works).

    Example:
        >>> from wbaug.landmarks import gaussian_heatmaps
        >>> target = gaussian_heatmaps(torch.rand(2, 5, 2) * 31, (32, 32), 1.5)
        >>> heatmap_cross_entropy(torch.randn(2, 5, 32, 32, requires_grad=True), target).backward()

    Reference: *Data augmentation with manifold barycenters* §4 (:math:`H[L_R|L]`); BRULÉ Alg. 2.
    """
    check_reduction(reduction)
    for name, t in (("logits", logits), ("target", target)):
        if not isinstance(t, Tensor) or t.ndim != 4:
            raise ValueError(f"{name} must have shape (B, N, H, W), got {getattr(t, 'shape', None)}")
    if logits.shape != target.shape:
        raise ValueError(
            f"logits and target must have the same shape, got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    if not bool(torch.isfinite(target).all()) or bool((target < 0).any()):
        raise ValueError("target must hold finite, non-negative values (heatmaps are normalised per channel)")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number > 0, got {type(temperature).__name__}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    tgt = target.flatten(-2)
    tgt = tgt / tgt.sum(-1, keepdim=True).clamp_min(torch.finfo(tgt.dtype).tiny)
    logp = F.log_softmax(logits.flatten(-2) / temperature, dim=-1)
    value = -(tgt * logp).sum(-1).mean(-1)
    return reduce(value, reduction)


class HeatmapCrossEntropy(nn.Module):
    """Module form of :func:`heatmap_cross_entropy`.

    Example:
        >>> logits = torch.randn(1, 3, 8, 8, requires_grad=True)
        >>> HeatmapCrossEntropy()(logits, torch.rand(1, 3, 8, 8)).backward()
    """

    def __init__(
        self, *, temperature: float = 1.0, reduction: Literal["none", "mean", "sum"] = "mean"
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        self.temperature = temperature
        self.reduction = reduction

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return heatmap_cross_entropy(logits, target, temperature=self.temperature, reduction=self.reduction)
