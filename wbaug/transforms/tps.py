r"""Fast thin-plate-spline (TPS) image warp that makes an image follow its landmarks.

Given landmarks ``src`` in the input image and their new positions ``dst``, the output image shows the
feature at ``src_i`` at ``dst_i``. It is computed backwards: for every output pixel ``p`` we sample the input
at :math:`f(p)`, where :math:`f:\mathbb R^2\to\mathbb R^2` is the thin-plate spline (Bookstein 1989, *IEEE
TPAMI* 11(6)) interpolating :math:`f(\mathrm{dst}_i) = \mathrm{src}_i`:

.. math::
    f(p) = a_0 + A p + \sum_i w_i\, U(\lVert p - \mathrm{dst}_i\rVert), \quad U(r) = r^2\log r,
    \qquad \sum_i w_i = 0,\ \sum_i w_i\,\mathrm{dst}_i^\top = 0,

solved once per image from the ``(N+3) x (N+3)`` system :math:`\begin{bmatrix}K + \lambda I & P\\ P^\top & 0
\end{bmatrix}\begin{bmatrix}w\\a\end{bmatrix} = \begin{bmatrix}\mathrm{src}\\0\end{bmatrix}` (``λ`` =
``regularization`` relaxes interpolation into smoothing, useful when two landmarks coincide).

Speed: on the pixel lattice ``|p - c|^2`` separates into two small tables added by broadcasting, so the
dense map costs one log per pixel and control point plus a ``(2, N) @ (N, HW)`` product, then one
:func:`torch.nn.functional.grid_sample`. ``grid_stride > 1`` evaluates the spline on a
coarse lattice that keeps both image borders and upsamples it bilinearly (an approximation: between two
different faces, stride 4 moved the map by 0.02 px on average but up to ~13 px near folds, so the exact
map, ``grid_stride=1``, is the default). kornia's ``warp_image_tps``
broadcasts a ``(B, HW, N, 2)`` tensor instead and is ~10-40x slower on CPU (see ``benchmarks``).

Conventions: pixel coordinates with pixel centres at integers (``x`` in ``[-0.5, W - 0.5]``); the system is
solved in float64 after a similarity normalisation of the control points (TPS with ``λ = 0`` is invariant
to it, because the constraints absorb the ``r^2 \log s`` term), which keeps it well conditioned.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TPSWarp", "tps_fit", "tps_grid", "tps_transform_points", "tps_warp_image"]


def _check_points(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 3 or x.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (B, N, 2), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _kernel(sq: Tensor) -> Tensor:
    """``U = r^2 log r = 0.5 r^2 log r^2`` from squared distances (0 at r = 0)."""
    return 0.5 * sq * torch.log(sq.clamp_min(torch.finfo(sq.dtype).tiny))


def _sq_dist(a: Tensor, b: Tensor) -> Tensor:
    sq = (a * a).sum(-1)[..., :, None] + (b * b).sum(-1)[..., None, :] - 2.0 * a @ b.transpose(-1, -2)
    return sq.clamp_min(0.0)


def tps_fit(
    control: Tensor, target: Tensor, *, regularization: float = 0.0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Solve the TPS :math:`f` with :math:`f(\mathrm{control}_i) = \mathrm{target}_i`.

    Args:
        control: ``(B, N, 2)`` control points (kernel centres), ``N >= 3`` not all collinear.
        target: ``(B, N, 2)`` their images.
        regularization: ``λ >= 0`` added to the kernel diagonal.

    Returns:
        ``(kernel_weights (B, N, 2), affine (B, 3, 2), center (B, 1, 2), scale (B, 1, 1))``, all float64,
        in the normalised frame ``q = (p - center) / scale``: :math:`f(p) = [1, q]\,\mathrm{affine} +
        \sum_i w_i U(\lVert q - \hat c_i\rVert)` (see :func:`tps_transform_points`).

    Example:
        >>> c = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]])
        >>> params = tps_fit(c, c + 2.0)
        >>> tps_transform_points(c, c, *params)[0, 0]
        tensor([2., 2.])
    """
    control = _check_points(control, "control")
    target = _check_points(target, "target")
    if control.shape != target.shape:
        raise ValueError(
            f"control and target must have the same shape, got {tuple(control.shape)} and "
            f"{tuple(target.shape)}"
        )
    if control.shape[1] < 3:
        raise ValueError(f"control must hold at least 3 points, got {control.shape[1]}")
    if isinstance(regularization, bool) or not isinstance(regularization, (int, float)):
        raise TypeError(f"regularization must be a number >= 0, got {type(regularization).__name__}")
    if not (math.isfinite(regularization) and regularization >= 0):
        raise ValueError(f"regularization must be a finite number >= 0, got {regularization}")
    c = control.detach().to(torch.float64)
    t = target.to(torch.float64)
    b, n, _ = c.shape
    center = c.mean(1, keepdim=True)
    scale = ((c - center) ** 2).sum(-1).mean(1, keepdim=True).sqrt().clamp_min(1e-12)[..., None]
    cn = (c - center) / scale
    # the affine part needs 3 affinely independent control points: the spread's 2nd singular value > 0
    spread = torch.linalg.svdvals(cn)[:, -1] / max(n, 1) ** 0.5
    flat = (spread < 1e-9).nonzero().flatten().tolist()
    if flat:
        raise ValueError(
            f"control points are collinear (or coincide) in batch item(s) {flat[:10]}: a thin-plate spline "
            "needs at least 3 points not on one line"
        )
    k = _kernel(_sq_dist(cn, cn))
    if regularization:
        k = k + regularization * torch.eye(n, dtype=k.dtype, device=k.device)
    p = torch.cat([torch.ones(b, n, 1, dtype=c.dtype, device=c.device), cn], -1)
    top = torch.cat([k, p], -1)
    bottom = torch.cat([p.transpose(1, 2), torch.zeros(b, 3, 3, dtype=c.dtype, device=c.device)], -1)
    system = torch.cat([top, bottom], 1)
    rhs = torch.cat([t, torch.zeros(b, 3, 2, dtype=c.dtype, device=c.device)], 1)
    try:
        sol = torch.linalg.solve(system, rhs)
    except torch.linalg.LinAlgError:
        raise ValueError(
            "control points give a singular thin-plate-spline system (repeated points?); remove duplicates "
            "or use regularization > 0"
        ) from None
    return sol[:, :n], sol[:, n:], center, scale


