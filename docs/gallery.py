"""Regenerate the documentation gallery from the package (nothing hand-made, no third-party images).

    python docs/gallery.py                      # writes docs/figures/gallery/*.png (~20 s on 2 cores)
    python docs/gallery.py --out /tmp/gallery   # elsewhere

Figures: a clique of faces and its barycenter (the paper's Fig. 3), original vs augmented landmark
densities on one colour scale (Fig. 4), a paired thin-plate-spline warp before/after, and the
neighbourhood graph of a small set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from wbaug import WassersteinBarycentricSampler, synthetic_faces
from wbaug.datasets import SyntheticFaces
from wbaug.datasets.render import render_faces
from wbaug.io_atomic import atomic_write
from wbaug.metrics import landmark_density
from wbaug.sampling import sample_dirichlet
from wbaug.transforms import apply_barycentric, draw_barycentric_params

SIZE = 256


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    with atomic_write(path) as fh:
        fig.savefig(fh, dpi=110, format="png")
    return path


def _face_sampler(m: int, seed: int = 0) -> tuple[torch.Tensor, WassersteinBarycentricSampler]:
    faces = synthetic_faces(m, generator=torch.Generator().manual_seed(seed), image_size=SIZE)
    return faces, WassersteinBarycentricSampler(k_neighbors=6).fit(faces, canvas_size=(SIZE, SIZE))


def clique_figure(out: Path, faces: torch.Tensor, sampler: WassersteinBarycentricSampler) -> Path:
    """Fig. 3: the members of one maximal clique and barycenters with three weight vectors; every face is
    rendered with the same colours, so only the geometry differs."""
    clique = max(sampler.cliques_, key=len)[:4]
    members = faces[list(clique)]
    mask = torch.ones(2, len(clique), dtype=torch.bool)
    drawn = sample_dirichlet(1.0, mask, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    weights = [torch.full((len(clique),), 1.0 / len(clique)), *drawn]
    barycenters = torch.stack([(w[:, None, None] * members).sum(0) for w in weights])
    shapes = torch.cat([members, barycenters])
    images = torch.stack(
        [render_faces(s, SIZE, generator=torch.Generator().manual_seed(3), noise=0.0) for s in shapes]
    )
    fig = Figure(figsize=(2.2 * len(shapes), 2.6), layout="constrained")
    for i, (img, pts) in enumerate(zip(images, shapes)):
        ax = fig.add_subplot(1, len(shapes), i + 1)
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.scatter(pts[:, 0], pts[:, 1], s=3, c="cyan")
        if i < len(clique):
            ax.set_title(f"member {clique[i]}", fontsize=9)
        else:
            w = weights[i - len(clique)]
            ax.set_title("λ = (" + ", ".join(f"{float(x):.2f}" for x in w) + ")", fontsize=8)
        ax.axis("off")
    fig.suptitle("A maximal clique of the ε + kNN graph (left) and W2 barycenters of it (right)")
    return _save(fig, out / "clique.png")


def density_figure(out: Path, faces: torch.Tensor, sampler: WassersteinBarycentricSampler) -> Path:
    """Fig. 4: pooled landmark densities of the originals and of the barycentric samples, on one grid and
    one (log) colour scale with a colour bar, so the panels are comparable."""
    new = sampler.sample(10 * len(faces), generator=torch.Generator().manual_seed(1))
    original, grid = landmark_density(faces, bins=96, smoothing=0.5)
    augmented, _ = landmark_density(new, bins=96, range=grid, smoothing=0.5)
    top = float(torch.maximum(original.max(), augmented.max()))
    norm = LogNorm(vmin=top * 1e-3, vmax=top, clip=True)  # three decades: the smoothing tails are noise
    (x0, x1), (y0, y1) = grid
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    panels = (
        (axes[0], original, f"original ({len(faces)} sets)"),
        (axes[1], augmented, f"augmented ({len(new)})"),
    )
    for ax, dens, name in panels:
        image = ax.imshow(dens.numpy(), origin="upper", extent=(x0, x1, y1, y0), cmap="magma", norm=norm)
        ax.set_title(name)
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
    fig.colorbar(image, ax=axes, label="probability per bin (shared scale)")
    return _save(fig, out / "density.png")


def warp_figure(out: Path, faces: torch.Tensor, sampler: WassersteinBarycentricSampler) -> Path:
    """The paired warp: an embedded face before and after, the landmarks moving from old to new."""
    dataset = SyntheticFaces(8, image_size=SIZE)
    sample = dataset[5]
    image, old = sample["image"], sample["landmarks"]
    draw = draw_barycentric_params(
        sampler, old, p=1.0, paired=True, canvas_size=(SIZE, SIZE), generator=torch.Generator().manual_seed(4)
    )
    warped = apply_barycentric(image, draw)
    new = draw.landmarks[0]
    fig = Figure(figsize=(10, 5), layout="constrained")
    for i, (img, pts, title) in enumerate(((image, old, "before"), (warped, new, "after (paired TPS warp)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.scatter(pts[:, 0], pts[:, 1], s=6, c="cyan")
        if i == 1:
            d = (new - old).numpy()
            o = old.numpy()
            ax.quiver(
                o[:, 0], o[:, 1], d[:, 0], d[:, 1], angles="xy", scale_units="xy", scale=1, color="yellow"
            )
        ax.set_title(title)
        ax.axis("off")
    return _save(fig, out / "tps_warp.png")


def graph_figure(out: Path) -> Path:
    """The ε + kNN graph of 40 faces (k = 3), laid out by classical MDS of their exact W2 distances; the
    largest maximal clique highlighted."""
    faces = synthetic_faces(40, generator=torch.Generator().manual_seed(2), image_size=SIZE)
    sampler = WassersteinBarycentricSampler(k_neighbors=3, knn_method="brute").fit(faces)
    d2 = sampler.distances_.to(torch.float64) ** 2
    n = d2.shape[0]
    centre = torch.eye(n, dtype=torch.float64) - 1.0 / n
    gram = -0.5 * centre @ d2 @ centre
    vals, vecs = torch.linalg.eigh(gram)
    xy = (vecs[:, -2:] * vals[-2:].clamp_min(0).sqrt()).numpy()
    clique = max(sampler.cliques_, key=len)
    fig = Figure(figsize=(6, 5.5), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for a, b in sampler.graph_.edges():
        inside = a in clique and b in clique
        ax.plot(*np.stack([xy[a], xy[b]]).T, color="crimson" if inside else "0.6", lw=2 if inside else 0.8)
    ax.scatter(xy[:, 0], xy[:, 1], s=25, c=["crimson" if i in clique else "0.2" for i in range(n)], zorder=3)
    ax.set_title(f"kNN graph (k = 3) of 40 faces; a maximal clique of {len(clique)} in red")
    ax.set_xlabel("MDS axis 1 (px)")
    ax.set_ylabel("MDS axis 2 (px)")
    return _save(fig, out / "graph.png")


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "figures" / "gallery"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    faces, sampler = _face_sampler(300)
    paths = [figure(out, faces, sampler) for figure in (clique_figure, density_figure, warp_figure)]
    paths.append(graph_figure(out))
    for p in paths:
        print(p)
    return paths


if __name__ == "__main__":
    main()
