"""Torch-free statistics shared by the tabular and image analyses (Sobol indices with SALib)."""
