"""Wasserstein-barycentric sampling of landmark sets (Bespalov et al., §3.1 and Algorithm 2).

* :class:`WassersteinBarycentricSampler` -- fit / sample / fit_resample / sample_around /
  select_hyperparameters / save / load;
* graph pieces: :func:`exact_knn` (exact kNN under W2 with lower/upper-bound pruning),
  :func:`build_neighborhood_graph`, :func:`maximal_cliques`, :func:`clique_probabilities`;
* :func:`sample_dirichlet` (generator-aware Dirichlet draws), :func:`select_hyperparameters` (§6.1);
* :class:`BarycentricLandmarksDataset` / :class:`BarycentricLandmarksIterableDataset` -- the sampled
  "landmarks domain" for ``torch.utils.data``.
"""

from wbaug.sampling.bounds import (
    centroid_lower_bound,
    gelbrich_lower_bound,
    identity_upper_bound,
    projection_lower_bound,
    w2_lower_bound,
)
from wbaug.sampling.cliques import clique_probabilities, maximal_cliques, pad_cliques
from wbaug.sampling.dataset import BarycentricLandmarksDataset, BarycentricLandmarksIterableDataset
from wbaug.sampling.dirichlet import sample_dirichlet
from wbaug.sampling.graph import (
    KnnResult,
    build_neighborhood_graph,
    exact_knn,
    knn_from_distances,
    knn_from_pairs,
    neighborhood_edges,
)
from wbaug.sampling.hyperparameters import HyperparameterSearch, select_hyperparameters
from wbaug.sampling.nearest import W2NearestNeighbor
from wbaug.sampling.sampler import WassersteinBarycentricSampler

__all__ = [
    "BarycentricLandmarksDataset",
    "BarycentricLandmarksIterableDataset",
    "HyperparameterSearch",
    "KnnResult",
    "W2NearestNeighbor",
    "WassersteinBarycentricSampler",
    "build_neighborhood_graph",
    "neighborhood_edges",
    "centroid_lower_bound",
    "clique_probabilities",
    "exact_knn",
    "gelbrich_lower_bound",
    "identity_upper_bound",
    "knn_from_distances",
    "knn_from_pairs",
    "maximal_cliques",
    "pad_cliques",
    "projection_lower_bound",
    "sample_dirichlet",
    "select_hyperparameters",
    "w2_lower_bound",
]
