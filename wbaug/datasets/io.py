"""File formats: iBUG ``.pts``, landmark arrays (``.npy``/``.npz``/``.csv``), images.

Coordinate convention of wbaug: pixel coordinates with pixel centres at integers (the top-left pixel's
centre is ``(0, 0)``). The iBUG/300-W ``.pts`` files are 1-based (Matlab: the top-left pixel's centre is
``(1, 1)``), so :func:`read_pts` subtracts 1 by default and :func:`write_pts` adds it back.
"""

from __future__ import annotations

import csv
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from wbaug.io_atomic import atomic_write_text

__all__ = ["IMAGE_EXTENSIONS", "image_size", "load_landmarks", "read_image", "read_pts", "write_pts"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".gif", ".webp", ".tif", ".tiff")

PTS_LAYOUT = "an iBUG .pts file: 'version: 1', 'n_points: N', '{', N lines 'x y', '}'"


def _path(path: str | os.PathLike, what: str = "file") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


def read_pts(path: str | os.PathLike, *, one_based: bool = True) -> torch.Tensor:
    """Read an iBUG/300-W ``.pts`` landmark file.

    The file layout is::

        version: 1
        n_points:  68
        {
        x_1 y_1
        ...
        x_N y_N
        }

    Args:
        path: the ``.pts`` file.
        one_based: the file uses 1-based pixel coordinates (true for every 300-W/iBUG/menpo file);
            1 is subtracted so the result follows wbaug's 0-based pixel-centre convention.

    Returns:
        ``(N, D)`` float32 tensor (``D = 2``, or 3 when the lines hold three values).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the header, braces, point count or a coordinate line is malformed (the message
            names the file, the line and the expected layout).

    Example:
        >>> pts = read_pts("einstein.pts")  # doctest: +SKIP
        >>> pts.shape  # doctest: +SKIP
        torch.Size([68, 2])
    """
    p = _path(path, ".pts file")
    lines = [ln.strip() for ln in p.read_text(encoding="utf-8", errors="replace").splitlines()]
    body_start = n_points = None
    for i, ln in enumerate(lines):
        low = ln.lower()
        if low.startswith("n_points"):
            try:
                n_points = int(ln.split(":", 1)[1])
            except (IndexError, ValueError):
                raise ValueError(
                    f"{p}: line {i + 1}: bad point count {ln!r}; expected {PTS_LAYOUT}"
                ) from None
        elif ln == "{":
            body_start = i + 1
            break
    if n_points is None or body_start is None:
        raise ValueError(f"{p}: missing 'n_points:' header or '{{'; expected {PTS_LAYOUT}")
    rows: list[list[float]] = []
    closed = False
    for i in range(body_start, len(lines)):
        ln = lines[i]
        if not ln:
            continue
        if ln == "}":
            closed = True
            break
        try:
            rows.append([float(v) for v in ln.split()])
        except ValueError:
            raise ValueError(f"{p}: line {i + 1}: not numbers: {ln!r}; expected {PTS_LAYOUT}") from None
    if not closed:
        raise ValueError(f"{p}: missing closing '}}'; expected {PTS_LAYOUT}")
    if len(rows) != n_points:
        raise ValueError(f"{p}: header says n_points={n_points} but {len(rows)} points were found")
    dims = {len(r) for r in rows}
    if n_points and (len(dims) != 1 or dims.pop() not in (2, 3)):
        raise ValueError(f"{p}: every point line must hold 2 (or 3) numbers; expected {PTS_LAYOUT}")
    arr = torch.tensor(rows, dtype=torch.float64).reshape(n_points, -1 if n_points else 2)
    if not torch.isfinite(arr).all():
        raise ValueError(f"{p}: non-finite coordinates")
    if one_based:
        arr = arr - 1.0
    return arr.to(torch.float32)


