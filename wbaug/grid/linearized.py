"""The linearised (one-step Lagrangian) barycenter used to build the BarycenterNet training targets.

Following "Learning to Generate Wasserstein Barycenters" (Sec. 3.2, after Nader & Guennebaud 2018 and
the GeomLoss documentation): start from the uniform measure ``mu_0`` on the grid (one particle per
pixel), take a *single* Lagrangian descent step of ``sum_k w_k S_eps(b, a_k)``, which moves each
particle ``x`` to ``x + sum_k w_k (T_k(x) - T_0(x))``, where ``T_k`` is the entropic barycentric
projection (transport map) from ``mu_0`` to ``a_k`` and ``T_0`` the one from ``mu_0`` to itself (the
Sinkhorn-divergence debiasing term, which cancels the entropic shrinkage toward the centre), then
splat the particles back onto the grid bilinearly. Maps ``T_k`` depend on one input only, so they
can be precomputed per shape and any weighted combination is cheap.
"""

from __future__ import annotations

import torch
from torch import Tensor

from wbaug.grid._gibbs import (
    Method,
    SeparableLogConvolution,
    Units,
    axis_coordinates,
    safe_log,
    select_method,
)
from wbaug.grid._validate import check_densities_weights, check_iter, check_reg, check_units

__all__ = ["bilinear_splat", "linearized_barycenter", "transport_maps_from_uniform"]


def transport_maps_from_uniform(
    densities: Tensor,
    *,
    reg: float,
    units: Units = "pixel",
    method: Method = "auto",
    max_iter: int = 500,
    tol: float = 1e-6,
    check_every: int = 10,
) -> Tensor:
    r"""Entropic barycentric projections from the uniform grid measure to each density.

    For ``mu_0`` uniform and the entropic coupling ``pi = diag(u) K diag(v)`` between ``mu_0`` and
    ``a`` (convolutional Sinkhorn, log domain),

    .. math:: T(x) = \frac{\sum_y \pi(x, y)\, y}{\mu_0(x)} = \frac{(K (v \odot y))(x)}{(K v)(x)},

    evaluated with separable convolutions, one per coordinate.

    Args:
        densities: ``(..., H, W)`` non-negative densities (normalised to unit mass internally).
        reg, units, method, max_iter, tol, check_every: as in :func:`~wbaug.grid.convolutional_barycenter`
            (``units`` defaults to pixels here).

    Returns:
        ``(..., H, W, 2)`` target positions ``(x, y)`` in ``units`` coordinates of every source pixel.
    """
    reg = check_reg(reg)
    units = check_units(units)
    check_iter(max_iter, tol, check_every)
    if not isinstance(densities, Tensor) or densities.ndim < 2 or not densities.is_floating_point():
        raise ValueError("densities must be a floating tensor of shape (..., H, W)")
    lead, size = densities.shape[:-2], (densities.shape[-2], densities.shape[-1])
    flat = densities.reshape(-1, 1, *size)
    check_densities_weights(flat, None)
    resolved, cdtype = select_method(size, reg, units, densities.dtype, densities.device, method)
    conv = SeparableLogConvolution(size, reg, units, resolved, dtype=cdtype, device=densities.device)
    a = flat[:, 0].to(cdtype)
    log_a = safe_log(a / a.sum(dim=(-1, -2), keepdim=True))
    log_mu = torch.full_like(log_a, -torch.log(torch.tensor(float(size[0] * size[1]), dtype=cdtype)).item())
    g = torch.zeros_like(log_a)
    for it in range(max_iter):
        f = log_mu - conv(g)
        log_kf = conv(f)
        if (it + 1) % check_every == 0:
            err = (torch.exp(g + log_kf) - a / a.sum(dim=(-1, -2), keepdim=True)).abs().sum(dim=(-1, -2))
            if bool((err <= tol).all()):
                break
        g = log_a - log_kf
    ys = axis_coordinates(size[0], units, dtype=cdtype, device=a.device)
    xs = axis_coordinates(size[1], units, dtype=cdtype, device=a.device)
    log_kv = conv(g)
    tx = torch.exp(conv(g + safe_log(xs)[None, None, :]) - log_kv)
    ty = torch.exp(conv(g + safe_log(ys)[None, :, None]) - log_kv)
    return torch.stack([tx, ty], dim=-1).to(densities.dtype).reshape(*lead, *size, 2)


