r"""Networks of BRULÉ (Bespalov, Buzun & Dylov, *BRULÉ: Barycenter-Regularized Unsupervised Landmark
Extraction*, §3), built from the zoo's StyleGAN2 blocks, heatmap-conditioned generator and style encoder
(:mod:`zoo.common.gan`) and the stacked hourglass of :mod:`zoo.hourglass.model`.

* **L** (:class:`LandmarkEncoder`): stacked hourglass → ``K`` heatmap logits ``(B, K, h, h)``
  (``h = S / hg_stride``: 64×64 at 256 px as in §3); a softmax per channel makes each a probability map,
  its soft-argmax gives the coordinates ``X_L`` ``(B, K, 2)`` in image pixels.
* **G** (:class:`~zoo.common.gan.ConditionalImageGenerator`): the heatmap, brought to the image side,
  is down-sampled to every resolution ``4 … S`` and concatenated with the modulated-conv activations
  (§3 "Generator"); the style is ``S_o(z)`` or ``S(I)``.
* **D** (:class:`~zoo.common.gan.ResidualDiscriminator`): conditional, on the channel concatenation of the
  image and the heatmap (``3 + K`` input channels; §3 joins them at an intermediate layer, the input is the
  simplest such layer).
* **S** (:class:`~zoo.common.gan.StyleEncoder`): a regular CNN (§3 "Style Encoder").
* **S_o**: :class:`zoo.common.gan.MappingNetwork`.

Conditioning maps fed to G and D are peak-normalised (each channel divided by its maximum), so the dense
softmax map ``L`` and the sparse Gaussians ``L_sp`` / ``gL`` live on the same ``[0, 1]`` scale.

:func:`random_warp` / :func:`apply_warp` draw and apply the random geometric transform ``g`` (affine +
elastic) to images and heatmaps *together*: one continuous map, sampled at each tensor's own resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from wbaug.landmarks import gaussian_heatmaps, soft_argmax
from zoo.common.gan import ConditionalImageGenerator, MappingNetwork, ResidualDiscriminator, StyleEncoder
from zoo.common.registry import register_model
from zoo.hourglass.model import StackedHourglass, heatmap_to_image, image_to_heatmap

__all__ = [
    "Brule",
    "LandmarkEncoder",
    "Warp",
    "apply_warp",
    "brule",
    "brule_smoke",
    "random_warp",
]


# ------------------------------------------------------------------------------------------- g
@dataclass
class Warp:
    """Parameters of a batch of random transforms ``g`` in normalised coordinates ``u ∈ [-1, 1]²``
    (``align_corners=False``: ``u = (2x + 1)/S − 1`` for pixel ``x``).

    ``inverse``: ``(B, 2, 3)`` affine map from output to source coordinates; ``displacement``:
    ``(B, 2, c, c)`` elastic source offsets on a ``c × c`` control grid (bicubically interpolated)."""

    inverse: Tensor
    displacement: Tensor


def random_warp(
    n: int,
    *,
    rotate: float = 0.0,
    scale: float = 0.0,
    shear: float = 0.0,
    translate: float = 0.0,
    elastic: float = 0.0,
    grid: int = 4,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Warp:
    r"""Draw ``n`` random transforms ``g`` = affine (rotation ``±rotate``, scale ``1 ± scale``, shear and
    anisotropy ``±shear``, translation ``±translate`` of the side) followed by an elastic field (Gaussian
    control offsets of std ``elastic`` × side). Draws from ``generator`` (torch's global RNG when ``None``).
    """
    u = torch.rand(n, 6, generator=generator, dtype=torch.float64) * 2 - 1
    theta = rotate * u[:, 0]
    s = 1 + scale * u[:, 1]
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shape = torch.zeros(n, 2, 2, dtype=torch.float64)
    shape[:, 0, 0], shape[:, 1, 1] = 1 + shear * u[:, 2], 1 - shear * u[:, 2]
    shape[:, 0, 1] = shear * u[:, 3]
    a = s[:, None, None] * rot @ shape  # forward linear part (source -> output), normalised coordinates
    t = 2 * translate * u[:, 4:6]  # the side is 2 in normalised units
    a_inv = torch.linalg.inv(a)
    inverse = torch.cat([a_inv, -(a_inv @ t[:, :, None])], -1)  # u_src = A^-1 (u_out - t)
    disp = torch.randn(n, 2, grid, grid, generator=generator, dtype=torch.float64) * (2 * elastic)
    return Warp(inverse.float().to(device), disp.float().to(device))


def apply_warp(x: Tensor, warp: Warp) -> Tensor:
    """Apply ``g`` to ``x`` ``(B, C, H, W)`` (images or heatmaps of any side; zero padding): the output at
    ``u`` samples ``x`` at ``A^{-1}(u − t) + d(u)``. Differentiable in ``x``."""
    if x.ndim != 4 or x.shape[0] != warp.inverse.shape[0]:
        raise ValueError(f"x must be (B, C, H, W) with B = {warp.inverse.shape[0]}, got {tuple(x.shape)}")
    b, _, h, w = x.shape
    base = F.affine_grid(warp.inverse.to(x.dtype), [b, 1, h, w], align_corners=False)  # (B, H, W, 2)
    d = F.interpolate(warp.displacement.to(x.dtype), size=(h, w), mode="bicubic", align_corners=True)
    return F.grid_sample(x, base + d.permute(0, 2, 3, 1), mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------------------- encoder
class LandmarkEncoder(nn.Module):
    """L: stacked hourglass → per-landmark heatmap logits → softmax → soft-argmax coordinates (§3).

    Shapes: ``forward(images (B, 3, S, S))`` → logits ``(B, K, S/s, S/s)``; :meth:`coordinates` of those
    → ``(B, K, 2)`` image pixels (pixel centres at integers).
    """

    def __init__(
        self, num_landmarks: int, *, stacks: int = 2, width: int = 128, depth: int = 4, stride: int = 4
    ) -> None:
        super().__init__()
        self.num_landmarks = num_landmarks
        self.stride = stride
        self.hourglass = StackedHourglass(
            num_landmarks, stacks=stacks, width=width, depth=depth, heatmap_stride=stride
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.hourglass(images)[:, -1].float()

    def coordinates(self, logits: Tensor) -> Tensor:
        """Soft-argmax of the per-channel softmax, in image pixels ``(B, K, 2)``."""
        return heatmap_to_image(soft_argmax(logits, normalize="softmax"), self.stride)


# --------------------------------------------------------------------------------------- BRULÉ
class Brule(nn.Module):
    """All networks of Algorithms 1-2 and the fixed barycenter.

    Args:
        num_landmarks: ``K`` landmarks the encoder discovers.
        image_size: ``S`` (power of two).
        barycenter_points: ``N_b``, the size of the barycenter buffer (``K`` by default).
        sigma: width of ``L_sp`` in heatmap pixels.
        Other arguments: the fields of :class:`zoo.brule.config.ModelConfig`.

    Submodules ``encoder`` (L), ``generator`` (G), ``mapping`` (S_o), ``style_encoder`` (S),
    ``discriminator`` (D); buffer ``barycenter`` ``(N_b, 2)`` in image pixels.

    Example:
        >>> net = brule_smoke(num_landmarks=5)
        >>> net.predict(torch.rand(2, 3, 32, 32) * 2 - 1).shape
        torch.Size([2, 5, 2])
    """

    def __init__(
        self,
        num_landmarks: int,
        *,
        image_size: int = 256,
        barycenter_points: int | None = None,
        hg_stacks: int = 2,
        hg_width: int = 128,
        hg_depth: int = 4,
        hg_stride: int = 4,
        sigma: float = 1.0,
        w_dim: int = 512,
        z_dim: int = 512,
        mapping_layers: int = 8,
        channel_base: int = 16384,
        channel_max: int = 512,
        pyramid_channels: int = 32,
        fused_modconv: bool = False,
        style_width: int = 32,
        style_max: int = 256,
        d_channel_base: int = 16384,
        d_channel_max: int = 512,
        mbstd_group: int = 4,
    ) -> None:
        super().__init__()
        if isinstance(num_landmarks, bool) or not isinstance(num_landmarks, int) or num_landmarks < 1:
            raise ValueError(f"num_landmarks must be a positive int, got {num_landmarks!r}")
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        self.num_landmarks = num_landmarks
        self.image_size = image_size
        self.heatmap_size = image_size // hg_stride
        self.sigma = float(sigma)
        self.z_dim = z_dim
        self.encoder = LandmarkEncoder(
            num_landmarks, stacks=hg_stacks, width=hg_width, depth=hg_depth, stride=hg_stride
        )
        self.generator = ConditionalImageGenerator(
            num_landmarks,
            image_size,
            w_dim,
            pyramid_channels=pyramid_channels,
            channel_base=channel_base,
            channel_max=channel_max,
            fused=fused_modconv,
        )
        self.mapping = MappingNetwork(z_dim, w_dim, num_layers=mapping_layers)
        self.style_encoder = StyleEncoder(image_size, w_dim, width=style_width, max_width=style_max)
        self.discriminator = ResidualDiscriminator(
            image_size,
            3 + num_landmarks,
            channel_base=d_channel_base,
            channel_max=d_channel_max,
            mbstd_group=mbstd_group,
        )
        self.register_buffer("barycenter", torch.zeros(barycenter_points or num_landmarks, 2))
        self.num_latents = self.generator.num_latents

    # ---------------------------------------------------------------------------------- pieces
    def sparse_heatmaps(self, coords: Tensor) -> Tensor:
        """``L_sp``: peak-1 Gaussians ``exp(−‖mesh − X‖² / 2σ²)`` at ``coords`` ``(B, K, 2)`` (image pixels),
        on the encoder's ``h × h`` heatmap grid → ``(B, K, h, h)``."""
        uv = image_to_heatmap(coords.float(), self.encoder.stride)
        return gaussian_heatmaps(uv, self.heatmap_size, self.sigma)

    def condition(self, heatmaps: Tensor) -> Tensor:
        """Peak-normalised heatmaps ``(B, K, h, h)`` brought to the image side ``(B, K, S, S)`` (the input
        G and D take)."""
        peak = heatmaps.amax((-2, -1), keepdim=True).clamp_min(1e-8)
        x = heatmaps / peak
        if x.shape[-1] != self.image_size:
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        return x

    def generate(
        self, heatmaps: Tensor, styles: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """``G(L, style)``: heatmaps ``(B, K, h, h)``, styles ``(B, n_latent, w_dim)`` → ``(B, 3, S, S)``;
        the noise inputs draw from ``generator`` (torch's global RNG when ``None``)."""
        return self.generator(self.condition(heatmaps), styles, generator=generator)

    def discriminate(self, images: Tensor, heatmaps: Tensor) -> Tensor:
        """``D(I, L)`` logits ``(B,)`` for images ``(B, 3, S, S)`` and heatmaps ``(B, K, h, h)``."""
        return self.discriminator(torch.cat([images, self.condition(heatmaps).to(images.dtype)], 1))

    def styles(self, z: Tensor) -> Tensor:
        """``S_o(z)`` broadcast to the style matrix: ``(B, z_dim)`` → ``(B, n_latent, w_dim)``."""
        return self.mapping(z).unsqueeze(1).expand(-1, self.num_latents, -1)

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """Landmark coordinates ``(B, K, 2)`` of images ``(B, 3, S, S)`` in [-1, 1] (encoder in eval mode)."""
        was = self.encoder.training
        self.encoder.eval()
        out = self.encoder.coordinates(self.encoder(images))
        self.encoder.train(was)
        return out.float()


@register_model
def brule(num_landmarks: int = 68, **kwargs) -> Brule:
    """The paper's 256 px BRULÉ (64×64 heatmaps, 14 × 512 styles; ``zoo.brule.config.gpu_config``)."""
    return Brule(num_landmarks, **kwargs)


@register_model
def brule_smoke(num_landmarks: int = 68, **kwargs) -> Brule:
    """The 32 px CPU smoke size of ``zoo.brule.config.smoke_config``."""
    from dataclasses import asdict

    from zoo.brule.config import smoke_config

    arch = {k: v for k, v in asdict(smoke_config().model).items() if k != "num_landmarks"}
    return Brule(num_landmarks, **{**arch, **kwargs})
