"""Landmark datasets: embedded synthetic data and readers for the real benchmarks.

Synthetic (generated in milliseconds, no files): :func:`synthetic_faces` (68-point iBUG layout),
:class:`SyntheticFaces` (rendered images + landmarks), :func:`synthetic_contours` (unordered closed
contours of varying size), :func:`synthetic_face_tracks` / :func:`synthetic_face_videos` (short clips of
one face with drifting pose, expression and light).

Readers (nothing downloads; see docs/datasets.md for each expected layout): :class:`Face300W`,
:class:`WFLW`, :class:`CelebA`, :class:`Human36M`, :class:`LandmarkFolder`, plus :func:`read_pts` and
:func:`load_landmarks`. Every dataset returns dict samples of torchvision ``tv_tensors`` (image,
key-points with canvas size, visibility, box, metadata — see :mod:`wbaug.datasets.base`), takes
``transforms=`` and has a landmarks-only fast path (``.landmarks()``, ``load_images=False``).
"""

from wbaug.datasets.base import LandmarkDataset, RecordDataset, landmark_box, make_sample
from wbaug.datasets.celeba import CELEBA_LANDMARKS, CelebA, read_celeba_table
from wbaug.datasets.folder import LandmarkFolder, read_point_file
from wbaug.datasets.human36m import (
    HUMAN36M_FLIP_INDICES,
    HUMAN36M_PARENTS,
    HUMAN36M_SUBJECTS,
    Human36M,
    read_h36m_poses,
)
from wbaug.datasets.io import image_size, load_landmarks, read_image, read_pts, write_pts
from wbaug.datasets.render import fill_polygons, render_faces
from wbaug.datasets.synthetic import SyntheticFaces, sample_seed
from wbaug.datasets.synthetic_contours import synthetic_contours
from wbaug.datasets.synthetic_faces import NUM_FACE_LANDMARKS, synthetic_face_tracks, synthetic_faces
from wbaug.datasets.synthetic_videos import synthetic_face_videos
from wbaug.datasets.w300 import W300_SPLITS, Face300W, read_300w_boxes
from wbaug.datasets.wflw import WFLW, WFLW_ATTRIBUTES, read_wflw_annotations

__all__ = [
    "CELEBA_LANDMARKS",
    "HUMAN36M_FLIP_INDICES",
    "HUMAN36M_PARENTS",
    "HUMAN36M_SUBJECTS",
    "NUM_FACE_LANDMARKS",
    "W300_SPLITS",
    "WFLW",
    "WFLW_ATTRIBUTES",
    "CelebA",
    "Face300W",
    "Human36M",
    "LandmarkDataset",
    "LandmarkFolder",
    "RecordDataset",
    "SyntheticFaces",
    "fill_polygons",
    "image_size",
    "landmark_box",
    "load_landmarks",
    "make_sample",
    "read_300w_boxes",
    "read_celeba_table",
    "read_h36m_poses",
    "read_image",
    "read_point_file",
    "read_pts",
    "read_wflw_annotations",
    "render_faces",
    "sample_seed",
    "synthetic_contours",
    "synthetic_face_tracks",
    "synthetic_face_videos",
    "synthetic_faces",
    "write_pts",
]
