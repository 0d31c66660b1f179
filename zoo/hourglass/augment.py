r"""Barycentric augmentation for the hourglass trainer: the sampler fitted on the network canvas.

A :class:`wbaug.sampling.WassersteinBarycentricSampler` (Bespalov et al., *Data augmentation with manifold
barycenters*, Algorithm 2) is fitted on the **labelled** training landmarks expressed on the ``S × S``
canvas, in paired mode. :class:`zoo.hourglass.data.TrainSet` draws, for a training sample, a clique around
the sample's own landmark set, :math:`\lambda \sim \mathrm{Dir}(\alpha)` and the barycenter with the sample
in its slot, then TPS-warps the image so that it follows the new landmarks
(:func:`wbaug.transforms.draw_barycentric_params` / :func:`wbaug.transforms.apply_barycentric` with the
per-sample generator, so the draw is replayable from the sample seed): a new image with new landmarks
("baseline + BC" of Table 1).
"""

from __future__ import annotations

from wbaug.sampling import WassersteinBarycentricSampler
from zoo.hourglass.config import HourglassConfig
from zoo.hourglass.data import DataSplits, canvas_landmarks

__all__ = ["build_barycentric_sampler"]


def build_barycentric_sampler(
    cfg: HourglassConfig, splits: DataSplits, *, progress: bool = False
) -> WassersteinBarycentricSampler:
    """Fit the paired sampler on the labelled canvas landmarks of ``splits``."""
    size = cfg.data.image_size
    landmarks = canvas_landmarks(splits, splits.labelled, size)
    m = landmarks.shape[0]
    if m < 2:
        raise ValueError(f"barycentric augmentation needs at least 2 labelled images, got {m}")
    return WassersteinBarycentricSampler(
        k_neighbors=min(cfg.aug.k_neighbors, m - 1),
        concentration=cfg.aug.concentration,
        correspondence=cfg.aug.correspondence,
        progress=progress,
        p=1.0,
        paired=True,
        frame="fitted",
        grid_stride=cfg.aug.tps_grid_stride,
    ).fit(landmarks, canvas_size=(size, size))
