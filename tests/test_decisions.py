"""Decisions: calibrated p_fake, a threshold at a target false-positive rate, a novelty alarm."""

from __future__ import annotations

import csv
import io
import json
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch

from cldf.cli import main
from cldf.metrics.calibration import (
    Calibration, decision_rates, expected_calibration_error, fit_calibration, novelty_scores)

def test_expected_calibration_error_by_hand():
    p = np.array([0.05, 0.15, 0.85, 0.95])
    y = np.array([0, 1, 1, 1])
    # bins [0, .1): p .05, share 0 -> gap .05; [.1, .2): .15 vs 1 -> .85; [.8, .9): .85 vs 1 -> .15;
    # [.9, 1]: .95 vs 1 -> .05; each bin one of four samples
    assert expected_calibration_error(p, y) == pytest.approx((0.05 + 0.85 + 0.15 + 0.05) / 4)

def over_confident_scores(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Detector log-odds four times too confident: the truth is sigmoid(z / 4 + 0.5)."""
    z = rng.normal(0.0, 6.0, n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(z / 4 + 0.5)))).astype(int)
    return z, y

def test_calibration_lowers_the_error_on_a_held_out_split_and_meets_the_target_fpr():
    rng = np.random.default_rng(0)
    z_fit, y_fit = over_confident_scores(2000, rng)
    z_test, y_test = over_confident_scores(2000, rng)
    calibration = fit_calibration(z_fit, y_fit, target_fpr=0.05)
    raw_ece = expected_calibration_error(Calibration().p_fake(z_test), y_test)
    calibrated_ece = expected_calibration_error(calibration.p_fake(z_test), y_test)
    assert raw_ece > 0.1 and calibrated_ece < raw_ece / 3
    assert calibration.slope == pytest.approx(0.25, abs=0.05)
    fitted = decision_rates(calibration.decide(calibration.p_fake(z_fit)), y_fit)
    held_out = decision_rates(calibration.decide(calibration.p_fake(z_test)), y_test)
    assert fitted["fpr"] <= 0.05 and held_out["fpr"] == pytest.approx(0.05, abs=0.02)
    assert held_out["tpr"] > 0.3

def test_calibration_never_inverts_the_ranking_it_is_fitted_on():
    # six validation images on which the detector ranks fakes below reals (as on a tiny split)
    z = np.array([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0])
    y = np.array([1, 1, 0, 1, 0, 0])
    calibration = fit_calibration(z, y, target_fpr=0.05)
    assert (calibration.slope, calibration.intercept) == (1.0, 0.0)
    scores = np.linspace(-3, 3, 7)
    assert np.all(np.diff(calibration.p_fake(scores)) > 0)
    assert calibration.threshold > calibration.p_fake(np.array([2.0]))[0]  # no real called fake

def test_novelty_is_the_free_energy_of_the_learned_classes():
    logits = torch.tensor([[3.0, 0.0, 9.0], [-2.0, -3.0, 9.0]])
    expected = -torch.logsumexp(logits[:, :2], dim=1).numpy()
    assert novelty_scores(logits, learned_classes=[0, 1]) == pytest.approx(expected)
    assert novelty_scores(logits, [0, 1])[1] > novelty_scores(logits, [0, 1])[0]

def test_a_run_flags_an_unlike_generator_and_predict_decides_at_its_threshold(tmp_path):
    # self_blend then noise_splice: a blending boundary, then a noise-level mismatch
    args = ["run", "cldf", "--no-progress", "--out", str(tmp_path / "run"),
            "--set", "detector.image_size=64", "--set", "training.epochs=1", "--stream-set", "image_size=64",
            "--stream-set", "n_per_class={train: 48, val: 24, test: 24}",
            "--stream-set", "experiences=[self_blend, noise_splice]"]
    with redirect_stdout(io.StringIO()):
        assert main(args) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    metrics = results["metrics"]
    assert metrics["novelty_auc"][0][1] >= 0.62  # 0.716 on this machine
    assert metrics["avg_novelty_auc"] == metrics["novelty_auc"][0][1]
    assert set(results["calibration"]["per_experience"]) == {"self_blend", "noise_splice"}
    assert all(0.0 <= v <= 1.0 for row in metrics["fpr"] for v in row)
    threshold = results["calibration"]["per_experience"]["noise_splice"]["threshold"]

    images = tmp_path / "images"
    images.mkdir()
    from cldf.streams.embedded import embedded_split
    for k, (image, _) in enumerate(embedded_split("noise_splice", "test", 4, image_size=64)):
        image.save(images / f"{k}.png")
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["predict", str(tmp_path / "run"), str(images)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == 8
    for row in rows:
        assert row["decision"] == ("fake" if float(row["p_fake"]) >= threshold else "real")
        assert row["novel"] in {"True", "False"} and float(row["novelty"]) == float(row["novelty"])
