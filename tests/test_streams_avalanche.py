"""Streams as Avalanche benchmarks: items, attributes, class info, Naive training, online."""

import pytest
import torch
from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from test_streams_fixtures import (
    SHIPPED, TRANSFORM, make_cddb, make_csv, make_deepfakebench, make_folders)
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms as T

from cldf.streams import (
    StreamBenchmark, build_stream, load_stream, online_train_stream, parse_stream_spec,
    to_benchmark)

pytestmark = pytest.mark.filterwarnings("ignore:No loggers specified")
SMALL_EVAL = T.Compose([T.Resize((16, 16)), T.ToTensor()])


def tiny_model(n_classes: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, n_classes))


def naive(model: nn.Module, epochs: int = 1, **kwargs) -> Naive:
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                 train_mb_size=4, eval_mb_size=8, train_epochs=epochs, device="cpu", **kwargs)


def fixture_stream(root, layout: str):
    """A two-experience stream of ``layout`` built on a fresh fixture tree."""
    keys = {}
    if layout == "cddb":
        make_cddb(root, ["gaugan", "biggan"])
        experiences = ["gaugan", "biggan"]
    elif layout == "folders":
        make_folders(root, ["gaugan", "biggan"], n_per_class=10)
        experiences = ["gaugan", "biggan"]
    elif layout == "deepfakebench":
        make_deepfakebench(root, "FF-DF", "FF-DF", frames=2)
        make_deepfakebench(root, "FF-F2F", "FF-F2F", frames=2)
        experiences = ["FF-DF", "FF-F2F"]
        keys = {"real_source": "youtube"}
    else:
        make_csv(root, ["gaugan", "biggan"])
        experiences = ["gaugan", "biggan"]
    return build_stream(parse_stream_spec({"name": layout, "layout": layout, "root": str(root),
                                           "experiences": experiences, **keys}))


def embedded_stream():
    return load_stream(SHIPPED / "embedded.yaml", overrides={
        "n_per_class": {"train": 4, "val": 2, "test": 3}, "image_size": 32,
        "experiences": ["gan_upsample", "self_blend"]})


def test_benchmark_items_attributes_and_class_information(tmp_path):
    stream = fixture_stream(tmp_path, "cddb")
    bm = to_benchmark(stream, TRANSFORM, SMALL_EVAL)
    assert isinstance(bm, StreamBenchmark)
    assert len(bm.train_stream) == len(bm.test_stream) == len(bm.valid_stream) == 2  # val held back from train
    assert bm.experience_names == ["gaugan", "biggan"]
    assert bm.experience_generators == [("gaugan",), ("biggan",)]
    assert bm.stream is stream and bm.bad_files.count == 0
    assert bm.class_map.names == ("real:gaugan", "fake:gaugan", "real:biggan", "fake:biggan")
    assert bm.real_classes == [0, 2] and bm.n_classes == 4
    assert bm.classes_per_experience == [[0, 1], [2, 3]]
    second = bm.train_stream[1]
    assert second.classes_in_this_experience == {2, 3}
    assert second.classes_seen_so_far == {0, 1, 2, 3}

    data = second.dataset
    x, class_id, task = data[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and task == 0
    assert class_id == (3 if data.is_fake[0] else 2)
    assert list(data.targets) == [3 if f else 2 for f in data.is_fake]
    assert set(data.generator) == {"biggan"} and sum(data.is_fake) == 3
    assert bm.test_stream[0].dataset[0][0].shape == (3, 16, 16)  # eval transform group
    assert data.eval()[0][0].shape == (3, 16, 16)


def test_validation_stream_when_every_experience_has_one(tmp_path):
    bm = to_benchmark(fixture_stream(tmp_path, "folders"), TRANSFORM)
    assert [len(e.dataset) for e in bm.valid_stream] == [2, 2]
    assert [len(e.dataset) for e in bm.test_stream] == [4, 4]


@pytest.mark.parametrize("layout", ["cddb", "folders", "deepfakebench", "csv", "embedded"])
def test_naive_trains_one_epoch_over_two_experiences(tmp_path, layout):
    stream = embedded_stream() if layout == "embedded" else fixture_stream(tmp_path, layout)
    bm = to_benchmark(stream, TRANSFORM)
    model = tiny_model(bm.n_classes)
    before = [p.detach().clone() for p in model.parameters()]
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loss_metrics(epoch=True),
                                 loggers=[])
    strategy = naive(model, evaluator=evaluator)
    for experience in bm.train_stream:
        strategy.train(experience)
    results = strategy.eval(bm.test_stream)
    accuracies = [v for k, v in results.items() if k.startswith("Top1_Acc_Exp/eval_phase")]
    assert len(accuracies) == 2 and all(0.0 <= a <= 1.0 for a in accuracies)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_naive_learns_the_fixture_task(tmp_path):
    """Dark real vs bright fake images: eight epochs bring the training loss well down."""
    bm = to_benchmark(fixture_stream(tmp_path, "folders"), TRANSFORM)
    experience = bm.train_stream[0]
    model = tiny_model(bm.n_classes)

    def mean_loss() -> float:
        loader = DataLoader(experience.dataset.eval(), batch_size=32)
        with torch.no_grad():
            return float(sum(nn.functional.cross_entropy(model(x), y, reduction="sum")
                             for x, y, _ in loader) / len(experience.dataset))

    start = mean_loss()
    naive(model, epochs=8, evaluator=EvaluationPlugin(loggers=[])).train(experience)
    assert mean_loss() < 0.6 * start


def test_online_stream_cuts_experiences_into_fixed_size_pieces(tmp_path):
    bm = to_benchmark(fixture_stream(tmp_path, "folders"), TRANSFORM)  # 14 train items each
    pieces = list(online_train_stream(bm, experience_size=4, seed=1))
    assert [len(p.dataset) for p in pieces] == [4, 4, 4, 2] * 2
    assert [p.origin_experience.current_experience for p in pieces] == [0] * 4 + [1] * 4
    first = pieces[:4]
    seen = sorted(t for p in first for t in p.dataset.targets)
    assert seen == sorted(bm.train_stream[0].dataset.targets)
    again = [list(p.dataset.targets) for p in online_train_stream(bm, 4, seed=1)]
    assert again == [list(p.dataset.targets) for p in pieces]
    model = tiny_model(bm.n_classes)
    strategy = naive(model, evaluator=EvaluationPlugin(loggers=[]))
    for piece in online_train_stream(bm, experience_size=4, seed=1):
        strategy.train(piece)
    assert strategy.clock.train_exp_counter == 8
    with pytest.raises(ValueError, match="experience_size must be >= 1"):
        online_train_stream(bm, 0)