def write_pts(path: str | os.PathLike, points: torch.Tensor | np.ndarray, *, one_based: bool = True) -> Path:
    """Write ``(N, 2)`` or ``(N, 3)`` 0-based landmarks as an iBUG ``.pts`` file (1-based by default).

    The file is replaced atomically (:func:`wbaug.io_atomic.atomic_write`; a symlink at ``path`` is
    refused). Returns ``Path(path)``.

    Raises:
        TypeError: ``points`` is not a real-valued tensor/array.
        ValueError: ``points`` is not ``(N, 2)``/``(N, 3)`` or holds NaN/inf.
    """
    if not isinstance(points, (torch.Tensor, np.ndarray)):
        raise TypeError(f"points must be a torch.Tensor or numpy.ndarray, got {type(points).__name__}")
    if points.dtype in (torch.bool, np.bool_) or (
        points.is_complex() if isinstance(points, torch.Tensor) else np.iscomplexobj(points)
    ):
        raise TypeError(f"points must hold real numbers, got dtype {points.dtype}")
    arr = torch.as_tensor(points).detach().cpu().to(torch.float64)
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        raise ValueError(f"points must have shape (N, 2) or (N, 3), got {tuple(arr.shape)}")
    if not bool(torch.isfinite(arr).all()):
        raise ValueError("points contains NaN or infinite values")
    if one_based:
        arr = arr + 1.0
    body = "".join(" ".join(f"{v:.6f}" for v in row) + "\n" for row in arr.tolist())
    return atomic_write_text(path, f"version: 1\nn_points:  {arr.shape[0]}\n{{\n{body}}}\n")


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file as a ``(3, H, W)`` uint8 RGB tensor.

    Uses Pillow (a dependency of torchvision and matplotlib; torchvision's own decoders are deprecated
    since 0.29), so JPEG, PNG, PPM/PGM, BMP, TIFF, WebP... all work.
    """
    p = _path(path, "image")
    from PIL import Image

    try:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"))
    except OSError as err:
        raise ValueError(f"{p}: cannot decode image ({err})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image from its header only (no pixel decoding)."""
    p = _path(path, "image")
    from PIL import Image

    try:
        with Image.open(p) as im:
            w, h = im.size
    except OSError as err:
        raise ValueError(f"{p}: cannot read the image header ({err})") from None
    return int(h), int(w)


