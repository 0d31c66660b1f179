"""Training data of "Learning to Generate Wasserstein Barycenters" (Sec. 3.2): CSG shape contours.

A shape starts as a random filled primitive (ellipse, triangle, rectangle or thick line) and is combined
``d`` times with a fresh primitive by a random boolean operator (OR, AND, XOR, NOT = "and not"); ``d``
follows the paper's mixture ``(U(0, 50) + N(0, 2.5) + N(50, 2.5)) / 3`` (one of the three components
chosen uniformly, rounded and clamped to ``[0, 50]``), which favours very simple and very complex
shapes. A Sobel filter turns the mask into a contour, normalised into a probability density.

Pairs ``(a_1, a_2)`` with weights ``(lambda, 1 - lambda)``, ``lambda ~ U(0, 1)``, get a solver barycenter as
target (``wbaug.grid``: convolutional, debiased or the paper's linearised one-step barycenter).
Everything is drawn from explicit ``torch.Generator`` objects; datasets can be cached with ``torch.save``
and reloaded with ``weights_only=True``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from wbaug.grid import convolutional_barycenter, debiased_barycenter, linearized_barycenter
from wbaug.grid.linearized import transport_maps_from_uniform
from wbaug.io_atomic import atomic_write
from wbaug.sampling import sample_dirichlet
from zoo.common.logging import progress

__all__ = [
    "OPERATORS",
    "PRIMITIVES",
    "TARGETS",
    "PairDataset",
    "build_eval_sets",
    "build_kway_set",
    "build_pair_set",
    "build_training_set",
    "load_or_build",
    "random_contours",
    "random_shape",
    "sample_depth",
    "shape_maps",
    "sobel_contour",
    "square_symmetry",
    "uniform_self_map",
    "solver_barycenter",
]

PRIMITIVES = ("ellipse", "triangle", "rectangle", "line")
OPERATORS = ("or", "and", "xor", "not")


def _u(generator: torch.Generator | None, lo: float = 0.0, hi: float = 1.0, n: int = 1) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)


def sample_depth(generator: torch.Generator | None = None, max_depth: int = 50) -> int:
    """Number of boolean combinations ``d ~ (U(0, D) + N(0, 2.5) + N(D, 2.5)) / 3``, in ``[0, D]``."""
    comp = int(torch.randint(3, (1,), generator=generator))
    if comp == 0:
        d = float(_u(generator, 0.0, max_depth))
    else:
        d = (0.0 if comp == 1 else float(max_depth)) + 2.5 * float(torch.randn(1, generator=generator))
    return int(min(max(round(d), 0), max_depth))


def _grid(size: int) -> tuple[Tensor, Tensor]:
    t = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    return xx, yy


def _rotate(x: Tensor, y: Tensor, cx: float, cy: float, angle: float) -> tuple[Tensor, Tensor]:
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = x - cx, y - cy
    return c * dx + s * dy, -s * dx + c * dy


def _primitive(kind: str, size: int, generator: torch.Generator | None) -> Tensor:
    """Filled primitive as a ``(size, size)`` bool mask on the unit square."""
    xx, yy = _grid(size)
    cx, cy = (float(v) for v in _u(generator, 0.15, 0.85, 2))
    angle = float(_u(generator, 0.0, math.pi))
    if kind == "ellipse":
        ax, ay = (float(v) for v in _u(generator, 0.05, 0.35, 2))
        u, v = _rotate(xx, yy, cx, cy, angle)
        return (u / ax) ** 2 + (v / ay) ** 2 <= 1.0
    if kind == "rectangle":
        hx, hy = (float(v) for v in _u(generator, 0.04, 0.3, 2))
        u, v = _rotate(xx, yy, cx, cy, angle)
        return (u.abs() <= hx) & (v.abs() <= hy)
    if kind == "triangle":
        pts = _u(generator, 0.05, 0.95, 6).reshape(3, 2)
        signs = []
        for i in range(3):
            (x0, y0), (x1, y1) = pts[i].tolist(), pts[(i + 1) % 3].tolist()
            signs.append((x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0))
        s = torch.stack(signs)
        return (s >= 0).all(0) | (s <= 0).all(0)
    if kind == "line":
        x0, y0, x1, y1 = (float(v) for v in _u(generator, 0.05, 0.95, 4))
        width = float(_u(generator, 1.0, 3.0)) / size
        dx, dy = x1 - x0, y1 - y0
        seg2 = max(dx * dx + dy * dy, 1e-12)
        t = (((xx - x0) * dx + (yy - y0) * dy) / seg2).clamp(0.0, 1.0)
        return (xx - x0 - t * dx) ** 2 + (yy - y0 - t * dy) ** 2 <= width**2
    raise ValueError(f"kind must be one of {PRIMITIVES}, got {kind!r}")


def _combine(a: Tensor, b: Tensor, op: str) -> Tensor:
    if op == "or":
        return a | b
    if op == "and":
        return a & b
    if op == "xor":
        return a ^ b
    if op == "not":
        return a & ~b
    raise ValueError(f"op must be one of {OPERATORS}, got {op!r}")


def random_shape(
    size: int, *, depth: int | None = None, generator: torch.Generator | None = None, max_depth: int = 50
) -> Tensor:
    """A random CSG shape: ``(size, size)`` bool mask, never empty.

    Args:
        size: grid side in pixels.
        depth: number of combinations ``d``; ``None`` draws it with :func:`sample_depth`.
        generator: random source.
        max_depth: upper end of the depth mixture (the paper: 50).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    d = sample_depth(generator, max_depth) if depth is None else int(depth)
    if d < 0:
        raise ValueError(f"depth must be >= 0, got {depth!r}")

    def prim() -> Tensor:
        return _primitive(PRIMITIVES[int(torch.randint(4, (1,), generator=generator))], size, generator)

    shape = prim()
    for _ in range(d):
        new = _combine(shape, prim(), OPERATORS[int(torch.randint(4, (1,), generator=generator))])
        if new.sum() >= 4:  # an operator that erases the shape is skipped (the paper's shapes are non-empty)
            shape = new
    return shape


