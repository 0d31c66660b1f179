r"""torchvision v2 transform: Wasserstein-barycentric landmark augmentation (Bespalov et al., §3.1).

:class:`RandomBarycentricLandmarks` acts on samples such as ``(image, KeyPoints)``, dicts or any nested
structure inside ``v2.Compose``. With probability ``p`` it replaces the key-points by a random barycenter
of a clique around them (:meth:`WassersteinBarycentricSampler.sample_around`); in paired mode it also warps
the image (and masks) with a thin-plate spline so that the image follows its new landmarks.

Randomness and workers: parameters are drawn in :meth:`make_params` from a private ``torch.Generator``
(or the one passed in). In a DataLoader worker it is seeded from ``get_worker_info().seed`` (drawn by the
DataLoader from its ``generator=``, ``base_seed + worker_id``: distinct per worker, reproducible run to
run), mixed with ``seed``; in the main process from ``seed`` if given, else ``torch.initial_seed()``. The
global RNG state is never used or modified.
"""

from __future__ import annotations

import os
from typing import Any

import PIL.Image
import torch
from torch import Tensor
from torch.utils.data import get_worker_info
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from wbaug._checks import check_generator
from wbaug.sampling.dataset import mix_seed
from wbaug.transforms.tps import tps_grid

__all__ = ["RandomBarycentricLandmarks"]


