"""Save/load of a fitted sampler as plain tensors + a JSON config (loadable with ``weights_only=True``).

Writing goes through :func:`wbaug.io_atomic.atomic_write` (a kill or a full disk leaves the previous file
intact). Every load is validated in one place, :func:`validate_state`: structure, dtypes, shapes,
finiteness, index ranges, consistency between the config and the tables, and a SHA-256 content checksum
stored at save time. Any failure -- a truncated or garbled file included -- raises ``ValueError`` whose
message starts with the file's path.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from wbaug.io_atomic import atomic_write
from wbaug.sampling.graph import neighborhood_edges, pair_distance_matrix

__all__ = ["CONFIG_KEYS", "FORMAT_VERSION", "load_state", "save_state", "state_checksum", "validate_state"]

FORMAT_VERSION = 3  # 3: the maximal cliques are stored (a load no longer re-enumerates them)
FORMAT_NAME = "wbaug.WassersteinBarycentricSampler"
#: the sampler configuration a file holds (the constructor arguments of ``WassersteinBarycentricSampler``)
CONFIG_KEYS = (
    "k_neighbors",
    "epsilon",
    "concentration",
    "correspondence",
    "max_clique_size",
    "isolated",
    "symmetrize",
    "knn_method",
    "max_iter",
    "tol",
    "batch_size",
    "progress",
    "p",
    "paired",
    "frame",
    "grid_stride",
    "tps_regularization",
    "padding_mode",
)
_TABLE_KEYS = (
    "knn_indices",
    "knn_distances",
    "pair_rows",
    "pair_cols",
    "pair_values",
    "clique_table",
    "clique_mask",
)
_SCALAR_KEYS = ("format", "version", "config", "n_pairs_evaluated", "fit_time", "canvas_size")
_FLOATS = (torch.float32, torch.float64)


def _digest_value(h: Any, key: str, value: Any) -> None:
    if isinstance(value, Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"{key}:tensor:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, list):
        h.update(f"{key}:list:{len(value)}:".encode())
        for i, v in enumerate(value):
            _digest_value(h, f"{key}[{i}]", v)
    else:
        h.update(f"{key}:{type(value).__name__}:{value!r};".encode())


def state_checksum(state: dict[str, Any]) -> str:
    """SHA-256 (hex) of every entry of a saved state except ``"checksum"`` (tensor bytes, dtypes, shapes,
    scalars and the config string), in sorted key order."""
    h = hashlib.sha256()
    for key in sorted(k for k in state if k != "checksum"):
        _digest_value(h, key, state[key])
    return h.hexdigest()


def save_state(sampler: Any, path: str | Path, config_json: str) -> None:
    """Write ``sampler``'s fitted state to ``path`` atomically, with a content checksum."""
    clouds = sampler.landmarks_
    pairs = sampler.distances_.coalesce()  # sparse (M, M), both orientations, sorted by (row, col)
    rows, cols = pairs.indices()
    upper = rows < cols
    state: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": config_json,
        "knn_indices": sampler.knn_indices_.cpu(),
        "knn_distances": sampler.knn_distances_.cpu(),
        "pair_rows": rows[upper].clone(),
        "pair_cols": cols[upper].clone(),
        "pair_values": pairs.values()[upper].cpu().clone(),
        "clique_table": sampler.clique_table_.cpu().clone(),
        "clique_mask": sampler.clique_mask_.cpu().clone(),
        "n_pairs_evaluated": int(sampler.n_pairs_evaluated_),
        "fit_time": float(getattr(sampler, "fit_time_", 0.0)),
        "canvas_size": None if sampler.canvas_size_ is None else [int(c) for c in sampler.canvas_size_],
    }
    if sampler.visibility_ is not None:
        state["visibility"] = sampler.visibility_.detach().cpu().clone()
    if isinstance(clouds, Tensor):
        state["landmarks"] = clouds.detach().cpu().clone()
    else:
        state["landmark_list"] = [c.detach().cpu().clone() for c in clouds]
    state["checksum"] = state_checksum(state)
    with atomic_write(path) as fh:
        torch.save(state, fh)


class _Invalid(ValueError):
    pass


def _need(cond: bool, message: str) -> None:
    if not cond:
        raise _Invalid(message)