def sobel_contour(mask: Tensor) -> Tensor:
    """Sobel gradient magnitude of ``(..., H, W)`` masks, normalised to unit mass: contour densities."""
    x = mask.to(torch.float32).reshape(-1, 1, *mask.shape[-2:])
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    k = torch.stack([kx, kx.t()])[:, None]
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)
    mag = g.pow(2).sum(1).sqrt()
    mag = mag / mag.sum(dim=(-1, -2), keepdim=True).clamp_min(1e-12)
    return mag.reshape(mask.shape)


def random_contours(
    n: int, size: int, *, generator: torch.Generator | None = None, max_depth: int = 50
) -> Tensor:
    """``(n, size, size)`` float32 contour densities of random CSG shapes (each sums to one)."""
    out = []
    while len(out) < n:
        c = sobel_contour(random_shape(size, generator=generator, max_depth=max_depth))
        if torch.isfinite(c).all() and c.sum() > 0.5:
            out.append(c)
    return torch.stack(out)


TARGETS = ("convolutional", "debiased", "linearized")


def _check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    return target


def _pixel_reg(reg: float, size: int) -> float:
    """``reg`` in POT's normalised units (axes span [0, 1]) expressed in pixels (``reg * (size - 1)^2``)."""
    return reg * (size - 1) ** 2


def shape_maps(bank: Tensor, *, reg: float = 4e-3, chunk: int = 64, show_progress: bool = False) -> Tensor:
    """Entropic transport maps from the uniform grid measure to every shape: ``(M, H, W) -> (M, H, W, 2)``.

    The paper's trick (Sec. 3.2): maps depend on one shape only, so a bank of ``M`` shapes costs ``M``
    Sinkhorn solves and any number of weighted k-way targets is then a weighted average of maps plus a
    bilinear splat. ``reg`` is in normalised units, as in :func:`solver_barycenter`. float64 maps, on
    ``bank``'s device; ``show_progress`` draws a bar per chunk (512² maps take seconds each on a CPU).
    """
    size = bank.shape[-1]
    out = []
    with progress(total=bank.shape[0], enabled=show_progress, desc="transport maps", unit="shape") as bar:
        for s in range(0, bank.shape[0], chunk):
            part = bank[s : s + chunk].double()
            out.append(transport_maps_from_uniform(part, reg=_pixel_reg(reg, size), tol=1e-6))
            bar.update(part.shape[0])
    return torch.cat(out)


def uniform_self_map(size: int, *, reg: float = 4e-3, device: str | torch.device = "cpu") -> Tensor:
    """``T_0 (size, size, 2)`` float64: the uniform grid measure's entropic map to itself, the debiasing term
    of the linearised barycenter (one Sinkhorn solve, shared by every barycenter on this grid and ``reg``).
    """
    uniform = torch.ones(1, size, size, dtype=torch.float64, device=device)
    return transport_maps_from_uniform(uniform, reg=_pixel_reg(reg, size), tol=1e-6)[0]


