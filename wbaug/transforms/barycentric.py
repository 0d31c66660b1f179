r"""Wasserstein-barycentric augmentation of a sample (Bespalov et al., *Data augmentation with manifold
barycenters*, §3.1 and Algorithm 2): the one functional core behind both front ends.

* :class:`~wbaug.sampling.WassersteinBarycentricSampler` is the torchvision v2 transform
  (``v2.Compose([v2.ToImage(), sampler, ...])``);
* :class:`~wbaug.transforms.RandomBarycentricWarp` is the kornia augmentation.

Both draw their parameters once with :func:`draw_barycentric_params` (gate, clique, Dirichlet weights,
new landmarks and, in paired mode, the thin-plate-spline sampling grid) and apply them to every input
of the sample with :func:`apply_barycentric`, which dispatches on the input type like torchvision's
functionals: images, videos and plain image tensors are warped bilinearly, masks with nearest
neighbours, PIL images through a tensor, key-points replaced by the new landmarks (and ``Visibility``
flags by theirs), bounding boxes mapped through the forward spline; anything else (labels, metadata)
passes through.
:func:`register_barycentric_kernel` adds a kernel for a type of your own.

Paired warp: the image follows its landmarks, ``out(p) = in(f(p))`` with :math:`f` the thin-plate spline
with :math:`f(\mathrm{new}_i) = \mathrm{old}_i` (:func:`~wbaug.transforms.tps_grid`). A box becomes the
bounding box of the output pixels :math:`p` with :math:`f(p)` inside it: exactly the region the warped
image shows, to one pixel (a forward spline through the landmarks is not the inverse of :math:`f` away
from them and was off by ~2 px at box corners).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import PIL.Image
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from wbaug._random import generator_device
from wbaug.transforms.flip import Visibility
from wbaug.transforms.tps import tps_grid

__all__ = ["BarycentricParams", "apply_barycentric", "draw_barycentric_params", "register_barycentric_kernel"]


@dataclass(frozen=True)
class BarycentricParams:
    """One draw of the barycentric augmentation for ``B`` landmark sets (replayable: apply it again to
    get the same result).

    Attributes:
        applied: ``(B,)`` bool, the gate (``p``) of each landmark set.
        source: ``(B, N, D)`` the landmarks before.
        landmarks: ``(B, N, D)`` the landmarks after (equal to ``source`` where not applied).
        visibility: ``(B, N)`` bool visibility of the new landmarks, or ``None`` (all visible).
        canvas_size: ``(H, W)`` of the key-points' frame, or ``None``.
        grid: ``(A, H, W, 2)`` ``grid_sample`` grids of the ``A`` applied sets (paired mode), else ``None``.
        info: the sampler's draw for the applied sets: ``nearest (A,)``, ``cliques (A,)``,
            ``vertices (A, S)`` (-1 = padding), ``weights (A, S)``.
    """

    applied: Tensor
    source: Tensor
    landmarks: Tensor
    visibility: Tensor | None = None
    canvas_size: tuple[int, int] | None = None
    grid: Tensor | None = None
    info: dict[str, Tensor] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.applied.numel())


def draw_barycentric_params(
    sampler: Any,
    keypoints: Tensor,
    *,
    p: float = 1.0,
    paired: bool = False,
    canvas_size: tuple[int, int] | None = None,
    visibility: Tensor | None = None,
    generator: torch.Generator | None = None,
    variates: dict[str, Tensor] | None = None,
    grid_stride: int = 1,
    tps_regularization: float = 0.0,
) -> BarycentricParams:
    r"""Draw the augmentation of ``keypoints`` ``(B, N, D)`` (or ``(N, D)``): gate each set with
    probability ``p``, replace the applied ones by a random barycenter of a clique around them
    (:meth:`~wbaug.sampling.WassersteinBarycentricSampler.sample_around`) and, when ``paired``, build the
    thin-plate-spline grid that makes the image follow its new landmarks.

    Args:
        sampler: a fitted :class:`~wbaug.sampling.WassersteinBarycentricSampler`.
        keypoints: ``(B, N, D)`` or ``(N, D)`` pixel coordinates (pixel centres at integers).
        p: probability of augmenting each landmark set.
        paired: also build the image warp (needs ``canvas_size`` and ``D = 2``).
        canvas_size: ``(H, W)`` of the key-points' image.
        visibility: optional ``(B, N)`` / ``(N,)`` bool flags; invisible points take no part in the
            alignment, the nearest-neighbour search, the barycenter or the warp.
        generator: source of randomness (``None``: torch's global RNG).
        variates: pre-drawn randomness (``{"applied": (B,), "u": (B,), "log_gamma": (B, S)}``, as the
            kornia front end draws it in ``generate_parameters``); replaces ``p`` and ``generator``.
        grid_stride, tps_regularization: see :func:`~wbaug.transforms.tps_warp_image`.

    Returns:
        :class:`BarycentricParams`.

    Example:
        >>> from wbaug import WassersteinBarycentricSampler, synthetic_faces
        >>> faces = synthetic_faces(50, generator=torch.Generator().manual_seed(0))
        >>> sampler = WassersteinBarycentricSampler(k_neighbors=3).fit(faces)
        >>> params = draw_barycentric_params(sampler, faces[:2], p=1.0, paired=True, canvas_size=(256, 256))
        >>> params.landmarks.shape, params.grid.shape
        (torch.Size([2, 68, 2]), torch.Size([2, 256, 256, 2]))
    """
    if not isinstance(keypoints, Tensor):
        raise TypeError(f"keypoints must be a torch.Tensor, got {type(keypoints).__name__}")
    kp = keypoints.as_subclass(Tensor).detach().clone()  # the draw keeps no reference to user data
    if kp.ndim == 2:
        kp = kp[None]
    if kp.ndim != 3:
        raise ValueError(f"keypoints must have shape (N, D) or (B, N, D), got {tuple(keypoints.shape)}")
    bsz, n = kp.shape[0], kp.shape[1]
    vis = None
    if visibility is not None:
        vis = (
            visibility.as_subclass(Tensor) if isinstance(visibility, Tensor) else torch.as_tensor(visibility)
        )
        vis = vis.to(device="cpu").bool().reshape(bsz, n) if vis.numel() == bsz * n else None
        if vis is None:
            raise ValueError(
                f"visibility must have one flag per key-point, shape ({bsz}, {n}) or ({n},), got "
                f"{tuple(visibility.shape)}"
            )
    if canvas_size is not None:
        canvas_size = (int(canvas_size[0]), int(canvas_size[1]))
    if paired and (canvas_size is None or kp.shape[-1] != 2):
        raise ValueError("paired=True needs 2-D key-points and their canvas_size (H, W)")
    if variates is None:
        if isinstance(p, bool) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        gate = torch.rand(bsz, generator=generator, device=generator_device(generator)).cpu() < p
        sub = None
    else:
        gate = variates["applied"].reshape(-1).to("cpu").bool()
        if gate.numel() != bsz:
            raise ValueError(f"variates were drawn for {gate.numel()} landmark sets, got {bsz}")
        sub = {k: v[gate.to(v.device)] for k, v in variates.items() if k != "applied"}
    idx = torch.nonzero(gate).flatten()
    out = kp.clone()
    out_vis = None if vis is None else vis.clone()
    grid = None
    info: dict[str, Tensor] = {}
    if idx.numel() > 0:
        src = kp[idx.to(kp.device)]
        src_vis = None if vis is None else vis[idx]
        new, info = sampler.sample_around(src, generator=generator, visibility=src_vis, variates=sub)
        new_vis = info.pop("visibility", None)
        out[idx.to(kp.device)] = new.to(out.dtype)
        # a point is visible after the draw if the sample saw it (occlusion belongs to the image) and the
        # barycenter defines it; only such points steer the warp
        keep = src_vis
        if new_vis is not None:
            keep = new_vis.cpu() if keep is None else keep & new_vis.cpu()
        if out_vis is not None and keep is not None:
            out_vis[idx] = keep
        if paired:
            grid = _tps_grids(
                src, new, keep, canvas_size, grid_stride=grid_stride, regularization=tps_regularization
            )
    return BarycentricParams(
        applied=gate,
        source=kp,
        landmarks=out.reshape(kp.shape),
        visibility=out_vis,
        canvas_size=canvas_size,
        grid=grid,
        info=info,
    )


def _tps_grids(
    src: Tensor,
    dst: Tensor,
    visibility: Tensor | None,
    size: tuple[int, int],
    *,
    grid_stride: int,
    regularization: float,
) -> Tensor:
    """``(A, H, W, 2)`` warps of ``A`` landmark sets (invisible points are not control points)."""
    src32, dst32 = src.to(torch.float32), dst.to(torch.float32)
    if visibility is None or bool(visibility.all()):
        return tps_grid(src32, dst32, size, regularization=regularization, grid_stride=grid_stride)
    grids = [
        tps_grid(s[v][None], d[v][None], size, regularization=regularization, grid_stride=grid_stride)
        for s, d, v in zip(src32, dst32, visibility.to(src.device))
    ]
    return torch.cat(grids)


# ------------------------------------------------------------------------------------------- kernels
_KERNELS: dict[type, Callable[..., Any]] = {}


def register_barycentric_kernel(input_type: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``kernel(inpt, params, *, padding_mode) -> output`` for ``input_type`` (a
    ``tv_tensors.TVTensor`` subclass of your own, say), as torchvision's ``register_kernel`` does for its
    functionals. Lookup follows the type's MRO; unregistered ``TVTensor`` types pass through unchanged.

    Example:
        >>> class Heatmaps(tv_tensors.TVTensor):
        ...     pass
        >>> @register_barycentric_kernel(Heatmaps)
        ... def _warp_heatmaps(inpt, params, *, padding_mode="zeros"):
        ...     return apply_barycentric(tv_tensors.Image(inpt), params, padding_mode=padding_mode)
    """
    if not isinstance(input_type, type):
        raise TypeError(f"input_type must be a type, got {type(input_type).__name__}")

    def register(kernel: Callable[..., Any]) -> Callable[..., Any]:
        _KERNELS[input_type] = kernel
        return kernel

    return register


def apply_barycentric(inpt: Any, params: BarycentricParams, *, padding_mode: str = "border") -> Any:
    """Apply a draw to one input: the kernel registered for its type (see the module docstring).

    Args:
        inpt: an image ``(..., C, H, W)`` (tensor, ``Image``, ``Video``, ``Mask``, PIL), ``KeyPoints``
            ``(..., N, D)``, ``BoundingBoxes`` ``(K, 4)``, or anything else (returned as is).
        params: from :func:`draw_barycentric_params`.
        padding_mode: ``grid_sample`` padding of the warp (``"zeros"``, ``"border"``, ``"reflection"``).

    Returns:
        a new object of the input's type (the input itself when nothing changes).
    """
    if padding_mode not in ("zeros", "border", "reflection"):
        raise ValueError(f"padding_mode must be 'zeros', 'border' or 'reflection', got {padding_mode!r}")
    for cls in type(inpt).__mro__:
        if cls in _KERNELS:
            return _KERNELS[cls](inpt, params, padding_mode=padding_mode)
        if cls is tv_tensors.TVTensor:
            break
    return inpt


@register_barycentric_kernel(tv_tensors.KeyPoints)
def _keypoints_kernel(inpt: Tensor, params: BarycentricParams, *, padding_mode: str) -> Tensor:
    if not bool(params.applied.any()):
        return inpt
    if inpt.numel() != params.landmarks.numel():
        raise ValueError(
            f"KeyPoints of shape {tuple(inpt.shape)} do not match the drawn landmarks "
            f"{tuple(params.landmarks.shape)}"
        )
    new = params.landmarks.reshape(inpt.shape).to(dtype=inpt.dtype, device=inpt.device)
    return tv_tensors.wrap(new, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else new


@register_barycentric_kernel(Visibility)
def _visibility_kernel(inpt: Tensor, params: BarycentricParams, *, padding_mode: str) -> Tensor:
    if params.visibility is None or not bool(params.applied.any()):
        return inpt
    flags = params.visibility.reshape(inpt.shape).to(device=inpt.device, dtype=inpt.dtype)
    return Visibility(flags)


def _warp_pixels(data: Tensor, params: BarycentricParams, mode: str, padding_mode: str) -> Tensor:
    h, w = params.canvas_size
    if tuple(data.shape[-2:]) != (h, w):
        raise ValueError(
            f"canvas_size mismatch: image of shape {tuple(data.shape)} with key-points on a {(h, w)} canvas"
        )
    bsz = params.batch_size
    if bsz > 1 and (data.ndim < 4 or data.shape[0] != bsz):
        raise ValueError(
            f"{bsz} key-point sets need images with a matching batch, (B={bsz}, C, H, W); got "
            f"{tuple(data.shape)}"
        )
    flat = data.reshape(bsz, -1, h, w)
    sel = torch.nonzero(params.applied).flatten().to(data.device)
    work = flat[sel] if flat.is_floating_point() else flat[sel].to(torch.float32)
    warped = F.grid_sample(
        work,
        params.grid.to(device=work.device, dtype=work.dtype),
        mode=mode,
        padding_mode=padding_mode,
        align_corners=False,
    )
    if not flat.is_floating_point():
        limits = torch.iinfo(flat.dtype)
        warped = warped.round_().clamp_(limits.min, limits.max)
    out = flat.clone()
    out[sel] = warped.to(flat.dtype)
    return out.reshape(data.shape)


@register_barycentric_kernel(Tensor)
@register_barycentric_kernel(tv_tensors.Image)
@register_barycentric_kernel(tv_tensors.Video)
def _image_kernel(inpt: Tensor, params: BarycentricParams, *, padding_mode: str) -> Tensor:
    if params.grid is None or not bool(params.applied.any()):
        return inpt
    out = _warp_pixels(inpt.as_subclass(Tensor), params, "bilinear", padding_mode)
    return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


@register_barycentric_kernel(tv_tensors.Mask)
def _mask_kernel(inpt: Tensor, params: BarycentricParams, *, padding_mode: str) -> Tensor:
    if params.grid is None or not bool(params.applied.any()):
        return inpt
    out = _warp_pixels(inpt.as_subclass(Tensor), params, "nearest", padding_mode)
    return tv_tensors.wrap(out, like=inpt)


@register_barycentric_kernel(PIL.Image.Image)
def _pil_kernel(inpt: PIL.Image.Image, params: BarycentricParams, *, padding_mode: str) -> PIL.Image.Image:
    if params.grid is None or not bool(params.applied.any()):
        return inpt
    out = _warp_pixels(TF.pil_to_tensor(inpt), params, "bilinear", padding_mode)
    return TF.to_pil_image(out, mode=inpt.mode)


@register_barycentric_kernel(tv_tensors.BoundingBoxes)
def _boxes_kernel(inpt: Tensor, params: BarycentricParams, *, padding_mode: str) -> Tensor:
    if params.grid is None or not bool(params.applied.any()):
        return inpt
    fmt = inpt.format
    if fmt.name not in ("XYXY", "XYWH", "CXCYWH"):
        raise ValueError(f"bounding boxes in format {fmt.name}: the barycentric warp maps XYXY, XYWH, CXCYWH")
    h, w = params.canvas_size
    boxes = TF.convert_bounding_box_format(
        inpt.as_subclass(Tensor), old_format=fmt, new_format=tv_tensors.BoundingBoxFormat.XYXY
    )
    bsz = params.batch_size
    if bsz > 1 and boxes.shape[0] != bsz:
        raise ValueError(f"{bsz} key-point sets need one box each, got boxes of shape {tuple(boxes.shape)}")
    owner = torch.zeros(boxes.shape[0], dtype=torch.long) if bsz == 1 else torch.arange(bsz)
    out = boxes.clone()
    for a, b in enumerate(torch.nonzero(params.applied).flatten().tolist()):
        rows = torch.nonzero(owner == b).flatten().to(boxes.device)
        if rows.numel() > 0:
            out[rows] = _warp_boxes(boxes[rows], params.grid[a], (h, w)).to(out.dtype)
    out = TF.convert_bounding_box_format(out, old_format=tv_tensors.BoundingBoxFormat.XYXY, new_format=fmt)
    return tv_tensors.wrap(out, like=inpt)


def _warp_boxes(xyxy: Tensor, grid: Tensor, size: tuple[int, int]) -> Tensor:
    """``(K, 4)`` XYXY boxes after the warp whose ``grid_sample`` grid is ``(H, W, 2)``: the bounding box of
    the output pixels whose source point lies in the box (what the warped image shows, to one pixel); a
    box that leaves the canvas becomes an empty ``(0, 0, 0, 0)`` box."""
    h, w = size
    g = grid.to(device=xyxy.device, dtype=torch.float64)
    src_x = (g[..., 0] + 1.0) * (w / 2.0)  # source point in box-edge coordinates (pixel edges at integers)
    src_y = (g[..., 1] + 1.0) * (h / 2.0)
    b = xyxy.to(torch.float64)[:, :, None, None]
    inside = (src_x >= b[:, 0]) & (src_x <= b[:, 2]) & (src_y >= b[:, 1]) & (src_y <= b[:, 3])  # (K, H, W)
    cols, rows = inside.any(1), inside.any(2)  # (K, W), (K, H)
    xs = torch.arange(w, device=xyxy.device, dtype=torch.float64)
    ys = torch.arange(h, device=xyxy.device, dtype=torch.float64)
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=xyxy.device)
    x0 = torch.where(cols, xs, inf).amin(1)
    x1 = torch.where(cols, xs, -inf).amax(1) + 1.0
    y0 = torch.where(rows, ys, inf).amin(1)
    y1 = torch.where(rows, ys, -inf).amax(1) + 1.0
    out = torch.stack([x0, y0, x1, y1], -1)
    return torch.where(cols.any(1)[:, None], out, torch.zeros_like(out))
