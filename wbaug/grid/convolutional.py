"""Entropic Wasserstein barycenters of densities on regular grids (convolutional Sinkhorn).

Implements the iterative Bregman projections of Benamou et al. (2015) with the separable Gibbs kernel
of Solomon et al. (2015), "Convolutional Wasserstein distances", batched over ``B`` independent
problems of ``K`` densities each: on the scalings ``u = e^f``, ``v = e^g`` while a range guard certifies
them (fast: only matrix products and a few elementwise passes), in the log domain otherwise.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from wbaug.grid._gibbs import (
    Method,
    RangeGuard,
    SeparableConvolution,
    SeparableLogConvolution,
    Units,
    guard_interval,
    safe_log,
    select_method,
    try_scaling_first,
)
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
    """Shared solver of :func:`convolutional_barycenter` and :func:`debiased_barycenter`.

    Runs the scaling-domain iterations first when :func:`~wbaug.grid._gibbs.try_scaling_first` says so,
    and the log-domain iterations otherwise or from the last verified scaling iterate if the scaling
    domain's range guard trips; both compute the same iterates (up to rounding).
    """
    reg = check_reg(reg)
    units = check_units(units)
    check_iter(max_iter, tol, check_every)
    densities, weights = check_densities_weights(densities, weights)
    in_dtype = densities.dtype
    size = (densities.shape[-2], densities.shape[-1])
    resolved, cdtype = select_method(size, reg, units, in_dtype, densities.device, method)

    a = densities.to(cdtype)
    w = weights.to(cdtype)
    mass = a.sum(dim=(-1, -2))  # (B, K)
    out_mass = (w * mass).sum(dim=-1)  # (B,)
    a_unit = a / mass[..., None, None]
    settings = {
        "max_iter": max_iter,
        "tol": tol,
        "check_every": check_every,
        "debiased": debiased,
        "debias_steps": debias_steps,
    }

    resume = _Resume(0, None, None, torch.ones_like(a_unit[:, 0]) if debiased else None)
    if try_scaling_first(size, reg, units, cdtype, method):
        conv = SeparableConvolution(size, reg, units, dtype=cdtype, device=a.device)
        outcome = _scaling_iterations(a_unit, w, conv, **settings)
        if isinstance(outcome, _Finished):
            return _result(outcome, out_mass, in_dtype, "scaling", cdtype, outcome.n_iter)
        resume = outcome
    start, scaling_iters = resume.n_iter, resume.n_iter
    g, log_c = resume.potentials(a_unit)
    log_conv = SeparableLogConvolution(size, reg, units, resolved, dtype=cdtype, device=a.device)
    finished = _log_iterations(safe_log(a_unit), w, log_conv, g, log_c, start, **settings)
    return _result(finished, out_mass, in_dtype, resolved, cdtype, scaling_iters)


class _Finished(NamedTuple):
    bar: Tensor  # (B, H, W), unit mass
    n_iter: int
    error: Tensor  # (B,)


class _Resume(NamedTuple):
    """The last verified scaling-domain iterate, in the form the log domain resumes from exactly.

    ``g = log v = log_bar - log K u`` is rebuilt from the verified (normal-range) ``log_bar`` and ``K u``
    rather than from ``v = bar / K u``, which may have underflowed where it was negligible so far.
    """

    n_iter: int  # iterations done (and verified) in the scaling domain
    log_bar: Tensor | None  # (B, H, W) of iteration n_iter; None before the first
    ku: Tensor | None  # (B, K, H, W)
    c: Tensor | None  # (B, H, W) debiasing scaling, in the safe range

    def potentials(self, like: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(g, log_c)`` for the log domain; ``g = 0`` (shaped ``like``) before the first iteration."""
        g = torch.zeros_like(like) if self.ku is None else self.log_bar[:, None] - torch.log(self.ku)
        return g, (None if self.c is None else torch.log(self.c))


def _result(
    done: _Finished, out_mass: Tensor, in_dtype: torch.dtype, method: str, cdtype: torch.dtype, scaling: int
) -> tuple[Tensor, dict[str, Any]]:
    info = {
        "n_iter": done.n_iter,
        "error": done.error.to(in_dtype),
        "method": method,
        "compute_dtype": cdtype,
        "scaling_iters": scaling,
    }
    return (done.bar * out_mass[:, None, None]).to(in_dtype), info


