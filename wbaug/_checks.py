"""Argument checks shared by every subpackage (one wording for one rule)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["check_generator"]


def check_generator(generator: Any) -> torch.Generator | None:
    """Return ``generator`` if it is a ``torch.Generator`` or ``None``; raise ``TypeError`` otherwise."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator
