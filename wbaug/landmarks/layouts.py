"""Landmark layouts: left/right flip permutations, eye indices and symmetric templates.

A :class:`LandmarkLayout` names the semantic groups of a landmark annotation scheme (iBUG/300-W 68
points, WFLW 98 points, CelebA 5 points, or your own), the permutation that swaps left and right
partners under a horizontal mirror (``flip_indices``), the outer eye corners (inter-ocular
normalisation) and the points whose mean gives the pupils (inter-pupil normalisation).

"Left" and "right" below are always **image** left/right (smaller/larger ``x``), which for a frontal
face is the subject's right/left.

The built-in permutations are written from the official point definitions and checked by the tests
against :meth:`LandmarkLayout.template`, a left/right symmetric face drawn from the same definitions:
mirroring the template and permuting with ``flip_indices`` must give the template back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from wbaug.landmarks._checks import check_flip_indices, check_points

__all__ = ["LandmarkLayout", "get_layout", "register_layout", "available_layouts"]


@dataclass(frozen=True)
class LandmarkLayout:
    """Description of a landmark annotation scheme.

    Attributes:
        name: layout name (``"ibug68"``, ``"wflw98"``, ``"celeba5"`` or user-defined).
        num_points: number of landmarks ``N``.
        flip_indices: involutive permutation ``p`` with ``flipped[i] = mirror(points[p[i]])``.
        outer_eye_corners: ``(left, right)`` indices of the outer eye corners, or ``None``.
        eyes: ``(left_eye_indices, right_eye_indices)``; the pupil is the mean of each group (a single
            index when the layout annotates the pupil itself), or ``None``.
        groups: named semantic groups (``"jaw"``, ``"left_eye"``, ...), for plotting and docs.
        template_points: optional symmetric mean shape in ``[-1, 1]^2`` (``y`` down), see :meth:`template`.
    """

    name: str
    num_points: int
    flip_indices: tuple[int, ...]
    outer_eye_corners: tuple[int, int] | None = None
    eyes: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    groups: dict[str, tuple[int, ...]] = field(default_factory=dict)
    template_points: tuple[tuple[float, float], ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_flip_indices(self.flip_indices, self.num_points, name=f"{self.name}.flip_indices")
        for attr in ("outer_eye_corners",):
            val = getattr(self, attr)
            if val is not None and (len(val) != 2 or not all(0 <= i < self.num_points for i in val)):
                raise ValueError(f"{attr} must be two indices in [0, {self.num_points - 1}], got {val}")
        if self.eyes is not None:
            if len(self.eyes) != 2 or not all(len(g) > 0 for g in self.eyes):
                raise ValueError("eyes must be two non-empty index groups (left, right)")
            if not all(0 <= i < self.num_points for g in self.eyes for i in g):
                raise ValueError(f"eyes indices must lie in [0, {self.num_points - 1}]")
        if self.template_points is not None and len(self.template_points) != self.num_points:
            raise ValueError("template_points must have one entry per landmark")

    @classmethod
    def from_flip_indices(
        cls,
        flip_indices: Sequence[int] | Tensor,
        *,
        name: str = "custom",
        outer_eye_corners: tuple[int, int] | None = None,
        eyes: tuple[Sequence[int], Sequence[int]] | None = None,
        groups: dict[str, Sequence[int]] | None = None,
    ) -> LandmarkLayout:
        """Build a layout from a user-supplied permutation (validated: bijective involution).

        Example:
            >>> LandmarkLayout.from_flip_indices([2, 1, 0], name="three").flip_indices
            (2, 1, 0)
        """
        idx = flip_indices.tolist() if isinstance(flip_indices, Tensor) else list(flip_indices)
        n = len(idx)
        return cls(
            name=name,
            num_points=n,
            flip_indices=tuple(int(i) for i in idx),
            outer_eye_corners=None if outer_eye_corners is None else tuple(int(i) for i in outer_eye_corners),
            eyes=None if eyes is None else (tuple(int(i) for i in eyes[0]), tuple(int(i) for i in eyes[1])),
            groups={k: tuple(int(i) for i in v) for k, v in (groups or {}).items()},
        )

    def flip_tensor(self, device: torch.device | str | None = None) -> Tensor:
        """``flip_indices`` as a long tensor ``(N,)``."""
        return torch.tensor(self.flip_indices, dtype=torch.long, device=device)

    def pupils(self, landmarks: Tensor) -> Tensor:
        """Pupil estimates ``(..., 2, D)`` (left, right): mean of each eye group.

        Example:
            >>> get_layout("ibug68").pupils(torch.zeros(4, 68, 2)).shape
            torch.Size([4, 2, 2])
        """
        if self.eyes is None:
            raise ValueError(f"layout {self.name!r} defines no eye points, so pupils are unavailable")
        check_points(landmarks, "landmarks")
        if landmarks.shape[-2] != self.num_points:
            raise ValueError(
                f"landmarks have {landmarks.shape[-2]} points, layout {self.name!r} has {self.num_points}"
            )
        left = landmarks[..., list(self.eyes[0]), :].mean(-2)
        right = landmarks[..., list(self.eyes[1]), :].mean(-2)
        return torch.stack([left, right], dim=-2)

    def template(
        self, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> Tensor:
        """A left/right symmetric mean shape ``(N, 2)`` in ``[-1, 1]^2`` (``y`` pointing down).

        Mirroring ``x -> -x`` and permuting with ``flip_indices`` returns the same array (this is what
        the tests check). Useful as a canonical shape or an initial barycenter.
        """
        if self.template_points is None:
            raise ValueError(f"layout {self.name!r} has no template")
        return torch.tensor(self.template_points, dtype=dtype, device=device)


# --------------------------------------------------------------------------------------------------
# Built-in layouts. Geometry helpers generate symmetric templates from the point definitions.
# --------------------------------------------------------------------------------------------------


def _mirror_pairs(n: int, pairs: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    perm = list(range(n))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


def _reverse(lo: int, hi: int) -> list[tuple[int, int]]:
    """Pairs ``lo <-> hi``, ``lo+1 <-> hi-1``, ... for a left-to-right ordered symmetric curve."""
    return [(lo + k, hi - k) for k in range((hi - lo + 1) // 2)]


def _zip(a: Sequence[int], b: Sequence[int]) -> list[tuple[int, int]]:
    return list(zip(a, b))


def _ellipse(
    cx: float, cy: float, rx: float, ry: float, angles: Sequence[float]
) -> list[tuple[float, float]]:
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in angles]


def _jaw(
    n: int, half_width: float = 0.9, top: float = -0.05, depth: float = 1.0
) -> list[tuple[float, float]]:
    """Jaw/contour from image-left (ear level) through the chin to image-right."""
    ts = [math.pi * k / (n - 1) for k in range(n)]
    return [(-half_width * math.cos(t), top + (depth - top) * math.sin(t)) for t in ts]


def _line(x0: float, y0: float, x1: float, y1: float, n: int, bend: float = 0.0) -> list[tuple[float, float]]:
    pts = []
    for k in range(n):
        u = k / (n - 1) if n > 1 else 0.5
        pts.append((x0 + (x1 - x0) * u, y0 + (y1 - y0) * u - bend * math.sin(math.pi * u)))
    return pts


def _mouth(cy: float, rx: float, ry: float, n_outer: int, n_inner: int, inner_scale: float):
    outer = _ellipse(0.0, cy, rx, ry, [math.pi + 2 * math.pi * k / n_outer for k in range(n_outer)])
    inner = _ellipse(
        0.0, cy, rx * inner_scale, ry * 0.45, [math.pi + 2 * math.pi * k / n_inner for k in range(n_inner)]
    )
    return outer, inner


def _ibug68() -> LandmarkLayout:
    # 0-16 jaw (image-left ear -> chin -> image-right ear); 17-21 left brow, 22-26 right brow (both
    # ordered left to right); 27-30 nose bridge (top -> tip); 31-35 nostrils (left -> right);
    # 36-41 left eye (outer corner, upper outer, upper inner, inner corner, lower inner, lower outer);
    # 42-47 right eye (inner corner, upper inner, upper outer, outer corner, lower outer, lower inner);
    # 48-59 outer lip clockwise from the left corner (51 top centre, 54 right corner, 57 bottom centre);
    # 60-67 inner lip clockwise from the left corner (62 top centre, 64 right corner, 66 bottom centre).
    pairs = (
        _reverse(0, 16)
        + _reverse(17, 26)
        + _reverse(31, 35)
        + _zip([36, 37, 38, 39, 40, 41], [45, 44, 43, 42, 47, 46])
        + _zip([48, 49, 50, 55, 56], [54, 53, 52, 59, 58])
        + _zip([60, 61, 65], [64, 63, 67])
    )
    eye_angles = [math.pi * a for a in (1.0, 4 / 3, 5 / 3, 0.0, 1 / 3, 2 / 3)]
    right_eye_angles = [math.pi * a for a in (1.0, 4 / 3, 5 / 3, 0.0, 1 / 3, 2 / 3)]
    outer, inner = _mouth(0.55, 0.3, 0.12, 12, 8, 0.7)
    pts = (
        _jaw(17)
        + _line(-0.75, -0.45, -0.15, -0.5, 5, bend=0.08)
        + _line(0.15, -0.5, 0.75, -0.45, 5, bend=0.08)
        + _line(0.0, -0.3, 0.0, 0.15, 4)
        + [(-0.2, 0.25), (-0.1, 0.27), (0.0, 0.28), (0.1, 0.27), (0.2, 0.25)]
        + _ellipse(-0.4, -0.25, 0.15, 0.07, eye_angles)
        + _ellipse(0.4, -0.25, 0.15, 0.07, right_eye_angles)
        + outer
        + inner
    )
    return LandmarkLayout(
        name="ibug68",
        num_points=68,
        flip_indices=_mirror_pairs(68, pairs),
        outer_eye_corners=(36, 45),
        eyes=(tuple(range(36, 42)), tuple(range(42, 48))),
        groups={
            "jaw": tuple(range(0, 17)),
            "left_eyebrow": tuple(range(17, 22)),
            "right_eyebrow": tuple(range(22, 27)),
            "nose_bridge": tuple(range(27, 31)),
            "nostrils": tuple(range(31, 36)),
            "left_eye": tuple(range(36, 42)),
            "right_eye": tuple(range(42, 48)),
            "outer_lip": tuple(range(48, 60)),
            "inner_lip": tuple(range(60, 68)),
        },
        template_points=tuple(pts),
    )


def _wflw98() -> LandmarkLayout:
    # 0-32 contour (left -> right); 33-37 left brow upper (outer -> inner), 38-41 left brow lower
    # (inner -> outer); 42-46 right brow upper (inner -> outer), 47-50 right brow lower (outer -> inner);
    # 51-54 nose bridge; 55-59 nostrils (left -> right); 60-67 left eye (60 outer corner, 61-63 upper
    # outer -> inner, 64 inner corner, 65-67 lower inner -> outer); 68-75 right eye (68 inner corner,
    # 69-71 upper inner -> outer, 72 outer corner, 73-75 lower outer -> inner); 76-87 outer lip
    # clockwise from the left corner; 88-95 inner lip clockwise from the left corner; 96, 97 pupils.
    pairs = (
        _reverse(0, 32)
        + _zip(range(33, 38), [46, 45, 44, 43, 42])
        + _zip(range(38, 42), [50, 49, 48, 47])
        + _reverse(55, 59)
        + _zip(range(60, 68), [72, 71, 70, 69, 68, 75, 74, 73])
        + _zip([76, 77, 78, 83, 84], [82, 81, 80, 87, 86])
        + _zip([88, 89, 93], [92, 91, 95])
        + [(96, 97)]
    )
    eye = [math.pi * (1 + k / 4) for k in range(8)]  # outer/inner corner at pi/0, upper half first
    right_eye = [math.pi * (1 + k / 4) for k in range(8)]
    outer, inner = _mouth(0.55, 0.3, 0.12, 12, 8, 0.7)
    pts = (
        _jaw(33)
        + _line(-0.8, -0.45, -0.2, -0.5, 5, bend=0.1)
        + _line(-0.25, -0.42, -0.7, -0.38, 4, bend=-0.03)
        + _line(0.2, -0.5, 0.8, -0.45, 5, bend=0.1)
        + _line(0.7, -0.38, 0.25, -0.42, 4, bend=-0.03)
        + _line(0.0, -0.3, 0.0, 0.15, 4)
        + [(-0.2, 0.25), (-0.1, 0.27), (0.0, 0.28), (0.1, 0.27), (0.2, 0.25)]
        + _ellipse(-0.4, -0.25, 0.15, 0.07, eye)
        + _ellipse(0.4, -0.25, 0.15, 0.07, right_eye)
        + outer
        + inner
        + [(-0.4, -0.25), (0.4, -0.25)]
    )
    return LandmarkLayout(
        name="wflw98",
        num_points=98,
        flip_indices=_mirror_pairs(98, pairs),
        outer_eye_corners=(60, 72),
        eyes=((96,), (97,)),
        groups={
            "contour": tuple(range(0, 33)),
            "left_eyebrow": tuple(range(33, 42)),
            "right_eyebrow": tuple(range(42, 51)),
            "nose_bridge": tuple(range(51, 55)),
            "nostrils": tuple(range(55, 60)),
            "left_eye": tuple(range(60, 68)),
            "right_eye": tuple(range(68, 76)),
            "outer_lip": tuple(range(76, 88)),
            "inner_lip": tuple(range(88, 96)),
            "pupils": (96, 97),
        },
        template_points=tuple(pts),
    )


def _celeba5() -> LandmarkLayout:
    # CelebA list_landmarks: lefteye, righteye, nose, leftmouth, rightmouth (image left/right).
    return LandmarkLayout(
        name="celeba5",
        num_points=5,
        flip_indices=(1, 0, 2, 4, 3),
        outer_eye_corners=None,
        eyes=((0,), (1,)),
        groups={"eyes": (0, 1), "nose": (2,), "mouth": (3, 4)},
        template_points=((-0.4, -0.25), (0.4, -0.25), (0.0, 0.15), (-0.3, 0.55), (0.3, 0.55)),
    )


_LAYOUTS: dict[str, LandmarkLayout] = {}
_ALIASES = {
    "ibug68": "ibug68",
    "ibug": "ibug68",
    "300w": "ibug68",
    "300-w": "ibug68",
    "68": "ibug68",
    "wflw98": "wflw98",
    "wflw": "wflw98",
    "98": "wflw98",
    "celeba5": "celeba5",
    "celeba": "celeba5",
    "5": "celeba5",
}


def register_layout(layout: LandmarkLayout, *, overwrite: bool = False) -> None:
    """Make ``layout`` available through :func:`get_layout` under ``layout.name``."""
    if not isinstance(layout, LandmarkLayout):
        raise TypeError(f"layout must be a LandmarkLayout, got {type(layout).__name__}")
    key = layout.name.lower()
    if key in _LAYOUTS and not overwrite:
        raise ValueError(f"a layout named {layout.name!r} is already registered (pass overwrite=True)")
    _LAYOUTS[key] = layout
    _ALIASES.setdefault(key, key)


def available_layouts() -> list[str]:
    """Names of the registered layouts."""
    return sorted(_LAYOUTS)


def get_layout(name: str | LandmarkLayout) -> LandmarkLayout:
    """Look up a layout: ``"ibug68"`` (aliases ``"300w"``, ``"68"``), ``"wflw98"`` (``"wflw"``),
    ``"celeba5"`` (``"celeba"``), or any name given to :func:`register_layout`.

    Example:
        >>> lay = get_layout("ibug68")
        >>> lay.flip_indices[36], lay.outer_eye_corners
        (45, (36, 45))
    """
    if isinstance(name, LandmarkLayout):
        return name
    if not isinstance(name, str):
        raise TypeError(f"name must be a layout name or a LandmarkLayout, got {type(name).__name__}")
    key = _ALIASES.get(name.lower().replace("_", ""), name.lower())
    if key not in _LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; available: {available_layouts()}")
    return _LAYOUTS[key]


for _layout in (_ibug68(), _wflw98(), _celeba5()):
    register_layout(_layout)
del _layout
