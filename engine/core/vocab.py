"""Names that several layers share (engine, CLI, GUI). Torch-free, so a front-end can offer the
same choices the engine accepts without importing torch."""

from __future__ import annotations

# Files that hold weights (a state dict, a checkpoint or safetensors).
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
# Files that may hold a whole model (TorchScript, or a pickled module the user trusts).
MODEL_FILE_SUFFIXES = WEIGHT_SUFFIXES + (".ts", ".jit", ".pkl")

# Input distributions of the tabular Sobol analysis (engine.tabular.sensitivity).
DISTRIBUTIONS = ("uniform", "normal", "truncnorm", "empirical")

# Colour maps by matplotlib name: the engine renders PNGs with these, the GUI shows them through
# pyqtgraph's matplotlib bridge, so an exported picture has the colours seen on screen.
SEQUENTIAL_COLORMAP = "inferno"
DIVERGING_COLORMAP = "RdBu_r"