def bilinear_splat(points: Tensor, masses: Tensor, size: tuple[int, int]) -> Tensor:
    """Deposit point masses on an ``(H, W)`` pixel grid with bilinear weights (mass-preserving inside).

    Args:
        points: ``(B, P, 2)`` ``(x, y)`` pixel coordinates (centres at integers).
        masses: ``(B, P)`` non-negative masses.
        size: ``(H, W)``.

    Returns:
        ``(B, H, W)`` grid; points are clamped to the canvas so no mass is lost.
    """
    h, w = size
    x = points[..., 0].clamp(0, w - 1)
    y = points[..., 1].clamp(0, h - 1)
    x0 = x.floor().clamp(max=max(w - 2, 0))
    y0 = y.floor().clamp(max=max(h - 2, 0))
    fx, fy = x - x0, y - y0
    out = torch.zeros(points.shape[0], h * w, dtype=masses.dtype, device=masses.device)
    x0l, y0l = x0.long(), y0.long()
    x1l, y1l = (x0l + 1).clamp(max=w - 1), (y0l + 1).clamp(max=h - 1)
    for yy, xx, wgt in (
        (y0l, x0l, (1 - fx) * (1 - fy)),
        (y0l, x1l, fx * (1 - fy)),
        (y1l, x0l, (1 - fx) * fy),
        (y1l, x1l, fx * fy),
    ):
        out.scatter_add_(1, yy * w + xx, masses * wgt.to(masses.dtype))
    return out.reshape(-1, h, w)


def linearized_barycenter(
    densities: Tensor,
    weights: Tensor | None = None,
    *,
    reg: float,
    maps: Tensor | None = None,
    debias: bool = True,
    self_map: Tensor | None = None,
    method: Method = "auto",
    max_iter: int = 500,
    tol: float = 1e-6,
) -> Tensor:
    r"""One-step linearised Sinkhorn-divergence barycenter (the paper's training targets), batched.

    .. math::
        x_j' = x_j + \sum_k w_k \big(T_k(x_j) - T_0(x_j)\big), \qquad
        \bar a = \mathrm{splat}\big(\{x_j'\}, \mu_0\big),

    with ``x_j`` the pixel centres carrying the uniform mass ``1 / (H W)``, ``T_k`` from
    :func:`transport_maps_from_uniform` and ``T_0`` the uniform-to-uniform map (omitted with
    ``debias=False``). ``reg`` is in pixel units (kernel ``exp(-|p - q|^2 / reg)``).

    Args:
        densities: ``(B, K, H, W)`` densities.
        weights: ``(B, K)`` weights (rescaled to sum one); ``None`` = uniform.
        reg: entropic regularisation in pixel units.
        maps: optional precomputed ``(B, K, H, W, 2)`` maps (from :func:`transport_maps_from_uniform`),
            the paper's trick for building many targets from few shapes.
        debias: subtract the self-transport map ``T_0`` (Sinkhorn divergence); recommended.
        self_map: optional precomputed ``T_0`` ``(H, W, 2)``, i.e.
            ``transport_maps_from_uniform(torch.ones(1, H, W), reg=reg)[0]`` (saves one Sinkhorn solve per
            call when many barycenters share a grid and ``reg``).
        method, max_iter, tol: Sinkhorn settings for the maps.

    Returns:
        ``(B, H, W)`` unit-mass barycenter.

    Example:
        >>> a = torch.zeros(1, 2, 32, 32); a[0, 0, 5:9, 5:9] = 1; a[0, 1, 20:24, 22:26] = 1
        >>> linearized_barycenter(a, reg=2.0).sum().round()
        tensor(1.)
    """
    densities, weights = check_densities_weights(densities, weights)
    b, k, h, w = densities.shape
    kwargs = {"reg": reg, "units": "pixel", "method": method, "max_iter": max_iter, "tol": tol}
    if maps is None:
        maps = transport_maps_from_uniform(densities, **kwargs)
    elif maps.shape != (b, k, h, w, 2):
        raise ValueError(f"maps must have shape {(b, k, h, w, 2)}, got {tuple(maps.shape)}")
    target = (weights[..., None, None, None] * maps.to(densities.dtype)).sum(dim=1)  # (B, H, W, 2)
    if debias:
        if self_map is None:
            uniform = torch.ones(1, h, w, dtype=densities.dtype, device=densities.device)
            t0 = transport_maps_from_uniform(uniform, **kwargs)[0]
        elif self_map.shape != (h, w, 2):
            raise ValueError(f"self_map must have shape {(h, w, 2)}, got {tuple(self_map.shape)}")
        else:
            t0 = self_map.to(densities.dtype)
        grid = torch.stack(
            torch.meshgrid(
                torch.arange(w, dtype=densities.dtype, device=densities.device),
                torch.arange(h, dtype=densities.dtype, device=densities.device),
                indexing="xy",
            ),
            dim=-1,
        )
        target = target + (grid - t0)
    masses = torch.full((b, h * w), 1.0 / (h * w), dtype=densities.dtype, device=densities.device)
    return bilinear_splat(target.reshape(b, h * w, 2), masses, (h, w))
