"""Train a recipe through a stream, evaluate after every experience, write results and a report."""

from __future__ import annotations

import json
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from avalanche.core import SupervisedPlugin
from avalanche.logging import BaseLogger
from avalanche.training.plugins import EvaluationPlugin
from torch import Tensor
from tqdm.auto import tqdm

from cldf.run.checkpoint import CheckpointError, check_compatible, checkpoint_dir, latest_checkpoint, load_checkpoint, save_checkpoint
from cldf.config_io import ConfigError
from cldf.run.cost import kept_state_bytes, peak_rss_mb
from cldf.distributed import DistributedPlugin, init_from_env, is_distributed, is_main
from cldf.avalanche import DynamicDetector
from cldf.run.faults import NonFiniteLossGuard
from cldf.metrics.avalanche_metrics import DetectionPluginMetric
from cldf.run.progress import EpochProgressPlugin
from cldf.recipes import Recipe
from cldf.report.report import write_report
from cldf.report.results import build_results, package_versions, write_results
from cldf.run.state import OptimizerStateLoader, capture, restore
from cldf.avalanche.build import build_strategy
from cldf.device import resolve_device
from cldf.speed import SpeedSettings, resolve_speed
from cldf.streams import Stream, StreamBenchmark, to_benchmark

# Settings that may change between a run and its resumption: they do not shape what is learned.
# Settings a resumed run may change: where and how fast it runs, not what it learns from. The speed
# settings (added later) are here too, so checkpoints written before them still resume.
RESUME_FREE_SETTINGS = (
    "recipe.description", "recipe.detector.device", "recipe.training.num_workers",
    "recipe.training.precision", "recipe.training.channels_last", "recipe.training.frozen_pass_memo_mb",
    "recipe.training.prefix_memo_mb",  # the memo's earlier name, in older checkpoints
    "recipe.training.on_nonfinite_loss", "stream.root", "stream.description",
    "stream.options.cache_dir",  # where the hf layout caches Arrow files
)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU runs are then repeatable)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_setup(recipe: Recipe, stream: Stream, seed: int) -> dict[str, Any]:
    """What a checkpoint must share with the run resuming it: recipe, seed, stream, class map."""
    return {
        "recipe": recipe.to_raw(), "seed": seed,
        "stream": json.loads(json.dumps(asdict(stream.spec), default=str)),
        "class_names": list(stream.class_map.names),
    }


def resume_point(path: Path, setup: dict[str, Any]) -> tuple[Path, dict[str, Tensor], dict[str, Any]]:
    """The verified checkpoint to resume from (a run folder's latest, or a checkpoint folder), after
    checking it was made for ``setup``; damage or another setup is a :class:`CheckpointError`."""
    folder = latest_checkpoint(path) or Path(path)
    try:
        tensors, manifest = load_checkpoint(folder)
    except CheckpointError as err:
        earlier = sorted(str(p) for p in folder.parent.glob("exp_*") if p.name < folder.name)
        raise CheckpointError(f"{err}; earlier checkpoints you can resume from: {', '.join(earlier)}" if earlier else str(err)) from err
    check_compatible(manifest, setup, folder, ignore=RESUME_FREE_SETTINGS)
    return folder, tensors, manifest


