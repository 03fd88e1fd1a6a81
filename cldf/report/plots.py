"""PNG plots of continual results (matplotlib, Agg backend: no display needed).

Runs of one strategy (several seeds) are averaged; lines show the mean with a ±1 std band.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cldf.metrics.continual import average_after_each, forgetting_after_each  # noqa: E402
from cldf.report.results import result_matrix  # noqa: E402

Run = Mapping[str, Any]


def slug(text: str) -> str:
    """File-name-safe version of a strategy or stream name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "unnamed"


def _mean_matrix(runs: Sequence[Run], metric: str) -> np.ndarray:
    stacked = np.stack([result_matrix(run, metric) for run in runs])
    mean = np.full(stacked.shape[1:], np.nan)
    defined = ~np.isnan(stacked).all(axis=0)
    mean[defined] = np.nanmean(stacked[:, defined], axis=0)
    return mean


def _seeds_note(runs: Sequence[Run]) -> str:
    return f"mean of {len(runs)} seeds" if len(runs) > 1 else f"seed {runs[0]['seed']}"


def plot_matrix(runs: Sequence[Run], path: str | Path, metric: str = "auc") -> Path:
    """Heatmap of one strategy's R matrix (mean over its runs) with values written in the cells.

    Cells right of the staircase line are generators the model had not yet been trained on.
    """
    matrix = _mean_matrix(runs, metric)
    names = runs[0]["stream"]["experiences"]
    size = len(names)
    side = max(4.5, 0.9 * size + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    cmap = plt.get_cmap("RdYlBu").with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=0.0, vmax=1.0)
    for i in range(size):
        for j in range(size):
            value = matrix[i, j]
            text = "n/a" if np.isnan(value) else f"{value:.2f}"
            red, green, blue, _ = image.cmap(image.norm(value))
            dark = not np.isnan(value) and 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            colour = "white" if dark else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=10, color=colour)
    edge = np.repeat(np.arange(size) + 0.5, 2)
    ax.plot(edge, edge + np.tile([-1.0, 0.0], size), color="black", linewidth=2)
    ax.set_xticks(range(size), names, rotation=35, ha="right")
    ax.set_yticks(range(size), names)
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_ylim(size - 0.5, -0.5)
    ax.set_xlabel("tested on experience")
    ax.set_ylabel("after training on experience")
    strategy = runs[0]["strategy"]
    ax.set_title(
        f"{metric.upper()} matrix: {strategy}\n"
        f"({_seeds_note(runs)}; right of line = not yet trained on)"
    )
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colorbar.set_label(metric.upper())
    return _save(fig, path)


def _curve_plot(
    by_strategy: Mapping[str, Sequence[Run]],
    path: str | Path,
    curve,
    title: str,
    ylabel: str,
    reference: tuple[float, str, bool],
    first: int,
) -> Path:
    """Lines of ``curve(R_auc)[first:]`` per strategy; ``reference = (y, label, always)`` draws a
    dashed line at y, only inside the data's range unless ``always``."""
    names = next(iter(by_strategy.values()))[0]["stream"]["experiences"]
    x = np.arange(first, len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 3.0), 4.8))
    for strategy, runs in by_strategy.items():
        curves = np.stack([curve(result_matrix(run, "auc"))[first:] for run in runs])
        mean = np.nanmean(curves, axis=0) if len(runs) > 1 else curves[0]
        (line,) = ax.plot(x, mean, marker="o", linewidth=2, label=f"{strategy} (n={len(runs)})")
        if len(runs) > 1:
            std = np.nanstd(curves, axis=0, ddof=1)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    low, high = ax.get_ylim()
    if reference[2] or low <= reference[0] <= high:
        ax.axhline(reference[0], color="grey", linestyle="--", linewidth=1, label=reference[1])
    ax.set_xticks(x, [names[i] for i in x], rotation=25, ha="right")
    ax.set_xlabel("after training on experience")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    return _save(fig, path)


def plot_average_auc(by_strategy: Mapping[str, Sequence[Run]], path: str | Path) -> Path:
    """Average AUC over the experiences seen so far, after each experience (a line per strategy)."""
    return _curve_plot(
        by_strategy,
        path,
        average_after_each,
        "Average AUC over seen experiences",
        "mean AUC on experiences trained so far",
        (0.5, "chance (AUC 0.5)", False),
        first=0,
    )


def plot_forgetting(by_strategy: Mapping[str, Sequence[Run]], path: str | Path) -> Path:
    """Mean AUC forgetting of earlier experiences after each experience from the second on."""
    return _curve_plot(
        by_strategy,
        path,
        forgetting_after_each,
        "Forgetting of earlier experiences (AUC)",
        "mean drop from best AUC (lower is better)",
        (0.0, "no forgetting", True),
        first=1,
    )


def plot_reliability(by_strategy: Mapping[str, Sequence[Run]], path: str | Path) -> Path:
    """Reliability diagram of the calibrated ``p_fake`` after the last experience (all test
    experiences pooled): share of fakes against mean predicted probability per bin, one line per
    strategy (bins of every seed pooled, weighted by their counts)."""
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for strategy, runs in by_strategy.items():
        bins = np.array([b for run in runs for b in run.get("calibration", {}).get("reliability", [])])
        if not len(bins):
            continue
        order = np.argsort(bins[:, 0])
        ax.plot(bins[order, 0], bins[order, 1], marker="o", linewidth=1.5, label=f"{strategy} (n={len(runs)})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean calibrated p_fake in bin")
    ax.set_ylabel("share of fake images in bin")
    ax.set_title("Reliability after the last experience")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(target, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return target
