r"""Evaluate the CycleGAN's landmark encoder G_L (EMA weights) on held-out images.

::

    python -m zoo.cyclegan.evaluate --checkpoint runs/cg/checkpoints/last.pt --json runs/cg/eval.json

Metrics (:mod:`wbaug.metrics`, image-pixel coordinates of the test split, inter-ocular normalisation where
the layout defines eye corners, else the box diagonal):

* ``nme``: index-matched NME (meaningful for ordered landmarks, ``model.ordered = true``);
* ``ot_nme``: NME after optimal matching (:func:`wbaug.metrics.ot_nme`; the measure for unordered
  landmarks, the paper's 300-W setting, where the summed heatmap leaves the point order free);
* ``baseline_nme`` / ``baseline_ot_nme``: the same for the **mean shape** of the training landmark budget
  predicted for every image, so "it learned something" means beating these;
* ``count``: number of test images.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wbaug.io_atomic import atomic_write_text
from wbaug.landmarks import LandmarkLayout, get_layout

__all__ = ["evaluate_model", "log_samples", "main", "predict"]


@torch.no_grad()
def predict(model: nn.Module, loader: Any, *, device: torch.device | str = "cpu", ema: bool = True) -> dict:
    """Predicted and true landmarks ``(M, N, 2)`` over ``loader`` (of :class:`~zoo.hourglass.data.EvalSet`
    batches), with the EMA landmark encoder by default."""
    device = torch.device(device)
    preds, targets = [], []
    for batch in loader:
        images = batch["image"].to(device) * 2 - 1
        preds.append(model.predict(images, ema=ema).cpu())
        targets.append(batch["landmarks"].float())
    return {"pred": torch.cat(preds), "target": torch.cat(targets)}


def _metrics(pred: torch.Tensor, target: torch.Tensor, layout: LandmarkLayout) -> tuple[float, float]:
    from wbaug import metrics

    norm = "inter_ocular" if layout.outer_eye_corners is not None else "bbox_diagonal"
    kwargs = {"normalization": norm, "layout": layout}
    return (
        float(metrics.nme(pred.double(), target.double(), **kwargs)),
        float(metrics.ot_nme(pred.double(), target.double(), **kwargs)),
    )


def evaluate_model(
    model: nn.Module,
    loader: Any,
    layout: LandmarkLayout | str,
    *,
    device: torch.device | str = "cpu",
    ema: bool = True,
) -> dict[str, float]:
    """``nme``, ``ot_nme``, ``baseline_nme``, ``baseline_ot_nme`` and ``count`` (module docstring)."""
    if isinstance(layout, str):
        layout = get_layout(layout)
    out = predict(model, loader, device=device, ema=ema)
    pred, target = out["pred"], out["target"]
    nme, ot = _metrics(pred, target, layout)
    mean_shape = model.mean_shape.detach().float().cpu().expand_as(target)
    base_nme, base_ot = _metrics(mean_shape, target, layout)
    return {
        "nme": nme,
        "ot_nme": ot,
        "baseline_nme": base_nme,
        "baseline_ot_nme": base_ot,
        "count": float(target.shape[0]),
    }


@torch.no_grad()
def log_samples(
    model: nn.Module,
    data: Any,
    logger: Any,
    step: int,
    *,
    n: int = 8,
    device: torch.device | str = "cpu",
    png_dir: str | Path | None = None,
) -> None:
    """Fig. 2-style grids (EMA networks): real test images with predicted landmarks (red; ground truth
    green), and landmark-domain samples (barycenters when present) with the images generated for them."""
    from zoo.common import landmark_figure

    n = min(n, len(data.test))
    if n == 0:
        return
    device = torch.device(device)
    items = [data.test[i] for i in range(n)]
    images = torch.stack([it["image"] for it in items])
    target = torch.stack([it["landmarks"] for it in items])
    pred = model.predict(images.to(device) * 2 - 1).cpu()
    logger.log_figure(
        "real_predicted", landmark_figure(images, pred, target, title=f"step {step}"), step, png_dir=png_dir
    )
    source = data.barycenters if data.barycenters.shape[0] > 0 else data.budget
    coords = source[:n].to(device)
    g = torch.Generator(device="cpu").manual_seed(step)
    z = torch.randn(coords.shape[0], model.z_dim, generator=g).to(device)
    fakes = model.sample_images(coords, z, generator=g if device.type == "cpu" else None).cpu()
    fakes = ((fakes + 1) / 2).clamp(0, 1)
    title = f"step {step}: {'barycenters' if data.barycenters.shape[0] else 'budget'} → generated"
    logger.log_figure(
        "generated", landmark_figure(fakes, source[:n].cpu(), title=title), step, png_dir=png_dir
    )


def main(argv: Sequence[str] | None = None) -> dict:
    """Evaluate a checkpoint on the test split of its own config; ``--json`` writes the metrics."""
    from zoo.common import config_from_dict, load_checkpoint, resolve_device
    from zoo.cyclegan.config import CycleGANConfig
    from zoo.cyclegan.train import build_data, build_model

    parser = argparse.ArgumentParser(description="Evaluate a zoo.cyclegan checkpoint (EMA landmark encoder).")
    parser.add_argument("--checkpoint", required=True, help="path to a checkpoint (e.g. .../last.pt)")
    parser.add_argument("--json", default=None, help="write the metrics to this JSON file")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda ...")
    parser.add_argument("--live", action="store_true", help="use the live G_L weights instead of the EMA")
    args = parser.parse_args(list(argv) if argv is not None else None)
    path = Path(args.checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {str(path)!r} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("config") is None:
        raise ValueError(f"--checkpoint {str(path)!r} is not a zoo.cyclegan checkpoint")
    cfg = config_from_dict(CycleGANConfig, ckpt["config"])
    device = resolve_device(args.device)
    data = build_data(cfg, fit_sampler=False)
    model = build_model(cfg, data.num_landmarks)
    load_checkpoint(path, model=model, restore_rng=False)
    model.to(device).eval()
    loader = torch.utils.data.DataLoader(data.test, batch_size=cfg.train.eval_batch_size, shuffle=False)
    metrics = evaluate_model(model, loader, cfg.data.layout, device=device, ema=not args.live)
    result = {
        "checkpoint": str(path),
        "step": int(ckpt["step"]),
        "mode": cfg.mode_name,
        "weights": "live" if args.live else "ema",
        **metrics,
    }
    text = json.dumps(result, indent=2)
    if args.json:
        atomic_write_text(args.json, text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
