r"""StyleGAN2 building blocks in plain PyTorch (CPU-importable, no custom CUDA ops), shared by the zoo's
GAN trainers (``zoo.cyclegan``, ``zoo.brule``, ``zoo.local_transformations``).

Karras et al., *Analyzing and Improving the Image Quality of StyleGAN* (2020), written from the paper:

* **equalised learning rate** (§B of StyleGAN): weights stored as ``randn / lr_mul`` and scaled by
  ``lr_mul / sqrt(fan_in)`` at run time (:class:`EqualLinear`, :class:`EqualConv2d`);
* **mapping network** ``z → w``: PixelNorm then ``n`` fully connected layers with lr multiplier 0.01
  (:class:`MappingNetwork`; tracks ``w_avg`` for truncation as a buffer);
* **modulated convolution with demodulation** (§2.2, eq. 1-3): :func:`modulated_conv2d`, both in the
  grouped-convolution form and in the "scale the activations" form (which agree; tested);
* **noise and condition injection** (:class:`NoiseInjection`; condition feature maps concatenated to
  the activations of every resolution in :class:`StyleGenerator`);
* **skip generator** with toRGB at every resolution (:class:`ToRGB`, :class:`StyleGenerator`);
* **residual discriminator** with minibatch standard deviation (:class:`ResidualDiscriminator`,
  :func:`minibatch_stddev`, which handles batches not divisible by the group size);
* **losses**: non-saturating logistic (:func:`d_logistic_loss`, :func:`g_nonsaturating_loss`), R1
  (:func:`r1_penalty`), lazy regularisation of the optimiser (:func:`lazy_adam_hparams`,
  :func:`lazy_adam`: ``lr·k/(k+1)``, ``betas**(k/(k+1))``), discriminator feature matching
  (:func:`feature_matching_loss`, pix2pixHD's ``L_feat``);
* **shadow EMA** of generator weights and buffers (:func:`ema_beta`, :func:`update_ema`);
* **heatmap-conditioned generation** (the landmark CycleGAN, BRULÉ): :class:`HeatmapPyramid`,
  :class:`ConditionalImageGenerator`, and the style encoders :class:`StyleEncoder` (a plain CNN) and
  :class:`PyramidStyleEncoder` (pSp's architecture, Richardson et al. 2021, trained from scratch).

Randomness: noise is drawn from an explicit ``torch.Generator`` when one is passed, otherwise from torch's
global RNG (which a trainer seeds with :func:`zoo.common.seeding.seed_process`); nothing here seeds.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "ConditionalImageGenerator",
    "HeatmapPyramid",
    "OptimizerGroup",
    "PyramidStyleEncoder",
    "StyleEncoder",
    "average_gradients",
    "broadcast_parameters",
    "EqualConv2d",
    "EqualLinear",
    "MappingNetwork",
    "ModulatedConv2d",
    "NoiseInjection",
    "PixelNorm",
    "ResidualDiscriminator",
    "StyleGenerator",
    "StyledConv",
    "ToRGB",
    "channels_for",
    "d_logistic_loss",
    "ema_beta",
    "feature_matching_loss",
    "g_nonsaturating_loss",
    "lazy_adam",
    "lazy_adam_hparams",
    "make_ema",
    "minibatch_stddev",
    "modulated_conv2d",
    "num_latents",
    "r1_penalty",
    "set_requires_grad",
    "update_ema",
]

_LRELU_GAIN = math.sqrt(2.0)


def _acc_dtype(x: Tensor) -> torch.dtype:
    """Accumulation dtype: float32 for half/bfloat16 inputs, the input's own dtype for float32/64."""
    return torch.promote_types(x.dtype, torch.float32)


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_size(size: object, name: str = "size") -> int:
    size = _check_positive_int(size, name)
    if size < 4 or size & (size - 1):
        raise ValueError(f"{name} must be a power of two >= 4, got {size}")
    return size


def num_latents(size: int) -> int:
    """Style vectors consumed by a :class:`StyleGenerator` of side ``size``: ``2·log2(size) − 2``
    (14 at 256 px: the 14×512 style matrix of the manifold-barycenters paper, §5)."""
    return 2 * int(math.log2(_check_size(size))) - 2


