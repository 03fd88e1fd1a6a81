"""Score images with a trained detector restored from a run's checkpoint.

Prediction goes through the recipe's strategy exactly as evaluation does (its plug-ins' eval
hooks included: NAPA-VQ's nearest-code-vector prediction, an EMA shadow used at evaluation), so
``cldf predict`` gives the scores that the run's metrics were computed from.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.utils import trigger_plugins
from PIL import Image, UnidentifiedImageError

from .checkpoint import latest_checkpoint, load_checkpoint
from .detector import Detector
from .recipes import parse_stored_recipe
from .run_state import detector_of, restore_learned
from .scores import p_fake_from_logits
from .strategies import build_strategy

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class TrainedDetector:
    """A trained run's strategy (model and plug-ins restored), its class names (class id ->
    ``real:...``/``fake:...``) and the classes it has learned (columns a head grew while
    evaluating generators not learned yet are left out of scores and attribution)."""

    strategy: Any
    detector: Detector
    class_names: list[str]
    real_classes: list[int]
    learned_classes: list[int]

    @torch.no_grad()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """The evaluation forward of the run's strategy on a batch of preprocessed images."""
        strategy = self.strategy
        strategy.model.eval()
        strategy.mbatch = [batch.to(self.detector.device), torch.zeros(len(batch), dtype=torch.long),
                           torch.zeros(len(batch), dtype=torch.long)]
        trigger_plugins(strategy, "before_eval")
        try:
            strategy.mb_output = strategy.forward()
            trigger_plugins(strategy, "after_eval_forward")
            return strategy.mb_output
        finally:
            trigger_plugins(strategy, "after_eval")


def load_trained(path: str | Path) -> TrainedDetector:
    """Restore the strategy of a run folder (its latest checkpoint) or of one checkpoint folder."""
    path = Path(path)
    folder = latest_checkpoint(path) or path
    tensors, manifest = load_checkpoint(folder)
    recipe = parse_stored_recipe(manifest["recipe"], f"{folder}/manifest.json")
    with warnings.catch_warnings():  # prediction reports nothing through Avalanche loggers
        warnings.filterwarnings("ignore", message="No loggers specified")
        strategy = build_strategy(recipe, Detector(recipe.detector), EvaluationPlugin(loggers=[]))
    restore_learned(strategy, tensors, manifest, folder)
    strategy.model.eval()
    return TrainedDetector(strategy, detector_of(strategy.model), list(manifest["class_names"]),
                           list(manifest["real_classes"]), tensors["metric.seen_classes"].tolist())


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
        logits = trained.logits(torch.stack(batch))
        learned = [c for c in trained.learned_classes if c < logits.shape[1]]
        scores = p_fake_from_logits(logits, trained.real_classes, len(trained.class_names), learned)
        attributed = torch.tensor(learned)[logits[:, learned].argmax(1).cpu()]
        for path, score, cls in zip(ok, scores.tolist(), attributed.tolist()):
            yield {"path": str(path), "p_fake": score, "attribution": trained.class_names[cls], "error": None}
