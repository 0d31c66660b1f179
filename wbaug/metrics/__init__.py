"""Evaluation metrics for landmarks.

* NME family (:func:`nme`, :func:`ot_nme`, :func:`nme_x`) with inter-ocular, inter-pupil, bounding-box
  and image-size normalisation; CED / AUC / failure rate;
* :func:`linear_probe_nme` -- NME of a ridge map from discovered to annotated landmarks (the unsupervised
  landmark protocol of Thewlis et al. / Jakab et al.), :func:`fit_linear_probe`;
* dataset level: :func:`dataset_ot_distance` (OT between datasets, W2 ground metric) and
  :func:`landmark_density_kl` (KL between pooled landmark densities, Fig. 4 of the manifold-barycenters
  paper).
"""

from wbaug.metrics.dataset import (
    dataset_ot_distance,
    landmark_cost_matrix,
    landmark_density,
    landmark_density_kl,
)
from wbaug.metrics.nme import (
    auc,
    auc_fr,
    cumulative_error_distribution,
    failure_rate,
    nme,
    nme_x,
    normalization_distance,
    ot_nme,
)
from wbaug.metrics.probe import fit_linear_probe, linear_probe_nme

__all__ = [
    "auc",
    "auc_fr",
    "cumulative_error_distribution",
    "dataset_ot_distance",
    "failure_rate",
    "fit_linear_probe",
    "landmark_cost_matrix",
    "landmark_density",
    "landmark_density_kl",
    "linear_probe_nme",
    "nme",
    "nme_x",
    "normalization_distance",
    "ot_nme",
]
