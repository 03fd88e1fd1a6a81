"""Train a recipe through a stream, evaluate after every experience, write results and a report."""

from __future__ import annotations

import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm
from avalanche.training.plugins import EvaluationPlugin

from .atomic_io import write_json_atomic
from .cost import kept_state_bytes
from .checkpoint import checkpoint_dir, save_checkpoint
from .detector import Detector, learned_state_dict
from .metrics.avalanche_metrics import DetectionPluginMetric
from .progress import EpochProgressPlugin
from .recipes import Recipe
from .report.report import write_report
from .report.results import build_results, peak_rss_mb
from .strategies import build_strategy
from .streams import Stream, to_benchmark


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU runs are then repeatable)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def checkpoint_tensors(strategy: Any) -> dict[str, torch.Tensor]:
    """The learned model state (no frozen backbone) and every stateful plug-in's tensors."""
    tensors = {f"model.{k}": v for k, v in learned_state_dict(strategy.model).items()}
    for plugin in strategy.plugins:
        if hasattr(plugin, "state_dict"):
            tensors.update({f"plugin.{type(plugin).__name__}.{k}": v for k, v in plugin.state_dict().items()})
    return tensors


def summary_line(i: int, names: list[str], auc_row: np.ndarray, seconds: float) -> str:
    """``exp 2/5 self_blend  AUC seen: a=0.99 b=0.97 | unseen: c=0.52  (12.3 s)``."""
    def cells(js: range) -> str:
        return " ".join(f"{names[j]}={auc_row[j]:.3f}" for j in js)
    unseen = f" | unseen: {cells(range(i + 1, len(names)))}" if i + 1 < len(names) else ""
    return f"exp {i + 1}/{len(names)} {names[i]}  AUC seen: {cells(range(i + 1))}{unseen}  ({seconds:.1f} s)"


def run(
    recipe: Recipe,
    stream: Stream,
    *,
    seed: int = 0,
    out_dir: Optional[Path] = None,
    recipe_name: Optional[str] = None,
    progress: bool = True,
    echo: Callable[[str], None] = tqdm.write,
) -> dict[str, Any]:
    """Train ``recipe`` through ``stream`` (a loaded :class:`cldf.streams.Stream`).

    After each training experience the whole test stream is evaluated, filling the R matrices
    (unseen generators included). Returns the ``results.json`` dictionary; with ``out_dir`` it
    also writes ``results.json``, ``report.md`` and the plots there.
    """
    seed_everything(seed)
    detector = Detector(recipe.detector)
    benchmark = to_benchmark(stream, detector.preprocess)
    names = list(benchmark.experience_names)
    metric = DetectionPluginMetric(real_classes=benchmark.real_classes, stream_name="test")
    with warnings.catch_warnings():  # cldf reports through results.json, not Avalanche loggers
        warnings.filterwarnings("ignore", message="No loggers specified")
        evaluator = EvaluationPlugin(metric, loggers=[])
    strategy = build_strategy(recipe, detector, evaluator, [EpochProgressPlugin(len(names), names, progress)])
    train_seconds = 0.0
    trainable = 0
    for i, experience in enumerate(benchmark.train_stream):
        start = time.perf_counter()
        strategy.train(experience, num_workers=recipe.training.num_workers)
        seconds = time.perf_counter() - start
        train_seconds += seconds
        trainable = max(trainable, sum(p.numel() for p in strategy.model.parameters() if p.requires_grad))
        strategy.eval(benchmark.test_stream, num_workers=recipe.training.num_workers)
        echo(summary_line(i, names, metric.matrix("auc", len(names))[i], seconds))
        if out_dir is not None:
            manifest = {
                "recipe": recipe.to_raw(), "recipe_name": recipe_name or recipe.strategy, "seed": seed,
                "stream": stream.spec.name, "experience_names": names, "completed_experiences": i + 1,
                "class_names": list(stream.class_map.names), "real_classes": list(benchmark.real_classes),
                "adapters": detector.adapter_names, "frozen_adapters": sorted(detector.frozen_adapters),
                "active_adapter": detector.active_adapter,
            }
            save_checkpoint(checkpoint_dir(Path(out_dir), i), checkpoint_tensors(strategy), manifest)
    results = build_results(
        strategy=recipe_name or recipe.strategy,
        stream_name=stream.spec.name,
        experiences=names,
        matrices=metric.matrices(len(names)),
        cost={
            "train_seconds": train_seconds,
            "trainable_params": trainable,
            "state_bytes": kept_state_bytes(strategy),
            "peak_rss_mb": peak_rss_mb(),
        },
        config={"recipe": recipe.to_raw(), "stores_exemplars": recipe.stores_exemplars},
        seed=seed,
    )
    results["weights_source"] = detector.weights_source
    results["method_stats"] = {
        type(p).__name__: p.alpha_stats() for p in strategy.plugins if hasattr(p, "alpha_stats")
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_json_atomic(out_dir / "results.json", results)
        write_report([out_dir / "results.json"], out_dir)
    return results
