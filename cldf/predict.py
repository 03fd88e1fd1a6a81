"""Score images with a trained detector restored from a run's checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from .detector import Detector
from .recipes import parse_recipe
from .scores import p_fake_from_logits
from .strategies import model_for

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class TrainedDetector:
    """A trained model in eval mode with its class names (class id -> ``real:...``/``fake:...``)."""

    model: nn.Module
    detector: Detector
    class_names: list[str]
    real_classes: list[int]


def load_trained(path: str | Path) -> TrainedDetector:
    """Restore the model of a run folder (its latest checkpoint) or of one checkpoint folder."""
    path = Path(path)
    folder = latest_checkpoint(path) or path
    tensors, manifest = load_checkpoint(folder)
    recipe = parse_recipe(manifest["recipe"], f"{folder}/manifest.json")
    detector = Detector(recipe.detector)
    model = model_for(recipe, detector)
    for name in manifest["adapters"]:
        if name not in detector.adapter_names:
            detector.add_adapter(name)
    model.grow_classes(len(manifest["class_names"]))
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not _is_backbone(model, k)]
    if result.unexpected_keys or missing:
        raise CheckpointError(
            f"{folder}: tensors do not fit the {recipe.strategy} model; "
            f"unexpected: {result.unexpected_keys[:5]}, missing: {missing[:5]}"
        )
    detector.set_adapter(manifest["active_adapter"])
    for name in manifest["frozen_adapters"]:
        detector.freeze_adapter(name)
    model.eval()
    return TrainedDetector(model, detector, list(manifest["class_names"]), list(manifest["real_classes"]))


def _is_backbone(model: nn.Module, key: str) -> bool:
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, Detector) and key.startswith(prefix):
            return module.is_backbone_key(key[len(prefix):])
    return False


def image_files(target: str | Path) -> list[Path]:
    """One image file, or every image file under a folder (sorted)."""
    target = Path(target)
    if target.is_file():
        return [target]
    if not target.is_dir():
        raise FileNotFoundError(f"{target} is neither an image file nor a folder")
    files = sorted(p for p in target.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {target}")
    return files


@torch.no_grad()
def predict_files(trained: TrainedDetector, files: list[Path], batch_size: int = 64) -> Iterator[dict]:
    """Yield ``{"path", "p_fake", "attribution", "error"}`` per file; unreadable files get an error."""
    for start in range(0, len(files), batch_size):
        batch, ok = [], []
        for path in files[start:start + batch_size]:
            try:
                with Image.open(path) as img:
                    batch.append(trained.detector.preprocess(img.convert("RGB")))
                ok.append(path)
            except (OSError, UnidentifiedImageError) as err:
                yield {"path": str(path), "p_fake": None, "attribution": None, "error": str(err)}
        if not batch:
            continue
        logits = trained.model(torch.stack(batch).to(trained.detector.device))
        scores = p_fake_from_logits(logits, trained.real_classes)
        for path, score, cls in zip(ok, scores.tolist(), logits.argmax(1).tolist()):
            yield {"path": str(path), "p_fake": score, "attribution": trained.class_names[cls], "error": None}
