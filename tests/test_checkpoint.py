"""Checkpoint faults and bad input: non-finite losses, checkpoints made for another setup,
truncated or altered files, failed writes; and the state pieces a checkpoint holds."""

import errno
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin
from PIL import Image
from test_resume import EXPERIENCES, RECIPE_SETS, STREAM_SETS, cli_args, results

from cldf.run.checkpoint import (
    CheckpointError, check_compatible, checkpoint_dir, latest_checkpoint, load_checkpoint, save_checkpoint)
from cldf.cli import EMBEDDED_STREAM, main
from cldf.config_io import apply_overrides
from cldf.detector import Detector
from cldf.run.faults import NonFiniteLossError
from cldf.metrics.avalanche_metrics import DetectionPluginMetric
from cldf.predict import load_trained, predict_files
from cldf.recipes import load_recipe, parse_recipe
from cldf.run.state import check_resumable, restore_model, load_optimizer_state, optimizer_tensors, rng_state, set_rng_state
from cldf.run.runner import resume_point, run, run_setup
from cldf.avalanche.build import build_strategy, model_for
from cldf.streams import build_stream, load_stream_spec

TWO = EXPERIENCES[:2]


def tiny(recipe_name: str, *sets: str):
    """(recipe, stream) of :func:`test_resume.cli_args`, for the Python API."""
    stream_sets = STREAM_SETS + [f"experiences=[{','.join(TWO)}]"]
    stream = build_stream(load_stream_spec(EMBEDDED_STREAM, overrides=apply_overrides({}, stream_sets)))
    return load_recipe(recipe_name, RECIPE_SETS + list(sets)), stream


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A naive run over two experiences, with its checkpoints exp_000 and exp_001."""
    out = tmp_path_factory.mktemp("finished")
    assert main(cli_args("naive", TWO, "--out", str(out))) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def assert_loads(checkpoint: Path) -> None:
    """The checkpoint verifies and restores a detector that scores an image."""
    load_checkpoint(checkpoint)
    trained = load_trained(checkpoint)
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "x.png"
        Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
        (row,) = predict_files(trained, [image])
    assert row["error"] is None and 0.0 <= row["p_fake"] <= 1.0


class NaNTerm(SupervisedPlugin):
    """A method whose loss term turns NaN at chosen (experience, iteration) steps."""

    def __init__(self, steps: set[tuple[int, int]]) -> None:
        super().__init__()
        self.steps = steps

    def before_backward(self, strategy, **kwargs):
        if (strategy.clock.train_exp_counter, strategy.clock.train_epoch_iterations) in self.steps:
            strategy.loss = strategy.loss + float("nan")


# ----------------------------------------------------------------------------- non-finite losses
def test_nan_loss_stops_naming_the_step_and_terms_and_keeps_the_last_checkpoint(tmp_path):
    recipe, stream = tiny("naive")
    with pytest.raises(NonFiniteLossError) as caught:
        run(recipe, stream, out_dir=tmp_path, progress=False, plugins=[NaNTerm({(1, 2)})], echo=lambda s: None)
    message = str(caught.value)
    print(message)
    # 16 training images in batches of 2: experience 1 took steps 1-8, so the third batch of 2 is step 11
    assert "experience 2/2 (self_blend), epoch 1, iteration 3 (training step 11 of the run)" in message
    assert "total loss=nan" in message and "plug-ins adding loss terms: NaNTerm" in message
    criterion = float(message.split("(CrossEntropyLoss)=")[1].split(",")[0])
    assert 0.0 < criterion < 10.0  # the cross-entropy itself was finite: the method term was not
    assert "samples with non-finite logits: 0/2" in message
    assert latest_checkpoint(tmp_path).name == "exp_000" and not checkpoint_dir(tmp_path, 1).exists()
    assert_loads(latest_checkpoint(tmp_path))


def test_diverging_training_is_stopped_by_the_command_with_its_step(tmp_path, capsys):
    assert main(cli_args("naive", TWO, "--set=training.lr=1.0e+30", "--out", str(tmp_path))) == 1
    err = capsys.readouterr().err
    print(err)
    assert "non-finite loss at experience 1/2 (gan_upsample), epoch 1, iteration" in err
    assert "samples with non-finite logits: 2/2" in err and "no checkpoint yet" in err


def test_skip_policy_drops_nonfinite_batches_counts_them_and_leaves_weights_alone(tmp_path):
    recipe, stream = tiny("naive", "training.on_nonfinite_loss=skip")
    every_step_of_exp_2 = {(1, i) for i in range(8)}
    with pytest.warns(RuntimeWarning, match="skipped a batch: non-finite loss at experience 2/2"):
        out = run(recipe, stream, out_dir=tmp_path, progress=False, plugins=[NaNTerm(every_step_of_exp_2)],
                  echo=lambda s: None)
    assert out["nonfinite_loss"] == {"policy": "skip", "skipped_batches": {"gan_upsample": 0, "self_blend": 8}}
    assert results(tmp_path)["nonfinite_loss"]["skipped_batches"]["self_blend"] == 8
    before, _ = load_checkpoint(checkpoint_dir(tmp_path, 0))
    after, _ = load_checkpoint(checkpoint_dir(tmp_path, 1))
    lora = [k for k in before if ".lora_" in k]
    assert lora and all(torch.equal(before[k], after[k]) for k in lora)
    assert all(torch.isfinite(after[k]).all() for k in after if k.startswith("model."))


# ----------------------------------------------------------------------------- damaged or foreign checkpoints
def test_checkpoint_for_another_backbone_class_map_and_recipe_is_refused_listing_the_differences(finished_run, tmp_path, capsys):
    r = load_recipe("naive", RECIPE_SETS).detector.adapter.r
    args = cli_args("naive", ["self_blend", "gan_upsample"], "--set=detector.backbone=tf_efficientnet_lite1",
                    f"--set=detector.adapter.r={r + 1}", "--out", str(tmp_path), "--resume", str(finished_run))
    assert main(args) == 1
    err = capsys.readouterr().err
    print(err)
    assert "exp_001 was made for another setup" in err
    assert "recipe.detector.backbone: checkpoint 'tf_efficientnet_lite0' vs now 'tf_efficientnet_lite1'" in err
    assert f"recipe.detector.adapter.r: checkpoint {r} vs now {r + 1}" in err
    assert "class_names: checkpoint ['real:photos', 'fake:gan_upsample', 'fake:self_blend'] vs now " \
           "['real:photos', 'fake:self_blend', 'fake:gan_upsample']" in err
    assert "stream.experiences" in err and "recipe.training" not in err
    assert not (tmp_path / "checkpoints").exists()
    assert_loads(latest_checkpoint(finished_run))


def test_truncated_checkpoint_is_refused_and_the_earlier_one_still_loads(run_copy, tmp_path, capsys):
    state = checkpoint_dir(run_copy, 1) / "state.safetensors"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    assert main(cli_args("naive", TWO, "--resume", str(run_copy))) == 1
    err = capsys.readouterr().err
    print(err)
    assert f"{state} does not match the checksum in its manifest: truncated or modified; refusing it" in err
    assert f"earlier checkpoints you can resume from: {checkpoint_dir(run_copy, 0)}" in err
    assert_loads(checkpoint_dir(run_copy, 0))


def test_altered_byte_fails_the_checksum_for_resume_and_predict(run_copy, capsys):
    state = checkpoint_dir(run_copy, 1) / "state.safetensors"
    data = bytearray(state.read_bytes())
    data[-100] ^= 0x01  # one bit of one weight; the file still parses as safetensors
    state.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        load_checkpoint(checkpoint_dir(run_copy, 1))
    image = run_copy / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    assert main(["predict", str(run_copy), str(image)]) == 1
    assert "does not match the checksum in its manifest" in capsys.readouterr().err
    assert_loads(checkpoint_dir(run_copy, 0))


# ----------------------------------------------------------------------------- failed writes
def fail_writes(monkeypatch, folder: str, file: str, code: int) -> None:
    """Make creating ``folder/file`` fail as a full disk (ENOSPC) or an unwritable folder (EACCES) would."""
    real = tempfile.mkstemp

    def mkstemp(suffix=None, prefix=None, dir=None, text=False):
        if Path(dir).name == folder and prefix == f".{file}.":
            raise OSError(code, os.strerror(code), str(Path(dir) / file))
        return real(suffix, prefix, dir, text)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("folder,file,code", [
    ("exp_002", "state.safetensors", errno.ENOSPC),
    ("exp_002", "manifest.json", errno.ENOSPC),
    ("checkpoints", "latest.json", errno.EACCES),
])
def test_failed_checkpoint_write_keeps_the_previous_checkpoint(run_copy, monkeypatch, folder, file, code):
    tensors, manifest = load_checkpoint(checkpoint_dir(run_copy, 1))
    fail_writes(monkeypatch, folder, file, code)
    with pytest.raises(CheckpointError) as caught:
        save_checkpoint(checkpoint_dir(run_copy, 2), tensors, manifest)
    print(caught.value)
    assert f"could not write checkpoint {checkpoint_dir(run_copy, 2)} ({os.strerror(code)}); " \
           "the previous checkpoint, if any, is intact" in str(caught.value)
    assert latest_checkpoint(run_copy) == checkpoint_dir(run_copy, 1)
    assert not list(run_copy.rglob("*.tmp"))
    assert_loads(latest_checkpoint(run_copy))


def test_unwritable_checkpoint_folder_during_a_run_stops_it_and_says_what_is_kept(tmp_path, monkeypatch, capsys):
    fail_writes(monkeypatch, "exp_001", "state.safetensors", errno.EACCES)
    assert main(cli_args("naive", TWO, "--out", str(tmp_path))) == 1
    err = capsys.readouterr().err
    assert f"could not write checkpoint {checkpoint_dir(tmp_path, 1)} (Permission denied); the previous checkpoint" in err
    assert latest_checkpoint(tmp_path) == checkpoint_dir(tmp_path, 0)
    assert_loads(checkpoint_dir(tmp_path, 0))


# ----------------------------------------------------------------------------- state pieces
def test_strategies_with_uncheckpointed_state_are_refused_for_resume():
    for name, blocker in [("lwf", "lwf"), ("ewc", "ewc"), ("replay", "replay"), ("joint", "joint")]:
        with pytest.raises(CheckpointError, match=f"cannot resume: {blocker} "):
            check_resumable(load_recipe(name, RECIPE_SETS))
    with pytest.raises(CheckpointError, match="cannot resume: ema_balance "):
        check_resumable(load_recipe("ema", [*RECIPE_SETS, "ema_balance.end_of_experience=shadow_eval"]))
    for name in ("naive", "cldf", "napa_vq", "ema"):
        check_resumable(load_recipe(name, RECIPE_SETS))


def test_metric_cells_round_trip_including_undefined_values():
    metric = DetectionPluginMetric(real_classes=[0])
    metric._seen_classes = {0, 1, 2}
    metric._cells = {(0, 0): {"auc": 0.75, "attribution": float("nan")}, (1, 0): {"auc": 0.5, "attribution": 0.25}}
    restored = DetectionPluginMetric(real_classes=[0])
    restored.load_state_dict(metric.state_dict())
    assert restored.seen_classes == [0, 1, 2]
    for name in ("auc", "attribution"):
        np.testing.assert_array_equal(restored.matrix(name, 2), metric.matrix(name, 2))
    assert restored.matrix("auc", 2)[1, 0] == 0.5 and np.isnan(restored.matrix("attribution", 2)[0, 0])


def test_rng_states_round_trip():
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    np.random.normal()  # leaves a cached Gaussian in NumPy's state
    tensors, info = rng_state()
    json.dumps(info)  # the non-tensor part is plain JSON
    first = (torch.rand(4), np.random.normal(size=3), random.random())
    set_rng_state(tensors, info)
    again = (torch.rand(4), np.random.normal(size=3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_optimizer_state_follows_parameter_names_and_restarts_for_a_grown_layer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(5, 4)).square().sum().backward()
        optimizer.step()
    saved = optimizer_tensors(optimizer, model)
    assert set(saved) == {f"{p}.{f}" for p in ("0.weight", "0.bias", "1.weight", "1.bias")
                          for f in ("step", "exp_avg", "exp_avg_sq")}
    grown = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 5))  # the head gained classes
    fresh = torch.optim.AdamW(reversed(list(grown.parameters())), lr=0.1)  # another parameter order
    load_optimizer_state(fresh, grown, saved)
    state = {name: fresh.state.get(p, {}) for name, p in grown.named_parameters()}
    assert torch.equal(state["0.weight"]["exp_avg_sq"], saved["0.weight.exp_avg_sq"])
    assert float(state["0.bias"]["step"]) == 3.0
    assert state["1.weight"] == {} and state["1.bias"] == {}


def test_compatibility_check_compares_nested_settings_and_skips_free_ones(tmp_path):
    stored = {"recipe": {"detector": {"backbone": "a", "image_size": 32}, "description": "x"}, "seed": 0}
    check_compatible(stored, {"recipe": {"detector": {"backbone": "a", "image_size": 32}, "description": "y"}, "seed": 0},
                     tmp_path, ignore=["recipe.description"])
    with pytest.raises(CheckpointError) as caught:
        check_compatible(stored, {"recipe": {"detector": {"backbone": "b", "image_size": (32,)}}, "seed": 1}, tmp_path)
    lines = str(caught.value).splitlines()[1:]
    assert [line.strip() for line in lines] == [
        "recipe.description: checkpoint 'x' vs now '<absent>'",
        "recipe.detector.backbone: checkpoint 'a' vs now 'b'",
        "recipe.detector.image_size: checkpoint 32 vs now [32]",
        "seed: checkpoint 0 vs now 1",
    ]


def test_a_checkpoint_stored_before_the_head_settings_existed_loads_as_it_was_trained(tmp_path):
    # a safe run with the heads of before: ridge over pooled features, merged prediction
    old = ["slow_fast.analytic_head=ridge", "slow_fast.analytic_input=pooled", "slow_fast.prediction=merged",
           "slow_fast.projection_dim=64"]
    args = cli_args("safe", TWO, "--out", str(tmp_path / "run"), *[f"--set={s}" for s in old])
    assert main(args) == 0
    checkpoint = latest_checkpoint(tmp_path / "run")
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "x.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(image)
        (before,) = predict_files(load_trained(checkpoint), [image])
        # the manifest as an earlier cldf wrote it: without the settings added since
        manifest_path = checkpoint / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        for key in ("analytic_head", "analytic_input", "prediction", "shrinkage", "drift_compensation"):
            del manifest["recipe"]["slow_fast"][key]
        manifest_path.write_text(json.dumps(manifest))
        (after,) = predict_files(load_trained(checkpoint), [image])
    assert after["p_fake"] == pytest.approx(before["p_fake"], abs=1e-6)
    assert after["attribution"] == before["attribution"]
    # today's defaults (discriminant heads) would not fit its tensors
    recipe = parse_recipe(manifest["recipe"], "stored")
    with pytest.raises(CheckpointError, match="do not fit"):
        restore_model(model_for(recipe, Detector(recipe.detector)), load_checkpoint(checkpoint)[0],
                      manifest["model"], checkpoint)


def test_a_checkpoint_stored_before_the_speed_settings_existed_still_resumes(run_copy):
    manifest_path = run_copy / "checkpoints" / "exp_000" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for key in ("precision", "channels_last", "num_workers"):
        del manifest["recipe"]["training"][key]
    manifest_path.write_text(json.dumps(manifest))
    recipe, stream = tiny("naive")
    folder, _, _ = resume_point(run_copy / "checkpoints" / "exp_000", run_setup(recipe, stream, 0))
    assert folder.name == "exp_000"
    with pytest.raises(CheckpointError, match="recipe.training.lr"):  # what it learns from still must match
        resume_point(run_copy / "checkpoints" / "exp_000", run_setup(tiny("naive", "training.lr=0.5")[0], stream, 0))
