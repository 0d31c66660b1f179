"""Reference trainers built on wbaug.

``zoo`` imports ``wbaug``, never the reverse. Each trainer lives in its own subpackage
(``zoo.hourglass``, ``zoo.barycenter_net``, ...) with ``config.py``, ``model.py``, ``train.py`` and a
README; the small pieces they share (config dataclasses, atomic checkpoints, seeding, logging and
``torchrun`` helpers) are in :mod:`zoo.common`.
"""

__all__: list[str] = []
