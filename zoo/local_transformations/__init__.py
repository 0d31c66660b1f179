"""Learned local transformations of Chrysos, Panagakis & Zafeiriou, *Visual Data Augmentation through
Learning* (2018): a recipe that trains the model behind :class:`wbaug.transforms.LearnedLocalTransformation`.
See ``zoo/local_transformations/README.md``.

* :mod:`zoo.local_transformations.config` -- dataclass config, presets ``smoke`` / ``cpu`` / ``gpu``;
* :mod:`zoo.local_transformations.data` -- clips (embedded synthetic faces, frame folders, videos) and
  SSIM-band frame pairs;
* :mod:`zoo.local_transformations.model` -- the Stage I decoder and discriminators around
  :class:`wbaug.transforms.LocalTransformationModel`;
* :mod:`zoo.local_transformations.train` -- Stages I-IV (``python -m zoo.local_transformations.train``);
* :mod:`zoo.local_transformations.evaluate` -- reconstruction / prediction L1, the PCA baseline, latent
  variance per clip;
* :mod:`zoo.local_transformations.downstream` -- a yaw regressor trained with and without the augmentation.
"""

from zoo.local_transformations.config import (
    LocalTransformationsConfig,
    cpu_config,
    gpu_config,
    smoke_config,
    validate_config,
)
from zoo.local_transformations.model import LocalTransformationNets

__all__ = [
    "LocalTransformationNets",
    "LocalTransformationsConfig",
    "cpu_config",
    "gpu_config",
    "smoke_config",
    "validate_config",
]
