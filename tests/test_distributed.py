"""Two CPU processes (gloo, started by torchrun) train the ``cldf`` recipe (slow/fast learners +
NAPA-VQ + EMA balance) through a tiny embedded stream; the processes' states and the gathered
metrics are compared with each other and with single-process computations on the same data.

Run as a script (``torchrun ... tests/test_distributed.py OUT``) this file is the worker: every
process saves what it holds to ``OUT/rank<r>.pt``; the test reads and compares those files.
"""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from avalanche.core import SupervisedPlugin

from cldf import distributed
from cldf.avalanche.experience_pass import ExperiencePass
from cldf.metrics.detection import prediction_metrics

REPO = Path(__file__).resolve().parent.parent
EXPERIENCES = ["gan_upsample", "self_blend"]
STREAM_SETS = ["image_size=32", "n_per_class.train=8", "n_per_class.val=4", "n_per_class.test=9",
               f"experiences=[{','.join(EXPERIENCES)}]"]
RECIPE_SETS = ["detector.image_size=32", "detector.pretrained=false", "training.epochs=1", "training.batch_size=4",
               "training.eval_batch_size=5", "slow_fast.projection_dim=64",
               "slow_fast.prediction=merged"]  # the fast learner trains (and predicts) in both processes
METRICS = ("auc", "eer", "ap", "acc", "attribution")


# ----------------------------------------------------------------------------- worker side
class Capture(SupervisedPlugin, supports_distributed=True):
    """Records, per process, what must agree across processes."""

    def __init__(self) -> None:
        super().__init__()
        self.strategy = None
        self.saved: dict[str, torch.Tensor] = {}
        self._row = -1

    def before_training(self, strategy, *args, **kwargs) -> None:
        self.strategy = strategy

    def before_training_exp(self, strategy, *args, **kwargs) -> None:
        i = strategy.clock.train_exp_counter
        self.saved.update({f"start{i}.{n}": p.detach().clone()
                           for n, p in strategy.model.named_parameters() if p.requires_grad})

    def after_training_exp(self, strategy, *args, **kwargs) -> None:
        i = strategy.clock.train_exp_counter
        ema = next(p for p in strategy.plugins if type(p).__name__ == "EMABalancePlugin").ema
        self.saved.update({f"exp{i}.ema.{k}": v.clone() for k, v in ema.state_dict().items()})
        self.saved.update({f"exp{i}.param.{n}": p.detach().clone()
                           for n, p in strategy.model.named_parameters() if p.requires_grad})
        self._row = i

    def after_training(self, strategy, *args, **kwargs) -> None:
        # after the strategy's end-of-experience pass, which NAPA-VQ's prototypes and the analytic heads share
        napa = next(p for p in strategy.plugins if type(p).__name__ == "NAPAVQPlugin")
        self.saved.update({f"exp{self._row}.napa.{k}": v.clone() for k, v in napa.state_dict().items() if k != "generator"})
        self.saved.update({f"exp{self._row}.buffer.{n}": b.clone() for n, b in strategy.model.named_buffers()})

    def after_eval_iteration(self, strategy, *args, **kwargs) -> None:
        if strategy.experience.origin_stream.name != "test":  # the validation pass fits calibration
            return
        key = f"pred.{self._row}.{strategy.experience.current_experience}"
        for name, value in (("logits", strategy.mb_output.detach().float()), ("targets", strategy.mb_y)):
            self.saved[f"{key}.{name}"] = torch.cat([self.saved.get(f"{key}.{name}", value[:0]), value])

    def after_eval(self, strategy, *args, **kwargs) -> None:
        for head in ("slow_analytic", "fast_analytic"):
            for k, v in getattr(strategy.model, head).state_dict().items():
                self.saved[f"exp{self._row}.{head}.{k}"] = v.clone()


def analytic_heads_over(model, dataset, fit) -> dict[str, torch.Tensor]:
    """Fit a copy of ``model``'s analytic heads on ``dataset`` with ``fit(copy, dataset)``."""
    copied = copy.deepcopy(model)
    fit(copied, dataset)
    return {f"{head}.{k}": v for head in ("slow_analytic", "fast_analytic")
            for k, v in getattr(copied, head).state_dict().items()
            if k in ("gram", "cross", "weight", "ridge", "samples_seen", "class_sums", "class_counts", "bias", "center")}


