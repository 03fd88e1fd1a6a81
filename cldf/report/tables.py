"""Markdown table comparing strategies: mean ± standard deviation over seeds."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from cldf.metrics.continual import final_average
from cldf.report.results import group_runs, result_matrix

Run = Mapping[str, Any]


def _summary(key: str) -> Callable[[Run], float | None]:
    return lambda run: run["metrics"][key]


def _last_row_mean(name: str) -> Callable[[Run], float | None]:
    return lambda run: final_average(result_matrix(run, name))


def _cost(key: str) -> Callable[[Run], float | None]:
    return lambda run: run["cost"][key]


def _fixed(digits: int) -> Callable[[float], str]:
    return lambda value: f"{value:.{digits}f}"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.2f} GiB"


# (header, value of one run, formatter)
COLUMNS: list[tuple[str, Callable[[Run], float | None], Callable[[float], str]]] = [
    ("Avg AUC ↑", _summary("avg_auc"), _fixed(3)),
    ("Forgetting ↓", _summary("forgetting_auc"), _fixed(3)),
    ("BWT ↑", _summary("bwt_auc"), _fixed(3)),
    ("Unseen AUC ↑", _summary("unseen_auc"), _fixed(3)),
    ("Avg EER ↓", _last_row_mean("eer"), _fixed(3)),
    ("Avg AP ↑", _last_row_mean("ap"), _fixed(3)),
    ("Avg Acc@0.5 ↑", _last_row_mean("acc"), _fixed(3)),
    ("Attribution ↑", _summary("attribution_acc"), _fixed(3)),
    ("Train s", _cost("train_seconds"), _fixed(1)),
    ("Trainable params", _cost("trainable_params"), _count),
    ("State", _cost("state_bytes"), _bytes),
    ("Peak RSS MiB", _cost("peak_rss_mb"), _fixed(0)),
]


def mean_std_cell(values: Sequence[float | None], fmt: Callable[[float], str]) -> str:
    """``mean ± std`` (sample std, ddof=1) of the defined values; just the mean for one value;
    ``n/a`` when none is defined."""
    finite = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return "n/a"
    if finite.size == 1:
        return fmt(finite[0])
    return f"{fmt(finite.mean())} ± {fmt(finite.std(ddof=1))}"


def strategy_table(by_strategy: Mapping[str, Sequence[Run]]) -> str:
    """Markdown table with one row per strategy; each strategy's runs pooled as ``mean ± std``."""
    header = ["Strategy", "Seeds", *(name for name, _, _ in COLUMNS)]
    naive = by_strategy.get("naive")
    if naive:  # training time as a ratio in one table: the machine's speed cancels out
        header.append("Train × naive")
        naive_seconds = float(np.mean([run["cost"]["train_seconds"] for run in naive]))
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for strategy, runs in by_strategy.items():
        cells = [strategy, str(len(runs))]
        cells += [mean_std_cell([get(run) for run in runs], fmt) for _, get, fmt in COLUMNS]
        if naive:
            ratio = np.mean([run["cost"]["train_seconds"] for run in runs]) / naive_seconds
            cells.append(f"{ratio:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


DECISION_COLUMNS: list[tuple[str, str]] = [
    ("FPR at threshold", "final_fpr"), ("TPR at threshold", "final_tpr"), ("ECE ↓", "final_ece"),
    ("Novelty AUROC ↑", "avg_novelty_auc"),
]


def decision_table(by_strategy: Mapping[str, Sequence[Run]]) -> str:
    """Decisions after the last experience, at the thresholds fitted on validation images."""
    lines = ["| Strategy | " + " | ".join(name for name, _ in DECISION_COLUMNS) + " |",
             "|---|" + "---:|" * len(DECISION_COLUMNS)]
    for strategy, runs in by_strategy.items():
        cells = [mean_std_cell([run["metrics"].get(key) for run in runs], _fixed(3)) for _, key in DECISION_COLUMNS]
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def stream_heading(runs: Sequence[Run]) -> str:
    """``Stream `name`: exp1 → exp2 → ...`` for runs of one stream."""
    return f"Stream `{runs[0]['stream']['name']}`: {' → '.join(runs[0]['stream']['experiences'])}"


def markdown_table(runs: Sequence[Run]) -> str:
    """A heading and a :func:`strategy_table` for each stream among ``runs``."""
    sections = [
        f"### {stream_heading(next(iter(by_strategy.values())))}\n\n{strategy_table(by_strategy)}"
        for by_strategy in group_runs(runs).values()
    ]
    return "\n".join(sections)
