r"""Networks of the learned-local-transformations recipe (Chrysos et al., *Visual Data Augmentation
through Learning*, 2018, §3 and §3.6).

The parts the augmentation needs at run time -- encoder ``f^I_e``, transition ``A`` and the U-Net
generator ``f^{III}`` -- are :class:`wbaug.transforms.LocalTransformationModel` (the library cannot
import the zoo); this module adds what only training needs:

* :class:`ConvDecoder` -- ``f^I_d``: latent ``(B, d)`` → image ``(B, C, S, S)`` (Stage I);
* :class:`AAEDiscriminator` -- the Stage I discriminator, which sees both the latent (vs the prior
  ``N(0, I)``) and the image (the reconstruction vs the input); its image branch's penultimate layer is
  the feature space of Stage III's feature-matching loss;
* :class:`ConditionalDiscriminator` -- the Stage III cGAN discriminator on ``[source; image]``;
* :class:`LocalTransformationNets` -- all of them, as one module for checkpoints.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import Tensor, nn

from wbaug.transforms import LocalTransformationConfig, LocalTransformationModel
from zoo.common.registry import register_model

__all__ = [
    "AAEDiscriminator",
    "ConditionalDiscriminator",
    "ConvDecoder",
    "LocalTransformationNets",
    "local_transformations",
    "local_transformations_cpu",
    "local_transformations_smoke",
]


def _conv_stack(in_channels: int, size: int, channels: int, max_channels: int) -> tuple[nn.Sequential, int]:
    """Strided 4×4 convolutions + LeakyReLU from ``size`` down to 4×4; returns the stack and its width."""
    layers: list[nn.Module] = []
    c_in, res, k = in_channels, size, 0
    while res > 4:
        c_out = min(channels * 2**k, max_channels)
        layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        c_in, res, k = c_out, res // 2, k + 1
    return nn.Sequential(*layers), c_in


class ConvDecoder(nn.Module):
    """``f^I_d``: latent ``(B, d)`` → image ``(B, C, S, S)`` in [-1, 1] (Stage I, §3.1).

    A linear layer to a 4×4 map, then 4×4 stride-2 transposed convolutions + batch norm + LeakyReLU
    mirroring :class:`wbaug.transforms.ConvEncoder`, the last one to ``C`` channels and ``tanh``.
    """

    def __init__(self, config: LocalTransformationConfig) -> None:
        super().__init__()
        self.config = config
        chans = config.layer_channels()
        self.fc = nn.Linear(config.latent_dim, chans[-1] * 16)
        ups: list[nn.Module] = []
        for k in range(config.depth, 0, -1):
            c_in = chans[k - 1]
            if k == 1:
                ups.append(nn.ConvTranspose2d(c_in, config.in_channels, 4, stride=2, padding=1))
            else:
                ups += [
                    nn.ConvTranspose2d(c_in, chans[k - 2], 4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(chans[k - 2]),
                    nn.LeakyReLU(0.2),
                ]
        self.up = nn.Sequential(*ups)

    def forward(self, latent: Tensor) -> Tensor:
        d = self.config.latent_dim
        if latent.ndim != 2 or latent.shape[1] != d:
            raise ValueError(f"latent must be (B, {d}), got {tuple(latent.shape)}")
        h = nn.functional.leaky_relu(self.fc(latent), 0.2).view(latent.shape[0], -1, 4, 4)
        return torch.tanh(self.up(h))


class AAEDiscriminator(nn.Module):
    """Stage I discriminator (§3.1): an image branch (real input vs reconstruction) and a latent branch
    (prior sample vs encoding).

    Shapes: :meth:`image` ``(B, C, S, S)`` → logits ``(B,)`` (and the penultimate features ``(B, hidden)``
    with ``return_features``); :meth:`latent` ``(B, d)`` → logits ``(B,)``.
    """

    def __init__(
        self,
        config: LocalTransformationConfig,
        *,
        channels: int = 32,
        max_channels: int = 256,
        hidden: int = 256,
    ) -> None:
        super().__init__()
        self.config = config
        self.convs, width = _conv_stack(config.in_channels, config.image_size, channels, max_channels)
        self.penultimate = nn.Sequential(nn.Linear(width * 16, hidden), nn.LeakyReLU(0.2))
        self.image_out = nn.Linear(hidden, 1)
        self.latent_net = nn.Sequential(
            nn.Linear(config.latent_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def features(self, images: Tensor) -> Tensor:
        """Penultimate-layer features of the image branch ``(B, hidden)`` (Stage III's ``L_feat``)."""
        return self.penultimate(self.convs(images).flatten(1))

    def image(self, images: Tensor, *, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        feats = self.features(images)
        logits = self.image_out(feats).squeeze(1)
        return (logits, feats) if return_features else logits

    def latent(self, latent: Tensor) -> Tensor:
        return self.latent_net(latent).squeeze(1)


class ConditionalDiscriminator(nn.Module):
    """Stage III cGAN discriminator ``D(s, y)`` (eq. 1): the source frame and a (real or synthesised)
    later frame concatenated on channels, ``(B, C, S, S)`` each → logits ``(B,)``."""

    def __init__(
        self,
        config: LocalTransformationConfig,
        *,
        channels: int = 32,
        max_channels: int = 256,
        hidden: int = 256,
    ) -> None:
        super().__init__()
        self.convs, width = _conv_stack(2 * config.in_channels, config.image_size, channels, max_channels)
        self.head = nn.Sequential(nn.Linear(width * 16, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, source: Tensor, image: Tensor) -> Tensor:
        return self.head(self.convs(torch.cat([source, image], 1)).flatten(1)).squeeze(1)


class LocalTransformationNets(nn.Module):
    """Every network of the recipe: ``model`` (:class:`~wbaug.transforms.LocalTransformationModel`:
    encoder, transition ``A``, generator), ``decoder``, ``d_stage1`` and ``d_stage3``.

    Args are :class:`zoo.local_transformations.config.ModelConfig`'s fields.

    Example:
        >>> nets = LocalTransformationNets(image_size=16, latent_dim=8, channels=4, max_channels=8)
        >>> nets.model(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(
        self,
        *,
        image_size: int = 64,
        latent_dim: int = 128,
        channels: int = 32,
        max_channels: int = 256,
        skips: tuple[int, ...] = (2, 4),
        d_channels: int = 32,
        d_max_channels: int = 256,
        d_hidden: int = 256,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.config = LocalTransformationConfig(
            image_size=image_size,
            in_channels=in_channels,
            latent_dim=latent_dim,
            channels=channels,
            max_channels=max_channels,
            skips=tuple(skips),
        )
        d_kwargs = {"channels": d_channels, "max_channels": d_max_channels, "hidden": d_hidden}
        self.model = LocalTransformationModel(self.config)
        self.decoder = ConvDecoder(self.config)
        self.d_stage1 = AAEDiscriminator(self.config, **d_kwargs)
        self.d_stage3 = ConditionalDiscriminator(self.config, **d_kwargs)

    @property
    def encoder(self) -> nn.Module:
        return self.model.encoder

    @property
    def generator(self) -> nn.Module:
        return self.model.generator


def _from_preset(preset: str, **kwargs) -> LocalTransformationNets:
    from zoo.local_transformations.config import PRESETS

    return LocalTransformationNets(**{**asdict(PRESETS[preset]().model), **kwargs})


@register_model
def local_transformations(**kwargs) -> LocalTransformationNets:
    """The ``gpu`` preset's networks (64 px, d = 256)."""
    return _from_preset("gpu", **kwargs)


@register_model
def local_transformations_cpu(**kwargs) -> LocalTransformationNets:
    """The ``cpu`` preset's networks (32 px, d = 64)."""
    return _from_preset("cpu", **kwargs)


@register_model
def local_transformations_smoke(**kwargs) -> LocalTransformationNets:
    """The ``smoke`` preset's networks (16 px, d = 8)."""
    return _from_preset("smoke", **kwargs)