def solver_barycenter(
    densities: Tensor,
    weights: Tensor,
    *,
    target: str = "linearized",
    reg: float = 4e-3,
    chunk: int = 64,
    maps: Tensor | None = None,
) -> Tensor:
    """Solver barycenters used as targets, computed in chunks: ``(B, K, H, W), (B, K) -> (B, H, W)``.

    ``reg`` is in POT's normalised units; ``"linearized"`` (the paper's one-step Sinkhorn-divergence
    barycenter) converts it to pixels (``reg * (H - 1)^2``) and accepts precomputed ``maps (B, K, H, W, 2)``
    (see :func:`shape_maps`). Results are renormalised to exactly unit mass (float32).
    """
    _check_target(target)
    outs = []
    h = densities.shape[-2]
    if target == "linearized":  # solved once here, not once per chunk inside linearized_barycenter
        self_map = uniform_self_map(h, reg=reg, device=densities.device)
    for s in range(0, densities.shape[0], chunk):
        d, w = densities[s : s + chunk].double(), weights[s : s + chunk].double()
        if target == "convolutional":
            b = convolutional_barycenter(d, w, reg=reg, tol=1e-4)
        elif target == "debiased":
            b = debiased_barycenter(d, w, reg=reg, tol=1e-4)
        else:
            m = None if maps is None else maps[s : s + chunk]
            b = linearized_barycenter(d, w, reg=_pixel_reg(reg, h), maps=m, self_map=self_map)
        outs.append((b / b.sum(dim=(-1, -2), keepdim=True)).float())
    return torch.cat(outs)


def build_kway_set(
    bank: Tensor,
    n: int,
    k: int,
    *,
    generator: torch.Generator | None = None,
    target: str = "linearized",
    reg: float = 4e-3,
    concentration: float = 1.0,
    bank_maps: Tensor | None = None,
) -> dict[str, Tensor]:
    """``n`` problems of ``k`` distinct shapes from ``bank (M, H, W)``, Dirichlet weights, solver targets.

    For ``target="linearized"`` the maps of the bank (``bank_maps (M, H, W, 2)``, computed here with
    :func:`shape_maps` when not given) are reused across problems, so ``n`` can be much larger than ``M``.

    Returns ``{"inputs": (n, k, H, W), "weights": (n, k), "target": (n, H, W)}``.
    """
    _check_target(target)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if bank.ndim != 3 or bank.shape[0] < k:
        raise ValueError(f"bank must be (M, H, W) with at least k={k} shapes, got {tuple(bank.shape)}")
    idx = torch.stack([torch.randperm(bank.shape[0], generator=generator)[:k] for _ in range(n)])
    weights = sample_dirichlet(
        concentration, torch.ones(n, k, dtype=torch.bool), generator=generator, dtype=torch.float32
    )
    inputs = bank[idx]
    maps = None
    if target == "linearized":
        if bank_maps is None:
            used = idx.unique()  # only the shapes these problems draw
            bank_maps = torch.zeros(*bank.shape, 2, dtype=torch.float64)
            bank_maps[used] = shape_maps(bank[used], reg=reg)
        elif bank_maps.shape != (*bank.shape, 2):
            raise ValueError(f"bank_maps must have shape {(*bank.shape, 2)}, got {tuple(bank_maps.shape)}")
        maps = bank_maps[idx]
    return {
        "inputs": inputs,
        "weights": weights,
        "target": solver_barycenter(inputs, weights, target=target, reg=reg, maps=maps),
    }


def build_pair_set(
    n_shapes: int,
    n_pairs: int,
    size: int,
    *,
    generator: torch.Generator | None = None,
    target: str = "linearized",
    reg: float = 4e-3,
    max_depth: int = 50,
) -> dict[str, Tensor]:
    """The paper's recipe at any resolution: ``n_shapes`` contours, ``n_pairs`` weighted pairs + targets.

    Weights are ``(lambda, 1 - lambda)`` with ``lambda ~ U(0, 1)`` (Dirichlet(1, 1)).
    """
    bank = random_contours(n_shapes, size, generator=generator, max_depth=max_depth)
    return build_kway_set(bank, n_pairs, 2, generator=generator, target=target, reg=reg)


def load_or_build(path: str | os.PathLike | None, builder, **kwargs) -> dict[str, Tensor]:
    """Load a cached set from ``path`` (``weights_only=True``), else build, save and return it.

    The cache key is the caller's responsibility (encode the settings in the file name).
    """
    if path is not None and Path(path).exists():
        data = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(data, dict) or not {"inputs", "weights", "target"} <= set(data):
            raise ValueError(f"path {str(path)!r} is not a barycenter pair cache")
        return data
    data = builder(**kwargs)
    if path is not None:
        with atomic_write(path) as fh:
            torch.save(data, fh)
    return data


