"""The Avalanche plug-in metric gives the plain functions' numbers through Avalanche's eval loop."""

import math

import numpy as np
import pytest
import torch
from avalanche.benchmarks.scenarios import benchmark_from_datasets
from avalanche.benchmarks.utils import as_classification_dataset
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from torch import nn
from torch.utils.data import TensorDataset

from cldf.metrics import SingleClassWarning, attribution_accuracy, detection_summary
from cldf.metrics.avalanche_metrics import DetectionPluginMetric
from cldf.scores import is_fake_target, p_fake_from_logits

NUM_CLASSES = 3  # 0 = real, 1 and 2 = two generators
pytestmark = pytest.mark.filterwarnings("ignore:No loggers specified")


class TinyDetector(nn.Module):
    """forward -> logits, and last_features, like cldf's Detector."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
        self.head = nn.Linear(8, NUM_CLASSES)

    def forward(self, x):
        self.last_features = self.body(x)
        return self.head(self.last_features)


def _dataset(generator: torch.Generator, classes: list[int], n: int) -> TensorDataset:
    y = torch.tensor([classes[i % len(classes)] for i in range(n)])
    centres = torch.randn(NUM_CLASSES, 6, generator=torch.Generator().manual_seed(7))
    x = centres[y] + 1.5 * torch.randn(n, 6, generator=generator)
    data = TensorDataset(x, y)
    data.targets = y
    return data


def _benchmark(test_classes: list[list[int]]):
    g = torch.Generator().manual_seed(0)
    train = [_dataset(g, [0, 1], 40), _dataset(g, [0, 2], 40)]
    test = [_dataset(g, classes, 30) for classes in test_classes]
    benchmark = benchmark_from_datasets(
        train=[as_classification_dataset(d) for d in train],
        test=[as_classification_dataset(d) for d in test],
    )
    return benchmark, test


def _strategy(model, metric):
    return Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        train_mb_size=10,
        train_epochs=2,
        eval_mb_size=7,  # several eval iterations per experience, one of them partial
        device="cpu",
        evaluator=EvaluationPlugin(metric, loggers=[]),
    )


def test_plugin_matches_plain_functions_through_avalanche_eval():
    torch.manual_seed(0)
    benchmark, test_sets = _benchmark([[0, 1], [0, 2]])
    model = TinyDetector()
    metric = DetectionPluginMetric(real_classes=[0])
    strategy = _strategy(model, metric)
    expected = np.full((5, 2, 2), np.nan)  # auc, eer, ap, acc, attribution
    seen: set[int] = set()
    for i, experience in enumerate(benchmark.train_stream):
        strategy.train(experience)
        seen |= {0, i + 1}
        strategy.eval(benchmark.test_stream)
        logged = strategy.evaluator.get_last_metrics()
        model.eval()
        for j, data in enumerate(test_sets):
            x, y = data.tensors
            with torch.no_grad():
                logits = model(x)
            # the head grew an untrained row for class 2 while evaluating it after experience 1:
            # p_fake is taken over the classes learned so far
            plain = detection_summary(p_fake_from_logits(logits, [0], learned_classes=sorted(seen)),
                                      is_fake_target(y, [0]))
            plain["attribution"] = attribution_accuracy(logits, y, seen_classes=sorted(seen))
            expected[:, i, j] = [plain[k] for k in ("auc", "eer", "ap", "acc", "attribution")]
            for key, shown in (("auc", "AUC"), ("eer", "EER"), ("ap", "AP"), ("acc", "DetAcc")):
                name = f"{shown}/eval_phase/test_stream/Exp{j:03d}"
                assert logged[name] == pytest.approx(plain[key])
        stream_auc = logged["AUC/eval_phase/test_stream"]
        assert stream_auc == pytest.approx(np.mean(expected[0, i]))
    for k, name in enumerate(("auc", "eer", "ap", "acc", "attribution")):
        np.testing.assert_allclose(metric.matrix(name), expected[k], rtol=1e-6)
    assert metric.seen_classes == [0, 1, 2]
    # not constant: the second generator is attributed better after training on it
    assert metric.matrix("attribution")[1, 1] > metric.matrix("attribution")[0, 1]


def test_single_class_test_experience_logs_nan_with_warning():
    torch.manual_seed(0)
    benchmark, _ = _benchmark([[0, 1], [2]])  # second test set holds fakes only
    metric = DetectionPluginMetric(real_classes=[0])
    strategy = _strategy(TinyDetector(), metric)
    strategy.train(benchmark.train_stream[0])
    with pytest.warns(SingleClassWarning):
        strategy.eval(benchmark.test_stream)
    logged = strategy.evaluator.get_last_metrics()
    assert math.isnan(logged["AUC/eval_phase/test_stream/Exp001"])
    assert not math.isnan(logged["DetAcc/eval_phase/test_stream/Exp001"])
    # the stream average skips the undefined experience
    assert logged["AUC/eval_phase/test_stream"] == pytest.approx(metric.matrix("auc")[0, 0])
    assert metric.matrix("auc").shape == (2, 2)
    assert math.isnan(metric.matrix("auc")[1, 0])  # second training experience not run


def test_unknown_metric_name_is_reported():
    with pytest.raises(KeyError, match="valid names: auc, eer, ap, acc, attribution"):
        DetectionPluginMetric().matrix("f1")
