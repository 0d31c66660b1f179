r"""BRULÉ regularizers (Bespalov, Buzun & Dylov, *BRULÉ: Barycenter-Regularized Unsupervised Landmark
Extraction*, §4): the barycenter regularizer :math:`R_b` and the geometric regularizer :math:`R_g`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wbaug.landmarks._checks import check_matrices, check_points, check_reduction, reduce
from wbaug.landmarks.geometry import apply_transform, small_inv
from wbaug.landmarks.heatmaps import gaussian_heatmaps, soft_argmax
from wbaug.ot import free_support_barycenter, transport_plan, wasserstein_distance

__all__ = [
    "barycenter_regularizer",
    "BarycenterRegularizer",
    "geometric_regularizer",
    "GeometricRegularizer",
]


def _w2_squared(x: Tensor, y: Tensor) -> Tensor:
    return wasserstein_distance(x, y, p=2).square()


def barycenter_regularizer(
    landmarks: Tensor,
    barycenter: Tensor,
    *,
    coefficients: Sequence[float] = (1.0, 1.0, 1.0),
    eps: float = 1e-8,
    reduction: Literal["none", "mean", "sum"] = "mean",
    return_terms: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""BRULÉ barycenter regularizer :math:`R_b`, factorised into translation, linear map and warp.

    .. math::
        R_b(X) = c_{11} W_2^2(X, T[X]) + c_{12} W_2^2(T[X], A T[X]) + c_{13} W_2^2(A T[X], X_b)

    :math:`T` translates ``X`` so that its centre of mass is the barycenter's :math:`\bar x_b`
    (then :math:`W_2^2(X, T[X]) = \lVert \bar x - \bar x_b\rVert^2`). :math:`A` is the linear map (rotation,
    scaling, shear) about :math:`\bar x_b` that best carries :math:`Y = T[X] - \bar x_b` onto
    :math:`Z = X_b - \bar x_b` under the optimal plan :math:`P` between :math:`T[X]` and :math:`X_b` —
    the paper's closed form (row-vector convention, :math:`A T[X] = Y A + \bar x_b`):

    .. math::
        A = \arg\min_A \sum_{ij} P_{ij} \lVert y_i A - z_j \rVert^2
          = \big(Y^\top \mathrm{diag}(P\mathbf 1) Y + \epsilon I\big)^{-1} Y^\top P Z

    (``eps`` regularises collapsed/collinear landmarks, relative to the trace). :math:`P` is held fixed
    (it is piecewise constant); the gradient flows through ``X``, ``A(X)`` and the three distances,
    all exact OT via :mod:`wbaug.ot`. ``X`` and ``X_b`` may have different numbers of points (unordered).

    Args:
        landmarks: ``(B, N, D)`` predicted landmarks ``X``.
        barycenter: ``(N_b, D)`` or ``(B, N_b, D)`` barycenter ``X_b``.
        coefficients: ``(c11, c12, c13)`` (the paper uses ``1, 1, 1``).
        eps: relative Tikhonov term in the normal equations of ``A``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"`` over the batch.
        return_terms: also return the ``(B, 3)`` unweighted terms.

    Returns:
        ``R_b`` reduced as requested (``(B,)`` for ``"none"``), and the terms when requested.

    Example:
        >>> bary = torch.rand(68, 2)
        >>> x = (bary + 0.05 * torch.randn(4, 68, 2)).requires_grad_()
        >>> barycenter_regularizer(x, bary).backward()

    Reference: BRULÉ §4, "Barycenter regularizer"; Cuturi & Doucet (2014) for the barycenter itself.
    """
    check_reduction(reduction)
    check_points(landmarks, "landmarks", finite=True)
    check_points(barycenter, "barycenter", finite=True)
    if landmarks.ndim != 3:
        raise ValueError(f"landmarks must have shape (B, N, D), got {tuple(landmarks.shape)}")
    if barycenter.ndim == 2:
        barycenter = barycenter.unsqueeze(0)
    if barycenter.ndim != 3 or barycenter.shape[0] not in (1, landmarks.shape[0]):
        raise ValueError(f"barycenter must have shape (N_b, D) or (B, N_b, D), got {tuple(barycenter.shape)}")
    if barycenter.shape[-1] != landmarks.shape[-1]:
        raise ValueError("landmarks and barycenter must have the same point dimension D")
    if len(coefficients) != 3:
        raise ValueError(f"coefficients must be (c11, c12, c13), got {coefficients!r}")
    x = landmarks
    b, n, d = x.shape
    xb = barycenter.to(x.dtype).expand(b, -1, -1)
    mean_x = x.mean(1, keepdim=True)
    mean_b = xb.mean(1, keepdim=True)
    term_t = (mean_x - mean_b).square().sum((-2, -1))  # W2^2(X, T[X]) for a pure translation
    y = x - mean_x  # T[X] - mean_b
    z = xb - mean_b
    tx = y + mean_b
    plan = transport_plan(tx.detach(), xb.detach(), p=2)  # (B, N, N_b)
    gram = y.transpose(1, 2) @ (plan.sum(-1, keepdim=True) * y)  # Y^T diag(P1) Y
    ridge = eps * (gram.diagonal(dim1=-2, dim2=-1).sum(-1) / d + torch.finfo(x.dtype).tiny)
    gram = gram + ridge[:, None, None] * torch.eye(d, dtype=x.dtype, device=x.device)
    a = small_inv(gram) @ (y.transpose(1, 2) @ plan @ z)  # (B, D, D), closed form for D <= 3
    atx = y @ a + mean_b
    term_a = _w2_squared(tx, atx)
    term_w = _w2_squared(atx, xb)
    terms = torch.stack([term_t, term_a, term_w], -1)
    c = torch.as_tensor(list(coefficients), dtype=x.dtype, device=x.device)
    value = reduce((terms * c).sum(-1), reduction)
    if return_terms:
        return value, terms
    return value


