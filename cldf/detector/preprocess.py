"""Image preprocessing resolved from the backbone, and input validation with clear errors."""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image
from timm.data import resolve_data_config
from torch import Tensor, nn
from torchvision import transforms
from torchvision.transforms import InterpolationMode

ImageLike = Union[Image.Image, np.ndarray]


def make_preprocess(model: nn.Module, image_size: int) -> transforms.Compose:
    """PIL image -> normalised float tensor (C, H, W), with the backbone's mean, std, interpolation."""
    cfg = resolve_data_config({}, model=model)
    return transforms.Compose([
        transforms.Lambda(_to_rgb),
        transforms.Resize((image_size, image_size), interpolation=InterpolationMode(cfg["interpolation"]), antialias=True),
        transforms.ToTensor(),
        transforms.Normalize(cfg["mean"], cfg["std"]),
    ])


def _to_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def to_pil(image: ImageLike, index: int = 0) -> Image.Image:
    """Accept a PIL image or a uint8 array (H, W) / (H, W, 3); anything else is a clear error."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"image {index}: dtype {image.dtype}; expected uint8 in [0, 255] (H, W, 3)")
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)):
            return Image.fromarray(image)
        raise ValueError(f"image {index}: shape {image.shape}; expected (H, W) or (H, W, 3)")
    raise TypeError(f"image {index}: {type(image).__name__}; expected a PIL image or a uint8 numpy array")


def prepare_batch(images: Sequence[ImageLike], preprocess: transforms.Compose) -> Tensor:
    """Stack PIL images / uint8 arrays into one normalised batch."""
    return torch.stack([preprocess(to_pil(img, i)) for i, img in enumerate(images)])


def check_batch(x: Tensor, in_chans: int) -> None:
    """Raise a clear error unless ``x`` is a float batch of shape (B, in_chans, H, W)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor batch, got {type(x).__name__}; use Detector.prepare(images)")
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise ValueError(
            f"input batch has shape {tuple(x.shape)}; expected (B, {in_chans}, H, W). "
            "Use Detector.prepare(images) for PIL images or uint8 arrays"
        )
    if not x.is_floating_point():
        raise TypeError(f"input batch has dtype {x.dtype}; expected a float tensor normalised by Detector.preprocess")
