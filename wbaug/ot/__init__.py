"""Optimal transport on point clouds (being built)."""
__all__: list[str] = []
