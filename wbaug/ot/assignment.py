"""Exact discrete optimal-transport solvers on batches of small problems.

Two solvers cover every case exactly:

* uniform weights on two clouds of the same size ``N``: the optimal coupling is a permutation matrix
  divided by ``N`` (Birkhoff--von Neumann), found by a linear assignment solver, ``O(N^3)`` worst case:
  our compiled Jonker--Volgenant kernels (:mod:`wbaug.ot._jv`, numba; 2.4-4.6x faster than scipy on
  68-point problems: the whole batch loop runs without Python), or
  :func:`scipy.optimize.linear_sum_assignment` when numba is not installed or
  ``WBAUG_ASSIGNMENT_SOLVER=scipy`` is set. For ``p = 2`` every pair is first mapped to an equivalent,
  easier problem (centring + Bures whitening, :func:`_normalise_pair`) and a nearest-neighbour
  certificate skips the solver where it proves optimality (:func:`_solve_block`);
* anything else (unequal sizes, non-uniform weights): POT's network simplex :func:`ot.emd`.

Both run on CPU in float64. Batches are split over a thread pool (the kernels, scipy and POT release
the GIL while they solve) of :func:`torch.get_num_threads` workers. Cost matrices are always built in
float64 from the inputs, so CPU and CUDA inputs give bit-identical problems and the same optimal
couplings. Both assignment solvers are exact, so they return the same optimal cost; on ties (several
optimal permutations) they may pick different ones.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import ot
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from wbaug.ot._validation import as_points, check_p

try:  # numba is a dependency, but scipy keeps everything working where it cannot be installed
    from wbaug.ot import _jv
except ImportError:  # pragma: no cover - exercised only without numba
    _jv = None

__all__ = ["batched_emd", "batched_linear_sum_assignment", "ground_cost", "matched_assignment"]

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


def _use_jv() -> bool:
    """Whether the compiled kernels solve assignments (read per call: the variable can change at run time)."""
    choice = os.environ.get("WBAUG_ASSIGNMENT_SOLVER", "auto").lower()
    if choice not in ("auto", "numba", "scipy"):
        raise ValueError(f"WBAUG_ASSIGNMENT_SOLVER must be 'auto', 'numba' or 'scipy', got {choice!r}")
    if choice == "numba" and _jv is None:
        raise ValueError("WBAUG_ASSIGNMENT_SOLVER=numba but numba is not installed")
    return _jv is not None and choice != "scipy"


def _run_kernel(kernel, args: tuple, num_problems: int) -> None:
    """Run the nogil kernel ``kernel(*args, start, stop)`` over the thread pool; non-finite costs raise."""
    statuses: list[int] = []

    def solve(start: int, stop: int) -> None:
        statuses.append(kernel(*args, start, stop))

    _run_chunked(solve, num_problems)
    if _jv.NONFINITE in statuses:
        raise ValueError("assignment costs must be finite (got inf or NaN)")


def _num_workers(num_problems: int) -> int:
    workers = max(1, torch.get_num_threads())
    return max(1, min(workers, num_problems // _MIN_PROBLEMS_PER_THREAD))


def _run_chunked(fn, num_problems: int) -> None:
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
    cost = np.ascontiguousarray(cost, dtype=np.float64)
    if cost.ndim != 3 or cost.shape[1] != cost.shape[2]:
        raise ValueError(f"cost must have shape (P, N, N), got {cost.shape}")
    num, n = cost.shape[0], cost.shape[1]
    out = np.empty((num, n), dtype=np.int64)
    if _use_jv():
        _run_kernel(lambda c, o, lo, hi: _jv.solve_cost_range(c, o, lo, hi, True), (cost, out), num)
        return out

    def solve(start: int, stop: int) -> None:
        for lo in range(start, stop, _BLOCK):
            _solve_block(cost[lo : min(lo + _BLOCK, stop)], out[lo : min(lo + _BLOCK, stop)])

    _run_chunked(solve, num)
    return out


def _solve_block(cost: np.ndarray, out: np.ndarray) -> None:
    """Fill ``out (b, N)`` with optimal assignments of ``cost (b, N, N)``.

    Fast path with an exact certificate: when the row-wise nearest columns form a permutation, that
    permutation is optimal (the duals ``u_i = min_j C_ij``, ``v = 0`` are feasible and tight on it). Only
    the remaining problems go to the shortest-augmenting-path solver. (Row constants left out of
    ``cost`` change neither the certificate nor the solution.)
    """
    n = cost.shape[1]
    row_best = cost.argmin(2)
    row_ok = (np.sort(row_best, axis=1) == np.arange(n)).all(1)
    out[row_ok] = row_best[row_ok]
    for k in np.nonzero(~row_ok)[0]:
        out[k] = linear_sum_assignment(cost[k])[1]


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

    _run_chunked(solve, cost.shape[0])
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


def _cross_cost_np(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared-distance costs without their row constant, ``||y_j||^2 - 2 x_i . y_j`` ``(P, N, M)``.

    Dropping the row constant changes no assignment; one batched matrix product is ~10x faster than
    broadcasting differences."""
    cost = np.matmul(x, y.transpose(0, 2, 1))
    cost *= -2.0
    cost += (y * y).sum(-1)[:, None, :]
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
    num, n = x.shape[0], x.shape[1]
    if dedupe and num > 1:
        first, inverse = _unique_pairs(x, y)
        if first.size < num:
            return matched_assignment(x[first], y[first], p=p, block=block)[inverse]
    out = np.empty((num, n), dtype=np.int64)
    if num == 0:
        return out
    if p == 2.0 and _use_jv():
        x = np.ascontiguousarray(x, dtype=np.float64)
        y = np.ascontiguousarray(y, dtype=np.float64)
        in_kernel = x.shape[2] == 2  # the kernel centres and whitens 2-D pairs itself, without allocations
        if not in_kernel:
            x, y = _normalise_pair(x, y)
        _run_kernel(
            lambda a, b, o, lo, hi: _jv.solve_clouds_range(a, b, o, lo, hi, in_kernel), (x, y, out), num
        )
        return out
    if p == 2.0:
        x, y = _normalise_pair(x, y)  # one vectorised pass over all problems

    def solve(start: int, stop: int) -> None:
        for lo in range(start, stop, block):
            hi = min(lo + block, stop)
            if p == 2.0:
                _solve_block(_cross_cost_np(x[lo:hi], y[lo:hi]), out[lo:hi])
            elif _use_jv():
                cost = np.ascontiguousarray(_sq_cost_np(x[lo:hi], y[lo:hi]) ** (p / 2.0))
                if _jv.solve_cost_range(cost, out[lo:hi], 0, hi - lo, True) == _jv.NONFINITE:
                    raise ValueError("assignment costs must be finite (got inf or NaN)")
            else:
                _solve_block(_sq_cost_np(x[lo:hi], y[lo:hi]) ** (p / 2.0), out[lo:hi])

    _run_chunked(solve, num)
    return out
