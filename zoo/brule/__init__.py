"""BRULÉ: barycenter-regularised unsupervised landmark extraction (Bespalov, Buzun & Dylov), end to end.
See ``zoo/brule/README.md``.

* :mod:`zoo.brule.config` -- dataclass config, presets ``smoke`` / ``cpu`` / ``gpu``, validation;
* :mod:`zoo.brule.model` -- L (hourglass + soft-argmax), G, D(I, L), S, S_o; the random transform g;
* :mod:`zoo.brule.train` -- Algorithms 1 and 2 in one loop (``python -m zoo.brule.train``);
* :mod:`zoo.brule.evaluate` -- NME, OT-NME, linear-probe NME, barycenter baseline, stability;
* :mod:`zoo.brule.ablation` -- Fig. 6: full loss, without R_b, without R_g.
"""

from zoo.brule.config import BruleConfig, cpu_config, gpu_config, smoke_config, validate_config
from zoo.brule.model import Brule

__all__ = ["Brule", "BruleConfig", "cpu_config", "gpu_config", "smoke_config", "validate_config"]
