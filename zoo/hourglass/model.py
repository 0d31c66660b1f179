r"""Stacked hourglass network (Newell, Yang & Deng, *Stacked Hourglass Networks for Human Pose
Estimation*, ECCV 2016) for landmark heatmaps, with intermediate supervision.

Architecture (all convolutions pre-activated: BN → ReLU → conv):

* **stem** to stride ``s = heatmap_stride`` ∈ {1, 2, 4}: 7×7 conv (stride 2 when ``s ≥ 2``), a residual
  block, 2×2 max-pool (when ``s = 4``), two residual blocks; or a ``timm`` backbone's feature map of
  reduction ``s`` (``pretrained=False``: nothing is downloaded) followed by a 1×1 projection;
* **S hourglasses**: recursive ``depth``-level encoder/decoder with a residual skip at every level
  (nearest up-sampling, element-wise sum);
* after each hourglass a residual block and 1×1 conv give features ``f_t`` and heatmaps
  ``H_t = W_h f_t`` (``N`` channels); between stacks ``x_{t+1} = x_t + W_f f_t + W_r H_t``;
* all ``S`` heatmaps are returned, ``(B, S, N, H/s, W/s)``, and every one is supervised.

Heatmap pixel ``(i, j)`` covers image pixels ``s·j … s·j + s - 1``; with pixel centres at integers the
heatmap coordinate ``u`` maps to the image coordinate ``x = s(u + 1/2) - 1/2`` (see
:func:`heatmap_to_image`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wbaug.landmarks import heatmap_argmax, soft_argmax
from zoo.common.registry import register_model

__all__ = [
    "Hourglass",
    "Residual",
    "StackedHourglass",
    "heatmap_to_image",
    "image_to_heatmap",
    "stacked_hourglass",
    "stacked_hourglass_tiny",
]


def heatmap_to_image(coords: Tensor, stride: int) -> Tensor:
    """Map heatmap pixel coordinates to image pixel coordinates: ``x = s (u + 1/2) - 1/2``."""
    return (coords + 0.5) * stride - 0.5


def image_to_heatmap(coords: Tensor, stride: int) -> Tensor:
    """Inverse of :func:`heatmap_to_image`: ``u = (x + 1/2) / s - 1/2``."""
    return (coords + 0.5) / stride - 0.5


class Residual(nn.Module):
    """Pre-activation bottleneck: ``x + conv1x1(conv3x3(conv1x1(x)))`` (1×1 skip when widths differ)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = max(1, out_channels // 2)
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


def _blocks(channels: int, n: int) -> nn.Sequential:
    return nn.Sequential(*[Residual(channels, channels) for _ in range(n)])


class Hourglass(nn.Module):
    """One recursive hourglass of ``depth`` levels; input and output ``(B, C, H, W)``, ``H, W`` divisible
    by ``2**depth``."""

    def __init__(self, depth: int, channels: int, blocks: int = 1) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        self.up = _blocks(channels, blocks)
        self.down = nn.Sequential(nn.MaxPool2d(2), _blocks(channels, blocks))
        self.inner = Hourglass(depth - 1, channels, blocks) if depth > 1 else _blocks(channels, blocks)
        self.out = _blocks(channels, blocks)

    def forward(self, x: Tensor) -> Tensor:
        low = self.out(self.inner(self.down(x)))
        return self.up(x) + nn.functional.interpolate(low, size=x.shape[-2:], mode="nearest")


class _ConvStem(nn.Module):
    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        c1 = max(8, width // 2)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, c1, 7, stride=2 if stride >= 2 else 1, padding=3, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            Residual(c1, c1),
        ]
        if stride == 4:
            layers.append(nn.MaxPool2d(2))
        layers += [Residual(c1, c1), Residual(c1, width)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _TimmStem(nn.Module):
    """A timm backbone's feature map at reduction ``stride`` projected to ``width`` channels."""

    def __init__(self, name: str, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        import timm

        probe = timm.create_model(name, pretrained=False, features_only=True, in_chans=in_channels)
        reductions = probe.feature_info.reduction()
        if stride not in reductions:
            raise ValueError(
                f"backbone {name!r} has feature reductions {reductions}; heatmap_stride {stride} is not one"
            )
        index = reductions.index(stride)
        self.body = timm.create_model(
            name, pretrained=False, features_only=True, out_indices=(index,), in_chans=in_channels
        )
        channels = self.body.feature_info.channels()[0]
        self.proj = nn.Sequential(nn.Conv2d(channels, width, 1), Residual(width, width))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.body(x)[0])


class StackedHourglass(nn.Module):
    """Stacked hourglass landmark detector with intermediate supervision.

    Args:
        num_landmarks: ``N`` output heatmap channels.
        stacks: number of hourglasses ``S``.
        width: feature channels ``C``.
        depth: levels per hourglass (the heatmap side must be divisible by ``2**depth``).
        blocks: residual blocks per level.
        heatmap_stride: input/heatmap size ratio ``s`` ∈ {1, 2, 4}.
        backbone: optional ``timm`` model name used as the stem (randomly initialised).
        in_channels: image channels.

    Shapes:
        ``forward``: ``(B, in_channels, H, W)`` → ``(B, S, N, H/s, W/s)`` heatmaps (regressing Gaussians
        of peak 1); ``decode`` → ``(B, N, 2)`` image pixel coordinates.

    Example:
        >>> net = StackedHourglass(68, stacks=2, width=32, depth=3)
        >>> heat = net(torch.rand(2, 3, 64, 64))
        >>> heat.shape, net.decode(heat).shape
        (torch.Size([2, 2, 68, 16, 16]), torch.Size([2, 68, 2]))
    """

    def __init__(
        self,
        num_landmarks: int,
        *,
        stacks: int = 2,
        width: int = 128,
        depth: int = 4,
        blocks: int = 1,
        heatmap_stride: int = 4,
        backbone: str | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        for name, value in (("num_landmarks", num_landmarks), ("stacks", stacks), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if heatmap_stride not in (1, 2, 4):
            raise ValueError(f"heatmap_stride must be 1, 2 or 4, got {heatmap_stride!r}")
        self.num_landmarks = num_landmarks
        self.stacks = stacks
        self.depth = depth
        self.heatmap_stride = heatmap_stride
        if backbone:
            self.stem: nn.Module = _TimmStem(backbone, in_channels, width, heatmap_stride)
        else:
            self.stem = _ConvStem(in_channels, width, heatmap_stride)
        self.hourglasses = nn.ModuleList([Hourglass(depth, width, blocks) for _ in range(stacks)])
        self.features = nn.ModuleList(
            [
                nn.Sequential(
                    _blocks(width, blocks),
                    nn.Conv2d(width, width, 1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                )
                for _ in range(stacks)
            ]
        )
        self.heads = nn.ModuleList([nn.Conv2d(width, num_landmarks, 1) for _ in range(stacks)])
        self.remap_features = nn.ModuleList([nn.Conv2d(width, width, 1) for _ in range(stacks - 1)])
        self.remap_heatmaps = nn.ModuleList([nn.Conv2d(num_landmarks, width, 1) for _ in range(stacks - 1)])

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        side = 2**self.depth * self.heatmap_stride
        if images.shape[-1] % side or images.shape[-2] % side:
            raise ValueError(f"image size {tuple(images.shape[-2:])} must be divisible by {side}")
        x = self.stem(images)
        outputs = []
        for t in range(self.stacks):
            f = self.features[t](self.hourglasses[t](x))
            heat = self.heads[t](f)
            outputs.append(heat)
            if t < self.stacks - 1:
                x = x + self.remap_features[t](f) + self.remap_heatmaps[t](heat)
        return torch.stack(outputs, dim=1)

    def decode(self, heatmaps: Tensor, *, soft: bool = False, temperature: float = 0.1) -> Tensor:
        """Image pixel coordinates ``(B, N, 2)`` from the last stack of ``heatmaps`` ``(B, S, N, h, w)``
        (or ``(B, N, h, w)``).

        ``soft=False``: hard argmax refined by a parabola through the log-heatmap (evaluation);
        ``soft=True``: differentiable softmax soft-argmax with ``temperature`` (losses on coordinates);
        on peak-1 Gaussian heatmaps of σ = 1.5 heatmap pixels, τ = 0.1 is within ~0.03 heatmap pixels
        (smaller τ snaps towards pixel centres, larger τ lets the background pull towards the centre).
        """
        last = heatmaps[:, -1] if heatmaps.ndim == 5 else heatmaps
        last = last.float()
        if soft:
            uv = soft_argmax(last, normalize="softmax", temperature=temperature)
        else:
            uv = heatmap_argmax(last, refine="log_parabola")
        return heatmap_to_image(uv, self.heatmap_stride)


@register_model
def stacked_hourglass(num_landmarks: int = 68, **kwargs) -> StackedHourglass:
    """Two stacks, width 128, depth 4, heatmaps at stride 4 (Newell et al.'s configuration)."""
    return StackedHourglass(num_landmarks, **kwargs)


@register_model
def stacked_hourglass_tiny(num_landmarks: int = 68, **kwargs) -> StackedHourglass:
    """One narrow 2-level stack (the CPU smoke-test size of ``zoo.hourglass.config.smoke_config``)."""
    return StackedHourglass(num_landmarks, **{"stacks": 1, "width": 16, "depth": 2, **kwargs})
