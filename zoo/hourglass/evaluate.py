r"""Evaluate a hourglass: NME (inter-ocular), NME-X, AUC / failure rate, per-subset tables.

::

    python -m zoo.hourglass.evaluate --checkpoint runs/hg/checkpoints/last.pt [--threshold 0.08]

Metrics (computed with :mod:`wbaug.metrics` on image-pixel predictions of the test split):

* ``nme``: mean over images of :math:`\frac{1}{N d_{io}}\sum_k \lVert \hat x_k - x_k \rVert_2`, with
  :math:`d_{io}` the outer-eye-corner distance of the layout (300-W "inter-ocular");
* ``nme_90``, ``nme_95``, ``nme_99``: mean NME of the worst 10 %, 5 %, 1 % of images (thesis §4, "NME X");
* ``auc``, ``fr``: area under the cumulative error distribution up to ``threshold`` (normalised to
  [0, 1]) and the fraction of images with NME above it (0.08 for 300-W-style IOD, 0.10 for WFLW);
* per-subset tables: the same metrics on each reader attribute subset (WFLW pose, expression,
  illumination, make-up, occlusion, blur) when the dataset has attributes.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from wbaug.io_atomic import atomic_write_text
from wbaug.landmarks import LandmarkLayout, get_layout

__all__ = [
    "evaluate_model",
    "evaluate_predictions",
    "log_samples",
    "main",
    "markdown_table",
    "predict",
    "subset_metrics",
]

PERCENTILES = (90, 95, 99)


@torch.no_grad()
def predict(model: nn.Module, loader: Any, *, device: torch.device | str = "cpu", amp: bool = False) -> dict:
    """Run ``model`` over ``loader`` (of :class:`~zoo.hourglass.data.EvalSet` batches).

    Returns:
        dict with ``pred``/``target`` ``(M, N, 2)`` (image pixels), ``attributes`` ``(M, A)``,
        ``index`` ``(M,)``.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    preds, targets, attrs, index = [], [], [], []
    for batch in loader:
        images = batch["image"].to(device)
        if amp and device.type == "cuda":
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                heat = model(images)
        else:
            heat = model(images)
        preds.append(model.decode(heat).float().cpu())
        targets.append(batch["landmarks"].float())
        attrs.append(batch["attributes"].float())
        index.append(batch["index"])
    model.train(was_training)
    return {
        "pred": torch.cat(preds),
        "target": torch.cat(targets),
        "attributes": torch.cat(attrs),
        "index": torch.cat(index),
    }


def _per_image_nme(pred: Tensor, target: Tensor, layout: LandmarkLayout) -> Tensor:
    from wbaug import metrics

    # inter-ocular where the layout defines eye corners (faces), else the ground-truth box diagonal
    norm = "inter_ocular" if layout.outer_eye_corners is not None else "bbox_diagonal"
    return metrics.nme(pred, target, normalization=norm, layout=layout, reduction="none")


def evaluate_predictions(
    pred: Tensor, target: Tensor, layout: LandmarkLayout | str, *, threshold: float = 0.08
) -> dict[str, float]:
    """NME, NME-90/95/99, AUC and FR (see module docstring) of ``pred``/``target`` ``(M, N, 2)``."""
    from wbaug import metrics

    if isinstance(layout, str):
        layout = get_layout(layout)
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(
            f"pred and target must both be (M, N, 2), got {tuple(pred.shape)}, {tuple(target.shape)}"
        )
    per_image = _per_image_nme(pred, target, layout)
    out = {"nme": float(per_image.mean()), "count": float(per_image.numel())}
    for q in PERCENTILES:
        out[f"nme_{q}"] = float(metrics.nme_x(per_image, q))
    out["auc"] = float(metrics.auc(per_image, threshold=threshold))
    out["fr"] = float(metrics.failure_rate(per_image, threshold=threshold))
    return out


def subset_metrics(
    pred: Tensor,
    target: Tensor,
    attributes: Tensor,
    names: Sequence[str],
    layout: LandmarkLayout | str,
    *,
    threshold: float = 0.08,
) -> dict[str, dict[str, float]]:
    """Metrics on the full set (``"full"``) and on every attribute subset (``attributes[:, a] > 0.5``)."""
    table = {"full": evaluate_predictions(pred, target, layout, threshold=threshold)}
    for a, name in enumerate(names):
        mask = attributes[:, a] > 0.5
        if bool(mask.any()):
            table[name] = evaluate_predictions(pred[mask], target[mask], layout, threshold=threshold)
    return table


