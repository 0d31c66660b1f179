"""BarycenterNet of "Learning to Generate Wasserstein Barycenters" (in progress: the CSG data generator
is done and tested; model, trainer and evaluation are not written yet -- see README.md)."""
