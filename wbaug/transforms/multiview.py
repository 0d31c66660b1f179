r"""Multi-view data loading (ELT thesis §3.3.1): shared augmentation steps once, per-view steps independently.

A sample ``(image, landmarks, visibility)`` goes through a sequence of *steps*. During step ``s`` there
are ``V_s`` views (non-decreasing); new views are copies of the last existing view, and every view
draws its own random parameters. ``MultiViewTransform(shared, per_view, num_views=V)`` is the common
two-step case (the thesis' ELT set-up: flip/occlusion/lighting/blur/scale shared, rotation/translation/
crop per view); :meth:`MultiViewTransform.from_steps` gives the general thesis scheme (``I_2`` copied from
``I_1`` after step 1, ``I_3`` from ``I_2`` after step 2, ...).

Every view carries the ``(3, 3)`` matrix from **original** pixel coordinates to its own pixel coordinates
(pixel centres at integers), accumulated over the steps. Its landmarks are the original landmarks mapped
by that matrix — so they follow the image pixels exactly — and, when ``flip_indices`` is given, permuted
whenever the matrix is orientation-reversing (an odd number of mirrors). The equivariant loss maps view
``a`` to view ``b`` with ``matrix_b @ inverse(matrix_a)``.

Step transforms may be

- kornia augmentations or ``AugmentationSequential`` / ``ImageSequential``: run once on the stack of
  views (independent parameters per view); the matrix is their ``transform_matrix``;
- torchvision v2 transforms (anything called like ``t(image, keypoints, ...)``): run per view; the matrix
  is recovered by :func:`wbaug.landmarks.tracking.track_transform` (``track="coordinates"``: exact with
  respect to the image warp; ``"keypoints"``: three probe key-points);
- ``None`` (identity).

Randomness: every call draws one seed per (step, view) from ``generator`` (the global RNG when ``None``)
and runs the step under ``torch.random.fork_rng`` seeded with it, so runs are reproducible without
touching the caller's global RNG state; DataLoader workers get distinct streams.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate, get_worker_info
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from wbaug._checks import check_generator
from wbaug._random import mix_seed
from wbaug.landmarks.geometry import apply_transform, small_det
from wbaug.landmarks.layouts import LandmarkLayout
from wbaug.landmarks.tracking import track_transform
from wbaug.transforms.flip import resolve_flip_indices

__all__ = ["MultiViewTransform", "MultiViewDataset", "multiview_collate", "flatten_views"]


def _is_kornia(t: Any) -> bool:
    try:
        from kornia.augmentation import ImageSequential
        from kornia.augmentation.base import _BasicAugmentationBase
    except ImportError:  # pragma: no cover - kornia is a dependency
        return False
    return isinstance(t, (_BasicAugmentationBase, ImageSequential))


class MultiViewTransform:
    """Produce ``V`` views of one sample with their images, landmarks, visibility and ``(3, 3)`` matrices.

    Args:
        shared: step applied once to the original (kornia, torchvision v2, or ``None``).
        per_view: step applied independently to each of the ``num_views`` copies.
        num_views: ``V >= 1``.
        flip_indices: layout name / :class:`~wbaug.landmarks.LandmarkLayout` / permutation; when given,
            views whose matrix mirrors the image get their landmark indices (and visibility) swapped.
        mark_outside_invisible: set visibility to ``False`` for landmarks outside a view's canvas.
        track: ``"coordinates"`` or ``"keypoints"``, how torchvision matrices are recovered.
        generator: ``torch.Generator`` for the per-view seeds.

    Call ``transform(image (C, H, W), landmarks (N, 2) | None = None, visibility (N,) | None = None)``;
    returns a dict with ``"image"`` ``(V, C, H', W')``, ``"matrix"`` ``(V, 3, 3)``, ``"flipped"`` ``(V,)``
    and, with landmarks, ``"landmarks"`` ``(V, N, 2)`` and ``"visibility"`` ``(V, N)`` bool. All views must
    end with the same image size (finish ``per_view`` with a crop/resize).

    Example:
        >>> import kornia.augmentation as K
        >>> from torchvision.transforms import v2
        >>> mv = MultiViewTransform(v2.ColorJitter(0.3), K.RandomAffine(30.0, p=1.0), num_views=2,
        ...                         flip_indices="ibug68", generator=torch.Generator().manual_seed(0))
        >>> out = mv(torch.rand(3, 64, 64), torch.rand(68, 2) * 63)
        >>> out["image"].shape, out["landmarks"].shape, out["matrix"].shape
        (torch.Size([2, 3, 64, 64]), torch.Size([2, 68, 2]), torch.Size([2, 3, 3]))

    Reference: ELT thesis §3.3.1 (multi-step DataLoader) and §3.3.3 (matrices from original pixels).
    """

    def __init__(
        self,
        shared: Callable[..., Any] | None = None,
        per_view: Callable[..., Any] | None = None,
        num_views: int = 2,
        *,
        flip_indices: str | LandmarkLayout | Sequence[int] | Tensor | None = None,
        mark_outside_invisible: bool = True,
        track: str = "coordinates",
        generator: torch.Generator | None = None,
    ) -> None:
        if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 1:
            raise ValueError(f"num_views must be a positive int, got {num_views!r}")
        self._init([shared, per_view], [1, num_views], flip_indices, mark_outside_invisible, track, generator)

    @classmethod
    def from_steps(
        cls,
        steps: Sequence[Callable[..., Any] | None],
        views: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> MultiViewTransform:
        """General multi-step loader: ``views[s]`` views exist during step ``s`` (default ``1, 2, ..., k``,
        the thesis' scheme where each step adds one copy of the last view).

        Example:
            >>> from torchvision.transforms import v2
            >>> steps = [v2.ColorJitter(0.2), v2.RandomRotation(20), v2.RandomCrop(48)]
            >>> mv = MultiViewTransform.from_steps(steps)
            >>> mv(torch.rand(3, 64, 64))["image"].shape
            torch.Size([3, 3, 48, 48])
        """
        steps = list(steps)
        if not steps:
            raise ValueError("steps must contain at least one step")
        views = list(range(1, len(steps) + 1)) if views is None else list(views)
        if len(views) != len(steps):
            raise ValueError(f"views has length {len(views)} but there are {len(steps)} steps")
        if any(not isinstance(v, int) or v < 1 for v in views) or any(
            b < a for a, b in zip(views, views[1:])
        ):
            raise ValueError(f"views must be positive and non-decreasing, got {views}")
        obj = cls.__new__(cls)
        obj._init(
            steps,
            views,
            kwargs.pop("flip_indices", None),
            kwargs.pop("mark_outside_invisible", True),
            kwargs.pop("track", "coordinates"),
            kwargs.pop("generator", None),
        )
        if kwargs:
            raise TypeError(f"unexpected keyword arguments {sorted(kwargs)}")
        return obj

    def _init(self, steps, views, flip_indices, mark_outside_invisible, track, generator) -> None:
        if track not in ("coordinates", "keypoints"):
            raise ValueError(f"track must be 'coordinates' or 'keypoints', got {track!r}")
        check_generator(generator)
        for s in steps:
            if s is not None and not callable(s):
                raise TypeError(f"every step must be callable or None, got {type(s).__name__}")
        self.steps = list(steps)
        self.views = list(views)
        self.num_views = self.views[-1]
        self.flip_indices = None if flip_indices is None else resolve_flip_indices(flip_indices)
        self.mark_outside_invisible = bool(mark_outside_invisible)
        self.track = track
        self.generator = generator
        self._worker_generator: tuple[int, torch.Generator] | None = None

    # ---------------------------------------------------------------------------------------------
    def _rng(self) -> torch.Generator | None:
        info = get_worker_info()
        if info is None or self.generator is None:
            return self.generator
        if self._worker_generator is None or self._worker_generator[0] != info.seed:
            base = int(self.generator.initial_seed())
            g = torch.Generator().manual_seed(mix_seed(base, int(info.seed)))
            self._worker_generator = (info.seed, g)
        return self._worker_generator[1]

    def _run_step(self, step, images: list[Tensor], current: list[Tensor | None], seeds: list[int]):
        """Apply one step to every view; returns new images and the step matrices ``(n, 3, 3)`` float64."""
        if step is None:
            return images, torch.eye(3, dtype=torch.float64).expand(len(images), 3, 3)
        if _is_kornia(step):
            shapes = {tuple(im.shape) for im in images}
            if len(shapes) != 1:
                raise ValueError(f"kornia steps need equally sized views, got shapes {sorted(shapes)}")
            batch = torch.stack([im.as_subclass(Tensor) for im in images])
            if not batch.is_floating_point():  # kornia works on float images in [0, 1]
                batch = F.to_dtype(batch, torch.float32, scale=True)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seeds[0])
                out = step(batch)
                mat = getattr(step, "transform_matrix", None)
            if isinstance(out, (tuple, list)):
                out = out[0]
            if mat is None:
                raise ValueError(
                    f"{type(step).__name__} exposes no transform_matrix (a non-linear warp?); "
                    "multi-view loading needs (3, 3) matrices"
                )
            mat = mat.detach().to(torch.float64).cpu()
            if mat.shape[0] == 1 and len(images) > 1:
                mat = mat.expand(len(images), 3, 3)
            return list(out.unbind(0)), mat
        outs, mats = [], []
        for im, lm, seed in zip(images, current, seeds):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                o, m = track_transform(step, im, lm, method=self.track)
            outs.append(o)
            mats.append(m)
        return outs, torch.stack(mats)

    def _landmarks(self, original: Tensor, mats: Tensor) -> tuple[Tensor, Tensor]:
        mats = mats.to(original.device)
        pts = apply_transform(original.to(torch.float64).expand(mats.shape[0], -1, -1), mats)
        flipped = small_det(mats[:, :2, :2]) < 0
        if self.flip_indices is not None and bool(flipped.any()):
            pts = torch.where(flipped[:, None, None], pts[:, self.flip_indices.to(pts.device)], pts)
        return pts, flipped

    def __call__(
        self, image: Tensor, landmarks: Tensor | None = None, visibility: Tensor | None = None
    ) -> dict[str, Tensor]:
        if not isinstance(image, Tensor) or image.ndim != 3:
            raise ValueError(f"image must be a (C, H, W) tensor, got {getattr(image, 'shape', type(image))}")
        if landmarks is not None:
            if not isinstance(landmarks, Tensor) or landmarks.ndim != 2 or landmarks.shape[-1] != 2:
                raise ValueError(
                    f"landmarks must be a (N, 2) tensor, got {getattr(landmarks, 'shape', None)}"
                )
            if self.flip_indices is not None and self.flip_indices.numel() != landmarks.shape[0]:
                raise ValueError(
                    f"flip_indices has length {self.flip_indices.numel()} but there are "
                    f"{landmarks.shape[0]} landmarks"
                )
            landmarks = landmarks.as_subclass(Tensor)
            if not landmarks.is_floating_point():
                landmarks = landmarks.float()
        if visibility is not None:
            if landmarks is None:
                raise ValueError("visibility was given without landmarks")
            if not isinstance(visibility, Tensor) or visibility.shape != landmarks.shape[:1]:
                raise ValueError(f"visibility must have shape ({landmarks.shape[0]},)")
            visibility = visibility.as_subclass(Tensor).bool()
        g = self._rng()
        images = [image.as_subclass(Tensor)]
        mats = torch.eye(3, dtype=torch.float64)[None]
        for step, n in zip(self.steps, self.views):
            while len(images) < n:  # new views copy the last existing view
                images.append(images[-1])
                mats = torch.cat([mats, mats[-1:]])
            seeds = torch.randint(0, 2**62, (n,), generator=g).tolist()
            current: list[Tensor | None] = [None] * n
            if landmarks is not None:
                current = list(self._landmarks(landmarks, mats)[0].to(landmarks.dtype).unbind(0))
            images, step_mats = self._run_step(step, images, current, seeds)
            mats = step_mats @ mats
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) != 1:
            raise ValueError(
                f"views ended with different image shapes {sorted(shapes)}; end with a crop/resize"
            )
        dtype = landmarks.dtype if landmarks is not None else torch.float32
        device = landmarks.device if landmarks is not None else image.device
        out: dict[str, Tensor] = {"image": torch.stack(images), "matrix": mats.to(dtype=dtype, device=device)}
        ref = landmarks if landmarks is not None else torch.zeros(0, 2, device=device)
        pts, flipped = self._landmarks(ref, mats)
        out["flipped"] = flipped
        if landmarks is not None:
            h, w = out["image"].shape[-2:]
            vis = torch.ones_like(landmarks[:, 0], dtype=torch.bool) if visibility is None else visibility
            vis = vis.to(pts.device).expand(len(images), -1)
            if self.flip_indices is not None:
                vis = torch.where(flipped[:, None], vis[:, self.flip_indices.to(vis.device)], vis)
            if self.mark_outside_invisible:
                inside = (pts[..., 0] >= -0.5) & (pts[..., 0] <= w - 0.5)
                inside &= (pts[..., 1] >= -0.5) & (pts[..., 1] <= h - 0.5)
                vis = vis & inside
            out["landmarks"] = pts.to(dtype=landmarks.dtype, device=landmarks.device)
            out["visibility"] = vis.to(landmarks.device)
        return out

    def __repr__(self) -> str:
        steps = ", ".join(
            f"{v}x {type(s).__name__ if s is not None else 'Identity'}"
            for s, v in zip(self.steps, self.views)
        )
        return f"{type(self).__name__}(steps=[{steps}], track={self.track!r})"


class MultiViewDataset(Dataset):
    """Wrap a landmark dataset so that each item is a multi-view dict from :class:`MultiViewTransform`.

    The base dataset may return ``(image, landmarks)``, ``(image, landmarks, visibility)``, an image
    alone (unlabelled), or a dict with ``"image"`` and optional ``"landmarks"`` / ``"visibility"``
    (other dict entries, e.g. the datasets' ``"box"`` and ``"meta"``, are passed through untouched, in
    original image coordinates). Batches collate with :func:`multiview_collate` into ``(B, V, ...)``
    tensors.

    Example:
        >>> from torch.utils.data import DataLoader
        >>> from torchvision.transforms import v2
        >>> base = [(torch.rand(3, 32, 32), torch.rand(5, 2) * 31) for _ in range(4)]
        >>> ds = MultiViewDataset(base, MultiViewTransform(None, v2.RandomRotation(15), num_views=2))
        >>> batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=multiview_collate)))
        >>> batch["image"].shape, batch["matrix"].shape
        (torch.Size([4, 2, 3, 32, 32]), torch.Size([4, 2, 3, 3]))
    """

    def __init__(self, dataset: Any, transform: MultiViewTransform) -> None:
        if not isinstance(transform, MultiViewTransform):
            raise TypeError(f"transform must be a MultiViewTransform, got {type(transform).__name__}")
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        item = self.dataset[index]
        extra: dict[str, Any] = {}
        if isinstance(item, dict):
            extra = {k: v for k, v in item.items() if k not in ("image", "landmarks", "visibility")}
            image, landmarks, vis = item["image"], item.get("landmarks"), item.get("visibility")
        elif isinstance(item, (tuple, list)):
            if not 1 <= len(item) <= 3:
                raise ValueError(
                    f"dataset items must be (image[, landmarks[, visibility]]), got {len(item)} parts"
                )
            image, landmarks, vis = (list(item) + [None, None])[:3]
        else:
            image, landmarks, vis = item, None, None
        out = self.transform(image, landmarks, vis)
        out.update(extra)
        return out


def _plain(x: Any) -> Any:
    if isinstance(x, tv_tensors.TVTensor):
        return x.as_subclass(Tensor)
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def multiview_collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate multi-view dicts into ``(B, V, ...)`` plain tensors (tv_tensor types dropped).

    Entries ``default_collate`` cannot stack (``None``, boxes of different sizes, ragged metadata) are
    returned as lists.
    """
    if not batch:
        raise ValueError("batch must not be empty")
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [_plain(b[key]) for b in batch]
        try:
            out[key] = default_collate(values)
        except (TypeError, RuntimeError):
            out[key] = values
    return out


def flatten_views(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """``(B, V, ...)`` -> ``(V * B, ...)``, view-major (as in the thesis: ``out[v * B + b]`` is view ``v``
    of sample ``b``), so ``tensor.chunk(V)`` returns the per-view batches. Non-view entries are dropped.

    Example:
        >>> flatten_views({"image": torch.zeros(4, 2, 3, 8, 8)})["image"].shape
        torch.Size([8, 3, 8, 8])
    """
    keys = ("image", "landmarks", "visibility", "matrix", "flipped")
    out = {}
    for k in keys:
        if k in batch:
            t = batch[k]
            out[k] = t.transpose(0, 1).reshape(t.shape[0] * t.shape[1], *t.shape[2:])
    return out
