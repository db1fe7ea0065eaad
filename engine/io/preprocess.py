"""Turning a decoded image into the tensor a model sees, and back into a picture for display."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from engine.core.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ITU-R BT.601 luma weights, the ones Pillow's RGB -> L conversion uses.
LUMA = (0.299, 0.587, 0.114)
# Pixels an image may have after resizing (about 400 MB for three float32 channels).
MAX_RESIZED_PIXELS = 32 * 2**20
_INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC, "nearest": InterpolationMode.NEAREST}


@dataclass(frozen=True)
class Preprocess:
    """Resize (shorter side), centre crop, channel adaptation and normalisation.

    ``channels`` is what the model takes: grayscale images are repeated to three channels for an
    RGB model, and RGB images are converted to luma for a one-channel model.
    """

    resize: int | None = 256
    crop: int | None = 224
    mean: tuple[float, ...] = field(default=IMAGENET_MEAN)
    std: tuple[float, ...] = field(default=IMAGENET_STD)
    channels: int = 3
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.channels not in (1, 3):
            raise UserError(f"preprocessing supports 1 or 3 input channels, not {self.channels}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels):
                raise UserError(f"{name} has {len(values)} values but the model takes {self.channels} channel(s)")
        if not all(math.isfinite(m) for m in self.mean):
            raise UserError("every mean value must be a finite number")
        if not all(math.isfinite(s) and s > 0 for s in self.std):
            raise UserError("every std value must be a positive finite number")
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"{name} must be a positive size in pixels or none")
        if self.interpolation not in _INTERPOLATIONS:
            raise UserError(f"interpolation must be one of {', '.join(_INTERPOLATIONS)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocess:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    @classmethod
    def from_torchvision(cls, transforms, channels: int = 3) -> Preprocess:
        """Read the settings of torchvision's ImageClassification preset for some weights."""
        resize = transforms.resize_size[0] if transforms.resize_size else None
        crop = transforms.crop_size[0] if transforms.crop_size else None
        interpolation = str(transforms.interpolation.value)
        return cls(resize=resize, crop=crop, mean=tuple(transforms.mean), std=tuple(transforms.std), channels=channels, interpolation=interpolation)

    @classmethod
    def from_timm(cls, config: dict) -> Preprocess:
        """Read timm's data config (``timm.data.resolve_model_data_config``): the input size is the
        crop and the image is first resized to crop / crop_pct, as timm's eval transform does."""
        channels, height, width = (int(v) for v in config.get("input_size", (3, 224, 224)))
        crop = min(height, width)
        crop_pct = float(config.get("crop_pct") or 1.0)
        resize = math.floor(crop / crop_pct) if 0 < crop_pct < 1 else crop
        interpolation = str(config.get("interpolation", "bilinear"))
        mean, std = tuple(config.get("mean", IMAGENET_MEAN)), tuple(config.get("std", IMAGENET_STD))
        if channels == 1:
            mean, std = mean[:1], std[:1]
        return cls(resize, crop, mean, std, channels, interpolation if interpolation in _INTERPOLATIONS else "bilinear")

    @classmethod
    def from_hf(cls, config: dict, image_size: int | None = None, channels: int = 3) -> Preprocess:
        """Read a Hugging Face image processor's settings (``preprocessor_config.json``): the
        ``size`` (height x width, or the shortest edge), the centre crop, ``image_mean`` and
        ``image_std``, and the PIL ``resample`` code. A resize to a fixed height x width (ViT) is
        approximated by a resize of the shorter side and a centre crop, which keeps square images
        identical and does not squash others."""
        size = config.get("size")
        crop_size = config.get("crop_size") if config.get("do_center_crop", False) else None
        if isinstance(size, int):
            size = {"shortest_edge": size}
        size = size if isinstance(size, dict) else {}
        edge = size.get("shortest_edge") or size.get("height") or image_size or 224
        resize: int | None = int(edge) if config.get("do_resize", True) else None
        crop = int(min(crop_size.get("height", edge), crop_size.get("width", edge))) if isinstance(crop_size, dict) else int(edge)
        crop_pct = config.get("crop_pct")
        if "shortest_edge" in size and isinstance(crop_pct, (int, float)) and 0 < crop_pct < 1 and int(edge) < 384:
            resize, crop = math.floor(int(edge) / crop_pct), int(edge)  # ConvNeXt's processor
        if not config.get("do_normalize", True):
            mean, std = (0.0,) * channels, (1.0,) * channels
        else:
            mean = tuple(config.get("image_mean") or IMAGENET_MEAN)[:channels]
            std = tuple(config.get("image_std") or IMAGENET_STD)[:channels]
        interpolation = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(config.get("resample", 2), "bilinear")
        return cls(resize, crop, mean, std, channels, interpolation)

    def geometry(self, image: np.ndarray) -> torch.Tensor:
        """Resize, crop and adapt channels: C x H x W in [0, 1], not yet normalised."""
        if image.ndim == 2:
            image = image[:, :, None]
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
        if tensor.shape[0] == 1 and self.channels == 3:
            tensor = tensor.expand(3, -1, -1)
        elif tensor.shape[0] == 3 and self.channels == 1:
            tensor = torch.tensordot(torch.tensor(LUMA), tensor, dims=1).unsqueeze(0)
        if self.resize is not None:
            self._check_resized_size(*tensor.shape[-2:])
            tensor = F.resize(tensor, [self.resize], interpolation=_INTERPOLATIONS[self.interpolation], antialias=True)
        if self.crop is not None:
            tensor = F.center_crop(tensor, [self.crop, self.crop])
        return tensor.clamp(0.0, 1.0).contiguous()

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """Height and width after the shorter side is resized (torchvision's rounding)."""
        if self.resize is None:
            return height, width
        short, long = sorted((height, width))
        long = int(self.resize * long / short)
        return (self.resize, long) if height <= width else (long, self.resize)

    def _check_resized_size(self, height: int, width: int) -> None:
        # A 1 x 60000 strip resized to a shorter side of 256 would need tens of gigabytes.
        new_height, new_width = self.resized_size(height, width)
        if new_height * new_width > MAX_RESIZED_PIXELS:
            raise UserError(
                f"the image is {height} x {width} pixels; resized to a shorter side of {self.resize} it would be "
                f"{new_height} x {new_width}, beyond the {MAX_RESIZED_PIXELS // 2**20} megapixel limit (an aspect ratio this extreme cannot be explained)"
            )

    def normalize(self, tensor: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return (tensor - mean) / std

    def __call__(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """The model input (C x H x W, normalised) and the display image (H x W x C in [0, 1])."""
        geometric = self.geometry(image)
        return self.normalize(geometric), geometric.permute(1, 2, 0).numpy()


def display_from_tensor(tensor: torch.Tensor) -> np.ndarray:
    """A viewable H x W x C image in [0, 1] from an already preprocessed tensor (min-max scaled)."""
    array = tensor.detach().float().cpu().numpy()
    array = np.moveaxis(array, 0, -1)
    low, high = float(np.nanmin(array)), float(np.nanmax(array))
    if high > low:
        array = (array - low) / (high - low)
    else:
        array = np.zeros_like(array)
    return array.astype(np.float32)
