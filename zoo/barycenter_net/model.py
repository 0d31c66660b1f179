r"""BarycenterNet (Fan-Li et al., *Learning to Generate Wasserstein Barycenters*, ICLR 2021 submission, Sec.
3.1, Fig. 1): a network that maps ``n`` densities and barycentric weights to their Wasserstein barycenter.

* ``n`` **contractive paths** :math:`\varphi` that share one set of weights (so ``n`` can change at test
  time; training uses ``n = 2``): ``depth + 1`` blocks of two 3×3 convolutions (stride 1, padding 1),
  each followed by InstanceNorm and ReLU, with 2×2 average pooling between blocks;
* **barycentric skip connections**: after block ``j`` the activations of all paths are combined with
  the barycentric weights, :math:`F'_j = \sum_i \lambda_i F^i_j`;
* one **expansive path** :math:`\psi`: from :math:`F'_{depth}`, nearest-neighbour up-sampling ×2, then
  concatenation with :math:`F'_j` and a block of the same form, down to full resolution;
* a 1×1 convolution and a **softmax over all pixels**: the output is a probability density.

Inputs are multiplied by ``H·W`` (mean 1) before the first convolution: unit-mass 512² densities have
pixel values near 4e-6, below float16's normal range, which would break mixed precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.common.registry import register_model

__all__ = ["BarycenterNet", "ConvBlock", "barycenter_net", "barycenter_net_cpu"]


class ConvBlock(nn.Sequential):
    """``(conv3x3 → InstanceNorm → ReLU) × 2`` (the paper places the normalisation before each ReLU)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers += [
                nn.Conv2d(c_in, out_channels, 3, stride=1, padding=1),
                nn.InstanceNorm2d(out_channels, affine=True),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


def _check_inputs(densities: Tensor, weights: Tensor, multiple: int) -> None:
    if not isinstance(densities, Tensor) or densities.ndim != 4 or not densities.is_floating_point():
        raise ValueError(
            f"densities must be a floating tensor of shape (B, K, H, W), got "
            f"{tuple(densities.shape) if isinstance(densities, Tensor) else type(densities).__name__}"
        )
    b, k, h, w = densities.shape
    if k < 1 or h % multiple or w % multiple:
        raise ValueError(
            f"densities must have K >= 1 inputs and H, W divisible by 2**depth = {multiple}, got "
            f"{tuple(densities.shape)}"
        )
    if not isinstance(weights, Tensor) or weights.shape != (b, k):
        raise ValueError(
            f"weights must have shape (B, K) = {(b, k)}, got "
            f"{tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__}"
        )
    # cheap host-side checks only on CPU: on CUDA they would synchronise every training step
    if densities.device.type == "cpu":
        if not bool(torch.isfinite(densities).all()) or bool((densities < 0).any()):
            raise ValueError("densities must be finite and non-negative")
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise ValueError("weights must be finite and non-negative")
        if not torch.allclose(weights.double().sum(-1), torch.ones(b, dtype=torch.float64), atol=1e-4):
            raise ValueError("weights must sum to one along K (barycentric weights on the simplex)")


class BarycenterNet(nn.Module):
    r"""Predict Wasserstein barycenters of ``K`` densities on a regular grid.

    Args:
        width: channels of the first block; block ``j`` has ``min(width * 2**j, max_width)``.
        depth: number of 2×2 poolings (``H`` and ``W`` must be divisible by ``2**depth``).
        max_width: channel cap of the deepest blocks.

    Shapes:
        - ``densities``: ``(B, K, H, W)`` non-negative, each ``(H, W)`` slice of unit mass (the paper's
          Sobel contours; any ``K >= 1``, whatever ``K`` was used in training).
        - ``weights``: ``(B, K)`` barycentric weights (non-negative, summing to one). A zero weight removes
          an input, which is how batches of cliques of different sizes are padded.
        - output: ``(B, H, W)`` densities (softmax over the ``H·W`` pixels), or log-densities with
          ``log=True`` (for the KL loss).

    Example:
        >>> net = BarycenterNet(width=4, depth=2, max_width=8)
        >>> a = torch.rand(3, 2, 16, 16); a = a / a.sum(dim=(-1, -2), keepdim=True)
        >>> b = net(a, torch.tensor([[0.3, 0.7]]).expand(3, 2))
        >>> b.shape, bool(torch.allclose(b.sum(dim=(-1, -2)), torch.ones(3)))
        (torch.Size([3, 16, 16]), True)
    """

    def __init__(self, *, width: int = 32, depth: int = 5, max_width: int = 256) -> None:
        super().__init__()
        for name, value, low in (("width", width, 1), ("depth", depth, 0), ("max_width", max_width, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.depth = depth
        channels = [min(width * 2**j, max_width) for j in range(depth + 1)]
        self.channels = channels
        self.encoder = nn.ModuleList(
            ConvBlock(1 if j == 0 else channels[j - 1], channels[j]) for j in range(depth + 1)
        )
        # decoder block j sees the up-sampled level j + 1 concatenated with the combined skip F'_j
        self.decoder = nn.ModuleList(
            ConvBlock(channels[j + 1] + channels[j], channels[j]) for j in range(depth)
        )
        self.head = nn.Conv2d(channels[0], 1, 1)

    def contract(self, images: Tensor) -> list[Tensor]:
        """The shared contractive path :math:`\\varphi`: ``(P, 1, H, W)`` -> features of every level."""
        feats = []
        x = images
        for j, block in enumerate(self.encoder):
            if j:
                x = F.avg_pool2d(x, 2)
            x = block(x)
            feats.append(x)
        return feats

    def forward(self, densities: Tensor, weights: Tensor, *, log: bool = False) -> Tensor:
        _check_inputs(densities, weights, 2**self.depth)
        b, k, h, w = densities.shape
        x = (densities * (h * w)).reshape(b * k, 1, h, w)  # all K paths share weights: fold K into the batch
        lam = weights.to(x.dtype).reshape(b, k, 1, 1, 1)
        # barycentric skips F'_j = sum_i lambda_i F^i_j
        skips = [(lam * f.reshape(b, k, *f.shape[1:])).sum(1) for f in self.contract(x)]
        y = skips[-1]
        for j in reversed(range(self.depth)):
            y = F.interpolate(y, scale_factor=2.0, mode="nearest")
            y = self.decoder[j](torch.cat([y, skips[j]], dim=1))
        logits = self.head(y).float().reshape(b, h * w)  # softmax in float32 under autocast
        out = F.log_softmax(logits, dim=-1) if log else F.softmax(logits, dim=-1)
        return out.reshape(b, h, w)

    def num_parameters(self) -> int:
        """Number of trainable parameters (independent of ``K`` and of the resolution)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def extra_repr(self) -> str:
        return f"depth={self.depth}, channels={self.channels}"


@register_model
def barycenter_net(**kwargs) -> BarycenterNet:
    """The paper-size network (width 32, depth 5, 512² inputs)."""
    return BarycenterNet(**kwargs)


@register_model
def barycenter_net_cpu(**kwargs) -> BarycenterNet:
    """Width 16, depth 4 (64² inputs): the network of ``zoo.barycenter_net.config.cpu_config``."""
    return BarycenterNet(**{"width": 16, "depth": 4, "max_width": 128, **kwargs})
