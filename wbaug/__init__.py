"""wbaug: optimal-transport data augmentation for landmarks.

Wasserstein-barycentric sampling of new landmark sets (Bespalov et al., "Data augmentation with
manifold barycenters", Algorithm 2), equivariant landmark losses (thesis "Equivariant landmark
loss"), BRULÉ regularizers, grid barycenters and the exact optimal-transport engine they stand on.
``wbaug`` never imports ``zoo``.

Example:
    >>> import torch
    >>> from wbaug import WassersteinBarycentricSampler, synthetic_faces
    >>> faces = synthetic_faces(200, generator=torch.Generator().manual_seed(0))
    >>> sampler = WassersteinBarycentricSampler(k_neighbors=6).fit(faces)
    >>> sampler.sample(5, generator=torch.Generator().manual_seed(1)).shape
    torch.Size([5, 68, 2])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Everything is imported on first access (PEP 562): `import wbaug` stays cheap and `wbaug --help`
# answers without importing torch; `from wbaug import X` and `wbaug.X` work as usual.
_SUBMODULES = ("datasets", "grid", "landmarks", "losses", "metrics", "ot", "sampling", "transforms")
_EXPORTS = {
    "SyntheticFaces": "datasets",
    "synthetic_contours": "datasets",
    "synthetic_faces": "datasets",
    "BarycenterRegularizer": "losses",
    "EquivariantLandmarkLoss": "losses",
    "GeometricRegularizer": "losses",
    "free_support_barycenter": "ot",
    "pairwise_wasserstein": "ot",
    "wasserstein_distance": "ot",
    "WassersteinBarycentricSampler": "sampling",
    "LandmarkHorizontalFlip": "transforms",
    "MultiViewTransform": "transforms",
    "RandomBarycentricWarp": "transforms",
}

if TYPE_CHECKING:  # what static tools (type checkers, the docs) see
    from wbaug import datasets, grid, landmarks, losses, metrics, ot, sampling, transforms
    from wbaug.datasets import SyntheticFaces, synthetic_contours, synthetic_faces
    from wbaug.losses import BarycenterRegularizer, EquivariantLandmarkLoss, GeometricRegularizer
    from wbaug.ot import free_support_barycenter, pairwise_wasserstein, wasserstein_distance
    from wbaug.sampling import WassersteinBarycentricSampler
    from wbaug.transforms import LandmarkHorizontalFlip, MultiViewTransform, RandomBarycentricWarp

__version__ = "0.2.0"

__all__ = [
    "BarycenterRegularizer",
    "EquivariantLandmarkLoss",
    "GeometricRegularizer",
    "LandmarkHorizontalFlip",
    "MultiViewTransform",
    "RandomBarycentricWarp",
    "SyntheticFaces",
    "WassersteinBarycentricSampler",
    "__version__",
    "datasets",
    "free_support_barycenter",
    "grid",
    "landmarks",
    "losses",
    "metrics",
    "ot",
    "pairwise_wasserstein",
    "sampling",
    "synthetic_contours",
    "synthetic_faces",
    "transforms",
    "wasserstein_distance",
]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"wbaug.{name}")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"wbaug.{_EXPORTS[name]}"), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
