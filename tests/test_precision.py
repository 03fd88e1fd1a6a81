"""Speed settings: precision / channels_last / num_workers validation, reduced precision confined to
the backbone (float64 analytic statistics), fp16 loss scaling, and the CUDA path (skipped without CUDA)."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from avalanche.benchmarks.scenarios import benchmark_from_datasets
from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin

from cldf.avalanche import DynamicDetector
from cldf.avalanche.build import build_strategy
from cldf.avalanche.loss_scaling import LossScaling
from cldf.cli import main
from cldf.config_io import ConfigError
from cldf.detector import Detector, DetectorConfig, learned_state_dict
from cldf.methods.slow_fast import DiscriminantHead
from cldf.recipes import load_recipe
from cldf.run.faults import NonFiniteLossGuard
from cldf.speed import resolve_speed

IMAGE = 32
CPU = torch.device("cpu")
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _quiet_evaluator() -> EvaluationPlugin:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No loggers specified")
        return EvaluationPlugin(loggers=[])


def _benchmark(n: int = 16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, IMAGE, IMAGE, generator=g)
    y = torch.arange(n) % 2
    x[y == 1, 0] += 0.8  # a colour cast makes the fakes
    data = _make_taskaware_tensor_classification_dataset(x, y)
    return with_classes_timeline(benchmark_from_datasets(train=[data], test=[data]))


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("setting, message", [
    ("training.precision=fp8", "training.precision='fp8'; valid: auto, bf16, fp16, fp32"),
    ("training.channels_last=sometimes", "training.channels_last='sometimes'; valid: auto, true, false"),
    ("training.num_workers=-1", "training.num_workers=-1; valid: 'auto' or an integer >= 0"),
])
def test_bad_speed_setting_names_field_value_and_valid_values(setting, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_recipe("naive", [setting])


def test_auto_resolves_to_the_former_cpu_behaviour():
    speed = resolve_speed(load_recipe("naive").training, CPU)
    assert (speed.precision, speed.channels_last, speed.num_workers) == ("fp32", False, 0)
    assert speed.autocast_dtype is None and not speed.scales_loss


def test_fp16_on_the_cpu_is_refused_at_run_start(tmp_path, capsys):
    code = main(["run", "naive", "--set", "detector.device=cpu", "--set", "training.precision=fp16",
                 "--set", f"detector.image_size={IMAGE}", "--stream-set", f"image_size={IMAGE}",
                 "--stream-set", "n_per_class={train: 2, test: 2}",
                 "--stream-set", "experiences=[gan_upsample]", "--no-progress", "--out", str(tmp_path)])
    assert code == 2
    assert "training.precision=fp16 needs a CUDA device (this run is on cpu)" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


# ----------------------------------------------------------------------------- bf16 on the CPU
def _fit_frozen(precision: str, seen: list[torch.dtype]):
    """The frozen recipe on one tiny experience (analytic heads only); ``seen`` gets the dtype of
    every feature batch the analytic heads accumulate."""
    recipe = load_recipe("frozen", [f"training.precision={precision}", f"detector.image_size={IMAGE}",
                                    "detector.device=cpu"])
    torch.manual_seed(0)
    strategy = build_strategy(recipe, DynamicDetector(recipe.detector), _quiet_evaluator())
    strategy.train(_benchmark().train_stream[0])
    return strategy.model.slow_analytic


def test_bf16_on_the_cpu_keeps_float64_statistics_and_close_heads(monkeypatch):
    seen: list[torch.dtype] = []
    accumulate = DiscriminantHead.accumulate
    monkeypatch.setattr(DiscriminantHead, "accumulate",
                        lambda self, features, targets: (seen.append(features.dtype), accumulate(self, features, targets)))
    exact, reduced = _fit_frozen("fp32", seen), _fit_frozen("bf16", seen)
    assert set(seen) == {torch.float32}  # the backbone's bf16 output leaves it as float32
    for head in (exact, reduced):
        assert head.gram.dtype == head.class_sums.dtype == torch.float64
    assert not torch.equal(exact.gram, reduced.gram)  # bf16 did run
    torch.testing.assert_close(reduced.gram, exact.gram, rtol=0.02, atol=0.02 * exact.gram.abs().max().item())
    torch.testing.assert_close(reduced.class_sums, exact.class_sums, rtol=0.02, atol=0.02 * exact.class_sums.abs().max().item())
    assert torch.equal(reduced.class_counts, exact.class_counts)


def test_channels_last_gives_the_same_features_and_a_savable_state():
    torch.manual_seed(0)
    config = DetectorConfig(image_size=IMAGE, pretrained=False, device="cpu")
    plain, converted = Detector(config), Detector(config)
    converted.load_state_dict(plain.state_dict())
    converted.set_speed(None, channels_last=True)
    x = torch.randn(4, 3, IMAGE, IMAGE)
    torch.testing.assert_close(converted.features(x), plain.features(x), rtol=1e-4, atol=1e-5)
    assert all(t.is_contiguous() for t in learned_state_dict(converted).values())  # what checkpoints hold


# ----------------------------------------------------------------------------- loss scaling
def _train_naive(plugins: list) -> torch.Tensor:
    """Two epochs of a linear model on the tiny benchmark; its weights afterwards."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * IMAGE * IMAGE, 2))
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                     train_mb_size=4, train_epochs=2, device=CPU, evaluator=_quiet_evaluator(), plugins=plugins)
    strategy.train(_benchmark().train_stream[0])
    return model[1].weight.detach().clone()