def _scaling_iterations(
    a: Tensor,
    w: Tensor,
    conv: SeparableConvolution,
    *,
    max_iter: int,
    tol: float,
    check_every: int,
    debiased: bool,
    debias_steps: int,
) -> _Finished | _Resume:
    """Bregman iterations on the scalings ``u = e^f``, ``v = e^g`` (and ``c`` when debiased).

    ``u_k = a_k / K v_k``, ``bar = c * prod_k (K u_k)^{w_k}``, ``v_k = bar / K u_k``, and when debiased
    ``c <- sqrt(c * bar / K c)``: the log-domain updates exponentiated. **Range guard:** every ``K v``,
    ``K u``, ``K c``, ``bar`` and ``c`` must lie in :func:`~wbaug.grid._gibbs.safe_range` (then each sum of
    non-negative terms is accurate to a few ulps, see there). Extremes are accumulated on the device and
    inspected every iteration on the CPU, every ``check_every`` iterations elsewhere (one host sync, with
    the stopping test); if any value left the range, the iterate saved at the previous inspection is
    returned as :class:`_Resume` for the log domain.
    """
    guard = RangeGuard(a.dtype, a.device)
    wk = w[..., None, None]
    a_t = a.transpose(-1, -2).contiguous()  # u is kept transposed: see SeparableConvolution
    v = torch.ones_like(a)
    c = torch.ones_like(a[:, 0]) if debiased else None
    guard_every = guard_interval(a.device, check_every)
    saved = _Resume(0, None, None, c)
    for it in range(max_iter):
        n_iter = it + 1
        kv_t = conv.to_transposed(v)
        u_t = a_t / kv_t
        ku = conv.from_transposed(u_t)
        log_bar = (wk * torch.log(ku)).sum(dim=1)
        if c is not None:
            log_bar = log_bar + torch.log(c)
        bar = torch.exp(log_bar)
        guard.watch(kv_t, ku, bar)
        if c is not None:
            sqrt_bar = torch.sqrt(bar)
            for _ in range(debias_steps):
                kc = conv.to_transposed(c).transpose(-1, -2)
                # sqrt(c) * sqrt(bar) is a normal number for c, bar in the safe range, where c * bar
                # could underflow unnoticed; the quotient is watched.
                c = torch.sqrt(c) * sqrt_bar / torch.sqrt(kc)
                guard.watch(kc, c)
        last = n_iter == max_iter
        guarding = n_iter % guard_every == 0 or last
        if guarding and not guard.ok():
            return saved
        if n_iter % check_every == 0 or last:
            error = (w * (v * ku - bar[:, None]).abs().sum(dim=(-1, -2))).sum(dim=-1)
            if bool((error <= tol).all()) or last:
                return _Finished(bar, n_iter, error)
        v = bar[:, None] / ku
        if guarding:
            saved = _Resume(n_iter, log_bar, ku, c)
    raise AssertionError("unreachable: the last iteration always returns")


def _log_iterations(
    log_a: Tensor,
    w: Tensor,
    conv: SeparableLogConvolution,
    g: Tensor,
    log_c: Tensor | None,
    start: int,
    *,
    max_iter: int,
    tol: float,
    check_every: int,
    debiased: bool,
    debias_steps: int,
) -> _Finished:
    """Log-domain Bregman iterations ``start .. max_iter - 1`` from the potentials ``g`` (and ``log_c``).

    Potentials ``f_k = log u_k``, ``g_k = log v_k`` (``(B, K, H, W)``) are updated as
    ``f_k = log a_k - log K e^{g_k}``, ``log b = sum_k w_k log K e^{f_k}`` (+ ``log c`` when debiased),
    ``g_k = log b - log K e^{f_k}``. The stopping error of problem ``b`` is the weighted L1 violation of
    the second marginals, ``sum_k w_k || v_k * K u_k - bar ||_1``, checked every ``check_every`` steps.
    """
    wk = w[..., None, None]
    active = wk > 0
    error = torch.full((log_a.shape[0],), float("inf"), dtype=log_a.dtype, device=log_a.device)
    n_iter = start
    log_bar = log_a[:, 0]
    for it in range(start, max_iter):
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
    return _Finished(torch.exp(log_bar), n_iter, error)


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
    (Solomon et al. 2015).

    **Numerics** (``method="auto"``, see :mod:`wbaug.grid._gibbs`): when ``reg`` is not too small the
    iterations run on the scalings ``u = e^f``, ``v = e^g`` (POT's kernel-domain algorithm, without its
    ``+1e-30``), while a range guard checks that every ``K v``, ``K u`` and barycenter value is a normal
    number with room to spare, which makes each product accurate to a few ulps. If a value ever leaves
    that range (small ``reg``, far-apart inputs) the solve continues in the log domain from the last
    verified iterate, with max-shifted matrix products or, for very small ``reg``, exact log-sum-exp.
    Every path computes the same iterates; ``info["method"]`` says which one finished.

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
        method: ``"auto"``; ``"scaling"`` (scaling domain whenever the kernel is representable, same
            guard and hand-over), ``"kernel"`` (log domain, shifted matrix products) or ``"log"`` (exact
            logsumexp) force a path.
        max_iter: maximum number of Bregman iterations.
        tol: stop when the weighted L1 marginal violation of every problem is ``<= tol``.
        check_every: evaluate the stopping error every this many iterations.
        return_info: also return ``{"n_iter", "error" (B,), "method", "compute_dtype",
            "scaling_iters"}``: ``method`` is the path that finished (``"scaling"``, ``"kernel"`` or
            ``"log"``), ``scaling_iters`` how many iterations ran in the scaling domain.

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