def _tensor(raw: dict, key: str, dtypes: tuple[torch.dtype, ...], ndim: int) -> Tensor:
    value = raw[key]
    _need(isinstance(value, Tensor), f"{key!r} must be a tensor, got {type(value).__name__}")
    _need(value.dtype in dtypes, f"{key!r} has dtype {value.dtype}, expected one of {list(dtypes)}")
    _need(value.ndim == ndim, f"{key!r} must have {ndim} dimension(s), got shape {tuple(value.shape)}")
    return value


def _config(raw: dict) -> dict[str, Any]:
    text = raw["config"]
    _need(isinstance(text, str), f"'config' must be a JSON string, got {type(text).__name__}")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise _Invalid(f"'config' is not valid JSON ({err})") from None
    _need(isinstance(config, dict), f"'config' must be a JSON object, got {type(config).__name__}")
    missing = [k for k in CONFIG_KEYS if k not in config]
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    _need(not missing and not unknown, f"'config' keys: missing {missing}, unknown {unknown}")
    k = config["k_neighbors"]
    _need(
        isinstance(k, int) and not isinstance(k, bool) and k >= 1,
        f"config k_neighbors={k!r} is not an int >= 1",
    )
    eps = config["epsilon"]
    _need(
        eps is None
        or (isinstance(eps, (int, float)) and not isinstance(eps, bool) and math.isfinite(eps) and eps > 0),
        f"config epsilon={eps!r} is not None or a finite number > 0",
    )
    _need(config["correspondence"] in ("ot", "index"), f"config correspondence={config['correspondence']!r}")
    p = config["p"]
    _need(
        isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 <= p <= 1.0,
        f"config p={p!r} is not a probability",
    )
    _need(isinstance(config["paired"], bool), f"config paired={config['paired']!r} is not a bool")
    _need(config["frame"] in ("similarity", "fitted"), f"config frame={config['frame']!r}")
    stride = config["grid_stride"]
    _need(
        isinstance(stride, int) and not isinstance(stride, bool) and stride >= 1,
        f"config grid_stride={stride!r} is not an int >= 1",
    )
    lam = config["tps_regularization"]
    _need(
        isinstance(lam, (int, float)) and not isinstance(lam, bool) and math.isfinite(lam) and lam >= 0,
        f"config tps_regularization={lam!r} is not a finite number >= 0",
    )
    _need(
        config["padding_mode"] in ("zeros", "border", "reflection"),
        f"config padding_mode={config['padding_mode']!r}",
    )
    _need(config["symmetrize"] in ("union", "mutual"), f"config symmetrize={config['symmetrize']!r}")
    _need(config["isolated"] in ("keep", "drop"), f"config isolated={config['isolated']!r}")
    size = config["max_clique_size"]
    _need(
        size is None or (isinstance(size, int) and not isinstance(size, bool) and size >= 1),
        f"config max_clique_size={size!r} is not None or an int >= 1",
    )
    return config


def _frame_entries(raw: dict, clouds: Tensor | list[Tensor], config: dict[str, Any]) -> tuple:
    """The masked fit's ``visibility (M, N)`` (or None) and the fitted ``canvas_size`` (or None)."""
    canvas = raw["canvas_size"]
    _need(
        canvas is None
        or (
            isinstance(canvas, list)
            and len(canvas) == 2
            and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in canvas)
        ),
        f"'canvas_size'={canvas!r} is not None or [H, W] with positive ints",
    )
    vis = raw.get("visibility")
    if vis is not None:
        vis = _tensor(raw, "visibility", (torch.bool,), 2)
        _need(
            isinstance(clouds, Tensor) and tuple(vis.shape) == tuple(clouds.shape[:2]),
            f"'visibility' has shape {tuple(vis.shape)}, expected (M, N) like the landmarks",
        )
        _need(bool(vis.any(1).all()), "'visibility' has a landmark set without a visible point")
        _need(config["correspondence"] == "index", "'visibility' is only stored for correspondence='index'")
    return vis, None if canvas is None else (canvas[0], canvas[1])


