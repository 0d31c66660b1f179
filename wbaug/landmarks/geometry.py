r"""Homogeneous transforms of landmarks, mirroring, and similarity / affine alignment.

All matrices are ``(B, D+1, D+1)`` homogeneous maps acting on column vectors
``[x, y, 1]^T`` in pixel coordinates with pixel centres at integers; a horizontal mirror of an image of
width ``W`` is therefore ``x -> W - 1 - x``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from wbaug.landmarks._checks import check_flip_indices, check_matrices, check_points

__all__ = [
    "small_det",
    "small_inv",
    "apply_transform",
    "invert_transform",
    "horizontal_flip_matrix",
    "rotation_matrix",
    "flip_landmarks",
    "estimate_similarity",
    "estimate_affine",
    "procrustes_align",
]


def apply_transform(points: Tensor, matrix: Tensor) -> Tensor:
    r"""Apply homogeneous transforms to point sets: :math:`\tilde p = M [p; 1]`, then divide by the last row.

    Args:
        points: ``(B, N, D)`` (``D = 2`` or ``3``) or ``(N, D)``.
        matrix: ``(B, D+1, D+1)`` or ``(D+1, D+1)`` (broadcast over the batch).

    Returns:
        ``(B, N, D)`` (or ``(N, D)``) transformed points; differentiable in both arguments.

    Example:
        >>> m = torch.tensor([[2.0, 0, 1], [0, 2, -1], [0, 0, 1]])
        >>> apply_transform(torch.tensor([[1.0, 1.0]]), m)
        tensor([[3., 1.]])
    """
    check_points(points, "points")
    d = points.shape[-1]
    squeeze = points.ndim == 2
    pts = points.unsqueeze(0) if squeeze else points
    if pts.ndim != 3:
        raise ValueError(f"points must have shape (B, N, D) or (N, D), got {tuple(points.shape)}")
    m = check_matrices(matrix, "matrix", batch=pts.shape[0], dim=d).to(pts.dtype)
    lin = m[:, :d, :d]
    trans = m[:, :d, d]
    out = pts @ lin.transpose(-1, -2) + trans.unsqueeze(-2)
    last = m[:, d, :]
    if m.requires_grad or not bool((last[:, :d] == 0).all() and (last[:, d] == 1).all()):
        # projective division (also whenever the matrix is differentiated, so that its last row gets
        # its true gradient)
        w = pts @ last[:, :d].unsqueeze(-1) + last[:, d : d + 1].unsqueeze(-1)
        out = out / w
    return out.squeeze(0) if squeeze else out


def small_det(m: Tensor) -> Tensor:
    """Determinant of ``(..., K, K)`` matrices; closed form for ``K <= 3`` (no LAPACK call, which on CPU
    costs milliseconds per batched call of tiny matrices), ``torch.linalg.det`` otherwise."""
    k = m.shape[-1]
    if k == 1:
        return m[..., 0, 0]
    if k == 2:
        return m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
    if k == 3:
        return (
            m[..., 0, 0] * (m[..., 1, 1] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 1])
            - m[..., 0, 1] * (m[..., 1, 0] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 0])
            + m[..., 0, 2] * (m[..., 1, 0] * m[..., 2, 1] - m[..., 1, 1] * m[..., 2, 0])
        )
    return torch.linalg.det(m)


def small_inv(m: Tensor) -> Tensor:
    """Inverse of ``(..., K, K)`` matrices: adjugate / determinant for ``K <= 3`` (no LAPACK call),
    ``torch.linalg.inv`` otherwise. No singularity check (see :func:`invert_transform`)."""
    if m.shape[-1] == 1:
        return 1.0 / m
    if m.shape[-1] == 2:
        adj = torch.stack(
            [torch.stack([m[..., 1, 1], -m[..., 0, 1]], -1), torch.stack([-m[..., 1, 0], m[..., 0, 0]], -1)],
            -2,
        )
        return adj / small_det(m)[..., None, None] + 0.0  # + 0.0 turns -0.0 into 0.0
    if m.shape[-1] != 3:
        return torch.linalg.inv(m)
    a, b, c = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    d, e, f = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    g, h, i = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    adj = torch.stack(
        [
            torch.stack([e * i - f * h, c * h - b * i, b * f - c * e], -1),
            torch.stack([f * g - d * i, a * i - c * g, c * d - a * f], -1),
            torch.stack([d * h - e * g, b * g - a * h, a * e - b * d], -1),
        ],
        -2,
    )
    return adj / small_det(m)[..., None, None] + 0.0  # + 0.0 turns -0.0 into 0.0


def _singular_value_ratio(lin: Tensor) -> Tensor:
    """``sigma_min / sigma_max`` of ``(..., D, D)``; closed form for ``D == 2``."""
    if lin.shape[-1] != 2:
        sv = torch.linalg.svdvals(lin)
        return sv[..., -1] / sv[..., 0].clamp_min(torch.finfo(lin.dtype).tiny)
    fro = lin.square().sum((-2, -1))
    det = small_det(lin).abs()
    smax2 = 0.5 * (fro + (fro.square() - 4 * det.square()).clamp_min(0).sqrt())
    smax = smax2.sqrt().clamp_min(torch.finfo(lin.dtype).tiny)
    return det / smax / smax


def invert_transform(matrix: Tensor, *, name: str = "matrix", rtol: float | None = None) -> Tensor:
    r"""Invert ``(B, K, K)`` homogeneous transforms, refusing (numerically) singular ones.

    Writing :math:`M = \begin{pmatrix} L & t \\ p^\top & s \end{pmatrix}`, ``M`` is singular when its
    linear block ``L`` is (smallest singular value below ``rtol`` times the largest, default
    ``rtol = 1e3 * eps(dtype)``), or when the Schur complement :math:`s - p^\top L^{-1} t` vanishes
    relative to its terms (projective maps). Translations do not affect the test, so matrices with large
    pixel offsets are fine. The error names ``name`` and the offending batch indices.

    Example:
        >>> invert_transform(torch.diag(torch.tensor([2.0, 4.0, 1.0])))
        tensor([[0.5000, 0.0000, 0.0000],
                [0.0000, 0.2500, 0.0000],
                [0.0000, 0.0000, 1.0000]])
    """
    if not isinstance(matrix, Tensor) or matrix.ndim < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"{name} must be a tensor of square matrices (..., K, K)")
    if not matrix.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {matrix.dtype}")
    if not bool(torch.isfinite(matrix).all()):
        raise ValueError(f"{name} contains non-finite values")
    tol = rtol if rtol is not None else 1e3 * torch.finfo(matrix.dtype).eps
    matrix = matrix.contiguous()  # batched LAPACK calls are ~100x slower on expanded (stride-0) inputs
    m = matrix.detach()
    d = m.shape[-1] - 1
    lin = m[..., :d, :d]
    bad = _singular_value_ratio(lin) <= tol
    projective = bool((m[..., d, :d] != 0).any() or (m[..., d, d] != 1).any())
    if projective and not bool(bad.any()):
        p, t, s = m[..., d, :d], m[..., :d, d], m[..., d, d]
        ptl = (p.unsqueeze(-2) @ torch.linalg.solve(lin, t.unsqueeze(-1))).squeeze(-1).squeeze(-1)
        schur = s - ptl
        bad = schur.abs() <= tol * (s.abs() + ptl.abs())
    if bool(bad.any()):
        where = torch.nonzero(bad.reshape(-1)).flatten().tolist()[:8]
        raise ValueError(f"{name} is singular (not invertible) at batch indices {where}")
    if not projective and not matrix.requires_grad:
        # block inverse [[L^-1, -L^-1 t], [0, 1]]: better conditioned for large t (a differentiated matrix
        # keeps the full adjugate so that its last row gets its true gradient)
        lin_inv = small_inv(matrix[..., :d, :d])
        out = torch.zeros_like(matrix)
        out[..., :d, :d] = lin_inv
        out[..., :d, d] = -(lin_inv @ matrix[..., :d, d : d + 1]).squeeze(-1) + 0.0
        out[..., d, d] = 1
        return out
    return small_inv(matrix)


def horizontal_flip_matrix(
    width: int | float | Tensor,
    *,
    batch_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """The ``(3, 3)`` (or ``(B, 3, 3)``) mirror ``x -> W - 1 - x`` (pixel centres at integers).

    Example:
        >>> horizontal_flip_matrix(10)
        tensor([[-1.,  0.,  9.],
                [ 0.,  1.,  0.],
                [ 0.,  0.,  1.]])
    """
    w = torch.as_tensor(width, dtype=dtype, device=device)
    if w.ndim > 1:
        raise ValueError("width must be a scalar or a (B,) tensor")
    m = torch.eye(3, dtype=dtype, device=device).expand(*w.shape, 3, 3).clone()
    m[..., 0, 0] = -1
    m[..., 0, 2] = w - 1
    if batch_size is not None:
        m = m.expand(batch_size, 3, 3).clone() if m.ndim == 2 else m
    return m


def rotation_matrix(
    angle: float | Tensor,
    *,
    scale: float | Tensor = 1.0,
    center: tuple[float, float] | Tensor = (0.0, 0.0),
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Rotation by ``angle`` (radians, counter-clockwise in a y-up frame) and scaling about ``center``:
    eq. (3.2) of the ELT thesis,

    .. math::
        R = \begin{pmatrix} s\cos\alpha & -s\sin\alpha & x_0(1 - s\cos\alpha) + y_0 s\sin\alpha \\
        s\sin\alpha & s\cos\alpha & -x_0 s\sin\alpha + y_0(1 - s\cos\alpha) \\ 0 & 0 & 1\end{pmatrix}

    Args:
        angle: scalar or ``(B,)`` radians.
        scale: scalar or ``(B,)``.
        center: ``(x0, y0)`` or ``(B, 2)``.

    Returns:
        ``(3, 3)`` or ``(B, 3, 3)``; differentiable in its tensor arguments.

    Example:
        >>> r = rotation_matrix(0.5, scale=1.2, center=(10.0, 20.0))
        >>> apply_transform(torch.tensor([[10.0, 20.0]]), r)
        tensor([[10., 20.]])
    """
    a = torch.as_tensor(angle, dtype=dtype, device=device)
    s = torch.as_tensor(scale, dtype=dtype, device=device)
    c = torch.as_tensor(center, dtype=dtype, device=device)
    if c.shape[-1:] != (2,):
        raise ValueError(f"center must be (x0, y0) or (B, 2), got shape {tuple(c.shape)}")
    a, s = torch.broadcast_tensors(a, s)
    x0, y0 = c[..., 0], c[..., 1]
    cos, sin = s * torch.cos(a), s * torch.sin(a)
    cos, sin, x0, y0 = torch.broadcast_tensors(cos, sin, x0, y0)
    zero, one = torch.zeros_like(cos), torch.ones_like(cos)
    rows = [
        torch.stack([cos, -sin, x0 * (1 - cos) + y0 * sin], -1),
        torch.stack([sin, cos, -x0 * sin + y0 * (1 - cos)], -1),
        torch.stack([zero, zero, one], -1),
    ]
    return torch.stack(rows, -2)


