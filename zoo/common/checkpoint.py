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
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wbaug.io_atomic import TEMP_SUFFIX, atomic_write, remove_stale_temporaries

__all__ = [
    "RUN_ARTIFACTS",
    "CheckpointManager",
    "RunDirError",
    "build_checkpoint",
    "capture_rng_state",
    "load_checkpoint",
    "prepare_run_dir",
    "read_checkpoint",
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


def read_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device | None = "cpu", require_rng: bool = True
) -> dict[str, Any]:
    """Read and validate a checkpoint (``weights_only=True``) without restoring anything.

    Checks the format version, ``step`` (int >= 0), ``model`` (a state dict), ``config``/``extra``
    (mappings or None) and, when ``require_rng``, the ``rng`` entry (``"torch"`` a uint8 tensor).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the message starts with the path and says what is wrong (truncated or corrupt file,
            missing entry, wrong type).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as err:  # EOFError, OSError, RuntimeError (zip reader), UnpicklingError, ...
        raise ValueError(
            f"{p}: cannot read the checkpoint (truncated or corrupt file: {type(err).__name__}: {err})"
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_VERSION:
        raise ValueError(f"{p}: not a zoo checkpoint (format {FORMAT_VERSION})")
    step = ckpt.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"{p}: checkpoint 'step' must be an int >= 0, got {step!r}")
    if not isinstance(ckpt.get("model"), Mapping):
        raise ValueError(f"{p}: checkpoint has no 'model' state dict")
    for key in ("config", "extra"):
        if ckpt.get(key) is not None and not isinstance(ckpt[key], Mapping):
            raise ValueError(f"{p}: checkpoint {key!r} must be a mapping, got {type(ckpt[key]).__name__}")
    if require_rng:
        rng = ckpt.get("rng")
        if not isinstance(rng, Mapping) or "torch" not in rng:
            raise ValueError(
                f"{p}: checkpoint has no 'rng' entry (RNG states), so the run cannot be resumed "
                "reproducibly; pass restore_rng=False to load the weights only"
            )
        if not isinstance(rng["torch"], torch.Tensor) or rng["torch"].dtype != torch.uint8:
            raise ValueError(f"{p}: checkpoint 'rng'['torch'] must be a uint8 tensor")
    return ckpt


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

    The file is validated first (:func:`read_checkpoint`), so a corrupt or incomplete file raises before
    any object is touched.

    Returns:
        The raw checkpoint dict (``step``, ``config``, ``extra``, ...).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: truncated, corrupt or incomplete (e.g. no ``rng`` while ``restore_rng``); names the file.
    """
    ckpt = read_checkpoint(path, map_location=map_location, require_rng=restore_rng)
    if model is not None:
        unwrap_model(model).load_state_dict(ckpt["model"], strict=strict)
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None:
            if ckpt.get(name) is None:
                raise ValueError(f"{path}: checkpoint has no {name!r} state")
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
        if enabled:  # one writer per directory: temporaries of killed writes are stale
            remove_stale_temporaries(self.directory)

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

    def candidates(self) -> list[Path]:
        """Checkpoints to resume from, best first: ``last.pt``, then numbered ones newest first."""
        found = [self.last_path] if self.last_path.is_file() else []
        return found + [p for _, p in reversed(self.numbered())]

    def load_latest(self, **kwargs: Any) -> dict[str, Any] | None:
        """:func:`load_checkpoint` the newest *intact* checkpoint (``kwargs`` are passed on).

        A corrupt or incomplete ``last.pt`` (or numbered file) is skipped and the next older one is tried;
        a ``RuntimeWarning`` names the skipped files and the one used. Returns the checkpoint dict plus
        ``"path"``, or ``None`` when the directory holds no checkpoint.

        Raises:
            ValueError: checkpoints exist but none is intact (every file and its problem listed).
        """
        problems = []
        for path in self.candidates():
            try:
                ckpt = load_checkpoint(path, **kwargs)
            except ValueError as err:
                problems.append(str(err))
                continue
            if problems:
                warnings.warn(
                    f"skipping checkpoint(s) that cannot be resumed from ({'; '.join(problems)}); "
                    f"resuming from the older {path}",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return {**ckpt, "path": path}
        if problems:
            raise ValueError(f"no intact checkpoint in {self.directory}: " + "; ".join(problems))
        return None

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


#: what a zoo trainer writes under its ``out_dir`` (``--overwrite`` removes these and nothing else)
RUN_ARTIFACTS = ("checkpoints", "logs", "samples", "config.json", "metrics.json")


class RunDirError(ValueError):
    """An ``out_dir`` that a run may not use as asked (``--resume``/``--overwrite`` rules)."""


def prepare_run_dir(
    out_dir: str | os.PathLike,
    *,
    resume: bool,
    overwrite: bool = False,
    artifacts: Sequence[str] = RUN_ARTIFACTS,
) -> Path:
    """Apply the trainers' ``out_dir`` rules before anything is written; returns ``Path(out_dir)``.

    * a new run (no ``resume``) needs a missing or empty ``out_dir``; a non-empty one is refused unless
      ``overwrite``, which deletes the run artifacts (``artifacts``) -- and refuses when anything else is
      there, so it never deletes files a trainer did not write;
    * ``resume`` needs ``out_dir/checkpoints`` to hold at least one checkpoint (a missing or mistyped
      directory fails instead of silently starting a fresh run); stale temporary files of killed writes
      in ``out_dir`` and ``out_dir/logs`` are removed.

    Raises:
        RunDirError: (a ``ValueError``) naming ``out_dir`` and the option to use.
    """
    out = Path(out_dir)
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other")
    if out.exists() and not out.is_dir():
        raise RunDirError(f"out_dir {str(out)!r} exists and is not a directory")
    if resume:
        if not out.is_dir():
            raise RunDirError(
                f"--resume: out_dir {str(out)!r} does not exist (mistyped --train.out_dir?); "
                "drop --resume to start a new run"
            )
        if not CheckpointManager(out / "checkpoints", enabled=False).candidates():
            raise RunDirError(
                f"--resume: no checkpoint in {str(out / 'checkpoints')!r}; drop --resume to start a new run "
                "(with --overwrite to replace what is there)"
            )
        for folder in (out, out / "logs"):
            remove_stale_temporaries(folder)
        return out
    entries = sorted(out.iterdir()) if out.is_dir() else []
    if not entries:
        return out
    names = [e.name for e in entries]
    if not overwrite:
        raise RunDirError(
            f"out_dir {str(out)!r} is not empty ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); "
            "pass --resume to continue that run or --overwrite to replace it"
        )
    foreign = [n for n in names if n not in artifacts and not n.endswith(TEMP_SUFFIX)]
    if foreign:
        raise RunDirError(
            f"--overwrite: out_dir {str(out)!r} holds files no trainer wrote ({', '.join(foreign[:5])}); "
            "refusing to delete them: choose another --train.out_dir"
        )
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return out
