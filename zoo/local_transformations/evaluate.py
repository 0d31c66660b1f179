r"""Evaluate a learned-local-transformations checkpoint on held-out clips (Chrysos et al. 2018, §4.3-4.4).

::

    python -m zoo.local_transformations.evaluate \
        --checkpoint runs/lt/checkpoints/last.pt --json runs/lt/eval.json

Metrics (pixel L1 on the ``[0, 1]`` scale, held-out clips and their SSIM-band pairs):

* ``recon_l1``: Stage I autoencoder reconstruction ``‖f^I_d(f^I_e(i)) − i‖₁``; ``pca_recon_l1``: the same
  for a PCA with ``d`` components fitted on the training frames;
* ``pred_l1``: next-frame prediction (eq. 10) ``‖î^{(t+x)} − i^{(t+x)}‖₁``; ``pca_pred_l1``: the linear
  counterpart of §4.4 (PCA of the training frames + the same ridge regression of Stage II on the PCA
  coefficients, then back to pixels); ``identity_pred_l1``: predicting "no change" (the source frame);
  ``oracle_latent_pred_l1``: the generator fed the later frame's own latent (what a perfect ``A`` would
  give: separates the errors of Stage II and Stage III);
* ``pred_ssim`` (mean SSIM of the prediction to its source) and ``pred_ssim_pass`` (share >= 0.4, the
  rule of §4.5);
* ``latent_cumulative_variance``: per held-out clip, a PCA of its latents ``f^I_e(i^{(t)})`` and the
  cumulative explained-variance ratio, averaged over clips (Fig. 4); ``latent_components_90``: the
  components needed for 90 %; ``pixel_*`` the same on raw pixels for comparison.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from wbaug.io_atomic import atomic_write_text
from wbaug.transforms import fit_transition, ssim_score

__all__ = ["cumulative_variance", "evaluate_nets", "log_samples", "main", "pca_baseline", "variance_figure"]

PCA_MAX_FRAMES = 4096  # frames / pairs used to fit the PCA baseline (evenly spaced)
EVAL_MAX_PAIRS = 4096  # held-out pairs scored (evenly spaced)


def _stack_frames(dataset: Any, limit: int | None = None) -> Tensor:
    return torch.stack([dataset[i] for i in _spread(len(dataset), limit)])


def _spread(n: int, limit: int | None) -> list[int]:
    if limit is None or n <= limit:
        return list(range(n))
    return torch.linspace(0, n - 1, limit).round().long().unique().tolist()


def _stack_pairs(dataset: Any, limit: int | None = None) -> tuple[Tensor, Tensor]:
    items = [dataset[i] for i in _spread(len(dataset), limit)]
    return torch.stack([s for s, _ in items]), torch.stack([t for _, t in items])


@torch.no_grad()
def _batched(fn: Any, *tensors: Tensor, batch_size: int, device: torch.device) -> Tensor:
    outs = []
    for start in range(0, tensors[0].shape[0], batch_size):
        outs.append(fn(*(t[start : start + batch_size].to(device) for t in tensors)).float().cpu())
    return torch.cat(outs)


def cumulative_variance(samples: Tensor, components: int) -> Tensor:
    """Cumulative explained-variance ratio of a PCA of ``samples`` ``(T, D)``: ``(components,)``, padded
    with 1 beyond the rank (a constant clip counts as fully explained)."""
    x = samples.double() - samples.double().mean(0)
    var = torch.linalg.svdvals(x).square()
    total = var.sum()
    out = torch.ones(components, dtype=torch.float64)
    if total > 0:
        ratio = (var / total).cumsum(0)[:components]
        out[: ratio.numel()] = ratio
    return out


def pca_baseline(
    train_frames: Tensor, train_pairs: tuple[Tensor, Tensor], components: int, ridge: float
) -> dict[str, Tensor]:
    """The linear counterpart of §4.4: PCA basis ``(D, k)`` and mean ``(D,)`` of the training frames, and
    the ridge map ``A_pca`` ``(k, k + 1)`` between the coefficients of the training pairs."""
    x = train_frames.flatten(1).double()
    mean = x.mean(0)
    k = max(1, min(components, x.shape[0] - 1, x.shape[1]))
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    basis = vh[:k].t()
    src = (train_pairs[0].flatten(1).double() - mean) @ basis
    tgt = (train_pairs[1].flatten(1).double() - mean) @ basis
    return {"mean": mean, "basis": basis, "transition": fit_transition(src, tgt, ridge)}


def _l1(a: Tensor, b: Tensor) -> float:
    return float((a.float() - b.float()).abs().mean() / 2)  # [-1, 1] images → the [0, 1] scale


@torch.no_grad()
def evaluate_nets(
    nets: Any, data: Any, cfg: Any, *, device: torch.device | str = "cpu", full: bool = True
) -> dict:
    """The metrics of the module docstring (``full=False``: only the network metrics, for periodic
    evaluation during training). Networks are evaluated in eval mode; their modes are restored."""
    device = torch.device(device)
    modes = {name: m.training for name, m in nets.named_modules()}
    nets.eval()
    bs = cfg.train.eval_batch_size
    frames = _stack_frames(data.test_frames)
    src, tgt = _stack_pairs(data.test_pair_set, EVAL_MAX_PAIRS)
    recon = _batched(lambda x: nets.decoder(nets.encoder(x)), frames, batch_size=bs, device=device)
    pred = _batched(nets.model.step, src, batch_size=bs, device=device)
    out: dict[str, Any] = {
        "recon_l1": _l1(recon, frames),
        "pred_l1": _l1(pred, tgt),
        "identity_pred_l1": _l1(src, tgt),
        "test_frames": float(frames.shape[0]),
        "test_pairs": float(src.shape[0]),
    }
    if full:
        # diagnostic: the generator given the later frame's own latent instead of A's regression
        oracle = _batched(
            lambda a, b: nets.model.synthesize(nets.encoder(b), a), src, tgt, batch_size=bs, device=device
        )
        out["oracle_latent_pred_l1"] = _l1(oracle, tgt)
        ssim = ssim_score((pred + 1) / 2, (src + 1) / 2, window=cfg.data.ssim_window)
        out["pred_ssim"] = float(ssim.mean())
        out["pred_ssim_pass"] = float((ssim >= 0.4).double().mean())
        d = cfg.model.latent_dim
        pca = pca_baseline(
            _stack_frames(data.frames, PCA_MAX_FRAMES),
            _stack_pairs(data.pairs, PCA_MAX_FRAMES),
            d,
            cfg.loss.lambda_2,
        )
        mean, basis, a = pca["mean"], pca["basis"], pca["transition"]

        def project(x: Tensor) -> Tensor:
            return (x.flatten(1).double() - mean) @ basis

        def back(c: Tensor, like: Tensor) -> Tensor:
            return (c @ basis.t() + mean).view_as(like).clamp(-1, 1)

        out["pca_components"] = float(basis.shape[1])
        out["pca_recon_l1"] = _l1(back(project(frames), frames), frames)
        coeff = project(src)
        out["pca_pred_l1"] = _l1(back(coeff @ a[:, :-1].t() + a[:, -1], tgt), tgt)
        k = d
        lat, pix = [], []
        for clip in data.test_clips:
            x = clip.float() / 127.5 - 1
            lat.append(cumulative_variance(_batched(nets.encoder, x, batch_size=bs, device=device), k))
            pix.append(cumulative_variance(x.flatten(1), k))
        for name, curves in (("latent", lat), ("pixel", pix)):
            curve = torch.stack(curves).mean(0)
            out[f"{name}_cumulative_variance"] = [round(float(v), 6) for v in curve]
            above = (curve >= 0.9).nonzero()
            out[f"{name}_components_90"] = float(above[0, 0] + 1) if above.numel() else float("nan")
    for name, m in nets.named_modules():
        m.train(modes[name])
    return out


@torch.no_grad()
def log_samples(
    nets: Any,
    data: Any,
    logger: Any,
    step: int,
    *,
    stage: str,
    cfg: Any,
    device: torch.device | str = "cpu",
    png_dir: str | Path | None = None,
) -> None:
    """A figure of held-out frames: during Stage I input | reconstruction, afterwards input | k iterated
    predictions (eq. 10, Fig. 5 of the paper)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from torchvision.utils import make_grid

    n = min(cfg.train.sample_images, len(data.test_frames))
    if n == 0:
        return
    modes = {name: m.training for name, m in nets.named_modules()}
    nets.eval()
    idx = torch.linspace(0, len(data.test_frames) - 1, n).round().long()
    x = torch.stack([data.test_frames[int(i)] for i in idx]).to(device)
    if stage == "stage1":
        cols = [x, nets.decoder(nets.encoder(x))]
        title = f"step {step}: input | Stage I reconstruction"
    else:
        cols = [x, *nets.model(x, cfg.train.sample_iterations, return_all=True)]
        title = f"step {step}: input | iterated predictions k = 1..{cfg.train.sample_iterations}"
    for name, m in nets.named_modules():
        m.train(modes[name])
    grid = torch.stack(cols, 1).flatten(0, 1).float().cpu()
    grid = make_grid((grid + 1) / 2, nrow=len(cols), padding=1).clamp(0, 1)
    fig = Figure(figsize=(1.2 * len(cols), 1.2 * n), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid.permute(1, 2, 0).numpy())
    ax.set_axis_off()
    ax.set_title(title, fontsize=7)
    fig.tight_layout()
    logger.log_figure("samples", fig, step, png_dir=png_dir)


