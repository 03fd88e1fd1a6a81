"""NAPAVQPlugin inside real Avalanche strategies on a tiny 2-experience benchmark."""

import math

import pytest
import torch
from avalanche.benchmarks.scenarios import benchmark_from_datasets
from avalanche.benchmarks.utils import DataAttribute
from avalanche.benchmarks.utils.classification_dataset import ClassificationDataset
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import TensorDataset

from cldf.methods.napa_vq.plugin import NAPAVQPlugin, default_previous
from cldf.detector import AdapterConfig, Detector, DetectorConfig
from cldf.detector import DetectorAdapterSnapshot
from cldf.methods.napa_vq import FrozenModelCopy, NAPAVQConfig

pytestmark = pytest.mark.filterwarnings("ignore:No loggers specified")
# the spec's code-vector learning rates (5, then 0.5) diverge with 2 classes per batch
STABLE = dict(cv_lr_first=0.5, cv_lr_later=0.1)
WEIGHTS = {"dce": "w_dce", "na": "w_na", "na_pseudo": "w_na", "pa": "w_pa", "kd": "w_kd"}


class TinyConvNet(nn.Module):
    """forward -> logits, keeping the pooled features in ``last_features``."""

    def __init__(self, num_classes=3, dim=6):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, dim, 3, padding=1), nn.BatchNorm2d(dim), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(dim, num_classes)
        self.last_features = None

    def forward(self, x):
        self.last_features = self.body(x)
        return self.head(self.last_features)


def _dataset(labels, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(labels)
    x = torch.randn(len(labels), 3, 8, 8, generator=g) + y[:, None, None, None].float()
    return ClassificationDataset([TensorDataset(x, y)], data_attributes=[
        DataAttribute(y.tolist(), "targets"),
        DataAttribute([0] * len(labels), "targets_task_labels", use_in_getitem=True)])


def _benchmark():
    """Experience 1: real (0) + fake gen A (1); experience 2: real (0) + fake gen B (2)."""
    return benchmark_from_datasets(train=[_dataset([0, 1] * 12, 0), _dataset([0, 2] * 12, 1)],
                                   test=[_dataset([0, 1] * 4, 2), _dataset([0, 2] * 4, 3)])


class Recorder(SupervisedPlugin):
    """Records what the strategy holds at a few callbacks."""

    def __init__(self, napa=None):
        super().__init__()
        self.napa, self.losses, self.begin_vectors, self.eval_outputs = napa, [], [], []

    def before_backward(self, strategy, **kw):
        self.losses.append(float(strategy.loss.detach()))

    def before_training_epoch(self, strategy, **kw):
        if self.napa is not None:
            self.begin_vectors.append(self.napa.learner.codebook.vectors.detach().clone())

    def after_eval_forward(self, strategy, **kw):
        self.eval_outputs.append(strategy.mb_output.detach().clone())


def _naive(model, plugins, epochs=2):
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                 train_mb_size=8, train_epochs=epochs, eval_mb_size=8, device="cpu",
                 plugins=plugins, evaluator=EvaluationPlugin(loggers=[]))


def _trained_plugin_and_recorders(config, train_second=True):
    torch.manual_seed(0)
    model = TinyConvNet()
    napa = NAPAVQPlugin(config, 6, previous=default_previous(model))
    before, after = Recorder(), Recorder(napa)
    strategy = _naive(model, [before, napa, after])
    bm = _benchmark()
    snapshots = []
    for exp in bm.train_stream[: 2 if train_second else 1]:
        strategy.train(exp)
        snapshots.append({k: v.clone() for k, v in napa.state_dict().items()})
    return model, napa, strategy, before, after, snapshots


