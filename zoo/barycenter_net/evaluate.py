r"""Evaluate a BarycenterNet: KL and L1 against solver barycenters for 2-, 3- and 5-way problems, and timing.

::

    python -m zoo.barycenter_net.evaluate --checkpoint runs/bn/checkpoints/last.pt
    python -m zoo.barycenter_net.evaluate --checkpoint runs/bn/checkpoints/last.pt --ways 2,3,5,10 --timing

Errors per problem (target ``t`` = solver barycenter, prediction ``p``, both unit mass on the grid):

.. math:: \mathrm{KL}(t \,\|\, p) = \sum_x t(x) \log\frac{t(x)}{p(x)}, \qquad L_1 = \sum_x |t(x) - p(x)|,

as in Fig. 4 of *Learning to Generate Wasserstein Barycenters*. As a floor for the L1 error, the same is
reported for the Euclidean mixture :math:`\sum_k \lambda_k a_k` (what a network that ignored transport
would output). Timing compares the network (one forward per batch) with the solver that made the targets
(from scratch, transport maps included), both in ms per barycenter on the same device.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from wbaug.io_atomic import atomic_write_text
from zoo.barycenter_net.config import BarycenterNetConfig
from zoo.barycenter_net.data import build_eval_sets, solver_barycenter
from zoo.barycenter_net.model import BarycenterNet
from zoo.common import autocast, config_from_dict, read_checkpoint, resolve_device

__all__ = [
    "barycenter_figure",
    "build_model",
    "evaluate_model",
    "kl_divergence",
    "l1_distance",
    "load_model",
    "main",
    "time_barycenters",
]


def build_model(cfg: BarycenterNetConfig) -> BarycenterNet:
    """The network described by ``cfg.model``."""
    return BarycenterNet(width=cfg.model.width, depth=cfg.model.depth, max_width=cfg.model.max_width)


def load_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[BarycenterNet, BarycenterNetConfig]:
    """Rebuild a trained network from a checkpoint (its resolved config travels inside it)."""
    ckpt = read_checkpoint(path, require_rng=False)
    if ckpt.get("config") is None:
        raise ValueError(f"{path}: checkpoint has no config (saved without config=...)")
    cfg = config_from_dict(BarycenterNetConfig, ckpt["config"])
    model = build_model(cfg)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg


def kl_divergence(target: Tensor, log_pred: Tensor) -> Tensor:
    r"""``KL(target || pred)`` per problem: ``(B, H, W), (B, H, W) -> (B,)`` with ``0 log 0 = 0``.

    Takes the *log* prediction (the network's ``log=True`` output) so that pixels where the softmax
    underflows do not turn into ``inf``.
    """
    t = target.float()
    log_t = torch.where(t > 0, t.clamp_min(torch.finfo(t.dtype).tiny).log(), torch.zeros_like(t))
    return (t * (log_t - log_pred.float())).sum(dim=(-1, -2))


def l1_distance(target: Tensor, pred: Tensor) -> Tensor:
    """``sum_x |target - pred|`` per problem: ``(B, H, W), (B, H, W) -> (B,)`` (in ``[0, 2]``)."""
    return (target.float() - pred.float()).abs().sum(dim=(-1, -2))


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    sets: dict[int, dict[str, Tensor]],
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    amp: bool = False,
) -> dict[str, float]:
    """Mean KL and L1 of ``model`` on every ``k``-way set (keys ``kl_2``, ``l1_2``, ``l1_mix_2`` ...).

    Args:
        model: a :class:`BarycenterNet` (any ``K`` works with the shared contractive path).
        sets: ``{k: {"inputs": (n, k, H, W), "weights": (n, k), "target": (n, H, W)}}``.
        batch_size: problems per forward.
        device: where the network runs.
        amp: bf16 autocast on CUDA.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    for k, data in sets.items():
        kl, l1, l1_mix = [], [], []
        for s in range(0, data["inputs"].shape[0], batch_size):
            x = data["inputs"][s : s + batch_size].to(device)
            w = data["weights"][s : s + batch_size].to(device)
            t = data["target"][s : s + batch_size].to(device)
            with autocast(device, amp):
                log_p = model(x, w, log=True)
            kl.append(kl_divergence(t, log_p))
            l1.append(l1_distance(t, log_p.exp()))
            l1_mix.append(l1_distance(t, (w[..., None, None] * x).sum(1)))
        out[f"kl_{k}"] = float(torch.cat(kl).mean())
        out[f"l1_{k}"] = float(torch.cat(l1).mean())
        out[f"l1_mix_{k}"] = float(torch.cat(l1_mix).mean())
    model.train(was_training)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_barycenters(
    model: torch.nn.Module,
    data: dict[str, Tensor],
    *,
    target: str,
    reg: float,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    repeats: int = 3,
    amp: bool = False,
) -> dict[str, float]:
    """Milliseconds per barycenter: the network (batched and one at a time) vs the target solver.

    The solver runs from scratch (transport maps included) on the same device, in float64 as in
    :func:`~zoo.barycenter_net.data.solver_barycenter`. Best of ``repeats`` after a warm-up.
    """
    device = torch.device(device)
    model.eval()
    n = min(batch_size, data["inputs"].shape[0])
    x, w = data["inputs"][:n].to(device), data["weights"][:n].to(device)

    def best(fn) -> float:
        fn()
        _sync(device)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
        return min(times)

    def net_batch() -> None:
        with autocast(device, amp):
            model(x, w)

    def net_single() -> None:
        with autocast(device, amp):
            model(x[:1], w[:1])

    def solver() -> None:
        solver_barycenter(x[:1], w[:1], target=target, reg=reg)

    return {
        "net_ms_batched": 1e3 * best(net_batch) / n,
        "net_ms_single": 1e3 * best(net_single),
        "solver_ms": 1e3 * best(solver),
    }


def barycenter_figure(data: dict[str, Tensor], pred: Tensor, *, n: int = 4, title: str | None = None) -> Any:
    """Rows of ``inputs (with weights) | solver target | network prediction`` for the first ``n`` problems.

    Drawn with matplotlib's object API on an Agg canvas (headless, no global state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = min(n, pred.shape[0])
    k = data["inputs"].shape[1]
    fig = Figure(figsize=(1.6 * (k + 2), 1.6 * n + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, k + 2, squeeze=False)
    for r in range(n):
        panels = [(data["inputs"][r, i], f"λ={float(data['weights'][r, i]):.2f}") for i in range(k)]
        panels += [(data["target"][r], "solver"), (pred[r], "network")]
        for c, (img, label) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img.detach().float().cpu().numpy(), cmap="magma")
            ax.set_title(label, fontsize=8)
            ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Evaluate a trained BarycenterNet (wbaug zoo).")
    parser.add_argument(
        "--checkpoint", required=True, help="a checkpoint written by zoo.barycenter_net.train"
    )
    parser.add_argument("--ways", default=None, help="comma-separated numbers of inputs (default: config)")
    parser.add_argument("--num-problems", type=int, default=None, help="problems per k (default: config)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 | mps")
    parser.add_argument("--timing", action="store_true", help="also time the network against the solver")
    parser.add_argument("--out", default=None, help="write the metrics as JSON here")
    args = parser.parse_args(list(argv) if argv is not None else None)
    device = resolve_device(args.device)
    model, cfg = load_model(args.checkpoint, device)
    ways = tuple(int(v) for v in args.ways.split(",")) if args.ways else cfg.eval.ways
    d, e = cfg.data, cfg.eval
    sets = build_eval_sets(
        size=d.size,
        num_shapes=e.num_shapes,
        num_problems=args.num_problems or e.num_problems,
        ways=ways,
        target=d.target,
        reg=d.reg,
        max_depth=d.max_depth,
        seed=d.data_seed,
        cache_dir=d.cache_dir,
        device=device,
    )
    amp = cfg.train.amp and device.type == "cuda"
    metrics: dict[str, Any] = evaluate_model(model, sets, batch_size=e.batch_size, device=device, amp=amp)
    if args.timing:
        metrics.update(
            time_barycenters(
                model,
                sets[ways[0]],
                target=d.target,
                reg=d.reg,
                device=device,
                batch_size=e.batch_size,
                amp=amp,
            )
        )
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    return metrics


if __name__ == "__main__":
    main()
