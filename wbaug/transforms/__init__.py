"""Landmark-aware transforms for torchvision v2 and kornia pipelines."""

__all__: list[str] = []
