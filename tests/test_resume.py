"""Resume after a crash: a run killed with SIGKILL mid-experience and resumed ends exactly like an
uninterrupted run with the same seed (CPU, bit for bit: same metrics, same final checkpoint)."""

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cldf.run.checkpoint import latest_checkpoint
from cldf.cli import main
from cldf.recipes import load_recipe

REPO = Path(__file__).resolve().parent.parent
EXPERIENCES = ["gan_upsample", "self_blend", "local_warp"]
STREAM_SETS = ["image_size=32", "n_per_class.train=8", "n_per_class.val=4", "n_per_class.test=8"]
RECIPE_SETS = ["detector.image_size=32", "training.epochs=1", "training.batch_size=2"]


def cli_args(recipe: str, experiences: list[str], *extra: str, progress: bool = False) -> list[str]:
    """``cldf run`` arguments for a tiny embedded stream (32 px, 16 training images per experience)."""
    args = ["run", recipe, f"--stream-set=experiences=[{','.join(experiences)}]"]
    args += [f"--stream-set={s}" for s in STREAM_SETS] + [f"--set={s}" for s in RECIPE_SETS]
    return args + list(extra) + ([] if progress else ["--no-progress"])


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def state_checksum(checkpoint: Path) -> str:
    """SHA-256 of a checkpoint's tensors: model, plug-ins, optimiser, metric cells, RNG states."""
    return json.loads((checkpoint / "manifest.json").read_text())["files"]["state.safetensors"]


def kill_during_second_experience(proc: subprocess.Popen, timeout: float = 240.0) -> None:
    """Read the run's progress bars until experience 2 has made at least one training step but not
    all of them, then SIGKILL it."""
    bar = re.compile(r"exp 2/3 [^\r\n|]*\|[^|]*\| *(\d+)/(\d+)")
    seen, deadline = "", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not select.select([proc.stderr], [], [], max(0.0, deadline - time.monotonic()))[0]:
            break
        chunk = os.read(proc.stderr.fileno(), 4096).decode(errors="replace")
        if not chunk:
            break
        seen += chunk
        steps = [(int(a), int(b)) for a, b in bar.findall(seen)]
        if any(0 < done < total for done, total in steps):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
    proc.kill()
    pytest.fail(f"never saw experience 2 in progress; stderr:\n{seen[-2000:]}")


def test_sigkill_during_second_experience_then_resume_matches_uninterrupted_run(tmp_path):
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    assert main(cli_args("naive", EXPERIENCES, "--out", str(reference))) == 0

    proc = subprocess.Popen(
        [sys.executable, "-m", "cldf", *cli_args("naive", EXPERIENCES, "--out", str(crashed), progress=True)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
    )
    kill_during_second_experience(proc)
    assert proc.returncode == -signal.SIGKILL
    assert latest_checkpoint(crashed).name == "exp_000"  # the kill came before experience 2 completed
    assert not (crashed / "results.json").exists()
    # determinism across processes: same seed, same state after experience 1, bit for bit
    assert state_checksum(crashed / "checkpoints/exp_000") == state_checksum(reference / "checkpoints/exp_000")

    assert main(cli_args("naive", EXPERIENCES, "--resume", str(crashed))) == 0

    expected, got = results(reference), results(crashed)
    assert got["metrics"] == expected["metrics"]  # exact equality, no tolerance
    assert state_checksum(crashed / "checkpoints/exp_002") == state_checksum(reference / "checkpoints/exp_002")
    assert got["resumed_from"] == {"checkpoint": str(crashed / "checkpoints/exp_000"), "completed_experiences": 1}
    # results.json records the seed, the versions and the full resolved configuration
    assert got["seed"] == 0 and {"torch", "avalanche-lib", "timm", "cldf"} <= set(got["versions"])
    assert got["config"]["recipe"] == json.loads(json.dumps(load_recipe("naive", RECIPE_SETS).to_raw()))
    assert got["config"]["stream"]["experiences"][1]["name"] == "self_blend"
    assert got["config"]["stream"]["options"]["n_per_class"] == {"train": 8, "val": 4, "test": 8}


@pytest.mark.parametrize("recipe", ["ema", "napa_vq", "cldf"])
def test_resume_restores_method_state_exactly(tmp_path, recipe):
    """EMA balance, NAPA-VQ and the slow/fast learners carry state between experiences (EMA
    alpha statistics, code vectors, prototypes, the previous adapter, the frozen slow adapter,
    analytic-head statistics): resuming after experience 1 ends like the full run."""
    experiences = EXPERIENCES[:2]
    small = ["--set=slow_fast.projection_dim=64"] if recipe == "cldf" else []  # smaller ridge solves
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert main(cli_args(recipe, experiences, *small, "--out", str(full))) == 0
    assert main(cli_args(recipe, experiences, *small, "--out", str(resumed),
                         "--resume", str(full / "checkpoints/exp_000"))) == 0
    assert results(resumed)["metrics"] == results(full)["metrics"]
    assert results(resumed)["method_stats"] == results(full)["method_stats"]
    assert state_checksum(resumed / "checkpoints/exp_001") == state_checksum(full / "checkpoints/exp_001")
