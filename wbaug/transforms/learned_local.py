r"""Learned local transformations (Chrysos, Panagakis & Zafeiriou, *Visual Data Augmentation through
Learning*, 2018): an image is encoded to a latent ``d`` in which nearby video frames differ linearly,
moved by a learned linear map ``A`` and decoded by a conditional generator, giving a realistic local
change (pose, expression, light) instead of an affine warp.

The prediction of §3.5 (eq. 10), iterated ``k`` times as in the paper's Fig. 5:

.. math::
    \hat{i}^{(t+x)} = f^{III}_d\big(f^{III}_e(A\,[f^I_e(i^{(t)}); 1],\ i^{(t)})\big)

Pieces (the zoo recipe ``zoo/local_transformations`` trains them and exports the model file):

* :class:`ConvEncoder` -- ``f^I_e``: strided 4×4 convolutions + batch norm + LeakyReLU down to 4×4, then
  a linear layer to the latent ``d`` (§3.1, §3.6);
* :func:`fit_transition` -- ``A = Y Xᵀ (X Xᵀ + λ I)⁻¹`` on ``X = [d^{(t)}; 1]`` (§3.2, eq. 6-7), float64;
* :class:`LocalTransformationGenerator` -- ``f^{III}``: a U-Net conditioned on the regressed latent and
  the source frame, with skips from the 2nd and 4th encoder layers (§3.3);
* :class:`LocalTransformationModel` -- encoder + ``A`` + generator, :meth:`~LocalTransformationModel.forward`
  is eq. 10 iterated; :func:`save_local_transformation` / :func:`load_local_transformation` write and read
  the plain state-dict file (``torch.load(weights_only=True)``);
* :class:`LearnedLocalTransformation` -- the torchvision v2 augmentation.

Images inside the networks are ``(B, C, S, S)`` floats in ``[-1, 1]``.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from wbaug._checks import check_generator
from wbaug._random import generator_device
from wbaug.io_atomic import atomic_write

__all__ = [
    "ConvEncoder",
    "LearnedLocalTransformation",
    "LocalTransformationConfig",
    "LocalTransformationGenerator",
    "LocalTransformationModel",
    "fit_transition",
    "image_gradient_l1",
    "load_local_transformation",
    "save_local_transformation",
    "ssim_score",
]

FILE_FORMAT = "wbaug.local_transformation"
FILE_VERSION = 1


def _check_int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


# ------------------------------------------------------------------------------------------ config
@dataclass
class LocalTransformationConfig:
    """Architecture of a :class:`LocalTransformationModel` (stored beside its weights).

    Attributes:
        image_size: side ``S`` of the square images (a power of two ``>= 8``); the encoders have
            ``log2(S) - 2`` strided layers (down to 4×4; 8 layers at 1024 px, the paper's 256 px uses 6
            plus two more at 4×4 → 1, which the linear head replaces).
        in_channels: image channels ``C``.
        latent_dim: latent dimension ``d`` (the paper: 1024).
        channels: channels of the first encoder layer (doubled per layer up to ``max_channels``).
        max_channels: channel cap.
        skips: 1-based encoder layers of ``f^{III}_e`` whose features skip to the decoder (paper: 2 and 4;
            layers beyond the depth are ignored).
    """

    image_size: int = 64
    in_channels: int = 3
    latent_dim: int = 128
    channels: int = 32
    max_channels: int = 256
    skips: tuple[int, ...] = field(default=(2, 4))

    def __post_init__(self) -> None:
        s = self.image_size
        if isinstance(s, bool) or not isinstance(s, int) or s < 8 or s & (s - 1):
            raise ValueError(f"image_size must be a power of two >= 8, got {s!r}")
        _check_int(self.in_channels, "in_channels", 1)
        _check_int(self.latent_dim, "latent_dim", 1)
        _check_int(self.channels, "channels", 1)
        _check_int(self.max_channels, "max_channels", 1)
        self.skips = tuple(int(k) for k in self.skips)
        if any(k < 1 for k in self.skips):
            raise ValueError(f"skips must be 1-based encoder layers >= 1, got {self.skips!r}")

    @property
    def depth(self) -> int:
        """Strided layers from ``S`` down to 4×4."""
        return int(math.log2(self.image_size)) - 2

    def layer_channels(self) -> list[int]:
        """Output channels of encoder layers ``1..depth``."""
        return [min(self.channels * 2**i, self.max_channels) for i in range(self.depth)]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["skips"] = list(self.skips)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> LocalTransformationConfig:
        if not isinstance(data, dict):
            raise TypeError(f"config must be a dict, got {type(data).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


# ---------------------------------------------------------------------------------------- networks
def _down(in_ch: int, out_ch: int, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


def _up(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.LeakyReLU(0.2),
    )


def _check_images(x: Tensor, channels: int, size: int, name: str = "images") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1:] != (channels, size, size):
        raise ValueError(f"{name} must be (B, {channels}, {size}, {size}), got {tuple(x.shape)}")


class ConvEncoder(nn.Module):
    """``f^I_e``: image ``(B, C, S, S)`` in [-1, 1] → latent ``(B, d)`` (§3.1).

    ``depth = log2(S) - 2`` layers of 4×4 stride-2 convolution + batch norm (not on the first layer) +
    LeakyReLU(0.2), then a linear layer from the 4×4 map to ``d``.

    Example:
        >>> enc = ConvEncoder(LocalTransformationConfig(image_size=16, latent_dim=8, channels=4))
        >>> enc(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 8])
    """

    def __init__(self, config: LocalTransformationConfig) -> None:
        super().__init__()
        self.config = config
        chans = config.layer_channels()
        ins = [config.in_channels, *chans[:-1]]
        self.layers = nn.ModuleList([_down(i, o, norm=k > 0) for k, (i, o) in enumerate(zip(ins, chans))])
        self.head = nn.Linear(chans[-1] * 16, config.latent_dim)

    def features(self, x: Tensor) -> list[Tensor]:
        """Outputs of layers ``1..depth`` (``(B, c_k, S/2^k, S/2^k)``)."""
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats

    def forward(self, x: Tensor) -> Tensor:
        _check_images(x, self.config.in_channels, self.config.image_size)
        return self.head(self.features(x)[-1].flatten(1))


class LocalTransformationGenerator(nn.Module):
    """``f^{III}``: ``(latent (B, d), source (B, C, S, S))`` → image ``(B, C, S, S)`` in [-1, 1] (§3.3).

    A U-Net: the source frame goes through a :class:`ConvEncoder`-like stack; the latent is mapped by a
    linear layer to a 4×4 map and concatenated at the bottleneck; transposed convolutions go back up, and
    the features of the encoder layers in ``config.skips`` (paper: 2nd and 4th) are concatenated to the
    decoder features of the same resolution. The last layer is a transposed convolution and ``tanh``.

    Example:
        >>> cfg = LocalTransformationConfig(image_size=16, latent_dim=8, channels=4)
        >>> LocalTransformationGenerator(cfg)(torch.zeros(2, 8), torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(self, config: LocalTransformationConfig) -> None:
        super().__init__()
        self.config = config
        chans = config.layer_channels()
        depth = config.depth
        ins = [config.in_channels, *chans[:-1]]
        self.down = nn.ModuleList([_down(i, o, norm=k > 0) for k, (i, o) in enumerate(zip(ins, chans))])
        self.skips = tuple(k for k in config.skips if k <= depth)
        bottleneck = chans[-1]
        self.latent_map = nn.Linear(config.latent_dim, bottleneck * 16)
        self.up = nn.ModuleList()
        h = bottleneck + (chans[depth - 1] if depth in self.skips else 0)
        # decoder level k (k = depth..1) maps resolution S/2^k to S/2^(k-1)
        for k in range(depth, 0, -1):
            if k == 1:
                self.up.append(nn.ConvTranspose2d(h, config.in_channels, 4, stride=2, padding=1))
            else:
                out = chans[k - 2]
                self.up.append(_up(h, out))
                h = out + (chans[k - 2] if (k - 1) in self.skips else 0)

    def forward(self, latent: Tensor, source: Tensor) -> Tensor:
        cfg = self.config
        _check_images(source, cfg.in_channels, cfg.image_size, "source")
        if latent.ndim != 2 or latent.shape != (source.shape[0], cfg.latent_dim):
            raise ValueError(
                f"latent must be (B, {cfg.latent_dim}) with B = {source.shape[0]}, got {tuple(latent.shape)}"
            )
        feats = []
        x = source
        for layer in self.down:
            x = layer(x)
            feats.append(x)
        depth = cfg.depth
        h = self.latent_map(latent).view(latent.shape[0], -1, 4, 4)
        h = F.leaky_relu(h, 0.2)
        if depth in self.skips:
            h = torch.cat([h, feats[depth - 1]], 1)
        for i, k in enumerate(range(depth, 0, -1)):
            h = self.up[i](h)
            if k > 1 and (k - 1) in self.skips:
                h = torch.cat([h, feats[k - 2]], 1)
        return torch.tanh(h)


class LocalTransformationModel(nn.Module):
    """Encoder ``f^I_e`` + transition ``A`` + generator ``f^{III}``: eq. 10 of Chrysos et al. (2018).

    ``transition`` is the ``(d, d + 1)`` matrix ``A`` acting on ``[d; 1]`` (a parameter so that the
    optional end-to-end fine-tuning of §3.4 can train it; it starts as the identity map).

    Shapes: images ``(B, C, S, S)`` floats in ``[-1, 1]``.

    Example:
        >>> cfg = LocalTransformationConfig(image_size=16, latent_dim=8, channels=4)
        >>> model = LocalTransformationModel(cfg)
        >>> model.eval()(torch.zeros(2, 3, 16, 16), iterations=3).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(self, config: LocalTransformationConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else LocalTransformationConfig()
        if not isinstance(self.config, LocalTransformationConfig):
            raise TypeError(f"config must be a LocalTransformationConfig, got {type(config).__name__}")
        d = self.config.latent_dim
        self.encoder = ConvEncoder(self.config)
        self.generator = LocalTransformationGenerator(self.config)
        self.transition = nn.Parameter(torch.cat([torch.eye(d), torch.zeros(d, 1)], 1), requires_grad=False)

    def encode(self, images: Tensor) -> Tensor:
        """``d = f^I_e(i)``: ``(B, C, S, S)`` → ``(B, d)``."""
        return self.encoder(images)

    def regress(self, latent: Tensor) -> Tensor:
        """``d̂ = A [d; 1]``: ``(B, d)`` → ``(B, d)``."""
        a = self.transition.to(latent.dtype)
        return latent @ a[:, :-1].t() + a[:, -1]

    def synthesize(self, latent: Tensor, source: Tensor) -> Tensor:
        """``f^{III}(d̂, i)``: the generator on a (regressed) latent and the source frame."""
        return self.generator(latent, source)

    def step(self, images: Tensor) -> Tensor:
        """One prediction (eq. 10): ``(B, C, S, S)`` → ``(B, C, S, S)``."""
        return self.synthesize(self.regress(self.encode(images)), images)

    def forward(
        self, images: Tensor, iterations: int = 1, *, return_all: bool = False
    ) -> Tensor | list[Tensor]:
        """Eq. 10 applied ``iterations`` times (the output of one iteration is the input of the next).

        Returns:
            ``(B, C, S, S)``, or with ``return_all`` the list of the ``iterations`` outputs.
        """
        _check_int(iterations, "iterations", 1)
        outs = []
        x = images
        for _ in range(iterations):
            x = self.step(x)
            outs.append(x)
        return outs if return_all else outs[-1]


# ------------------------------------------------------------------------------------------ stage II
def fit_transition(source: Tensor, target: Tensor, ridge: float = 1.0) -> Tensor:
    r"""Stage II of Chrysos et al. (2018), eq. 6-7: the ridge regression ``d^{(t+x)} ≈ A [d^{(t)}; 1]`` in
    closed form, ``A = Y Xᵀ (X Xᵀ + λ I)⁻¹`` with ``X = [sourceᵀ; 1ᵀ]``, ``Y = targetᵀ`` (the bias column is
    regularised too, as eq. 6 penalises ``‖A‖_F``). Computed in float64.

    Args:
        source: ``(N, d)`` latents of the first frames.
        target: ``(N, d')`` latents of the later frames.
        ridge: ``λ_II >= 0`` (0 needs ``X Xᵀ`` invertible: ``N >= d + 1`` independent samples).

    Returns:
        ``A`` as a ``(d', d + 1)`` float64 tensor on ``source``'s device.

    Example:
        >>> x = torch.randn(50, 3, dtype=torch.float64)
        >>> a = fit_transition(x, 2 * x + 1, ridge=0.0)
        >>> torch.allclose(a, torch.cat([2 * torch.eye(3), torch.ones(3, 1)], 1).double())
        True
    """
    for name, t in (("source", source), ("target", target)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 2 or t.shape[0] < 1:
            raise ValueError(f"{name} must be (N, d) with N >= 1, got {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} must be finite")
    if source.shape[0] != target.shape[0]:
        raise ValueError(f"source and target need the same N, got {source.shape[0]} and {target.shape[0]}")
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not ridge >= 0 or math.isinf(ridge):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    x = torch.cat([source.double(), source.new_ones(source.shape[0], 1, dtype=torch.float64)], 1).t()
    y = target.to(device=source.device, dtype=torch.float64).t()
    gram = x @ x.t() + ridge * torch.eye(x.shape[0], dtype=torch.float64, device=x.device)
    # A = Y Xᵀ G⁻¹ with G symmetric:  Aᵀ = G⁻¹ X Yᵀ
    return torch.linalg.solve(gram, x @ y.t()).t()


# ---------------------------------------------------------------------------------------- measures
def image_gradient_l1(pred: Tensor, target: Tensor) -> Tensor:
    r"""``‖∇x̂ − ∇x‖₁``: mean absolute difference of the horizontal and vertical finite differences
    (the gradient term of eq. 3 and eq. 8). ``(B, C, H, W)`` each; returns a scalar."""
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(
            f"pred and target must be (B, C, H, W) of one shape, got {tuple(pred.shape)}, "
            f"{tuple(target.shape)}"
        )
    dx = (pred[..., :, 1:] - pred[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    dy = (pred[..., 1:, :] - pred[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def ssim_score(a: Tensor, b: Tensor, *, window: int = 7, max_val: float = 1.0) -> Tensor:
    """Mean SSIM per image (Wang et al. 2004, :func:`kornia.metrics.ssim`): ``(B, C, H, W)`` each →
    ``(B,)``. Used by the frame-pair selection (§4.1) and the rejection rule of §4.5."""
    import kornia

    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W) of one shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window must be odd and >= 3, got {window}")
    side = min(a.shape[-2:])
    if side < window:  # small images: the largest odd window that fits
        window = max(1, side - (1 - side % 2))
    return kornia.metrics.ssim(a.float(), b.float(), window, max_val=max_val).mean((1, 2, 3))


# ---------------------------------------------------------------------------------------------- I/O
def save_local_transformation(model: LocalTransformationModel, path: str | os.PathLike) -> Path:
    """Write ``model`` as a plain file ``{"format", "version", "config", "state_dict"}`` (atomically),
    loadable with ``torch.load(weights_only=True)`` and :func:`load_local_transformation`."""
    if not isinstance(model, LocalTransformationModel):
        raise TypeError(f"model must be a LocalTransformationModel, got {type(model).__name__}")
    path = Path(path)
    payload = {
        "format": FILE_FORMAT,
        "version": FILE_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    with atomic_write(path) as fh:
        torch.save(payload, fh)
    return path


def load_local_transformation(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> LocalTransformationModel:
    """Read a file written by :func:`save_local_transformation` (``weights_only=True``), validated.

    Returns:
        The model in eval mode on ``map_location``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the message starts with the path and says what is wrong.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"local transformation model file not found: {p}")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{p}: cannot read the model file ({type(err).__name__}: {err})") from err
    if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
        raise ValueError(f"{p}: not a {FILE_FORMAT} file (write it with save_local_transformation)")
    if data.get("version") != FILE_VERSION:
        raise ValueError(f"{p}: unsupported version {data.get('version')!r} (expected {FILE_VERSION})")
    try:
        config = LocalTransformationConfig.from_dict(data.get("config"))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{p}: bad config: {err}") from err
    state = data.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{p}: 'state_dict' must map names to tensors")
    model = LocalTransformationModel(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{p}: the weights do not match the stored config: {err}") from err
    return model.to(map_location).eval()


# ----------------------------------------------------------------------------------------- transform
_LABEL_TYPES = (tv_tensors.KeyPoints, tv_tensors.BoundingBoxes, tv_tensors.Mask)


class LearnedLocalTransformation(v2.Transform):
    r"""torchvision v2 augmentation: replace an image by a learned local transformation of it
    (Chrysos et al., *Visual Data Augmentation through Learning*, 2018, eq. 10 and §4.5).

    With probability ``p`` per image, the image is resized to the model's ``S × S`` if needed, mapped to
    ``[-1, 1]`` and pushed ``iterations`` times through ``encode → A → generator`` (on the model's device,
    all selected images of a batch at once); the result is resized back and kept only when its SSIM to the
    input is at least ``min_ssim`` (the paper discards synthesised images below 0.4), otherwise the input
    is returned unchanged. dtype, device and value range follow the input (uint8: 0-255, floats: 0-1).

    **Labels.** A synthesised image carries no new labels: the pose or expression may have changed, so
    landmarks and boxes of the input no longer match exactly. It suits unlabelled / equivariance terms or
    labels re-estimated by a detector, or attributes the change preserves (identity, age). Key-points,
    boxes and masks in the sample raise a ``ValueError`` unless ``label_preserving=True`` says the change
    keeps them (then they pass through unchanged).

    Args:
        model: a :class:`LocalTransformationModel` or the path of a file from
            :func:`save_local_transformation` (loaded with ``weights_only=True``).
        p: probability of transforming each image.
        iterations: ``k``, applications of eq. 10 (Fig. 5).
        min_ssim: rejection threshold on ``SSIM(output, input)`` (``None``: keep every output).
        label_preserving: let key-points / boxes / masks through unchanged.
        generator: draws the gate (``None``: torch's global RNG). The networks are deterministic.
        device: where the model runs (default: where its weights are). The transform keeps its own copy
            of ``model``: the caller's module is never moved or switched to eval mode.
        ssim_window: SSIM window (odd).

    The model always runs in eval mode (batch-norm running statistics), whatever mode the surrounding
    pipeline is in.

    Shapes: images ``(C, H, W)`` or batched ``(B, C, H, W)`` (tensors, ``tv_tensors.Image``, or PIL).

    Example:
        >>> cfg = LocalTransformationConfig(image_size=16, latent_dim=8, channels=4)
        >>> t = LearnedLocalTransformation(LocalTransformationModel(cfg), p=1.0, min_ssim=None)
        >>> out = t(torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8))
        >>> out.shape, out.dtype
        (torch.Size([3, 16, 16]), torch.uint8)
    """

    _transformed_types = (Tensor, PIL.Image.Image)

    def __init__(
        self,
        model: LocalTransformationModel | str | os.PathLike,
        *,
        p: float = 0.5,
        iterations: int = 1,
        min_ssim: float | None = 0.4,
        label_preserving: bool = False,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
        ssim_window: int = 7,
    ) -> None:
        super().__init__()
        if isinstance(model, (str, os.PathLike)):
            model = load_local_transformation(model)
        if not isinstance(model, LocalTransformationModel):
            raise TypeError(
                f"model must be a LocalTransformationModel or a file path, got {type(model).__name__}"
            )
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        _check_int(iterations, "iterations", 1)
        if min_ssim is not None and (
            isinstance(min_ssim, bool)
            or not isinstance(min_ssim, (int, float))
            or not -1.0 <= min_ssim <= 1.0
        ):
            raise ValueError(f"min_ssim must be in [-1, 1] or None, got {min_ssim!r}")
        if not isinstance(label_preserving, bool):
            raise TypeError(f"label_preserving must be a bool, got {type(label_preserving).__name__}")
        if (
            isinstance(ssim_window, bool)
            or not isinstance(ssim_window, int)
            or ssim_window < 3
            or ssim_window % 2 == 0
        ):
            raise ValueError(f"ssim_window must be an odd int >= 3, got {ssim_window!r}")
        self.model = copy.deepcopy(model).eval()  # ours: the caller's module keeps its device and mode
        if device is not None:
            self.model.to(device)
        self.p = float(p)
        self.iterations = iterations
        self.min_ssim = None if min_ssim is None else float(min_ssim)
        self.label_preserving = label_preserving
        self.generator = check_generator(generator)
        self.ssim_window = ssim_window

    @property
    def device(self) -> torch.device:
        return self.model.transition.device

    def __repr__(self) -> str:
        # the networks' layer dump would bury the settings: name the model by its size instead
        cfg = self.model.config
        return (
            f"{type(self).__name__}(p={self.p}, iterations={self.iterations}, min_ssim={self.min_ssim}, "
            f"label_preserving={self.label_preserving}, model=LocalTransformationModel(image_size="
            f"{cfg.image_size}, latent_dim={cfg.latent_dim}), device={self.device})"
        )

    def _image_inputs(self, flat_inputs: Sequence[Any]) -> list[Any]:
        return [x for x in flat_inputs if self._is_image(x)]

    @staticmethod
    def _is_image(x: Any) -> bool:
        if isinstance(x, PIL.Image.Image) or isinstance(x, tv_tensors.Image):
            return True
        if isinstance(x, tv_tensors.TVTensor):
            return False
        return isinstance(x, Tensor) and x.ndim in (3, 4)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        labels = [type(x).__name__ for x in flat_inputs if isinstance(x, _LABEL_TYPES)]
        if labels and not self.label_preserving:
            raise ValueError(
                f"LearnedLocalTransformation got {sorted(set(labels))}: a synthesised image carries no new "
                "labels (pose/expression may change); pass label_preserving=True if the change keeps them"
            )
        images = self._image_inputs(flat_inputs)
        batch = 1
        if images and isinstance(images[0], Tensor) and images[0].ndim == 4:
            batch = images[0].shape[0]
        dev = generator_device(self.generator)
        applied = torch.rand(batch, generator=self.generator, device=dev) < self.p
        return {"applied": applied.cpu()}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not self._is_image(inpt):
            return inpt  # key-points / boxes / masks (label_preserving) and everything else
        if isinstance(inpt, PIL.Image.Image):
            out = self._apply(TF.pil_to_tensor(inpt), params["applied"])
            return TF.to_pil_image(out)
        out = self._apply(inpt.as_subclass(Tensor), params["applied"])
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    @torch.no_grad()
    def _apply(self, image: Tensor, applied: Tensor) -> Tensor:
        unbatched = image.ndim == 3
        x = image.unsqueeze(0) if unbatched else image
        if applied.numel() != x.shape[0]:
            raise ValueError(f"the gate covers {applied.numel()} images but the input holds {x.shape[0]}")
        cfg = self.model.config
        if self.model.training:  # e.g. after a .train() of the enclosing module
            self.model.eval()
        if x.shape[1] != cfg.in_channels:
            raise ValueError(f"images must have {cfg.in_channels} channels (the model's), got {x.shape[1]}")
        idx = applied.nonzero().flatten().to(x.device)
        if idx.numel() == 0:
            return image
        src = x.index_select(0, idx)
        unit = src.float() / 255.0 if not src.is_floating_point() else src.float()
        h, w = unit.shape[-2:]
        size = cfg.image_size
        net_in = unit.to(self.device)
        if (h, w) != (size, size):
            net_in = F.interpolate(
                net_in, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        pred = (self.model(net_in * 2 - 1, self.iterations) + 1) / 2
        if (h, w) != (size, size):
            pred = F.interpolate(pred, size=(h, w), mode="bilinear", align_corners=False)
        pred = pred.clamp(0, 1).to(device=x.device)
        if src.is_floating_point():
            new = pred.to(src.dtype)
        else:
            new = (pred * 255.0).round().clamp(0, 255).to(src.dtype)
        if self.min_ssim is not None:  # rejected outputs: the input, bit for bit
            keep = ssim_score(pred, unit, window=self.ssim_window) >= self.min_ssim
            new = torch.where(keep.view(-1, 1, 1, 1), new, src)
        out = x.clone()
        out[idx] = new
        return out[0] if unbatched else out
