"""Entropic Wasserstein barycenters of densities on regular grids (convolutional Sinkhorn).

Implements the iterative Bregman projections of Benamou et al. (2015) with the separable Gibbs kernel
of Solomon et al. (2015), "Convolutional Wasserstein distances", in the log domain, batched over
``B`` independent problems of ``K`` densities each.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from wbaug.grid._gibbs import Method, SeparableLogConvolution, Units, safe_log, select_method
from wbaug.grid._validate import check_densities_weights, check_iter, check_reg, check_units

__all__ = ["ConvolutionalBarycenter", "convolutional_barycenter", "solve_grid_barycenter"]


def solve_grid_barycenter(
    densities: Tensor,
    weights: Tensor | None,
    *,
    reg: float,
    units: Units,
    method: Method,
    max_iter: int,
    tol: float,
    check_every: int,
    debiased: bool,
    debias_steps: int = 10,
) -> tuple[Tensor, dict[str, Any]]:
    """Shared loop of :func:`convolutional_barycenter` and :func:`debiased_barycenter`.

    Potentials ``f_k = log u_k``, ``g_k = log v_k`` (``(B, K, H, W)``) are updated as
    ``f_k = log a_k - log K e^{g_k}``, ``log b = sum_k w_k log K e^{f_k}`` (+ ``log c`` when debiased),
    ``g_k = log b - log K e^{f_k}``. The stopping error of problem ``b`` is the weighted L1 violation of
    the second marginals, ``sum_k w_k || v_k * K u_k - bar ||_1``, checked every ``check_every`` steps.
    """
    reg = check_reg(reg)
    units = check_units(units)
    check_iter(max_iter, tol, check_every)
    densities, weights = check_densities_weights(densities, weights)
    in_dtype = densities.dtype
    size = (densities.shape[-2], densities.shape[-1])
    resolved, cdtype = select_method(size, reg, units, in_dtype, densities.device, method)
    conv = SeparableLogConvolution(size, reg, units, resolved, dtype=cdtype, device=densities.device)

    a = densities.to(cdtype)
    w = weights.to(cdtype)
    mass = a.sum(dim=(-1, -2))  # (B, K)
    out_mass = (w * mass).sum(dim=-1)  # (B,)
    log_a = safe_log(a / mass[..., None, None])
    wk = w[..., None, None]
    active = wk > 0

    g = torch.zeros_like(log_a)
    log_c = torch.zeros_like(log_a[:, 0]) if debiased else None
    error = torch.full((a.shape[0],), float("inf"), dtype=cdtype, device=a.device)
    n_iter = 0
    log_bar = log_a[:, 0]
    for it in range(max_iter):
        n_iter = it + 1
        f = log_a - conv(g)
        log_ku = conv(f)
        log_bar = torch.where(active, wk * log_ku, torch.zeros_like(log_ku)).sum(dim=1)
        if debiased:
            log_bar = log_bar + log_c
            for _ in range(debias_steps):
                log_c = 0.5 * (log_c + log_bar - conv(log_c))
        if n_iter % check_every == 0 or n_iter == max_iter:
            marg = torch.exp(g + log_ku)
            bar = torch.exp(log_bar)[:, None]
            error = (w * (marg - bar).abs().sum(dim=(-1, -2))).sum(dim=-1)
            if bool((error <= tol).all()):
                break
        g = log_bar[:, None] - log_ku
    bar = torch.exp(log_bar) * out_mass[:, None, None]
    info = {"n_iter": n_iter, "error": error.to(in_dtype), "method": resolved, "compute_dtype": cdtype}
    return bar.to(in_dtype), info


def convolutional_barycenter(
    densities: Tensor,
    weights: Tensor | None = None,
    *,
    reg: float,
    units: Units = "normalized",
    method: Method = "auto",
    max_iter: int = 1000,
    tol: float = 1e-6,
    check_every: int = 10,
    return_info: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Any]]:
    r"""Entropic Wasserstein barycenter of ``K`` densities on an ``H x W`` grid, batched.

    Solves, for each of the ``B`` problems,

    .. math::
        \bar a = \arg\min_a \sum_k w_k \, \mathrm{OT}_\varepsilon(a, a_k), \qquad
        \mathrm{OT}_\varepsilon(a, b) = \min_{\pi \in \Pi(a, b)} \langle \pi, C \rangle
        - \varepsilon H(\pi),

    with the squared Euclidean ground cost ``C`` on the grid, by iterative Bregman projections
    (Benamou et al. 2015) whose Gibbs kernel ``K = exp(-C / reg)`` is applied as two 1-D convolutions
    (Solomon et al. 2015). All updates are in the log domain; see :mod:`wbaug.grid._gibbs` for the
    ``method="auto"`` switch between max-shifted matrix products (``reg`` large enough) and exact
    log-sum-exp (small ``reg``).

    **Regularisation units.** With ``units="normalized"`` (default) each axis has coordinates
    ``linspace(0, 1, n)`` and ``K[i, k] = exp(-(t_i - t_k)^2 / reg)``: *exactly* POT's
    ``ot.bregman.convolutional_barycenter2d(A, reg)``. With ``units="pixel"`` coordinates are pixel
    indices, so ``reg_pixel = reg_normalized * (n - 1)^2`` on an ``n x n`` grid. A single step of the
    kernel is a Gaussian blur of standard deviation ``sqrt(reg / 2)`` (in the chosen units).

    Args:
        densities: ``(B, K, H, W)`` non-negative densities (each is normalised to unit mass).
        weights: ``(B, K)`` non-negative barycentric weights (rescaled to sum to one); ``None`` = uniform.
        reg: entropic regularisation ``> 0`` in ``units``.
        units: ``"normalized"`` or ``"pixel"``.
        method: ``"auto"``, ``"kernel"`` (shifted matrix products) or ``"log"`` (exact logsumexp).
        max_iter: maximum number of Bregman iterations.
        tol: stop when the weighted L1 marginal violation of every problem is ``<= tol``.
        check_every: evaluate the stopping error every this many iterations.
        return_info: also return ``{"n_iter", "error" (B,), "method", "compute_dtype"}``.

    Returns:
        ``(B, H, W)`` barycenter with mass ``sum_k w_k * mass(densities[:, k])`` (one for unit inputs).

    Example:
        >>> a = torch.zeros(1, 2, 32, 32, dtype=torch.float64)
        >>> a[0, 0, 8, 8] = a[0, 1, 24, 24] = 1.0
        >>> bar = convolutional_barycenter(a, torch.tensor([[0.5, 0.5]]), reg=4e-3)
        >>> bar.shape, round(float(bar.sum()), 4)
        (torch.Size([1, 32, 32]), 1.0)
    """
    bar, info = solve_grid_barycenter(
        densities,
        weights,
        reg=reg,
        units=units,
        method=method,
        max_iter=max_iter,
        tol=tol,
        check_every=check_every,
        debiased=False,
    )
    return (bar, info) if return_info else bar


class ConvolutionalBarycenter(nn.Module):
    """Module form of :func:`convolutional_barycenter` (no parameters; settings fixed at construction).

    Example:
        >>> layer = ConvolutionalBarycenter(reg=4e-3)
        >>> layer(torch.rand(2, 3, 16, 16), torch.full((2, 3), 1 / 3)).shape
        torch.Size([2, 16, 16])
    """

    def __init__(
        self,
        reg: float,
        *,
        units: Units = "normalized",
        method: Method = "auto",
        max_iter: int = 1000,
        tol: float = 1e-6,
        check_every: int = 10,
    ) -> None:
        super().__init__()
        self.reg = check_reg(reg)
        self.units = check_units(units)
        self.method = method
        self.max_iter, self.tol, self.check_every = max_iter, tol, check_every

    def forward(self, densities: Tensor, weights: Tensor | None = None) -> Tensor:
        return convolutional_barycenter(
            densities,
            weights,
            reg=self.reg,
            units=self.units,
            method=self.method,
            max_iter=self.max_iter,
            tol=self.tol,
            check_every=self.check_every,
        )

    def extra_repr(self) -> str:
        return f"reg={self.reg}, units={self.units!r}, method={self.method!r}"
