"""Sensiscope's compute engine: models, data, explanation methods. Free of Qt by design."""

from .api import explain
from .cancel import CancelToken
from .data import InputItem, load_input, read_image, scan_inputs
from .device import describe_device, list_devices, select_device
from .errors import Cancelled, UserError
from .explanation import Explanation
from .methods import MethodSpec, available_methods, get_method
from .models import LoadedModel, classification_models, find_cached_weights, load_model, read_state_dict
from .preprocess import Preprocess
from .summary import summarize
from .tables import load_table
from .versions import app_version, versions

__all__ = [
    "CancelToken",
    "Cancelled",
    "Explanation",
    "InputItem",
    "LoadedModel",
    "MethodSpec",
    "Preprocess",
    "UserError",
    "app_version",
    "available_methods",
    "classification_models",
    "describe_device",
    "explain",
    "find_cached_weights",
    "get_method",
    "list_devices",
    "load_input",
    "load_model",
    "load_table",
    "read_image",
    "read_state_dict",
    "scan_inputs",
    "select_device",
    "summarize",
    "versions",
]
