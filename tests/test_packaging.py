"""cldf works from a built wheel: recipes and streams ship as package data; a plain command
prints no third-party warning (only Avalanche's qpsolvers import warning is filtered)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cldf.cli import main
from cldf.recipes import RECIPES_DIR, available_recipes
from cldf.resources import STREAMS_DIR, shipped_streams, stream_path

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "--stream", "embedded", "--set", "detector.image_size=32", "--set", "training.epochs=1",
    "--stream-set", "image_size=32", "--stream-set", "n_per_class={train: 4, val: 2, test: 4}",
    "--stream-set", "experiences=[gan_upsample, reconstruction]", "--no-progress",
]


def _python(args: list[str], cwd: Path, pythonpath: Path | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONWARNINGS")}
    env["OMP_NUM_THREADS"] = "1"
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_checkout_paths_are_the_shipped_folders():
    assert (REPO / "strategies").resolve() == RECIPES_DIR.resolve()
    assert (REPO / "benchmarks" / "streams").resolve() == STREAMS_DIR.resolve()
    assert {"cldf", "naive"} <= set(available_recipes())
    assert {"embedded", "cddb_hard"} <= set(shipped_streams())
    assert stream_path("cddb_hard") == STREAMS_DIR / "cddb_hard.yaml"
    assert stream_path("benchmarks/streams/cddb_hard.yaml") == Path("benchmarks/streams/cddb_hard.yaml")


@pytest.mark.parametrize("stream, message", [
    ("cddb_hard", "no data root given.*--data DIR"),
    ("cddb_typo", "unknown stream 'cddb_typo'; shipped streams: .*cddb_hard.*embedded"),
])
def test_stream_by_shipped_name(stream, message, tmp_path, capsys):
    assert main(["run", "naive", "--stream", stream, "--out", str(tmp_path / "out")]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_wheel_runs_outside_the_checkout(tmp_path):
    pytest.importorskip("setuptools")
    src = tmp_path / "src"  # build from a copy: the build writes build/ and *.egg-info next to the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "cldf", src / "cldf", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    built = _python(["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                     "-w", str(tmp_path / "dist"), str(src)], cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("cldf-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(site)
    assert "cldf/resources/recipes/cldf.yaml" in names and "cldf/resources/streams/embedded.yaml" in names

    elsewhere = tmp_path / "elsewhere"  # not the checkout: only the unpacked wheel provides cldf
    elsewhere.mkdir()
    probe = _python(["-c", "import json, cldf, cldf.recipes as r; print(json.dumps({'file': cldf.__file__, "
                     "'recipes': r.available_recipes(), 'cldf': str(r.recipe_path('cldf')), "
                     "'naive': str(r.recipe_path('naive'))}))"], cwd=elsewhere, pythonpath=site)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert Path(found["file"]).is_relative_to(site)
    assert {"cldf", "naive"} <= set(found["recipes"])
    assert Path(found["cldf"]).is_relative_to(site) and Path(found["naive"]).is_relative_to(site)

    out = tmp_path / "run"
    run = _python(["-m", "cldf", "run", "naive", "--out", str(out), *TINY], cwd=elsewhere, pythonpath=site)
    assert run.returncode == 0, run.stderr
    assert "final average AUC" in run.stdout
    assert json.loads((out / "results.json").read_text())["stream"]["experiences"] == ["gan_upsample", "reconstruction"]
    assert "Warning" not in run.stderr, run.stderr  # a plain command prints no third-party warning


def test_only_the_qpsolvers_warning_is_filtered(tmp_path):
    bare = _python(["-W", "default", "-c", "import qpsolvers"], cwd=tmp_path)
    if "no QP solver found" not in bare.stderr:
        pytest.skip("qpsolvers finds a QP solver here: it does not warn")
    code = ("import warnings, cldf.avalanche.build\n"
            "warnings.warn('probe', UserWarning)\n"
            "warnings.warn_explicit('another qpsolvers warning', UserWarning, 'x.py', 1, module='qpsolvers.solvers')\n")
    proc = _python(["-W", "default", "-c", code], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "no QP solver found" not in proc.stderr
    assert "UserWarning: probe" in proc.stderr and "UserWarning: another qpsolvers warning" in proc.stderr
