r"""Hyper-parameter selection of §6.1 ("we have split landmarks dataset of 300-W in two parts ... ").

For every :math:`(\varepsilon, k)` of the grid: fit the sampler on half ``A``, sample ``n`` landmark sets
and score them by the optimal-transport distance, with the W2 distance between landmark sets as ground
metric, to the held-out half ``B``:

.. math::
    \mathrm{score}(\varepsilon, k) = \Big(\min_{T\in\Pi(\frac1n\mathbf 1, \frac1{|B|}\mathbf 1)}
    \sum_{a,b} T_{ab}\, W_2^2(\hat X_a, X_b)\Big)^{1/2}.

The pairwise W2 of half ``A`` is computed once and reused by every grid point. The score of half ``A``
itself (no augmentation) is reported as ``baseline``.

This module holds the search itself and knows nothing of the sampler class (it receives a factory), so
:mod:`wbaug.sampling.sampler` can use it and :mod:`wbaug.sampling.hyperparameters` (the public entry
point, which builds samplers) depends on both without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wbaug.sampling._validation import as_clouds, check_generator, check_nonnegative_int, cloud_count, select
from wbaug.sampling.graph import pair_distances

__all__ = ["HyperparameterSearch", "SamplerFactory", "dataset_wasserstein", "grid_search"]


# (epsilon, k) -> an unfitted sampler with every other setting fixed
SamplerFactory = Callable[[float | None, int], Any]


@dataclass
class HyperparameterSearch:
    """Result of :func:`select_hyperparameters`.

    Attributes:
        table: one dict per grid point ``{"epsilon", "k", "score", "n_cliques", "mean_clique_size"}``.
        best: the row with the smallest score.
        baseline: score of the un-augmented half ``A`` against half ``B``.
    """

    table: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    baseline: float = float("nan")

    def to_markdown(self) -> str:
        lines = ["| epsilon | k | score | cliques | mean clique size |", "|---|---|---|---|---|"]
        for row in self.table:
            eps = "none" if row["epsilon"] is None else f"{row['epsilon']:.4g}"
            lines.append(
                f"| {eps} | {row['k']} | {row['score']:.5g} | {row['n_cliques']} | "
                f"{row['mean_clique_size']:.2f} |"
            )
        lines.append(f"\nbaseline (half A itself): {self.baseline:.5g}")
        return "\n".join(lines)


def _cross_w2(a: Tensor | list[Tensor], b: Tensor | list[Tensor]) -> Tensor:
    """``(|a|, |b|)`` float64 W2 distances between two collections of clouds."""
    na, nb = cloud_count(a), cloud_count(b)
    joined = torch.cat([a, b]) if isinstance(a, Tensor) and isinstance(b, Tensor) else list(a) + list(b)
    rows = torch.arange(na).repeat_interleave(nb)
    cols = na + torch.arange(nb).repeat(na)
    return pair_distances(joined, rows, cols).reshape(na, nb)


def dataset_wasserstein(a: Tensor | list[Tensor], b: Tensor | list[Tensor]) -> float:
    r"""OT distance between two *collections* of landmark sets with W2 ground metric (exact EMD)."""
    cost = (_cross_w2(a, b) ** 2).numpy()
    wa = np.full(cost.shape[0], 1.0 / cost.shape[0])
    wb = np.full(cost.shape[1], 1.0 / cost.shape[1])
    import ot  # imported where used: keeps `import wbaug` light

    return float(np.sqrt(max(ot.emd2(wa, wb, cost), 0.0)))


def grid_search(
    landmarks: Any,
    epsilons: Sequence[float | None],
    ks: Sequence[int],
    make_sampler: SamplerFactory,
    *,
    n_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> HyperparameterSearch:
    r"""Score every :math:`(\varepsilon, k)` of the grid as in §6.1 with samplers from ``make_sampler``.

    Args:
        landmarks: ``(M, N, D)`` or a list of clouds, ``M >= 4``.
        epsilons: thresholds to try (``None`` = no threshold).
        ks: ``k_neighbors`` values to try (each ``< M // 2``).
        make_sampler: ``make_sampler(epsilon, k)`` returns an unfitted sampler.
        n_samples: landmark sets sampled per grid point (default: the size of half ``B``).
        generator: drives the random split and the sampling.

    Returns:
        :class:`HyperparameterSearch` with the table, the best row and the baseline.
    """
    clouds = as_clouds(landmarks, "landmarks", min_count=4)
    check_generator(generator)
    if not epsilons:
        raise ValueError("epsilons must be a non-empty sequence (use [None] for no threshold)")
    if not ks:
        raise ValueError("ks must be a non-empty sequence of ints")
    m = cloud_count(clouds)
    perm = torch.randperm(m, generator=generator, device=generator.device if generator else "cpu").cpu()
    half_a, half_b = select(clouds, perm[: m // 2]), select(clouds, perm[m // 2 :])
    ma = cloud_count(half_a)
    for k in ks:
        check_nonnegative_int(k, "ks", minimum=1)
        if k >= ma:
            raise ValueError(f"ks: every k must be < the half size {ma}, got {k}")
    n = cloud_count(half_b) if n_samples is None else check_nonnegative_int(n_samples, "n_samples", minimum=1)
    iu = torch.triu_indices(ma, ma, offset=1)
    d = torch.zeros(ma, ma, dtype=torch.float64)
    vals = pair_distances(half_a, iu[0], iu[1])
    d[iu[0], iu[1]] = vals
    d[iu[1], iu[0]] = vals
    result = HyperparameterSearch(baseline=dataset_wasserstein(half_a, half_b))
    for eps in epsilons:
        for k in ks:
            sampler = make_sampler(eps, int(k))
            sampler.fit(half_a, distances=d)
            samples = sampler.sample(n, generator=generator)
            result.table.append(
                {
                    "epsilon": None if eps is None else float(eps),
                    "k": int(k),
                    "score": dataset_wasserstein(samples, half_b),
                    "n_cliques": len(sampler.cliques_),
                    "mean_clique_size": float(sampler.clique_sizes_.double().mean()),
                }
            )
    result.best = min(result.table, key=lambda row: row["score"])
    return result
