"""Names that several layers share (engine, CLI, GUI). Torch-free, so a front-end can offer the
same choices the engine accepts without importing torch."""

from __future__ import annotations

# Files that hold weights (a state dict, a checkpoint or safetensors).
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
# Files that may hold a whole model (TorchScript, ONNX, a torch.export program, or a pickled module the user trusts).
MODEL_FILE_SUFFIXES = WEIGHT_SUFFIXES + (".ts", ".jit", ".pkl", ".onnx", ".pt2")

# Input distributions of the tabular sensitivity analyses (engine.tabular.sensitivity); the first
# is the default: each input through its empirical quantile function, so the network is evaluated
# where the data are, not on every combination of extreme values a uniform box holds.
DISTRIBUTIONS = ("empirical", "uniform", "normal", "truncnorm")

# Colour maps by matplotlib name: the engine renders PNGs with these, the GUI shows them through
# pyqtgraph's matplotlib bridge, so an exported picture has the colours seen on screen.
SEQUENTIAL_COLORMAP = "inferno"
DIVERGING_COLORMAP = "RdBu_r"

# How a table's missing values are handled (engine.tabular.dataset.prepare).
MISSING_POLICIES = ("error", "drop", "impute")
# Activations of the tabular network (engine.tabular.network).
ACTIVATIONS = ("relu", "tanh", "gelu", "sigmoid", "elu")

# Defaults of the tabular network's training (engine.tabular.train.TrainConfig reads these; the CLI
# and the GUI's Table tab offer them), so the three never drift apart.
TABULAR_TRAINING = {
    "hidden": (32, 16),
    "activation": "relu",
    "dropout": 0.1,
    "weight_decay": 1e-4,
    "lr": 3e-3,
    "epochs": 300,
    "batch_size": 64,
    "patience": 30,
    "validation_fraction": 0.2,
    "class_weights": True,
    "seed": 0,
}

# Colour maps a user can choose in the GUI and that the engine can render ("auto" picks the
# sequential or diverging one by the map's sign).
COLORMAPS = ("auto", "inferno", "viridis", "magma", "turbo", "RdBu_r", "coolwarm", "gray")
# Limits of the tabular network's shape: beyond them a typo (--hidden 1e9) would allocate
# gigabytes before failing.
TABULAR_MAX_WIDTH = 65536
TABULAR_MAX_LAYERS = 64
# More outputs than any classification data set has; beyond it a typo would allocate gigabytes.
MAX_CLASSES = 100_000
# Columns of a table: beyond this it is a matrix (pixels, a gene panel), not inputs to rank, and a
# CSV that wide would take minutes to parse; refused from its header, before the body is read.
MAX_TABLE_COLUMNS = 10_000
# Files a table can be read from (engine.io.tables.load_table); the GUI's open dialog offers these.
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet")
