r"""The kornia form of Wasserstein-barycentric augmentation (Bespalov et al., *Data augmentation with
manifold barycenters*, §3.1, Algorithm 2) on batches ``(B, N, 2)``: :class:`RandomBarycentricWarp`.

It shares its core with the torchvision form (the fitted sampler itself): randomness is drawn in
``generate_parameters`` from the batch shape (the gate ``batch_prob`` by kornia, the clique pick ``u``
and the log-Gamma variates of the Dirichlet weights from ``generator`` or torch's global RNG), and the
key-point-dependent part (nearest fitted set, clique, barycenter, warp) is a deterministic function of
those parameters and the key-points (:func:`~wbaug.transforms.draw_barycentric_params` with
``variates=``), so ``aug(images, keypoints, params=aug._params)`` replays identical key-points.

Two ways to use it:

* inside ``kornia.augmentation.AugmentationSequential(..., data_keys=["input", "keypoints"])``: the
  key-points are replaced, images pass through (``paired=False``). kornia transforms every child's
  images *before* its key-points, so a warp that depends on the key-points cannot run there: with
  ``paired=True`` inside a container a clear error says so;
* called directly, ``images, keypoints = aug(images, keypoints)``: with ``paired=True`` the images are
  warped by the thin-plate spline that moves their landmarks to the new ones.

``inverse`` returns images unchanged (the transform matrix is the identity; a barycenter cannot be
undone).
"""

from __future__ import annotations

from typing import Any

import torch
from kornia.augmentation import GeometricAugmentationBase2D
from kornia.geometry.keypoints import Keypoints
from torch import Tensor

from wbaug._checks import check_generator
from wbaug.transforms.barycentric import BarycentricParams, apply_barycentric, draw_barycentric_params

__all__ = ["RandomBarycentricWarp"]


