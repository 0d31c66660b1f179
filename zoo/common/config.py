"""Dataclass configs: plain-dict / JSON round trips and ``argparse`` overrides.

A trainer describes its settings as (nested) dataclasses with type-annotated fields and defaults::

    @dataclass
    class OptimConfig:
        lr: float = 1e-3
        betas: tuple[float, float] = (0.9, 0.999)

    @dataclass
    class Config:
        optim: OptimConfig = field(default_factory=OptimConfig)
        steps: int = 1000
        backbone: str | None = None

and gets, without writing any parsing code:

* :func:`config_to_dict` / :func:`config_from_dict` -- plain ``dict`` of ``int/float/str/bool/None/list``
  (what ``torch.load(weights_only=True)`` and JSON accept), validated field by field on the way in;
* :func:`save_config` / :func:`load_config` -- JSON files;
* :func:`add_config_arguments` + :func:`config_from_args` (or the one-call :func:`parse_config`) --
  one ``--section.field VALUE`` flag per leaf field, e.g. ``--optim.lr 3e-4 --steps 50
  --backbone none``; a ``--config file.json`` base is applied first, flags override it.

Values are converted from strings by their annotation (``int``, ``float``, ``str``, ``bool`` accepting
``true/false/1/0/yes/no``, ``X | None`` accepting ``none``, ``Literal[...]``, ``tuple[T, ...]`` and
``list[T]`` as comma-separated values). Nothing is evaluated: no ``eval``/``exec``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from wbaug.io_atomic import atomic_write_text

__all__ = [
    "TrainConfig",
    "add_config_arguments",
    "apply_overrides",
    "config_from_args",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "parse_config",
    "save_config",
    "trainer_main",
]

T = TypeVar("T")


@dataclasses.dataclass
class TrainConfig:
    """The ``--train.*`` section every zoo trainer shares: loop, hardware and bookkeeping.

    A trainer subclasses it to change defaults (``steps``, ``out_dir``) or add its own fields; the
    fields here mean the same thing in every trainer.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class MyTrain(TrainConfig):
        ...     steps: int = 5000
        ...     out_dir: str = "runs/mine"
        >>> MyTrain().batch_size, MyTrain().steps
        (16, 5000)
    """

    steps: int = 1000
    batch_size: int = dataclasses.field(default=16, metadata={"help": "per-rank batch size"})
    seed: int = 0
    device: str = dataclasses.field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:1 | mps"})
    amp: bool = dataclasses.field(default=True, metadata={"help": "bf16 autocast on CUDA (ignored on CPU)"})
    out_dir: str = "runs/zoo"
    log_every: int = 50
    eval_every: int = 1000
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    sample_images: int = dataclasses.field(default=8, metadata={"help": "images per sample figure (0: none)"})
    tensorboard: bool = True
    progress: bool = dataclasses.field(default=True, metadata={"help": "progress bar (on a terminal only)"})
    num_threads: int | None = dataclasses.field(
        default=None, metadata={"help": "torch CPU threads of the trainer process (None: torch's default)"}
    )

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _check_config_instance(cfg: Any, name: str = "cfg") -> None:
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"{name} must be a dataclass instance, got {type(cfg).__name__}")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Convert a (nested) dataclass config to a plain ``dict`` (tuples become lists).

    Args:
        cfg: dataclass instance.

    Returns:
        A dict of ``int/float/str/bool/None``, lists and nested dicts: JSON-serialisable and accepted
        by ``torch.load(weights_only=True)``.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class C:
        ...     lr: float = 0.1
        >>> config_to_dict(C())
        {'lr': 0.1}
    """
    _check_config_instance(cfg)

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"config value {value!r} of type {type(value).__name__} is not serialisable")

    return convert(cfg)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Validate/convert an already-parsed (JSON-like) value to annotation ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise TypeError(f"{where}: None is not allowed (expected {tp})")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise TypeError(f"{where}: {value!r} matches none of {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: expected a sequence, got {type(value).__name__}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ValueError(f"{where}: expected {len(args)} values, got {len(value)}")
            out = [_coerce(v, a, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
        else:
            inner = args[0] if args else Any
            out = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return config_from_dict(tp, value, _where=where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"{where}: expected bool, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where}: expected int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{where}: expected float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected str, got {value!r}")
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise TypeError(f"{where}: unsupported annotation {tp!r} for value {value!r}")


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, _where: str = "") -> T:
    """Build dataclass ``cls`` from a plain mapping, validating every value against its annotation.

    Missing keys keep their defaults; unknown keys raise ``ValueError`` (a typo in a JSON config should
    not be silently ignored).

    Args:
        cls: dataclass type.
        data: mapping as produced by :func:`config_to_dict`.

    Returns:
        A ``cls`` instance.
    """
    if not _is_dataclass_type(cls):
        raise TypeError(f"cls must be a dataclass type, got {cls!r}")
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a mapping, got {type(data).__name__}")
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        prefix = f"{_where}." if _where else ""
        raise ValueError(f"unknown config keys for {cls.__name__}: {sorted(prefix + k for k in unknown)}")
    kwargs = {}
    for name in names:
        if name in data:
            where = f"{_where}.{name}" if _where else name
            kwargs[name] = _coerce(data[name], hints[name], where)
    return cls(**kwargs)


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write ``cfg`` as indented JSON (atomically, :func:`wbaug.io_atomic.atomic_write`).

    Returns:
        The path written.
    """
    return atomic_write_text(path, json.dumps(config_to_dict(cfg), indent=2, sort_keys=False) + "\n")


def load_config(cls: type[T], path: str | os.PathLike) -> T:
    """Read a JSON file written by :func:`save_config` into dataclass ``cls``."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    return config_from_dict(cls, data)


def _parse_scalar(text: str, tp: Any, where: str) -> Any:
    """Convert one command-line string to annotation ``tp`` (no evaluation)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.strip().lower() in {"none", "null"} and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse_scalar(text, arg, where)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError(f"{where}: cannot parse {text!r} as {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        for option in args:
            if isinstance(option, bool):
                candidate = text.strip().lower() in _TRUE if text.strip().lower() in _TRUE | _FALSE else None
            elif isinstance(option, (int, float)):
                try:
                    candidate = type(option)(text)
                except ValueError:
                    continue
            else:
                candidate = text
            if candidate == option:
                return option
        raise ValueError(f"{where}: expected one of {list(args)}, got {text!r}")
    if origin in (tuple, list):
        parts = [p.strip() for p in text.split(",") if p.strip() != ""]
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(parts) != len(args):
                raise ValueError(f"{where}: expected {len(args)} comma-separated values, got {text!r}")
            values = [_parse_scalar(p, a, where) for p, a in zip(parts, args)]
        else:
            inner = args[0] if args else str
            values = [_parse_scalar(p, inner, where) for p in parts]
        return tuple(values) if origin is tuple else values
    if tp is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{where}: expected a boolean (true/false), got {text!r}")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{where}: expected an integer, got {text!r}") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{where}: expected a number, got {text!r}") from None
    if tp is str or tp is Any:
        return text
    raise TypeError(f"{where}: annotation {tp!r} cannot be set from the command line")


def _leaf_fields(cls: type, prefix: str = "") -> list[tuple[str, Any, dataclasses.Field]]:
    out = []
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        if _is_dataclass_type(tp):
            out.extend(_leaf_fields(tp, key + "."))
        else:
            out.append((key, tp, f))
    return out


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "") if not isinstance(tp, type) else tp.__name__


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> argparse.ArgumentParser:
    """Add ``--config PATH`` and one ``--dotted.name VALUE`` flag per leaf field of dataclass ``cls``.

    Flags default to ``argparse.SUPPRESS`` so only the ones given on the command line override the
    base config (see :func:`config_from_args`).
    """
    if not _is_dataclass_type(cls):
        raise TypeError(f"cls must be a dataclass type, got {cls!r}")
    parser.add_argument("--config", default=None, help="JSON config file to start from (flags override it)")
    group = parser.add_argument_group("config overrides")
    for key, tp, f in _leaf_fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "required"
        help_text = f.metadata.get("help", "")
        group.add_argument(
            f"--{key}",
            dest=f"cfg__{key}",
            default=argparse.SUPPRESS,
            metavar=_type_name(tp).upper() if isinstance(tp, type) else "VALUE",
            help=f"{help_text} [{_type_name(tp)}; default: {default!r}]".strip(),
        )
    return parser


def apply_overrides(cfg: T, overrides: Mapping[str, str]) -> T:
    """Return a copy of ``cfg`` with dotted-name string overrides applied, e.g. ``{"optim.lr": "3e-4"}``."""
    _check_config_instance(cfg)
    leaves = {key: tp for key, tp, _ in _leaf_fields(type(cfg))}
    data = config_to_dict(cfg)
    for key, text in overrides.items():
        if key not in leaves:
            raise ValueError(f"unknown config key {key!r}; known keys: {sorted(leaves)}")
        value = _parse_scalar(str(text), leaves[key], key) if isinstance(text, str) else text
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = config_to_dict_value(value)
    return config_from_dict(type(cfg), data)


def config_to_dict_value(value: Any) -> Any:
    """Plain-container form of a single config value (tuples become lists)."""
    if isinstance(value, (list, tuple)):
        return [config_to_dict_value(v) for v in value]
    return value


def config_from_args(cls: type[T], args: argparse.Namespace, *, base: T | None = None) -> T:
    """Resolve a config: ``base`` (or ``cls()``), then ``--config`` file, then explicit flags."""
    cfg = base if base is not None else cls()
    config_path = getattr(args, "config", None)
    if config_path:
        cfg = load_config(cls, config_path)
    overrides = {k[len("cfg__") :]: v for k, v in vars(args).items() if k.startswith("cfg__")}
    return apply_overrides(cfg, overrides)


def parse_config(
    cls: type[T],
    argv: Sequence[str] | None = None,
    *,
    description: str | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> tuple[T, argparse.Namespace]:
    """Parse ``argv`` into a ``cls`` config; returns ``(config, namespace)`` (extra flags in the namespace).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class C:
        ...     lr: float = 0.1
        ...     steps: int = 10
        >>> parse_config(C, ["--lr", "0.5"])[0]
        C(lr=0.5, steps=10)
    """
    parser = parser or argparse.ArgumentParser(description=description)
    add_config_arguments(parser, cls)
    args = parser.parse_args(list(argv) if argv is not None else None)
    return config_from_args(cls, args), args


def trainer_main(
    cls: type[T],
    train_fn: Callable[..., dict],
    argv: Sequence[str] | None = None,
    *,
    description: str,
    presets: Mapping[str, Callable[[], T]] | None = None,
) -> dict:
    """The zoo trainers' command line: ``[--preset NAME] [--config FILE] [--section.field VALUE ...]
    [--resume | --overwrite] [--print-config]``, then ``train_fn(cfg, resume=..., overwrite=...)``.

    A non-empty ``out_dir`` needs ``--resume`` or ``--overwrite``; ``--resume`` needs a checkpoint there
    (:func:`zoo.common.checkpoint.prepare_run_dir`); a violation exits with status 2 and names the
    directory before any work is done.

    With ``--resume`` and no ``--config``, the run's own ``<train.out_dir>/config.json`` is the base, so a
    resumed run keeps its settings. ``presets`` maps names to config factories (the first is the default).
    """
    parser = argparse.ArgumentParser(description=description)
    if presets:
        parser.add_argument(
            "--preset", choices=list(presets), default=next(iter(presets)), help="base config"
        )
    run = parser.add_mutually_exclusive_group()
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest intact checkpoint in <out_dir>/checkpoints (fails when there is none)",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in a non-empty out_dir (without it a new run refuses a non-empty out_dir)",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_config_arguments(parser, cls)
    args = parser.parse_args(list(argv) if argv is not None else None)
    base = presets[args.preset]() if presets else None
    if args.resume and not args.config:
        saved = Path(config_from_args(cls, args, base=base).train.out_dir) / "config.json"
        if saved.exists():
            base = load_config(cls, saved)
    cfg = config_from_args(cls, args, base=base)
    if args.print_config:
        print(json.dumps(config_to_dict(cfg), indent=2))
        return {}
    from zoo.common.checkpoint import RunDirError, prepare_run_dir

    try:  # check the out_dir rules before the (possibly long) data preparation; train_fn applies them
        if args.resume or not args.overwrite:
            prepare_run_dir(cfg.train.out_dir, resume=args.resume, overwrite=False)
    except RunDirError as err:
        parser.error(str(err))
    return train_fn(cfg, resume=args.resume, overwrite=args.overwrite)
