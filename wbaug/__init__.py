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
