r"""Symmetric Dirichlet draws with an explicit ``torch.Generator`` (``torch.distributions`` takes none).

:math:`\lambda = (G_1, \dots, G_S) / \sum_s G_s` with :math:`G_s \sim \mathrm{Gamma}(\alpha, 1)` i.i.d. is
:math:`\mathrm{Dir}(\alpha \mathbf 1_S)`. Gamma variates use Marsaglia & Tsang (2000, *ACM TOMS* 26(3)):
for :math:`a \ge 1`, :math:`d = a - 1/3`, :math:`c = 1/\sqrt{9d}`, accept :math:`d(1 + cZ)^3` when
:math:`\log U < Z^2/2 + d - dv + d\log v`; for :math:`a < 1`, :math:`G_a = G_{a+1} U^{1/a}`. Everything is
done on log-scale and normalised by a masked softmax, so tiny concentrations (``α = 0.01``) do not
underflow to ``0/0``. ``α = 1`` uses the exact shortcut :math:`G = -\log U` (exponential variates).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from wbaug.sampling._validation import check_positive_float

__all__ = ["log_gamma_variates", "sample_dirichlet"]


def _uniform_open(shape: tuple[int, ...], generator: torch.Generator | None, dtype, device) -> Tensor:
    u = torch.rand(shape, generator=generator, dtype=dtype, device=device)
    return u.clamp_min(torch.finfo(dtype).tiny)


def log_gamma_variates(
    alpha: float,
    shape: tuple[int, ...],
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> Tensor:
    """``log G`` with ``G ~ Gamma(alpha, 1)`` i.i.d., of the given shape (vectorised rejection sampling)."""
    if alpha == 1.0:
        return torch.log(-torch.log(_uniform_open(shape, generator, dtype, device)))
    boost = alpha < 1.0
    a = alpha + 1.0 if boost else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(shape, dtype=dtype, device=device).reshape(-1)
    todo = torch.arange(out.numel(), device=device)
    while todo.numel() > 0:
        m = todo.numel()
        z = torch.randn((m,), generator=generator, dtype=dtype, device=device)
        u = _uniform_open((m,), generator, dtype, device)
        v = (1.0 + c * z) ** 3
        ok = v > 0
        logv = torch.log(v.clamp_min(torch.finfo(dtype).tiny))
        ok &= torch.log(u) < 0.5 * z * z + d - d * v + d * logv
        out[todo[ok]] = math.log(d) + logv[ok]
        todo = todo[~ok]
    out = out.reshape(shape)
    if boost:
        out = out + torch.log(_uniform_open(shape, generator, dtype, device)) / alpha
    return out


def sample_dirichlet(
    concentration: float,
    mask: Tensor,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    r"""Draw :math:`\lambda \sim \mathrm{Dir}(\alpha\mathbf 1)` on the ``True`` entries of each row of
    ``mask``.

    Args:
        concentration: :math:`\alpha > 0` (1: uniform on the simplex, the paper's default).
        mask: ``(n, S)`` bool, at least one ``True`` per row (padded cliques of different sizes).
        generator: source of randomness.
        dtype: output dtype.

    Returns:
        ``(n, S)`` weights, zero where ``mask`` is ``False``, each row summing to one.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> lam = sample_dirichlet(1.0, torch.tensor([[True, True, False]]), generator=g)
        >>> float(lam.sum()), float(lam[0, 2])
        (1.0, 0.0)
    """
    concentration = check_positive_float(concentration, "concentration")
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(
            f"mask must be a bool tensor (n, S), got {getattr(mask, 'dtype', type(mask).__name__)}"
        )
    if mask.ndim != 2:
        raise ValueError(f"mask must have shape (n, S), got {tuple(mask.shape)}")
    empty = ~mask.any(1)
    if mask.shape[0] and bool(empty.any()):
        raise ValueError(
            f"mask must have at least one True per row; row {int(empty.nonzero()[0])} is all False "
            "(a Dirichlet on no vertex is undefined)"
        )
    if mask.shape[0] == 0:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    # random numbers are drawn on the generator's device (a CPU generator can drive CUDA data)
    draw_device = generator.device if generator is not None else mask.device
    logg = log_gamma_variates(
        float(concentration), tuple(mask.shape), generator=generator, dtype=torch.float64, device=draw_device
    ).to(mask.device)
    logg = logg.masked_fill(~mask, float("-inf"))
    return torch.softmax(logg, dim=1).to(dtype)
