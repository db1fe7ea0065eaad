"""ONNX models run with onnxruntime behind the interface of a torch module.

The graph has no gradients, so only the methods that evaluate the model (local sensitivity, RISE,
KernelSHAP, Sobol, and the faithfulness metrics) work on it; ``has_gradients = False`` tells the
runner. Input size and layout (N x C x H x W or N x H x W x C) are read from the graph's first input;
a graph with a fixed batch size is fed in slices of that size.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.core.errors import UserError
from engine.io.preprocess import Preprocess

# onnxruntime's severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal.
QUIET = 4
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _reason(exc: Exception) -> str:
    """onnxruntime's message without its status prefix and the C++ source location it quotes."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    return re.sub(r"/onnxruntime_src/\S+:\d+ [^(]*\([^)]*\)\s*", "", text)


def _dim(value) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def _layout(shape: list) -> tuple[str, int, int | None, int | None]:
    """(layout, channels, height, width) of a 4-D image input; channels first unless only the last
    axis looks like a channel count (1 or 3)."""
    dims = [_dim(v) for v in shape]
    if dims[3] in (1, 3) and dims[1] not in (1, 3):
        return "nhwc", dims[3], dims[1], dims[2]
    channels = dims[1] or 3
    return "nchw", channels, dims[2], dims[3]


class OnnxModule(nn.Module):
    """forward(torch batch N x C x H x W) -> torch tensor of the graph's first output."""

    has_gradients = False

    def __init__(self, path: Path, providers: list[str] | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        available = ort.get_available_providers()
        chosen = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        # onnxruntime logs its errors in red on stderr before raising them; the raised error becomes
        # one clear line, so only fatal messages may print (the default logger covers session creation).
        ort.set_default_logger_severity(QUIET)
        options = ort.SessionOptions()
        options.log_severity_level = QUIET
        self.run_options = ort.RunOptions()
        self.run_options.log_severity_level = QUIET
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidProtobuf / InvalidGraph
            raise UserError(f"{path}: not a loadable ONNX model ({_reason(exc)})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise UserError(f"{path}: the ONNX graph takes {len(inputs)} inputs; Sensiscope explains models with one image input")
        first = inputs[0]
        if len(first.shape) != 4:
            raise UserError(f"{path}: the ONNX graph's input '{first.name}' has shape {first.shape}; an image model takes N x C x H x W or N x H x W x C")
        if first.type not in _NUMPY_TYPES:
            raise UserError(f"{path}: the ONNX graph's input is {first.type}; Sensiscope feeds floating-point images")
        self.input_name = first.name
        self.dtype = _NUMPY_TYPES[first.type]
        self.layout, self.channels, self.height, self.width = _layout(list(first.shape))
        self.batch = _dim(first.shape[0])  # None: any batch size
        output = self.session.get_outputs()[0]
        classes = output.shape[-1] if output.shape else None
        self.num_classes = _dim(classes) if len(output.shape) == 2 else None
        self.providers = self.session.get_providers()
        self.path = Path(path)

    def extra_repr(self) -> str:
        return f"{self.path.name}, input {self.layout.upper()} {self.channels} x {self.height or '?'} x {self.width or '?'}, providers {', '.join(self.providers)}"

    def preprocess(self) -> Preprocess:
        """A fixed input size is the crop (resized from crop / 0.875, ImageNet's ratio); a dynamic one keeps 256 / 224."""
        channels = self.channels if self.channels in (1, 3) else 3
        # one channel: ImageNet's statistics averaged over the colours
        stats = {"mean": (0.449,), "std": (0.226,)} if channels == 1 else {}
        size = self.height if self.height and self.height == self.width else None
        if size is None:
            return Preprocess(channels=channels, **stats)
        return Preprocess(resize=round(size / 0.875), crop=size, channels=channels, **stats)

    def _run(self, array: np.ndarray) -> np.ndarray:
        try:
            return self.session.run(None, {self.input_name: array}, self.run_options)[0]
        except Exception as exc:  # a wrong input size: onnxruntime's message names the dimension
            raise UserError(f"{self.path.name}: onnxruntime could not run the input of shape {array.shape} ({_reason(exc)})") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "nhwc":
            x = x.permute(0, 2, 3, 1)
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=self.dtype)
        if self.batch is None or self.batch == len(array):
            out = self._run(array)
        else:
            parts = []
            for start in range(0, len(array), self.batch):
                chunk = array[start:start + self.batch]
                rows = len(chunk)
                if rows < self.batch:  # pad the last slice to the graph's batch size
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - rows, axis=0)])
                parts.append(self._run(chunk)[:rows])
            out = np.concatenate(parts)
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)


def load_onnx(path: Path) -> OnnxModule:
    return OnnxModule(path)
