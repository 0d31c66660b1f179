"""Landmark toolkit: Gaussian heatmaps (eq. 1 of the manifold-barycenters paper), soft-argmax and
sub-pixel argmax, layouts with left/right flip permutations (iBUG-68, WFLW-98, CelebA-5), and
homogeneous-transform / alignment helpers.

Pixel convention: ``(x, y)`` pixel coordinates with pixel centres at integers (see ``docs/conventions.md``).
"""

from wbaug.landmarks.geometry import (
    apply_transform,
    estimate_affine,
    estimate_similarity,
    flip_landmarks,
    horizontal_flip_matrix,
    invert_transform,
    procrustes_align,
    rotation_matrix,
)
from wbaug.landmarks.heatmaps import (
    GaussianHeatmaps,
    SoftArgmax,
    gaussian_heatmaps,
    heatmap_argmax,
    soft_argmax,
    summed_heatmaps,
)
from wbaug.landmarks.layouts import LandmarkLayout, available_layouts, get_layout, register_layout

__all__ = [
    "GaussianHeatmaps",
    "LandmarkLayout",
    "SoftArgmax",
    "apply_transform",
    "available_layouts",
    "estimate_affine",
    "estimate_similarity",
    "flip_landmarks",
    "gaussian_heatmaps",
    "get_layout",
    "heatmap_argmax",
    "horizontal_flip_matrix",
    "invert_transform",
    "procrustes_align",
    "register_layout",
    "rotation_matrix",
    "soft_argmax",
    "summed_heatmaps",
]
