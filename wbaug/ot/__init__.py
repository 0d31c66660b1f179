"""Exact optimal transport on landmark point clouds: batched, CPU and CUDA, float32/float64.

* :func:`wasserstein_distance` / :class:`WassersteinDistance` -- :math:`W_p` per batch element,
  differentiable in the positions;
* :func:`transport_plan` -- the optimal coupling;
* :func:`pairwise_wasserstein` -- the ``(M, M)`` distance matrix, chunked;
* :func:`free_support_barycenter` / :class:`FreeSupportBarycenter` -- batched fixed-point barycenters
  (Cuturi & Doucet 2014) with exact OT inside; :func:`barycenter_objective` evaluates
  :math:`\\sum_k w_k W_2^2`.

Uniform clouds of equal size are solved as assignment problems, everything else with POT's network
simplex; see ``docs/ot.md``.
"""

from wbaug.ot.assignment import batched_linear_sum_assignment, ground_cost
from wbaug.ot.barycenter import FreeSupportBarycenter, barycenter_objective, free_support_barycenter
from wbaug.ot.distance import WassersteinDistance, pairwise_wasserstein, transport_plan, wasserstein_distance

__all__ = [
    "FreeSupportBarycenter",
    "WassersteinDistance",
    "barycenter_objective",
    "batched_linear_sum_assignment",
    "free_support_barycenter",
    "ground_cost",
    "pairwise_wasserstein",
    "transport_plan",
    "wasserstein_distance",
]