class BarycenterRegularizer(nn.Module):
    """Module form of :func:`barycenter_regularizer` holding a fixed barycenter (a buffer).

    Build it from a barycenter ``(N_b, D)`` or from a landmark dataset with :meth:`from_landmarks`
    (the paper computes the barycenter of the training landmarks once and keeps it fixed).

    Example:
        >>> reg = BarycenterRegularizer.from_landmarks(torch.rand(20, 68, 2), max_iter=20)
        >>> x = torch.rand(3, 68, 2, requires_grad=True)
        >>> reg(x).backward()

    Reference: BRULÉ §4 and §5 ("we first compute the barycenter using the given landmarks").
    """

    def __init__(
        self,
        barycenter: Tensor,
        *,
        coefficients: Sequence[float] = (1.0, 1.0, 1.0),
        eps: float = 1e-8,
        reduction: Literal["none", "mean", "sum"] = "mean",
    ) -> None:
        super().__init__()
        check_points(barycenter, "barycenter")
        if barycenter.ndim != 2:
            raise ValueError(f"barycenter must have shape (N_b, D), got {tuple(barycenter.shape)}")
        check_reduction(reduction)
        if len(coefficients) != 3:
            raise ValueError(f"coefficients must be (c11, c12, c13), got {coefficients!r}")
        self.register_buffer("barycenter", barycenter.detach().clone())
        self.coefficients = tuple(float(c) for c in coefficients)
        self.eps = eps
        self.reduction = reduction

    @classmethod
    def from_landmarks(
        cls, landmarks: Tensor, *, max_iter: int = 100, tol: float = 1e-7, **kwargs
    ) -> BarycenterRegularizer:
        """Use the uniform-weight barycenter of a ``(M, N, D)`` landmark dataset.

        Computed with :func:`wbaug.ot.free_support_barycenter`; extra keywords go to the constructor.
        """
        check_points(landmarks, "landmarks")
        if landmarks.ndim != 3 or landmarks.shape[0] < 1:
            raise ValueError(f"landmarks must have shape (M, N, D) with M >= 1, got {tuple(landmarks.shape)}")
        m = landmarks.shape[0]
        weights = torch.full((1, m), 1.0 / m, dtype=landmarks.dtype, device=landmarks.device)
        bary = free_support_barycenter(landmarks.detach()[None], weights, max_iter=max_iter, tol=tol)[0]
        return cls(bary, **kwargs)

    def forward(self, landmarks: Tensor) -> Tensor:
        return barycenter_regularizer(
            landmarks, self.barycenter, coefficients=self.coefficients, eps=self.eps, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        n = self.barycenter.shape[0]
        return f"num_points={n}, coefficients={self.coefficients}, reduction={self.reduction!r}"


def geometric_regularizer(
    heatmaps_g: Tensor,
    landmarks: Tensor,
    matrix: Tensor,
    *,
    sigma: float,
    image_size: tuple[int, int] | None = None,
    ce_weight: float = 1.0,
    l1_weight: float = 1.0,
    temperature: float = 1.0,
    detach_target: bool = False,
    reduction: Literal["none", "mean", "sum"] = "mean",
) -> Tensor:
    r"""BRULÉ geometric regularizer :math:`R_g(L(gI)) = H(L(gI) \,\|\, gL) + \lVert X_L(gI) - X_{gL}\rVert_1`.

    ``heatmaps_g`` are the encoder's logits on the deformed image :math:`gI`; ``landmarks`` are
    :math:`X_L`, its landmarks on the original image; ``matrix`` is :math:`g`. The target
    :math:`X_{gL} = g X_L` is rendered as normalised Gaussian heatmaps :math:`gL` (eq. 1, ``sigma`` in
    heatmap pixels), and

    .. math::
        H = -\frac1N \sum_k \sum_{ij} gL_k[i, j] \log \mathrm{softmax}(L(gI)_k / \tau)[i, j], \qquad
        \ell_1 = \frac1N \sum_k \lVert \mathrm{softargmax}(L(gI)_k) - X_{gL, k}\rVert_1

    with ``R_g = ce_weight * H + l1_weight * l1`` per sample. Coordinates are in heatmap pixels; when
    ``image_size`` is given, ``landmarks`` and ``matrix`` are in image pixels and are converted.

    Args:
        heatmaps_g: ``(B, N, H, W)`` logits of :math:`L(gI)`.
        landmarks: ``(B, N, 2)`` :math:`X_L` on the original image.
        matrix: ``(B, 3, 3)`` the deformation ``g`` (original -> deformed pixels).
        sigma: width of the target heatmaps in heatmap pixels.
        image_size: ``(H_img, W_img)`` when ``landmarks``/``matrix`` are in image pixels.
        ce_weight, l1_weight: weights of the two terms (the paper uses 1 and 1).
        temperature: softmax temperature of the prediction.
        detach_target: stop the gradient through :math:`gL` (off in the paper: both branches learn).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Example:
        >>> logits = torch.randn(2, 10, 32, 32, requires_grad=True)
        >>> x = torch.rand(2, 10, 2) * 31
        >>> geometric_regularizer(logits, x, torch.eye(3), sigma=1.5).backward()

    Reference: BRULÉ §4, "Geometric regularizer" (after Ji et al. and Thewlis et al., ``L(gI) = gL(I)``).
    """
    check_reduction(reduction)
    if not isinstance(heatmaps_g, Tensor) or heatmaps_g.ndim != 4:
        raise ValueError(f"heatmaps_g must have shape (B, N, H, W), got {getattr(heatmaps_g, 'shape', None)}")
    check_points(landmarks, "landmarks", dims=(2,))
    b, n, h, w = heatmaps_g.shape
    if landmarks.shape != (b, n, 2):
        raise ValueError(
            f"landmarks must have shape ({b}, {n}, 2) to match heatmaps_g, got {tuple(landmarks.shape)}"
        )
    m = check_matrices(matrix, "matrix", batch=b).to(landmarks.dtype)
    target = apply_transform(landmarks, m.expand(b, 3, 3))
    if image_size is not None:
        scale = torch.tensor([w / image_size[1], h / image_size[0]], dtype=target.dtype, device=target.device)
        target = (target + 0.5) * scale - 0.5
    if detach_target:
        target = target.detach()
    tgt_maps = gaussian_heatmaps(target, (h, w), sigma, normalize="sum")
    logp = F.log_softmax(heatmaps_g.flatten(-2) / temperature, dim=-1).view_as(heatmaps_g)
    ce = -(tgt_maps * logp).sum((-2, -1)).mean(-1)
    pred = soft_argmax(heatmaps_g, normalize="softmax", temperature=temperature)
    l1 = (pred - target).abs().sum(-1).mean(-1)
    return reduce(ce_weight * ce + l1_weight * l1, reduction)


class GeometricRegularizer(nn.Module):
    """Module form of :func:`geometric_regularizer`; ``forward(heatmaps_g, landmarks, matrix)``.

    Example:
        >>> reg = GeometricRegularizer(sigma=1.5)
        >>> logits = torch.randn(2, 5, 16, 16, requires_grad=True)
        >>> reg(logits, torch.rand(2, 5, 2) * 15, torch.eye(3)).backward()

    Reference: BRULÉ §4.
    """

    def __init__(
        self,
        *,
        sigma: float,
        image_size: tuple[int, int] | None = None,
        ce_weight: float = 1.0,
        l1_weight: float = 1.0,
        temperature: float = 1.0,
        detach_target: bool = False,
        reduction: Literal["none", "mean", "sum"] = "mean",
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        self.sigma = sigma
        self.image_size = image_size
        self.ce_weight = ce_weight
        self.l1_weight = l1_weight
        self.temperature = temperature
        self.detach_target = detach_target
        self.reduction = reduction

    def forward(self, heatmaps_g: Tensor, landmarks: Tensor, matrix: Tensor) -> Tensor:
        return geometric_regularizer(
            heatmaps_g,
            landmarks,
            matrix,
            sigma=self.sigma,
            image_size=self.image_size,
            ce_weight=self.ce_weight,
            l1_weight=self.l1_weight,
            temperature=self.temperature,
            detach_target=self.detach_target,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, ce_weight={self.ce_weight}, l1_weight={self.l1_weight}"
