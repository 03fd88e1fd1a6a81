"""results.json building/validation, atomic writes, the Markdown table and the PNG plots."""

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from cldf.atomic_io import write_json_atomic, write_text_atomic
from cldf.state_size import state_bytes
from cldf.report import (
    ResultsError,
    build_results,
    load_results,
    markdown_table,
    result_matrix,
    write_report,
    write_results,
)

EXPERIENCES = ["fake:gan_upsample", "fake:diffusion_sd", "fake:face_swap"]
COST = {
    "train_seconds": 12.5,
    "trainable_params": 410_000,
    "state_bytes": 2048,
    "peak_rss_mb": 900.0,
}


def _run(strategy: str, seed: int, auc: np.ndarray) -> dict:
    matrices = {"auc": auc, "acc": auc - 0.1, "eer": 1 - auc, "ap": auc, "attribution": auc / 2}
    return build_results(
        strategy=strategy,
        stream_name="toy",
        experiences=EXPERIENCES,
        matrices=matrices,
        cost=COST,
        config={"lr": 0.001},
        seed=seed,
    )


AUC_A = np.array([[0.9, 0.6, 0.5], [0.8, 0.95, 0.7], [0.7, 0.85, 0.9]])
AUC_B = np.array([[0.9, 0.6, 0.5], [0.85, 0.9, 0.6], [0.8, 0.9, 0.9]])


def test_build_results_has_required_shape_and_summaries(tmp_path):
    run = _run("naive", 0, AUC_A)
    assert run["metrics"]["avg_auc"] == pytest.approx(2.45 / 3)
    assert run["metrics"]["forgetting_auc"] == pytest.approx(0.15)
    assert run["metrics"]["bwt_auc"] == pytest.approx(-0.15)
    assert run["metrics"]["unseen_auc"] == pytest.approx(0.6)
    assert run["metrics"]["attribution_acc"] == pytest.approx(2.45 / 6)
    assert run["versions"]["cldf"] and run["versions"]["torch"]
    path = write_results(tmp_path / "run" / "results.json", run)
    assert load_results(path) == json.loads(path.read_text())


def test_nan_cells_round_trip_as_null(tmp_path):
    auc = AUC_A.copy()
    auc[0, 2] = np.nan
    path = write_results(tmp_path / "results.json", _run("naive", 0, auc))
    assert json.loads(path.read_text())["metrics"]["auc"][0][2] is None
    assert math.isnan(result_matrix(load_results(path), "auc")[0, 2])


def test_single_experience_summaries_are_null():
    run = build_results(
        strategy="naive", stream_name="one", experiences=["fake:a"],
        matrices={k: np.array([[0.7]]) for k in ("auc", "acc", "eer", "ap")},
        cost=COST, config={}, seed=1,
    )
    assert run["metrics"]["forgetting_auc"] is None and run["metrics"]["unseen_auc"] is None
    assert run["metrics"]["attribution_acc"] is None


def test_missing_keys_are_named(tmp_path):
    run = _run("naive", 0, AUC_A)
    del run["metrics"]["auc"]
    del run["cost"]["state_bytes"]
    with pytest.raises(ResultsError, match="missing key metrics.auc; missing key cost.state_bytes"):
        write_results(tmp_path / "results.json", run)
    assert not (tmp_path / "results.json").exists()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**_run("naive", 0, AUC_A), "seed": "zero"}))
    with pytest.raises(ResultsError, match=r"bad.json: seed must be int"):
        load_results(bad)


def test_matrix_shape_must_match_experiences():
    run = _run("naive", 0, AUC_A)
    run["metrics"]["eer"] = run["metrics"]["eer"][:2]
    with pytest.raises(ResultsError, match="metrics.eer must be 3 x 3"):
        write_results("/nonexistent/results.json", run)


def test_atomic_write_keeps_old_file_when_serialisation_fails(tmp_path):
    path = write_text_atomic(tmp_path / "state.json", '{"ok": 1}\n')
    with pytest.raises(ValueError, match="state.json.*None"):
        write_json_atomic(path, {"x": float("nan")})
    assert json.loads(path.read_text()) == {"ok": 1}
    write_json_atomic(path, {"ok": 2})
    assert json.loads(path.read_text()) == {"ok": 2}
    assert os.listdir(tmp_path) == ["state.json"]  # no temporary file left behind


def test_state_bytes_counts_tensors_and_arrays():
    import torch

    state = {"G": torch.zeros(4, 4), "protos": [np.zeros(3, dtype=np.float64)], "step": 3}
    assert state_bytes(state) == 4 * 4 * 4 + 3 * 8 + 8
    with pytest.raises(TypeError, match="cannot size a str"):
        state_bytes({"name": "x"})


def test_table_pools_seeds_as_mean_and_std():
    runs = [_run("naive", 0, AUC_A), _run("naive", 1, AUC_B), _run("cldf", 0, AUC_B)]
    table = markdown_table(runs)
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    rows = {line.split(" | ")[0].strip("| "): line for line in lines}
    assert set(rows) == {"Strategy", "naive", "cldf"}
    # avg AUC: naive seeds 2.45/3 and 2.6/3 -> mean 0.8417, sample std 0.05/sqrt(2) = 0.0354;
    # forgetting 0.15 and 0.05 -> 0.100 ± 0.071
    assert "| naive | 2 | 0.842 ± 0.035 | 0.100 ± 0.071 |" in rows["naive"]
    assert "| cldf | 1 | 0.867 |" in rows["cldf"]
    assert "| 410,000 | 2.0 KiB | 900 |" in rows["cldf"]
    assert "fake:gan_upsample → fake:diffusion_sd → fake:face_swap" in table


def _assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert min(image.size) >= 400


def test_report_from_two_results_files(tmp_path):
    paths = [
        write_results(tmp_path / "naive" / "results.json", _run("naive", 0, AUC_A)),
        write_results(tmp_path / "cldf" / "results.json", _run("cldf", 0, AUC_B)),
    ]
    report = write_report(paths, tmp_path / "report")
    text = report.read_text()
    assert "| naive | 1 |" in text and "| cldf | 1 |" in text
    pngs = sorted(p.name for p in report.parent.glob("*.png"))
    assert pngs == [
        "toy_auc_matrix_cldf.png",
        "toy_auc_matrix_naive.png",
        "toy_average_auc.png",
        "toy_forgetting.png",
    ]
    for name in pngs:
        assert f"]({name})" in text
        _assert_png(report.parent / name)
