r"""Networks of the unpaired landmark CycleGAN (Bespalov et al., *Data augmentation with manifold
barycenters*, §3 and §5), built from the StyleGAN2 blocks of :mod:`zoo.common.gan`.

* **G_I** (:class:`~zoo.common.gan.ConditionalImageGenerator`): the landmark heatmap ``(B, K, S, S)`` is
  down-sampled by strided convolutions to every resolution ``S, S/2, …, 4``
  (:class:`~zoo.common.gan.HeatmapPyramid`) and each level is concatenated to the activations of the
  modulated-convolution generator at that resolution; the style is ``(B, n_latent, w_dim)``
  (``n_latent = 2 log2 S − 2``: 14 × 512 at 256 px) from the mapping network ``S_o(z)`` or the style
  encoder ``S(I)``.
* **S**: either :class:`~zoo.common.gan.StyleEncoder` (``style_encoder="cnn"``, the default): a small
  residual-free CNN (equalised-lr convs down to 4×4, then a linear map to ``n_latent × w_dim``), the
  paper's "regular CNN" variant; or :class:`~zoo.common.gan.PyramidStyleEncoder` (``"psp"``): the pSp
  architecture of §5 (a feature pyramid and one map-to-style head per latent), trained from scratch (no
  pretrained backbone is downloaded).
* **S_o**: :class:`zoo.common.gan.MappingNetwork` (PixelNorm + FC, lr multiplier 0.01).
* **G_L** (:class:`LandmarkEncoder`): the zoo's :class:`~zoo.hourglass.model.StackedHourglass` → stride-2
  convolutions down to 4×4 → linear → sigmoid → ``N`` coordinates ``(B, N, 2)`` in image pixels; the
  trainer renders them as Gaussian heatmaps (eq. 1) with :mod:`wbaug.landmarks`, per landmark
  (``ordered``) or summed (unordered; the paper's 300-W setting), so the landmark path always goes through
  coordinates (no steganographic channel in the heatmaps).
* **D_I**, **D_L**: :class:`zoo.common.gan.ResidualDiscriminator` on images and on heatmaps.

:class:`LandmarkCycleGAN` holds all of them plus shadow EMA copies of both generators (and of ``S_o``, S),
which :meth:`LandmarkCycleGAN.predict` (evaluation) uses.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wbaug.landmarks import gaussian_heatmaps, summed_heatmaps
from zoo.common.gan import (
    ConditionalImageGenerator,
    MappingNetwork,
    PyramidStyleEncoder,
    ResidualDiscriminator,
    StyleEncoder,
    make_ema,
    update_ema,
)
from zoo.common.registry import register_model
from zoo.hourglass.model import StackedHourglass

__all__ = [
    "LandmarkCycleGAN",
    "LandmarkEncoder",
    "landmark_cyclegan",
    "landmark_cyclegan_smoke",
]


class LandmarkEncoder(nn.Module):
    """G_L: stacked hourglass → stride-2 convs → linear → sigmoid → coordinates (§5).

    The hourglass's last-stack maps ``(B, hg_channels, S/4, S/4)`` are reduced by stride-2 convolutions
    (LeakyReLU 0.2) to 4×4, flattened and mapped to ``N × 2`` values ``u ∈ (0, 1)``; coordinates are
    ``x = S u − 1/2`` (pixel centres at integers, range ``(−1/2, S − 1/2)``).

    Shapes: ``(B, 3, S, S)`` → ``(B, N, 2)`` image pixels.
    """

    def __init__(
        self,
        num_landmarks: int,
        size: int,
        *,
        stacks: int = 2,
        width: int = 128,
        depth: int = 4,
        channels: int = 68,
    ) -> None:
        super().__init__()
        self.num_landmarks = num_landmarks
        self.size = size
        self.hourglass = StackedHourglass(channels, stacks=stacks, width=width, depth=depth, heatmap_stride=4)
        layers: list[nn.Module] = []
        c, r = channels, size // 4
        while r > 4:
            c2 = min(max(2 * c, 32), 256)
            layers += [nn.Conv2d(c, c2, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c, r = c2, r // 2
        self.down = nn.Sequential(*layers)
        self.head = nn.Linear(c * r * r, num_landmarks * 2)

    def forward(self, images: Tensor) -> Tensor:
        maps = self.hourglass(images)[:, -1]
        u = torch.sigmoid(self.head(self.down(maps).flatten(1)).float())
        return u.view(-1, self.num_landmarks, 2) * self.size - 0.5


class LandmarkCycleGAN(nn.Module):
    """All networks of Algorithm 1 plus EMA copies of the generators.

    Args:
        num_landmarks: ``N`` points per landmark set.
        image_size: ``S`` (power of two).
        ordered: per-landmark heatmap channels (``K = N``) or the summed heatmap (``K = 1``).
        sigma: heatmap Gaussian std in pixels (eq. 1).
        Other arguments: the fields of :class:`zoo.cyclegan.config.ModelConfig`.

    Submodules: ``generator`` (G_I), ``mapping`` (S_o), ``style_encoder`` (S), ``landmark_encoder`` (G_L),
    ``d_image`` (D_I), ``d_landmarks`` (D_L), ``ema`` (shadow copies of ``generator``, ``mapping``,
    ``style_encoder``, ``landmark_encoder``); buffer ``mean_shape`` ``(N, 2)`` (the mean landmark set of
    the training landmark domain: the evaluation baseline).

    Example:
        >>> net = landmark_cyclegan_smoke(num_landmarks=5)
        >>> x = net.predict(torch.rand(2, 3, 64, 64) * 2 - 1)
        >>> x.shape
        torch.Size([2, 5, 2])
    """

    GENERATORS = ("generator", "mapping", "style_encoder", "landmark_encoder")

    def __init__(
        self,
        num_landmarks: int,
        *,
        image_size: int = 256,
        w_dim: int = 512,
        z_dim: int = 512,
        mapping_layers: int = 8,
        channel_base: int = 16384,
        channel_max: int = 512,
        pyramid_channels: int = 32,
        fused_modconv: bool = False,
        style_encoder: str = "cnn",
        style_width: int = 32,
        style_max: int = 256,
        hg_stacks: int = 2,
        hg_width: int = 128,
        hg_depth: int = 4,
        hg_channels: int = 68,
        d_channel_base: int = 16384,
        d_channel_max: int = 512,
        mbstd_group: int = 4,
        sigma: float = 4.0,
        ordered: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(num_landmarks, bool) or not isinstance(num_landmarks, int) or num_landmarks < 1:
            raise ValueError(f"num_landmarks must be a positive int, got {num_landmarks!r}")
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        self.num_landmarks = num_landmarks
        self.image_size = image_size
        self.sigma = float(sigma)
        self.ordered = bool(ordered)
        self.heatmap_channels = num_landmarks if ordered else 1
        self.z_dim = z_dim
        self.generator = ConditionalImageGenerator(
            self.heatmap_channels,
            image_size,
            w_dim,
            pyramid_channels=pyramid_channels,
            channel_base=channel_base,
            channel_max=channel_max,
            fused=fused_modconv,
        )
        self.mapping = MappingNetwork(z_dim, w_dim, num_layers=mapping_layers)
        encoders = {"cnn": StyleEncoder, "psp": PyramidStyleEncoder}
        if style_encoder not in encoders:
            raise ValueError(f"style_encoder must be one of {sorted(encoders)}, got {style_encoder!r}")
        encoder = encoders[style_encoder]
        self.style_encoder = encoder(image_size, w_dim, width=style_width, max_width=style_max)
        self.landmark_encoder = LandmarkEncoder(
            num_landmarks, image_size, stacks=hg_stacks, width=hg_width, depth=hg_depth, channels=hg_channels
        )
        d_kwargs = {"channel_base": d_channel_base, "channel_max": d_channel_max, "mbstd_group": mbstd_group}
        self.d_image = ResidualDiscriminator(image_size, 3, **d_kwargs)
        self.d_landmarks = ResidualDiscriminator(image_size, self.heatmap_channels, **d_kwargs)
        self.ema = nn.ModuleDict({name: make_ema(getattr(self, name)) for name in self.GENERATORS})
        self.register_buffer("mean_shape", torch.zeros(num_landmarks, 2))
        self.num_latents = self.generator.num_latents

    # ---------------------------------------------------------------------------------- pieces
    def heatmaps(self, coords: Tensor) -> Tensor:
        """Gaussian heatmaps (eq. 1, σ = ``sigma``) of ``coords`` ``(B, N, 2)`` → ``(B, K, S, S)``: one
        channel per landmark when ``ordered``, else their sum (peak-1 Gaussians)."""
        size = (self.image_size, self.image_size)
        coords = coords.float()
        if self.ordered:
            return gaussian_heatmaps(coords, size, self.sigma)
        return summed_heatmaps(coords, size, self.sigma)

    def discriminators(self) -> list[nn.Module]:
        return [self.d_image, self.d_landmarks]

    def generators(self) -> list[nn.Module]:
        return [getattr(self, name) for name in self.GENERATORS]

    def styles(self, z: Tensor, *, ema: bool = False) -> Tensor:
        """``S_o(z)`` broadcast to the style matrix: ``(B, z_dim)`` → ``(B, n_latent, w_dim)``."""
        mapping = self.ema["mapping"] if ema else self.mapping
        return mapping(z).unsqueeze(1).expand(-1, self.num_latents, -1)

    @torch.no_grad()
    def update_ema(self, beta: float) -> None:
        """Shadow EMA of the generators' weights (and copies of their buffers)."""
        for name in self.GENERATORS:
            update_ema(self.ema[name], getattr(self, name), beta)

    @torch.no_grad()
    def predict(self, images: Tensor, *, ema: bool = True) -> Tensor:
        """Landmark coordinates ``(B, N, 2)`` of images ``(B, 3, S, S)`` in [-1, 1] (EMA G_L by default)."""
        encoder = self.ema["landmark_encoder"] if ema else self.landmark_encoder
        was = encoder.training
        encoder.eval()
        out = encoder(images)
        encoder.train(was)
        return out.float()

    @torch.no_grad()
    def sample_images(
        self, coords: Tensor, z: Tensor, *, ema: bool = True, generator: torch.Generator | None = None
    ) -> Tensor:
        """Generated images ``(B, 3, S, S)`` for landmark sets ``(B, N, 2)`` and noise ``(B, z_dim)``."""
        g = self.ema["generator"] if ema else self.generator
        return g(self.heatmaps(coords), self.styles(z, ema=ema), generator=generator)


@register_model
def landmark_cyclegan(num_landmarks: int = 68, **kwargs) -> LandmarkCycleGAN:
    """The paper's 256 px CycleGAN (14 × 512 styles, σ = 4; ``zoo.cyclegan.config.gpu_config``)."""
    return LandmarkCycleGAN(num_landmarks, **kwargs)


@register_model
def landmark_cyclegan_smoke(num_landmarks: int = 68, **kwargs) -> LandmarkCycleGAN:
    """The 64 px CPU smoke size of ``zoo.cyclegan.config.smoke_config``."""
    from dataclasses import asdict

    from zoo.cyclegan.config import smoke_config

    return LandmarkCycleGAN(num_landmarks, **{**asdict(smoke_config().model), **kwargs})
