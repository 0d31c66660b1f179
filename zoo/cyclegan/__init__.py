"""Unpaired landmark CycleGAN of Bespalov et al., *Data augmentation with manifold barycenters*
(Algorithm 1), trained on images and a label budget of landmark sets enlarged by Wasserstein-barycentric
sampling. See ``zoo/cyclegan/README.md``.

* :mod:`zoo.cyclegan.config` -- dataclass config, presets ``smoke`` / ``cpu`` / ``gpu``, validation;
* :mod:`zoo.cyclegan.model` -- G_I, S, S_o, G_L, D_I, D_L (StyleGAN2 blocks of :mod:`zoo.common.gan`);
* :mod:`zoo.cyclegan.train` -- the training loop (``python -m zoo.cyclegan.train``);
* :mod:`zoo.cyclegan.evaluate` -- NME / OT-NME of the EMA landmark encoder on held-out images.
"""

from zoo.cyclegan.config import CycleGANConfig, cpu_config, gpu_config, smoke_config, validate_config
from zoo.cyclegan.model import LandmarkCycleGAN

__all__ = [
    "CycleGANConfig",
    "LandmarkCycleGAN",
    "cpu_config",
    "gpu_config",
    "smoke_config",
    "validate_config",
]
