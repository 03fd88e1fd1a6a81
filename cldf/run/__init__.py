"""The run machinery: training a recipe through a stream (:func:`run`), checkpoints, resumption,
cost accounting, progress and the non-finite-loss guard."""

from cldf.run.runner import run

__all__ = ["run"]
