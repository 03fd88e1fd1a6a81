"""The ``cldf`` command line: clear errors before any training, run -> predict -> report."""

from __future__ import annotations

import csv
import io
import json
import re
from contextlib import redirect_stdout

import numpy as np
import pytest
from PIL import Image

from cldf.cli import main

TINY = [
    "--set", "detector.image_size=32", "--set", "training.epochs=1",
    "--stream-set", "image_size=32", "--stream-set", "n_per_class={train: 8, val: 4, test: 8}",
    "--stream-set", "experiences=[gan_upsample, reconstruction]", "--no-progress",
]


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


@pytest.mark.parametrize("argv, message", [
    (["run", "naive", "--set", "training.epochs_typo=2"], "training: unknown key.*epochs_typo.*allowed: batch_size"),
    (["run", "nonexistent"], "unknown recipe 'nonexistent'; shipped recipes: .*naive"),
    (["run", "safe", "--set", "training.optimizer=adam"], "training.optimizer=.adam.; valid: adamw, sgd"),
    (["run", "naive", "--layout", "folders", "--data", "/nonexistent/data"], "data root /nonexistent/data does not exist"),
    (["run", "naive", "--stream", "benchmarks/streams/cddb_hard.yaml"], "no data root given.*--data DIR.*CLDF_DATA_ROOT"),
])
def test_bad_input_fails_before_training(argv, message, tmp_path, capsys):
    code = main([*argv, "--out", str(tmp_path / "out")])
    assert code == 2
    assert re.search(message, capsys.readouterr().err)


def test_order_naming_a_missing_generator_is_refused(tmp_path, capsys):
    for generator in ("gan", "swap"):
        (tmp_path / "data" / generator / "real").mkdir(parents=True)
    code = main(["run", "naive", "--data", str(tmp_path / "data"), "--layout", "folders",
                 "--order", "gan,diffusion", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "diffusion not found under" in capsys.readouterr().err


def test_unwritable_output_folder_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["run", "naive", "--out", str(blocker / "out"), *TINY]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_run_then_predict_then_report(tmp_path):
    run_dir = tmp_path / "naive"
    code, printed = _cli("run", "naive", "--out", str(run_dir), *TINY)
    assert code == 0 and "final average AUC" in printed
    results = json.loads((run_dir / "results.json").read_text())
    assert results["stream"]["experiences"] == ["gan_upsample", "reconstruction"]
    assert len(results["metrics"]["auc"]) == 2 and (run_dir / "report.md").is_file()

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / "a.png")
    (images / "broken.jpg").write_bytes(b"not an image")
    code, printed = _cli("predict", str(run_dir), str(images))
    rows = {row["path"].rsplit("/", 1)[-1]: row for row in csv.DictReader(io.StringIO(printed))}
    assert code == 0 and set(rows) == {"a.png", "broken.jpg"}
    assert 0.0 <= float(rows["a.png"]["p_fake"]) <= 1.0
    assert rows["a.png"]["attribution"] in {"real:photos", "fake:gan_upsample", "fake:reconstruction"}
    assert rows["broken.jpg"]["error"] and not rows["broken.jpg"]["p_fake"]

    code, printed = _cli("report", str(run_dir), str(run_dir / "results.json"), "--out", str(tmp_path / "cmp"))
    assert code == 0 and "| naive | 2 |" in printed
    assert (tmp_path / "cmp" / "embedded_average_auc.png").read_bytes()[:4] == b"\x89PNG"