def markdown_table(
    rows: dict[str, dict[str, float]], columns: Sequence[str] | None = None, *, scale=100.0
) -> str:
    """Markdown table: one row per subset, NME-type columns in percent (``scale``), ``count`` as int."""
    columns = list(columns or ["nme", "nme_90", "nme_95", "nme_99", "auc", "fr", "count"])
    lines = ["| subset | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, m in rows.items():
        cells = []
        for c in columns:
            v = m.get(c, math.nan)
            cells.append(f"{int(v)}" if c == "count" else f"{v * scale:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate_model(
    model: nn.Module,
    loader: Any,
    layout: LandmarkLayout | str,
    *,
    device: torch.device | str = "cpu",
    amp: bool = False,
    threshold: float = 0.08,
) -> dict[str, Any]:
    """Predict and score: flat ``{"nme", "nme_90", ..., "auc", "fr"}`` floats plus ``"subsets"``."""
    p = predict(model, loader, device=device, amp=amp)
    names = list(getattr(loader.dataset, "attribute_names", []))
    table = subset_metrics(p["pred"], p["target"], p["attributes"], names, layout, threshold=threshold)
    return {**table["full"], "subsets": table}


@torch.no_grad()
def log_samples(
    model: nn.Module,
    dataset: Any,
    logger: Any,
    step: int,
    *,
    n: int = 8,
    device: torch.device | str = "cpu",
    png_dir: str | Path | None = None,
) -> None:
    """Figure of the first ``n`` test images with predicted (red) and true (green) landmarks."""
    from zoo.common import landmark_figure

    n = min(n, len(dataset))
    if n == 0:
        return
    items = [dataset[i] for i in range(n)]
    images = torch.stack([it["image"] for it in items])
    target = torch.stack([it["landmarks"] for it in items])
    was_training = model.training
    model.eval()
    pred = model.decode(model(images.to(device))).cpu()
    model.train(was_training)
    fig = landmark_figure(images, pred, target, title=f"step {step}")
    logger.log_figure("samples", fig, step, png_dir=png_dir)


def main(argv: Sequence[str] | None = None) -> dict:
    """Evaluate a checkpoint on the test split of its own config (data overrides via ``--data.*``)."""
    from zoo.common import (
        apply_overrides,
        config_from_dict,
        init_distributed,
        load_checkpoint,
        read_checkpoint,
    )
    from zoo.hourglass.config import HourglassConfig
    from zoo.hourglass.data import EvalSet, build_splits
    from zoo.hourglass.train import build_model

    parser = argparse.ArgumentParser(description="Evaluate a hourglass checkpoint (NME, NME-X, AUC/FR).")
    parser.add_argument("--checkpoint", required=True, help="path to a zoo checkpoint (.pt)")
    parser.add_argument("--threshold", type=float, default=0.08, help="AUC / failure-rate NME threshold")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. data.root=/d"
    )
    parser.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    args = parser.parse_args(list(argv) if argv is not None else None)
    ckpt = read_checkpoint(args.checkpoint, require_rng=False)
    if ckpt.get("config") is None:
        parser.error(f"{args.checkpoint}: checkpoint has no config (saved without config=...)")
    cfg = config_from_dict(HourglassConfig, ckpt["config"])
    overrides = dict(item.split("=", 1) for item in args.set)
    cfg = apply_overrides(cfg, overrides)
    ctx = init_distributed(args.device)
    splits = build_splits(cfg.data)
    model = build_model(cfg, splits.num_landmarks)
    load_checkpoint(args.checkpoint, model=model, restore_rng=False)
    model.to(ctx.device)
    dataset = EvalSet(
        splits.test_dataset,
        splits.test,
        cfg.data.image_size,
        native=splits.native_canvas,
        crop_margin=splits.crop_margin,
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.train.eval_batch_size)
    result = evaluate_model(
        model, loader, cfg.data.layout, device=ctx.device, amp=cfg.train.amp, threshold=args.threshold
    )
    print(f"checkpoint {args.checkpoint} (step {ckpt['step']}, mode {cfg.mode_name}); NME-type columns in %")
    print(markdown_table(result["subsets"]))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