def _landmarks(raw: dict) -> tuple[Tensor | list[Tensor], int]:
    if "landmarks" in raw:
        x = _tensor(raw, "landmarks", _FLOATS, 3)
        _need(
            x.shape[0] >= 2 and x.shape[1] >= 1 and x.shape[2] >= 1, f"'landmarks' has shape {tuple(x.shape)}"
        )
        _need(bool(torch.isfinite(x).all()), "'landmarks' contains NaN or infinite values")
        return x, x.shape[0]
    clouds = raw["landmark_list"]
    _need(
        isinstance(clouds, list) and len(clouds) >= 2, "'landmark_list' must be a list of at least 2 tensors"
    )
    dtypes, dims = set(), set()
    for i, c in enumerate(clouds):
        _need(
            isinstance(c, Tensor) and c.dtype in _FLOATS and c.ndim == 2,
            f"'landmark_list'[{i}] is not a 2-D float tensor",
        )
        _need(c.shape[0] >= 1 and c.shape[1] >= 1, f"'landmark_list'[{i}] has shape {tuple(c.shape)}")
        _need(bool(torch.isfinite(c).all()), f"'landmark_list'[{i}] contains NaN or infinite values")
        dtypes.add(c.dtype)
        dims.add(c.shape[1])
    _need(len(dtypes) == 1 and len(dims) == 1, "'landmark_list' mixes dtypes or dimensions")
    return clouds, len(clouds)


def _tables(raw: dict, m: int, config: dict[str, Any]) -> None:
    k = config["k_neighbors"]
    idx = _tensor(raw, "knn_indices", (torch.int64,), 2)
    dist = _tensor(raw, "knn_distances", _FLOATS, 2)
    _need(
        idx.shape == (m, k),
        f"'knn_indices' has shape {tuple(idx.shape)}, expected (M, k_neighbors) = ({m}, {k})",
    )
    _need(dist.shape == (m, k), f"'knn_distances' has shape {tuple(dist.shape)}, expected ({m}, {k})")
    _need(bool(((idx >= -1) & (idx < m)).all()), f"'knn_indices' holds indices outside [-1, {m})")
    _need(not bool((idx == torch.arange(m)[:, None]).any()), "'knn_indices' lists a set as its own neighbour")
    present = idx >= 0
    _need(
        bool(torch.isfinite(dist[present]).all()) and bool((dist[present] >= 0).all()),
        "'knn_distances' has NaN, infinite or negative values at real neighbours",
    )
    _need(bool(torch.isposinf(dist[~present]).all()), "'knn_distances' must be inf where 'knn_indices' is -1")
    eps = config["epsilon"]
    if eps is not None:
        _need(
            bool((dist[present] < eps).all()),
            f"'knn_distances' holds neighbours at distance >= epsilon={eps}",
        )
    rows = _tensor(raw, "pair_rows", (torch.int64,), 1)
    cols = _tensor(raw, "pair_cols", (torch.int64,), 1)
    vals = _tensor(raw, "pair_values", _FLOATS, 1)
    _need(rows.shape == cols.shape == vals.shape, "'pair_rows', 'pair_cols', 'pair_values' differ in length")
    _need(
        bool(((rows >= 0) & (rows < cols) & (cols < m)).all()),
        f"pair indices must satisfy 0 <= row < col < {m}",
    )
    _need(
        bool(torch.isfinite(vals).all()) and bool((vals >= 0).all()),
        "'pair_values' has NaN, infinite or negative values",
    )
    # O(E) checks (no (M, M) table: files of 100 000 sets load in bounded memory)
    keys = rows * m + cols
    order = torch.argsort(keys)
    sorted_keys = keys[order]
    _need(bool((sorted_keys[1:] != sorted_keys[:-1]).all()), "duplicate pairs in the pair table")
    # every kNN edge is an evaluated pair with the same distance
    a = torch.arange(m)[:, None].expand_as(idx)[present]
    b = idx[present]
    edge = torch.minimum(a, b) * m + torch.maximum(a, b)
    pos = torch.searchsorted(sorted_keys, edge).clamp(max=max(sorted_keys.numel() - 1, 0))
    found = sorted_keys.numel() > 0 and bool((sorted_keys[pos] == edge).all())
    _need(edge.numel() == 0 or found, "'knn_indices' names pairs missing from the pair table")
    if edge.numel() > 0:
        stored = vals[order][pos].double()
        _need(
            torch.allclose(stored, dist[present].double(), rtol=1e-5, atol=1e-6),
            "'knn_distances' disagree with the pair table",
        )
    n_pairs = raw["n_pairs_evaluated"]
    _need(
        isinstance(n_pairs, int)
        and not isinstance(n_pairs, bool)
        and vals.numel() <= n_pairs <= m * (m - 1) // 2,
        f"'n_pairs_evaluated'={n_pairs!r} is not an int in [{vals.numel()}, {m * (m - 1) // 2}]",
    )
    fit_time = raw["fit_time"]
    _need(
        isinstance(fit_time, float) and math.isfinite(fit_time) and fit_time >= 0, f"'fit_time'={fit_time!r}"
    )