def _stack_or_list(sets: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    if sets and all(s.shape == sets[0].shape for s in sets):
        return torch.stack(sets)
    return sets


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _finite_sets(p: Path, sets: list[torch.Tensor]) -> list[torch.Tensor]:
    for i, s in enumerate(sets):
        if not bool(torch.isfinite(s).all()):
            raise ValueError(f"{p}: landmark set {i} contains NaN or infinite coordinates")
    return sets


def _read_csv_rows(p: Path) -> list[list[str]]:
    try:
        text = p.read_text(encoding="utf-8")
        if p.suffix.lower() == ".txt" and "," not in text:
            return [ln.split() for ln in text.splitlines() if ln.strip()]
        with p.open(newline="", encoding="utf-8") as fh:
            return [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{p}: not a text landmark table ({type(err).__name__}: {err})") from None


def _load_csv(p: Path, dim: int) -> torch.Tensor | list[torch.Tensor]:
    rows = _read_csv_rows(p)
    if not rows:
        raise ValueError(
            f"{p}: empty CSV; expected one landmark set per row (x0,y0,x1,y1,...) or a long table"
        )
    header = [c.strip().lower() for c in rows[0]]
    layout = (
        "CSV layouts: wide — one set per row 'x0,y0,x1,y1,...' (an optional first non-numeric column "
        "names the set, an optional header row); long — header with columns 'x','y' (optional 'z') and "
        "'id'/'set'/'image'"
    )
    if "x" in header and "y" in header:
        cols = {name: header.index(name) for name in ("x", "y", "z") if name in header}
        key_col = next((header.index(k) for k in ("id", "set", "image", "name", "file") if k in header), None)
        groups: dict[str, list[list[float]]] = {}
        for ln, r in enumerate(rows[1:], start=2):
            try:
                pt = [float(r[cols[c]]) for c in ("x", "y", "z") if c in cols]
            except (ValueError, IndexError):
                raise ValueError(f"{p}: line {ln}: bad row {r!r}; {layout}") from None
            if not all(map(math.isfinite, pt)):
                raise ValueError(f"{p}: line {ln}: NaN or infinite coordinate in {r!r}")
            groups.setdefault(r[key_col] if key_col is not None else "", []).append(pt)
        if not groups:
            raise ValueError(f"{p}: header only, no landmark rows; {layout}")
        return _stack_or_list([torch.tensor(v, dtype=torch.float32) for v in groups.values()])
    # a header row holds names only: not one numeric cell (a data row with a typo is an error, not a header)
    first = 1
    if not any(_is_number(c) for c in rows[0] if c.strip()):
        rows, first = rows[1:], 2
        if not rows:
            raise ValueError(f"{p}: header only, no landmark rows; {layout}")
    sets = []
    for ln, r in enumerate(rows, start=first):
        vals = r[1:] if not _is_number(r[0]) else r
        try:
            nums = [float(v) for v in vals if v.strip()]
        except ValueError:
            raise ValueError(f"{p}: line {ln}: non-numeric value in {r!r}; {layout}") from None
        if not nums or len(nums) % dim:
            raise ValueError(f"{p}: line {ln}: {len(nums)} values is not a multiple of dim={dim}; {layout}")
        if not all(map(math.isfinite, nums)):
            raise ValueError(f"{p}: line {ln}: NaN or infinite coordinate in {r!r}")
        sets.append(torch.tensor(nums, dtype=torch.float32).view(-1, dim))
    return _stack_or_list(sets)


def _load_array(p: Path) -> np.ndarray:
    """The numeric array of a ``.npy``/``.npz`` file (no pickle); every failure names ``p``."""
    try:
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                keys = list(data.keys())
                if "landmarks" in keys:
                    key = "landmarks"
                elif len(keys) == 1:
                    key = keys[0]
                else:
                    raise ValueError(
                        f"{p}: .npz with keys {keys}; expected a 'landmarks' array or a single array"
                    )
                arr = np.asarray(data[key])
        else:
            arr = np.asarray(data)
    except ValueError as err:
        if str(err).startswith(str(p)):
            raise
        raise ValueError(
            f"{p}: cannot load a numeric array ({err}); expected a float array (M, N, D)"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise ValueError(
            f"{p}: not a readable .npy/.npz file ({type(err).__name__}: {err}); "
            "expected a float array (M, N, D)"
        ) from None
    if np.iscomplexobj(arr):
        raise ValueError(f"{p}: complex array (dtype {arr.dtype}); expected real coordinates (M, N, D)")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{p}: array of dtype {arr.dtype}; expected a float array (M, N, D)")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[-1] not in (2, 3):
        raise ValueError(f"{p}: array of shape {arr.shape}; expected (M, N, D) or (N, D) with D in (2, 3)")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"{p}: array contains NaN or infinite coordinates")
    return arr


def _cast(
    sets: torch.Tensor | list[torch.Tensor], dtype: torch.dtype | None
) -> torch.Tensor | list[torch.Tensor]:
    if dtype is None or dtype == torch.float32:
        return sets
    return sets.to(dtype) if isinstance(sets, torch.Tensor) else [s.to(dtype) for s in sets]


def load_landmarks(
    path: str | os.PathLike,
    *,
    dim: int = 2,
    one_based_pts: bool = True,
    dtype: torch.dtype | None = torch.float32,
) -> torch.Tensor | list[torch.Tensor]:
    """Load a collection of landmark sets from ``.npy``, ``.npz``, ``.csv``, ``.pts`` or a folder of ``.pts``.

    * ``.npy``/``.npz``: a float array ``(M, N, D)`` (or ``(N, D)`` for one set; ``.npz`` takes the key
      ``landmarks`` or its only array). Object arrays are refused (no pickle).
    * ``.csv`` (or ``.txt``, whitespace or comma separated): wide (one set per row ``x0,y0,x1,y1,...``,
      optional header row and optional first
      column of names; rows of different lengths give a list) or long (header with ``x``, ``y``,
      optional ``z`` and a set column ``id``/``set``/``image``/``name``/``file``).
    * a ``.pts`` file or a folder of ``.pts`` files (sorted by name; searched recursively), 1-based
      coordinates converted to 0-based (``one_based_pts``).

    Args:
        path: file or directory.
        dim: ``D`` for wide CSV rows.
        one_based_pts: subtract 1 from ``.pts`` coordinates (the iBUG convention).
        dtype: ``torch.float32`` (default) or ``torch.float64``; ``None`` keeps a float64 ``.npy``/``.npz``
            array as float64 (everything else loads as float32).

    Returns:
        ``(M, N, D)`` tensor when every set has the same size, else a list of ``(N_i, D)``.

    Raises:
        FileNotFoundError: ``path`` does not exist (or a folder holds no ``.pts``).
        ValueError: the file is unreadable (binary, truncated, object/pickled arrays), holds NaN, inf,
            complex or non-numeric values, or has the wrong shape; the message starts with the path.

    Example:
        >>> load_landmarks("train_landmarks.npy").shape  # doctest: +SKIP
        torch.Size([3148, 68, 2])
    """
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    if dtype not in (None, torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32, torch.float64 or None, got {dtype}")
    p = _path(path, "landmark file or folder")
    if p.is_dir():
        files = sorted(p.rglob("*.pts"))
        if not files:
            raise FileNotFoundError(
                f"{p}: no .pts files in this folder; expected <name>.pts files ({PTS_LAYOUT})"
            )
        return _cast(_stack_or_list([read_pts(f, one_based=one_based_pts) for f in files]), dtype)
    suffix = p.suffix.lower()
    if suffix == ".pts":
        return _cast(read_pts(p, one_based=one_based_pts).unsqueeze(0), dtype)
    if suffix in (".npy", ".npz"):
        arr = _load_array(p)
        if dtype is None:
            dtype = torch.float64 if arr.dtype == np.float64 else torch.float32
        return torch.from_numpy(arr.astype(np.float64 if dtype == torch.float64 else np.float32))
    if suffix in (".csv", ".txt"):
        return _cast(_load_csv(p, dim), dtype)
    raise ValueError(
        f"{p}: unsupported landmark file type {suffix!r}; expected .npy, .npz, .csv, .pts or a folder"
    )
