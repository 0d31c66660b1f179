"""Training logs: CSV + TensorBoard scalars, a tqdm progress bar, landmark sample figures.

:class:`MetricLogger` writes one CSV per split (``train.csv``, ``eval.csv``; columns grow as new
metrics appear) and the same scalars to TensorBoard (``torch.utils.tensorboard``) when available.
On resume, pass ``resume_step``: CSV rows logged after that step are dropped and TensorBoard events
are purged from there, so a resumed run's logs read as one run.

Figures are drawn with matplotlib's object API on an Agg canvas (no ``pyplot``, no global backend
switch), so this works headless and inside DataLoader workers.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from wbaug.io_atomic import atomic_write

__all__ = ["MetricLogger", "landmark_figure", "progress", "run_summary", "save_figure"]


def progress(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """``tqdm`` bar that is silent when ``enabled`` is False (non-main ranks, tests)."""
    return tqdm(iterable, disable=not enabled, dynamic_ncols=True, **kwargs)


def _as_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"metric tensors must hold one element, got shape {tuple(value.shape)}")
        return float(value.detach().cpu().item())
    return float(value)


class MetricLogger:
    """CSV + TensorBoard scalar logger.

    Args:
        log_dir: directory for ``<split>.csv`` files and TensorBoard events (``log_dir/tb``).
        enabled: set False on non-main ranks (every call becomes a no-op).
        tensorboard: also write TensorBoard events.
        resume_step: when resuming, drop CSV rows with ``step > resume_step`` and purge later events.

    Example:
        >>> import tempfile
        >>> log = MetricLogger(tempfile.mkdtemp(), tensorboard=False)
        >>> log.log(1, {"loss": 0.5}); log.log(2, {"loss": 0.4, "lr": 1e-3}); log.close()
        >>> losses = [r["loss"] for r in log.read("train")]
        >>> losses
        ['0.5', '0.4']
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
        resume_step: int | None = None,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.enabled = enabled
        self._writer = None
        self._columns: dict[str, list[str]] = {}
        if not enabled:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            for csv_path in self.log_dir.glob("*.csv"):
                rows = [r for r in self._read_path(csv_path) if int(float(r.get("step", 0))) <= resume_step]
                header = list(self._read_header(csv_path))
                self._write_all(csv_path, header, rows)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional (zoo extra) dependency
                SummaryWriter = None
            if SummaryWriter is not None:
                purge = resume_step + 1 if resume_step is not None else None
                self._writer = SummaryWriter(log_dir=str(self.log_dir / "tb"), purge_step=purge)

    @staticmethod
    def _read_header(path: Path) -> list[str]:
        with open(path, newline="", encoding="utf-8") as fh:
            return next(csv.reader(fh), [])

    @staticmethod
    def _read_path(path: Path) -> list[dict[str, str]]:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    @staticmethod
    def _write_all(path: Path, header: list[str], rows: list[Mapping[str, Any]]) -> None:
        with atomic_write(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=header, restval="")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in header})

    def read(self, split: str = "train") -> list[dict[str, str]]:
        """Rows of ``<split>.csv`` as dicts of strings (empty list if absent)."""
        path = self.log_dir / f"{split}.csv"
        return self._read_path(path) if path.exists() else []

    def log(self, step: int, metrics: Mapping[str, Any], *, split: str = "train") -> None:
        """Append one row ``step, metric...`` to ``<split>.csv`` and write ``split/metric`` scalars."""
        if not self.enabled:
            return
        values = {k: _as_float(v) for k, v in metrics.items()}
        path = self.log_dir / f"{split}.csv"
        if split not in self._columns:
            self._columns[split] = self._read_header(path) if path.exists() else []
        header = self._columns[split]
        new = ["step", *values] if not header else [k for k in values if k not in header]
        if not header or new:
            header = header + [k for k in new if k not in header]
            rows = self._read_path(path) if path.exists() else []
            self._write_all(path, header, rows)
            self._columns[split] = header
        with open(path, "a", newline="", encoding="utf-8") as fh:
            row = {"step": step, **{k: repr(v) if math.isfinite(v) else str(v) for k, v in values.items()}}
            csv.DictWriter(fh, fieldnames=header, restval="").writerow(row)
        if self._writer is not None:
            for k, v in values.items():
                self._writer.add_scalar(f"{split}/{k}", v, global_step=step)

    def log_figure(
        self, tag: str, figure: Any, step: int, *, png_dir: str | os.PathLike | None = None
    ) -> None:
        """Write a matplotlib figure to TensorBoard (and as ``png_dir/<tag>_<step>.png`` if given)."""
        if not self.enabled:
            return
        if png_dir is not None:
            save_figure(figure, Path(png_dir) / f"{tag.replace('/', '_')}_{step:08d}.png")
        if self._writer is not None:
            self._writer.add_figure(tag, figure, global_step=step, close=False)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def landmark_figure(
    images: torch.Tensor,
    pred: torch.Tensor,
    target: torch.Tensor | None = None,
    *,
    ncols: int = 4,
    max_images: int = 8,
    title: str | None = None,
) -> Any:
    """Grid of images with predicted (red ×) and true (green ·) landmarks.

    Args:
        images: ``(B, C, H, W)`` float in [0, 1] (C = 1 or 3).
        pred: ``(B, N, 2)`` predicted ``(x, y)`` in pixel coordinates (pixel centres at integers).
        target: ``(B, N, 2)`` ground truth or ``None``.

    Returns:
        A ``matplotlib.figure.Figure`` with an Agg canvas.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if pred.ndim != 3 or pred.shape[0] != images.shape[0] or pred.shape[-1] != 2:
        raise ValueError(f"pred must be (B, N, 2) matching images, got shape {tuple(pred.shape)}")
    b = min(images.shape[0], max_images)
    ncols = max(1, min(ncols, b))
    nrows = math.ceil(b / ncols)
    fig = Figure(figsize=(2.5 * ncols, 2.5 * nrows), dpi=80)
    FigureCanvasAgg(fig)
    imgs = images[:b].detach().float().cpu().clamp(0, 1)
    for i in range(b):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        img = imgs[i].permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        if target is not None:
            t = target[i].detach().float().cpu().numpy()
            ax.scatter(t[:, 0], t[:, 1], s=6, c="lime", marker="o", linewidths=0)
        p = pred[i].detach().float().cpu().numpy()
        ax.scatter(p[:, 0], p[:, 1], s=10, c="red", marker="x", linewidths=0.8)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(figure: Any, path: str | os.PathLike) -> Path:
    """Save a figure (format from the suffix, PNG when there is none; parent directories created),
    atomically (:func:`wbaug.io_atomic.atomic_write`)."""
    path = Path(path)
    with atomic_write(path) as fh:
        figure.savefig(fh, format=path.suffix[1:].lower() or "png")
    return path


def run_summary(out_dir: str | Path, result: dict[str, Any], keys: Sequence[str]) -> str:
    """The closing lines every trainer prints: final step, the chosen metrics, and where the
    checkpoints, logs, figures and ``metrics.json`` went (what a user looks for when a run ends).

    Example:
        >>> text = run_summary("runs/x", {"step": 10, "nme": 0.05, "train_seconds": 2.0}, ["nme"])
        >>> print(text.splitlines()[0])
        done: step 10 in 2.0 s; nme 0.05
    """
    out = Path(out_dir)
    numbers = "; ".join(f"{k} {result[k]:.4g}" for k in keys if isinstance(result.get(k), (int, float)))
    seconds = result.get("train_seconds")
    head = f"done: step {result.get('step')}" + (f" in {seconds:.1f} s" if isinstance(seconds, float) else "")
    where = {
        "checkpoints": out / "checkpoints" / "last.pt",
        "logs": out / "logs",
        "figures": out / "samples",
        "metrics": out / "metrics.json",
    }
    places = "  " + " | ".join(f"{name} {path}" for name, path in where.items())
    return f"{head}; {numbers}\n{places}" if numbers else f"{head}\n{places}"
