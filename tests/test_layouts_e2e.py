"""End to end through the CLI on real-photo trees of every data layout, per-generator real classes.

Each tree holds three generators, each with its own real images (so the class map has three
real classes, and after the first experience two of them are classes no head has grown to).
Every shipped recipe trains through every layout; results.json validates; ``cldf predict``
reproduces, on the first and the last checkpoint, the AUC the run reported; ``--resume`` from
the first checkpoint ends with the same R matrix as the uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from cldf.run.checkpoint import load_checkpoint
from cldf.cli import main
from cldf.predict import load_trained
from cldf.recipes import available_recipes
from cldf.resources import shipped_streams, stream_path
from cldf.report.results import load_results
from cldf.scores import fake_log_odds_from_logits
from cldf.streams import build_stream, load_stream_spec, parse_stream_spec

from photo_trees import make_cddb, make_csv, make_deepfakebench, make_folders

GENERATORS = ["gaugan", "biggan", "cyclegan"]
TINY = ["--set", "detector.image_size=32", "--set", "training.epochs=1", "--set", "training.batch_size=6",
        "--no-progress"]
TREES = {
    "cddb": ("cddb", lambda root: make_cddb(root, GENERATORS, splits=("train", "val", "test"))),
    "cddb_objects": ("cddb", lambda root: make_cddb(root, GENERATORS, objects={"cyclegan": ["horse", "zebra"]})),
    "folders": ("folders", lambda root: make_folders(root, GENERATORS)),
    "deepfakebench": ("deepfakebench", lambda root: make_deepfakebench(
        root, {f"{g}.json": (None, [f"{g}_fake"]) for g in GENERATORS})),
    "csv": ("csv", lambda root: make_csv(root, GENERATORS)),
}


def cli(*argv: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main([str(a) for a in argv])
    assert code == 0, out.getvalue()
    return out.getvalue()


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("trees")
    return {name: build(base / name) for name, (_, build) in TREES.items()}


def data_args(tree: str, trees: dict[str, Path]) -> list[str]:
    return ["--data", trees[tree], "--layout", TREES[tree][0], "--order", ",".join(GENERATORS)]


def test_real_photo_trees_have_one_real_class_per_generator(trees):
    stream = build_stream(parse_stream_spec(
        {"name": "cddb", "layout": "cddb", "root": str(trees["cddb"]), "experiences": GENERATORS}, source="test"))
    assert stream.class_map.real_classes == [0, 2, 4]
    assert stream.class_map.names[1::2] == tuple(f"fake:{g}" for g in GENERATORS)


def predicted_auc(checkpoint: Path, tree: Path, experience: int) -> float:
    """AUC of ``cldf predict``'s scores on the test images of one CDDB experience."""
    trained = load_trained(checkpoint)
    folder = tree / GENERATORS[experience] / "test"
    files = sorted(folder.rglob("*.png"))
    labels = [int(f.parent.name == "1_fake") for f in files]
    batch = torch.stack([trained.detector.preprocess(_open(f)) for f in files])
    logits = trained.logits(batch)
    log_odds = fake_log_odds_from_logits(logits, trained.real_classes, len(trained.class_names),
                                         trained.learned_classes)
    return float(roc_auc_score(labels, log_odds.numpy()))