def _contains(sorted_keys: Tensor, keys: Tensor) -> Tensor:
    if sorted_keys.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, keys).clamp(max=sorted_keys.numel() - 1)
    return sorted_keys[pos] == keys


def _cliques(raw: dict, m: int, config: dict[str, Any]) -> None:
    """The stored cliques are exactly what ``maximal_cliques`` gives on the stored graph: sorted distinct
    rows of sorted vertices, each a clique of the graph, maximal (unless ``max_clique_size`` split them),
    within the size limit, covering every vertex that has an edge (and the isolated ones if kept). All
    checks are vectorised: O(C·S²) and O(C·S·degree)."""
    table = _tensor(raw, "clique_table", (torch.int64,), 2)
    mask = _tensor(raw, "clique_mask", (torch.bool,), 2)
    _need(
        table.shape == mask.shape and table.shape[0] >= 1, "'clique_table' and 'clique_mask' differ in shape"
    )
    c, s = table.shape
    sizes = mask.sum(1)
    _need(
        bool(torch.equal(mask, torch.arange(s)[None, :] < sizes[:, None])) and bool((sizes >= 1).all()),
        "'clique_mask' rows must be a non-empty run of True then False",
    )
    _need(int(sizes.max()) == s, "'clique_table' is wider than its largest clique")
    _need(bool(((table >= 0) & (table < m)).all()), f"'clique_table' holds vertices outside [0, {m})")
    _need(
        bool((table == torch.where(mask, table, table[:, :1])).all()),
        "'clique_table' padding must repeat the first vertex",
    )
    _need(
        bool((table[:, 1:] > table[:, :-1])[mask[:, 1:]].all()),
        "'clique_table' rows must be strictly increasing",
    )
    _need(
        bool((config["max_clique_size"] is None) or int(sizes.max()) <= config["max_clique_size"]),
        "'clique_table' holds a clique larger than max_clique_size",
    )
    if c > 1:  # distinct rows in lexicographic order (padding with the first vertex keeps tuple order)
        differ = table[1:] != table[:-1]
        at = differ.to(torch.uint8).argmax(1)[:, None]
        _need(
            bool(differ.any(1).all()) and bool((table[1:].gather(1, at) > table[:-1].gather(1, at)).all()),
            "'clique_table' rows must be distinct and sorted",
        )
    a, b, _ = neighborhood_edges(raw["knn_indices"], raw["knn_distances"], symmetrize=config["symmetrize"])
    edges = a * m + b
    # every pair of a clique is an edge
    i, j = torch.triu_indices(s, s, offset=1)
    pair_ok = mask[:, i] & mask[:, j]
    pair_keys = (table[:, i] * m + table[:, j])[pair_ok]
    _need(
        bool(_contains(edges, pair_keys).all()), "'clique_table' holds a set of vertices that is not a clique"
    )
    degree = torch.bincount(torch.cat([a, b]), minlength=m)
    covered = torch.zeros(m, dtype=torch.bool)
    covered[table[mask]] = True
    _need(bool(covered[degree > 0].all()), "'clique_table' misses a vertex that has an edge")
    singles = table[sizes == 1, 0]
    if config["isolated"] == "keep":
        _need(bool(covered[degree == 0].all()), "'clique_table' misses an isolated vertex (isolated='keep')")
    else:
        _need(singles.numel() == 0, "'clique_table' holds isolated vertices (isolated='drop')")
    if config["max_clique_size"] is None:  # maximal: no neighbour of a clique's first vertex joins it
        nbr_ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(degree, 0)])
        both = torch.cat([torch.stack([a, b], 1), torch.stack([b, a], 1)])
        nbrs = both[torch.argsort(both[:, 0] * m + both[:, 1]), 1]
        first = table[:, 0]
        count = degree[first]
        owner = torch.repeat_interleave(torch.arange(c), count)
        offset = torch.arange(int(count.sum())) - torch.repeat_interleave(
            torch.cumsum(count, 0) - count, count
        )
        cand = nbrs[nbr_ptr[first][owner] + offset]
        members = table[owner]
        keys = torch.minimum(cand[:, None], members) * m + torch.maximum(cand[:, None], members)
        joins = (_contains(edges, keys) | ~mask[owner]).all(1)
        _need(not bool(joins.any()), "'clique_table' holds a clique that is not maximal")