def flip_landmarks(
    points: Tensor,
    width: int | float | Tensor,
    flip_indices: Sequence[int] | Tensor | None = None,
) -> Tensor:
    """Mirror landmarks horizontally (``x -> W - 1 - x``) and swap left/right partners.

    ``out[..., i, :] = mirror(points[..., flip_indices[i], :])``; without ``flip_indices`` only the
    coordinates are mirrored (what torchvision's ``RandomHorizontalFlip`` does).

    Args:
        points: ``(..., N, D)``; only ``x`` changes.
        width: image width ``W`` (scalar, or ``(B,)`` tensor for ``(B, N, D)`` points).
        flip_indices: the layout's involutive permutation (see :func:`wbaug.landmarks.get_layout`).

    Example:
        >>> pts = torch.tensor([[[1.0, 5.0], [8.0, 5.0]]])
        >>> flip_landmarks(pts, 10, [1, 0])
        tensor([[[1., 5.],
                 [8., 5.]]])
    """
    check_points(points, "points")
    w = torch.as_tensor(width, dtype=points.dtype, device=points.device)
    if w.ndim == 1:
        if points.ndim < 3 or w.shape[0] != points.shape[0]:
            raise ValueError("a (B,) width needs points of shape (B, N, D) with the same B")
        w = w.view(-1, *([1] * (points.ndim - 1)))[..., 0]
    out = points.clone()
    out[..., 0] = w - 1 - points[..., 0]
    if flip_indices is not None:
        idx = check_flip_indices(flip_indices, points.shape[-2]).to(points.device)
        out = out[..., idx, :]
    return out