class PairDataset(torch.utils.data.Dataset):
    """``(inputs (K, H, W), weights (K,), target (H, W))`` samples of a built set, with optional symmetries.

    Items are plain indices, or the ``(index, sample_seed)`` pairs yielded by
    :class:`zoo.common.ShardedEpochSampler`. With ``augment=True`` and a sample seed, the sample is mapped by
    one of the 8 symmetries of the square (flips and transposes commute with the barycenter on a square
    grid, so targets stay exact), chosen by ``sample_seed % 8``: deterministic per ``(seed, epoch, index)``
    and independent of the number of DataLoader workers.
    """

    def __init__(self, data: dict[str, Tensor], *, augment: bool = False) -> None:
        self.inputs, self.weights, self.target = data["inputs"], data["weights"], data["target"]
        if self.inputs.shape[-1] != self.inputs.shape[-2] and augment:
            raise ValueError("augment=True needs square grids (transposes are among the symmetries)")
        self.augment = augment

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        i, seed = item if isinstance(item, tuple) else (item, None)
        x, w, t = self.inputs[i], self.weights[i], self.target[i]
        if self.augment and seed is not None:
            x, t = square_symmetry(x, t, seed % 8)
        return x, w, t


def square_symmetry(inputs: Tensor, target: Tensor, code: int) -> tuple[Tensor, Tensor]:
    """Apply symmetry ``code`` in ``0..7`` of the square (bit 0: flip x, bit 1: flip y, bit 2: transpose) to
    ``inputs (..., H, W)`` and ``target (H, W)`` alike; barycenters commute with these maps."""
    if code & 1:
        inputs, target = inputs.flip(-1), target.flip(-1)
    if code & 2:
        inputs, target = inputs.flip(-2), target.flip(-2)
    if code & 4:
        inputs, target = inputs.transpose(-1, -2), target.transpose(-1, -2)
    return inputs, target


def _cache_path(cache_dir: str | None, name: str) -> Path | None:
    return None if cache_dir is None else Path(cache_dir) / f"{name}.pt"


def build_training_set(
    *,
    size: int,
    num_shapes: int,
    num_pairs: int,
    target: str = "linearized",
    reg: float = 4e-3,
    max_depth: int = 50,
    seed: int = 0,
    cache_dir: str | None = None,
) -> dict[str, Tensor]:
    """The paper's training set at any resolution: ``num_pairs`` weighted pairs of ``num_shapes`` shapes.

    Reproducible from ``seed``; cached in ``cache_dir`` under a name that encodes every setting.
    """
    name = f"train_s{size}_m{num_shapes}_p{num_pairs}_{target}_r{reg:g}_d{max_depth}_seed{seed}"

    def build() -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(seed)
        return build_pair_set(
            num_shapes, num_pairs, size, generator=g, target=target, reg=reg, max_depth=max_depth
        )

    return load_or_build(_cache_path(cache_dir, name), build)


def build_eval_sets(
    *,
    size: int,
    num_shapes: int,
    num_problems: int,
    ways: tuple[int, ...] = (2, 3, 5),
    target: str = "linearized",
    reg: float = 4e-3,
    max_depth: int = 50,
    seed: int = 0,
    cache_dir: str | None = None,
    device: str | torch.device = "cpu",
    show_progress: bool = False,
) -> dict[int, dict[str, Tensor]]:
    """Held-out ``k``-way problems for every ``k`` in ``ways``, from shapes drawn with a separate stream.

    The held-out bank uses seed ``seed + 1_000_003``, so none of its shapes are training shapes (up to
    the chance of an identical random shape); transport maps of the bank are computed once (on
    ``device``) and shared by all ``k``.
    """
    shared: dict[str, Tensor | None] = {}

    def build(k: int) -> dict[str, Tensor]:
        if not shared:  # the bank and its maps are built at most once, and only when a cache entry is missing
            g = torch.Generator().manual_seed(seed + 1_000_003)
            shared["bank"] = random_contours(num_shapes, size, generator=g, max_depth=max_depth)
            if target == "linearized":  # the Sinkhorn solves run on `device`
                maps = shape_maps(shared["bank"].to(device), reg=reg, show_progress=show_progress)
                shared["maps"] = maps.cpu()
            else:
                shared["maps"] = None
        gk = torch.Generator().manual_seed(seed + 1_000_003 + k)
        return build_kway_set(
            shared["bank"], num_problems, k, generator=gk, target=target, reg=reg, bank_maps=shared["maps"]
        )

    out = {}
    for k in ways:
        name = f"eval_s{size}_m{num_shapes}_n{num_problems}_k{k}_{target}_r{reg:g}_d{max_depth}_seed{seed}"
        out[k] = load_or_build(_cache_path(cache_dir, name), lambda k=k: build(k))
    return out
