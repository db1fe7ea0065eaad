"""The tabular workflow: a feedforward network on a table, its Sobol analysis and input reduction."""

from engine.tabular.dataset import TabularData, prepare
from engine.tabular.network import TabularNet, load_tabular_model, save_tabular_model
from engine.tabular.train import TrainConfig, TrainedModel, train_tabular

__all__ = ["TabularData", "TabularNet", "TrainConfig", "TrainedModel", "load_tabular_model", "prepare", "save_tabular_model", "train_tabular"]
