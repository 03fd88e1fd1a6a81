"""Experiment loggers: what a run logs while it trains matches what it reports at the end."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from test_resume import RECIPE_SETS, STREAM_SETS, cli_args

from cldf.avalanche.loggers import LOGGERS, close_loggers, make_loggers
from cldf.cli import main
from cldf.config_io import ConfigError, apply_overrides
from cldf.recipes import load_recipe
from cldf.resources import EMBEDDED_STREAM
from cldf.run import run
from cldf.streams import build_stream, load_stream_spec

EXPERIENCES = ["gan_upsample", "self_blend", "local_warp"]


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """The cldf recipe through three experiences with every logger, in the prediction where all
    three methods act after every experience (routed: the fast learner trains each time)."""
    out = tmp_path_factory.mktemp("logged")
    stream = build_stream(load_stream_spec(EMBEDDED_STREAM, overrides=apply_overrides(
        {"experiences": EXPERIENCES}, STREAM_SETS)))
    recipe = load_recipe("cldf", [*RECIPE_SETS, "training.optimizer=sgd", "slow_fast.prediction=routed"])
    loggers = make_loggers(list(LOGGERS), out, "cldf-seed0", recipe.to_raw())
    try:
        results = run(recipe, stream, out_dir=out, progress=False, loggers=loggers)
    finally:
        close_loggers(loggers)
    with open(out / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return out, results, rows


def logged(rows: list[dict], metric: str) -> dict[int, float]:
    """``{training_exp: value}`` of one metric name."""
    return {int(r["training_exp"]): float(r["value"]) for r in rows if r["metric"] == metric}


def same(a: float, b: float | None) -> bool:
    return (b is None and math.isnan(a)) or (b is not None and a == pytest.approx(b, abs=1e-12))


def test_csv_rows_match_results_json(logged_run):
    _, results, rows = logged_run
    auc = results["metrics"]["auc"]
    eer = results["metrics"]["eer"]
    for j in range(len(EXPERIENCES)):
        by_row = logged(rows, f"AUC/eval_phase/test_stream/Exp{j:03d}")
        assert sorted(by_row) == list(range(len(EXPERIENCES)))  # every row of the R matrix
        for i, value in by_row.items():
            assert same(value, auc[i][j]), (i, j)
            assert same(logged(rows, f"EER/eval_phase/test_stream/Exp{j:03d}")[i], eer[i][j])
    seen = logged(rows, "AUCSeen/eval_phase/test_stream")
    for i in range(len(EXPERIENCES)):  # mean over the experiences trained so far, by hand
        assert seen[i] == pytest.approx(np.nanmean([auc[i][j] for j in range(i + 1)]))
    forgetting = logged(rows, "ForgettingAUC/eval_phase/test_stream")
    assert forgetting[len(EXPERIENCES) - 1] == pytest.approx(results["metrics"]["forgetting_auc"])


def test_method_signals_are_logged_per_experience(logged_run):
    _, results, rows = logged_run
    alpha = results["method_stats"]["EMABalancePlugin"]
    for k in range(len(EXPERIENCES)):
        for group, stats in alpha[str(k)].items():
            value = logged(rows, f"EMABalance/fallback_share/train_phase/Exp{k:03d}/{group}")[k]
            assert value == pytest.approx(stats["fallback_share"])
        dce = logged(rows, f"NAPAVQ/dce/train_phase/Exp{k:03d}")
        assert dce[k] > 0  # the distance cross-entropy of a trained batch is positive
    kd = [r for r in rows if r["metric"].startswith("NAPAVQ/kd/")]
    assert {int(r["training_exp"]) for r in kd} == {1, 2}  # distillation once a previous model exists
    votes = [(int(r["training_exp"]), float(r["value"])) for r in rows
             if r["metric"].startswith("SlowFast/fast_weight/eval_phase/test_stream")]
    assert len(votes) == len(EXPERIENCES) ** 2 and all(0.0 <= v <= 1.0 for _, v in votes)
    # the share of images routed to a fast expert: none exists after the first experience
    assert {v for i, v in votes if i == 0} == {0.0} and max(v for i, v in votes if i > 0) > 0.0


def test_text_tensorboard_and_wandb_files(logged_run):
    out, results, _ = logged_run
    text = (out / "logs" / "log.txt").read_text()
    assert f"AUC/eval_phase/test_stream/Exp002 = {results['metrics']['auc'][2][2]:.4f}" in text
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(out / "logs" / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("AUC/eval_phase/test_stream/Exp000")
    assert [s.value for s in scalars] == pytest.approx([row[0] for row in results["metrics"]["auc"]])
    runs = list((out / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0  # offline by default: nothing left the machine


def test_unknown_logger_is_refused_before_training(tmp_path, capsys):
    with pytest.raises(ConfigError, match="valid loggers are text, csv, tensorboard, wandb"):
        make_loggers(["csv", "mlflow"], tmp_path, "x", {})
    assert main(cli_args("naive", EXPERIENCES[:1], "--out", str(tmp_path / "run"), "--logger", "mlflow")) == 2
    assert "--logger 'mlflow'" in capsys.readouterr().err
    assert not (tmp_path / "run" / "results.json").exists()
