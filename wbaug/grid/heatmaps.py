"""Wasserstein barycenters of landmark heatmaps (the sampler's grid mode).

A set of ``N`` unordered landmarks is rendered as the normalised sum of its Gaussian heatmaps
(eq. 1 of Bespalov et al., "Data augmentation with manifold barycenters"), a probability density on
the ``H x W`` pixel grid; the barycenter of ``K`` such densities (e.g. the landmark sets of one clique
of the neighbourhood graph) is computed with the convolutional solver. The result is the kind of
heatmap the paper's CycleGAN is conditioned on.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from wbaug.grid._gibbs import Method, Units
from wbaug.grid.convolutional import convolutional_barycenter
from wbaug.grid.debiased import debiased_barycenter
from wbaug.landmarks import gaussian_heatmaps

__all__ = ["HeatmapBarycenter", "heatmap_barycenter", "landmark_densities"]


def _check_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise ValueError(f"size must be a positive int or a pair (H, W) of positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def landmark_densities(landmarks: Tensor, *, size: int | tuple[int, int], sigma: float) -> Tensor:
    r"""Render landmark sets as unit-mass densities: ``(..., N, 2) -> (..., H, W)``.

    .. math:: \rho(i, j) \propto \sum_{n=1}^{N} \exp\Big(-\frac{(j - x_n)^2 + (i - y_n)^2}{2\sigma^2}\Big)

    Each landmark's heatmap is normalised to unit sum before summing (so each contributes ``1/N`` of
    the mass even near the border), then the total is normalised to one.

    Example:
        >>> landmark_densities(torch.tensor([[[4.0, 5.0], [10.0, 2.0]]]), size=16, sigma=1.5).sum()
        tensor(1.)
    """
    if not isinstance(landmarks, Tensor) or landmarks.ndim < 2 or landmarks.shape[-1] != 2:
        raise ValueError(f"landmarks must be a (..., N, 2) tensor, got {getattr(landmarks, 'shape', None)}")
    if not landmarks.is_floating_point():
        raise TypeError(f"landmarks must be a floating tensor, got {landmarks.dtype}")
    if landmarks.shape[-2] == 0:
        raise ValueError("landmarks must contain at least one point (N >= 1)")
    size = _check_size(size)
    heat = gaussian_heatmaps(landmarks, size, sigma, normalize="sum").sum(dim=-3)
    total = heat.sum(dim=(-1, -2), keepdim=True)
    if (total <= 0).any():
        raise ValueError("every landmark set must have at least one point near the canvas")
    return heat / total


def heatmap_barycenter(
    landmarks: Tensor,
    weights: Tensor | None = None,
    *,
    size: int | tuple[int, int],
    sigma: float,
    reg: float,
    units: Units = "pixel",
    debiased: bool = False,
    method: Method = "auto",
    max_iter: int = 1000,
    tol: float = 1e-6,
    return_info: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Any]]:
    r"""Wasserstein barycenter of the summed-heatmap densities of ``K`` landmark sets, batched.

    ``landmarks (B, K, N, 2)`` in pixel coordinates (pixel centres at integers) are rendered with
    :func:`landmark_densities` as ``(B, K, H, W)`` densities and combined with
    :func:`~wbaug.grid.convolutional_barycenter` (or :func:`~wbaug.grid.debiased_barycenter` when
    ``debiased=True``, sharper at the same ``reg``). Landmark order does not matter (unordered contours).

    **Units.** ``sigma`` is in pixels. ``reg`` defaults to *pixel* units (``units="pixel"``): the
    Gibbs kernel is ``exp(-|p - q|^2 / reg)`` with ``p, q`` in pixels, a Gaussian blur of standard
    deviation ``sqrt(reg / 2)`` pixels per kernel application; ``units="normalized"`` uses POT's
    convention (``reg_pixel = reg_normalized * (n - 1)^2``).

    Args:
        landmarks: ``(B, K, N, 2)`` landmark ``(x, y)`` coordinates.
        weights: ``(B, K)`` barycentric weights (rescaled to sum one); ``None`` = uniform.
        size: output ``(H, W)`` (an int means square).
        sigma: heatmap standard deviation in pixels.
        reg: entropic regularisation (see units).
        units: ``"pixel"`` (default here) or ``"normalized"``.
        debiased: use the Sinkhorn-divergence barycenter.
        method, max_iter, tol: solver settings, see :func:`~wbaug.grid.convolutional_barycenter`.
        return_info: also return the solver's info dict.

    Returns:
        ``(B, H, W)`` unit-mass barycenter density.

    Example:
        >>> pts = torch.rand(2, 3, 68, 2) * 63
        >>> heatmap_barycenter(pts, torch.full((2, 3), 1 / 3), size=64, sigma=1.5, reg=4.0).shape
        torch.Size([2, 64, 64])
    """
    if not isinstance(landmarks, Tensor) or landmarks.ndim != 4 or landmarks.shape[-1] != 2:
        raise ValueError(f"landmarks must have shape (B, K, N, 2), got {getattr(landmarks, 'shape', None)}")
    densities = landmark_densities(landmarks, size=size, sigma=sigma)
    solver = debiased_barycenter if debiased else convolutional_barycenter
    return solver(
        densities,
        weights,
        reg=reg,
        units=units,
        method=method,
        max_iter=max_iter,
        tol=tol,
        return_info=return_info,
    )


class HeatmapBarycenter(nn.Module):
    """Module form of :func:`heatmap_barycenter`.

    Example:
        >>> layer = HeatmapBarycenter(size=32, sigma=1.0, reg=2.0)
        >>> layer(torch.rand(1, 2, 10, 2) * 31, torch.tensor([[0.3, 0.7]])).shape
        torch.Size([1, 32, 32])
    """

    def __init__(
        self,
        *,
        size: int | tuple[int, int],
        sigma: float,
        reg: float,
        units: Units = "pixel",
        debiased: bool = False,
        method: Method = "auto",
        max_iter: int = 1000,
        tol: float = 1e-6,
    ) -> None:
        super().__init__()
        self.size = _check_size(size)
        self.sigma, self.reg, self.units, self.debiased = sigma, reg, units, debiased
        self.method, self.max_iter, self.tol = method, max_iter, tol

    def forward(self, landmarks: Tensor, weights: Tensor | None = None) -> Tensor:
        return heatmap_barycenter(
            landmarks,
            weights,
            size=self.size,
            sigma=self.sigma,
            reg=self.reg,
            units=self.units,
            debiased=self.debiased,
            method=self.method,
            max_iter=self.max_iter,
            tol=self.tol,
        )

    def extra_repr(self) -> str:
        return f"size={self.size}, sigma={self.sigma}, reg={self.reg}, units={self.units!r}"
