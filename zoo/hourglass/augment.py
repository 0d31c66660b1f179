r"""Barycentric augmentation for the hourglass trainer: the sampler's paired warp on the network canvas.

A :class:`wbaug.sampling.WassersteinBarycentricSampler` (Bespalov et al., *Data augmentation with manifold
barycenters*, Algorithm 2) is fitted on the **labelled** training landmarks expressed on the ``S × S``
canvas. For a training sample it draws a clique around the sample's own landmark set,
:math:`\lambda \sim \mathrm{Dir}(\alpha)`, and the barycenter :math:`\bar\mu(\lambda)` with the sample in its
slot (:meth:`~wbaug.sampling.WassersteinBarycentricSampler.sample_around`);
:class:`wbaug.transforms.barycentric.RandomBarycentricLandmarks` (``paired=True``) then TPS-warps the image
so that it follows the new landmarks. The result is a new image with new landmarks ("baseline + BC" of
Table 1), drawn from the per-sample generator the trainer passes in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors

from zoo.hourglass.config import HourglassConfig
from zoo.hourglass.data import DataSplits, canvas_landmarks

__all__ = ["BarycentricWarp", "build_barycentric_warp"]


class BarycentricWarp:
    """Callable ``(image (C, S, S), landmarks (N, 2), *, generator, position) -> (image, landmarks)``.

    Args:
        transform: a paired :class:`~wbaug.transforms.barycentric.RandomBarycentricLandmarks` with ``p=1``.
        size: canvas side ``S``.
    """

    def __init__(self, transform: Any, size: int) -> None:
        self.transform = transform
        self.size = size

    def __call__(
        self, image: Tensor, landmarks: Tensor, *, generator: torch.Generator, position: int | None = None
    ) -> tuple[Tensor, Tensor]:
        self.transform.generator = generator  # one draw per sample, replayable from the sample seed
        out_image, out_kp = self.transform(
            tv_tensors.Image(image), tv_tensors.KeyPoints(landmarks, canvas_size=(self.size, self.size))
        )
        return out_image.as_subclass(Tensor), out_kp.as_subclass(Tensor).to(landmarks.dtype)


def build_barycentric_warp(
    cfg: HourglassConfig, splits: DataSplits, *, progress: bool = False
) -> BarycentricWarp:
    """Fit the sampler on the labelled canvas landmarks of ``splits`` and wrap the paired TPS warp."""
    from wbaug.sampling import WassersteinBarycentricSampler
    from wbaug.transforms.barycentric import RandomBarycentricLandmarks

    size = cfg.data.image_size
    landmarks = canvas_landmarks(splits, splits.labelled, size)
    m = landmarks.shape[0]
    if m < 2:
        raise ValueError(f"barycentric augmentation needs at least 2 labelled images, got {m}")
    sampler = WassersteinBarycentricSampler(
        k_neighbors=min(cfg.aug.k_neighbors, m - 1),
        concentration=cfg.aug.concentration,
        correspondence=cfg.aug.correspondence,
        progress=progress,
    ).fit(landmarks)
    transform = RandomBarycentricLandmarks(
        sampler, p=1.0, paired=True, canvas_size=(size, size), grid_stride=cfg.aug.tps_grid_stride
    )
    return BarycentricWarp(transform, size)
