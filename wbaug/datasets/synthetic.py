"""``SyntheticFaces``: a torch Dataset of rendered face images with 68 iBUG landmarks (no files)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from wbaug._checks import check_generator
from wbaug._random import mix_seed
from wbaug.datasets.base import LandmarkDataset, landmark_box
from wbaug.datasets.render import render_faces
from wbaug.datasets.synthetic_faces import synthetic_faces

__all__ = ["SyntheticFaces", "sample_seed"]



def sample_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for sample ``index`` of a dataset seeded with ``seed``
    (:func:`wbaug._random.mix_seed`, the package's one mixing rule)."""
    return mix_seed(seed, index)


class SyntheticFaces(LandmarkDataset):
    """Rendered synthetic faces with 68-point iBUG landmarks; the embedded default dataset of wbaug.

    All landmark sets are drawn once at construction by :func:`synthetic_faces` from ``seed`` (a few
    milliseconds for thousands of faces); sample ``i``'s image is rendered on demand by
    :func:`~wbaug.datasets.render.render_faces` with a generator seeded by ``(seed, i)``, so sample
    ``i`` is identical in every process and DataLoader worker, whatever the access order.

    A sample (``output="dict"``) is::

        {"image": tv_tensors.Image uint8 (3, S, S),
         "landmarks": tv_tensors.KeyPoints float32 (68, 2), canvas_size=(S, S),
         "visibility": bool (68,)  (False on the far side of the jaw at large yaw),
         "box": tv_tensors.BoundingBoxes (1, 4) XYXY, the landmarks' extent,
         "meta": {"index", "seed", "yaw", "pitch", "roll" (radians)}}

    and works unchanged inside ``v2.Compose``; ``output="tuple"`` gives ``(image, keypoints)``.

    Args:
        n: number of samples.
        image_size: side ``S`` of the square images.
        seed: integer seed of the whole dataset.
        generator: alternatively, a generator from which the seed is drawn (overrides ``seed``).
        transforms: callable applied to each sample.
        load_images: False skips rendering (samples without ``"image"``).
        output: ``"dict"`` or ``"tuple"``.
        noise: pixel noise of the renderer (0-255 scale).
        **face_kwargs: forwarded to :func:`synthetic_faces` (``max_yaw``, ``pose_std``, ``expression``).

    Example:
        >>> from torchvision.transforms import v2
        >>> ds = SyntheticFaces(8, image_size=128, seed=0, transforms=v2.RandomHorizontalFlip(1.0))
        >>> s = ds[3]
        >>> s["image"].shape, s["landmarks"].shape
        (torch.Size([3, 128, 128]), torch.Size([68, 2]))
        >>> ds.landmarks().shape
        torch.Size([8, 68, 2])
    """

    def __init__(
        self,
        n: int = 1000,
        *,
        image_size: int = 256,
        seed: int = 0,
        generator: torch.Generator | None = None,
        transforms: Callable[[Any], Any] | None = None,
        load_images: bool = True,
        output: str = "dict",
        noise: float = 3.0,
        **face_kwargs: Any,
    ) -> None:
        super().__init__(transforms=transforms, load_images=load_images, output=output)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        if generator is not None:
            check_generator(generator)
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        if noise < 0:
            raise ValueError(f"noise must be non-negative, got {noise}")
        self.n = n
        self.image_size = image_size
        self.seed = seed
        self.noise = float(noise)
        g = torch.Generator().manual_seed(sample_seed(seed, -1))
        self._landmarks, params = synthetic_faces(
            n, generator=g, image_size=image_size, return_params=True, **face_kwargs
        )
        self._visibility = params["visibility"]
        self._pose = torch.stack([params["yaw"], params["pitch"], params["roll"]], 1)

    def __len__(self) -> int:
        return self.n

    def landmarks(self) -> torch.Tensor:
        """All ``(n, 68, 2)`` landmark sets (a copy), without rendering."""
        return self._landmarks.clone()

    def visibility(self) -> torch.Tensor:
        """``(n, 68)`` bool self-occlusion flags."""
        return self._visibility.clone()

    def _record(self, index: int) -> dict[str, Any]:
        kp = self._landmarks[index]
        yaw, pitch, roll = (float(v) for v in self._pose[index])
        return {
            "landmarks": kp.clone(),
            "visibility": self._visibility[index].clone(),
            "box": landmark_box(kp),
            "canvas_size": (self.image_size, self.image_size),
            "meta": {"index": index, "seed": self.seed, "yaw": yaw, "pitch": pitch, "roll": roll},
        }

    def _read_image(self, index: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(sample_seed(self.seed, index))
        return render_faces(self._landmarks[index], self.image_size, generator=g, noise=self.noise)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, image_size={self.image_size}, seed={self.seed})"
