"""Exact discrete optimal-transport solvers on batches of small problems.

Two solvers cover every case exactly:

* uniform weights on two clouds of the same size ``N``: the optimal coupling is a permutation matrix
  divided by ``N`` (Birkhoff--von Neumann), found by a linear assignment solver, ``O(N^3)`` worst case:
  the compiled Jonker--Volgenant kernels of :mod:`wbaug.ot._jv` (numba, a hard dependency; 2.4-4.6x
  faster than scipy on 68-point problems: the whole batch loop runs without Python; scipy's
  :func:`~scipy.optimize.linear_sum_assignment` is only the tests' oracle). For ``p = 2`` every pair is
  first mapped to an equivalent, easier problem (centring + Bures whitening, :func:`_normalise_pair`) and
  a nearest-neighbour certificate skips the solver where it proves optimality;
* anything else (unequal sizes, non-uniform weights): POT's network simplex :func:`ot.emd`.

Both run on CPU in float64. Batches are split over a thread pool (the kernels and POT release the GIL
while they solve) of :func:`torch.get_num_threads` workers. Cost matrices are always built in float64
from the inputs, so CPU and CUDA inputs give bit-identical problems and the same optimal couplings.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from wbaug.ot._validation import as_points, check_p

__all__ = [
    "batched_emd",
    "batched_linear_sum_assignment",
    "ground_cost",
    "matched_assignment",
    "run_chunked",
    "solver_threads",
    "uniform_barycenter_matchings",
]

# below this many problems per worker, thread hand-off costs more than it saves
_MIN_PROBLEMS_PER_THREAD = 16
# problems per vectorised block inside a worker (bounds memory at O(_BLOCK * N^2) per worker)
_BLOCK = 64


def ground_cost(x: Tensor, y: Tensor, p: float = 2.0) -> Tensor:
    r"""Pairwise ground cost :math:`C_{ij} = \lVert x_i - y_j \rVert_2^p`.

    Args:
        x: ``(..., N, D)`` points.
        y: ``(..., M, D)`` points (batch shape broadcastable with ``x``).
        p: exponent ``>= 1``.

    Returns:
        ``(..., N, M)`` costs, differentiable in ``x`` and ``y``. For ``p != 2`` the gradient at coinciding
        points is taken as zero (a subgradient) instead of NaN.

    Raises:
        TypeError / ValueError: ``p`` not a finite number >= 1; ``x``/``y`` not floating, empty, NaN/inf or
            of different point dimensions.
    """
    p = check_p(p)
    x = as_points(x, "x")
    y = as_points(y, "y")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must have the same point dimension D, got {x.shape[-1]} and {y.shape[-1]}")
    return ground_cost_unchecked(x, y, p)


def ground_cost_unchecked(x: Tensor, y: Tensor, p: float = 2.0) -> Tensor:
    """:func:`ground_cost` without the argument checks, for callers that validated ``x``, ``y``, ``p``
    already (the solvers' inner loops; the checks cost ~10 % of a 64 x 68 x 68 cost block)."""
    # one coordinate at a time: peak memory O(N M) per problem instead of O(N M D)
    sq = None
    for k in range(x.shape[-1]):
        diff = x[..., :, None, k] - y[..., None, :, k]
        sq = diff * diff if sq is None else sq + diff * diff
    if p == 2.0:
        return sq
    tiny = torch.finfo(sq.dtype).tiny
    return torch.where(sq > 0, sq.clamp_min(tiny).pow(p / 2.0), torch.zeros_like(sq))


def exact_cost_matrix(x: Tensor, y: Tensor, p: float = 2.0) -> np.ndarray:
    """float64 NumPy cost matrices ``(..., N, M)`` used by the solvers (no autograd)."""
    with torch.no_grad():
        x64, y64 = x.detach().to(torch.float64), y.detach().to(torch.float64)
        return ground_cost_unchecked(x64, y64, p).cpu().numpy()


_EXECUTORS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _executor(workers: int) -> ThreadPoolExecutor:
    """A shared pool per (process, size). A forked child (e.g. a DataLoader worker) inherits the parent's
    pool object without its threads, so pools are keyed by the process id and rebuilt after a fork."""
    key = (os.getpid(), workers)
    pool = _EXECUTORS.get(key)
    if pool is None:
        for old in [k for k in _EXECUTORS if k[0] != key[0]]:
            del _EXECUTORS[old]
        pool = _EXECUTORS[key] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wbaug-ot")
    return pool


def _run_kernel(kernel, args: tuple, num_problems: int) -> None:
    """Run the nogil kernel ``kernel(*args, start, stop)`` over the thread pool; non-finite costs raise."""
    from wbaug.ot import _jv  # numba compiles on first use: keep `import wbaug` light
    statuses: list[int] = []

    def solve(start: int, stop: int) -> None:
        statuses.append(kernel(*args, start, stop))

    run_chunked(solve, num_problems)
    if _jv.NONFINITE in statuses:
        raise ValueError("assignment costs must be finite (got inf or NaN)")


_WORKERS_OVERRIDE: list[int] = []  # set by solver_threads(); innermost last


@contextmanager
def solver_threads(workers: int) -> Iterator[None]:
    """Within the block, batches are split over ``workers`` threads whatever :func:`torch.get_num_threads`
    says (e.g. torch ops on one thread while the compiled solvers use all cores)."""
    _WORKERS_OVERRIDE.append(max(1, int(workers)))
    try:
        yield
    finally:
        _WORKERS_OVERRIDE.pop()


def _num_workers(num_problems: int) -> int:
    workers = _WORKERS_OVERRIDE[-1] if _WORKERS_OVERRIDE else max(1, torch.get_num_threads())
    return max(1, min(workers, num_problems // _MIN_PROBLEMS_PER_THREAD))


def run_chunked(fn, num_problems: int) -> None:
    """Call ``fn(start, stop)`` over ``range(num_problems)`` split across the thread pool."""
    workers = _num_workers(num_problems)
    if workers == 1:
        fn(0, num_problems)
        return
    # several pieces per worker so that threads finishing early pick up more (problems differ in cost)
    step = max(_BLOCK, math.ceil(num_problems / (4 * workers)))
    futures = [
        _executor(workers).submit(fn, start, min(start + step, num_problems))
        for start in range(0, num_problems, step)
    ]
    for future in futures:
        future.result()


def batched_linear_sum_assignment(cost: np.ndarray) -> np.ndarray:
    r"""Solve ``P`` square assignment problems :math:`\min_\sigma \sum_i C_{i\sigma(i)}` exactly.

    Args:
        cost: ``(P, N, N)`` float array.

    Returns:
        ``(P, N)`` int64 array ``sigma`` with ``sigma[p, i]`` the column assigned to row ``i``.
    """
    from wbaug.ot import _jv  # numba compiles on first use: keep `import wbaug` light
    cost = np.ascontiguousarray(cost, dtype=np.float64)
    if cost.ndim != 3 or cost.shape[1] != cost.shape[2]:
        raise ValueError(f"cost must have shape (P, N, N), got {cost.shape}")
    num, n = cost.shape[0], cost.shape[1]
    out = np.empty((num, n), dtype=np.int64)
    _run_kernel(lambda c, o, lo, hi: _jv.solve_cost_range(c, o, lo, hi, True), (cost, out), num)
    return out


def batched_emd(a: np.ndarray, b: np.ndarray, cost: np.ndarray) -> np.ndarray:
    r"""Exact optimal couplings of ``P`` discrete problems by POT's network simplex.

    Solves :math:`\min_{T \ge 0,\ T1 = a,\ T^\top 1 = b} \langle T, C\rangle` for each problem.

    Args:
        a: ``(P, N)`` source weights (each row sums to one).
        b: ``(P, M)`` target weights (each row sums to one).
        cost: ``(P, N, M)`` costs.

    Returns:
        ``(P, N, M)`` float64 couplings.
    """
    import ot  # POT is imported where it is used: keep `import wbaug` light
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    cost = np.ascontiguousarray(cost, dtype=np.float64)
    # renormalise in float64 so the network simplex sees exactly balanced masses
    a = a / a.sum(-1, keepdims=True)
    b = b / b.sum(-1, keepdims=True)
    out = np.empty(cost.shape, dtype=np.float64)

    def solve(start: int, stop: int) -> None:
        for k in range(start, stop):
            out[k] = ot.emd(a[k], b[k], cost[k], numItermax=1_000_000)

    run_chunked(solve, cost.shape[0])
    return out


def _sq_cost_np(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(P, N, D), (P, M, D) -> (P, N, M)`` squared distances by direct differences (float64).

    Exact even for tiny distances (used when the cost is raised to ``p / 2 != 1``)."""
    xs = np.ascontiguousarray(x.transpose(0, 2, 1))
    ys = np.ascontiguousarray(y.transpose(0, 2, 1))
    cost = np.zeros((x.shape[0], x.shape[1], y.shape[1]))
    for k in range(x.shape[-1]):
        diff = xs[:, k, :, None] - ys[:, k, None, :]
        diff *= diff
        cost += diff
    return cost


def _spd_sqrt(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Square root and inverse square root of a stack of SPD matrices ``(b, D, D)``.

    Closed form for ``D = 2`` (``sqrt(S) = (S + sqrt(det S) I) / sqrt(tr S + 2 sqrt(det S))``), which is
    much cheaper than a batched eigendecomposition of tiny matrices; ``eigh`` otherwise."""
    if mat.shape[-1] == 2:
        a, b, d = mat[:, 0, 0], mat[:, 0, 1], mat[:, 1, 1]
        s = np.sqrt(np.maximum(a * d - b * b, 0.0))
        t = np.sqrt(a + d + 2.0 * s)
        root = np.empty_like(mat)
        root[:, 0, 0], root[:, 0, 1], root[:, 1, 0], root[:, 1, 1] = (a + s) / t, b / t, b / t, (d + s) / t
        inv = np.empty_like(mat)
        inv[:, 0, 0], inv[:, 1, 1] = root[:, 1, 1] / s, root[:, 0, 0] / s
        inv[:, 0, 1] = inv[:, 1, 0] = -root[:, 0, 1] / s
        return root, inv
    vals, vecs = np.linalg.eigh(mat)
    vals = np.maximum(vals, 1e-300)
    vt = vecs.transpose(0, 2, 1)
    return (vecs * np.sqrt(vals)[:, None, :]) @ vt, (vecs / np.sqrt(vals)[:, None, :]) @ vt


def _regularised(mat: np.ndarray, eps: float) -> np.ndarray:
    """``mat + eps * (tr(mat) / D) * I`` (identity where the trace is zero): symmetric positive definite."""
    d = mat.shape[-1]
    mat = 0.5 * (mat + mat.transpose(0, 2, 1))
    scale = np.trace(mat, axis1=1, axis2=2)[:, None, None] / d
    scale = np.where(scale > 0, scale, 1.0)
    return mat + eps * scale * np.eye(d)


def _normalise_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Map each pair to an equivalent, easier assignment problem (same optimal permutations).

    For uniform equal-size clouds and the squared Euclidean cost,
    :math:`\lVert x_i - y_j\rVert^2 = \lVert x_i\rVert^2 + \lVert y_j\rVert^2 - 2 x_i \cdot y_j`, so
    only :math:`\sum_i x_i \cdot y_{\sigma(i)}` depends on the permutation. It is unchanged, up to a
    constant, by centring either cloud (a cloud's points have a fixed sum) and by the map
    :math:`x \mapsto A^{1/2} x`, :math:`y \mapsto A^{-1/2} y` for any symmetric positive definite ``A``
    (:math:`A^{1/2}x \cdot A^{-1/2}y = x \cdot y`). With ``A`` the linear optimal-transport map between
    the clouds' Gaussian approximations (Bures), the transformed clouds have equal covariances, which
    absorbs translation, scale and anisotropic stretch and acts as a warm start for the solver. ``A`` is
    regularised towards a multiple of the identity (condition number at most ~2e3; still exact, since any
    SPD ``A`` works), which keeps the transformed costs as well conditioned as the raw ones.
    """
    n = x.shape[1]
    xc = x - x.mean(1, keepdims=True)
    yc = y - y.mean(1, keepdims=True)
    sx = _regularised(xc.transpose(0, 2, 1) @ xc / n, 1e-6)
    sy = _regularised(yc.transpose(0, 2, 1) @ yc / n, 1e-6)
    sx_h, sx_ih = _spd_sqrt(sx)
    mid, _ = _spd_sqrt(_regularised(sx_h @ sy @ sx_h, 1e-12))
    a_h, a_ih = _spd_sqrt(_regularised(sx_ih @ mid @ sx_ih, 1e-3))
    return xc @ a_h, yc @ a_ih


def _unique_pairs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first occurrence of every distinct ``(x[k], y[k])`` pair, and the inverse map."""
    rows = np.ascontiguousarray(np.concatenate([x.reshape(len(x), -1), y.reshape(len(y), -1)], 1))
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def matched_assignment(
    x: np.ndarray, y: np.ndarray, *, p: float = 2.0, block: int = _BLOCK, dedupe: bool = False
) -> np.ndarray:
    r"""Optimal assignments between ``P`` pairs of equal-size clouds under the cost ``||x_i - y_j||^p``.

    Builds the cost matrices block by block inside the worker threads (NumPy releases the GIL too), so
    peak memory stays ``O(workers * block * N^2)`` whatever ``P``. For ``p = 2`` each pair is first centred
    and scaled (see :func:`_normalise_pair`; the optimal assignments do not change). Exact, like
    :func:`batched_linear_sum_assignment` on :math:`C_{ij} = \lVert x_i - y_j\rVert^2`.

    Args:
        x: ``(P, N, D)`` float64 rows.
        y: ``(P, N, D)`` float64 columns.
        p: exponent of the ground cost.
        block: problems per cost-matrix block.
        dedupe: solve bit-identical problems once (worth it when many repeat, e.g. the first barycenter
            iteration of cliques sampled with replacement).

    Returns:
        ``(P, N)`` int64 ``sigma`` with ``y[p, sigma[p, i]]`` matched to ``x[p, i]``.
    """
    from wbaug.ot import _jv  # numba compiles on first use: keep `import wbaug` light
    num, n = x.shape[0], x.shape[1]
    if dedupe and num > 1:
        first, inverse = _unique_pairs(x, y)
        if first.size < num:
            return matched_assignment(x[first], y[first], p=p, block=block)[inverse]
    out = np.empty((num, n), dtype=np.int64)
    if num == 0:
        return out
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    if p == 2.0:
        in_kernel = x.shape[2] == 2  # the kernel centres and whitens 2-D pairs itself, without allocations
        if not in_kernel:
            x, y = _normalise_pair(x, y)
        _run_kernel(
            lambda a, b, o, lo, hi: _jv.solve_clouds_range(a, b, o, lo, hi, in_kernel), (x, y, out), num
        )
        return out

    def solve(start: int, stop: int) -> None:
        for lo in range(start, stop, block):
            hi = min(lo + block, stop)
            cost = np.ascontiguousarray(_sq_cost_np(x[lo:hi], y[lo:hi]) ** (p / 2.0))
            if _jv.solve_cost_range(cost, out[lo:hi], 0, hi - lo, True) == _jv.NONFINITE:
                raise ValueError("assignment costs must be finite (got inf or NaN)")

    run_chunked(solve, num)
    return out


def uniform_barycenter_matchings(
    y: np.ndarray, w: np.ndarray, x0: np.ndarray, active_clouds: np.ndarray, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Free-support barycenter fixed point of uniform equal-size clouds, every iteration inside the
    compiled kernel (:func:`wbaug.ot._jv.barycenter_range`, one call per thread).

    Args:
        y: ``(B, K, N, D)`` float64 clouds (masked ones zeroed).
        w: ``(B, K)`` float64 weights (zero for masked clouds).
        x0: ``(B, N, D)`` initial support.
        active_clouds: ``(B, K)`` bool, clouds that take part (mask and positive weight).
        max_iter, tol: fixed-point iterations and squared-displacement tolerance.

    Returns:
        the final support ``(B, N, D)``, matchings ``sigma (B, K, N)`` (identity for clouds that do not
        take part) and the largest number of iterations run.
    """
    from wbaug.ot import _jv  # numba compiles on first use: keep `import wbaug` light
    bsz, ncl, n, _ = y.shape
    y = np.ascontiguousarray(y, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    active = np.ascontiguousarray(active_clouds, dtype=np.bool_)
    x = np.array(x0, dtype=np.float64, order="C")
    # the identity on entry; no deduplication of the first round here: solving repeated problems in the
    # kernel measured faster (7000 k-NN cliques of faces: 0.43 s) than finding them first (0.48-0.81 s)
    sigma = np.ascontiguousarray(np.broadcast_to(np.arange(n), (bsz, ncl, n)))
    iterations = np.zeros(bsz, dtype=np.int64)
    _run_kernel(_jv.barycenter_range, (y, w, active, x, sigma, max_iter, float(tol), iterations), bsz)
    return x, sigma, int(iterations.max(initial=0))
