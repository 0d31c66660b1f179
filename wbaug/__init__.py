"""wbaug: optimal-transport data augmentation for landmarks.

Wasserstein-barycentric sampling of new landmark sets (Bespalov et al., "Data augmentation with
manifold barycenters", Algorithm 2), equivariant landmark losses, BRULÉ regularizers and the
optimal-transport engine they stand on. ``wbaug`` never imports ``zoo``.
"""

from wbaug import ot

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "ot",
]
