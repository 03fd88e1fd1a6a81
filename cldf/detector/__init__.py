"""The detector: timm backbone + peft adapters + growing head (see :class:`Detector`)."""

from .backbone import PretrainedUnavailableError, check_backbone_name, create_backbone
from .config import AdapterConfig, DetectorConfig
from .model import Detector, learned_state_dict
from .snapshot import DetectorAdapterSnapshot
from .weights import WeightsError, read_state_dict

__all__ = [
    "AdapterConfig", "Detector", "DetectorAdapterSnapshot", "DetectorConfig", "PretrainedUnavailableError", "WeightsError",
    "check_backbone_name", "create_backbone", "learned_state_dict", "read_state_dict",
]
