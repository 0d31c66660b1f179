r"""Hyper-parameter selection of §6.1 for :class:`~wbaug.sampling.WassersteinBarycentricSampler` (the
search itself is :func:`wbaug.sampling.grid_search.grid_search`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from wbaug.sampling.grid_search import HyperparameterSearch, dataset_wasserstein, grid_search
from wbaug.sampling.sampler import WassersteinBarycentricSampler

__all__ = ["HyperparameterSearch", "dataset_wasserstein", "select_hyperparameters"]


def select_hyperparameters(
    landmarks: Any,
    epsilons: Sequence[float | None],
    ks: Sequence[int],
    *,
    n_samples: int | None = None,
    generator: torch.Generator | None = None,
    sampler_params: dict[str, Any] | None = None,
) -> HyperparameterSearch:
    r"""Grid-search :math:`(\varepsilon, k)` as in §6.1 of the paper.

    Args:
        landmarks: ``(M, N, D)`` or a list of clouds, ``M >= 4``.
        epsilons: thresholds to try (``None`` = no threshold).
        ks: ``k_neighbors`` values to try (each ``< M // 2``).
        n_samples: landmark sets sampled per grid point (default: the size of half ``B``).
        generator: drives the random split and the sampling.
        sampler_params: other :class:`WassersteinBarycentricSampler` arguments.

    Returns:
        :class:`HyperparameterSearch` with the table, the best row and the baseline.

    Example:
        >>> from wbaug.datasets import synthetic_faces
        >>> x = synthetic_faces(60, generator=torch.Generator().manual_seed(0))
        >>> res = select_hyperparameters(x, [None, 20.0], [2, 4], n_samples=20)  # doctest: +SKIP
        >>> res.best["k"] in (2, 4)  # doctest: +SKIP
        True
    """
    params = dict(sampler_params or {})
    params.pop("progress", None)

    def make_sampler(eps: float | None, k: int) -> WassersteinBarycentricSampler:
        return WassersteinBarycentricSampler(k_neighbors=k, epsilon=eps, progress=False, **params)

    return grid_search(landmarks, epsilons, ks, make_sampler, n_samples=n_samples, generator=generator)
