"""Wasserstein barycenters of densities on regular grids (images, landmark heatmaps).

* :func:`convolutional_barycenter` -- entropic barycenter by convolutional Sinkhorn (Solomon et al. 2015),
  separable Gaussian kernels applied as batched matrix products, on range-guarded scalings with a
  log-domain hand-over; matches POT's
  ``ot.bregman.convolutional_barycenter2d`` for ``units="normalized"``.
* :func:`debiased_barycenter` -- Sinkhorn-divergence barycenter (Janati et al. 2020), sharper.
* :func:`linearized_barycenter` -- the one-step Lagrangian barycenter of "Learning to Generate
  Wasserstein Barycenters" (its training targets), from precomputable transport maps.
* :func:`heatmap_barycenter` -- barycenter of summed landmark heatmaps (the sampler's grid mode).
"""

from wbaug.grid.convolutional import ConvolutionalBarycenter, convolutional_barycenter
from wbaug.grid.debiased import DebiasedBarycenter, debiased_barycenter
from wbaug.grid.heatmaps import HeatmapBarycenter, heatmap_barycenter, landmark_densities
from wbaug.grid.linearized import bilinear_splat, linearized_barycenter, transport_maps_from_uniform

__all__ = [
    "ConvolutionalBarycenter",
    "DebiasedBarycenter",
    "HeatmapBarycenter",
    "bilinear_splat",
    "convolutional_barycenter",
    "debiased_barycenter",
    "heatmap_barycenter",
    "landmark_densities",
    "linearized_barycenter",
    "transport_maps_from_uniform",
]