def _open(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


@pytest.mark.parametrize("recipe", available_recipes())
def test_every_recipe_runs_on_per_generator_real_classes(recipe, trees, tmp_path):
    run = tmp_path / recipe
    printed = cli("run", recipe, *data_args("cddb", trees), *TINY, "--out", run, "--logger", "csv")
    assert "final average AUC" in printed
    results = load_results(run / "results.json")
    auc = np.array(results["metrics"]["auc"], dtype=float)
    assert auc.shape == (3, 3) and np.isfinite(auc).all()
    with open(run / "logs" / "metrics.csv", newline="") as f:  # what a user watched while it trained
        logged = {(int(r["training_exp"]), r["metric"]): float(r["value"]) for r in csv.DictReader(f)}
    assert all(logged[(i, f"AUC/eval_phase/test_stream/Exp{j:03d}")] == pytest.approx(auc[i, j], abs=1e-12)
               for i in range(3) for j in range(3))
    checkpoints = run / "checkpoints"
    # prediction from a checkpoint gives the scores the run evaluated (heads grown to 2 of 6 classes
    # after the first experience, to all 6 after the last)
    assert predicted_auc(checkpoints / "exp_000", trees["cddb"], 0) == pytest.approx(auc[0, 0], abs=1e-9)
    assert predicted_auc(checkpoints / "exp_002", trees["cddb"], 1) == pytest.approx(auc[2, 1], abs=1e-9)
    if recipe == "frozen":  # no gradient step: every adapter still at its identity initialisation
        tensors, _ = load_checkpoint(checkpoints / "exp_002")
        lora_b = [t for name, t in tensors.items() if "lora_B" in name]
        assert lora_b and all(not t.any() for t in lora_b)


# each other layout once, the recipes with their own checkpointed state shared among them (every
# recipe already runs on the cddb tree above)
LAYOUT_RECIPES = {"folders": "cldf", "csv": "napa_vq", "deepfakebench": "naive", "cddb_objects": "cldf"}


@pytest.mark.parametrize("tree, recipe", LAYOUT_RECIPES.items())
def test_layouts_run_predict_and_resume(tree, recipe, trees, tmp_path):
    run = tmp_path / "run"
    cli("run", recipe, *data_args(tree, trees), *TINY, "--out", run)
    full = load_results(run / "results.json")
    assert np.isfinite(np.array(full["metrics"]["auc"], dtype=float)).all()
    for checkpoint in ("exp_000", "exp_002"):
        rows = list(csv.DictReader(io.StringIO(cli("predict", run / "checkpoints" / checkpoint, trees[tree]))))
        assert rows and all(0.0 <= float(r["p_fake"]) <= 1.0 for r in rows)
        learned = {n for n in json.loads((run / "checkpoints" / checkpoint / "manifest.json").read_text())["class_names"]}
        assert {r["attribution"] for r in rows} <= learned
    resumed = tmp_path / "resumed"
    cli("run", recipe, *data_args(tree, trees), *TINY, "--resume", run / "checkpoints" / "exp_000",
        "--out", resumed)
    assert load_results(resumed / "results.json")["metrics"]["auc"] == full["metrics"]["auc"]


OBJECT_FOLDERS = {g: ["a", "b"] for g in ("cyclegan", "glow", "stargan_gf", "stylegan")}  # as in CDDB


def shipped_tree(name: str, root: Path) -> Path:
    """A tree with exactly the folder and manifest names that a shipped stream YAML reads."""
    spec = load_stream_spec(stream_path(name), data_root=root)
    if spec.layout == "cddb":
        generators = [g for exp in spec.experiences for g in exp.generators]
        return make_cddb(root, generators, objects=OBJECT_FOLDERS)
    manifests = {exp.options["manifest"]: (exp.options["dataset"], [f"{exp.name}_Fake"]) for exp in spec.experiences}
    return make_deepfakebench(root, manifests, json_dir=spec.options["json_dir"],
                              compression=spec.options["compression"])


@pytest.mark.parametrize("name", [s for s in shipped_streams() if s != "embedded"])
def test_every_shipped_stream_runs_on_a_tree_with_its_names(name, tmp_path):
    root = shipped_tree(name, tmp_path / "data")
    spec = load_stream_spec(stream_path(name), data_root=root)
    cli("run", "naive", "--stream", name, "--data", root, *TINY, "--out", tmp_path / "run")
    results = load_results(tmp_path / "run" / "results.json")
    assert results["stream"]["experiences"] == [exp.name for exp in spec.experiences]
    assert np.isfinite(np.array(results["metrics"]["auc"], dtype=float)).all()


def test_every_other_layout_runs_end_to_end():
    assert set(LAYOUT_RECIPES) == set(TREES) - {"cddb"}
