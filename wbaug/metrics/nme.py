r"""Normalised mean error (NME) family for landmark localisation.

Per image,

.. math::
    \mathrm{NME}_b = \frac{1}{d_b} \frac{\sum_i v_{bi} \lVert \hat p_{bi} - p_{bi}\rVert_2}{\sum_i v_{bi}}

with the normaliser :math:`d_b` one of: ``"inter_ocular"`` (outer eye corners of the ground truth,
300-W / WFLW convention and BRULÉ's IOD), ``"inter_pupil"`` (distance between the eye centres, the ELT
thesis' metric), ``"bbox_diagonal"`` (diagonal of the ground-truth bounding box), ``"bbox_size"``
(:math:`\sqrt{wh}` of that box), ``"image_size"`` (:math:`\sqrt{HW}`, the image side for square images:
the "%-MSE normalised by image size" of the manifold-barycenters paper), or an explicit tensor.
Values are fractions; multiply by 100 for percentages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from wbaug.landmarks._checks import check_points
from wbaug.landmarks.layouts import LandmarkLayout, get_layout
from wbaug.ot import wasserstein_distance

__all__ = [
    "normalization_distance",
    "nme",
    "ot_nme",
    "nme_x",
    "cumulative_error_distribution",
    "auc",
    "failure_rate",
    "auc_fr",
]

Normalization = Literal["inter_ocular", "inter_pupil", "bbox_diagonal", "bbox_size", "image_size"]


def normalization_distance(
    target: Tensor,
    normalization: Normalization | Tensor | float = "inter_ocular",
    *,
    layout: str | LandmarkLayout | None = None,
    eye_indices: tuple[int, int] | None = None,
    image_size: tuple[int, int] | Tensor | None = None,
    visibility: Tensor | None = None,
) -> Tensor:
    """Per-image normaliser ``d_b`` ``(B,)`` (see the module docstring).

    Args:
        target: ``(B, N, D)`` ground truth.
        normalization: a mode name, or a float / ``(B,)`` tensor used as is.
        layout: layout for the eye indices (default: inferred from ``N`` = 68, 98 or 5).
        eye_indices: explicit ``(left, right)`` point indices overriding the layout's eyes.
        image_size: ``(H, W)`` or ``(B, 2)`` for ``"image_size"``.
        visibility: optional ``(B, N)``; invisible points are ignored for the bounding box.

    Example:
        >>> gt = torch.zeros(1, 68, 2)
        >>> gt[0, 45, 0] = 50.0
        >>> normalization_distance(gt, "inter_ocular")
        tensor([50.])
    """
    check_points(target, "target")
    if target.ndim != 3:
        raise ValueError(f"target must have shape (B, N, D), got {tuple(target.shape)}")
    b, n, _ = target.shape
    if isinstance(normalization, (int, float)) and not isinstance(normalization, bool):
        d = torch.full((b,), float(normalization), dtype=target.dtype, device=target.device)
    elif isinstance(normalization, Tensor):
        d = normalization.to(dtype=target.dtype, device=target.device)
        if d.ndim == 0:
            d = d.expand(b)
        if d.shape != (b,):
            raise ValueError(f"normalization tensor must have shape ({b},), got {tuple(d.shape)}")
    elif normalization in ("inter_ocular", "inter_pupil"):
        if eye_indices is not None:
            left, right = target[:, eye_indices[0]], target[:, eye_indices[1]]
        else:
            lay = _layout_for(layout, n)
            if normalization == "inter_ocular":
                if lay.outer_eye_corners is None:
                    raise ValueError(
                        f"layout {lay.name!r} has no outer eye corners; use 'inter_pupil' or eye_indices"
                    )
                left, right = target[:, lay.outer_eye_corners[0]], target[:, lay.outer_eye_corners[1]]
            else:
                pupils = lay.pupils(target)
                left, right = pupils[:, 0], pupils[:, 1]
        d = (left - right).norm(dim=-1)
    elif normalization in ("bbox_diagonal", "bbox_size"):
        if visibility is not None:
            vis = visibility.to(torch.bool)
            big = torch.finfo(target.dtype).max
            lo = torch.where(vis[..., None], target, torch.full_like(target, big)).amin(1)
            hi = torch.where(vis[..., None], target, torch.full_like(target, -big)).amax(1)
        else:
            lo, hi = target.amin(1), target.amax(1)
        extent = hi - lo
        d = extent.norm(dim=-1) if normalization == "bbox_diagonal" else extent.prod(-1).clamp_min(0).sqrt()
    elif normalization == "image_size":
        if image_size is None:
            raise ValueError("image_size is required for normalization='image_size'")
        size = torch.as_tensor(image_size, dtype=target.dtype, device=target.device)
        size = size.expand(b, 2) if size.ndim == 1 else size
        if size.shape != (b, 2):
            raise ValueError(f"image_size must be (H, W) or have shape ({b}, 2)")
        d = size.prod(-1).sqrt()
    else:
        raise ValueError(
            "normalization must be 'inter_ocular', 'inter_pupil', 'bbox_diagonal', 'bbox_size', "
            f"'image_size', a float or a (B,) tensor; got {normalization!r}"
        )
    if bool((d <= 0).any()):
        raise ValueError("the normalising distance is zero for some images (degenerate ground truth)")
    return d


def _layout_for(layout: str | LandmarkLayout | None, n: int) -> LandmarkLayout:
    if layout is not None:
        lay = get_layout(layout)
        if lay.num_points != n:
            raise ValueError(f"layout {lay.name!r} has {lay.num_points} points but the landmarks have {n}")
        return lay
    by_size = {68: "ibug68", 98: "wflw98", 5: "celeba5"}
    if n not in by_size:
        raise ValueError(f"cannot infer a layout for {n} landmarks; pass layout= or eye_indices=")
    return get_layout(by_size[n])


def nme(
    pred: Tensor,
    target: Tensor,
    *,
    normalization: Normalization | Tensor | float = "inter_ocular",
    layout: str | LandmarkLayout | None = None,
    eye_indices: tuple[int, int] | None = None,
    image_size: tuple[int, int] | Tensor | None = None,
    visibility: Tensor | None = None,
    reduction: Literal["none", "mean"] = "mean",
) -> Tensor:
    r"""Normalised mean error, per image (``reduction="none"``, ``(B,)``) or averaged.

    Example:
        >>> gt = torch.rand(8, 68, 2) * 100
        >>> nme(gt + 1.0, gt, normalization="bbox_diagonal", reduction="none").shape
        torch.Size([8])

    Reference: ELT thesis ch. 4 (NME, inter-pupil); BRULÉ §5 (IOD); Sagonas et al. 2013 (300-W).
    """
    check_points(pred, "pred")
    check_points(target, "target")
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(
            "pred and target must both have shape (B, N, D), got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if reduction not in ("none", "mean"):
        raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")
    d = normalization_distance(
        target,
        normalization,
        layout=layout,
        eye_indices=eye_indices,
        image_size=image_size,
        visibility=visibility,
    )
    err = (pred - target).norm(dim=-1)  # (B, N)
    if visibility is None:
        per_image = err.mean(-1)
    else:
        if visibility.shape != err.shape:
            raise ValueError(f"visibility must have shape {tuple(err.shape)}, got {tuple(visibility.shape)}")
        w = visibility.to(err.dtype)
        total = w.sum(-1)
        if bool((total <= 0).any()):
            raise ValueError("visibility marks no landmark as visible for some images (empty visibility)")
        per_image = (err * w).sum(-1) / total
    per_image = per_image / d
    return per_image.mean() if reduction == "mean" else per_image


def ot_nme(
    pred: Tensor | Sequence[Tensor],
    target: Tensor | Sequence[Tensor],
    *,
    normalization: Normalization | Tensor | float = "bbox_diagonal",
    layout: str | LandmarkLayout | None = None,
    eye_indices: tuple[int, int] | None = None,
    image_size: tuple[int, int] | Tensor | None = None,
    reduction: Literal["none", "mean"] = "mean",
) -> Tensor:
    r"""NME after optimal matching, for unordered landmarks (contours, sets of different sizes).

    .. math:: \mathrm{NME}^{OT}_b = W_1(\hat X_b, X_b) / d_b

    With equally many uniform points, :math:`W_1` is the mean distance under the optimal one-to-one
    assignment (so it equals the ordinary NME when the prediction's order is optimal); otherwise it is the
    exact earth mover's distance. Lists of ``(N_b, D)`` tensors are accepted (then ``normalization`` must
    not need point identities: ``"bbox_diagonal"``, ``"bbox_size"``, ``"image_size"`` or a tensor).

    Example:
        >>> gt = torch.rand(4, 68, 2) * 100
        >>> ot_nme(gt[:, torch.randperm(68)], gt)
        tensor(0.)
    """
    if reduction not in ("none", "mean"):
        raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")
    if isinstance(pred, Tensor) and isinstance(target, Tensor):
        check_points(pred, "pred", finite=True)
        check_points(target, "target", finite=True)
        if pred.ndim != 3 or target.ndim != 3 or pred.shape[0] != target.shape[0]:
            raise ValueError("pred and target must have shapes (B, N, D) and (B, M, D) with the same B")
        w1 = wasserstein_distance(pred, target, p=1)
        d = normalization_distance(
            target, normalization, layout=layout, eye_indices=eye_indices, image_size=image_size
        )
    else:
        if isinstance(pred, Tensor) or isinstance(target, Tensor) or len(pred) != len(target):
            raise ValueError("pass pred and target both as tensors or both as lists of the same length")
        for name, sets in (("pred", pred), ("target", target)):
            for i, t in enumerate(sets):
                check_points(t, f"{name}[{i}]", finite=True)
        w1 = torch.stack([wasserstein_distance(p, t, p=1) for p, t in zip(pred, target)])
        d = torch.cat(
            [normalization_distance(t[None], normalization, image_size=image_size) for t in target]
        ).to(w1.dtype)
    per_image = w1 / d
    return per_image.mean() if reduction == "mean" else per_image


def nme_x(errors: Tensor, x: float) -> Tensor:
    r"""NME X of the ELT thesis: the mean over the worst :math:`(100 - X)\%` images (at least one).

    ``x=95`` is the mean NME of the 5 % worst images ("NME 95"); ``x=0`` is the plain mean.

    Example:
        >>> nme_x(torch.arange(1.0, 101.0), 90)
        tensor(95.5000)
    """
    if not isinstance(errors, Tensor) or errors.ndim != 1 or errors.numel() == 0:
        raise ValueError("errors must be a non-empty (M,) tensor of per-image NMEs")
    if not 0 <= x < 100:
        raise ValueError(f"x must lie in [0, 100), got {x}")
    k = max(1, int(round(errors.numel() * (100 - x) / 100)))
    return errors.topk(k).values.mean()


def cumulative_error_distribution(errors: Tensor, thresholds: Tensor) -> Tensor:
    """Fraction of images with error ``<= t`` for each threshold ``t`` (the CED curve)."""
    if not isinstance(errors, Tensor) or errors.ndim != 1 or errors.numel() == 0:
        raise ValueError("errors must be a non-empty (M,) tensor of per-image NMEs")
    return (errors[None, :] <= thresholds[:, None].to(errors.dtype)).to(errors.dtype).mean(-1)


def auc(errors: Tensor, threshold: float = 0.08) -> Tensor:
    r"""Area under the CED curve up to ``threshold``, divided by ``threshold`` (in ``[0, 1]``).

    .. math:: \mathrm{AUC}_\alpha = \frac1\alpha \int_0^\alpha \mathrm{CED}(t)\,dt
              = \frac1M \sum_b \max(0, 1 - e_b/\alpha)

    computed exactly by the closed form (no discretisation of the curve).

    Example:
        >>> auc(torch.tensor([0.0, 0.04, 0.2]), 0.08)
        tensor(0.5000)
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    if not isinstance(errors, Tensor) or errors.ndim != 1 or errors.numel() == 0:
        raise ValueError("errors must be a non-empty (M,) tensor of per-image NMEs")
    return (1 - errors / threshold).clamp_min(0).mean()


def failure_rate(errors: Tensor, threshold: float = 0.08) -> Tensor:
    """Fraction of images whose NME exceeds ``threshold`` (FR@threshold).

    Example:
        >>> failure_rate(torch.tensor([0.01, 0.09, 0.2, 0.05]), 0.08)
        tensor(0.5000)
    """
    if not isinstance(errors, Tensor) or errors.ndim != 1 or errors.numel() == 0:
        raise ValueError("errors must be a non-empty (M,) tensor of per-image NMEs")
    return (errors > threshold).to(errors.dtype).mean()


def auc_fr(errors: Tensor, threshold: float = 0.08) -> tuple[Tensor, Tensor]:
    """``(AUC@threshold, FR@threshold)`` in one call (WFLW reports both at 0.10, 300-W at 0.08)."""
    return auc(errors, threshold), failure_rate(errors, threshold)
