r"""kornia support for Wasserstein-barycentric landmark augmentation on batches ``(B, N, 2)``.

Two shapes, because of how ``kornia.augmentation.AugmentationSequential`` works (see ``design.md``):

* :class:`RandomBarycentricKeypoints` -- a ``GeometricAugmentationBase2D`` with an identity
  ``compute_transformation``: images pass through unchanged, and kornia's keypoint hook
  (``apply_transform_keypoint``) replaces the selected samples' key-points by barycenters. It works as an
  ordinary child of ``AugmentationSequential(..., data_keys=["input", "keypoints"])`` (a plain
  ``AugmentationBase2D`` would have its keypoint hook ignored there). Its ``transform_matrix`` is the
  identity and ``inverse`` cannot undo the replacement.
* :class:`RandomBarycentricWarp` / :func:`barycentric_warp` -- the paired mode (images warped by TPS to
  follow their new landmarks). The warp depends on the key-points, while kornia draws parameters from
  the batch shape before seeing data, so this cannot be a child of ``AugmentationSequential``: call it
  before or after the container, ``images, keypoints = warp(images, keypoints)``.

Randomness: kornia's own ``p`` gate uses kornia's RNG; every barycentric draw uses ``generator``.
"""

from __future__ import annotations

from typing import Any

import torch
from kornia.augmentation import GeometricAugmentationBase2D
from kornia.geometry.keypoints import Keypoints
from torch import Tensor, nn

from wbaug.transforms.tps import tps_warp_image

__all__ = ["RandomBarycentricKeypoints", "RandomBarycentricWarp", "barycentric_warp"]


def _check(sampler: Any) -> None:
    if not getattr(sampler, "is_fitted", False) or not isinstance(
        getattr(sampler, "landmarks_", None), Tensor
    ):
        raise ValueError("sampler must be a WassersteinBarycentricSampler fitted on equal-size landmark sets")


def barycentric_warp(
    images: Tensor | None,
    keypoints: Tensor,
    sampler: Any,
    *,
    p: float = 1.0,
    generator: torch.Generator | None = None,
    paired: bool = True,
    grid_stride: int = 1,
    tps_regularization: float = 0.0,
    padding_mode: str = "border",
) -> tuple[Tensor | None, Tensor]:
    r"""Barycentric augmentation of a batch: each sample is augmented with probability ``p``.

    Args:
        images: ``(B, C, H, W)`` or ``None`` (landmarks only).
        keypoints: ``(B, N, 2)`` pixel coordinates in the sampler's frame.
        sampler: fitted :class:`~wbaug.sampling.WassersteinBarycentricSampler`.
        p: per-sample probability.
        generator: source of randomness.
        paired: warp ``images`` with a TPS from the old to the new landmarks.
        grid_stride, tps_regularization, padding_mode: see :func:`~wbaug.transforms.tps.tps_warp_image`.

    Returns:
        ``(images, keypoints)`` (new tensors; unselected samples unchanged).

    Example:
        >>> imgs, kps = barycentric_warp(imgs, kps, sampler, p=0.5, generator=g)  # doctest: +SKIP
    """
    _check(sampler)
    if not isinstance(keypoints, Tensor) or keypoints.ndim != 3:
        raise ValueError(
            f"keypoints must be a (B, N, 2) tensor, got {getattr(keypoints, 'shape', type(keypoints))}"
        )
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    bsz = keypoints.shape[0]
    dev = generator.device if generator is not None else torch.device("cpu")
    chosen = (torch.rand(bsz, generator=generator, device=dev) < p).cpu()
    new_kp = keypoints.clone()
    out_img = images
    if bool(chosen.any()):
        idx = torch.nonzero(chosen).flatten()
        new, _ = sampler.sample_around(keypoints[idx.to(keypoints.device)], generator=generator)
        new_kp[idx.to(keypoints.device)] = new.to(keypoints.dtype)
        if paired and images is not None:
            if images.ndim != 4 or images.shape[0] != bsz:
                raise ValueError(f"images must have shape ({bsz}, C, H, W), got {tuple(images.shape)}")
            out_img = images.clone()
            sel = idx.to(images.device)
            out_img[sel] = tps_warp_image(
                images[sel],
                keypoints[sel].to(torch.float32),
                new.to(images.device, torch.float32),
                regularization=tps_regularization,
                grid_stride=grid_stride,
                padding_mode=padding_mode,
            )
    return out_img, new_kp


