"""Atomic training checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors and primitive containers::

    {"format": 1, "step": int, "model": state_dict, "optimizer": ..., "scheduler": ...,
     "scaler": ..., "config": plain dict, "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...],
     "generators": {name: ByteTensor}}, "extra": dict}

Writes go through :func:`wbaug.io_atomic.atomic_write` (a ``mkstemp`` file in the same directory,
flushed and ``fsync``-ed, then renamed with ``os.replace``) -- a kill at any moment leaves either the
previous or the new checkpoint, never a torn one. :class:`CheckpointManager` keeps ``last.pt`` plus the
newest ``keep`` numbered files (``step_00001000.pt``), so ``--resume`` loses at most one checkpoint
interval.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wbaug.io_atomic import atomic_write

__all__ = [
    "CheckpointManager",
    "build_checkpoint",
    "capture_rng_state",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "unwrap_model",
]

FORMAT_VERSION = 1
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip ``DistributedDataParallel``/``DataParallel`` (``.module``) and ``torch.compile``
    (``._orig_mod``) wrappers so state-dict keys do not depend on how the model was run."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def capture_rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """RNG states as tensors: global torch CPU, every CUDA device, and the named generators."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    else:
        state["cuda"] = []
    gens = {}
    for name, g in (generators or {}).items():
        if not isinstance(g, torch.Generator):
            raise TypeError(f"generators[{name!r}] must be a torch.Generator, got {type(g).__name__}")
        gens[name] = g.get_state()
    state["generators"] = gens
    return state


def restore_rng_state(
    state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None
) -> None:
    """Restore what :func:`capture_rng_state` captured (CUDA states only when the device count matches)."""
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
    saved = state.get("generators", {})
    for name, g in (generators or {}).items():
        if name in saved:
            g.set_state(saved[name].cpu() if g.device.type == "cpu" else saved[name])


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_write(path) as fh:
        torch.save(obj, fh)


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    config: Mapping[str, Any] | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a full training checkpoint atomically.

    Args:
        path: destination file.
        model: the model (DDP / compile wrappers are stripped).
        step: optimiser steps completed.
        optimizer, scheduler, scaler: objects with ``state_dict()`` (optional).
        config: the resolved config as a plain dict (see ``zoo.common.config.config_to_dict``).
        generators: named ``torch.Generator`` objects whose states are saved (e.g. the loader's).
        extra: further plain data (best metric, epoch, ...); must be ``weights_only``-loadable.

    Returns:
        ``Path(path)``.
    """
    path = Path(path)
    _atomic_torch_save(
        build_checkpoint(
            model=model,
            step=step,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            config=config,
            generators=generators,
            extra=extra,
        ),
        path,
    )
    return path


def build_checkpoint(
    *,
    model: nn.Module,
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    config: Mapping[str, Any] | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict :func:`save_checkpoint` writes (same arguments, no file)."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a plain mapping (use config_to_dict), got {type(config).__name__}")
    return {
        "format": FORMAT_VERSION,
        "step": step,
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "config": dict(config) if config is not None else None,
        "rng": capture_rng_state(generators),
        "extra": dict(extra) if extra is not None else {},
    }


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    generators: Mapping[str, torch.Generator] | None = None,
    restore_rng: bool = True,
    map_location: str | torch.device | None = "cpu",
    strict: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and restore the given objects in place.

    Returns:
        The raw checkpoint dict (``step``, ``config``, ``extra``, ...).
    """
    ckpt = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_VERSION:
        raise ValueError(f"path {str(path)!r} is not a zoo checkpoint (format {FORMAT_VERSION})")
    if model is not None:
        unwrap_model(model).load_state_dict(ckpt["model"], strict=strict)
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None:
            if ckpt.get(name) is None:
                raise ValueError(f"checkpoint {str(path)!r} has no {name} state")
            obj.load_state_dict(ckpt[name])
    if restore_rng:
        restore_rng_state(ckpt["rng"], generators)
    return ckpt


class CheckpointManager:
    """Keeps ``last.pt`` and the newest ``keep`` numbered checkpoints in ``directory``.

    Example:
        >>> import tempfile
        >>> m = torch.nn.Linear(2, 2)
        >>> mgr = CheckpointManager(tempfile.mkdtemp(), keep=2)
        >>> _ = mgr.save(step=10, model=m)
        >>> mgr.latest().name
        'last.pt'
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 2, enabled: bool = True) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise ValueError(f"keep must be a non-negative int, got {keep!r}")
        self.directory = Path(directory)
        self.keep = keep
        self.enabled = enabled

    def step_path(self, step: int) -> Path:
        return self.directory / f"step_{step:08d}.pt"

    @property
    def last_path(self) -> Path:
        return self.directory / "last.pt"

    def numbered(self) -> list[tuple[int, Path]]:
        """Numbered checkpoints as ``(step, path)``, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            m = _STEP_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def latest(self) -> Path | None:
        """``last.pt`` if present, else the newest numbered checkpoint, else ``None``."""
        if self.last_path.exists():
            return self.last_path
        numbered = self.numbered()
        return numbered[-1][1] if numbered else None

    def save(self, *, step: int, model: nn.Module, **kwargs: Any) -> Path | None:
        """Save ``last.pt`` (and a numbered copy when ``keep > 0``); prune old numbered files.

        Only writes when ``enabled`` (pass ``enabled=is_main_process`` under DDP).
        """
        if not self.enabled:
            return None
        payload = build_checkpoint(step=step, model=model, **kwargs)
        _atomic_torch_save(payload, self.last_path)
        if self.keep > 0:
            _atomic_torch_save(payload, self.step_path(step))
            for _, old in self.numbered()[: -self.keep]:
                old.unlink(missing_ok=True)
        return self.last_path
