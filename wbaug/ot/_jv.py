r"""Exact batched linear assignment for many small dense problems (numba LAPJV).

:func:`scipy.optimize.linear_sum_assignment` spends 20-80 us on a 68x68 problem: a Python call per problem
and a shortest-augmenting-path search from a cold start for every row. Here the whole batch loop runs in
one compiled kernel (no GIL, no per-problem Python) and each problem is solved by the Jonker--Volgenant
algorithm (Jonker & Volgenant 1987, "A shortest augmenting path algorithm for dense and sparse linear
assignment problems"):

0. *row minima* ``u_i = min_j C_ij`` (and the nearest-neighbour certificate, see below);
1. *column reduction* on the row-reduced costs: ``v_j = min_i (C_ij - u_i)``; each column is tentatively
   given to its best row (row-reducing first is not in the original; it matters for costs known only up
   to a row constant, such as ``||y_j||^2 - 2 x_i . y_j``);
2. *reduction transfer*: rows that got exactly one column move their slack to that column's price;
3. *augmenting row reduction* (two passes, bounded): free rows grab their best column, bumping its
   owner, while prices drop by the gap to the second-best column (an auction-like heuristic);
4. *shortest augmenting path* (Dijkstra on reduced costs ``C_ij - v_j``) for every row still free.

Invariant kept throughout (and what makes the result exact): every assigned row is assigned to a column
minimising its reduced cost ``C_ij - v_j``. Step 4 augments along shortest paths and updates the prices
of the scanned columns so that the invariant survives; when no row is free the assignment is optimal
with duals ``u_i = min_j (C_ij - v_j)``, ``v``.

Floating point. Comparisons are the standard epsilon-free ones; the loops cannot be trapped by rounding:

* step 3 can cycle (or run for a pseudo-polynomial number of steps) when two rows compete for the same
  pair of columns whose reduced costs differ by an ulp: every step is a valid move but the price drop is
  tiny. Each pass gets a budget of row steps; rows left over simply wait for step 4.
* every iteration of a step-4 search marks one more column as scanned, so a search ends within ``n``
  iterations whatever the rounding, and predecessors always point to earlier-scanned columns, so the
  augmentation cannot cycle. Each augmentation assigns one more row and never unassigns a column: the
  result is always a permutation.

Non-finite costs are detected before solving (the kernels return ``NONFINITE``; callers raise).

Entry points (serial, ``nogil``: :mod:`wbaug.ot.assignment` runs them on its thread pool, so no numba
threading layer is involved): :func:`solve_cost_range` (``(P, N, N)`` costs),
:func:`solve_clouds_range` (``(P, N, D)`` clouds, squared Euclidean cost built inside the kernel, no
``(P, N, N)`` array) and :func:`barycenter_range` (the whole free-support barycenter fixed point). All
first try the nearest-neighbour certificate: if the row-wise argmins form a permutation, it is optimal
(duals ``u_i = min_j C_ij``, ``v = 0`` are feasible and tight on it) and steps 1-4 are skipped. Kernels
are compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["NONFINITE", "barycenter_range", "solve_clouds_range", "solve_cost_range"]

# Row steps allowed per augmenting-row-reduction pass: N // _ARR_BUDGET_DIV + 1 (each step costs O(N)).
# Measured on 68-point problems (whitened faces, close clouds, random clouds, uniform costs; budgets 0,
# N/4, N/2, N, 2N, 4N, unbounded): N/4 to N/2 is fastest everywhere. On geometric costs ARR degenerates
# into long price wars with small decrements that step 4 resolves more cheaply, and ulp-level ping-pong
# between two rows (see module docstring) is cut after O(N^2) work.
_ARR_BUDGET_DIV = 4

# status codes returned by the kernels
_OK = 0
NONFINITE = 1
_SOLVED = 2  # by the certificate (internal)

_EXP_MASK = np.uint64(0x7FF0000000000000)


@njit(cache=True, nogil=True)
def _all_finite(c):
    """True iff no entry of the C-contiguous array ``c`` is inf or NaN (exponent bits not all ones).

    Integer arithmetic: branch-free, so it vectorises (~0.4 us at 68x68)."""
    bits = c.reshape(-1).view(np.uint64)
    bad = 0
    for k in range(bits.size):
        bad += (bits[k] & _EXP_MASK) == _EXP_MASK
    return bad == 0


@njit(cache=True, nogil=True)
def _min_reduced(ci, v):
    """``min_j (ci[j] - v[j])``."""
    best = np.inf
    for j in range(ci.shape[0]):
        h = ci[j] - v[j]
        if h < best:
            best = h
    return best


@njit(cache=True, nogil=True)
def _min_masked(d, done):
    """``min`` of ``d[j]`` over the columns with ``done[j] == 0``."""
    best = np.inf
    for j in range(d.shape[0]):
        h = d[j] if done[j] == 0 else np.inf
        if h < best:
            best = h
    return best


@njit(cache=True, nogil=True)
def _row_minima(c, u, rowsol, mark):
    """Row minima of ``c`` into ``u`` and row-wise argmins into ``rowsol`` (first index on ties).

    Returns
    ``_SOLVED`` if the argmins form a permutation: it is then optimal (duals ``u``, ``v = 0`` are
    feasible and tight on it) and no solver is needed; ``NONFINITE`` if some entry is inf or NaN (the
    solver could loop or return garbage on those); ``_OK`` otherwise."""
    if not _all_finite(c):
        return NONFINITE
    n = c.shape[0]
    for j in range(n):
        mark[j] = 0
    ok = True
    for i in range(n):
        best = c[i, 0]
        jb = 0
        for j in range(1, n):
            if c[i, j] < best:
                best = c[i, j]
                jb = j
        u[i] = best
        rowsol[i] = jb
        if mark[jb]:
            ok = False
        mark[jb] = 1
    return _SOLVED if ok else _OK


@njit(cache=True, nogil=True)
def _lapjv_inplace(c, u, rowsol, colsol, v, d, free, done, pred, matches):
    """Solve one dense finite ``(n, n)`` problem ``c`` in place; ``rowsol[i]`` receives row ``i``'s column.

    ``u`` must hold the row minima ``min_j c_ij`` (see :func:`_row_minima`, which also checks that the
    costs are finite). All other arguments are length-``n`` work arrays (batched callers allocate them
    once): ``colsol``, ``free``, ``done``, ``pred``, ``matches`` (int64), ``v``, ``d`` (float64 column
    prices and Dijkstra distances).
    """
    n = c.shape[0]
    if n <= 1:
        if n == 1:
            rowsol[0] = 0
        return

    # ---- 1. column reduction on row-reduced costs: v_j = min_i (c_ij - u_i) ------------------------------
    # Subtracting the row minima matters for costs given up to a row constant (such as
    # ||y_j||^2 - 2 x_i.y_j): the plain column minimum would pick the row with the largest projection
    # rather than the nearest one, leaving ~half the rows free for the expensive step 4. No other step
    # depends on row constants (they compare reduced costs within a row). Row-major sweep (contiguous,
    # vectorised); ties go to the lowest row.
    for j in range(n):
        v[j] = c[0, j] - u[0]
        pred[j] = 0
    for i in range(1, n):
        ui = u[i]
        for j in range(n):
            h = c[i, j] - ui
            if h < v[j]:
                v[j] = h
                pred[j] = i
    for i in range(n):
        rowsol[i] = -1
        matches[i] = 0
    # last-to-first, as in the original: a row that is the minimum of several columns keeps the
    # highest-numbered one; the other columns stay unassigned
    for j in range(n - 1, -1, -1):
        i = pred[j]
        matches[i] += 1
        if matches[i] == 1:
            rowsol[i] = j
            colsol[j] = i
        else:
            colsol[j] = -1

    # ---- 2. reduction transfer -------------------------------------------------------------------------
    # A row i with a single column j1: lower v[j1] until j1 is exactly as cheap for row i as its
    # second-best column (j1 stays one of its best), so the free rows later see j1 as more expensive.
    # Column j1 is excluded from the scan by a temporary price of -inf (reduced cost +inf).
    numfree = 0
    for i in range(n):
        if matches[i] == 0:
            free[numfree] = i
            numfree += 1
        elif matches[i] == 1:
            j1 = rowsol[i]
            v[j1] = -np.inf
            v[j1] = c[i, j1] - _min_reduced(c[i], v)

    # ---- 3. augmenting row reduction, two passes ------------------------------------------------------
    for _ in range(2):
        if numfree == 0:
            break
        prvnumfree = numfree
        numfree = 0
        k = 0
        budget = n // _ARR_BUDGET_DIV + 1
        while k < prvnumfree:
            if budget == 0:
                # leave the remaining rows to the exact step 4 (numfree <= k, so the copy is safe)
                while k < prvnumfree:
                    free[numfree] = free[k]
                    numfree += 1
                    k += 1
                break
            budget -= 1
            i = free[k]
            k += 1
            # best (umin, j1) and second-best (usubmin, j2) reduced cost of row i in one pass (first
            # index on ties)
            umin = c[i, 0] - v[0]
            j1 = 0
            j2 = -1
            usubmin = np.inf
            for j in range(1, n):
                h = c[i, j] - v[j]
                if h < usubmin:
                    if h >= umin:
                        usubmin = h
                        j2 = j
                    else:
                        usubmin = umin
                        umin = h
                        j2 = j1
                        j1 = j
            i0 = colsol[j1]
            strict = umin < usubmin
            if strict:
                # make j1 as expensive for row i as its runner-up: j1 stays a best column of row i
                v[j1] -= usubmin - umin
            elif i0 >= 0:
                # a tie: prefer the runner-up column, it may be free (no price change needed)
                j1 = j2
                i0 = colsol[j2]
            rowsol[i] = j1
            colsol[j1] = i
            if i0 >= 0:
                rowsol[i0] = -1
                if strict:
                    k -= 1  # the bumped row goes next (it sees the new price of j1)
                    free[k] = i0
                else:
                    free[numfree] = i0
                    numfree += 1

    # ---- 4. shortest augmenting paths (Dijkstra on reduced costs) ----------------------------------------
    # Dense O(n) passes over masked arrays instead of JV's column lists (measured faster at these sizes,
    # also faster than fusing the three passes into one). `done[j]` marks the scanned columns (distance
    # final). Every pass scans one new column, so a search ends after at most n passes whatever the
    # rounding, and predecessors always point to earlier-scanned columns (no cycles in the augmentation).
    scanned = matches  # free after step 2: the scanned columns, in order
    for f in range(numfree):
        freerow = free[f]
        ci = c[freerow]
        for j in range(n):
            d[j] = ci[j] - v[j]
            pred[j] = freerow
            done[j] = 0
        nscanned = 0
        while True:
            dmin = _min_masked(d, done)
            # the first column at the minimum that is unassigned ends the search; else the first one
            jmin = -1
            endofpath = -1
            for j in range(n):
                if done[j] == 0 and d[j] == dmin:
                    if colsol[j] < 0:
                        endofpath = j
                        break
                    if jmin < 0:
                        jmin = j
            if endofpath >= 0:
                break
            # scan jmin: its distance is final; relax the other columns through its row
            done[jmin] = 1
            scanned[nscanned] = jmin
            nscanned += 1
            i = colsol[jmin]
            ci = c[i]
            h = ci[jmin] - v[jmin] - dmin
            for j in range(n):
                v2 = ci[j] - v[j] - h
                if done[j] == 0 and v2 < d[j]:
                    d[j] = v2
                    pred[j] = i
        # prices of the scanned columns: keeps every assigned row on a column of minimal reduced cost
        for k in range(nscanned):
            j = scanned[k]
            v[j] += d[j] - dmin
        # augment along the predecessor chain back to the free row
        while True:
            i = pred[endofpath]
            colsol[endofpath] = i
            j1 = endofpath
            endofpath = rowsol[i]
            rowsol[i] = j1
            if i == freerow:
                break


@njit(cache=True, nogil=True)
def solve_cost_range(cost, out, start, stop, certificate):
    """Serial kernel: problems ``start:stop`` of ``cost (P, n, n)`` into ``out (P, n)``; returns a status."""
    n = cost.shape[1]
    iw = np.empty((5, n), np.int64)
    fw = np.empty((3, n), np.float64)  # v, d, u
    status = _OK
    for p in range(start, stop):
        s = _row_minima(cost[p], fw[2], out[p], iw[0])
        if s == NONFINITE:
            status = s
        elif s == _OK or not certificate:
            _lapjv_inplace(cost[p], fw[2], out[p], iw[0], fw[0], fw[1], iw[1], iw[2], iw[3], iw[4])
    return status


@njit(cache=True, nogil=True)
def _build_cross_cost(x, y, c, work):
    """``c_ij = ||y_j||^2 - 2 x_i . y_j`` (squared distance minus the row constant ``||x_i||^2``).

    Same formula and operation order as ``wbaug.ot.assignment._cross_cost_np`` (bit-identical for
    ``D = 2``); dropping the row constant changes no assignment. ``work`` is a ``(3, n)`` scratch array.
    ``D = 2`` has its own loop over contiguous copies of ``y``'s coordinates, which vectorises (~7x
    faster than the generic triple loop at N = 68)."""
    n, dim = x.shape
    yy = work[0]
    for j in range(n):
        s = 0.0
        for k in range(dim):
            s += y[j, k] * y[j, k]
        yy[j] = s
    if dim == 2:
        y0 = work[1]
        y1 = work[2]
        for j in range(n):
            y0[j] = y[j, 0]
            y1[j] = y[j, 1]
        for i in range(n):
            a0 = x[i, 0]
            a1 = x[i, 1]
            for j in range(n):
                c[i, j] = (a0 * y0[j] + a1 * y1[j]) * -2.0 + yy[j]
        return
    for i in range(n):
        for j in range(n):
            s = 0.0
            for k in range(dim):
                s += x[i, k] * y[j, k]
            c[i, j] = s * -2.0 + yy[j]


@njit(cache=True, nogil=True)
def _regularised_2x2(a, b, d, eps):
    """``M + eps * (tr(M) / 2) * I`` for the symmetric ``M = [[a, b], [b, d]]`` (``I`` if the trace is 0)."""
    scale = 0.5 * (a + d)
    if not scale > 0.0:
        scale = 1.0
    return a + eps * scale, b, d + eps * scale


@njit(cache=True, nogil=True)
def _sqrt_2x2(a, b, d):
    """Square root ``(r00, r01, r11)`` and inverse square root of the SPD ``[[a, b], [b, d]]`` (closed form
    ``sqrt(S) = (S + sqrt(det S) I) / sqrt(tr S + 2 sqrt(det S))``)."""
    s = math.sqrt(max(a * d - b * b, 0.0))
    t = math.sqrt(a + d + 2.0 * s)
    r00, r01, r11 = (a + s) / t, b / t, (d + s) / t
    return r00, r01, r11, r11 / s, -r01 / s, r00 / s


@njit(cache=True, nogil=True)
def _sandwich_2x2(p00, p01, p11, q00, q01, q11):
    """``P Q P`` for symmetric 2x2 ``P``, ``Q`` (upper triangle ``(00, 01, 11)``, symmetrised)."""
    m00, m01 = p00 * q00 + p01 * q01, p00 * q01 + p01 * q11  # P Q
    m10, m11 = p01 * q00 + p11 * q01, p01 * q01 + p11 * q11
    s00 = m00 * p00 + m01 * p01
    s01 = 0.5 * ((m00 * p01 + m01 * p11) + (m10 * p00 + m11 * p01))
    s11 = m10 * p01 + m11 * p11
    return s00, s01, s11


@njit(cache=True, nogil=True)
def _normalise_pair_2d(x, y, xo, yo):
    """Per-problem, allocation-free version of ``wbaug.ot.assignment._normalise_pair`` for ``D = 2``.

    Centres both clouds and maps ``x -> x A^{1/2}``, ``y -> y A^{-1/2}`` with ``A`` the (regularised)
    Bures map between their covariances: the optimal assignments do not change for any SPD ``A``, the
    problem gets easier. Same formulas and regularisations as the NumPy version (results agree to
    rounding, not bit for bit: the operations are grouped differently)."""
    n = x.shape[0]
    mx0 = mx1 = my0 = my1 = 0.0
    for i in range(n):
        mx0 += x[i, 0]
        mx1 += x[i, 1]
        my0 += y[i, 0]
        my1 += y[i, 1]
    mx0 /= n
    mx1 /= n
    my0 /= n
    my1 /= n
    sx00 = sx01 = sx11 = sy00 = sy01 = sy11 = 0.0
    for i in range(n):
        a0, a1 = x[i, 0] - mx0, x[i, 1] - mx1
        b0, b1 = y[i, 0] - my0, y[i, 1] - my1
        xo[i, 0], xo[i, 1], yo[i, 0], yo[i, 1] = a0, a1, b0, b1
        sx00 += a0 * a0
        sx01 += a0 * a1
        sx11 += a1 * a1
        sy00 += b0 * b0
        sy01 += b0 * b1
        sy11 += b1 * b1
    sx00, sx01, sx11 = _regularised_2x2(sx00 / n, sx01 / n, sx11 / n, 1e-6)
    sy00, sy01, sy11 = _regularised_2x2(sy00 / n, sy01 / n, sy11 / n, 1e-6)
    h00, h01, h11, ih00, ih01, ih11 = _sqrt_2x2(sx00, sx01, sx11)
    m00, m01, m11 = _sandwich_2x2(h00, h01, h11, sy00, sy01, sy11)
    m00, m01, m11 = _regularised_2x2(m00, m01, m11, 1e-12)
    m00, m01, m11, _, _, _ = _sqrt_2x2(m00, m01, m11)
    a00, a01, a11 = _sandwich_2x2(ih00, ih01, ih11, m00, m01, m11)
    a00, a01, a11 = _regularised_2x2(a00, a01, a11, 1e-3)
    ah00, ah01, ah11, aih00, aih01, aih11 = _sqrt_2x2(a00, a01, a11)
    for i in range(n):
        a0, a1 = xo[i, 0], xo[i, 1]
        xo[i, 0], xo[i, 1] = a0 * ah00 + a1 * ah01, a0 * ah01 + a1 * ah11
        b0, b1 = yo[i, 0], yo[i, 1]
        yo[i, 0], yo[i, 1] = b0 * aih00 + b1 * aih01, b0 * aih01 + b1 * aih11


@njit(cache=True, nogil=True)
def _solve_pair(x, y, perm, c, iw, fw, bw, xw, yw, normalise):
    """Optimal assignment between the clouds ``x``, ``y`` ``(n, D)`` into ``perm``; returns a status.

    Work arrays as allocated by the callers below (reused across problems: no allocation per problem)."""
    if normalise:
        _normalise_pair_2d(x, y, xw, yw)
        _build_cross_cost(xw, yw, c, bw)
    else:
        _build_cross_cost(x, y, c, bw)
    s = _row_minima(c, fw[2], perm, iw[0])
    if s == _OK:
        _lapjv_inplace(c, fw[2], perm, iw[0], fw[0], fw[1], iw[1], iw[2], iw[3], iw[4])
    return s


@njit(cache=True, nogil=True)
def solve_clouds_range(x, y, out, start, stop, normalise):
    """Serial fused kernel: (normalise,) build each cost matrix in a reused buffer, certificate, LAPJV.

    ``x``, ``y`` ``(P, n, D)`` float64; ``normalise`` (``D = 2`` only) centres and whitens each pair first.
    """
    n, dim = x.shape[1], x.shape[2]
    c = np.empty((n, n), np.float64)
    iw = np.empty((5, n), np.int64)
    fw = np.empty((3, n), np.float64)  # v, d, u
    bw = np.empty((3, n), np.float64)  # cost-building scratch
    xw = np.empty((n, dim), np.float64)
    yw = np.empty((n, dim), np.float64)
    status = _OK
    for p in range(start, stop):
        if _solve_pair(x[p], y[p], out[p], c, iw, fw, bw, xw, yw, normalise) == NONFINITE:
            status = NONFINITE
    return status


@njit(cache=True, nogil=True)
def barycenter_range(y, w, active, x, sigma, max_iter, tol, iterations, start, stop):
    """Fixed point of :func:`wbaug.ot.free_support_barycenter` (uniform, equal sizes), items ``start:stop``.

    For each barycenter ``b`` independently: solve the assignments ``sigma_k`` between the support ``x[b]``
    and every active cloud ``y[b, k]``, move the support to ``sum_k w_k y[b, k, sigma_k]``, and stop once
    the squared displacement is ``<= tol``, once no assignment changed (from the second update on), or
    after ``max_iter`` updates. The whole loop runs here, without Python or gathers between iterations.

    Args (NumPy, C-contiguous): ``y (B, K, n, D)`` and ``w (B, K)`` float64; ``active (B, K)`` bool;
    ``x (B, n, D)`` float64 initial support, updated in place; ``sigma (B, K, n)`` int64, the identity on
    entry (clouds that are not active keep it), the final assignments on exit. ``iterations (B,)`` int64
    receives the update counts.
    """
    ncl, n, dim = y.shape[1], y.shape[2], y.shape[3]
    normalise = dim == 2
    c = np.empty((n, n), np.float64)
    iw = np.empty((5, n), np.int64)
    fw = np.empty((3, n), np.float64)
    bw = np.empty((3, n), np.float64)
    xw = np.empty((n, dim), np.float64)
    yw = np.empty((n, dim), np.float64)
    perm = np.empty(n, np.int64)
    x_new = np.empty((n, dim), np.float64)
    status = _OK
    for b in range(start, stop):
        xb = x[b]
        it = 0
        while it < max_iter:
            changed = False
            for k in range(ncl):
                if not active[b, k]:
                    continue
                if _solve_pair(xb, y[b, k], perm, c, iw, fw, bw, xw, yw, normalise) == NONFINITE:
                    status = NONFINITE
                for i in range(n):
                    if perm[i] != sigma[b, k, i]:
                        changed = True
                        sigma[b, k, i] = perm[i]
            x_new[:] = 0.0
            for k in range(ncl):
                if not active[b, k]:
                    continue
                wk = w[b, k]
                for i in range(n):
                    j = sigma[b, k, i]
                    for e in range(dim):
                        x_new[i, e] += wk * y[b, k, j, e]
            shift = 0.0
            for i in range(n):
                for e in range(dim):
                    delta = x_new[i, e] - xb[i, e]
                    shift += delta * delta
                    xb[i, e] = x_new[i, e]
            it += 1
            if shift <= tol or (it > 1 and not changed):
                break
        iterations[b] = it
    return status
