"""Save/load of a fitted sampler as plain tensors + a JSON config (loadable with ``weights_only=True``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["FORMAT_VERSION", "load_state", "save_state"]

FORMAT_VERSION = 1


def save_state(sampler: Any, path: str | Path, config_json: str) -> None:
    """Write ``sampler``'s fitted state to ``path`` (parent folders must exist)."""
    clouds = sampler.landmarks_
    pairs = sampler.distances_.coalesce()  # sparse (M, M), both orientations, sorted by (row, col)
    rows, cols = pairs.indices()
    upper = rows < cols
    state: dict[str, Any] = {
        "format": "wbaug.WassersteinBarycentricSampler",
        "version": FORMAT_VERSION,
        "config": config_json,
        "knn_indices": sampler.knn_indices_.cpu(),
        "knn_distances": sampler.knn_distances_.cpu(),
        "pair_rows": rows[upper],
        "pair_cols": cols[upper],
        "pair_values": pairs.values()[upper].cpu(),
        "n_pairs_evaluated": int(sampler.n_pairs_evaluated_),
        "fit_time": float(getattr(sampler, "fit_time_", 0.0)),
        "canvas_size": getattr(sampler, "canvas_size_", None),
    }
    if getattr(sampler, "visibility_", None) is not None:
        state["visibility"] = sampler.visibility_.cpu()
    if isinstance(clouds, torch.Tensor):
        state["landmarks"] = clouds.detach().cpu()
    else:
        state["landmark_list"] = [c.detach().cpu() for c in clouds]
    torch.save(state, Path(path))


def load_state(path: str | Path, *, map_location: str | torch.device | None = None) -> tuple[dict, dict]:
    """Read a file written by :func:`save_state`: returns ``(config, state)`` with ``state["landmarks"]``
    (tensor or list), ``"distances"`` (sparse COO ``(M, M)`` of the evaluated pairs) and the kNN tables."""
    raw = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(raw, dict) or raw.get("format") != "wbaug.WassersteinBarycentricSampler":
        raise ValueError(f"path {str(path)!r} is not a saved WassersteinBarycentricSampler")
    if raw.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"path {str(path)!r} has format version {raw.get('version')}, expected {FORMAT_VERSION}"
        )
    config = json.loads(raw["config"])
    if "landmarks" in raw:
        clouds = raw["landmarks"]
        if map_location is not None:
            clouds = clouds.to(map_location)
        ref = clouds
    else:
        clouds = [c if map_location is None else c.to(map_location) for c in raw["landmark_list"]]
        ref = clouds[0]
    m = raw["knn_indices"].shape[0]
    rows, cols = raw["pair_rows"], raw["pair_cols"]
    both = torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])])
    values = raw["pair_values"].to(ref.dtype)
    full = torch.sparse_coo_tensor(
        both, torch.cat([values, values]), (m, m), check_invariants=True
    ).coalesce()
    state = {
        "landmarks": clouds,
        "knn_indices": raw["knn_indices"],
        "knn_distances": raw["knn_distances"],
        "distances": full,
        "n_pairs_evaluated": raw["n_pairs_evaluated"],
        "fit_time": raw["fit_time"],
        "visibility": raw.get("visibility"),
        "canvas_size": None if raw.get("canvas_size") is None else tuple(raw["canvas_size"]),
    }
    return config, state
