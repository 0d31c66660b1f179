"""Stacked-hourglass landmark trainer (Newell, Yang & Deng, 2016) built on wbaug.

Training modes (combinable): supervised, + classical augmentation, + barycentric augmentation (the
Wasserstein-barycentric sampler's paired TPS warp), + the equivariant landmark loss on labelled and
unlabelled images. Entry points (not imported here so that ``python -m`` runs them cleanly):

* ``python -m zoo.hourglass.train``     -- :func:`zoo.hourglass.train.train`
* ``python -m zoo.hourglass.evaluate``  -- :func:`zoo.hourglass.evaluate.evaluate_model`
* ``python -m zoo.hourglass.ablation``  -- :func:`zoo.hourglass.ablation.run_ablation`

See ``zoo/hourglass/README.md`` for exact commands.
"""

from zoo.hourglass.config import (
    AugConfig,
    DataConfig,
    EltConfig,
    HourglassConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    cpu_config,
    gpu_config,
    smoke_config,
)
from zoo.hourglass.model import StackedHourglass, heatmap_to_image, image_to_heatmap

__all__ = [
    "AugConfig",
    "DataConfig",
    "EltConfig",
    "HourglassConfig",
    "ModelConfig",
    "OptimConfig",
    "StackedHourglass",
    "TrainConfig",
    "cpu_config",
    "gpu_config",
    "heatmap_to_image",
    "image_to_heatmap",
    "smoke_config",
]
