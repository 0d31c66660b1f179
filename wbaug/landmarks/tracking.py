r"""Recover the ``(3, 3)`` pixel-to-pixel matrix of a torchvision v2 transform, which never exposes it.

Two methods:

- ``"coordinates"`` (default, exact w.r.t. the *image* warp): a :class:`CoordinateMap` tv_tensor holding
  the channels ``(x, y, 1)`` of every source pixel travels through the transform together with the image
  and receives the same geometric operation (bilinear, no antialias, zero fill) while photometric
  operations pass it through. Output pixel ``(u, v)`` then holds the source point it was sampled from;
  a least-squares fit of ``(u, v) -> (x, y)`` over the valid pixels, inverted, is the matrix. Bilinear
  interpolation of an affine function is exact, so affine/resize/crop/flip/pad/perspective warps are
  recovered to float precision, and the landmarks follow the image pixels (pixel centres at integers).
- ``"keypoints"``: three probe key-points ride along in ``tv_tensors.KeyPoints`` and the affine map is
  solved from them. This trusts torchvision's key-point kernels, which differ from its image kernels by
  up to ~0.5 px after resize/affine (measured on torchvision 0.29).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from wbaug.landmarks.geometry import apply_transform

__all__ = ["CoordinateMap", "ProbeKeyPoints", "coordinate_map", "fit_warp_matrix", "track_transform"]


class ProbeKeyPoints(tv_tensors.KeyPoints):
    """Probe key-points used to recover a transform's matrix; landmark-aware transforms must only move
    them geometrically (e.g. :class:`wbaug.transforms.LandmarkHorizontalFlip` mirrors without permuting)."""


class CoordinateMap(tv_tensors.TVTensor):
    """``(3, H, W)`` float map of source coordinates ``(x, y, 1)``; geometric v2 kernels only."""

    @classmethod
    def _wrap(cls, tensor: Tensor) -> CoordinateMap:
        return tensor.as_subclass(cls)

    def __new__(cls, data: Any) -> CoordinateMap:
        return cls._wrap(cls._to_tensor(data, dtype=None, device=None, requires_grad=False))


def _kernel(image_kernel: Callable[..., Tensor]) -> Callable[..., CoordinateMap]:
    params = inspect.signature(image_kernel).parameters

    def kernel(inpt: Tensor, *args: Any, **kwargs: Any) -> CoordinateMap:
        if "interpolation" in params:
            kwargs["interpolation"] = InterpolationMode.BILINEAR
        if "antialias" in params:
            kwargs["antialias"] = False
        if "fill" in params:
            kwargs["fill"] = None
        if "padding_mode" in params:
            kwargs["padding_mode"] = "constant"
        return CoordinateMap._wrap(image_kernel(inpt.as_subclass(Tensor), *args, **kwargs))

    return kernel


for _functional, _image_kernel in [
    (F.horizontal_flip, F.horizontal_flip_image),
    (F.vertical_flip, F.vertical_flip_image),
    (F.resize, F.resize_image),
    (F.affine, F.affine_image),
    (F.rotate, F.rotate_image),
    (F.pad, F.pad_image),
    (F.crop, F.crop_image),
    (F.center_crop, F.center_crop_image),
    (F.resized_crop, F.resized_crop_image),
    (F.perspective, F.perspective_image),
    (F.elastic, F.elastic_image),
]:
    F.register_kernel(_functional, CoordinateMap)(_kernel(_image_kernel))


def coordinate_map(height: int, width: int, *, device: torch.device | str | None = None) -> CoordinateMap:
    """The identity :class:`CoordinateMap` ``(3, H, W)`` (float32; channel 2 is all ones)."""
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=device),
        torch.arange(width, dtype=torch.float32, device=device),
        indexing="ij",
    )
    return CoordinateMap(torch.stack([xs, ys, torch.ones_like(xs)]))


def _fit(src: Tensor, dst: Tensor, *, projective: bool) -> tuple[Tensor, Tensor]:
    """Least-squares affine or projective (DLT) map ``src -> dst`` (float64) and per-point residuals."""
    mu_s, sc_s = src.mean(0), src.std(0).clamp_min(1.0)
    mu_d, sc_d = dst.mean(0), dst.std(0).clamp_min(1.0)
    s_n, d_n = (src - mu_s) / sc_s, (dst - mu_d) / sc_d
    t_s = torch.eye(3, dtype=torch.float64)
    t_s[0, 0], t_s[1, 1], t_s[:2, 2] = 1 / sc_s[0], 1 / sc_s[1], -mu_s / sc_s
    t_d_inv = torch.eye(3, dtype=torch.float64)
    t_d_inv[0, 0], t_d_inv[1, 1], t_d_inv[:2, 2] = sc_d[0], sc_d[1], mu_d
    if not projective:
        design = torch.cat([s_n, torch.ones_like(s_n[:, :1])], 1)
        sol = torch.linalg.lstsq(design, d_n).solution  # (3, 2)
        m_n = torch.eye(3, dtype=torch.float64)
        m_n[:2, :] = sol.T
    else:
        x, y, u, v = s_n[:, 0], s_n[:, 1], d_n[:, 0], d_n[:, 1]
        z, o = torch.zeros_like(x), torch.ones_like(x)
        a = torch.cat(
            [
                torch.stack([x, y, o, z, z, z, -u * x, -u * y], -1),
                torch.stack([z, z, z, x, y, o, -v * x, -v * y], -1),
            ]
        )
        hsol = torch.linalg.lstsq(a, torch.cat([u, v])).solution
        m_n = torch.cat([hsol, torch.ones(1, dtype=torch.float64)]).view(3, 3)
    m = t_d_inv @ m_n @ t_s
    m = m / m[2, 2]
    ph = torch.cat([src, torch.ones_like(src[:, :1])], 1) @ m.T
    resid = (ph[:, :2] / ph[:, 2:] - dst).norm(dim=-1)
    return m, resid


def fit_warp_matrix(cmap: Tensor, *, max_points: int = 4096, tol: float = 0.02) -> Tensor:
    r"""Fit ``M`` (``(3, 3)`` float64) with ``(u, v, 1) ~ M (x, y, 1)`` from a warped coordinate map.

    ``cmap[:, v, u] = (x, y, 1)`` at valid output pixels (third channel == 1). An affine least-squares fit
    is tried first; if its RMS residual exceeds ``tol`` px a homography (DLT) is fitted; if that is also
    off (e.g. an elastic warp), a ``RuntimeWarning`` says the matrix is only approximate.
    """
    if cmap.ndim != 3 or cmap.shape[0] != 3:
        raise ValueError(f"cmap must have shape (3, H, W), got {tuple(cmap.shape)}")
    h, w = cmap.shape[-2:]
    step = max(1, int((h * w / max_points) ** 0.5))
    # subsample on a regular grid first: the fit needs a few thousand pixels, not all of them
    c = cmap.detach()[:, ::step, ::step].to(torch.float64).cpu()
    vs = torch.arange(0, h, step, dtype=torch.float64)
    us = torch.arange(0, w, step, dtype=torch.float64)
    valid = (c[2] - 1).abs() < 1e-4
    if int(valid.sum()) < 3 and step > 1:
        c = cmap.detach().to(torch.float64).cpu()
        vs, us = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
        valid = (c[2] - 1).abs() < 1e-4
    if int(valid.sum()) < 3:
        raise ValueError("the transform left fewer than 3 valid pixels; cannot recover its matrix")
    vv, uu = torch.meshgrid(vs, us, indexing="ij")
    src = torch.stack([c[0][valid], c[1][valid]], -1)  # (P, 2) source x, y
    dst = torch.stack([uu[valid], vv[valid]], -1)  # (P, 2) output u, v
    m, resid = _fit(src, dst, projective=False)
    projective = False
    if float(resid.square().mean().sqrt()) > tol and src.shape[0] >= 4:
        m_h, resid_h = _fit(src, dst, projective=True)
        if float(resid_h.square().mean()) < float(resid.square().mean()):
            m, resid, projective = m_h, resid_h, True
    # pixels where the warp clamps at the border (bilinear, align_corners=False) are not on the map:
    # drop them and refit (trimmed least squares)
    inliers = resid < max(0.01, 3 * float(resid.median()))
    if int(inliers.sum()) >= max(4, src.shape[0] // 2) and not bool(inliers.all()):
        m, resid = _fit(src[inliers], dst[inliers], projective=projective)
    rms = float(resid.square().mean().sqrt())
    if rms > tol:
        warnings.warn(
            f"the transform is not projective (fit residual {rms:.3f} px); its (3, 3) matrix and the "
            "landmarks derived from it are approximate",
            RuntimeWarning,
            stacklevel=3,
        )
    return m


def _probe_matrix(probes: Tensor, moved: Tensor) -> Tensor:
    src = probes.to(torch.float64).cpu()
    dst = moved.to(torch.float64).cpu()
    a = torch.cat([src, torch.ones(3, 1, dtype=torch.float64)], 1)
    sol = torch.linalg.solve(a, dst)  # (3, 2)
    m = torch.eye(3, dtype=torch.float64)
    m[:2, :] = sol.T
    return m


def track_transform(
    transform: Callable[..., Any],
    image: Tensor,
    keypoints: Tensor | None = None,
    *,
    method: str = "coordinates",
) -> tuple[Tensor, Tensor]:
    """Run a torchvision v2 ``transform`` on ``image`` and return ``(image_out, matrix (3, 3) float64)``.

    ``keypoints`` ``(N, 2)`` (if given) ride along as ``tv_tensors.KeyPoints`` so that data-dependent
    transforms (e.g. :class:`wbaug.transforms.FaceCrop`) can see them; three probe key-points (the image
    corners) ride along as a second ``KeyPoints``. The returned matrix maps original pixel coordinates to
    output pixel coordinates (pixel centres at integers).

    With ``method="coordinates"`` the matrix is fitted to the coordinate map; when a transform leaves the
    map untouched (geometric operations without torchvision kernels, e.g. a custom warp that only handles
    images and key-points) or the map disagrees with the probes by more than ~1 px, the probe matrix is
    used instead (with a ``RuntimeWarning`` in the second case). ``method="keypoints"`` always uses the
    probes. A ``v2.Compose`` is tracked child by child (same random draws, matrices multiplied). See the
    module docstring.

    Example:
        >>> from torchvision.transforms import v2
        >>> out, m = track_transform(v2.Resize((32, 32)), torch.rand(3, 64, 64))
        >>> round(m[0, 0].item(), 6), round(m[0, 2].item(), 6)  # x' = (x + 0.5) / 2 - 0.5
        (0.5, -0.25)
    """
    if method not in ("coordinates", "keypoints"):
        raise ValueError(f"method must be 'coordinates' or 'keypoints', got {method!r}")
    if not isinstance(image, Tensor) or image.ndim < 3:
        raise ValueError("image must be a (C, H, W) tensor")
    h, w = image.shape[-2:]
    img = image if isinstance(image, (tv_tensors.Image, tv_tensors.Video)) else tv_tensors.Image(image)
    if keypoints is not None and (keypoints.ndim != 2 or keypoints.shape[-1] != 2):
        raise ValueError(f"keypoints must have shape (N, 2), got {tuple(keypoints.shape)}")
    if isinstance(transform, v2.Compose):
        # track every child on its own (same order of random draws as Compose itself), so that a child
        # without torchvision kernels (probe matrix) and one with (coordinate map) are both exact
        total = torch.eye(3, dtype=torch.float64)
        out = image.as_subclass(Tensor)
        for child in transform.transforms:
            current = None
            if keypoints is not None:
                current = apply_transform(keypoints.as_subclass(Tensor).to(torch.float64).cpu(), total)
                current = current.to(device=keypoints.device, dtype=torch.float32)
            out, m = track_transform(child, out, current, method=method)
            total = m @ total
        return out, total
    probes = torch.tensor([[0.0, 0.0], [w - 1.0, 0.0], [0.0, h - 1.0]], device=image.device)
    inputs: list[Any] = [img]
    if keypoints is not None:
        kp = keypoints.as_subclass(Tensor)
        inputs.append(tv_tensors.KeyPoints(kp if kp.is_floating_point() else kp.float(), canvas_size=(h, w)))
    inputs.append(ProbeKeyPoints(probes, canvas_size=(h, w)))
    cmap = coordinate_map(h, w, device=image.device) if method == "coordinates" else None
    if cmap is not None:
        inputs.append(cmap)
    outputs = transform(*inputs)
    if not isinstance(outputs, (tuple, list)) or len(outputs) != len(inputs):
        raise RuntimeError("the transform must return its inputs in order (torchvision v2 convention)")
    out_img = outputs[0].as_subclass(Tensor)
    out_probes = outputs[2 if keypoints is not None else 1].as_subclass(Tensor)
    m_probe = _probe_matrix(probes, out_probes)
    if cmap is None:
        return out_img, m_probe
    out_map = outputs[-1]
    if out_map is cmap or not isinstance(out_map, Tensor) or out_map.shape[-2:] != out_img.shape[-2:]:
        return out_img, m_probe
    m_map = fit_warp_matrix(out_map.as_subclass(Tensor))
    pred = apply_transform(probes.to(torch.float64), m_map)
    scale = float(torch.linalg.svdvals(m_probe[:2, :2])[0])
    if float((pred - out_probes.to(torch.float64).cpu()).abs().max()) > 1.0 + 0.5 * scale:
        warnings.warn(
            "the coordinate map and the probe key-points disagree: the transform has geometric operations "
            "without torchvision image kernels; using the probe key-points' matrix",
            RuntimeWarning,
            stacklevel=2,
        )
        return out_img, m_probe
    return out_img, m_map