def test_loss_scaling_by_a_power_of_two_leaves_the_update_unchanged():
    assert torch.equal(_train_naive([LossScaling(CPU)]), _train_naive([]))


class _NaNLossOnce(SupervisedPlugin):
    def __init__(self) -> None:
        super().__init__()
        self.done = False

    def before_backward(self, strategy, **kwargs) -> None:
        if not self.done:
            strategy.loss = strategy.loss * float("nan")
            self.done = True


def test_a_batch_dropped_by_the_guard_leaves_the_scale_alone():
    guard, scaling = NonFiniteLossGuard("skip", ["only"]), LossScaling(CPU)
    with pytest.warns(RuntimeWarning, match="skipped a batch"):
        _train_naive([_NaNLossOnce(), guard, scaling])
    assert guard.skipped.tolist() == [1]
    assert scaling.scaler.get_scale() == 2.0 ** 16


def test_loss_scale_goes_into_the_checkpoint():
    plugin, restored = LossScaling(CPU), LossScaling(CPU)
    plugin.load_state_dict({"scale": torch.tensor(1024.0), "growth_tracker": torch.tensor(7)})
    restored.load_state_dict(plugin.state_dict())
    assert restored.scaler.get_scale() == 1024.0
    assert {k: v.item() for k, v in restored.state_dict().items()} == {"scale": 1024.0, "growth_tracker": 7}


# ----------------------------------------------------------------------------- whole strategies
@pytest.mark.parametrize("recipe_name, device, settings", [
    ("cldf", "cpu", ["training.precision=bf16", "training.channels_last=true"]),
    pytest.param("naive", "cuda", [], marks=cuda_only),
    pytest.param("cldf", "cuda", [], marks=cuda_only),
    pytest.param("cldf", "cuda", ["training.precision=fp16"], marks=cuda_only),
])
def test_recipe_trains_and_predicts_in_reduced_precision(recipe_name, device, settings):
    recipe = load_recipe(recipe_name, [*settings, f"detector.image_size={IMAGE}", f"detector.device={device}",
                                       "training.epochs=1", "training.batch_size=8"])
    speed = resolve_speed(recipe.training, torch.device(device))
    assert speed.channels_last and speed.precision in ("bf16", "fp16")
    torch.manual_seed(0)
    detector = DynamicDetector(recipe.detector)
    strategy = build_strategy(recipe, detector, _quiet_evaluator())
    assert any(isinstance(p, LossScaling) for p in strategy.plugins) == speed.scales_loss
    trainable = {n: p.detach().clone() for n, p in strategy.model.named_parameters() if p.requires_grad}
    bench = _benchmark()
    strategy.train(bench.train_stream[0])
    strategy.eval(bench.test_stream)
    assert detector.features(torch.randn(2, 3, IMAGE, IMAGE, device=device)).dtype == torch.float32
    after = dict(strategy.model.named_parameters())
    assert all(torch.isfinite(after[n]).all() for n in trainable)
    assert any(not torch.equal(after[n], before) for n, before in trainable.items())  # the optimiser stepped
    if recipe_name == "cldf":
        assert strategy.model.slow_analytic.gram.dtype == torch.float64
