"""BarycenterNet of "Learning to Generate Wasserstein Barycenters" (Fan-Li et al.): a network that predicts
Wasserstein barycenters of densities on a grid, trained on weighted pairs of CSG contours.

Entry points (not imported here so that ``python -m`` runs them cleanly):

* ``python -m zoo.barycenter_net.train``     -- :func:`zoo.barycenter_net.train.train`
* ``python -m zoo.barycenter_net.evaluate``  -- :func:`zoo.barycenter_net.evaluate.main`

See ``zoo/barycenter_net/README.md`` for exact commands and measured results.
"""

from zoo.barycenter_net.config import (
    BarycenterNetConfig,
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    cpu_config,
    smoke_config,
)
from zoo.barycenter_net.model import BarycenterNet

__all__ = [
    "BarycenterNet",
    "BarycenterNetConfig",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "cpu_config",
    "smoke_config",
]
