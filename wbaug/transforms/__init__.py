"""Landmark-aware transforms for torchvision v2 and kornia pipelines.

* flips that permute left/right landmark indices, multi-view loading with ``(3, 3)`` view matrices;
* the face crop of the ELT thesis (§3.3.1);
* Wasserstein-barycentric augmentation: its functional core (:func:`draw_barycentric_params`,
  :func:`apply_barycentric`, :func:`register_barycentric_kernel`) and its kornia form
  (:class:`RandomBarycentricWarp`); the torchvision v2 form is the fitted
  :class:`~wbaug.sampling.WassersteinBarycentricSampler` itself;
* learned local transformations (Chrysos et al. 2018): :class:`LearnedLocalTransformation` and the
  networks it runs (:class:`LocalTransformationModel`, :func:`fit_transition`, model files);
* :class:`SanitizeLandmarks` (off-canvas key-points become invisible or are removed) and
  :func:`landmark_collate` (batches that keep ``KeyPoints``, ``Visibility`` and the canvas size).
"""

from typing import TYPE_CHECKING

from wbaug.transforms.barycentric import (
    BarycentricParams,
    apply_barycentric,
    draw_barycentric_params,
    register_barycentric_kernel,
)
from wbaug.transforms.crop import FaceCrop, face_crop, face_crop_matrix, warp_affine_crop
from wbaug.transforms.flip import LandmarkHorizontalFlip, Visibility, horizontal_flip_landmarks
from wbaug.transforms.keypoints import SanitizeLandmarks, landmark_collate
from wbaug.transforms.learned_local import (
    ConvEncoder,
    LearnedLocalTransformation,
    LocalTransformationConfig,
    LocalTransformationGenerator,
    LocalTransformationModel,
    fit_transition,
    image_gradient_l1,
    load_local_transformation,
    save_local_transformation,
    ssim_score,
)
from wbaug.transforms.multiview import MultiViewDataset, MultiViewTransform, flatten_views, multiview_collate
from wbaug.transforms.tps import TPSWarp, tps_fit, tps_grid, tps_transform_points, tps_warp_image

if TYPE_CHECKING:  # what static tools (type checkers, the docs) see; loaded on access below
    from wbaug.transforms.kornia_adapter import RandomBarycentricWarp

__all__ = [
    "BarycentricParams",
    "ConvEncoder",
    "FaceCrop",
    "LandmarkHorizontalFlip",
    "LearnedLocalTransformation",
    "LocalTransformationConfig",
    "LocalTransformationGenerator",
    "LocalTransformationModel",
    "MultiViewDataset",
    "MultiViewTransform",
    "RandomBarycentricWarp",
    "SanitizeLandmarks",
    "TPSWarp",
    "Visibility",
    "apply_barycentric",
    "draw_barycentric_params",
    "face_crop",
    "face_crop_matrix",
    "fit_transition",
    "flatten_views",
    "horizontal_flip_landmarks",
    "image_gradient_l1",
    "landmark_collate",
    "load_local_transformation",
    "multiview_collate",
    "register_barycentric_kernel",
    "save_local_transformation",
    "ssim_score",
    "tps_fit",
    "tps_grid",
    "tps_transform_points",
    "tps_warp_image",
    "warp_affine_crop",
]


def __getattr__(name: str):
    # The kornia form is imported on first access: kornia costs ~0.5 s to import and most users of
    # ``import wbaug`` never touch it (PEP 562).
    if name == "RandomBarycentricWarp":
        from wbaug.transforms.kornia_adapter import RandomBarycentricWarp

        return RandomBarycentricWarp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
