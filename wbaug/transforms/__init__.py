"""Landmark-aware transforms for torchvision v2 and kornia pipelines.

* flips that permute left/right landmark indices, multi-view loading with ``(3, 3)`` view matrices;
* the face crop of the ELT thesis (§3.3.1);
* Wasserstein-barycentric landmark replacement, unpaired or paired with a thin-plate-spline image warp
  (torchvision v2 and kornia flavours).
"""

from wbaug.transforms.barycentric import RandomBarycentricLandmarks
from wbaug.transforms.crop import FaceCrop, face_crop, face_crop_matrix, warp_affine_crop
from wbaug.transforms.flip import LandmarkHorizontalFlip, Visibility, horizontal_flip_landmarks
from wbaug.transforms.kornia_adapter import (
    RandomBarycentricKeypoints,
    RandomBarycentricWarp,
    barycentric_warp,
)
from wbaug.transforms.multiview import MultiViewDataset, MultiViewTransform, flatten_views, multiview_collate
from wbaug.transforms.tps import TPSWarp, tps_fit, tps_grid, tps_transform_points, tps_warp_image

__all__ = [
    "FaceCrop",
    "LandmarkHorizontalFlip",
    "MultiViewDataset",
    "MultiViewTransform",
    "RandomBarycentricKeypoints",
    "RandomBarycentricLandmarks",
    "RandomBarycentricWarp",
    "TPSWarp",
    "Visibility",
    "barycentric_warp",
    "face_crop",
    "face_crop_matrix",
    "flatten_views",
    "horizontal_flip_landmarks",
    "multiview_collate",
    "tps_fit",
    "tps_grid",
    "tps_transform_points",
    "tps_warp_image",
    "warp_affine_crop",
]