class RandomBarycentricWarp(GeometricAugmentationBase2D):
    r"""kornia augmentation: replace each sample's key-points ``(B, N, 2)`` by a random Wasserstein
    barycenter of a clique around them; with ``paired=True`` (called directly) warp the images
    ``(B, C, H, W)`` so they follow.

    Args:
        sampler: a fitted :class:`~wbaug.sampling.WassersteinBarycentricSampler` (equal-size sets). Its
            ``frame`` decides whether key-points are aligned to the fitted frame (default) or taken as
            they are.
        p: per-sample probability (kornia's gate).
        paired: warp the images too (only when called directly with the key-points).
        generator: source of the barycentric draws (``None``: torch's global RNG).
        grid_stride, tps_regularization, padding_mode: the paired warp (see
            :func:`~wbaug.transforms.tps_warp_image`).

    Example:
        >>> import kornia.augmentation as K
        >>> from wbaug import WassersteinBarycentricSampler, synthetic_faces
        >>> faces = synthetic_faces(60, generator=torch.Generator().manual_seed(0))
        >>> sampler = WassersteinBarycentricSampler(k_neighbors=4).fit(faces)
        >>> aug = K.AugmentationSequential(K.RandomAffine(15.0), RandomBarycentricWarp(sampler, p=0.5),
        ...                                data_keys=["input", "keypoints"])
        >>> images, keypoints = aug(torch.rand(4, 3, 256, 256), faces[:4])
        >>> again = aug(torch.rand(4, 3, 256, 256), faces[:4], params=aug._params)[1]  # replay
        >>> torch.equal(keypoints, again)
        True
        >>> warp = RandomBarycentricWarp(sampler, p=1.0, paired=True)
        >>> images, keypoints = warp(torch.rand(4, 3, 256, 256), faces[:4])
    """

    def __init__(
        self,
        sampler: Any,
        *,
        p: float = 0.5,
        paired: bool = False,
        generator: torch.Generator | None = None,
        grid_stride: int = 1,
        tps_regularization: float = 0.0,
        padding_mode: str = "border",
    ) -> None:
        super().__init__(p=p, same_on_batch=False, keepdim=False)
        if not getattr(sampler, "is_fitted", False) or not isinstance(
            getattr(sampler, "landmarks_", None), Tensor
        ):
            raise ValueError(
                "sampler must be a WassersteinBarycentricSampler fitted on equal-size landmark sets"
            )
        if padding_mode not in ("zeros", "border", "reflection"):
            raise ValueError(f"padding_mode must be 'zeros', 'border' or 'reflection', got {padding_mode!r}")
        self.sampler = sampler
        self.paired = bool(paired)
        self.generator = check_generator(generator)
        self.grid_stride = grid_stride
        self.tps_regularization = float(tps_regularization)
        self.padding_mode = padding_mode

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(p={self.p}, paired={self.paired}, grid_stride={self.grid_stride}, "
            f"padding_mode={self.padding_mode!r}, sampler={self.sampler!r})"
        )

    # ---------------------------------------------------------------- parameters (no data seen)
    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, Tensor]:
        return self.sampler.draw_variates(int(batch_shape[0]), generator=self.generator)

    def _draw(
        self, keypoints: Tensor, params: dict[str, Tensor], size: tuple[int, int] | None
    ) -> BarycentricParams:
        gate = params.get("batch_prob")
        applied = torch.ones(keypoints.shape[0], dtype=torch.bool) if gate is None else gate.reshape(-1) > 0.5
        return draw_barycentric_params(
            self.sampler,
            keypoints,
            paired=self.paired and size is not None,
            canvas_size=size,
            variates={"applied": applied.cpu(), "u": params["u"], "log_gamma": params["log_gamma"]},
            grid_stride=self.grid_stride,
            tps_regularization=self.tps_regularization,
        )

    # ---------------------------------------------------------------- kornia hooks
    def compute_transformation(
        self, input: Tensor, params: dict[str, Tensor], flags: dict[str, Any]
    ) -> Tensor:
        return torch.eye(3, device=input.device, dtype=input.dtype).expand(input.shape[0], 3, 3)

    def apply_transform(
        self, input: Tensor, params: dict[str, Tensor], flags: dict[str, Any], transform: Tensor | None = None
    ) -> Tensor:
        if self.paired and bool(params.get("batch_prob", torch.ones(1)).bool().any()):
            raise ValueError(
                "RandomBarycentricWarp(paired=True) needs the key-points to warp images: call it directly, "
                "`images, keypoints = warp(images, keypoints)` (kornia's AugmentationSequential transforms "
                "images before key-points), or use paired=False inside the container"
            )
        return input

    def inverse_transform(
        self,
        input: Tensor,
        flags: dict[str, Any],
        transform: Tensor | None = None,
        size: tuple[int, int] | None = None,
    ) -> Tensor:
        return input

    def apply_transform_keypoint(
        self,
        input: Keypoints,
        params: dict[str, Tensor],
        flags: dict[str, Any],
        transform: Tensor | None = None,
    ) -> Keypoints:
        data = input.data if input.data.ndim == 3 else input.data[None]
        draw = self._draw(data, params, None)
        return Keypoints(draw.landmarks.to(data.dtype).reshape(input.data.shape))

    # ---------------------------------------------------------------- direct call: (images, keypoints)
    def forward(  # type: ignore[override]
        self,
        input: Tensor,
        keypoints: Tensor | None = None,
        params: dict[str, Tensor] | None = None,
        **kwargs: Any,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``aug(images)`` is kornia's ordinary call (what containers use); ``aug(images, keypoints)``
        returns ``(images, keypoints)``, the images warped when ``paired``."""
        if keypoints is None:
            return super().forward(input, params=params, **kwargs)
        if not isinstance(input, Tensor) or input.ndim != 4:
            raise ValueError(
                f"images must be a (B, C, H, W) tensor, got {getattr(input, 'shape', type(input))}"
            )
        kp = keypoints.data if isinstance(keypoints, Keypoints) else keypoints
        if not isinstance(kp, Tensor) or kp.ndim != 3 or kp.shape[0] != input.shape[0]:
            raise ValueError(
                f"keypoints must be a ({input.shape[0]}, N, 2) tensor, got {getattr(kp, 'shape', type(kp))}"
            )
        if params is None:
            params = self.forward_parameters(input.shape)
        self._params = params
        draw = self._draw(kp, params, tuple(input.shape[-2:]))
        images = apply_barycentric(input, draw, padding_mode=self.padding_mode)
        return images, draw.landmarks.to(kp.dtype)