def _weights(src: Tensor, weights: Tensor | None) -> Tensor:
    if weights is None:
        return torch.ones(src.shape[:-1], dtype=src.dtype, device=src.device)
    if weights.shape != src.shape[:-1]:
        raise ValueError(f"weights must have shape {tuple(src.shape[:-1])}, got {tuple(weights.shape)}")
    return weights.to(src.dtype)


def _check_pair(src: Tensor, dst: Tensor) -> None:
    check_points(src, "src")
    check_points(dst, "dst")
    if src.shape != dst.shape:
        raise ValueError(
            f"src and dst must have the same shape, got {tuple(src.shape)} and {tuple(dst.shape)}"
        )


def estimate_similarity(
    src: Tensor, dst: Tensor, *, weights: Tensor | None = None, scaling: bool = True
) -> Tensor:
    r"""Least-squares similarity (Umeyama) mapping ``src`` onto ``dst``.

    .. math:: \min_{s, R, t} \sum_i w_i \| s R\, src_i + t - dst_i \|^2, \quad R \in SO(D)

    Args:
        src, dst: ``(B, N, D)`` corresponding points.
        weights: optional ``(B, N)`` non-negative weights.
        scaling: estimate ``s`` (otherwise a rigid transform).

    Returns:
        ``(B, D+1, D+1)`` homogeneous matrices.

    Example:
        >>> x = torch.rand(1, 10, 2)
        >>> m = estimate_similarity(x, 2 * x + 1)
        >>> torch.allclose(apply_transform(x, m), 2 * x + 1, atol=1e-5)
        True
    """
    _check_pair(src, dst)
    w = _weights(src, weights)
    d = src.shape[-1]
    wsum = w.sum(-1, keepdim=True).clamp_min(torch.finfo(src.dtype).tiny)
    wn = (w / wsum).unsqueeze(-1)
    mu_s = (wn * src).sum(-2)
    mu_d = (wn * dst).sum(-2)
    xs = src - mu_s.unsqueeze(-2)
    xd = dst - mu_d.unsqueeze(-2)
    cov = (xd * wn).transpose(-1, -2) @ xs  # (B, D, D)
    u, sig, vh = torch.linalg.svd(cov)
    sign = torch.sign(torch.linalg.det(u @ vh))
    e = torch.ones_like(sig)
    e[..., -1] = torch.where(sign == 0, torch.ones_like(sign), sign)
    rot = u @ torch.diag_embed(e) @ vh
    if scaling:
        var = (wn.squeeze(-1) * (xs**2).sum(-1)).sum(-1)
        s = (sig * e).sum(-1) / var.clamp_min(torch.finfo(src.dtype).tiny)
    else:
        s = torch.ones(src.shape[:-2], dtype=src.dtype, device=src.device)
    lin = s[..., None, None] * rot
    t = mu_d - (lin @ mu_s.unsqueeze(-1)).squeeze(-1)
    m = torch.zeros(*src.shape[:-2], d + 1, d + 1, dtype=src.dtype, device=src.device)
    m[..., :d, :d] = lin
    m[..., :d, d] = t
    m[..., d, d] = 1
    return m


