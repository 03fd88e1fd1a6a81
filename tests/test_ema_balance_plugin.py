"""EMABalancePlugin on a real avalanche Naive strategy with a tiny 2-experience benchmark."""

import pytest
import torch
from avalanche.benchmarks.scenarios import benchmark_from_datasets
from avalanche.benchmarks.utils.classification_dataset import TaskAwareSupervisedClassificationDataset
from avalanche.benchmarks.utils.data_attribute import DataAttribute, TaskLabels
from avalanche.benchmarks.utils.flat_data import ConstantSequence
from avalanche.core import SupervisedPlugin
from avalanche.logging import BaseLogger
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from torch import nn
from torch.utils.data import TensorDataset

from cldf.methods.ema_balance.plugin import EMABalancePlugin
from cldf.methods.ema_balance import EMABalanceConfig

N_PER_EXP, BATCH, EPOCHS = 24, 8, 2
STEPS_PER_EXP = EPOCHS * N_PER_EXP // BATCH


class TinyDetector(nn.Module):
    """Frozen backbone, a low-rank adapter and a head; ``forward -> logits`` + ``last_features``."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(6, 8)
        self.backbone.requires_grad_(False)
        self.adapter = nn.ModuleDict({"lora_A": nn.Linear(8, 2, bias=False),
                                      "lora_B": nn.Linear(2, 8, bias=False)})
        self.head = nn.Linear(8, 3)
        self.last_features = None

    def forward(self, x):
        h = torch.relu(self.backbone(x))
        self.last_features = h + self.adapter["lora_B"](self.adapter["lora_A"](h))
        return self.head(self.last_features)


def _dataset(classes, seed, shape=None):
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(classes * (N_PER_EXP // len(classes)))
    if shape is None:
        x = torch.randn(len(y), 6, generator=g) + 2.0 * nn.functional.one_hot(y, 6).float()
    else:
        x = torch.randn(len(y), *shape, generator=g) + y.view(-1, *[1] * len(shape)).float()
    return TaskAwareSupervisedClassificationDataset(
        [TensorDataset(x, y)],
        data_attributes=[DataAttribute(y.tolist(), "targets"), TaskLabels(ConstantSequence(0, len(y)))])


def _benchmark():
    return benchmark_from_datasets(train=[_dataset([0, 1], 0), _dataset([0, 2], 1)],
                                   test=[_dataset([0, 1], 2), _dataset([0, 2], 3)])


class Recorder(SupervisedPlugin):
    """Snapshots the trainable weights/gradients after every optimiser step and at phase starts."""

    def __init__(self):
        super().__init__()
        self.updates, self.exp_start, self.eval_weights = [], [], []

    def _weights(self, model):
        return {n: p.detach().double().clone() for n, p in model.named_parameters() if p.requires_grad}

    def before_training_exp(self, strategy, **kwargs):
        self.exp_start.append(self._weights(strategy.model))
        self.updates.append([])

    def after_update(self, strategy, **kwargs):
        grads = {n: p.grad.detach().double().clone()
                 for n, p in strategy.model.named_parameters() if p.requires_grad}
        self.updates[-1].append((self._weights(strategy.model), grads))

    def before_eval_iteration(self, strategy, **kwargs):
        self.eval_weights.append(self._weights(strategy.model))


class CaptureLogger(BaseLogger):
    def __init__(self):
        super().__init__()
        self.values = {}

    def log_single_metric(self, name, value, x_plot):
        self.values[name] = value


def _replay(shadow, updates, cfg):
    """The LLaCA update written out per tensor in float64, independent of the implementation."""
    alphas = {n: [] for n in shadow}
    prev = {}
    for step, (weights, grads) in enumerate(updates):
        for n in shadow:
            a = (weights[n] - shadow[n]).abs().sum().item()
            b = grads[n].abs().sum().item()
            alpha = cfg.fallback
            if step > 0:
                c = (grads[n] - prev[n]).abs().sum().item()
                raw = cfg.scale * (1 + b) / (a * c) if a * c > 0 else float("inf")
                if cfg.mode == "clip":
                    alpha = min(max(raw, cfg.alpha_min), cfg.alpha_max)
                elif 0 < raw < 1:
                    alpha = raw
            shadow[n] = (1 - alpha) * shadow[n] + alpha * weights[n]
            alphas[n].append(alpha)
        prev = grads
    return shadow, alphas


def _run(cfg, seed=0):
    torch.manual_seed(seed)
    model = TinyDetector()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    recorder, plugin, logger = Recorder(), EMABalancePlugin(cfg), CaptureLogger()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    strategy = Naive(model=model, optimizer=optimizer, criterion=nn.CrossEntropyLoss(), train_mb_size=BATCH,
                     train_epochs=EPOCHS, eval_mb_size=16, device="cpu", plugins=[recorder, plugin],
                     evaluator=EvaluationPlugin(loggers=[logger]))
    return model, frozen, recorder, plugin, logger, strategy


def test_swap_mode_matches_replay_after_every_step_and_swaps_at_experience_end():
    cfg = EMABalanceConfig()
    model, frozen, recorder, plugin, logger, strategy = _run(cfg)
    bench = _benchmark()
    shadow = None
    for exp_id, exp in enumerate(bench.train_stream):
        strategy.train(exp, eval_streams=[])
        start = recorder.exp_start[exp_id]
        if shadow is None:
            shadow = dict(start)
        else:  # the swap at the end of experience 0 put the shadow into the model
            for n in shadow:
                assert torch.allclose(start[n], shadow[n], atol=1e-6)
        assert len(recorder.updates[exp_id]) == STEPS_PER_EXP
        assert plugin.ema.num_steps == STEPS_PER_EXP
        shadow, alphas = _replay(shadow, recorder.updates[exp_id], cfg)
        final_training = recorder.updates[exp_id][-1][0]
        for n, p in model.named_parameters():
            if p.requires_grad:
                assert torch.allclose(plugin.ema.shadow[n].double(), shadow[n], atol=1e-6)
                assert torch.allclose(p.detach().double(), shadow[n], atol=1e-6)  # swapped in
                assert not torch.allclose(final_training[n], shadow[n], atol=1e-4)
            else:
                assert torch.equal(p, frozen[n])
        stats = plugin.alpha_stats()[exp_id]
        lora_alphas = alphas["adapter.lora_A.weight"]
        assert stats["lora_A"]["updates"] == STEPS_PER_EXP
        assert stats["lora_A"]["mean"] == pytest.approx(sum(lora_alphas) / len(lora_alphas), rel=1e-5)
        head_alphas = alphas["head.weight"] + alphas["head.bias"]
        assert stats["head"]["tensors"] == 2 and stats["head"]["updates"] == 2 * STEPS_PER_EXP
        assert stats["head"]["max"] == pytest.approx(max(head_alphas), rel=1e-5)
        logged = logger.values[f"EMABalance/mean/train_phase/Exp{exp_id:03d}/lora_A"]
        assert logged == stats["lora_A"]["mean"]
    assert set(plugin.ema.names) == {"adapter.lora_A.weight", "adapter.lora_B.weight", "head.weight", "head.bias"}
    assert set(plugin.alpha_stats()) == {0, 1}


def test_shadow_eval_mode_evaluates_with_shadow_and_keeps_training_weights():
    cfg = EMABalanceConfig(mode="clip", alpha_min=0.05, alpha_max=0.5, end_of_experience="shadow_eval")
    model, _, recorder, plugin, _, strategy = _run(cfg, seed=1)
    bench = _benchmark()
    strategy.train(bench.train_stream[0], eval_streams=[])
    shadow, alphas = _replay(dict(recorder.exp_start[0]), recorder.updates[0], cfg)
    final_training = recorder.updates[0][-1][0]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    for n in trainable:
        assert torch.allclose(dict(model.named_parameters())[n].detach().double(), final_training[n])
    strategy.eval(bench.test_stream)
    for n in trainable:
        assert torch.allclose(recorder.eval_weights[0][n], shadow[n], atol=1e-6)  # evaluated with shadow
        assert torch.allclose(dict(model.named_parameters())[n].detach().double(), final_training[n])
    used = sorted({round(a, 6) for a in alphas["adapter.lora_B.weight"]})
    assert len(used) > 1  # clip mode: alpha varies between steps


def test_include_filter_restricts_tracked_tensors_and_errors_when_empty():
    _, _, _, plugin, _, strategy = _run(EMABalanceConfig(include=("head",)))
    strategy.train(_benchmark().train_stream[0], eval_streams=[])
    assert plugin.ema.names == ["head.weight", "head.bias"]
    _, _, _, _, _, strategy = _run(EMABalanceConfig(include=("fast",)))
    with pytest.raises(ValueError, match=r"include=\['fast'\]"):
        strategy.train(_benchmark().train_stream[0], eval_streams=[])


def test_real_detector_only_adapter_norm_and_head_are_tracked_and_swapped():
    from cldf.detector import AdapterConfig, Detector, DetectorConfig

    torch.manual_seed(0)
    det = Detector(DetectorConfig(pretrained=False, image_size=32, num_classes=2, device="cpu",
                                  adapter=AdapterConfig(r=4, tuned_stages=1)))
    frozen = {n: p.detach().clone() for n, p in det.named_parameters() if not p.requires_grad}
    plugin = EMABalancePlugin()
    optimizer = torch.optim.AdamW([p for p in det.parameters() if p.requires_grad], lr=1e-2)
    strategy = Naive(model=det, optimizer=optimizer, criterion=nn.CrossEntropyLoss(), train_mb_size=12,
                     train_epochs=1, device="cpu", plugins=[plugin],
                     evaluator=EvaluationPlugin(loggers=[CaptureLogger()]))
    bench = benchmark_from_datasets(train=[_dataset([0, 1], 0, shape=(3, 32, 32))])
    strategy.train(bench.train_stream[0], eval_streams=[])
    stats = plugin.alpha_stats()[0]
    assert {"lora_A", "lora_B", "head"} <= set(stats) <= {"lora_A", "lora_B", "norm", "head"}
    assert all(entry["updates"] == entry["tensors"] * N_PER_EXP // 12 for entry in stats.values())
    named = dict(det.named_parameters())
    for n, before in frozen.items():
        assert torch.equal(named[n], before)
    for n, shadow in plugin.ema.shadow.items():
        assert named[n].requires_grad and torch.equal(named[n].detach(), shadow)


def test_swapped_in_shadow_reaches_the_detectors_merged_inference_copy():
    """A no-grad eval pass runs a cached merged copy of the adapter; copying the shadow in must
    invalidate it, or inference would keep the weights from before the swap."""
    from cldf.detector import AdapterConfig, Detector, DetectorConfig
    from cldf.methods.ema_balance import EMABalance

    torch.manual_seed(0)
    det = Detector(DetectorConfig(pretrained=False, image_size=32, num_classes=2, device="cpu",
                                  adapter=AdapterConfig(r=4, tuned_stages=1))).eval()
    x = torch.randn(4, 3, 32, 32)
    ema = EMABalance([(n, p) for n, p in det.named_parameters() if p.requires_grad])
    with torch.no_grad():
        before = det.multi_features(x, [det.active_adapter])[det.active_adapter]  # builds the merged copy
        for shadow in ema.shadow.values():
            shadow.add_(0.05)
    ema.copy_shadow_to()
    with torch.no_grad():
        merged = det.multi_features(x, [det.active_adapter])[det.active_adapter]
    live = det.multi_features(x, [det.active_adapter])[det.active_adapter].detach()  # grad on: no merged copy
    torch.testing.assert_close(merged, live, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(before, live, atol=1e-3)