def variance_figure(metrics: dict) -> Any:
    """Fig. 4 of the paper: the average per-clip cumulative explained-variance ratio of the latents (and of
    the raw pixels, for comparison) against the number of components."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.0, 3.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, style in (("latent", "-"), ("pixel", "--")):
        curve = metrics.get(f"{name}_cumulative_variance")
        if curve:
            ax.plot(range(1, len(curve) + 1), curve, style, label=f"{name}s")
    ax.axhline(0.9, color="grey", linewidth=0.5)
    ax.set_xlabel("components")
    ax.set_ylabel("cumulative explained variance")
    ax.set_ylim(0, 1.02)
    ax.legend()
    fig.tight_layout()
    return fig


def load_run(checkpoint: str | Path, *, device: str = "cpu") -> tuple[Any, Any, dict]:
    """``(nets, cfg, checkpoint dict)`` from a training checkpoint (``weights_only=True``)."""
    from zoo.common import config_from_dict, read_checkpoint
    from zoo.local_transformations.config import LocalTransformationsConfig
    from zoo.local_transformations.train import build_model

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {str(path)!r} does not exist")
    ckpt = read_checkpoint(path, require_rng=False)
    if not ckpt.get("config"):
        raise ValueError(f"{path}: the checkpoint holds no config")
    cfg = config_from_dict(LocalTransformationsConfig, ckpt["config"])
    nets = build_model(cfg)
    nets.load_state_dict(ckpt["model"])
    return nets.to(device).eval(), cfg, ckpt


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: ``--checkpoint PATH [--json OUT] [--device cpu]``; prints and returns the metrics."""
    from zoo.local_transformations.data import build_data

    parser = argparse.ArgumentParser(description="Evaluate a learned-local-transformations checkpoint.")
    parser.add_argument("--checkpoint", required=True, help="training checkpoint (…/checkpoints/last.pt)")
    parser.add_argument("--json", default=None, help="write the metrics to this JSON file (atomically)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:1")
    parser.add_argument("--figure", default=None, help="save the per-clip variance plot (Fig. 4) here")
    args = parser.parse_args(list(argv) if argv is not None else None)
    nets, cfg, ckpt = load_run(args.checkpoint, device=args.device)
    data = build_data(cfg)
    metrics = {
        "step": ckpt["step"],
        "stage": ckpt.get("extra", {}).get("stage"),
        **evaluate_nets(nets, data, cfg, device=args.device),
    }
    text = json.dumps(metrics, indent=2, default=float)
    if args.json:
        atomic_write_text(args.json, text + "\n")
    if args.figure:
        from zoo.common import save_figure

        save_figure(variance_figure(metrics), args.figure)
    print(text)
    return metrics


if __name__ == "__main__":
    main()
