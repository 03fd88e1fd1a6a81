"""A Markdown report with plots from one or more ``results.json`` files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cldf.atomic_io import write_text_atomic
from cldf.report.plots import plot_average_auc, plot_forgetting, plot_matrix, plot_reliability, slug
from cldf.report.results import group_runs, load_results
from cldf.report.tables import decision_table, stream_heading, strategy_table


def write_report(result_paths: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Write ``report.md`` plus PNG plots into ``out_dir`` and return the report's path.

    Per stream: the strategy table, average AUC and forgetting after each experience (one line
    per strategy), the decisions at the calibrated thresholds with a reliability diagram, and the
    AUC and novelty-AUC matrix heatmaps of each strategy.
    """
    if not result_paths:
        raise ValueError("write_report needs at least one results.json path")
    out = Path(out_dir)
    runs = [load_results(p) for p in result_paths]
    lines = ["# cldf results", "", f"Sources: {', '.join(f'`{p}`' for p in result_paths)}", ""]
    for stream, by_strategy in group_runs(runs).items():
        prefix = slug(stream)
        heading = stream_heading(next(iter(by_strategy.values())))
        lines += [f"## {heading}", "", strategy_table(by_strategy)]
        average = plot_average_auc(by_strategy, out / f"{prefix}_average_auc.png")
        forgetting = plot_forgetting(by_strategy, out / f"{prefix}_forgetting.png")
        lines += [f"![average AUC]({average.name})", "", f"![forgetting]({forgetting.name})", ""]
        if any(run.get("calibration", {}).get("reliability") for runs in by_strategy.values() for run in runs):
            lines += [decision_table(by_strategy)]
            reliability = plot_reliability(by_strategy, out / f"{prefix}_reliability.png")
            lines += [f"![reliability]({reliability.name})", ""]
        for strategy, strategy_runs in by_strategy.items():
            for metric in ("auc", "novelty_auc"):
                if all(metric in run["metrics"] for run in strategy_runs):
                    heatmap = plot_matrix(strategy_runs, out / f"{prefix}_{metric}_matrix_{slug(strategy)}.png", metric)
                    lines += [f"![{metric} matrix of {strategy}]({heatmap.name})", ""]
    return write_text_atomic(out / "report.md", "\n".join(lines))