def estimate_affine(src: Tensor, dst: Tensor, *, weights: Tensor | None = None) -> Tensor:
    r"""Weighted least-squares affine map ``src -> dst`` as ``(B, D+1, D+1)`` matrices.

    .. math:: \min_{A, t} \sum_i w_i \| A\, src_i + t - dst_i \|^2

    Raises ``ValueError`` when the points are degenerate (collinear in 2D).

    Example:
        >>> x = torch.rand(1, 10, 2, dtype=torch.float64)
        >>> a = torch.tensor([[[1.0, 0.3, 2.0], [-0.2, 0.9, 1.0], [0, 0, 1]]], dtype=torch.float64)
        >>> torch.allclose(estimate_affine(x, apply_transform(x, a)), a)
        True
    """
    _check_pair(src, dst)
    w = _weights(src, weights)
    d = src.shape[-1]
    ones = torch.ones_like(src[..., :1])
    xh = torch.cat([src, ones], dim=-1)  # (B, N, D+1)
    xtw = (xh * w.unsqueeze(-1)).transpose(-1, -2)
    gram = xtw @ xh
    sv = torch.linalg.svdvals(gram.detach())
    if bool((sv[..., -1] <= 1e3 * torch.finfo(src.dtype).eps * sv[..., 0]).any()):
        raise ValueError("src points are degenerate (e.g. collinear): the affine map is not determined")
    sol = torch.linalg.solve(gram, xtw @ dst)  # (B, D+1, D)
    m = torch.zeros(*src.shape[:-2], d + 1, d + 1, dtype=src.dtype, device=src.device)
    m[..., :d, :] = sol.transpose(-1, -2)
    m[..., d, d] = 1
    return m


def procrustes_align(
    src: Tensor, dst: Tensor, *, weights: Tensor | None = None, scaling: bool = True
) -> Tensor:
    """``src`` moved onto ``dst`` by the best similarity (:func:`estimate_similarity`); ``(B, N, D)``.

    Example:
        >>> x = torch.rand(2, 68, 2)
        >>> procrustes_align(x, x).shape
        torch.Size([2, 68, 2])
    """
    return apply_transform(src, estimate_similarity(src, dst, weights=weights, scaling=scaling))
