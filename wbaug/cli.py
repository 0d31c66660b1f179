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
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wbaug.io_atomic import atomic_write, atomic_write_text

if TYPE_CHECKING:
    import numpy as np
    import torch

# numpy, torch and the rest of wbaug are imported inside the functions that use them, so that
# `wbaug --help` and argument errors answer without paying for `import torch`.

__all__ = ["SAMPLE_FORMATS", "check_figure_path", "main", "plot_densities", "resolve_output", "run_sample"]


def _stack(points: torch.Tensor | list[torch.Tensor]) -> np.ndarray:
    import torch

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
    sets as 2-D histograms on common axes (image coordinates, y down), one logarithmic colour scale for
    both panels (three decades below the larger peak) with a colour bar, so they are comparable.

    The format follows ``path``'s suffix (``.png``, ``.pdf``, ``.svg``, ...); the file is replaced
    atomically (:func:`wbaug.io_atomic.atomic_write`). Returns ``Path(path)``.
    """
    import numpy as np

    fmt = check_figure_path(path)
    # matplotlib's object API on an Agg canvas: no pyplot, so the caller's backend and figures are untouched
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    a, b = _stack(original), _stack(augmented)
    if a.shape[1] < 2:
        raise ValueError("plot needs landmarks with at least 2 coordinates")
    both = np.concatenate([a[:, :2], b[:, :2]])
    lo, hi = both.min(0), both.max(0)
    pad = 0.02 * (hi - lo + 1e-9)
    rng = [[lo[0] - pad[0], hi[0] + pad[0]], [lo[1] - pad[1], hi[1] + pad[1]]]
    fig = Figure(figsize=(11, 5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    panels = [
        (axes[0], a, f"original ({len(a)} points)"),
        (axes[1], b, f"augmented ({len(b)} points)"),
    ]
    # both panels are probability densities on one grid: one colour scale makes them comparable
    hists = [np.histogram2d(pts[:, 0], pts[:, 1], bins=bins, range=rng, density=True) for _, pts, _ in panels]
    top = max(float(h.max()) for h, _, _ in hists)
    norm = LogNorm(vmin=top * 1e-3, vmax=top, clip=True) if top > 0 else None
    for (ax, _, name), (hist, xe, ye) in zip(panels, hists):
        image = ax.imshow(
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
    fig.colorbar(image, ax=list(axes), label="density (shared log scale)")
    if title:
        fig.suptitle(title)
    with atomic_write(path) as fh:
        fig.savefig(fh, dpi=120, format=fmt)
    return Path(path)


def check_figure_path(path: str | Path) -> str:
    """The matplotlib format of a figure path (its suffix), checked before any work is done.

    Raises:
        ValueError: unsupported suffix, or ``path`` is a symbolic link or a directory.
    """
    from matplotlib.backend_bases import FigureCanvasBase

    p = _check_output_path(path, "plot")
    fmt = p.suffix[1:].lower()
    supported = FigureCanvasBase.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(
            f"plot: unsupported figure type {p.suffix!r} in {str(p)!r}; expected one of "
            f"{sorted('.' + k for k in supported)}"
        )
    return fmt


SAMPLE_FORMATS = (".npy", ".npz", ".csv", ".pts")


def _check_output_path(path: str | Path, what: str) -> Path:
    """``path`` as a ``Path`` whose parent exists or can be created, that is not a link or a folder."""
    p = Path(path)
    if p.is_symlink():
        raise ValueError(f"{what}: {str(p)!r} is a symbolic link; refusing to write through or replace it")
    if p.is_dir():
        raise ValueError(f"{what}: {str(p)!r} is a directory; expected a file path")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: cannot create {str(p)!r} (folder {str(parent)!r} is not writable)")
    return p


def resolve_output(out: str | Path, *, ragged: bool = False, n: int = 1) -> Path:
    """The file ``wbaug sample --out`` writes, decided (and checked) before fitting.

    * ``x.npy`` -> ``x.npy`` (ragged sets: ``x.npz``, one array per set);
    * ``x.npz`` -> arrays ``landmarks`` ``(n, N, D)`` (ragged: ``set_000000``, ...);
    * ``x.csv`` -> one set per row ``x0,y0,x1,y1,...`` (what :func:`~wbaug.datasets.load_landmarks` reads);
    * ``x.pts`` -> one iBUG ``.pts`` file (needs ``n == 1``);
    * an existing folder (or a path ending in ``/``) -> ``<folder>/augmented.npy``;
    * no suffix -> ``.npy`` appended.

    Raises:
        ValueError: unsupported suffix, ``.pts`` with ``n > 1``, a symlink target, an unwritable folder.
    """
    text = str(out)
    p = Path(out)
    if text.endswith(("/", os.sep)) or (p.is_dir() and not p.is_symlink()):
        p = p / "augmented.npy"
    elif p.suffix == "":
        p = p.with_name(p.name + ".npy")
    suffix = p.suffix.lower()
    if suffix not in SAMPLE_FORMATS:
        raise ValueError(
            f"out: unsupported file type {p.suffix!r} in {text!r}; expected one of {SAMPLE_FORMATS}"
        )
    if suffix == ".npy" and ragged:
        p = p.with_suffix(".npz")
    if suffix == ".pts" and n != 1:
        raise ValueError(
            f"out: a .pts file holds one landmark set but n={n}; use .npy, .npz or .csv for several sets"
        )
    return _check_output_path(p, "out")


def _save_samples(samples: torch.Tensor | list[torch.Tensor], path: Path) -> Path:
    """Write ``samples`` to ``path`` (already resolved by :func:`resolve_output`), keeping their dtype."""
    import numpy as np
    import torch

    from wbaug.datasets.io import write_pts

    sets = [s.detach().cpu().numpy() for s in samples]
    suffix = path.suffix.lower()
    if suffix == ".pts":
        if len(sets) != 1:
            raise ValueError(f"out: a .pts file holds one landmark set, got {len(sets)}")
        return write_pts(path, sets[0])
    if suffix == ".csv":
        fmt = "{:.17g}" if sets and sets[0].dtype == np.float64 else "{:.9g}"
        text = "".join(",".join(fmt.format(v) for v in s.reshape(-1).tolist()) + "\n" for s in sets)
        return atomic_write_text(path, text)
    with atomic_write(path) as fh:
        if suffix == ".npy":
            np.save(fh, samples.detach().cpu().numpy())
        elif isinstance(samples, torch.Tensor):
            np.savez(fh, landmarks=samples.detach().cpu().numpy())
        else:  # ragged clouds: one array per set (no pickled object arrays)
            np.savez(fh, **{f"set_{i:06d}": s for i, s in enumerate(sets)})
    return path


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
    progress: bool | None = None,
    log=print,
) -> dict[str, Any]:
    """Fit a :class:`~wbaug.sampling.WassersteinBarycentricSampler`, sample ``n`` sets and write the outputs.

    Every output path is checked before fitting (:func:`resolve_output`, :func:`check_figure_path`); the
    summary's ``"out"`` is the file really written. Samples keep the dtype of ``landmarks``.

    Returns the summary dict (also printed through ``log``).
    """
    import numpy as np
    import torch

    from wbaug.sampling import WassersteinBarycentricSampler

    ragged = isinstance(landmarks, (list, tuple)) and len({int(np.shape(c)[0]) for c in landmarks}) > 1
    out_path = None
    if out is not None:
        out_path = resolve_output(out, ragged=ragged, n=n)
    if plot is not None:
        check_figure_path(plot)
    if save_sampler is not None:
        _check_output_path(save_sampler, "save_sampler")

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
    if out_path is not None:
        summary["out"] = str(_save_samples(samples, out_path))
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
    s.add_argument(
        "--out",
        default="augmented.npy",
        help="output file: .npy (ragged clouds: .npz), .npz, .csv (one set per row), .pts (n=1); a folder "
        "gets augmented.npy; no suffix gets .npy. The real path is printed and recorded",
    )
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
        "progress": False if args.no_progress else None,  # None: bars only on a terminal
    }
    try:
        if args.command == "sample":
            from wbaug.datasets import load_landmarks

            if args.summary:
                _check_output_path(args.summary, "summary")
            landmarks = load_landmarks(args.input, dtype=None)
            summary = run_sample(
                landmarks,
                **sampling,
                out=args.out,
                plot=args.plot,
                save_sampler=args.save_sampler,
            )
            if args.summary:
                atomic_write_text(args.summary, json.dumps(summary, indent=2) + "\n")
            return 0
        import torch

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
        atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        print(f"  summary: {out_dir / 'summary.json'}")
        return 0
    except (ValueError, TypeError, OSError) as err:
        print(f"wbaug {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
