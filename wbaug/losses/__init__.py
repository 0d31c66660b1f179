"""Landmark losses (kornia style: a function plus a thin module, ``reduction`` in none/mean/sum).

* :func:`equivariant_landmark_loss` / :class:`EquivariantLandmarkLoss` -- ELT loss between two views
  (ELT thesis §3.3.2-3.3.3);
* :func:`barycenter_regularizer` / :class:`BarycenterRegularizer` and :func:`geometric_regularizer` /
  :class:`GeometricRegularizer` -- BRULÉ's R_b and R_g (§4);
* :func:`wasserstein_landmark_loss` / :class:`WassersteinLandmarkLoss` -- W1/W2 between unordered sets;
  :func:`heatmap_cross_entropy` / :class:`HeatmapCrossEntropy`.
"""

from wbaug.losses.brule import (
    BarycenterRegularizer,
    GeometricRegularizer,
    barycenter_regularizer,
    geometric_regularizer,
)
from wbaug.losses.equivariant import EquivariantLandmarkLoss, equivariant_landmark_loss
from wbaug.losses.wasserstein import (
    HeatmapCrossEntropy,
    WassersteinLandmarkLoss,
    heatmap_cross_entropy,
    wasserstein_landmark_loss,
)

__all__ = [
    "BarycenterRegularizer",
    "EquivariantLandmarkLoss",
    "GeometricRegularizer",
    "HeatmapCrossEntropy",
    "WassersteinLandmarkLoss",
    "barycenter_regularizer",
    "equivariant_landmark_loss",
    "geometric_regularizer",
    "heatmap_cross_entropy",
    "wasserstein_landmark_loss",
]
