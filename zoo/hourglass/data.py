r"""Data for the hourglass trainer: dataset construction, label budgets, augmentation, multi-view samples.

Every training sample is a dict of **views** of one image (``V = 1``, or ``V = 2`` for the equivariant
loss)::

    {"images": (V, C, S, S) float in [0, 1], "landmarks": (V, N, 2) pixel (x, y),
     "matrices": (V, 3, 3) canvas → view maps, "labelled": bool, "index": int}

Geometry (pixel centres at integers, ``docs/conventions.md``): a sample is first brought to the
``S × S`` network *canvas* (identity for the synthetic faces rendered at ``S``; a landmark-box crop for
file readers), optionally replaced by a **barycentric** sample (the sampler's paired warp: a new
landmark set and the image TPS-warped onto it), optionally given a **classical** similarity
``A`` (scale ``1 ± 0.1``, rotation ``± π/12``, applied with probability 0.3), and finally warped by each
view's matrix ``T_v`` (identity without ELT; for ELT a rotation ``± elt.rotate`` about the centre and a
translation ``± elt.translate · S``, as in the thesis' §3.3.3). One ``grid_sample`` per view applies
``T_v A`` at once. ``matrices`` holds ``T_v`` (maps from the pre-view canvas to view ``v``), which is
what :class:`wbaug.losses.EquivariantLandmarkLoss` needs.

Randomness: the trainer's :class:`zoo.common.ShardedEpochSampler` yields ``(index, sample_seed)``;
each sample draws everything from ``torch.Generator().manual_seed(sample_seed)``, so augmentation is
the same for any number of workers and is replayed exactly after ``--resume``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

import torch
from torch import Tensor

from wbaug.transforms import apply_barycentric, draw_barycentric_params, warp_affine_crop
from zoo.common.seeding import derive_seed, make_generator
from zoo.hourglass.config import AugConfig, DataConfig, EltConfig

__all__ = [
    "DataSplits",
    "EvalSet",
    "TrainSet",
    "build_splits",
    "canvas_landmarks",
    "canvas_matrix",
    "collate_views",
    "random_similarity",
    "sample_to_tensors",
    "warp_images",
]


# ----------------------------------------------------------------------------------------- geometry
def random_similarity(
    n: int,
    size: int,
    *,
    scale: float = 0.0,
    rotate: float = 0.0,
    translate: float = 0.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""``(n, 3, 3)`` random similarities of an ``size × size`` canvas about its centre ``c``:

    .. math:: T(p) = s R(\theta) (p - c) + c + t,\quad s \sim U(1 \pm scale),\ \theta \sim U(\pm rotate),\
        t \sim U(\pm translate \cdot size)^2.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    u = torch.rand(n, 4, generator=generator, dtype=torch.float64) * 2 - 1
    s = 1 + scale * u[:, 0]
    theta = rotate * u[:, 1]
    t = translate * size * u[:, 2:]
    c = (size - 1) / 2
    cos, sin = s * torch.cos(theta), s * torch.sin(theta)
    m = torch.zeros(n, 3, 3, dtype=torch.float64)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    m[:, 0, 2] = c - cos * c + sin * c + t[:, 0]
    m[:, 1, 2] = c - sin * c - cos * c + t[:, 1]
    m[:, 2, 2] = 1
    return m.to(dtype)


def canvas_matrix(landmarks: Tensor, size: int, *, margin: float = 1.3) -> Tensor:
    """``(3, 3)`` similarity mapping a square box around ``landmarks`` ``(N, 2)`` (side ``margin`` × the
    larger extent, centred on the box centre) onto the ``size × size`` canvas."""
    lo, hi = landmarks.amin(0), landmarks.amax(0)
    centre = (lo + hi) / 2
    side = float((hi - lo).max()) * margin
    if not side > 0:
        raise ValueError("landmarks must span a non-degenerate box")
    s = size / side
    c = (size - 1) / 2
    m = torch.eye(3, dtype=torch.float64)
    m[0, 0] = m[1, 1] = s
    m[0, 2] = c - s * float(centre[0])
    m[1, 2] = c - s * float(centre[1])
    return m.to(landmarks.dtype)


def warp_images(images: Tensor, matrices: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Warp ``images`` ``(B, C, H, W)`` by affine ``matrices`` ``(B, 3, 3)`` (source pixel → output
    pixel) onto an output of ``size`` with bilinear sampling and zero padding (pixel centres at
    integers): wbaug's :func:`~wbaug.transforms.warp_affine_crop` on float images.

    A landmark ``p`` of the source image sits at ``matrices @ p`` in the output.
    """
    if images.ndim != 4 or matrices.shape != (images.shape[0], 3, 3):
        raise ValueError(
            f"images must be (B, C, H, W) and matrices (B, 3, 3), got {tuple(images.shape)}, "
            f"{tuple(matrices.shape)}"
        )
    work = images if images.is_floating_point() else images.to(torch.float32)
    return warp_affine_crop(work, matrices.to(work.dtype), size)