def validate_state(raw: Any, path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check a loaded state dict fully; return ``(config, state)`` as :func:`load_state` does.

    Raises:
        ValueError: naming ``path`` and the first problem found.
    """
    where = str(path)
    try:
        _need(
            isinstance(raw, dict) and raw.get("format") == FORMAT_NAME,
            "not a saved WassersteinBarycentricSampler",
        )
        _need(
            raw.get("version") == FORMAT_VERSION,
            f"format version {raw.get('version')!r}, expected {FORMAT_VERSION}",
        )
        cloud_key = "landmarks" if "landmarks" in raw else "landmark_list"
        expected = {*_SCALAR_KEYS, *_TABLE_KEYS, cloud_key, "checksum"}
        if "visibility" in raw:
            expected.add("visibility")
        _need(set(raw) == expected, f"entries {sorted(raw)}, expected {sorted(expected)}")
        _need(isinstance(raw["checksum"], str), "'checksum' must be a string")
        _need(
            raw["checksum"] == state_checksum(raw),
            "content checksum mismatch: the file was modified or corrupted after it was saved",
        )
        config = _config(raw)
        clouds, m = _landmarks(raw)
        _need(config["k_neighbors"] < m, f"config k_neighbors={config['k_neighbors']} must be < M={m}")
        _need(
            config["correspondence"] != "index" or isinstance(clouds, Tensor),
            "correspondence='index' needs landmark sets of equal size",
        )
        _tables(raw, m, config)
        _cliques(raw, m, config)
        visibility, canvas_size = _frame_entries(raw, clouds, config)
    except _Invalid as err:
        raise ValueError(f"{where}: invalid sampler file: {err}") from None
    ref = clouds if isinstance(clouds, Tensor) else clouds[0]
    full = pair_distance_matrix(raw["pair_rows"], raw["pair_cols"], raw["pair_values"], m, dtype=ref.dtype)
    state = {
        "landmarks": clouds,
        "knn_indices": raw["knn_indices"],
        "knn_distances": raw["knn_distances"],
        "distances": full,
        "n_pairs_evaluated": raw["n_pairs_evaluated"],
        "fit_time": raw["fit_time"],
        "visibility": visibility,
        "canvas_size": canvas_size,
        "clique_table": raw["clique_table"],
        "clique_mask": raw["clique_mask"],
    }
    return config, state


def load_state(path: str | Path, *, map_location: str | torch.device | None = None) -> tuple[dict, dict]:
    """Read and validate a file written by :func:`save_state`: returns ``(config, state)`` with
    ``state["landmarks"]`` (``(M, N, D)`` tensor or list of ``(N_i, D)``), ``"distances"`` (sparse COO
    ``(M, M)`` of the evaluated pairs), the kNN tables ``(M, k)``, ``"visibility"`` (``(M, N)`` bool or
    None) and ``"canvas_size"`` (``(H, W)`` or None).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is truncated, garbled, tampered with or inconsistent (the message starts with
            the path).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"sampler file not found: {p}")
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # EOFError, OSError, RuntimeError (zip reader), UnpicklingError, ...
        raise ValueError(
            f"{p}: cannot read a saved sampler (truncated or corrupt file: {type(err).__name__}: {err})"
        ) from err
    config, state = validate_state(raw, p)
    if map_location is not None:
        clouds = state["landmarks"]
        state["landmarks"] = (
            clouds.to(map_location) if isinstance(clouds, Tensor) else [c.to(map_location) for c in clouds]
        )
    return config, state
