"""A timm-style model registry for the zoo: ``create_model("barycenter_net_cpu")``.

Each trainer registers named factory functions next to its model (``@register_model``); a name fixes an
architecture (its defaults) and keyword arguments override them. The trainers' own model modules are
imported on the first lookup, so ``from zoo import create_model`` is enough.

Example:
    >>> from zoo import create_model, list_models
    >>> "barycenter_net_cpu" in list_models("barycenter*")
    True
    >>> create_model("stacked_hourglass_tiny", num_landmarks=5).num_landmarks
    5
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable

from torch import nn

__all__ = ["create_model", "list_models", "register_model"]

_FACTORIES: dict[str, Callable[..., nn.Module]] = {}
# model modules of the zoo's trainers, imported on the first lookup (they register their factories)
_BUILTIN_MODULES = (
    "zoo.hourglass.model",
    "zoo.barycenter_net.model",
    "zoo.cyclegan.model",
    "zoo.local_transformations.model",
    "zoo.brule.model",
)


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its ``__name__`` (names must be unique)."""
    name = fn.__name__
    if name in _FACTORIES and _FACTORIES[name] is not fn:
        raise ValueError(f"a model named {name!r} is already registered")
    _FACTORIES[name] = fn
    return fn


def _load_builtin() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered names matching the shell-style ``pattern``."""
    _load_builtin()
    return sorted(fnmatch.filter(_FACTORIES, pattern))


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name``; ``kwargs`` override the architecture's defaults."""
    _load_builtin()
    if name not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(_FACTORIES)}")
    return _FACTORIES[name](**kwargs)
