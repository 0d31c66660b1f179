r"""Equivariant landmark transformation loss (ELT, :math:`L_{elt}`) of the ELT thesis §3.3.2–3.3.3.

Two views ``a`` and ``b`` of one image come with the ``(3, 3)`` matrices ``M_a``, ``M_b`` from original
pixels to each view. A landmark predicted at ``p`` in view ``a`` sits at ``M_b M_a^{-1} p`` in view ``b``,
so an equivariant predictor satisfies ``pred_b = M_b M_a^{-1} pred_a``; the thesis uses the view-``b``
predictions as pseudo ground truth and penalises the L2 difference. No labels are needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from wbaug.landmarks._checks import (
    check_flip_indices,
    check_matrices,
    check_reduction,
    reduce,
)
from wbaug.landmarks.geometry import apply_transform, invert_transform, small_det
from wbaug.landmarks.heatmaps import soft_argmax
from wbaug.landmarks.layouts import LandmarkLayout, get_layout

__all__ = [
    "equivariant_landmark_loss",
    "EquivariantLandmarkLoss",
    "pointwise_landmark_loss",
    "as_coordinates",
]

PointLoss = Literal["l2", "l1", "smooth_l1", "euclidean"]


def pointwise_landmark_loss(diff: Tensor, loss: str, beta: float = 1.0) -> Tensor:
    r"""Per-landmark loss of coordinate differences ``(..., N, D) -> (..., N)``.

    ``"l2"``: :math:`\lVert d\rVert_2^2`; ``"l1"``: :math:`\lVert d\rVert_1`; ``"smooth_l1"``: Huber with
    threshold ``beta`` summed over coordinates; ``"euclidean"``: :math:`\lVert d\rVert_2` (gradient 0 at 0).
    """
    if loss == "l2":
        return diff.square().sum(-1)
    if loss == "l1":
        return diff.abs().sum(-1)
    if loss == "smooth_l1":
        a = diff.abs()
        return torch.where(a < beta, 0.5 * a.square() / beta, a - 0.5 * beta).sum(-1)
    if loss == "euclidean":
        sq = diff.square().sum(-1)
        tiny = torch.finfo(diff.dtype).tiny
        return torch.where(sq > 0, sq.clamp_min(tiny).sqrt(), torch.zeros_like(sq))
    raise ValueError(f"loss must be 'l2', 'l1', 'smooth_l1' or 'euclidean', got {loss!r}")


def as_coordinates(
    pred: Tensor,
    name: str,
    *,
    image_size: tuple[int, int] | None = None,
    temperature: float = 1.0,
    heatmap_normalize: Literal["softmax", "sum"] = "softmax",
) -> Tensor:
    """``(B, N, 2)`` coordinates from coordinates or ``(B, N, H, W)`` heatmaps (soft-argmax), optionally
    rescaled from heatmap pixels to ``image_size = (H_img, W_img)`` pixels (centres at integers)."""
    if not isinstance(pred, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(pred).__name__}")
    if not pred.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {pred.dtype}")
    if pred.ndim == 3 and pred.shape[-1] == 2:
        return pred
    if pred.ndim == 4:
        xy = soft_argmax(pred, normalize=heatmap_normalize, temperature=temperature)
        if image_size is not None:
            h, w = pred.shape[-2:]
            scale = torch.tensor([image_size[1] / w, image_size[0] / h], dtype=xy.dtype, device=xy.device)
            xy = (xy + 0.5) * scale - 0.5
        return xy
    raise ValueError(
        f"{name} must be coordinates (B, N, 2) or heatmaps (B, N, H, W), got {tuple(pred.shape)}"
    )


def _weights(visibility: Tensor | None, shape: torch.Size, ref: Tensor) -> Tensor | None:
    if visibility is None:
        return None
    if not isinstance(visibility, Tensor):
        raise TypeError(
            f"visibility must be a tensor of shape {tuple(shape)}, got {type(visibility).__name__}"
        )
    if visibility.shape != shape:
        raise ValueError(f"visibility must have shape {tuple(shape)}, got {tuple(visibility.shape)}")
    w = visibility.to(dtype=ref.dtype, device=ref.device)
    if bool((w < 0).any()):
        raise ValueError("visibility must be non-negative")
    if not bool((w.sum(-1) > 0).any()):
        raise ValueError("visibility marks no landmark as visible in any sample (empty visibility)")
    return w


def _direction(
    src: Tensor,
    tgt: Tensor,
    rel: Tensor,
    flip: Tensor | None,
    flipped: Tensor,
    weights: Tensor | None,
    loss: str,
    beta: float,
) -> tuple[Tensor, Tensor]:
    mapped = apply_transform(src, rel)
    if flip is not None:
        mapped = torch.where(flipped[:, None, None], mapped[:, flip], mapped)
    per_point = pointwise_landmark_loss(mapped - tgt, loss, beta)  # (B, N)
    if weights is None:
        return per_point.mean(-1), torch.ones_like(per_point[:, 0], dtype=torch.bool)
    total = weights.sum(-1)
    value = (per_point * weights).sum(-1) / total.clamp_min(torch.finfo(per_point.dtype).tiny)
    return value, total > 0


def equivariant_landmark_loss(
    pred_a: Tensor,
    pred_b: Tensor,
    matrix_a: Tensor,
    matrix_b: Tensor,
    *,
    visibility: Tensor | None = None,
    flip_indices: str | LandmarkLayout | Sequence[int] | Tensor | None = None,
    flipped: Tensor | None = None,
    loss: PointLoss = "l2",
    beta: float = 1.0,
    detach_target: bool = True,
    symmetric: bool = False,
    image_size: tuple[int, int] | None = None,
    temperature: float = 1.0,
    heatmap_normalize: Literal["softmax", "sum"] = "softmax",
    reduction: Literal["none", "mean", "sum"] = "mean",
) -> Tensor:
    r"""Equivariant landmark transformation loss :math:`L_{elt}` between two views of the same images.

    With :math:`R = M_b M_a^{-1}` (view ``a`` pixels -> view ``b`` pixels) and the optional left/right
    permutation :math:`\pi` applied where :math:`R` mirrors (:math:`\det R_{2\times2} < 0`):

    .. math::
        \ell_b = \frac{\sum_i v_{bi}\, \rho\big((R\,\hat p^a)_{\pi(i)} - \operatorname{sg}(\hat p^b_i)\big)}
                      {\sum_i v_{bi}}

    where :math:`\rho` is ``loss`` (``"l2"``: squared distance, the thesis' choice; ``"l1"``,
    ``"smooth_l1"``, ``"euclidean"``) and ``sg`` stops the gradient when ``detach_target`` (view ``b`` is
    the pseudo ground truth). ``symmetric=True`` averages with the reverse direction ``b -> a``.
    Heatmap inputs are turned into coordinates by :func:`wbaug.landmarks.soft_argmax` (and rescaled to
    ``image_size`` if the matrices are in image pixels while heatmaps are smaller).

    Args:
        pred_a, pred_b: ``(B, N, 2)`` coordinates or ``(B, N, H, W)`` heatmaps of views ``a`` and ``b``.
        matrix_a, matrix_b: ``(B, 3, 3)`` (or ``(3, 3)``) maps from original pixels to each view.
        visibility: optional ``(B, N)`` bool/float weights in view ``b``'s labelling (e.g. the product of
            both views' flags); samples without visible landmarks are left out of the mean.
        flip_indices: the layout's left/right permutation (or a layout / layout name); used for
            mirrored pairs.
        flipped: optional ``(B,)`` bool overriding the mirror detection from the determinant.
        loss, beta: point loss and the ``smooth_l1`` threshold.
        detach_target: stop the gradient through the target view.
        symmetric: average the ``a -> b`` and ``b -> a`` losses.
        image_size: ``(H, W)`` of the images the matrices refer to, for heatmap inputs of another size.
        temperature, heatmap_normalize: soft-argmax settings for heatmap inputs.
        reduction: ``"none"`` (``(B,)``), ``"mean"`` or ``"sum"``.

    Example:
        >>> import math
        >>> pts = torch.rand(4, 68, 2) * 64
        >>> c, s = math.cos(0.3), math.sin(0.3)
        >>> m_b = torch.tensor([[c, -s, 5.0], [s, c, -3.0], [0.0, 0.0, 1.0]]).expand(4, 3, 3)
        >>> pred_a = pts.clone().requires_grad_()
        >>> pred_b = pts @ m_b[:, :2, :2].transpose(1, 2) + m_b[:, :2, 2].unsqueeze(1)
        >>> loss = equivariant_landmark_loss(pred_a, pred_b + 0.1, torch.eye(3), m_b)
        >>> loss.backward()

    Reference: ELT thesis §3.3.2 (eq. 3.8–3.9) and §3.3.3 (undoing crops: :math:`C' C^{-1}`).
    """
    check_reduction(reduction)
    xa = as_coordinates(
        pred_a, "pred_a", image_size=image_size, temperature=temperature, heatmap_normalize=heatmap_normalize
    )
    xb = as_coordinates(
        pred_b, "pred_b", image_size=image_size, temperature=temperature, heatmap_normalize=heatmap_normalize
    )
    if xa.shape != xb.shape:
        raise ValueError(
            "pred_a and pred_b must describe the same landmarks, got "
            f"{tuple(pred_a.shape)} and {tuple(pred_b.shape)}"
        )
    b, n = xa.shape[:2]
    ma = check_matrices(matrix_a, "matrix_a", batch=b).to(xa.dtype)
    mb = check_matrices(matrix_b, "matrix_b", batch=b).to(xa.dtype)
    rel = mb @ invert_transform(ma, name="matrix_a")
    rel = rel.expand(b, 3, 3).contiguous()
    flip = None
    if isinstance(flip_indices, (str, LandmarkLayout)):
        flip_indices = get_layout(flip_indices).flip_indices
    if flip_indices is not None:
        flip = check_flip_indices(flip_indices, n).to(xa.device)
    if flipped is None:
        flipped = small_det(rel[:, :2, :2]) < 0
    elif not isinstance(flipped, Tensor) or flipped.shape != (b,):
        raise ValueError(f"flipped must be a bool tensor of shape ({b},)")
    flipped = flipped.to(device=xa.device, dtype=torch.bool)
    if flip is None and bool(flipped.any()):
        raise ValueError(
            "matrix_b @ inverse(matrix_a) mirrors some samples; pass flip_indices (the layout's left/right "
            "permutation) so that mirrored landmarks are compared with their partners"
        )
    weights = _weights(visibility, xa.shape[:2], xa)
    target_b = xb.detach() if detach_target else xb
    value, has = _direction(xa, target_b, rel, flip, flipped, weights, loss, beta)
    if symmetric:
        target_a = xa.detach() if detach_target else xa
        rel_inv = invert_transform(rel, name="matrix_b @ inverse(matrix_a)")
        w_a = None
        if weights is not None:
            w_a = torch.where(flipped[:, None], weights[:, flip], weights) if flip is not None else weights
        value_ba, _ = _direction(xb, target_a, rel_inv, flip, flipped, w_a, loss, beta)
        value = 0.5 * (value + value_ba)
    if reduction == "mean" and weights is not None:
        return value[has].mean()
    return reduce(value, reduction)


class EquivariantLandmarkLoss(nn.Module):
    """Module form of :func:`equivariant_landmark_loss` (keyword options fixed at construction).

    ``forward(pred_a, pred_b, matrix_a, matrix_b, visibility=None, flipped=None)``.

    Example:
        >>> from wbaug.landmarks import get_layout
        >>> loss_fn = EquivariantLandmarkLoss(flip_indices=get_layout("ibug68").flip_indices)
        >>> pred_a = torch.rand(2, 68, 2, requires_grad=True)
        >>> loss_fn(pred_a, torch.rand(2, 68, 2), torch.eye(3), torch.eye(3)).backward()

    Reference: ELT thesis §3.3.2–3.3.3.
    """

    def __init__(
        self,
        *,
        flip_indices: str | LandmarkLayout | Sequence[int] | Tensor | None = None,
        loss: PointLoss = "l2",
        beta: float = 1.0,
        detach_target: bool = True,
        symmetric: bool = False,
        image_size: tuple[int, int] | None = None,
        temperature: float = 1.0,
        heatmap_normalize: Literal["softmax", "sum"] = "softmax",
        reduction: Literal["none", "mean", "sum"] = "mean",
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        if loss not in ("l2", "l1", "smooth_l1", "euclidean"):
            raise ValueError(f"loss must be 'l2', 'l1', 'smooth_l1' or 'euclidean', got {loss!r}")
        if isinstance(flip_indices, (str, LandmarkLayout)):
            flip_indices = get_layout(flip_indices).flip_indices
        self.flip_indices = (
            None if flip_indices is None else torch.as_tensor(list(flip_indices), dtype=torch.long)
        )
        self.loss = loss
        self.beta = beta
        self.detach_target = detach_target
        self.symmetric = symmetric
        self.image_size = image_size
        self.temperature = temperature
        self.heatmap_normalize = heatmap_normalize
        self.reduction = reduction

    def forward(
        self,
        pred_a: Tensor,
        pred_b: Tensor,
        matrix_a: Tensor,
        matrix_b: Tensor,
        visibility: Tensor | None = None,
        flipped: Tensor | None = None,
    ) -> Tensor:
        return equivariant_landmark_loss(
            pred_a,
            pred_b,
            matrix_a,
            matrix_b,
            visibility=visibility,
            flip_indices=self.flip_indices,
            flipped=flipped,
            loss=self.loss,
            beta=self.beta,
            detach_target=self.detach_target,
            symmetric=self.symmetric,
            image_size=self.image_size,
            temperature=self.temperature,
            heatmap_normalize=self.heatmap_normalize,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"loss={self.loss!r}, symmetric={self.symmetric}, reduction={self.reduction!r}"