class RandomBarycentricLandmarks(v2.Transform):
    r"""Replace ``KeyPoints`` by a random Wasserstein barycenter of a clique around them (Algorithm 2).

    Args:
        sampler: a fitted :class:`~wbaug.sampling.WassersteinBarycentricSampler` (equal-size landmark sets,
            same pixel frame as the key-points).
        p: probability of augmenting a sample.
        paired: also warp images/masks with a TPS so the image follows its landmarks (unpaired mode
            leaves images untouched: the "landmarks domain" of an unpaired method).
        canvas_size: expected ``(H, W)`` of the key-points (checked against ``KeyPoints.canvas_size``;
            ``None``: not checked).
        grid_stride: TPS map evaluated every ``grid_stride`` pixels (1: exact; see :func:`tps_warp_image`).
        tps_regularization: TPS smoothing ``λ >= 0``.
        padding_mode: ``grid_sample`` padding of the warp (``"zeros"``, ``"border"``, ``"reflection"``).
        seed: optional base seed of the private generator (see module docstring).
        generator: explicit generator (takes precedence over ``seed``; shared by all workers after a fork).

    Shapes: ``KeyPoints`` ``(N, 2)`` or ``(K, N, 2)`` (``K`` landmark sets per sample, unpaired only);
    images ``(C, H, W)`` tensors, ``tv_tensors.Image`` or PIL images; masks ``tv_tensors.Mask``.

    Example:
        >>> t = v2.Compose(  # doctest: +SKIP
        ...     [v2.ToImage(), RandomBarycentricLandmarks(sampler, p=0.5, paired=True)])
        >>> image, keypoints = t(image, keypoints)  # doctest: +SKIP
    """

    _transformed_types = (tv_tensors.KeyPoints, tv_tensors.Image, tv_tensors.Mask, PIL.Image.Image, Tensor)

    def __init__(
        self,
        sampler: Any,
        *,
        p: float = 0.5,
        paired: bool = False,
        canvas_size: tuple[int, int] | None = None,
        grid_stride: int = 1,
        tps_regularization: float = 0.0,
        padding_mode: str = "border",
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not getattr(sampler, "is_fitted", False):
            raise ValueError("sampler must be a fitted WassersteinBarycentricSampler")
        if not isinstance(sampler.landmarks_, Tensor):
            raise ValueError("sampler must be fitted on equal-size landmark sets (a tensor (M, N, D))")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        if canvas_size is not None and (len(canvas_size) != 2 or min(canvas_size) < 1):
            raise ValueError(f"canvas_size must be (H, W) with positive ints or None, got {canvas_size!r}")
        check_generator(generator)
        if padding_mode not in ("zeros", "border", "reflection"):
            raise ValueError(f"padding_mode must be 'zeros', 'border' or 'reflection', got {padding_mode!r}")
        self.sampler = sampler
        self.p = float(p)
        self.paired = bool(paired)
        self.canvas_size = None if canvas_size is None else (int(canvas_size[0]), int(canvas_size[1]))
        self.grid_stride = grid_stride
        self.tps_regularization = float(tps_regularization)
        self.padding_mode = padding_mode
        self.seed = seed
        self.generator = generator
        self._gen: torch.Generator | None = None
        self._gen_key: tuple | None = None

    # -------------------------------------------------------------- randomness
    def _generator(self) -> torch.Generator:
        if self.generator is not None:
            return self.generator
        info = get_worker_info()
        key = (os.getpid(), None if info is None else (info.id, info.seed))
        if self._gen is None or self._gen_key != key:
            if info is not None:
                seed = mix_seed(0 if self.seed is None else self.seed, info.seed)
            else:
                seed = mix_seed(self.seed) if self.seed is not None else torch.initial_seed()
            self._gen = torch.Generator().manual_seed(seed)
            self._gen_key = key
        return self._gen

    # -------------------------------------------------------------- v2 protocol
    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        keypoints = [x for x in flat_inputs if isinstance(x, tv_tensors.KeyPoints)]
        if len(keypoints) != 1:
            raise ValueError(
                "RandomBarycentricLandmarks needs exactly one tv_tensors.KeyPoints per sample, "
                f"found {len(keypoints)}"
            )
        kp = keypoints[0]
        if self.canvas_size is not None and tuple(kp.canvas_size) != self.canvas_size:
            raise ValueError(
                f"canvas_size mismatch: the transform expects key-points on a {self.canvas_size} canvas, got "
                f"KeyPoints.canvas_size={tuple(kp.canvas_size)} "
                "(resize/crop before fitting or pass canvas_size)"
            )
        data = kp.as_subclass(Tensor)
        n, d = self.sampler.n_points_, self.sampler.n_dims_
        if data.shape[-2:] != (n, d) or data.ndim not in (2, 3):
            raise ValueError(
                f"KeyPoints must have shape ({n}, {d}) or (K, {n}, {d}) like the sampler, got "
                f"{tuple(data.shape)}"
            )
        g = self._generator()
        apply = bool(torch.rand((), generator=g) < self.p)
        params: dict[str, Any] = {"apply": apply, "canvas_size": tuple(kp.canvas_size)}
        if not apply:
            return params
        old = data.reshape(-1, n, d)
        new, info = self.sampler.sample_around(old, generator=g)
        params.update(old=old, new=new, info=info)
        if self.paired:
            if old.shape[0] != 1:
                raise ValueError("paired=True needs a single landmark set (N, 2) per sample")
            h, w = kp.canvas_size
            params["grid"] = tps_grid(
                old.to(torch.float32),
                new.to(torch.float32),
                (h, w),
                regularization=self.tps_regularization,
                grid_stride=self.grid_stride,
            )
        return params

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["apply"]:
            return inpt
        if isinstance(inpt, tv_tensors.KeyPoints):
            new = params["new"].reshape(inpt.shape).to(dtype=inpt.dtype, device=inpt.device)
            return tv_tensors.wrap(new, like=inpt)
        if not self.paired:
            return inpt
        if isinstance(inpt, (tv_tensors.Image, tv_tensors.Video, tv_tensors.Mask, PIL.Image.Image)) or (
            type(inpt) is Tensor
        ):
            return self._warp(inpt, params)
        # per-landmark flags (visibility), boxes and other metadata carry no pixels to warp
        return inpt

    def _warp(self, inpt: Any, params: dict[str, Any]) -> Any:
        h, w = params["canvas_size"]
        if isinstance(inpt, PIL.Image.Image):
            return TF.to_pil_image(self._warp(TF.pil_to_tensor(inpt), params), mode=inpt.mode)
        data = inpt.as_subclass(Tensor) if isinstance(inpt, Tensor) else inpt
        if tuple(data.shape[-2:]) != (h, w):
            raise ValueError(
                f"canvas_size mismatch: image of size {tuple(data.shape[-2:])} with KeyPoints on a "
                f"{(h, w)} canvas"
            )
        lead = data.shape[:-2]
        flat = data.reshape(1, -1, h, w)
        work = flat if flat.is_floating_point() else flat.to(torch.float32)
        grid = params["grid"].to(device=work.device, dtype=work.dtype)
        mode = "nearest" if isinstance(inpt, tv_tensors.Mask) else "bilinear"
        out = torch.nn.functional.grid_sample(
            work, grid, mode=mode, padding_mode=self.padding_mode, align_corners=False
        )
        if not flat.is_floating_point():
            info = torch.iinfo(flat.dtype)
            out = out.round_().clamp_(info.min, info.max).to(flat.dtype)
        out = out.reshape(*lead, h, w)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    def replay(self, inputs: Any, params: dict[str, Any]) -> Any:
        """Apply previously drawn ``params`` (from :meth:`make_params`) to ``inputs`` (a replayable draw)."""
        from torch.utils._pytree import tree_flatten, tree_unflatten

        flat, spec = tree_flatten(inputs)
        needs = self._needs_transform_list(flat)
        return tree_unflatten([self.transform(x, params) if nd else x for x, nd in zip(flat, needs)], spec)