def tps_transform_points(
    points: Tensor,
    control: Tensor,
    kernel_weights: Tensor,
    affine: Tensor,
    center: Tensor,
    scale: Tensor,
) -> Tensor:
    """Evaluate a TPS from :func:`tps_fit` at ``points (B, P, 2)``; returns ``(B, P, 2)`` in
    ``points.dtype``."""
    dtype = points.dtype if points.is_floating_point() else torch.float32
    q = (points.to(torch.float64) - center) / scale
    cn = (control.detach().to(torch.float64) - center) / scale
    u = _kernel(_sq_dist(q, cn))
    out = u @ kernel_weights + affine[:, :1] + q @ affine[:, 1:]
    return out.to(dtype)


def _evaluate_lattice(
    qx: Tensor, qy: Tensor, cn: Tensor, kw: Tensor, aff: Tensor, chunk: int = 4096
) -> Tensor:
    """``f`` on the lattice ``qx (B, W) x qy (B, H)`` (normalised coordinates): ``(B, H, W, 2)``.

    On a lattice the squared distances separate, ``|q - c|^2 = (x - c_x)^2 + (y - c_y)^2``, so a block of
    rows costs one broadcast addition of two small tables instead of a matrix product; the log (the
    irreducible cost, one per pixel and control point) and the product with the kernel weights follow
    in place, block by block (``~chunk`` pixels, cache-sized buffers).
    """
    b, w = qx.shape
    h = qy.shape[1]
    n = cn.shape[1]
    dt, dev = qx.dtype, qx.device
    rows = max(1, min(h, chunk // max(w, 1)))
    out = torch.empty(b, 2, h, w, dtype=dt, device=dev)
    r2 = torch.empty(n, rows, w, dtype=dt, device=dev)
    lg = torch.empty(n, rows, w, dtype=dt, device=dev)
    tiny = torch.finfo(dt).tiny  # r^2 = 0 at a control point on a pixel: 0 * log(tiny) = 0, not NaN
    for i in range(b):
        c = cn[i]
        dx2 = (qx[i][None, :] - c[:, :1]).square_()  # (N, W)
        # clamped on the small table: r^2 = dy2 + dx2 >= tiny everywhere, with no pass over the big block
        dy2 = (qy[i][None, :] - c[:, 1:]).square_().clamp_min_(tiny)  # (N, H)
        a = aff[i]  # rows: constant, x, y
        affine = (
            a[0][:, None, None]
            + a[1][:, None, None] * qx[i][None, None, :]
            + a[2][:, None, None] * qy[i][None, :, None]
        )
        half_w = 0.5 * kw[i].T  # (2, N); U = r^2 log r^2 / 2
        for s in range(0, h, rows):
            e = min(h, s + rows)
            rr, ll = r2[:, : e - s], lg[:, : e - s]
            torch.add(dy2[:, s:e, None], dx2[:, None, :], out=rr)
            torch.log(rr, out=ll)
            ll.mul_(rr)
            torch.addmm(
                affine[:, s:e].reshape(2, -1), half_w, ll.reshape(n, -1), out=out[i, :, s:e].view(2, -1)
            )
    return out.permute(0, 2, 3, 1)


def tps_grid(
    src: Tensor,
    dst: Tensor,
    size: tuple[int, int],
    *,
    regularization: float = 0.0,
    grid_stride: int = 1,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """``(B, H, W, 2)`` :func:`~torch.nn.functional.grid_sample` grid (``align_corners=False``) that moves the
    content at ``src (B, N, 2)`` to ``dst (B, N, 2)`` in an ``H x W`` output (pixel coordinates)."""
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"size must be two positive ints (H, W), got {size}")
    if isinstance(grid_stride, bool) or not isinstance(grid_stride, int) or grid_stride < 1:
        raise ValueError(f"grid_stride must be an int >= 1, got {grid_stride!r}")
    dtype = dtype or (src.dtype if src.dtype in (torch.float32, torch.float64) else torch.float32)
    kw, aff, center, scale = tps_fit(dst, src, regularization=regularization)
    dev = src.device
    hc = h if grid_stride == 1 else max(2, -(-(h - 1) // grid_stride) + 1)
    wc = w if grid_stride == 1 else max(2, -(-(w - 1) // grid_stride) + 1)
    ys = torch.linspace(0, h - 1, hc, dtype=dtype, device=dev)
    xs = torch.linspace(0, w - 1, wc, dtype=dtype, device=dev)
    # evaluate in the normalised frame, in the working dtype (float32 is plenty for sampling pixels)
    inv = (1.0 / scale).to(dtype)
    qx = (xs[None, :] - center[:, :, 0].to(dtype)) * inv[:, :, 0]  # (B, wc)
    qy = (ys[None, :] - center[:, :, 1].to(dtype)) * inv[:, :, 0]  # (B, hc)
    cn = ((dst.detach().to(torch.float64) - center) / scale).to(dtype)
    grid = _evaluate_lattice(qx, qy, cn, kw.to(dtype), aff.to(dtype))
    if grid_stride != 1 and (hc != h or wc != w):
        grid = F.interpolate(grid.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=True)
        grid = grid.permute(0, 2, 3, 1)
    # pixel centres at integers -> grid_sample's normalised frame (align_corners=False)
    scale_xy = torch.tensor([2.0 / w, 2.0 / h], dtype=dtype, device=dev)
    return (grid + 0.5) * scale_xy - 1.0


def tps_warp_image(
    image: Tensor,
    src: Tensor,
    dst: Tensor,
    *,
    regularization: float = 0.0,
    grid_stride: int = 1,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> Tensor:
    r"""Warp ``image (B, C, H, W)`` (or ``(C, H, W)``) so the content at ``src`` lands at ``dst``.

    Args:
        image: images, float (integer images are warped in float32 and cast back with rounding).
        src: ``(B, N, 2)`` (or ``(N, 2)``) landmarks in ``image``, pixel coordinates.
        dst: their new positions, same shape.
        regularization: TPS smoothing ``λ >= 0`` (0: exact interpolation).
        grid_stride: evaluate the spline every ``grid_stride`` pixels and upsample the map (1: exact).
        mode, padding_mode: passed to :func:`torch.nn.functional.grid_sample`.

    Returns:
        the warped images, same shape and dtype as ``image``.

    Example:
        >>> img = torch.rand(1, 3, 64, 64)
        >>> src = torch.tensor([[[10.0, 10.0], [50.0, 12.0], [30.0, 50.0], [32.0, 30.0]]])
        >>> tps_warp_image(img, src, src + 3.0).shape
        torch.Size([1, 3, 64, 64])

    Reference: Bookstein (1989); used for the paired mode of Bespalov et al.'s barycentric augmentation.
    """
    if not isinstance(image, Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    unbatched = image.ndim == 3
    if unbatched:
        image = image[None]
        src = src[None] if isinstance(src, Tensor) and src.ndim == 2 else src
        dst = dst[None] if isinstance(dst, Tensor) and dst.ndim == 2 else dst
    if image.ndim != 4:
        raise ValueError(f"image must have shape (B, C, H, W) or (C, H, W), got {tuple(image.shape)}")
    src = _check_points(src, "src")
    dst = _check_points(dst, "dst")
    if src.shape[0] != image.shape[0] or dst.shape[0] != image.shape[0]:
        raise ValueError(
            f"src/dst batch ({src.shape[0]}, {dst.shape[0]}) must match image batch {image.shape[0]}"
        )
    work = image if image.is_floating_point() else image.to(torch.float32)
    grid = tps_grid(
        src, dst, image.shape[-2:], regularization=regularization, grid_stride=grid_stride, dtype=work.dtype
    )
    out = F.grid_sample(work, grid, mode=mode, padding_mode=padding_mode, align_corners=False)
    if not image.is_floating_point():
        info = torch.iinfo(image.dtype)
        out = out.round_().clamp_(info.min, info.max).to(image.dtype)
    return out[0] if unbatched else out


class TPSWarp(nn.Module):
    """Module form of :func:`tps_warp_image`: ``TPSWarp()(image, src, dst)``.

    Example:
        >>> warp = TPSWarp(grid_stride=4)
        >>> warp(torch.rand(2, 3, 32, 32), torch.rand(2, 5, 2) * 31, torch.rand(2, 5, 2) * 31).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(
        self,
        *,
        regularization: float = 0.0,
        grid_stride: int = 1,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.regularization = regularization
        self.grid_stride = grid_stride
        self.mode = mode
        self.padding_mode = padding_mode

    def forward(self, image: Tensor, src: Tensor, dst: Tensor) -> Tensor:
        return tps_warp_image(
            image,
            src,
            dst,
            regularization=self.regularization,
            grid_stride=self.grid_stride,
            mode=self.mode,
            padding_mode=self.padding_mode,
        )