class RandomBarycentricWarp(nn.Module):
    """Module form of :func:`barycentric_warp` (paired by default): ``images, kps = module(images, kps)``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> warp = RandomBarycentricWarp(sampler, p=0.5, generator=g)  # doctest: +SKIP
        >>> images, keypoints = warp(images, keypoints)  # doctest: +SKIP
    """

    def __init__(
        self,
        sampler: Any,
        *,
        p: float = 0.5,
        paired: bool = True,
        generator: torch.Generator | None = None,
        grid_stride: int = 1,
        tps_regularization: float = 0.0,
        padding_mode: str = "border",
    ) -> None:
        super().__init__()
        _check(sampler)
        self.sampler = sampler
        self.p = p
        self.paired = paired
        self.generator = generator
        self.grid_stride = grid_stride
        self.tps_regularization = tps_regularization
        self.padding_mode = padding_mode

    def forward(self, images: Tensor | None, keypoints: Tensor) -> tuple[Tensor | None, Tensor]:
        return barycentric_warp(
            images,
            keypoints,
            self.sampler,
            p=self.p,
            generator=self.generator,
            paired=self.paired,
            grid_stride=self.grid_stride,
            tps_regularization=self.tps_regularization,
            padding_mode=self.padding_mode,
        )


class RandomBarycentricKeypoints(GeometricAugmentationBase2D):
    """kornia augmentation replacing key-points by barycenters (images unchanged), for
    ``AugmentationSequential(..., data_keys=["input", "keypoints"])``.

    Args:
        sampler: fitted sampler (landmarks in the pixel frame of the key-points at this point of the
        pipeline).
        p: per-sample probability (kornia's gate).
        generator: source of the barycentric draws.

    Example:
        >>> aug = kornia.augmentation.AugmentationSequential(
        ...     kornia.augmentation.RandomBrightness(p=0.5), RandomBarycentricKeypoints(sampler, p=0.5),
        ...     data_keys=["input", "keypoints"])  # doctest: +SKIP
        >>> images, keypoints = aug(images, keypoints)  # doctest: +SKIP
    """

    def __init__(self, sampler: Any, *, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__(p=p, same_on_batch=False, keepdim=False)
        _check(sampler)
        self.sampler = sampler
        self.generator = generator

    def compute_transformation(
        self, input: Tensor, params: dict[str, Tensor], flags: dict[str, Any]
    ) -> Tensor:
        return torch.eye(3, device=input.device, dtype=input.dtype).expand(input.shape[0], 3, 3)

    def apply_transform(
        self,
        input: Tensor,
        params: dict[str, Tensor],
        flags: dict[str, Any],
        transform: Tensor | None = None,
    ) -> Tensor:
        return input

    def apply_transform_keypoint(
        self,
        input: Keypoints,
        params: dict[str, Tensor],
        flags: dict[str, Any],
        transform: Tensor | None = None,
    ) -> Keypoints:
        data = input.data
        if data.ndim == 2:
            data = data[None]
        out = data.clone()
        gate = params.get("batch_prob")
        chosen = (
            torch.ones(data.shape[0], dtype=torch.bool) if gate is None else (gate.reshape(-1) > 0.5).cpu()
        )
        if bool(chosen.any()):
            idx = torch.nonzero(chosen).flatten().to(data.device)
            new, _ = self.sampler.sample_around(data[idx], generator=self.generator)
            out[idx] = new.to(out.dtype)
        return Keypoints(out.reshape(input.data.shape))
