"""The tabular workflow: a feedforward network on a table, its Sobol analysis and input reduction."""

from .dataset import TabularData, prepare
from .network import TabularNet, load_tabular_model, save_tabular_model
from .train import TrainConfig, TrainedModel, train_tabular

__all__ = ["TabularData", "TabularNet", "TrainConfig", "TrainedModel", "load_tabular_model", "prepare", "save_tabular_model", "train_tabular"]
