"""Torch-free foundations: errors, cancellation and progress, parameters, the Explanation record,
versions, resource paths and the shared vocabulary. Nothing here may import torch."""
