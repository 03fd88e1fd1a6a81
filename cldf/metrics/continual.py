"""Continual-learning summaries of result matrices (algorithms.md section 4).

``R[i, j]`` is a metric on experience j's test set after training on experience i (0-based),
for every j, including j > i (generators not yet trained on). NaN marks a cell that was not
evaluated (or whose metric is undefined); summaries skip NaN cells and return NaN when nothing
is left to average. With ``L = T - 1`` the last training experience:

- average after i: mean_{j <= i} R[i, j]; final average: mean_j R[L, j] (the whole last row);
- forgetting after k: mean_{j < k} (max_{j <= i < k} R[i, j] - R[k, j]); the maximum runs over
  the rows after j was trained on, so a drop from a better *unseen* score (i < j) is not counted
  as forgetting; final forgetting is the value at k = L;
- backward transfer: mean_{j < L} (R[L, j] - R[j, j]);
- unseen average: mean of R[i, j] over all j > i.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _square(matrix: np.ndarray | list) -> np.ndarray:
    r = np.asarray(matrix, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] == 0:
        raise ValueError(
            f"result matrix must be square (train experiences x test experiences), got {r.shape}"
        )
    return r


def matrices_from_cells(
    cells: Mapping[tuple[int, int], Mapping[str, float]], num_experiences: int
) -> dict[str, np.ndarray]:
    """Assemble per-metric ``T x T`` matrices from ``{(train_exp, test_exp): {metric: value}}``.

    Cells that are absent stay NaN. :func:`cldf.metrics.prediction_metrics` (from logits) or
    :func:`cldf.metrics.detection_summary` (from scores) produce the per-cell dictionaries.
    """
    names = sorted({name for values in cells.values() for name in values})
    out = {name: np.full((num_experiences, num_experiences), np.nan) for name in names}
    for (i, j), values in cells.items():
        if not (0 <= i < num_experiences and 0 <= j < num_experiences):
            raise ValueError(
                f"cell (train {i}, test {j}) is outside a stream of {num_experiences} experiences"
            )
        for name, value in values.items():
            out[name][i, j] = value
    return out


def average_after_each(matrix: np.ndarray | list) -> np.ndarray:
    """mean_{j <= i} R[i, j] for every training experience i (the seen experiences)."""
    r = _square(matrix)
    return np.array([_nanmean(r[i, : i + 1]) for i in range(r.shape[0])])


def final_average(matrix: np.ndarray | list) -> float:
    """Mean of the last row over all experiences."""
    return _nanmean(_square(matrix)[-1])


def forgetting_after_each(matrix: np.ndarray | list) -> np.ndarray:
    """Forgetting after each training experience k (NaN for k = 0: nothing learnt before)."""
    r = _square(matrix)
    out = np.full(r.shape[0], np.nan)
    for k in range(1, r.shape[0]):
        drops = [np.nanmax(r[j:k, j]) - r[k, j] for j in range(k) if not np.isnan(r[j:k, j]).all()]
        out[k] = _nanmean(np.array(drops, dtype=np.float64))
    return out


def forgetting(matrix: np.ndarray | list) -> float:
    """Mean over j < L of max_{j <= i < L} R[i, j] - R[L, j]; NaN for a single experience."""
    return float(forgetting_after_each(matrix)[-1])


def backward_transfer(matrix: np.ndarray | list) -> float:
    """mean_{j < L} (R[L, j] - R[j, j]); NaN for a single experience."""
    r = _square(matrix)
    last = r.shape[0] - 1
    return _nanmean(r[last, :last] - np.diag(r)[:last])


def unseen_average(matrix: np.ndarray | list) -> float:
    """Mean of R[i, j] over j > i (detection of generators not yet trained on)."""
    r = _square(matrix)
    return _nanmean(r[np.triu_indices(r.shape[0], k=1)])


def continual_summary(matrix: np.ndarray | list) -> dict[str, float | list[float]]:
    """Every summary of one matrix, keyed ``average, forgetting, bwt, unseen, average_after,
    forgetting_after``."""
    return {
        "average": final_average(matrix),
        "forgetting": forgetting(matrix),
        "bwt": backward_transfer(matrix),
        "unseen": unseen_average(matrix),
        "average_after": average_after_each(matrix).tolist(),
        "forgetting_after": forgetting_after_each(matrix).tolist(),
    }