def _apply(matrix: Tensor, points: Tensor) -> Tensor:
    return points @ matrix[..., :2, :2].transpose(-1, -2) + matrix[..., :2, 2].unsqueeze(-2)


# ------------------------------------------------------------------------------------ sample parsing
def sample_to_tensors(sample: Any) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Normalise a wbaug dataset sample to ``(image (C, H, W) float in [0, 1], landmarks (N, 2), meta)``.

    Accepts ``(image, keypoints)`` / ``(image, keypoints, meta)`` tuples (torchvision ``tv_tensors`` or
    plain tensors, uint8 or float) and wbaug sample dicts with ``image`` plus ``keypoints`` (or
    ``landmarks``); the other entries and the contents of ``sample["meta"]`` (e.g. WFLW
    ``attributes``) are returned in ``meta``.
    """
    meta: dict[str, Any] = {}
    if isinstance(sample, dict):
        image = sample["image"]
        key = "landmarks" if "landmarks" in sample else "keypoints"
        landmarks = sample[key]
        meta = {k: v for k, v in sample.items() if k not in ("image", key, "meta")}
        if isinstance(sample.get("meta"), dict):
            meta.update(sample["meta"])
    elif isinstance(sample, (tuple, list)) and len(sample) in (2, 3):
        image, landmarks = sample[0], sample[1]
        if len(sample) == 3 and isinstance(sample[2], dict):
            meta = dict(sample[2])
    else:
        raise TypeError(f"sample must be an (image, landmarks) tuple or a dict, got {type(sample).__name__}")
    image = torch.as_tensor(image).as_subclass(Tensor)
    if image.ndim == 2:
        image = image.unsqueeze(0)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {tuple(image.shape)}")
    image = image.float() / 255.0 if not image.is_floating_point() else image.float()
    landmarks = torch.as_tensor(landmarks).as_subclass(Tensor).float().reshape(-1, 2)
    return image, landmarks, meta


# ------------------------------------------------------------------------------------------- splits
@dataclass
class DataSplits:
    """Base dataset and index lists: ``labelled``/``unlabelled`` training images, ``val`` images (of
    ``dataset``; empty: validate on the test split) and ``test`` images (of ``test_dataset``)."""

    dataset: Any
    labelled: list[int]
    unlabelled: list[int]
    test: list[int]
    val: list[int] = dataclass_field(default_factory=list)
    test_dataset: Any = None
    layout: str = "ibug68"
    native_canvas: bool = False
    crop_margin: float = 1.25

    @property
    def num_landmarks(self) -> int:
        _, lm, _ = sample_to_tensors(self.dataset[self.labelled[0]])
        return lm.shape[0]


_READERS = {
    "300w": "Face300W",
    "wflw": "WFLW",
    "celeba": "CelebA",
    "h36m": "Human36M",
    "folder": "LandmarkFolder",
}


def build_splits(cfg: DataConfig) -> DataSplits:
    """Build train (labelled + unlabelled) and test index lists for ``cfg``.

    ``synthetic``: one :class:`wbaug.datasets.SyntheticFaces` of ``num_train + num_val + num_test`` images
    rendered at ``render_size`` (default ``image_size``): training, validation, then the held-out test
    images. File readers: ``<Reader>(root, split="train")`` and ``split="test"`` (no validation split: the
    plateau schedule then watches the test split). In both cases a permutation
    seeded by ``data_seed`` picks the first ``label_budget`` training images as labelled.
    """
    import wbaug.datasets as wds

    if cfg.dataset == "synthetic":
        total = cfg.num_train + cfg.num_val + cfg.num_test
        faces_cls = getattr(wds, "SyntheticFaces", None)
        if faces_cls is None:  # not re-exported by every wbaug version
            from wbaug.datasets.synthetic import SyntheticFaces as faces_cls
        ds = faces_cls(total, image_size=cfg.render_size or cfg.image_size, seed=cfg.data_seed)
        train_idx = list(range(cfg.num_train))
        val_idx = list(range(cfg.num_train, cfg.num_train + cfg.num_val))
        test_idx = list(range(cfg.num_train + cfg.num_val, total))
        test_ds, native = ds, not cfg.face_crop
    elif cfg.dataset in _READERS:
        if cfg.root is None:
            raise ValueError(f"data.root is required for dataset {cfg.dataset!r}")
        reader = getattr(wds, _READERS[cfg.dataset])
        ds = reader(cfg.root, split="train")
        test_ds = reader(cfg.root, split="test")
        train_idx = list(range(len(ds)))
        test_idx = list(range(len(test_ds)))
        val_idx = []
        native = False
    else:
        raise ValueError(
            f"data.dataset must be 'synthetic' or one of {sorted(_READERS)}, got {cfg.dataset!r}"
        )
    perm = torch.randperm(len(train_idx), generator=make_generator(derive_seed(cfg.data_seed, "labels")))
    order = [train_idx[i] for i in perm.tolist()]
    budget = len(order) if cfg.label_budget is None else cfg.label_budget
    if not 0 < budget <= len(order):
        raise ValueError(f"data.label_budget must be in [1, {len(order)}], got {cfg.label_budget}")
    return DataSplits(
        dataset=ds,
        labelled=order[:budget],
        unlabelled=order[budget:],
        test=test_idx,
        val=val_idx,
        test_dataset=test_ds,
        layout=cfg.layout,
        native_canvas=native,
        crop_margin=cfg.crop_margin,
    )


# ------------------------------------------------------------------------------------------ datasets
def canvas_landmarks(splits: DataSplits, indices: Sequence[int], size: int) -> Tensor:
    """``(M, N, 2)`` landmarks of dataset ``indices`` on the ``size × size`` canvas, without decoding
    images when the dataset offers ``landmarks()`` (wbaug readers, synthetic faces)."""
    ds = splits.dataset
    all_lm = ds.landmarks() if hasattr(ds, "landmarks") and callable(ds.landmarks) else None
    out = []
    for i in indices:
        if isinstance(all_lm, Tensor):
            lm = all_lm[i].float()
            hw = _canvas_size_of(ds, i)
        else:
            image, lm, _ = sample_to_tensors(ds[i])
            hw = tuple(image.shape[-2:])
        out.append(_apply(_canvas_transform(lm, hw, size, splits.native_canvas, splits.crop_margin), lm))
    return torch.stack(out)


def _canvas_size_of(ds: Any, i: int) -> tuple[int, int]:
    size = getattr(ds, "image_size", None)
    if isinstance(size, int):
        return size, size
    image, _, _ = sample_to_tensors(ds[i])
    return tuple(image.shape[-2:])


def _canvas_transform(
    landmarks: Tensor, hw: tuple[int, int], size: int, native: bool, margin: float
) -> Tensor:
    """``(3, 3)`` map from an image of size ``hw`` to the canvas (see :func:`_to_canvas`)."""
    if native:
        m = torch.diag(torch.tensor([size / hw[1], size / hw[0], 1.0]))
        m[:2, 2] = m.diagonal()[:2] * 0.5 - 0.5  # pixel centres at integers: x' = s (x + 1/2) - 1/2
        return m
    return canvas_matrix(landmarks, size, margin=margin)


def _to_canvas(
    image: Tensor, landmarks: Tensor, size: int, native: bool, margin: float = 1.25
) -> tuple[Tensor, Tensor]:
    """The image on the ``size × size`` canvas: as is when ``native`` and already that size, otherwise the
    square landmark box enlarged by ``margin`` (resized when ``native`` but of another size)."""
    if native and image.shape[-1] == size and image.shape[-2] == size:
        return image, landmarks
    m = _canvas_transform(landmarks, tuple(image.shape[-2:]), size, native, margin)
    return warp_images(image[None], m[None], size)[0], _apply(m, landmarks)


class TrainSet(torch.utils.data.Dataset):
    """Training samples (views dicts, see module docstring) indexed by ``(position, sample_seed)``.

    Args:
        splits: from :func:`build_splits`.
        indices: positions into ``splits.dataset`` (labelled or unlabelled list).
        image_size: canvas side ``S``.
        aug, elt: augmentation and ELT settings.
        labelled: whether landmarks are used (unlabelled samples return zeros and ``labelled=False``).
        barycentric: a fitted paired :class:`~wbaug.sampling.WassersteinBarycentricSampler` on the canvas
            (see :mod:`zoo.hourglass.augment`), or ``None``.
        cache: keep canvas images in memory.
    """

    def __init__(
        self,
        splits: DataSplits,
        indices: Sequence[int],
        image_size: int,
        aug: AugConfig,
        elt: EltConfig,
        *,
        labelled: bool = True,
        barycentric: Any = None,
        cache: bool = False,
    ) -> None:
        self.splits = splits
        self.indices = list(indices)
        self.size = image_size
        self.aug = aug
        self.elt = elt
        self.labelled = labelled
        self.barycentric = barycentric
        self.cache: dict[int, tuple[Tensor, Tensor]] | None = {} if cache else None

    def canvas(self, pos: int) -> tuple[Tensor, Tensor]:
        """Image ``(C, S, S)`` and landmarks ``(N, 2)`` of position ``pos`` on the canvas (cached if on)."""
        if self.cache is not None and pos in self.cache:
            return self.cache[pos]
        image, landmarks, _ = sample_to_tensors(self.splits.dataset[self.indices[pos]])
        out = _to_canvas(image, landmarks, self.size, self.splits.native_canvas, self.splits.crop_margin)
        if self.cache is not None:
            self.cache[pos] = out
        return out

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Any]:
        pos, seed = key if isinstance(key, tuple) else (key, derive_seed(0, "eval", key))
        g = make_generator(seed)
        image, landmarks = self.canvas(pos)
        u = torch.rand(2, generator=g)
        if self.barycentric is not None and self.labelled and float(u[0]) < self.aug.barycentric_p:
            draw = draw_barycentric_params(
                self.barycentric,
                landmarks,
                paired=True,
                canvas_size=(self.size, self.size),
                generator=g,
                grid_stride=self.barycentric.grid_stride,
            )
            image = apply_barycentric(image, draw, padding_mode=self.barycentric.padding_mode)
            landmarks = draw.landmarks[0].to(landmarks.dtype)
        base = torch.eye(3)
        if self.aug.classical and float(u[1]) < self.aug.classical_p:
            base = random_similarity(1, self.size, scale=self.aug.scale, rotate=self.aug.rotate, generator=g)[
                0
            ]
        if self.elt.enabled:
            views = random_similarity(
                2, self.size, rotate=self.elt.rotate, translate=self.elt.translate, generator=g
            )
        else:
            views = torch.eye(3).unsqueeze(0)
        full = views @ base
        images = warp_images(image.unsqueeze(0).expand(len(views), -1, -1, -1), full, self.size)
        pre_view = _apply(base, landmarks)
        out_landmarks = _apply(views, pre_view.unsqueeze(0).expand(len(views), -1, -1))
        if not self.labelled:
            out_landmarks = torch.zeros_like(out_landmarks)
        return {
            "images": images,
            "landmarks": out_landmarks,
            "matrices": views,
            "labelled": torch.tensor(self.labelled),
            "index": torch.tensor(self.indices[pos]),
        }


LARGE_POSE_DEGREES = 30.0


def _attributes(meta: dict[str, Any]) -> dict[str, Any]:
    """Per-image subset flags: the reader's ``attributes`` (WFLW) or, for data with a known head pose
    (the synthetic faces' ``yaw``), ``large_pose`` = ``|yaw| > 30°``."""
    if isinstance(meta.get("attributes"), dict):
        return meta["attributes"]
    if "yaw" in meta:
        return {"large_pose": abs(float(meta["yaw"])) > math.radians(LARGE_POSE_DEGREES)}
    return {}


class EvalSet(torch.utils.data.Dataset):
    """Test samples on the canvas: ``{"image": (C, S, S), "landmarks": (N, 2), "index", "attributes"}``.

    ``attributes`` is a ``(A,)`` float tensor (NaN-free, 0/1) of the reader's per-image attributes in
    the order of :attr:`attribute_names` (WFLW: pose, expression, illumination, make-up, occlusion,
    blur; synthetic faces: ``large_pose``), empty when the reader has none.
    """

    def __init__(
        self,
        dataset: Any,
        indices: Sequence[int],
        image_size: int,
        *,
        native: bool,
        cache: bool = False,
        crop_margin: float = 1.25,
    ) -> None:
        self.crop_margin = crop_margin
        self.cache: dict[int, dict[str, Any]] | None = {} if cache else None
        self.dataset = dataset
        self.indices = list(indices)
        self.size = image_size
        self.native = native
        _, _, meta = sample_to_tensors(dataset[self.indices[0]]) if self.indices else (None, None, {})
        self.attribute_names: list[str] = sorted(_attributes(meta))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        item = self._load(i)
        if self.cache is not None:
            self.cache[i] = item
        return item

    def _load(self, i: int) -> dict[str, Any]:
        image, landmarks, meta = sample_to_tensors(self.dataset[self.indices[i]])
        image, landmarks = _to_canvas(image, landmarks, self.size, self.native, self.crop_margin)
        attrs = _attributes(meta)
        values = [float(torch.as_tensor(attrs[name]).float().reshape(-1)[0]) for name in self.attribute_names]
        return {
            "image": image,
            "landmarks": landmarks,
            "index": torch.tensor(self.indices[i]),
            "attributes": torch.tensor(values, dtype=torch.float32),
        }


def collate_views(batch: list[dict[str, Any]]) -> dict[str, Tensor]:
    """Stack view dicts: ``images (B, V, C, S, S)``, ``landmarks (B, V, N, 2)``, ``matrices (B, V, 3, 3)``."""
    return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}