def single_process_fit(model, dataset) -> None:
    """The single-process statistics: the whole dataset, in other batches, no reduction."""
    model.begin_analytic_experience()
    for x, y, *_ in torch.utils.data.DataLoader(dataset, batch_size=3):
        model.accumulate_analytic(x, y)
    model.finish_analytic_experience()


def pending_statistics(head, features: torch.Tensor, targets: torch.Tensor, sharded: bool) -> dict[str, torch.Tensor]:
    """Fit/hold-out sums of one experience: this process's block, summed over processes (sharded)
    or all samples in one process."""
    rows = distributed.shard_range(len(targets)) if sharded else range(len(targets))
    head.begin_experience(rows.start)
    for start in range(rows.start, rows.stop, 4):
        stop = min(start + 4, rows.stop)
        head.accumulate(features[start:stop], targets[start:stop])
    pending = head._pending
    if sharded:
        pending.reduce(distributed.all_reduce_sum)
    return {"fit_gram": pending.fit_gram, "fit_cross": pending.fit_cross, "hold_gram": pending.hold_gram,
            "hold_cross": pending.hold_cross, "counts": torch.tensor([pending.hold_count, pending.count])}


def worker(out: Path) -> None:
    from cldf.cli import EMBEDDED_STREAM
    from cldf.config_io import apply_overrides
    from cldf.methods.slow_fast.ridge_head import RidgeHead
    from cldf.recipes import load_recipe
    from cldf.run.runner import run
    from cldf.streams import build_stream, load_stream_spec, to_benchmark

    torch.set_num_threads(1)
    stream = build_stream(load_stream_spec(EMBEDDED_STREAM, overrides=apply_overrides({}, STREAM_SETS)))
    capture = Capture()
    results = run(load_recipe("cldf", RECIPE_SETS), stream, seed=0, out_dir=out / "run", plugins=[capture],
                  progress=False)
    strategy, model = capture.strategy, capture.strategy.model
    saved = dict(capture.saved)
    # analytic heads over one dataset: this process's block + all-reduce vs one process, all of it
    dataset = to_benchmark(stream, model.detector.preprocess).test_stream[1].dataset.eval()
    saved.update({f"sharded.{k}": v for k, v in analytic_heads_over(
        model, dataset, lambda m, d: type(strategy)._fit_analytic_heads(_WithModel(strategy, m), d)).items()})
    saved.update({f"single.{k}": v for k, v in analytic_heads_over(model, dataset, single_process_fit).items()})
    # the fit / hold-out split of the sums, on fixed features (23 samples, uneven blocks)
    generator = torch.Generator().manual_seed(1)
    features, targets = torch.randn(23, 8, generator=generator), torch.randint(0, 3, (23,), generator=generator)
    head = RidgeHead(8, 16, holdout_fraction=0.25, num_classes=3, generator=torch.Generator().manual_seed(2))
    for sharded in (True, False):
        stats = pending_statistics(copy.deepcopy(head), features, targets, sharded)
        saved.update({f"pending.{'sharded' if sharded else 'single'}.{k}": v for k, v in stats.items()})
    saved["shard"] = torch.tensor([distributed.shard_range(len(dataset)).start, distributed.shard_range(len(dataset)).stop])
    torch.save(saved, out / f"rank{distributed.rank()}.pt")
    (out / f"results{distributed.rank()}.json").write_text(json.dumps(results["metrics"]))
    distributed.shutdown()


class _WithModel:
    """The strategy seen with another model (to run its analytic fit on a copy)."""

    def __init__(self, strategy, model) -> None:
        self.model, self.eval_mb_size, self.device = model, strategy.eval_mb_size, strategy.device
        self.experience_pass = ExperiencePass()  # nobody joins it


# ----------------------------------------------------------------------------- test side
@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(Path(__file__).resolve()), str(out)]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return out


def load(out: Path, rank: int) -> dict[str, torch.Tensor]:
    return torch.load(out / f"rank{rank}.pt", weights_only=True)


def identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and values, bit for bit (NaN equal to NaN: a ridge not chosen yet)."""
    return a.dtype == b.dtype and a.shape == b.shape and bool((a.eq(b) | (a.isnan() & b.isnan()) if a.is_floating_point() else a.eq(b)).all())


def test_processes_hold_identical_trained_state(two_processes):
    a, b = load(two_processes, 0), load(two_processes, 1)
    assert a.keys() == b.keys()
    state = [k for k in a if k.startswith(("exp0.", "exp1."))]
    assert any(".ema.shadow." in k for k in state) and any(".napa.codebook.edges" in k for k in state)
    assert any(k.endswith(".running_mean") for k in state)  # BatchNorm statistics, averaged over processes
    different = [k for k in state if not identical(a[k], b[k])]
    assert different == [], f"state differs between the processes: {different[:5]}"
    # the processes trained on different data, yet hold the same weights: gradients were averaged
    assert not torch.equal(a["pred.0.0.targets"], b["pred.0.0.targets"])
    for i in (0, 1):
        trained = [k for k in a if k.startswith(f"exp{i}.param.")]
        moved = [k for k in trained if not torch.equal(a[k], a[k.replace(f"exp{i}.param.", f"start{i}.")])]
        assert trained and moved, f"no trainable tensor changed during experience {i + 1}"
    # NAPA-VQ learned something to agree on: prototypes for both experiences' classes, graph edges
    assert bool(a["exp1.napa.prototypes.known"].sum() >= 3)
    assert bool((a["exp1.napa.codebook.edges"] > 0).sum() > a["exp1.napa.codebook.edges"].shape[0])


def test_analytic_statistics_equal_single_process(two_processes):
    for rank in (0, 1):
        saved = load(two_processes, rank)
        for key in [k for k in saved if k.startswith("single.")]:
            single, sharded = saved[key].double(), saved[key.replace("single.", "sharded.", 1)].double()
            if key.endswith(("ridge", "samples_seen", "class_counts")):
                assert torch.equal(sharded, single), key
            else:  # float32 features of other batch compositions: relative error ~1e-7
                assert float((sharded - single).norm() / single.norm()) < 1e-5, key
        counts = [saved[f"{part}.slow_analytic.class_counts"].sum() for part in ("single", "exp1")]
        assert int(counts[0] - counts[1]) == 18  # the discriminant heads' sums hold the 18 samples once
        for key in [k for k in saved if k.startswith("pending.single.")]:
            sharded = saved[key.replace(".single.", ".sharded.")]
            assert torch.allclose(sharded, saved[key], rtol=1e-12, atol=1e-12), key
        assert saved["pending.single.counts"].tolist() == [5, 23]  # floor((p+1)/4) > floor(p/4): p = 3, 7, 11, 15, 19
    shards = [load(two_processes, r)["shard"].tolist() for r in (0, 1)]
    assert shards == [[0, 9], [9, 18]]


def test_gathered_metrics_equal_metrics_of_all_predictions(two_processes):
    a, b = load(two_processes, 0), load(two_processes, 1)
    metrics = json.loads((two_processes / "results0.json").read_text())
    assert metrics == json.loads((two_processes / "results1.json").read_text())
    assert (two_processes / "run" / "results.json").is_file()
    # class ids: 0 real, 1 the first generator, 2 the second; seen after row i: 0..i+1
    for row in (0, 1):
        for col in (0, 1):
            key = f"pred.{row}.{col}"
            logits = torch.cat([a[f"{key}.logits"], b[f"{key}.logits"]])
            targets = torch.cat([a[f"{key}.targets"], b[f"{key}.targets"]])
            assert len(targets) == 18 and len(a[f"{key}.targets"]) == 9  # each test image once
            expected = prediction_metrics(logits, targets, [0], list(range(row + 2)))
            for name in METRICS:
                assert metrics[name][row][col] == pytest.approx(expected[name], abs=1e-12), (name, row, col)


def test_nproc_option_starts_torchrun_with_the_other_arguments():
    from cldf.cli import torchrun_command

    command = torchrun_command(["run", "naive", "--nproc", "2", "--out", "runs/x", "--nproc=2", "--seed", "3"], 2)
    assert command[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "-m", "cldf", "run", "naive", "--out", "runs/x", "--seed", "3"]


def test_single_process_helpers_are_the_identity():
    assert not distributed.is_distributed() and distributed.is_main() and distributed.world_size() == 1
    t = torch.arange(6.0).reshape(3, 2)
    assert distributed.all_reduce_sum(t) is t and distributed.gather_cat(t) is t
    assert distributed.shard_range(7) == range(7)


if __name__ == "__main__":
    distributed.init_from_env()
    worker(Path(sys.argv[1]))
