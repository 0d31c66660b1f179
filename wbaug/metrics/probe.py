r"""Linear-probe NME: the evaluation protocol of unsupervised landmark discovery.

Discovered landmarks carry no semantic labels (their number ``K`` and order are the method's own), so the
field (Thewlis et al., *Unsupervised learning of object landmarks by factorized spatial embeddings*,
ICCV 2017; Jakab et al., *Unsupervised learning of object landmarks through conditional image
generation*, NeurIPS 2018) fits a **linear regressor** from the ``K`` discovered points to the ``N``
annotated ones on a labelled training subset and reports the NME of the regressed points on held-out
images.

With the flattened predictions :math:`x_b \in \mathbb R^{DK}` and targets :math:`y_b \in \mathbb R^{DN}`
of the ``M`` labelled images (rows of :math:`X`, :math:`Y`), the ridge map is

.. math::
    (W, c) = \arg\min_{W, c}\ \sum_b \lVert x_b W + c - y_b\rVert_2^2 + \lambda \lVert W\rVert_F^2
    \;\Rightarrow\;
    W = (\tilde X^\top \tilde X + \lambda I)^{-1} \tilde X^\top \tilde Y,\quad c = \bar y - \bar x W

with :math:`\tilde X = X - \bar x`, :math:`\tilde Y = Y - \bar y` (the intercept is not penalised; with
``bias=False`` there is no intercept and :math:`W = (X^\top X + \lambda I)^{-1} X^\top Y`, the variant
of Jakab et al.). The test predictions :math:`\hat y = x W + c` are scored by :func:`wbaug.metrics.nme`
(inter-ocular by default, the 300-W / BRULÉ IOD convention).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from wbaug.landmarks._checks import check_points
from wbaug.landmarks.layouts import LandmarkLayout
from wbaug.metrics.nme import Normalization, nme

__all__ = ["fit_linear_probe", "linear_probe_nme"]


def _check_pair(pred: Tensor, gt: Tensor, pred_name: str, gt_name: str) -> None:
    check_points(pred, pred_name, finite=True)
    check_points(gt, gt_name, finite=True)
    if pred.ndim != 3:
        raise ValueError(f"{pred_name} must have shape (B, K, D), got {tuple(pred.shape)}")
    if gt.ndim != 3:
        raise ValueError(f"{gt_name} must have shape (B, N, D), got {tuple(gt.shape)}")
    if pred.shape[0] != gt.shape[0]:
        raise ValueError(
            f"{pred_name} and {gt_name} must hold the same number of images, got "
            f"{pred.shape[0]} and {gt.shape[0]}"
        )
    if pred.shape[0] < 1:
        raise ValueError(f"{pred_name} must hold at least one image")


def fit_linear_probe(
    pred: Tensor, gt: Tensor, *, ridge: float = 1e-3, bias: bool = True
) -> tuple[Tensor, Tensor]:
    r"""Fit the ridge map from discovered landmarks to ground truth (see the module docstring).

    Args:
        pred: ``(M, K, D)`` discovered landmarks of the labelled images.
        gt: ``(M, N, D)`` their annotations.
        ridge: :math:`\lambda \ge 0`, scaled by the mean squared (centred) feature value so it is
            unit-free: the penalty is ``ridge · tr(X̃ᵀX̃)/(DK)`` times :math:`\lVert W\rVert_F^2`.
        bias: fit an unpenalised intercept ``c``.

    Returns:
        ``(W, c)``: ``(D·K, D·N)`` and ``(D·N,)`` (zeros without ``bias``), float64.

    Example:
        >>> x = torch.rand(20, 4, 2)
        >>> w, c = fit_linear_probe(x, x[:, :3] * 2 + 1, ridge=0.0)
        >>> w.shape, c.shape
        (torch.Size([8, 6]), torch.Size([6]))
    """
    _check_pair(pred, gt, "pred", "gt")
    if pred.shape[-1] != gt.shape[-1]:
        raise ValueError(
            f"pred and gt must have the same point dimension D, got {pred.shape[-1]} and {gt.shape[-1]}"
        )
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not 0 <= ridge < float("inf"):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    x = pred.detach().flatten(1).to(torch.float64)
    y = gt.detach().flatten(1).to(torch.float64)
    if bias:
        mx, my = x.mean(0), y.mean(0)
        x, y = x - mx, y - my
    gram = x.T @ x
    scale = gram.diagonal().mean().clamp_min(torch.finfo(torch.float64).tiny)
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    w = torch.linalg.lstsq(gram + ridge * scale * eye, x.T @ y).solution
    c = (my - mx @ w) if bias else torch.zeros(y.shape[1], dtype=y.dtype, device=y.device)
    return w, c


def linear_probe_nme(
    pred_train: Tensor,
    gt_train: Tensor,
    pred_test: Tensor,
    gt_test: Tensor,
    *,
    ridge: float = 1e-3,
    bias: bool = True,
    normalization: Normalization | Tensor | float = "inter_ocular",
    layout: str | LandmarkLayout | None = None,
    eye_indices: tuple[int, int] | None = None,
    reduction: Literal["none", "mean"] = "mean",
    return_prediction: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""NME of a ridge regressor from discovered landmarks to annotations (Thewlis et al. / Jakab et al.).

    The map is fitted on ``(pred_train, gt_train)`` by :func:`fit_linear_probe` and applied to
    ``pred_test``; the result is :func:`wbaug.metrics.nme` of the regressed points against ``gt_test``
    (module docstring for the maths).

    Args:
        pred_train: ``(M, K, D)`` discovered landmarks of the labelled (probe-training) images.
        gt_train: ``(M, N, D)`` annotations of those images.
        pred_test: ``(B, K, D)`` discovered landmarks of held-out images.
        gt_test: ``(B, N, D)`` their annotations.
        ridge: relative ridge strength :math:`\lambda \ge 0` (see :func:`fit_linear_probe`).
        bias: fit an (unpenalised) intercept.
        normalization, layout, eye_indices: the NME normaliser (default inter-ocular, layout inferred
            from ``N``), as in :func:`wbaug.metrics.nme`.
        reduction: ``"mean"`` or ``"none"`` (per test image, ``(B,)``).
        return_prediction: also return the regressed test landmarks ``(B, N, D)``.

    Returns:
        The NME (a fraction; ×100 for %), and the regressed landmarks when requested.

    Raises:
        ValueError: bad shapes (the message names the argument), ``K``/``D`` differing between train and
            test, a negative ridge.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> gt = torch.rand(40, 68, 2, generator=g) * 64
        >>> found = gt[:, ::4] @ torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # 17 points, axes swapped
        >>> err = linear_probe_nme(found[:30], gt[:30], found[30:], gt[30:])
        >>> bool(err >= 0)
        True
    """
    _check_pair(pred_train, gt_train, "pred_train", "gt_train")
    _check_pair(pred_test, gt_test, "pred_test", "gt_test")
    if pred_train.shape[1:] != pred_test.shape[1:]:
        raise ValueError(
            "pred_train and pred_test must have the same (K, D), got "
            f"{tuple(pred_train.shape[1:])} and {tuple(pred_test.shape[1:])}"
        )
    if gt_train.shape[1:] != gt_test.shape[1:]:
        raise ValueError(
            "gt_train and gt_test must have the same (N, D), got "
            f"{tuple(gt_train.shape[1:])} and {tuple(gt_test.shape[1:])}"
        )
    w, c = fit_linear_probe(pred_train, gt_train, ridge=ridge, bias=bias)
    x = pred_test.detach().flatten(1).to(w.dtype)
    regressed = (x @ w + c).view(gt_test.shape).to(gt_test.dtype)
    value = nme(
        regressed,
        gt_test,
        normalization=normalization,
        layout=layout,
        eye_indices=eye_indices,
        reduction=reduction,
    )
    return (value, regressed) if return_prediction else value
