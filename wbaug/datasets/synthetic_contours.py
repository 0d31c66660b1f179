"""Organ-like closed contours as unordered point clouds of varying size (cardiac-MRI stand-in).

Each contour is a star-shaped smooth closed curve in polar form around a centre ``c``,

.. math::

    r(θ) = R\\,\\frac{a b}{\\sqrt{(b\\cos θ)^2 + (a\\sin θ)^2}}
           \\Big(1 + \\sum_{k=2}^{K} α_k \\cos(kθ + φ_k)\\Big),

an ellipse with axis ratio ``a/b`` perturbed by a few low Fourier modes (``α_k ∝ k^{-2}``, their sum
bounded by 0.45 so ``r > 0`` and the curve is simple), rotated by a random angle. ``N_i`` points are
then placed uniformly in arc length (a random offset plus a small jitter along the curve) and shuffled,
so the point index carries no meaning — like the 200-point heart segmentation contours the paper treats
as unordered clouds (Bespalov et al., "Data augmentation with manifold barycenters", §6).
"""

from __future__ import annotations

import math

import torch

from wbaug._checks import check_generator

__all__ = ["synthetic_contours"]

_DENSE = 512


def synthetic_contours(
    n: int,
    *,
    generator: torch.Generator | None = None,
    num_points: int | tuple[int, int] = (150, 250),
    image_size: int = 256,
    num_modes: int = 5,
    shuffle: bool = True,
) -> list[torch.Tensor]:
    """Draw ``n`` closed organ-like contours with a random number of points each.

    Args:
        n: number of contours (``n >= 0``).
        generator: source of randomness (same state, same contours).
        num_points: ``N`` or an inclusive range ``(min, max)`` for the per-contour point count.
        image_size: side ``S`` of the canvas; points are pixel coordinates inside ``[0, S - 1]``.
        num_modes: highest Fourier mode ``K >= 2`` of the radius perturbation.
        shuffle: randomly permute the points of each contour (unordered semantics); False keeps them
            in counter-clockwise order along the curve (image coordinates, y down).

    Returns:
        A list of ``n`` float32 tensors of shape ``(N_i, 2)``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> cs = synthetic_contours(3, generator=g, num_points=(20, 30))
        >>> [c.shape[1] for c in cs], all(20 <= c.shape[0] <= 30 for c in cs)
        ([2, 2, 2], True)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if isinstance(num_points, int):
        num_points = (num_points, num_points)
    if (
        len(num_points) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in num_points)
        or num_points[0] < 3
        or num_points[1] < num_points[0]
    ):
        raise ValueError(
            f"num_points must be an int >= 3 or a range (min, max) with 3 <= min <= max, got {num_points}"
        )
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an int >= 16, got {image_size!r}")
    if isinstance(num_modes, bool) or not isinstance(num_modes, int) or num_modes < 2:
        raise ValueError(f"num_modes must be an int >= 2, got {num_modes!r}")
    check_generator(generator)
    g = generator
    dt = torch.float64
    size = float(image_size)
    lo, hi = num_points
    counts = torch.randint(lo, hi + 1, (n,), generator=g)
    radius = size * (0.12 + 0.1 * torch.rand(n, 1, generator=g, dtype=dt))
    ratio = 1.0 + 0.5 * torch.rand(n, 1, generator=g, dtype=dt)  # a / b
    k = torch.arange(2, num_modes + 1, dtype=dt)
    amp = 0.12 * torch.randn(n, k.numel(), generator=g, dtype=dt) / k.square() * 4.0
    total = amp.abs().sum(1, keepdim=True)
    amp = amp * (0.45 / total.clamp_min(0.45))
    phase = 2 * math.pi * torch.rand(n, k.numel(), generator=g, dtype=dt)
    rot = 2 * math.pi * torch.rand(n, 1, generator=g, dtype=dt)
    centre = (size - 1) / 2 + 0.08 * size * torch.randn(n, 2, generator=g, dtype=dt)
    offset = torch.rand(n, 1, generator=g, dtype=dt)
    jitter = torch.rand(n, hi, generator=g, dtype=dt) - 0.5
    keys = torch.rand(n, hi, generator=g)

    theta = torch.linspace(0.0, 2 * math.pi, _DENSE + 1, dtype=dt)[:-1].unsqueeze(0)  # (1, D)
    a, b = ratio.sqrt(), 1.0 / ratio.sqrt()
    ellipse = a * b / torch.sqrt((b * theta.cos()).square() + (a * theta.sin()).square())
    wobble = 1.0 + (
        amp.unsqueeze(-1) * torch.cos(k.view(1, -1, 1) * theta.unsqueeze(1) + phase.unsqueeze(-1))
    ).sum(1)
    r = radius * ellipse * wobble  # (n, D)
    ang = theta + rot
    dense = torch.stack([r * ang.cos(), r * ang.sin()], -1) + centre.unsqueeze(1)  # (n, D, 2)
    # keep every contour on the canvas
    low, high = dense.amin(1), dense.amax(1)
    shift = (1.0 - low).clamp_min(0.0) - (high - (size - 2.0)).clamp_min(0.0)
    dense = dense + shift.unsqueeze(1)
    closed = torch.cat([dense, dense[:, :1]], 1)
    seg = (closed[:, 1:] - closed[:, :-1]).norm(dim=-1)  # (n, D)
    cum = torch.cat([torch.zeros(n, 1, dtype=dt), seg.cumsum(1)], 1)  # (n, D + 1)
    # hi slots per contour; slot j < N_i is used, sorted (or shuffled) so the used slots come first
    m = counts.view(n, 1).to(dt)
    slots = torch.arange(hi, dtype=dt).unsqueeze(0)
    used = slots < m
    t = ((slots + offset + 0.3 * jitter) / m) % 1.0
    s = t * cum[:, -1:]
    j = torch.searchsorted(cum.contiguous(), s.contiguous(), right=True).clamp(1, _DENSE) - 1
    c0 = closed.gather(1, j.unsqueeze(-1).expand(n, hi, 2))
    c1 = closed.gather(1, (j + 1).unsqueeze(-1).expand(n, hi, 2))
    frac = ((s - cum.gather(1, j)) / seg.gather(1, j).clamp_min(1e-12)).unsqueeze(-1)
    pts = c0 + frac * (c1 - c0)
    order_key = keys.to(dt) if shuffle else t
    order = torch.where(used, order_key, torch.full_like(order_key, 3.0)).argsort(dim=1)
    pts = pts.gather(1, order.unsqueeze(-1).expand(n, hi, 2)).to(torch.float32)
    valid = torch.arange(hi).unsqueeze(0) < counts.unsqueeze(1)
    return list(pts[valid].split(counts.tolist()))