def channels_for(resolution: int, channel_base: int, channel_max: int) -> int:
    """StyleGAN2's channel schedule: ``min(channel_base // resolution, channel_max)`` (at least 1)."""
    return max(1, min(channel_base // resolution, channel_max))


# ------------------------------------------------------------------------------------ equalised lr
class EqualLinear(nn.Module):
    r"""Fully connected layer with equalised learning rate.

    ``y = x (W · lr_mul/√in)ᵀ + b · lr_mul``, ``W ~ N(0, 1/lr_mul²)``, ``b = bias_init / lr_mul``;
    ``activation="lrelu"`` applies ``leaky_relu(0.2) · √2``.

    Shapes: ``(..., in_features)`` → ``(..., out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: str | None = None,
    ) -> None:
        super().__init__()
        _check_positive_int(in_features, "in_features")
        _check_positive_int(out_features, "out_features")
        if not lr_mul > 0:
            raise ValueError(f"lr_mul must be positive, got {lr_mul!r}")
        if activation not in (None, "lrelu"):
            raise ValueError(f"activation must be None or 'lrelu', got {activation!r}")
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        out = F.linear(x, self.weight * self.scale, bias)
        if self.activation == "lrelu":
            out = F.leaky_relu(out, 0.2) * _LRELU_GAIN
        return out

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, act={self.activation}"


class EqualConv2d(nn.Module):
    r"""2-D convolution with equalised learning rate (weights scaled by ``1/√(in·k²)`` at run time).

    ``down=True`` halves the resolution with a 2×2 average pooling (a box low-pass filter) *before* the
    convolution: StyleGAN2 blurs then convolves with stride 2; pooling first is the same idea at a quarter
    of the convolution cost (for a 1×1 convolution it is exactly conv-then-pool). ``activation="lrelu"``
    applies ``leaky_relu(0.2) · √2``. Shapes: ``(B, in, H, W)`` → ``(B, out, H', W')`` (``'same'``
    padding; ``H' = H/2`` when ``down``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        bias: bool = True,
        down: bool = False,
        activation: str | None = None,
    ) -> None:
        super().__init__()
        _check_positive_int(in_channels, "in_channels")
        _check_positive_int(out_channels, "out_channels")
        _check_positive_int(kernel_size, "kernel_size")
        if activation not in (None, "lrelu"):
            raise ValueError(f"activation must be None or 'lrelu', got {activation!r}")
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.padding = kernel_size // 2
        self.down = down
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        if self.down:
            x = F.avg_pool2d(x, 2)
        out = F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)
        if self.activation == "lrelu":
            out = F.leaky_relu(out, 0.2) * _LRELU_GAIN
        return out


class PixelNorm(nn.Module):
    """``x / sqrt(mean(x², dim=1) + eps)``: every latent vector to unit RMS. Shapes: ``(B, C, ...)``."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + self.eps)


class MappingNetwork(nn.Module):
    r"""StyleGAN's mapping network ``S_o``: ``z → PixelNorm → n × (EqualLinear(lr_mul) + lrelu) → w``.

    During training every forward updates the buffer ``w_avg ← w̄ + (w_avg − w̄)·w_avg_beta`` (batch mean
    ``w̄``), used by :meth:`truncate`. Shapes: ``(B, z_dim)`` → ``(B, w_dim)``.

    Example:
        >>> S_o = MappingNetwork(16, 32, num_layers=2)
        >>> S_o(torch.randn(4, 16)).shape
        torch.Size([4, 32])
    """

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        *,
        num_layers: int = 8,
        lr_mul: float = 0.01,
        w_avg_beta: float = 0.995,
    ) -> None:
        super().__init__()
        _check_positive_int(num_layers, "num_layers")
        self.z_dim = _check_positive_int(z_dim, "z_dim")
        self.w_dim = _check_positive_int(w_dim, "w_dim")
        dims = [z_dim] + [w_dim] * num_layers
        self.net = nn.Sequential(
            PixelNorm(),
            *[EqualLinear(a, b, lr_mul=lr_mul, activation="lrelu") for a, b in zip(dims[:-1], dims[1:])],
        )
        self.w_avg_beta = w_avg_beta
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Tensor) -> Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be (B, {self.z_dim}), got shape {tuple(z.shape)}")
        w = self.net(z)
        if self.training and torch.is_grad_enabled():
            with torch.no_grad():
                mean = w.detach().float().mean(0).to(self.w_avg.dtype)
                self.w_avg.copy_(mean.lerp(self.w_avg, self.w_avg_beta))
        return w

    def truncate(self, w: Tensor, psi: float) -> Tensor:
        """The truncation trick ``w_avg + ψ (w − w_avg)``."""
        return self.w_avg.to(w.dtype).lerp(w, psi)


# ------------------------------------------------------------------------------- modulated conv
def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    *,
    demodulate: bool = True,
    padding: int = 0,
    fused: bool = True,
    eps: float = 1e-8,
) -> Tensor:
    r"""StyleGAN2's modulated convolution (Karras et al. 2020, §2.2, eq. 1-3).

    .. math::
        w'_{ijk} = s_i\, w_{ijk}, \qquad
        w''_{ijk} = w'_{ijk} \Big/ \sqrt{\textstyle\sum_{i,k} {w'_{ijk}}^2 + \epsilon}

    (``i`` input channel, ``j`` output channel, ``k`` kernel tap).

    ``fused=True``: one grouped convolution with per-sample weights ``w''``. ``fused=False``: scale the
    activations by ``s``, run the shared convolution, scale the output by the demodulation coefficients
    (NVlabs' training path; cheaper for large batches). Both compute the same function.

    Args:
        x: ``(B, I, H, W)`` activations.
        weight: ``(O, I, k, k)`` (already multiplied by any equalised-lr scale).
        styles: ``(B, I)`` per-sample input-channel scales ``s``.
        demodulate: normalise each output channel's effective weights to unit norm.
        padding: convolution padding.
        fused: grouped-convolution form (True) or scale-activations form (False).

    Returns:
        ``(B, O, H', W')``.
    """
    if x.ndim != 4 or weight.ndim != 4 or styles.ndim != 2:
        raise ValueError(
            f"x must be (B, I, H, W), weight (O, I, k, k) and styles (B, I); got {tuple(x.shape)}, "
            f"{tuple(weight.shape)}, {tuple(styles.shape)}"
        )
    b, i = x.shape[:2]
    o = weight.shape[0]
    if weight.shape[1] != i or styles.shape != (b, i):
        raise ValueError(
            f"channel mismatch: x {tuple(x.shape)}, weight {tuple(weight.shape)}, "
            f"styles {tuple(styles.shape)}"
        )
    weight = weight.to(x.dtype)
    styles = styles.to(x.dtype)
    if fused:
        w = weight.unsqueeze(0) * styles[:, None, :, None, None]  # (B, O, I, k, k)
        if demodulate:
            w = w * torch.rsqrt(w.square().sum(dim=(2, 3, 4), keepdim=True) + eps)
        out = F.conv2d(
            x.reshape(1, b * i, *x.shape[2:]), w.reshape(b * o, i, *w.shape[3:]), padding=padding, groups=b
        )
        return out.reshape(b, o, *out.shape[2:])
    out = F.conv2d(x * styles[:, :, None, None], weight, padding=padding)
    if demodulate:
        # Σ_{i,k} (s_i w_ijk)² = Σ_i s_i² Σ_k w_ijk²
        dcoefs = torch.rsqrt(styles.square() @ weight.square().sum(dim=(2, 3)).t() + eps)  # (B, O)
        out = out * dcoefs[:, :, None, None]
    return out


class ModulatedConv2d(nn.Module):
    r"""Modulated (and demodulated) convolution layer whose styles come from ``w`` by an affine map.

    The affine ``A`` is an :class:`EqualLinear` with ``bias_init = 1`` (styles start near 1).
    ``upsample=True`` doubles the resolution (bilinear) before the convolution.

    Shapes: ``x (B, in, H, W)``, ``w (B, w_dim)`` → ``(B, out, H·u, W·u)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        w_dim: int,
        *,
        demodulate: bool = True,
        upsample: bool = False,
        fused: bool = True,
    ) -> None:
        super().__init__()
        _check_positive_int(in_channels, "in_channels")
        _check_positive_int(out_channels, "out_channels")
        _check_positive_int(kernel_size, "kernel_size")
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.demodulate = demodulate
        self.upsample = upsample
        self.fused = fused
        self.padding = kernel_size // 2

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        styles = self.affine(w)
        return modulated_conv2d(
            x,
            self.weight * self.scale,
            styles,
            demodulate=self.demodulate,
            padding=self.padding,
            fused=self.fused,
        )


