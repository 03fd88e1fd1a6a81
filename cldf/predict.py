"""Score images with a trained detector restored from a run's checkpoint.

Prediction goes through the recipe's strategy exactly as evaluation does (its plug-ins' eval
hooks included: NAPA-VQ's nearest-code-vector prediction, an EMA shadow used at evaluation), so
``cldf predict`` gives the scores that the run's metrics were computed from, calibrated and
thresholded as fitted on the run's validation images (:mod:`cldf.metrics.calibration`).
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

from cldf.run.checkpoint import latest_checkpoint, load_checkpoint
from cldf.avalanche import DynamicDetector
from cldf.detector import Detector
from cldf.recipes import parse_stored_recipe
from cldf.run.state import detector_of, restore_learned
from cldf.metrics.avalanche_metrics import calibration_from_tensor
from cldf.metrics.calibration import Calibration, novelty_scores
from cldf.scores import fake_log_odds_from_logits
from cldf.avalanche.build import build_strategy

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
SCORE_FIELDS = ("p_fake", "log_odds", "decision", "novelty", "novel", "attribution")


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
    calibration: Calibration

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
        strategy = build_strategy(recipe, DynamicDetector(recipe.detector), EvaluationPlugin(loggers=[]))
    restore_learned(strategy, tensors, manifest, folder)
    strategy.model.eval()
    calibration = calibration_from_tensor(tensors["metric.calibration"]) if "metric.calibration" in tensors \
        else Calibration()  # a run without validation images: raw p_fake, threshold 0.5, no novelty flag
    return TrainedDetector(strategy, detector_of(strategy.model), list(manifest["class_names"]),
                           list(manifest["real_classes"]), tensors["metric.seen_classes"].tolist(), calibration)


def score_images(trained: TrainedDetector, images: list[Image.Image]) -> list[dict]:
    """Per image: calibrated ``p_fake`` and its ``log_odds``, the ``decision`` at the run's
    threshold (``fake``/``real``), the ``novelty`` score and whether it is above the novelty
    threshold (``novel``), and the ``attribution`` (the most likely learned class)."""
    logits = trained.logits(torch.stack([trained.detector.preprocess(image) for image in images]))
    learned = [c for c in trained.learned_classes if c < logits.shape[1]]
    raw = fake_log_odds_from_logits(logits, trained.real_classes, len(trained.class_names), learned).numpy()
    calibration = trained.calibration
    log_odds, p_fake = calibration.log_odds(raw), calibration.p_fake(raw)
    novelty = novelty_scores(logits, learned)
    attributed = torch.tensor(learned)[logits[:, learned].argmax(1).cpu()].tolist()
    return [{"p_fake": float(p), "log_odds": float(z), "decision": "fake" if calibration.decide(p) else "real",
             "novelty": float(n), "novel": bool(n > calibration.novelty_threshold),
             "attribution": trained.class_names[c]}
            for p, z, n, c in zip(p_fake, log_odds, novelty, attributed)]


def predict_files(trained: TrainedDetector, files: list[Path], batch_size: int = 64) -> Iterator[dict]:
    """Yield ``{"path", "p_fake", "decision", "novelty", "novel", "attribution", "error"}`` (and
    ``log_odds``) per file; unreadable files get an error and no scores."""
    for start in range(0, len(files), batch_size):
        images, ok = [], []
        for path in files[start:start + batch_size]:
            try:
                with Image.open(path) as img:
                    images.append(img.convert("RGB"))
                ok.append(path)
            except (OSError, UnidentifiedImageError) as err:
                yield {"path": str(path), **dict.fromkeys(SCORE_FIELDS), "error": str(err)}
        if images:
            for path, row in zip(ok, score_images(trained, images)):
                yield {"path": str(path), **row, "error": None}
