"""Command line: ``wbaug sample`` (Algorithm 2 on a landmark file) and ``wbaug demo`` (embedded data).

Examples::

    wbaug sample --input landmarks.npy --k 6 --n 7000 --out aug.npy --plot fig.png
    wbaug sample --input pts_folder/ --k 6 --epsilon 0.1 --correspondence index --save-sampler s.pt
    wbaug demo                      # 600 synthetic faces ->
    ./wbaug-demo/{augmented.npy,summary.json,density.png}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["main", "plot_densities", "run_sample"]


def _stack(points: torch.Tensor | list[torch.Tensor]) -> np.ndarray:
    if isinstance(points, torch.Tensor):
        return points.detach().cpu().reshape(-1, points.shape[-1]).numpy()
    return torch.cat([p.detach().cpu() for p in points]).numpy()


def plot_densities(
    original: torch.Tensor | list[torch.Tensor],
    augmented: torch.Tensor | list[torch.Tensor],
    path: str | Path,
    *,
    bins: int = 128,
    title: str | None = None,
) -> Path:
    """Save a figure like the paper's Fig. 4: landmark densities of the original (left) and augmented (right)
    sets as 2-D histograms on common axes (image coordinates, y down), log colour scale."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    a, b = _stack(original), _stack(augmented)
    if a.shape[1] < 2:
        raise ValueError("plot needs landmarks with at least 2 coordinates")
    both = np.concatenate([a[:, :2], b[:, :2]])
    lo, hi = both.min(0), both.max(0)
    pad = 0.02 * (hi - lo + 1e-9)
    rng = [[lo[0] - pad[0], hi[0] + pad[0]], [lo[1] - pad[1], hi[1] + pad[1]]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), constrained_layout=True)
    for ax, pts, name in (
        (axes[0], a, f"original ({len(a)} points)"),
        (axes[1], b, f"augmented ({len(b)} points)"),
    ):
        hist, xe, ye = np.histogram2d(pts[:, 0], pts[:, 1], bins=bins, range=rng, density=True)
        positive = hist[hist > 0]
        norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None
        ax.imshow(
            hist.T,
            origin="upper",
            extent=(xe[0], xe[-1], ye[-1], ye[0]),
            cmap="magma",
            norm=norm,
            aspect="equal",
            interpolation="nearest",
        )
        ax.set_title(name)
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _save_samples(samples: torch.Tensor | list[torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(samples, torch.Tensor):
        np.save(path, samples.detach().cpu().numpy())
        return path
    # ragged clouds: one array per set in an .npz (no pickled object arrays)
    target = path.with_suffix(".npz")
    np.savez(target, **{f"set_{i:06d}": s.detach().cpu().numpy() for i, s in enumerate(samples)})
    return target


def run_sample(
    landmarks: Any,
    *,
    k: int,
    n: int,
    epsilon: float | None = None,
    correspondence: str = "ot",
    concentration: float = 1.0,
    max_clique_size: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    plot: str | Path | None = None,
    save_sampler: str | Path | None = None,
    progress: bool = True,
    log=print,
) -> dict[str, Any]:
    """Fit a :class:`~wbaug.sampling.WassersteinBarycentricSampler`, sample ``n`` sets and write the outputs.

    Returns the summary dict (also printed through ``log``).
    """
    from wbaug.sampling import WassersteinBarycentricSampler

    sampler = WassersteinBarycentricSampler(
        k_neighbors=k,
        epsilon=epsilon,
        concentration=concentration,
        correspondence=correspondence,
        max_clique_size=max_clique_size,
        progress=progress,
    )
    t0 = time.perf_counter()
    sampler.fit(landmarks, progress=progress)
    fit_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    samples = sampler.sample(n, generator=g, progress=progress)
    sample_s = time.perf_counter() - t0
    m = sampler.n_landmark_sets_
    sizes = sampler.clique_sizes_.double()
    summary: dict[str, Any] = {
        "landmark_sets": m,
        "points_per_set": sampler.n_points_,
        "dims": sampler.n_dims_,
        "k_neighbors": k,
        "epsilon": epsilon,
        "correspondence": correspondence,
        "exact_w2_pairs": sampler.n_pairs_evaluated_,
        "all_pairs": m * (m - 1) // 2,
        "edges": sampler.graph_.number_of_edges(),
        "isolated_vertices": int(sum(1 for v in sampler.graph_.nodes if sampler.graph_.degree(v) == 0)),
        "cliques": len(sampler.cliques_),
        "clique_size_mean": float(sizes.mean()),
        "clique_size_max": int(sizes.max()),
        "samples": n,
        "fit_seconds": round(fit_s, 3),
        "sample_seconds": round(sample_s, 3),
    }
    if out is not None:
        summary["out"] = str(_save_samples(samples, Path(out)))
    if plot is not None:
        summary["plot"] = str(
            plot_densities(
                sampler.landmarks_, samples, plot, title=f"Wasserstein-barycentric sampling (k={k}, n={n})"
            )
        )
    if save_sampler is not None:
        sampler.save(save_sampler)
        summary["sampler"] = str(save_sampler)
    log(
        f"fitted {m} landmark sets in {fit_s:.2f}s: exact W2 on {summary['exact_w2_pairs']} of "
        f"{summary['all_pairs']} pairs, {summary['edges']} edges, {summary['cliques']} cliques (mean size "
        f"{summary['clique_size_mean']:.2f}, max {summary['clique_size_max']}), "
        f"{summary['isolated_vertices']} isolated; sampled {n} in {sample_s:.2f}s"
    )
    for key in ("out", "plot", "sampler"):
        if key in summary:
            log(f"  {key}: {summary[key]}")
    return summary


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wbaug", description="Optimal-transport data augmentation for landmarks"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, *, k: int, n: int) -> None:
        p.add_argument("--k", type=int, default=k, help=f"k of the kNN graph (default {k})")
        p.add_argument("--epsilon", type=float, default=None, help="W2 threshold (default: none)")
        p.add_argument("--n", type=_positive_int, default=n, help=f"number of sets to sample (default {n})")
        p.add_argument(
            "--correspondence",
            choices=["ot", "index"],
            default="ot",
            help="'ot': free-support barycenter (paper); 'index': landmark i stays landmark i",
        )
        p.add_argument("--concentration", type=float, default=1.0, help="Dirichlet concentration (default 1)")
        p.add_argument("--max-clique-size", type=int, default=None, help="split bigger cliques into subsets")
        p.add_argument("--seed", type=int, default=0, help="seed of the sampling generator (default 0)")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    s = sub.add_parser("sample", help="fit on a landmark file and sample new landmark sets")
    s.add_argument(
        "--input", required=True, help="landmarks: .npy/.npz (M, N, D), .csv, .pts or a folder of .pts"
    )
    s.add_argument("--out", default="augmented.npy", help="output .npy (ragged clouds: .npz)")
    s.add_argument("--plot", default=None, help="write the density figure (original vs augmented) here")
    s.add_argument("--save-sampler", default=None, help="save the fitted sampler (torch.save, weights_only)")
    s.add_argument("--summary", default=None, help="also write the summary as JSON here")
    common(s, k=6, n=7000)

    d = sub.add_parser("demo", help="run `sample` on embedded synthetic faces")
    d.add_argument("--out-dir", default="wbaug-demo", help="output folder (default ./wbaug-demo)")
    d.add_argument("--faces", type=_positive_int, default=600, help="synthetic faces to fit on (default 600)")
    common(d, k=6, n=3000)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wbaug`` console script. Returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    # options shared by `sample` and `demo`
    sampling = {
        "k": args.k,
        "n": args.n,
        "epsilon": args.epsilon,
        "correspondence": args.correspondence,
        "concentration": args.concentration,
        "max_clique_size": args.max_clique_size,
        "seed": args.seed,
        "progress": not args.no_progress,
    }
    try:
        if args.command == "sample":
            from wbaug.datasets import load_landmarks

            landmarks = load_landmarks(args.input)
            summary = run_sample(
                landmarks,
                **sampling,
                out=args.out,
                plot=args.plot,
                save_sampler=args.save_sampler,
            )
            if args.summary:
                Path(args.summary).write_text(json.dumps(summary, indent=2))
            return 0
        from wbaug.datasets import synthetic_faces

        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        faces = synthetic_faces(args.faces, generator=torch.Generator().manual_seed(args.seed))
        summary = run_sample(
            faces,
            **sampling,
            out=out_dir / "augmented.npy",
            plot=out_dir / "density.png",
            save_sampler=out_dir / "sampler.pt",
        )
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"  summary: {out_dir / 'summary.json'}")
        return 0
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"wbaug {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