class NoiseInjection(nn.Module):
    """``x + strength · noise`` with a learned scalar ``strength`` (zero at initialisation).

    ``noise`` ``(B, 1, H, W)`` is drawn from ``generator`` (or torch's global RNG) when not given.
    """

    def __init__(self) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(()))

    def forward(
        self, x: Tensor, noise: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        if noise is None:
            shape = (x.shape[0], 1, *x.shape[2:])
            if generator is not None:
                noise = torch.randn(shape, generator=generator, device=generator.device).to(x.device, x.dtype)
            else:
                noise = torch.randn(shape, device=x.device, dtype=x.dtype)
        return x + self.strength.to(x.dtype) * noise


class StyledConv(nn.Module):
    """Modulated 3×3 conv → noise injection → bias → ``leaky_relu(0.2)·√2``.

    Shapes: ``(B, in, H, W)``, ``w (B, w_dim)`` → ``(B, out, H·u, W·u)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        *,
        upsample: bool = False,
        fused: bool = True,
        use_noise: bool = True,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim, upsample=upsample, fused=fused)
        self.noise = NoiseInjection() if use_noise else None
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, w: Tensor, generator: torch.Generator | None = None) -> Tensor:
        out = self.conv(x, w)
        if self.noise is not None:
            out = self.noise(out, generator=generator)
        return F.leaky_relu(out + self.bias.to(out.dtype)[None, :, None, None], 0.2) * _LRELU_GAIN


class ToRGB(nn.Module):
    """1×1 modulated conv without demodulation + bias, added to the up-sampled previous skip output.

    Shapes: ``(B, in, H, W)``, ``w (B, w_dim)``, ``skip (B, out, H/2, W/2)`` or None → ``(B, out, H, W)``.
    """

    def __init__(self, in_channels: int, w_dim: int, out_channels: int = 3, *, fused: bool = True) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 1, w_dim, demodulate=False, fused=fused)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, w: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, w) + self.bias.to(x.dtype)[None, :, None, None]
        if skip is not None:
            out = out + F.interpolate(skip, size=out.shape[-2:], mode="bilinear", align_corners=False)
        return out


class StyleGenerator(nn.Module):
    r"""StyleGAN2 skip generator (config E/F without the blur filters), with optional condition maps
    concatenated to the activations of every resolution.

    Resolutions ``4, 8, …, size``; at 4×4 a learned constant. At resolution ``r`` the activations are
    concatenated with ``cond[r]`` (``cond_channels[r]`` channels, e.g. the heatmap pyramid of the
    manifold-barycenters CycleGAN, §5) before the (second) styled convolution; every resolution adds its
    toRGB output to the up-sampled skip image.

    Styles: ``w`` of shape ``(B, w_dim)`` (broadcast to all layers) or ``(B, num_latents, w_dim)`` (one per
    layer, :func:`num_latents`). Layer order per resolution: conv(up), conv, toRGB (4×4: conv, toRGB).

    Args:
        size: output side (power of two ≥ 4).
        w_dim: style dimension.
        out_channels: image channels.
        channel_base, channel_max: :func:`channels_for` schedule.
        cond_channels: ``{resolution: channels}`` of the condition maps (empty: unconditional).
        fused: modulated-conv form (see :func:`modulated_conv2d`).
        use_noise: per-layer noise injection.

    Shapes: ``forward(w, cond)`` → ``(B, out_channels, size, size)``.

    Example:
        >>> G = StyleGenerator(16, 8, channel_base=64, channel_max=16, cond_channels={4: 2, 8: 2, 16: 2})
        >>> cond = {r: torch.rand(2, 2, r, r) for r in (4, 8, 16)}
        >>> G(torch.randn(2, 8), cond).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(
        self,
        size: int,
        w_dim: int,
        *,
        out_channels: int = 3,
        channel_base: int = 16384,
        channel_max: int = 512,
        cond_channels: dict[int, int] | None = None,
        fused: bool = True,
        use_noise: bool = True,
    ) -> None:
        super().__init__()
        self.size = _check_size(size)
        self.w_dim = _check_positive_int(w_dim, "w_dim")
        self.resolutions = [2**k for k in range(2, int(math.log2(size)) + 1)]
        self.cond_channels = {int(r): int(c) for r, c in (cond_channels or {}).items()}
        unknown = set(self.cond_channels) - set(self.resolutions)
        if unknown:
            raise ValueError(f"cond_channels has resolutions {sorted(unknown)} not in {self.resolutions}")
        ch = {r: channels_for(r, channel_base, channel_max) for r in self.resolutions}
        self.const = nn.Parameter(torch.randn(1, ch[4], 4, 4))
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        prev = ch[4]
        for r in self.resolutions:
            c_in = self.cond_channels.get(r, 0)
            if r == 4:
                self.convs.append(StyledConv(prev + c_in, ch[r], w_dim, fused=fused, use_noise=use_noise))
            else:
                self.convs.append(
                    StyledConv(prev, ch[r], w_dim, upsample=True, fused=fused, use_noise=use_noise)
                )
                self.convs.append(StyledConv(ch[r] + c_in, ch[r], w_dim, fused=fused, use_noise=use_noise))
            self.to_rgbs.append(ToRGB(ch[r], w_dim, out_channels, fused=fused))
            prev = ch[r]
        self.num_latents = num_latents(size)

    def forward(
        self,
        w: Tensor,
        cond: dict[int, Tensor] | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        if w.ndim == 2:
            w = w.unsqueeze(1).expand(-1, self.num_latents, -1)
        if w.ndim != 3 or w.shape[1:] != (self.num_latents, self.w_dim):
            raise ValueError(
                f"w must be (B, {self.w_dim}) or (B, {self.num_latents}, {self.w_dim}), got {tuple(w.shape)}"
            )
        cond = cond or {}
        for r, c in self.cond_channels.items():
            if r not in cond or cond[r].shape[1:] != (c, r, r) or cond[r].shape[0] != w.shape[0]:
                got = None if r not in cond else tuple(cond[r].shape)
                raise ValueError(f"cond[{r}] must be (B, {c}, {r}, {r}) with B = {w.shape[0]}, got {got}")
        x = self.const.expand(w.shape[0], -1, -1, -1)
        skip = None
        layer, conv = 0, 0
        for k, r in enumerate(self.resolutions):
            if r != 4:
                x = self.convs[conv](x, w[:, layer], generator)
                conv, layer = conv + 1, layer + 1
            if r in self.cond_channels:
                x = torch.cat([x, cond[r].to(x.dtype)], dim=1)
            x = self.convs[conv](x, w[:, layer], generator)
            conv, layer = conv + 1, layer + 1
            skip = self.to_rgbs[k](x, w[:, layer], skip)
            # toRGB shares the style index of the next layer (StyleGAN2's layout: 2 per resolution)
        return skip


# ---------------------------------------------------------------------------------- discriminator
# ------------------------------------------------------------------ heatmap-conditioned generation
# The pieces the landmark-conditioned trainers share (zoo.cyclegan, zoo.brule): a generator that sees a
# landmark heatmap at every resolution, and style encoders S: image -> (B, n_latent, w_dim).


class HeatmapPyramid(nn.Module):
    """Strided convolutions from the full-size heatmap down to 4×4 (the landmark CycleGAN's §5, BRULÉ's §3).

    Shapes: ``(B, in_channels, S, S)`` → ``{r: (B, channels, r, r)}`` for ``r = 4, 8, …, S``.
    """

    def __init__(self, in_channels: int, channels: int, size: int) -> None:
        super().__init__()
        self.size = size
        self.stem = EqualConv2d(in_channels, channels, 3, activation="lrelu")
        n_down = int(math.log2(size)) - 2
        self.downs = nn.ModuleList(
            [EqualConv2d(channels, channels, 3, down=True, activation="lrelu") for _ in range(n_down)]
        )

    def forward(self, heatmaps: Tensor) -> dict[int, Tensor]:
        f = self.stem(heatmaps)
        out = {self.size: f}
        for down in self.downs:
            f = down(f)
            out[f.shape[-1]] = f
        return out


class ConditionalImageGenerator(nn.Module):
    """G_I: heatmap pyramid + :class:`~zoo.common.gan.StyleGenerator` conditioned at every resolution.

    Shapes: ``heatmaps (B, K, S, S)``, ``styles (B, w_dim)`` or ``(B, n_latent, w_dim)`` → images
    ``(B, 3, S, S)`` (roughly in [-1, 1]; not squashed, as in StyleGAN2).
    """

    def __init__(
        self,
        heatmap_channels: int,
        size: int,
        w_dim: int,
        *,
        pyramid_channels: int = 32,
        channel_base: int = 16384,
        channel_max: int = 512,
        fused: bool = False,
    ) -> None:
        super().__init__()
        self.pyramid = HeatmapPyramid(heatmap_channels, pyramid_channels, size)
        resolutions = [2**k for k in range(2, int(math.log2(size)) + 1)]
        self.synthesis = StyleGenerator(
            size,
            w_dim,
            channel_base=channel_base,
            channel_max=channel_max,
            cond_channels={r: pyramid_channels for r in resolutions},
            fused=fused,
        )
        self.num_latents = self.synthesis.num_latents

    def forward(
        self, heatmaps: Tensor, styles: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        return self.synthesis(styles, self.pyramid(heatmaps), generator=generator)


class StyleEncoder(nn.Module):
    """S: image → style matrix, the "regular CNN" style encoder of the landmark CycleGAN and BRULÉ.

    Shapes: ``(B, 3, S, S)`` → ``(B, n_latent, w_dim)``.
    """

    def __init__(self, size: int, w_dim: int, *, width: int = 32, max_width: int = 256) -> None:
        super().__init__()
        self.num_latents = num_latents(size)
        self.w_dim = w_dim
        layers: list[nn.Module] = [EqualConv2d(3, min(width, max_width), 1, activation="lrelu")]
        c, r = min(width, max_width), size
        while r > 4:
            c2 = min(c * 2, max_width)
            layers.append(EqualConv2d(c, c2, 3, down=True, activation="lrelu"))
            c, r = c2, r // 2
        self.body = nn.Sequential(*layers)
        self.head = EqualLinear(c * 16, self.num_latents * w_dim)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.body(images).flatten(1)).view(-1, self.num_latents, self.w_dim)


def _style_split(n: int) -> tuple[int, int, int]:
    """pSp's split of ``n`` style vectors into coarse / medium / fine (3 / 4 / rest at any size)."""
    coarse = min(3, n)
    medium = min(4, n - coarse)
    return coarse, medium, n - coarse - medium


class PyramidStyleEncoder(nn.Module):
    """S, pSp style (Richardson et al., *Encoding in Style*, CVPR 2021; the paper's §5 choice): a CNN gives
    feature maps at ``S/4``, ``S/8`` and ``S/16``, a top-down pass adds each coarser map (upsampled) to
    the finer one (a feature pyramid), and every style vector has its own head (stride-2 convolutions down
    to 1×1, then a linear layer) reading the coarsest map for the first 3 vectors, the middle map for the
    next 4 and the finest map for the rest, as pSp does. Trained from scratch: pSp's pretrained IR-SE50
    backbone is not used (nothing is downloaded).

    Shapes: ``(B, 3, S, S)`` → ``(B, n_latent, w_dim)`` (``S ≥ 64``, a power of two).

    Example:
        >>> enc = PyramidStyleEncoder(64, 16, width=8, max_width=16)
        >>> enc(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 10, 16])
    """

    def __init__(self, size: int, w_dim: int, *, width: int = 32, max_width: int = 256) -> None:
        super().__init__()
        if size < 64 or size & (size - 1):
            raise ValueError(f"size must be a power of two >= 64 for the pSp-style encoder, got {size}")
        self.num_latents = num_latents(size)
        self.w_dim = w_dim
        widths = [min(width * 2**i, max_width) for i in range(5)]  # at S, S/2, S/4, S/8, S/16
        self.stem = EqualConv2d(3, widths[0], 1, activation="lrelu")
        self.stages = nn.ModuleList(
            EqualConv2d(widths[i], widths[i + 1], 3, down=True, activation="lrelu") for i in range(4)
        )
        top = widths[4]
        self.lateral = nn.ModuleList([EqualConv2d(widths[2], top, 1), EqualConv2d(widths[3], top, 1)])
        self.split = _style_split(self.num_latents)
        sides = [size // 16, size // 8, size // 4]  # coarse, medium, fine
        self.heads = nn.ModuleList()
        for count, side in zip(self.split, sides):
            for _ in range(count):
                downs = int(math.log2(side))  # to 1x1
                convs = [EqualConv2d(top, top, 3, down=True, activation="lrelu") for _ in range(downs)]
                self.heads.append(nn.Sequential(*convs, nn.Flatten(1), EqualLinear(top, w_dim)))

    def forward(self, images: Tensor) -> Tensor:
        x = self.stem(images)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        coarse = feats[3]
        medium = F.interpolate(coarse, scale_factor=2.0, mode="bilinear", align_corners=False)
        medium = medium + self.lateral[1](feats[2])
        fine = F.interpolate(medium, scale_factor=2.0, mode="bilinear", align_corners=False)
        fine = fine + self.lateral[0](feats[1])
        sources = [coarse] * self.split[0] + [medium] * self.split[1] + [fine] * self.split[2]
        return torch.stack([head(src) for head, src in zip(self.heads, sources)], dim=1)



def minibatch_stddev(x: Tensor, group_size: int = 4, num_channels: int = 1, eps: float = 1e-8) -> Tensor:
    r"""Append minibatch-standard-deviation feature maps (Karras et al. 2018, §3).

    The batch is split into groups of ``G`` samples, ``G`` the largest divisor of ``B`` not above
    ``group_size`` (so any batch size works: 6 with ``group_size=4`` uses groups of 3); when no divisor
    in ``[2, group_size]`` exists (a prime batch such as 5 or 7) the whole batch is one group. Sample ``b``
    belongs to group ``b mod (B/G)``. For each group and each of ``num_channels`` channel slices the mean
    over (channels, pixels) of the within-group standard deviation is broadcast as one extra map.

    Shapes: ``(B, C, H, W)`` → ``(B, C + num_channels, H, W)``; ``C`` divisible by ``num_channels``.
    """
    b, c, h, w = x.shape
    if c % num_channels:
        raise ValueError(f"channels ({c}) must be divisible by num_channels ({num_channels})")
    g = max(d for d in range(1, min(group_size, b) + 1) if b % d == 0)
    if g == 1 and b > 1:  # no divisor in [2, group_size] (e.g. a prime batch): one group of all samples
        g = b
    y = x.to(_acc_dtype(x)).reshape(g, b // g, num_channels, c // num_channels, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0)
    y = (y + eps).sqrt().mean(dim=(2, 3, 4))  # (B/G, F)
    y = y.reshape(b // g, num_channels, 1, 1).repeat(g, 1, h, w).to(x.dtype)
    return torch.cat([x, y], dim=1)


class _DiscriminatorBlock(nn.Module):
    """Residual block: two 3×3 convs (second one down-sampling), 1×1 down-sampling skip, sum / √2."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = EqualConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv2 = EqualConv2d(in_channels, out_channels, 3, down=True, activation="lrelu")
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, down=True)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2.0)


class ResidualDiscriminator(nn.Module):
    r"""StyleGAN2 residual discriminator: fromRGB (1×1) → residual blocks down to 4×4 → minibatch stddev
    → 3×3 conv → FC → FC(1).

    Args:
        size: input side (power of two ≥ 4).
        in_channels: input channels (3 for images, ``N`` or 1 for heatmaps).
        channel_base, channel_max: :func:`channels_for` schedule.
        mbstd_group, mbstd_channels: see :func:`minibatch_stddev`.

    Shapes: ``(B, in_channels, size, size)`` → logits ``(B,)``; with ``return_features=True`` also the list
    of intermediate activations (fromRGB and every block), for :func:`feature_matching_loss`.
    """

    def __init__(
        self,
        size: int,
        in_channels: int = 3,
        *,
        channel_base: int = 16384,
        channel_max: int = 512,
        mbstd_group: int = 4,
        mbstd_channels: int = 1,
    ) -> None:
        super().__init__()
        self.size = _check_size(size)
        self.in_channels = _check_positive_int(in_channels, "in_channels")
        self.mbstd_group = _check_positive_int(mbstd_group, "mbstd_group")
        self.mbstd_channels = _check_positive_int(mbstd_channels, "mbstd_channels")
        res = [2**k for k in range(int(math.log2(size)), 1, -1)]  # size ... 4
        ch = {r: channels_for(r, channel_base, channel_max) for r in res}
        self.from_rgb = EqualConv2d(in_channels, ch[size], 1, activation="lrelu")
        self.blocks = nn.ModuleList([_DiscriminatorBlock(ch[r], ch[r // 2]) for r in res[:-1]])
        c4 = ch[4]
        if c4 % mbstd_channels:
            raise ValueError(f"channels at 4x4 ({c4}) must be divisible by mbstd_channels ({mbstd_channels})")
        self.final_conv = EqualConv2d(c4 + mbstd_channels, c4, 3, activation="lrelu")
        self.final_fc = EqualLinear(c4 * 16, c4, activation="lrelu")
        self.out = EqualLinear(c4, 1)

    def forward(self, x: Tensor, *, return_features: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        if x.ndim != 4 or x.shape[1:] != (self.in_channels, self.size, self.size):
            raise ValueError(
                f"input must be (B, {self.in_channels}, {self.size}, {self.size}), got {tuple(x.shape)}"
            )
        feats = [self.from_rgb(x)]
        for block in self.blocks:
            feats.append(block(feats[-1]))
        h = minibatch_stddev(feats[-1], self.mbstd_group, self.mbstd_channels)
        h = self.final_conv(h)
        logits = self.out(self.final_fc(h.flatten(1))).squeeze(1)
        return (logits, feats) if return_features else logits


# ----------------------------------------------------------------------------------------- losses
def d_logistic_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator's logistic loss ``E softplus(−D(x)) + E softplus(D(G(z)))`` (scalar)."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def g_nonsaturating_loss(fake_logits: Tensor) -> Tensor:
    """Generator's non-saturating logistic loss ``E softplus(−D(G(z)))`` (scalar)."""
    return F.softplus(-fake_logits.float()).mean()


def r1_penalty(real_logits: Tensor, real_inputs: Tensor) -> Tensor:
    r"""R1 (Mescheder et al. 2018): ``E_x ‖∇_x D(x)‖²`` on real inputs (scalar, differentiable).

    ``real_inputs`` must have ``requires_grad=True`` and ``real_logits = D(real_inputs)``. Multiply by
    ``γ/2`` and, for lazy regularisation every ``k`` steps, by ``k`` (see :func:`lazy_adam_hparams`).
    """
    if not real_inputs.requires_grad:
        raise ValueError("real_inputs must require grad (call .requires_grad_() before D)")
    (grad,) = torch.autograd.grad(real_logits.sum(), real_inputs, create_graph=True)
    return grad.to(_acc_dtype(grad)).square().flatten(1).sum(1).mean()


def feature_matching_loss(fake_features: Sequence[Tensor], real_features: Sequence[Tensor]) -> Tensor:
    r"""Discriminator feature matching (pix2pixHD's ``L_feat``): mean over layers of
    ``L1(D_i(fake), D_i(real))`` with the real features detached. Lists of equal-shape tensors."""
    if len(fake_features) != len(real_features) or not fake_features:
        raise ValueError("fake_features and real_features must be non-empty lists of the same length")
    terms = [F.l1_loss(f.float(), r.detach().float()) for f, r in zip(fake_features, real_features)]
    return torch.stack(terms).mean()


def lazy_adam_hparams(
    lr: float, betas: tuple[float, float], interval: int
) -> tuple[float, tuple[float, float]]:
    r"""Adam hyper-parameters corrected for a regulariser applied every ``interval = k`` steps
    (StyleGAN2 §B, "lazy regularization"): ``lr·k/(k+1)``, ``betas**(k/(k+1))``; ``interval=0`` or 1
    without lazy regularisation returns them unchanged."""
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 0:
        raise ValueError(f"interval must be a non-negative int, got {interval!r}")
    if interval == 0:
        return lr, betas
    ratio = interval / (interval + 1)
    return lr * ratio, (betas[0] ** ratio, betas[1] ** ratio)


def lazy_adam(
    params: Iterable[Tensor] | Iterable[dict],
    lr: float,
    betas: tuple[float, float] = (0.0, 0.99),
    interval: int = 0,
    **kwargs,
) -> torch.optim.Adam:
    """``torch.optim.Adam`` with :func:`lazy_adam_hparams` applied (``interval = 0``: no correction)."""
    lr_c, betas_c = lazy_adam_hparams(lr, betas, interval)
    return torch.optim.Adam(params, lr=lr_c, betas=betas_c, **kwargs)


# -------------------------------------------------------------------------------------------- EMA
def ema_beta(batch_size: int, ema_kimg: float) -> float:
    """StyleGAN2's EMA decay ``0.5 ** (batch / (ema_kimg · 1000))``: a half-life of ``ema_kimg`` thousand
    images."""
    if not ema_kimg > 0:
        raise ValueError(f"ema_kimg must be positive, got {ema_kimg!r}")
    return 0.5 ** (batch_size / (ema_kimg * 1000.0))


def make_ema(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` (eval mode, no gradients) to hold the shadow weights."""
    ema = copy.deepcopy(module).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, module: nn.Module, beta: float) -> None:
    r"""``p_ema ← p + (p_ema − p)·β`` for every parameter; buffers are copied (``w_avg``, BN statistics).

    ``ema`` and ``module`` must have the same parameter and buffer names."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta!r}")
    params = dict(module.named_parameters())
    for name, p_ema in ema.named_parameters():
        p_ema.copy_(params[name].detach().to(p_ema.dtype).lerp(p_ema, beta))
    buffers = dict(module.named_buffers())
    for name, b_ema in ema.named_buffers():
        b_ema.copy_(buffers[name])


def set_requires_grad(modules: nn.Module | Iterable[nn.Module], flag: bool) -> None:
    """Switch ``requires_grad`` of every parameter of ``modules`` (freeze D while stepping G, ...)."""
    if isinstance(modules, nn.Module):
        modules = [modules]
    for m in modules:
        m.requires_grad_(flag)


class OptimizerGroup:
    """Several named optimisers stepped separately (G and D of a GAN) that checkpoint as one object:
    ``state_dict()`` → ``{name: optimizer.state_dict()}`` (what :func:`zoo.common.save_checkpoint` stores
    as its ``optimizer``), ``load_state_dict`` restores each; ``group[name]`` is the optimiser."""

    def __init__(self, **optimizers: torch.optim.Optimizer) -> None:
        if not optimizers:
            raise ValueError("OptimizerGroup needs at least one optimizer")
        self.optimizers = dict(optimizers)

    def __getitem__(self, name: str) -> torch.optim.Optimizer:
        return self.optimizers[name]

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.optimizers) - set(state)
        if missing:
            raise ValueError(f"optimizer state lacks {sorted(missing)}")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def average_gradients(modules: nn.Module | Iterable[nn.Module]) -> None:
    """Average the ``.grad`` of every parameter over ``torchrun`` ranks (no-op for one process).

    GAN steps run several forwards (and R1's double backward) per update, which
    ``DistributedDataParallel`` does not support; the trainer calls this between ``backward`` and
    ``step`` instead (one flattened all-reduce per call). Parameters without a gradient are skipped on
    every rank alike (the same code path runs everywhere)."""
    if not _dist_ready():
        return
    if isinstance(modules, nn.Module):
        modules = [modules]
    grads = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= torch.distributed.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_parameters(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (no-op for one process)."""
    if not _dist_ready():
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            torch.distributed.broadcast(t.data, src)
