"""Experiment loggers for a run, built from Avalanche's own (``cldf run --logger NAME``).

Every metric value a run emits reaches them through Avalanche's ``EvaluationPlugin``: the
detection cells (``AUC/eval_phase/test_stream/Exp002``, EER, AP, ...), the continual summaries
after each experience (``AUCSeen``, ``ForgettingAUC``) and each method's signals (EMA balance
α and its fallback share, NAPA-VQ's loss terms, the slow/fast vote weights).

- ``text``: Avalanche's ``TextLogger`` into ``OUT/logs/log.txt``;
- ``csv``: one row per metric value in ``OUT/logs/metrics.csv`` (Avalanche's ``CSVLogger``
  writes only accuracy and loss columns, so it cannot carry detection metrics);
- ``tensorboard``: Avalanche's ``TensorboardLogger`` into ``OUT/logs/tensorboard``
  (``pip install cldf[tensorboard]``);
- ``wandb``: Avalanche's ``WandBLogger``, offline unless ``WANDB_MODE`` says otherwise, files
  under ``OUT/logs`` (``pip install cldf[wandb]``).
"""

from __future__ import annotations

import csv
import importlib.util
import os
import uuid
from pathlib import Path
from typing import Any, Callable, TextIO

from avalanche.logging import BaseLogger, TextLogger

from cldf.config_io import ConfigError


class MetricsCSVLogger(BaseLogger):
    """Writes ``training_exp,step,metric,value`` for every scalar metric value.

    ``training_exp`` is the experience being trained, or the last one trained while evaluating
    (-1 before any training); ``step`` is Avalanche's x value (training iterations so far).
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = open(path, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(["training_exp", "step", "metric", "value"])
        self._training_exp = -1

    def before_training_exp(self, strategy: Any, metric_values: list, **kwargs) -> None:
        self._training_exp = strategy.clock.train_exp_counter

    def before_eval(self, strategy: Any, metric_values: list, **kwargs) -> None:
        self._training_exp = strategy.clock.train_exp_counter - 1

    def log_single_metric(self, name: str, value: Any, x_plot: int) -> None:
        if isinstance(value, (int, float)):
            self._writer.writerow([self._training_exp, x_plot, name, repr(float(value))])
            self._file.flush()

    def close(self) -> None:
        self._file.close()


class TextFileLogger(TextLogger):
    """Avalanche's ``TextLogger`` writing to a file it owns (closed by :meth:`close`)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(open(path, "w", encoding="utf-8"))

    def close(self) -> None:
        self.file.close()


def _require(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        raise ConfigError(f"--logger {name} needs the '{name}' package: pip install 'cldf[{name}]'")


def _tensorboard(logs: Path, run_name: str, config: dict[str, Any]) -> BaseLogger:
    from avalanche.logging import TensorboardLogger
    return TensorboardLogger(tb_log_dir=logs / "tensorboard")


def _wandb(logs: Path, run_name: str, config: dict[str, Any]) -> BaseLogger:
    from avalanche.logging import WandBLogger

    class ScalarWandBLogger(WandBLogger):
        """Avalanche's ``WandBLogger`` for scalar metrics: its own value dispatch names
        ``wandb.viz``, which recent wandb releases no longer have."""

        def log_single_metric(self, name: str, value: Any, x_plot: int) -> None:
            if isinstance(value, (int, float)):
                self.step = x_plot
                self.wandb.log({name: value}, step=x_plot)

    logs.mkdir(parents=True, exist_ok=True)
    return ScalarWandBLogger(project_name=os.environ.get("WANDB_PROJECT", "cldf"), run_name=run_name, dir=str(logs),
                       save_code=False, config=config,
                       # an id of our own: Avalanche 0.6 would ask wandb.util.generate_id, gone from recent wandb
                       params={"mode": os.environ.get("WANDB_MODE", "offline"), "id": uuid.uuid4().hex[:8]})


OPTIONAL_LOGGERS = ("tensorboard", "wandb")  # each needs the package, and cldf extra, of its name

LOGGERS: dict[str, Callable[[Path, str, dict[str, Any]], BaseLogger]] = {
    "text": lambda logs, run_name, config: TextFileLogger(logs / "log.txt"),
    "csv": lambda logs, run_name, config: MetricsCSVLogger(logs / "metrics.csv"),
    "tensorboard": _tensorboard,
    "wandb": _wandb,
}


def check_logger_names(names: list[str]) -> None:
    """Refuse a logger name that is not one of :data:`LOGGERS`, or one whose package is missing."""
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(f"--logger {name!r}: valid loggers are {', '.join(LOGGERS)}")
        if name in OPTIONAL_LOGGERS:
            _require(name)


def make_loggers(names: list[str], out_dir: Path, run_name: str, config: dict[str, Any]) -> list[BaseLogger]:
    """The loggers named (each once, in order), writing under ``out_dir/logs``."""
    check_logger_names(names)
    return [LOGGERS[name](Path(out_dir) / "logs", run_name, config) for name in dict.fromkeys(names)]


def close_loggers(loggers: list[BaseLogger]) -> None:
    """Flush and close what the loggers opened (files, the W&B run)."""
    for logger in loggers:
        if hasattr(logger, "close"):
            logger.close()
        elif hasattr(logger, "writer"):  # TensorboardLogger's SummaryWriter
            logger.writer.close()
        elif hasattr(logger, "wandb"):
            logger.wandb.finish()
