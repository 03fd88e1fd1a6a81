"""The per-run results file, ``results.json``: build, validate, write and load.

Shape (more keys are allowed, none of these may be missing)::

    {"strategy": str, "stream": {"name": str, "experiences": [str, ...]},
     "metrics": {"auc": [[float]], "acc": [[float]], "eer": [[float]], "ap": [[float]],
                 "avg_auc": float, "forgetting_auc": float, "bwt_auc": float,
                 "unseen_auc": float|null, "attribution_acc": float|null},
     "cost": {"train_seconds": float, "trainable_params": int, "state_bytes": int,
              "peak_rss_mb": float},
     "config": {...}, "seed": int, "versions": {"cldf": str, "torch": str, ...}}

Matrices are ``T x T`` (T = number of experiences), ``R[i][j]`` = metric on experience j's test
set after training on experience i; a cell that was not evaluated, or whose metric is undefined,
is ``null`` in the file and NaN in memory. Summaries that are undefined (e.g. forgetting with a
single experience) are ``null`` too.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cldf.atomic_io import write_json_atomic
from cldf.metrics.continual import continual_summary, final_average

MATRIX_KEYS = ("auc", "acc", "eer", "ap")
COST_KEYS = {
    "train_seconds": float,
    "trainable_params": int,
    "state_bytes": int,
    "peak_rss_mb": float,
}
SUMMARY_KEYS = ("avg_auc", "forgetting_auc", "bwt_auc", "unseen_auc", "attribution_acc")
REQUIRED: dict[str, Any] = {
    "strategy": str,
    "stream": {"name": str, "experiences": list},
    "metrics": {**{k: list for k in MATRIX_KEYS}, **{k: float for k in SUMMARY_KEYS}},
    "cost": COST_KEYS,
    "config": dict,
    "seed": int,
    "versions": {"cldf": str, "torch": str},
}


class ResultsError(ValueError):
    """A results file or dictionary does not have the required shape."""


def _json_number(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def _json_matrix(matrix: np.ndarray | Sequence[Sequence[float]]) -> list[list[float | None]]:
    return [[_json_number(v) for v in row] for row in np.asarray(matrix, dtype=np.float64)]


def package_versions() -> dict[str, str]:
    """Versions of Python, cldf and the libraries that shape the numbers."""
    import cldf

    versions = {
        "cldf": cldf.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    for package in ("avalanche-lib", "timm", "peft", "numpy", "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def build_results(
    *,
    strategy: str,
    stream_name: str,
    experiences: Sequence[str],
    matrices: Mapping[str, np.ndarray],
    cost: Mapping[str, float | int],
    config: Mapping[str, Any],
    seed: int,
) -> dict[str, Any]:
    """Assemble a valid results dictionary from the R matrices of one run.

    ``matrices`` needs ``auc, acc, eer, ap`` and may hold ``attribution``; each is ``T x T``.
    Besides the required summaries it adds ``avg_acc, avg_eer, avg_ap``, ``auc_after``
    (average AUC over the seen experiences after each one) and ``forgetting_auc_after``.
    """
    missing = [k for k in MATRIX_KEYS if k not in matrices]
    if missing:
        raise ResultsError(
            f"matrices lack {', '.join(missing)}; required: {', '.join(MATRIX_KEYS)}"
        )
    auc = continual_summary(matrices["auc"])
    metrics: dict[str, Any] = {name: _json_matrix(m) for name, m in matrices.items()}
    metrics.update(
        avg_auc=_json_number(auc["average"]),
        forgetting_auc=_json_number(auc["forgetting"]),
        bwt_auc=_json_number(auc["bwt"]),
        unseen_auc=_json_number(auc["unseen"]),
        attribution_acc=(
            _json_number(final_average(matrices["attribution"]))
            if "attribution" in matrices
            else None
        ),
        avg_acc=_json_number(final_average(matrices["acc"])),
        avg_eer=_json_number(final_average(matrices["eer"])),
        avg_ap=_json_number(final_average(matrices["ap"])),
        auc_after=[_json_number(v) for v in auc["average_after"]],
        forgetting_auc_after=[_json_number(v) for v in auc["forgetting_after"]],
    )
    for name in ("fpr", "tpr", "ece"):  # at the calibrated threshold, after the last experience
        if name in matrices:
            metrics[f"final_{name}"] = _json_number(final_average(matrices[name]))
    if "novelty_auc" in matrices:
        upper = np.asarray(matrices["novelty_auc"])[np.triu_indices(len(experiences), k=1)]
        metrics["avg_novelty_auc"] = _json_number(np.nanmean(upper)) if np.isfinite(upper).any() else None
    results = {
        "strategy": strategy,
        "stream": {"name": stream_name, "experiences": list(experiences)},
        "metrics": metrics,
        "cost": dict(cost),
        "config": dict(config),
        "seed": int(seed),
        "versions": package_versions(),
    }
    validate_results(results)
    return results


def _type_ok(value: Any, expected: type) -> bool:
    if expected is float:
        return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _check(node: Any, spec: Mapping[str, Any], prefix: str, problems: list[str]) -> None:
    for key, expected in spec.items():
        path = f"{prefix}{key}"
        if key not in node:
            problems.append(f"missing key {path}")
        elif isinstance(expected, Mapping):
            if isinstance(node[key], Mapping):
                _check(node[key], expected, f"{path}.", problems)
            else:
                problems.append(f"{path} must be an object, got {type(node[key]).__name__}")
        elif not _type_ok(node[key], expected):
            problems.append(f"{path} must be {expected.__name__}, got {node[key]!r:.60}")


def _check_matrices(results: Mapping[str, Any], problems: list[str]) -> None:
    size = len(results["stream"]["experiences"])
    for name in MATRIX_KEYS:
        matrix = results["metrics"][name]
        shape_ok = len(matrix) == size and all(
            isinstance(row, list) and len(row) == size for row in matrix
        )
        if not shape_ok:
            problems.append(
                f"metrics.{name} must be {size} x {size} (a row and a column per experience)"
            )
        elif not all(_type_ok(v, float) for row in matrix for v in row):
            problems.append(f"metrics.{name} cells must be numbers or null")


def validate_results(results: Mapping[str, Any], source: str = "results") -> None:
    """Raise :class:`ResultsError` listing every missing key or wrong type in ``results``."""
    if not isinstance(results, Mapping):
        raise ResultsError(f"{source}: expected a JSON object, got {type(results).__name__}")
    problems: list[str] = []
    _check(results, REQUIRED, "", problems)
    if not problems:
        _check_matrices(results, problems)
    if problems:
        raise ResultsError(f"{source}: " + "; ".join(problems))


def write_results(path: str | Path, results: Mapping[str, Any]) -> Path:
    """Validate ``results`` and write it atomically as JSON to ``path``."""
    validate_results(results, source=str(path))
    return write_json_atomic(path, results)


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate one ``results.json``."""
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path}: not valid JSON ({error})") from error
    validate_results(results, source=str(path))
    return results


def result_matrix(results: Mapping[str, Any], name: str) -> np.ndarray:
    """One metric's R matrix from a results dictionary, with null cells as NaN."""
    if name not in results["metrics"]:
        raise ResultsError(f"results of {results.get('strategy')!r} have no matrix metrics.{name}")
    rows = results["metrics"][name]
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)


def group_runs(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[Mapping[str, Any]]]]:
    """Runs grouped as ``{stream name: {strategy: [runs (one per seed)]}}``, in input order.

    Runs of one stream must list the same experiences, otherwise their matrices cannot be compared.
    """
    groups: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for run in runs:
        stream = run["stream"]["name"]
        by_strategy = groups.setdefault(stream, {})
        first = next(iter(by_strategy.values()), [run])[0]
        if first["stream"]["experiences"] != run["stream"]["experiences"]:
            raise ResultsError(
                f"stream {stream!r}: runs list different experiences "
                f"({first['stream']['experiences']} vs {run['stream']['experiences']})"
            )
        by_strategy.setdefault(run["strategy"], []).append(run)
    return groups
