"""Score images with a trained detector restored from a run's checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from .checkpoint import latest_checkpoint, load_checkpoint
from .detector import Detector
from .recipes import parse_stored_recipe
from .run_state import detector_of, restore_model
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
    recipe = parse_stored_recipe(manifest["recipe"], f"{folder}/manifest.json")
    model = model_for(recipe, Detector(recipe.detector))
    restore_model(model, tensors, manifest["model"], folder)
    model.eval()
    return TrainedDetector(model, detector_of(model), list(manifest["class_names"]), list(manifest["real_classes"]))


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