def test_plugin_adds_weighted_terms_keeps_old_code_vectors_and_makes_prototypes():
    cfg = NAPAVQConfig(k=2, n_pseudo=8, **STABLE)
    model, napa, strategy, before, after, snaps = _trained_plugin_and_recorders(cfg)
    # the loss after the plug-in exceeds the strategy's own by the weighted terms of the last step
    terms = napa.learner.last_terms
    assert set(terms) == {"dce", "na", "na_pseudo", "pa", "kd"}
    added = sum(getattr(cfg, WEIGHTS[name]) * value for name, value in terms.items())
    assert after.losses[-1] - before.losses[-1] == pytest.approx(added, rel=1e-4)
    assert added > 0 and terms["kd"] > 0
    assert all(math.isfinite(v) for v in terms.values())
    assert len(after.losses) == 2 * 2 * 3  # 2 experiences x 2 epochs x 3 minibatches
    # old code vectors fixed during experience 2 (class 0 recurs: it is old too); class 2 learns
    first, second = snaps
    assert torch.equal(second["codebook.vectors"][:2], first["codebook.vectors"][:2])
    assert not torch.allclose(second["codebook.vectors"][2], after.begin_vectors[2][2])
    # class 1's code vector did move in experience 1
    assert not torch.allclose(first["codebook.vectors"][1], after.begin_vectors[0][1])
    # prototypes after each experience, frozen ones never recomputed
    assert first["prototypes.known"].tolist() == [True, True]
    assert second["prototypes.known"].tolist() == [True, True, True]
    assert torch.equal(second["prototypes.means"][:2], first["prototypes.means"][:2])


@pytest.fixture(scope="module")
def one_experience():
    """(model, plug-in) after training the first experience."""
    model, napa, *_ = _trained_plugin_and_recorders(NAPAVQConfig(k=2, **STABLE), train_second=False)
    return model, napa


def test_prototypes_are_mean_eval_features_of_the_trained_model(one_experience):
    model, napa = one_experience
    x, y = _train_tensors(0)
    model.eval()
    with torch.no_grad():
        model(x)
    feats = torch.nn.functional.normalize(model.last_features, dim=1)  # NAPA-VQ's space (normalize=True)
    means = napa.learner.prototypes.means
    assert torch.allclose(means[0], feats[y == 0].mean(0), atol=1e-5)
    assert torch.allclose(means[1], feats[y == 1].mean(0), atol=1e-5)


def _train_tensors(index):
    data = _benchmark().train_stream[index].dataset.eval()
    xs, ys = zip(*[(data[i][0], data[i][1]) for i in range(len(data))])
    return torch.stack(xs), torch.tensor([int(v) for v in ys])


def test_state_round_trips_through_state_dict_and_safetensors(one_experience, tmp_path):
    model, napa = one_experience
    state = napa.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert any(k.startswith("previous.") for k in state)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "napa.safetensors")
    fresh_model = TinyConvNet()
    restored = NAPAVQPlugin(NAPAVQConfig(k=2, **STABLE), 6, previous=FrozenModelCopy(fresh_model))
    restored.load_state_dict(load_file(tmp_path / "napa.safetensors"))
    for key, value in restored.state_dict().items():
        assert torch.equal(value, state[key]), key
    x, _ = _train_tensors(1)
    assert torch.allclose(restored.learner.previous(x), napa.learner.previous(x))


def test_nearest_cv_prediction_replaces_eval_output():
    torch.manual_seed(1)
    model = TinyConvNet()
    napa = NAPAVQPlugin(NAPAVQConfig(k=2, prediction="nearest_cv", **STABLE), 6, previous=None)
    rec = Recorder()
    strategy = _naive(model, [napa, rec], epochs=1)
    bm = _benchmark()
    strategy.train(bm.train_stream[0])
    rec.eval_outputs.clear()
    strategy.eval(bm.test_stream[:1])
    out = rec.eval_outputs[0]
    model.eval()
    with torch.no_grad():
        model(torch.stack([bm.test_stream[0].dataset.eval()[i][0] for i in range(8)]))
        expected = napa.learner.predict_logits(model.last_features)
    assert out.shape == (8, 3)  # head width kept; class 2 has no code vector yet
    assert torch.allclose(out[:, :2], expected, atol=1e-5)
    assert (out[:, 2] == -1e4).all()


