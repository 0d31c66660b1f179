r"""Gaussian landmark heatmaps (eq. 1 of *Data augmentation with manifold barycenters*) and their inverses.

Pixel convention (used everywhere in wbaug): landmarks are ``(x, y)`` in **pixels with pixel centres at
integers**: heatmap entry ``[..., i, j]`` is the pixel whose centre is the point ``(x, y) = (j, i)``. An
image of width ``W`` spans ``x in [-0.5, W - 0.5]``. This is kornia's convention, and the one of
``torch.nn.functional.grid_sample(..., align_corners=False)`` after the usual pixel/normalised mapping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from wbaug.landmarks._checks import check_heatmaps, check_points

__all__ = [
    "gaussian_heatmaps",
    "summed_heatmaps",
    "soft_argmax",
    "heatmap_argmax",
    "GaussianHeatmaps",
    "SoftArgmax",
]

Normalize = Literal["peak", "sum", "pdf"] | None


def _check_size(size: object) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in size)
    ):
        raise TypeError(f"size must be an int or a pair of ints (H, W), got {size!r}")
    if size[0] < 1 or size[1] < 1:
        raise ValueError(f"size must be positive, got {tuple(size)}")
    return int(size[0]), int(size[1])


def _sigma_tensor(sigma: float | Tensor, ref: Tensor) -> Tensor:
    """Return sigma as a tensor broadcastable to ``ref.shape + (1,)`` (``ref`` is ``(..., N)``)."""
    if isinstance(sigma, Tensor):
        s = sigma.to(dtype=ref.dtype, device=ref.device)
        if not bool(((s > 0) & torch.isfinite(s)).all()):
            raise ValueError("sigma must be finite and > 0 everywhere")
        try:
            if torch.broadcast_shapes(s.shape, ref.shape) != ref.shape:
                raise RuntimeError
        except RuntimeError as err:
            raise ValueError(
                f"sigma of shape {tuple(s.shape)} does not broadcast to the landmarks' {tuple(ref.shape)}"
            ) from err
        return s.unsqueeze(-1)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(f"sigma must be a positive float or a tensor, got {type(sigma).__name__}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma}")
    return torch.tensor(float(sigma), dtype=ref.dtype, device=ref.device)


def _axis_profiles(coords: Tensor, size: tuple[int, int], sigma: float | Tensor) -> tuple[Tensor, Tensor]:
    """Separable 1-D Gaussian profiles ``gy (..., N, H)`` and ``gx (..., N, W)`` (peak 1)."""
    h, w = size
    s = _sigma_tensor(sigma, coords[..., 0])
    xs = torch.arange(w, dtype=coords.dtype, device=coords.device)
    ys = torch.arange(h, dtype=coords.dtype, device=coords.device)
    gx = torch.exp(-((xs - coords[..., 0:1]) ** 2) / (2 * s**2))
    gy = torch.exp(-((ys - coords[..., 1:2]) ** 2) / (2 * s**2))
    return gy, gx


def gaussian_heatmaps(
    coords: Tensor,
    size: int | tuple[int, int],
    sigma: float | Tensor,
    *,
    normalize: Normalize = "peak",
    visibility: Tensor | None = None,
    eps: float = 1e-12,
) -> Tensor:
    r"""Render one Gaussian heatmap per landmark (eq. 1 of the manifold-barycenters paper).

    .. math::
        L_k(i, j) = c_k \exp\Big(-\frac{(j - x_k)^2 + (i - y_k)^2}{2\sigma^2}\Big)

    with pixel centres at integers (``(i, j)`` = (row, column) = ``(y, x)``) and ``c_k`` chosen by
    ``normalize``: ``"peak"`` (or ``None``) gives ``c_k = 1`` (value 1 at the landmark), ``"sum"`` makes
    every channel sum to 1 over the grid (a discrete probability map), ``"pdf"`` uses the continuous
    density ``c_k = 1 / (2\pi\sigma^2)``. The Gaussian is separable, so the cost is
    ``O(N (H + W))`` plus one outer product; the result is differentiable in ``coords`` (and ``sigma``).

    Args:
        coords: ``(..., N, 2)`` landmark ``(x, y)`` pixel coordinates (typically ``(B, N, 2)``).
        size: ``(H, W)`` of the heatmaps (an int means square).
        sigma: standard deviation in pixels, a float or a tensor broadcastable to ``(..., N)``.
        normalize: ``"peak"`` / ``None``, ``"sum"`` or ``"pdf"`` (see above).
        visibility: optional ``(..., N)`` bool or float mask multiplying each channel (zero for invisible).
        eps: guard for ``"sum"`` when a landmark lies far outside the canvas (its channel is then ~0).

    Returns:
        ``(..., N, H, W)`` heatmaps with the dtype and device of ``coords``.

    Example:
        >>> pts = torch.tensor([[[10.0, 20.0], [30.5, 5.25]]])
        >>> h = gaussian_heatmaps(pts, (32, 48), sigma=2.0)
        >>> h.shape, float(h[0, 0, 20, 10])
        (torch.Size([1, 2, 32, 48]), 1.0)

    Reference: Bespalov et al., *Data augmentation with manifold barycenters*, eq. (1).
    """
    check_points(coords, "coords", dims=(2,))
    if not bool(torch.isfinite(coords).all()):
        raise ValueError("coords contains NaN or infinite values (mark missing landmarks with visibility)")
    size = _check_size(size)
    if normalize not in ("peak", "sum", "pdf", None):
        raise ValueError(f"normalize must be 'peak', 'sum', 'pdf' or None, got {normalize!r}")
    gy, gx = _axis_profiles(coords, size, sigma)
    if normalize == "sum":
        gy = gy / gy.sum(-1, keepdim=True).clamp_min(eps)
        gx = gx / gx.sum(-1, keepdim=True).clamp_min(eps)
    elif normalize == "pdf":
        s = _sigma_tensor(sigma, coords[..., 0])
        c = 1.0 / (math.sqrt(2 * math.pi) * s)
        gy, gx = gy * c, gx * c
    heat = gy.unsqueeze(-1) * gx.unsqueeze(-2)
    if visibility is not None:
        if not isinstance(visibility, Tensor) or visibility.shape != coords.shape[:-1]:
            raise ValueError(f"visibility must be a tensor of shape {tuple(coords.shape[:-1])}")
        heat = heat * visibility.to(heat.dtype)[..., None, None]
    return heat


def summed_heatmaps(
    points: Tensor | Sequence[Tensor],
    size: int | tuple[int, int],
    sigma: float | Tensor,
    *,
    mask: Tensor | None = None,
    normalize: Normalize = "peak",
    eps: float = 1e-12,
) -> Tensor:
    r"""One heatmap per *set* of landmarks: the sum over the channels of :func:`gaussian_heatmaps`.

    .. math:: L(i, j) = \sum_k L_k(i, j)

    This is the representation the manifold-barycenters paper uses for unordered landmarks
    (segmentation contours), where channel identity carries no meaning.

    Args:
        points: ``(B, N, 2)`` tensor, or a list of ``B`` tensors ``(N_b, 2)`` of different sizes.
        size: ``(H, W)``.
        sigma: standard deviation in pixels (float or tensor broadcastable to ``(B, N)``).
        mask: optional ``(B, N)`` bool mask of the points to include (tensor input only).
        normalize: ``"peak"`` / ``None`` (each Gaussian has peak 1, so overlapping points add up),
            ``"sum"`` (the whole map sums to 1: a probability map of the set) or ``"pdf"``
            (sum of continuous densities).

    Returns:
        ``(B, 1, H, W)``.

    Example:
        >>> contours = [torch.rand(40, 2) * 60, torch.rand(25, 2) * 60]
        >>> summed_heatmaps(contours, 64, sigma=1.5, normalize="sum").shape
        torch.Size([2, 1, 64, 64])
    """
    if not isinstance(points, Tensor):
        if not isinstance(points, Sequence) or len(points) == 0:
            raise TypeError("points must be a (B, N, 2) tensor or a non-empty list of (N_i, 2) tensors")
        if mask is not None:
            raise ValueError("mask is only accepted with a (B, N, 2) tensor; a list is already ragged")
        for i, p in enumerate(points):
            check_points(p, f"points[{i}]", dims=(2,))
            if p.ndim != 2:
                raise ValueError(f"points[{i}] must have shape (N_i, 2), got {tuple(p.shape)}")
        n_max = max(p.shape[0] for p in points)
        ref = points[0]
        padded = ref.new_zeros(len(points), n_max, 2)
        mask = torch.zeros(len(points), n_max, dtype=torch.bool, device=ref.device)
        for i, p in enumerate(points):
            padded[i, : p.shape[0]] = p.to(ref.dtype)
            mask[i, : p.shape[0]] = True
        points = padded
    check_points(points, "points", dims=(2,))
    if points.ndim != 3:
        raise ValueError(f"points must have shape (B, N, 2), got {tuple(points.shape)}")
    if normalize not in ("peak", "sum", "pdf", None):
        raise ValueError(f"normalize must be 'peak', 'sum', 'pdf' or None, got {normalize!r}")
    if mask is not None and (not isinstance(mask, Tensor) or mask.shape != points.shape[:-1]):
        raise ValueError(f"mask must be a tensor of shape {tuple(points.shape[:-1])}")
    per_point = "pdf" if normalize == "pdf" else "peak"
    heat = gaussian_heatmaps(points, size, sigma, normalize=per_point, visibility=mask)
    total = heat.sum(1, keepdim=True)
    if normalize == "sum":
        total = total / total.sum((-2, -1), keepdim=True).clamp_min(eps)
    return total


def _grids(heatmaps: Tensor) -> tuple[Tensor, Tensor]:
    h, w = heatmaps.shape[-2:]
    xs = torch.arange(w, dtype=heatmaps.dtype, device=heatmaps.device)
    ys = torch.arange(h, dtype=heatmaps.dtype, device=heatmaps.device)
    return xs, ys


def soft_argmax(
    heatmaps: Tensor,
    *,
    normalize: Literal["softmax", "sum"] = "softmax",
    temperature: float = 1.0,
    eps: float = 1e-12,
) -> Tensor:
    r"""Differentiable expected position of each heatmap channel.

    .. math::
        p_k = \mathrm{softmax}(L_k / \tau) \ \text{or}\ L_k / \textstyle\sum L_k, \qquad
        \hat x_k = \sum_{i,j} p_k[i, j]\, j, \quad \hat y_k = \sum_{i,j} p_k[i, j]\, i

    in the pixel-centre convention of this module. Use ``normalize="softmax"`` for network logits (as
    kornia's ``spatial_soft_argmax2d``) and ``normalize="sum"`` for non-negative maps such as the output
    of :func:`gaussian_heatmaps` (round trip error far below 0.05 px when the Gaussian lies inside the
    canvas; a Gaussian clipped by the border is biased inwards).

    Args:
        heatmaps: ``(..., N, H, W)``.
        normalize: ``"softmax"`` (with ``temperature``) or ``"sum"``.
        temperature: softmax temperature ``tau > 0``.

    Returns:
        ``(..., N, 2)`` ``(x, y)`` coordinates.

    Example:
        >>> pts = torch.tensor([[[12.3, 7.8]]], requires_grad=True)
        >>> xy = soft_argmax(gaussian_heatmaps(pts, (24, 32), 2.0), normalize="sum")
        >>> xy.sum().backward()
    """
    check_heatmaps(heatmaps)
    if normalize not in ("softmax", "sum"):
        raise ValueError(f"normalize must be 'softmax' or 'sum', got {normalize!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    flat = heatmaps.flatten(-2)
    if normalize == "softmax":
        prob = torch.softmax(flat / temperature, dim=-1)
    else:
        prob = flat / flat.sum(-1, keepdim=True).clamp_min(eps)
    prob = prob.view_as(heatmaps)
    xs, ys = _grids(heatmaps)
    x = (prob.sum(-2) * xs).sum(-1)
    y = (prob.sum(-1) * ys).sum(-1)
    return torch.stack([x, y], dim=-1)


def _refine_offsets(f_minus: Tensor, f0: Tensor, f_plus: Tensor, refine: str, tiny: float) -> Tensor:
    if refine == "quarter":
        return 0.25 * torch.sign(f_plus - f_minus)
    if refine == "log_parabola":
        f_minus, f0, f_plus = (torch.log(v.clamp_min(tiny)) for v in (f_minus, f0, f_plus))
    denom = f_minus - 2 * f0 + f_plus
    ok = denom < 0
    off = torch.where(ok, 0.5 * (f_minus - f_plus) / torch.where(ok, denom, -torch.ones_like(denom)), 0.0)
    return off.clamp(-0.5, 0.5)


def heatmap_argmax(
    heatmaps: Tensor,
    *,
    refine: Literal["log_parabola", "parabola", "quarter"] | None = "log_parabola",
    return_values: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Hard argmax of each channel with optional sub-pixel refinement (not differentiable).

    The integer maximum ``(j^*, i^*)`` is refined independently along x and y from its two neighbours
    ``f_-, f_0, f_+``:

    - ``"log_parabola"``: vertex of the parabola through ``log f`` — exact for a Gaussian blob,
      :math:`\delta = \tfrac12 (\log f_- - \log f_+) / (\log f_- - 2\log f_0 + \log f_+)`;
    - ``"parabola"``: the same on ``f`` itself;
    - ``"quarter"``: the classic quarter-pixel shift towards the larger neighbour (Newell et al.);
    - ``None``: integer positions.

    Offsets are clamped to ``[-0.5, 0.5]``; at the border (no neighbour) the axis is left unrefined.

    Args:
        heatmaps: ``(..., N, H, W)``; for ``"log_parabola"`` values should be positive near the peak.
        refine: refinement method (see above).
        return_values: also return the maximum value of each channel.

    Returns:
        ``(..., N, 2)`` ``(x, y)`` coordinates, and ``(..., N)`` maxima when ``return_values``.

    Example:
        >>> h = gaussian_heatmaps(torch.tensor([[[5.3, 9.6]]]), (16, 16), 1.5)
        >>> heatmap_argmax(h)
        tensor([[[5.3000, 9.6000]]])
    """
    check_heatmaps(heatmaps)
    if refine not in ("log_parabola", "parabola", "quarter", None):
        raise ValueError(f"refine must be 'log_parabola', 'parabola', 'quarter' or None, got {refine!r}")
    h, w = heatmaps.shape[-2:]
    flat = heatmaps.detach().flatten(-2)
    if bool(torch.isnan(flat).any()):
        bad = torch.isnan(flat).any(-1).nonzero()[0].tolist()
        raise ValueError(f"heatmaps contains NaN values (first in channel {tuple(bad)}); no maximum exists")
    values, idx = flat.max(-1)
    iy, ix = idx // w, idx % w
    x = ix.to(heatmaps.dtype)
    y = iy.to(heatmaps.dtype)
    if refine is not None:
        tiny = torch.finfo(heatmaps.dtype).tiny

        def at(yy: Tensor, xx: Tensor) -> Tensor:
            return flat.gather(-1, (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).unsqueeze(-1)).squeeze(-1)

        inside_x = (ix > 0) & (ix < w - 1)
        inside_y = (iy > 0) & (iy < h - 1)
        dx = _refine_offsets(at(iy, ix - 1), values, at(iy, ix + 1), refine, tiny)
        dy = _refine_offsets(at(iy - 1, ix), values, at(iy + 1, ix), refine, tiny)
        x = x + torch.where(inside_x, dx, 0.0)
        y = y + torch.where(inside_y, dy, 0.0)
    coords = torch.stack([x, y], dim=-1)
    if return_values:
        return coords, values
    return coords


class GaussianHeatmaps(nn.Module):
    """Module form of :func:`gaussian_heatmaps` (``forward(coords, visibility=None)``).

    Example:
        >>> render = GaussianHeatmaps((64, 64), sigma=2.0, normalize="sum")
        >>> render(torch.rand(2, 68, 2) * 63).shape
        torch.Size([2, 68, 64, 64])
    """

    def __init__(self, size: int | tuple[int, int], sigma: float, *, normalize: Normalize = "peak") -> None:
        super().__init__()
        self.size = _check_size(size)
        self.sigma = sigma
        self.normalize = normalize

    def forward(self, coords: Tensor, visibility: Tensor | None = None) -> Tensor:
        return gaussian_heatmaps(
            coords, self.size, self.sigma, normalize=self.normalize, visibility=visibility
        )

    def extra_repr(self) -> str:
        return f"size={self.size}, sigma={self.sigma}, normalize={self.normalize!r}"


class SoftArgmax(nn.Module):
    """Module form of :func:`soft_argmax`.

    Example:
        >>> SoftArgmax(normalize="softmax", temperature=0.1)(torch.randn(2, 5, 32, 32)).shape
        torch.Size([2, 5, 2])
    """

    def __init__(self, *, normalize: Literal["softmax", "sum"] = "softmax", temperature: float = 1.0) -> None:
        super().__init__()
        self.normalize = normalize
        self.temperature = temperature

    def forward(self, heatmaps: Tensor) -> Tensor:
        return soft_argmax(heatmaps, normalize=self.normalize, temperature=self.temperature)

    def extra_repr(self) -> str:
        return f"normalize={self.normalize!r}, temperature={self.temperature}"
