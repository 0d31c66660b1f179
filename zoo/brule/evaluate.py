r"""Evaluate a BRULÉ landmark encoder with the protocols of unsupervised landmark discovery.

::

    python -m zoo.brule.evaluate --checkpoint runs/brule-cpu/checkpoints/last.pt --json eval.json

Metrics (image-pixel coordinates of the test split; inter-ocular normalisation, the 300-W IOD of BRULÉ §5,
where the layout defines eye corners, else the box diagonal; fractions, ×100 for %):

* ``nme``: index-matched NME of the ``K`` discovered points (meaningful when they are tied to the
  annotation order, i.e. semi-supervised; NaN when ``K ≠ N``);
* ``ot_nme``: NME after optimal matching (:func:`wbaug.metrics.ot_nme`; order-free);
* ``linear_probe_nme``: a ridge map from the ``K`` discovered points to the ``N`` annotated ones, fitted
  on the labelled training images (the label budget) and scored on the test split
  (:func:`wbaug.metrics.linear_probe_nme`; Thewlis et al. / Jakab et al.);
* ``baseline_*``: the same three for the **barycenter predicted for every image** (its probe regresses to
  the mean training shape), so "the encoder learned something" means beating these;
* ``stability``: label-free equivariance error ``mean ‖X(gI) − g X(I)‖ / S`` over random similarities ``g``
  (rotation ±15°, scale ±10 %, translation ±5 %; fixed seed);
* ``count``: test images.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from wbaug.io_atomic import atomic_write_text
from wbaug.landmarks import LandmarkLayout, apply_transform, get_layout

__all__ = ["evaluate_model", "log_samples", "main", "predict", "stability_score"]


@torch.no_grad()
def predict(model: Any, dataset: Any, *, device: torch.device | str = "cpu", batch_size: int = 32) -> dict:
    """Discovered ``(M, K, 2)`` and annotated ``(M, N, 2)`` landmarks (and images) of an
    :class:`~zoo.hourglass.data.EvalSet`."""
    device = torch.device(device)
    preds, targets, images = [], [], []
    for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False):
        preds.append(model.predict(batch["image"].to(device) * 2 - 1).cpu())
        targets.append(batch["landmarks"].float())
        images.append(batch["image"])
    return {"pred": torch.cat(preds), "target": torch.cat(targets), "images": torch.cat(images)}


@torch.no_grad()
def stability_score(
    model: Any, images: Tensor, *, device: torch.device | str = "cpu", seed: int = 0, batch_size: int = 32
) -> float:
    """``mean ‖X(gI) − g X(I)‖₂ / S`` over random similarities ``g`` (label-free; images ``(M, 3, S, S)`` in
    [0, 1]). Lower is better; 0 for a perfectly equivariant encoder."""
    from zoo.hourglass.data import random_similarity, warp_images

    size = images.shape[-1]
    g = torch.Generator().manual_seed(seed)
    mats = random_similarity(
        images.shape[0], size, scale=0.1, rotate=math.pi / 12, translate=0.05, generator=g
    )
    errors = []
    for i in range(0, images.shape[0], batch_size):
        x, m = images[i : i + batch_size], mats[i : i + batch_size]
        pred = model.predict(x.to(device) * 2 - 1).cpu()
        pred_g = model.predict(warp_images(x, m, size).to(device) * 2 - 1).cpu()
        errors.append((pred_g - apply_transform(pred, m)).norm(dim=-1).mean(-1))
    return float(torch.cat(errors).mean() / size)


def _errors(pred: Tensor, target: Tensor, train_pred: Tensor, train_target: Tensor, layout: LandmarkLayout):
    from wbaug import metrics

    norm = "inter_ocular" if layout.outer_eye_corners is not None else "bbox_diagonal"
    kwargs = {"normalization": norm, "layout": layout}
    pred, target = pred.double(), target.double()
    direct = float(metrics.nme(pred, target, **kwargs)) if pred.shape == target.shape else float("nan")
    return {
        "nme": direct,
        "ot_nme": float(metrics.ot_nme(pred, target, **kwargs)),
        "linear_probe_nme": float(
            metrics.linear_probe_nme(train_pred.double(), train_target.double(), pred, target, **kwargs)
        ),
    }


def evaluate_model(
    model: Any,
    data: Any,
    layout: LandmarkLayout | str,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
) -> dict[str, float]:
    """The module docstring's metrics for ``model`` on ``data`` (a :class:`zoo.brule.train.BruleData`)."""
    if isinstance(layout, str):
        layout = get_layout(layout)
    test = predict(model, data.test, device=device, batch_size=batch_size)
    train = predict(model, data.labelled.images, device=device, batch_size=batch_size)
    result = _errors(test["pred"], test["target"], train["pred"], train["target"], layout)
    bary = model.barycenter.detach().float().cpu()
    base = _errors(
        bary.expand(test["target"].shape[0], -1, -1),
        test["target"],
        bary.expand(train["target"].shape[0], -1, -1),
        train["target"],
        layout,
    )
    result.update({f"baseline_{k}": v for k, v in base.items()})
    result["stability"] = stability_score(model, test["images"], device=device, batch_size=batch_size)
    result["count"] = float(test["target"].shape[0])
    return result