def test_rotations_option_trains_four_code_vectors_per_class():
    torch.manual_seed(2)
    model = TinyConvNet()
    napa = NAPAVQPlugin(NAPAVQConfig(k=3, use_rotations=True, **STABLE), 6, previous=default_previous(model))
    strategy = _naive(model, [napa], epochs=1)
    strategy.train(_benchmark().train_stream[0])
    assert napa.learner.codebook.num_vectors == 8
    assert napa.learner.prototypes.known.tolist() == [True, False, False, False, True, False, False, False]
    assert napa.learner.codebook.frozen.all()
    assert model.last_features.shape[0] <= 8  # the batch's own features were put back


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(3)
    return Detector(DetectorConfig(backbone="tf_efficientnet_lite0", pretrained=False, image_size=32,
                                   num_classes=3, adapter=AdapterConfig(r=4, tuned_stages=2),
                                   device="cpu"))


def _image_dataset(labels, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor(labels)
    x = torch.randn(len(labels), 3, 32, 32, generator=g) * 0.5 + y[:, None, None, None].float()
    return ClassificationDataset([TensorDataset(x, y)], data_attributes=[
        DataAttribute(y.tolist(), "targets"),
        DataAttribute([0] * len(labels), "targets_task_labels", use_in_getitem=True)])


def test_with_real_detector_previous_adapter_is_frozen_and_distilled(detector):
    napa = NAPAVQPlugin(NAPAVQConfig(k=2, n_pseudo=8, **STABLE), detector.num_features,
                        previous=default_previous(detector))
    cache = napa.learner.previous  # the snapshot behind a per-experience feature cache
    assert isinstance(cache.previous, DetectorAdapterSnapshot)
    rec = Recorder(napa)
    prev_at_epoch_end = []

    class SnapshotWatch(SupervisedPlugin):
        def after_training_epoch(self, strategy, **kw):
            if "napa_prev" in detector.adapter_names:
                prev_at_epoch_end.append(detector.adapter_state("napa_prev"))

    params = [p for p in detector.parameters() if p.requires_grad]
    strategy = Naive(model=detector, optimizer=torch.optim.SGD(params, lr=0.01), train_mb_size=8,
                     train_epochs=2, device="cpu", plugins=[napa, rec, SnapshotWatch()],
                     evaluator=EvaluationPlugin(loggers=[]))
    bm = benchmark_from_datasets(train=[_image_dataset([0, 1] * 4, 0), _image_dataset([0, 2] * 4, 1)],
                                 test=[_image_dataset([0, 1], 2), _image_dataset([0, 2], 3)])
    strategy.train(bm.train_stream[0])
    assert "napa_prev" in detector.adapter_names and "napa_prev" in detector.frozen_adapters
    prev_after_first = detector.adapter_state("napa_prev")
    active = detector.active_adapter
    assert all(torch.equal(v, detector.adapter_state(active)[k]) for k, v in prev_after_first.items())
    strategy.train(bm.train_stream[1])
    assert napa.learner.last_terms["kd"] > 0
    assert (cache.misses, cache.hits) == (8, 8)  # epoch 2 reused epoch 1's previous-adapter features
    # training experience 2 did not move the snapshot (weights nor normalisation statistics)
    assert all(torch.equal(v, prev_after_first[k]) for k, v in prev_at_epoch_end[-1].items())
    # at the end of experience 2 the snapshot is refreshed to the newly trained adapter
    now_active = detector.adapter_state(active)
    now_prev = detector.adapter_state("napa_prev")
    assert all(torch.equal(v, now_active[k]) for k, v in now_prev.items())
    assert any(not torch.equal(v, now_prev[k]) for k, v in prev_after_first.items())
    # old code vectors untouched through experience 2
    assert torch.equal(napa.learner.codebook.vectors[:2], rec.begin_vectors[-1][:2])


def test_distilling_a_share_of_the_batch_reuses_the_prefix_and_matches_the_full_pass(detector):
    snapshot = DetectorAdapterSnapshot(detector)
    snapshot.snapshot()
    x = torch.randn(8, 3, 32, 32)
    full = snapshot(x)
    prefix_before = detector._prefix_cache[1]
    first_three = snapshot(x, rows=3)
    assert detector._prefix_cache[1] is prefix_before  # the same batch: no second prefix pass
    assert first_three.shape == (3, full.shape[1])
    assert torch.allclose(first_three, full[:3], atol=1e-5)