def method_stats(strategy: Any, earlier: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-experience statistics of plug-ins with ``alpha_stats`` (keys as strings, as in JSON),
    added to those of the experiences before a resumption."""
    stats = {}
    for plugin in strategy.plugins:
        if hasattr(plugin, "alpha_stats"):
            name = type(plugin).__name__
            stats[name] = {**earlier.get(name, {}), **{str(k): v for k, v in plugin.alpha_stats().items()}}
    return stats


def summary_line(i: int, names: list[str], auc_row: np.ndarray, seconds: float) -> str:
    """``exp 2/5 self_blend  AUC seen: a=0.99 b=0.97 | unseen: c=0.52  (12.3 s)``."""
    def cells(js: range) -> str:
        return " ".join(f"{names[j]}={auc_row[j]:.3f}" for j in js)
    unseen = f" | unseen: {cells(range(i + 1, len(names)))}" if i + 1 < len(names) else ""
    return f"exp {i + 1}/{len(names)} {names[i]}  AUC seen: {cells(range(i + 1))}{unseen}  ({seconds:.1f} s)"


@dataclass
class RunParts:
    """What one run is made of: the detector, the benchmark, the strategy with its plug-ins and
    the speed settings resolved for the device."""

    recipe: Recipe
    detector: DynamicDetector
    benchmark: StreamBenchmark
    names: list[str]
    metric: DetectionPluginMetric
    guard: NonFiniteLossGuard
    strategy: Any
    speed: SpeedSettings


@dataclass
class RunProgress:
    """Where a run stands: experiences done, training time, the largest trainable parameter
    count, method statistics of the experiences before a resumption, the checkpoint resumed from
    and how many experiences it held."""

    done: int = 0
    train_seconds: float = 0.0
    trainable: int = 0
    earlier_stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    resumed_from: Optional[Path] = None
    resumed_at: int = 0


def assemble(recipe: Recipe, stream: Stream, seed: int, plugins: Sequence[SupervisedPlugin],
             progress: bool, loggers: Sequence[BaseLogger] = ()) -> RunParts:
    """Resolve the speed settings (refusing a precision the device lacks), seed everything, then
    build the detector, the benchmark, the detection metric and the strategy."""
    speed = resolve_speed(recipe.training, resolve_device(recipe.detector.device))
    seed_everything(seed)
    detector = DynamicDetector(recipe.detector)
    benchmark = to_benchmark(stream, detector.preprocess)
    detector.use_class_map(benchmark.real_classes, len(benchmark.class_map))
    names = list(benchmark.experience_names)
    metric = DetectionPluginMetric(real_classes=benchmark.real_classes, stream_name="test",
                                   num_classes=len(benchmark.class_map), target_fpr=recipe.decision.target_fpr,
                                   novelty_rate=recipe.decision.novelty_rate)
    with warnings.catch_warnings():  # without loggers cldf reports through results.json alone
        warnings.filterwarnings("ignore", message="No loggers specified")
        evaluator = EvaluationPlugin(metric, loggers=list(loggers))
    guard = NonFiniteLossGuard(recipe.training.on_nonfinite_loss, names)
    extra = [*plugins, EpochProgressPlugin(len(names), names, progress and is_main()), OptimizerStateLoader(), guard]
    strategy = build_strategy(recipe, detector, evaluator, extra)
    if is_distributed():
        strategy.plugins.insert(0, DistributedPlugin(seed))  # first: its hooks frame everyone else's
    return RunParts(recipe, detector, benchmark, names, metric, guard, strategy, speed)


def resume_from(parts: RunParts, resumed: Optional[tuple[Path, dict[str, Tensor], dict[str, Any]]]) -> RunProgress:
    """Put a verified checkpoint back into the run's parts; a fresh run starts at experience 0."""
    if resumed is None:
        return RunProgress()
    folder, tensors, manifest = resumed
    restore(parts.strategy, parts.recipe, parts.metric, tensors, manifest, folder)
    done = manifest["completed_experiences"]
    return RunProgress(done, manifest["train_seconds"], manifest["trainable_params"], manifest["method_stats"],
                       folder, done)


def train_experiences(parts: RunParts, state: RunProgress, stream: Stream, setup: dict[str, Any],
                      out_dir: Optional[Path], recipe_name: str, echo: Callable[[str], None]) -> None:
    """Train each remaining experience, evaluate (validation, then the whole test stream) and
    checkpoint it; ``state`` follows along."""
    strategy, names, workers = parts.strategy, parts.names, parts.speed.num_workers
    first_optimizer = strategy.optimizer
    for i in range(state.done, len(names)):
        start = time.perf_counter()
        strategy.train(parts.benchmark.train_stream[i], num_workers=workers)
        seconds = time.perf_counter() - start
        state.train_seconds += seconds
        state.trainable = max(state.trainable, sum(p.numel() for p in strategy.model.parameters() if p.requires_grad))
        if stream.has_validation:  # fits the calibration and thresholds of this experience
            strategy.eval(parts.benchmark.valid_stream[i:i + 1], num_workers=workers)
        strategy.eval(parts.benchmark.test_stream, num_workers=workers)
        state.done = i + 1
        echo(summary_line(i, names, parts.metric.matrix("auc", len(names))[i], seconds))
        if out_dir is not None and is_main():
            # an optimiser rebuilt at each experience (slow/fast) starts fresh: nothing to keep
            tensors, state_info = capture(strategy, parts.metric, with_optimizer=strategy.optimizer is first_optimizer)
            save_checkpoint(checkpoint_dir(out_dir, i), tensors, {
                **setup, **state_info, "recipe_name": recipe_name, "experience_names": names,
                "real_classes": list(parts.benchmark.real_classes), "completed_experiences": state.done,
                "train_seconds": state.train_seconds, "trainable_params": state.trainable,
                "method_stats": method_stats(strategy, state.earlier_stats), "versions": package_versions(),
            })


def collect_results(parts: RunParts, state: RunProgress, stream: Stream, setup: dict[str, Any],
                    recipe_name: str, seed: int) -> dict[str, Any]:
    """The ``results.json`` dictionary of a finished run."""
    strategy, names, metric = parts.strategy, parts.names, parts.metric
    results = build_results(
        strategy=recipe_name,
        stream_name=stream.spec.name,
        experiences=names,
        matrices=metric.matrices(len(names)),
        cost={
            "train_seconds": state.train_seconds,
            "trainable_params": state.trainable,
            "state_bytes": kept_state_bytes(strategy),
            "peak_rss_mb": peak_rss_mb(),
        },
        config={"recipe": parts.recipe.to_raw(), "stream": setup["stream"],
                "stores_exemplars": parts.recipe.stores_exemplars},
        seed=seed,
    )
    results["calibration"] = {
        "target_fpr": metric.target_fpr,
        "per_experience": {names[i]: c.to_dict() for i, c in sorted(metric.calibrations.items())},
        "reliability": [list(b) for b in metric.reliability],
    }
    results["weights_source"] = parts.detector.weights_source
    results["method_stats"] = method_stats(strategy, state.earlier_stats)
    results["nonfinite_loss"] = {
        "policy": parts.guard.policy, "skipped_batches": dict(zip(names, parts.guard.skipped.tolist())),
    }
    if state.resumed_from is not None:
        results["resumed_from"] = {"checkpoint": str(state.resumed_from), "completed_experiences": state.resumed_at}
    return results


def run(
    recipe: Recipe,
    stream: Stream,
    *,
    seed: int = 0,
    out_dir: Optional[Path] = None,
    recipe_name: Optional[str] = None,
    resume: Optional[Path] = None,
    plugins: Sequence[SupervisedPlugin] = (),
    loggers: Sequence[BaseLogger] = (),
    progress: bool = True,
    echo: Callable[[str], None] = tqdm.write,
) -> dict[str, Any]:
    """Train ``recipe`` through ``stream`` (a loaded :class:`cldf.streams.Stream`).

    After each training experience the whole test stream is evaluated, filling the R matrices
    (unseen generators included). Returns the ``results.json`` dictionary; with ``out_dir`` it
    also writes a checkpoint after every experience, then ``results.json``, ``report.md`` and the
    plots. ``resume`` (a run folder or a checkpoint folder) continues after its last completed
    experience, with the same results as an uninterrupted run. Extra ``plugins``
    run before the non-finite loss guard. Avalanche ``loggers`` (see :mod:`cldf.avalanche.loggers`)
    receive every metric value: detection cells, continual summaries and the methods' signals.

    Started by torchrun (see :mod:`cldf.distributed`), every process runs this function: training
    is data-parallel, metrics are computed on the predictions of all processes, and only rank 0
    prints and writes files.
    """
    init_from_env()
    if is_distributed() and recipe.training.on_nonfinite_loss == "skip":
        raise ConfigError("training.on_nonfinite_loss=skip is not supported with several processes "
                          "(one process skipping a batch would stall the others); use 'error'")
    echo = echo if is_main() else (lambda line: None)
    recipe = recipe.for_run_seed(seed)
    recipe_name = recipe_name or recipe.strategy
    out_dir = Path(out_dir) if out_dir is not None else None
    setup = run_setup(recipe, stream, seed)
    resumed = resume_point(Path(resume), setup) if resume is not None else None
    parts = assemble(recipe, stream, seed, plugins, progress, loggers)
    state = resume_from(parts, resumed)
    if state.resumed_from is not None:
        echo(f"resumed from {state.resumed_from}: {state.done}/{len(parts.names)} experiences done")
    train_experiences(parts, state, stream, setup, out_dir, recipe_name, echo)
    results = collect_results(parts, state, stream, setup, recipe_name, seed)
    if out_dir is not None and is_main():
        write_results(out_dir / "results.json", results)
        write_report([out_dir / "results.json"], out_dir)
    return results