@torch.no_grad()
def log_samples(
    model: Any,
    data: Any,
    logger: Any,
    step: int,
    *,
    n: int = 8,
    device: torch.device | str = "cpu",
    png_dir: str | Path | None = None,
) -> None:
    """Fig. 4/5-style grids: real test images with predicted landmarks (red; ground truth green when the
    counts match), and fakes ``G(L_sp(X), S_o(z))`` generated from the *same* landmarks with other styles."""
    from zoo.common import landmark_figure

    n = min(n, len(data.test))
    if n == 0:
        return
    device = torch.device(device)
    items = [data.test[i] for i in range(n)]
    images = torch.stack([it["image"] for it in items])
    target = torch.stack([it["landmarks"] for it in items])
    pred = model.predict(images.to(device) * 2 - 1)
    shown_target = target if target.shape == pred.shape else None
    fig = landmark_figure(images, pred.cpu(), shown_target, title=f"step {step}: predicted landmarks")
    logger.log_figure("real_predicted", fig, step, png_dir=png_dir)
    g = torch.Generator().manual_seed(step)
    z = torch.randn(n, model.z_dim, generator=g).to(device)
    was = model.training
    model.eval()
    noise = g if device.type == "cpu" else None  # never draw from the training's global RNG on CPU
    fakes = model.generate(model.sparse_heatmaps(pred), model.styles(z), generator=noise).float().cpu()
    model.train(was)
    fakes = ((fakes + 1) / 2).clamp(0, 1)
    fig = landmark_figure(fakes, pred.cpu(), title=f"step {step}: same landmarks, other styles")
    logger.log_figure("fakes_same_landmarks", fig, step, png_dir=png_dir)


def main(argv: Sequence[str] | None = None) -> dict:
    """Evaluate a checkpoint on the test split of its own config; ``--json`` writes the metrics."""
    from zoo.brule.config import BruleConfig
    from zoo.brule.train import build_data, build_model
    from zoo.common import config_from_dict, load_checkpoint, resolve_device

    parser = argparse.ArgumentParser(description="Evaluate a zoo.brule checkpoint (landmark encoder L).")
    parser.add_argument("--checkpoint", required=True, help="path to a checkpoint (e.g. .../last.pt)")
    parser.add_argument("--json", default=None, help="write the metrics to this JSON file")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda ...")
    args = parser.parse_args(list(argv) if argv is not None else None)
    path = Path(args.checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {str(path)!r} does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("config") is None or "barycenter" not in ckpt.get("model", {}):
        raise ValueError(f"--checkpoint {str(path)!r} is not a zoo.brule checkpoint")
    cfg = config_from_dict(BruleConfig, ckpt["config"])
    device = resolve_device(args.device)
    data = build_data(cfg)
    model = build_model(cfg, data.num_points, int(ckpt["model"]["barycenter"].shape[0]))
    load_checkpoint(path, model=model, restore_rng=False)
    model.to(device).eval()
    metrics = evaluate_model(
        model, data, cfg.data.layout, device=device, batch_size=cfg.train.eval_batch_size
    )
    result = {"checkpoint": str(path), "step": int(ckpt["step"]), "mode": cfg.loss.mode, **metrics}
    text = json.dumps(result, indent=2)
    if args.json:
        atomic_write_text(args.json, text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
