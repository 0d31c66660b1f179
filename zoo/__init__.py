"""Reference trainers built on wbaug.

``zoo`` imports ``wbaug``, never the reverse. Each trainer lives in its own subpackage
(``zoo.hourglass``, ``zoo.barycenter_net``, ...) with ``config.py``, ``model.py``, ``train.py`` and a
README; the small pieces they share (config dataclasses, atomic checkpoints, seeding, logging and
``torchrun`` helpers) are in :mod:`zoo.common`. Models are also reachable by name through a timm-style
registry: ``zoo.create_model("barycenter_net_cpu")``, ``zoo.list_models()``.
"""

from zoo.common.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
