"""SlowFastStrategy on the real Detector (32 px, tiny two-experience tensor benchmark)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import skimage.data
import torch
from avalanche.benchmarks.scenarios import benchmark_from_datasets
from avalanche.benchmarks.scenarios.online import split_online_stream
from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from avalanche.core import SupervisedPlugin

from cldf.methods.napa_vq.plugin import NAPAVQPlugin
from cldf.methods.slow_fast.strategy import SlowFastStrategy
from cldf.detector import AdapterConfig, Detector, DetectorConfig
from cldf.methods.slow_fast import RidgeHead, DiscriminantHead, SlowFastConfig, SlowFastLearners, merge_logits
from cldf.methods.slow_fast.learners import PREVIOUS_FAST, stage_statistics_input
from cldf.recipes import load_recipe
from cldf.avalanche.build import method_plugins, model_for

IMAGE = 32
LR = 0.02


def _detector() -> Detector:
    torch.manual_seed(0)
    cfg = DetectorConfig(
        backbone="tf_efficientnet_lite0", pretrained=True, image_size=IMAGE, adapter=AdapterConfig(r=4), device="cpu"
    )
    return Detector(cfg)


def _photo_crops(n: int, g: torch.Generator) -> torch.Tensor:
    """Random crops of the photos shipped with scikit-image, normalised as timm does (0.5/0.5)."""
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    crops = []
    for i in range(n):
        photo = torch.from_numpy(photos[i % len(photos)]).permute(2, 0, 1).float() / 255.0
        top = int(torch.randint(0, photo.shape[1] - 2 * IMAGE, (1,), generator=g))
        left = int(torch.randint(0, photo.shape[2] - 2 * IMAGE, (1,), generator=g))
        crop = photo[:, top : top + 2 * IMAGE, left : left + 2 * IMAGE]
        crops.append(torch.nn.functional.avg_pool2d(crop[None], 2)[0])
    return (torch.stack(crops) - 0.5) / 0.5


def _experience_data(n: int, fake_class: int, seed: int):
    """Half real photo crops, half 'fakes': crops carrying a generator-specific artefact."""
    g = torch.Generator().manual_seed(seed)
    x = _photo_crops(n, g)
    y = torch.tensor([0, fake_class] * (n // 2))
    fake = y == fake_class
    if fake_class == 1:
        x[fake, 0] += 0.8  # colour cast
    else:
        checker = (torch.arange(IMAGE)[:, None] + torch.arange(IMAGE)[None, :]) % 2 * 1.0 - 0.5
        x[fake] += checker  # high-frequency pattern
    return _make_taskaware_tensor_classification_dataset(x, y)


def _benchmark(train_size: int):
    return with_classes_timeline(
        benchmark_from_datasets(
            train=[_experience_data(train_size, 1, 0), _experience_data(train_size, 2, 1)],
            test=[_experience_data(32, 1, 2), _experience_data(32, 2, 3)],
        )
    )


class _Recorder(SupervisedPlugin):
    """Snapshots what the acceptance checks need, at the strategy's own callbacks."""

    def __init__(self) -> None:
        super().__init__()
        self.slow_before = []
        self.fast_before = []
        self.optimised = []
        self.lrs = []

    def before_training_exp(self, strategy, **kwargs):
        det = strategy.model.detector
        self.slow_before.append(det.adapter_state("slow"))
        self.fast_before.append(det.adapter_state("fast") if "fast" in det.adapter_names else None)
        self.optimised.append({id(p) for group in strategy.optimizer.param_groups for p in group["params"]})
        self.lrs.append([])

    def after_update(self, strategy, **kwargs):
        self.lrs[-1].append(strategy.optimizer.param_groups[0]["lr"])


def _run(train_size: int, prediction: str = "merged", optimizer: str = "sgd", lr: float = LR):
    recorder = _Recorder()
    strategy = SlowFastStrategy(
        model=_detector(),
        config=SlowFastConfig(prediction=prediction, lambda_fa=5.0),
        lr=lr,
        optimizer=optimizer,
        train_mb_size=16,
        first_train_epochs=3,
        train_epochs=2,
        plugins=[recorder],
        evaluator=None,
    )
    bench = _benchmark(train_size)
    for experience in bench.train_stream:
        strategy.train(experience, eval_streams=[])
    return strategy, recorder, bench


@pytest.fixture(scope="module")
def stream_run():
    return _run(48)


def _accuracy(strategy: SlowFastStrategy, stream) -> float:
    model = strategy.model.eval()
    correct = total = 0
    with torch.no_grad():
        for experience in stream:
            for x, y, _ in torch.utils.data.DataLoader(experience.dataset.eval(), batch_size=64):
                correct += int((model(x).argmax(1) == y).sum())
                total += len(y)
    return correct / total


def test_transfer_loss_gradient_reaches_only_the_slow_adapter():
    learners = SlowFastLearners(_detector(), SlowFastConfig(projection_dim=16)).train()
    x = torch.randn(8, 3, IMAGE, IMAGE)
    learners(x)
    loss = learners.auxiliary_loss(torch.zeros(8, dtype=torch.long))
    assert loss.item() > 0
    loss.backward()
    with_grad = [n for n, p in learners.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert with_grad and all(".slow." in n or n.endswith(".slow") for n in with_grad)
    assert any("lora" in n for n in with_grad)
    assert learners.detector.adapter_names == ["slow"]


def test_slow_adapter_is_bit_identical_after_a_later_experience_while_fast_moves(stream_run):
    strategy, recorder, _ = stream_run
    det = strategy.model.detector
    before, after = recorder.slow_before[1], det.adapter_state("slow")
    assert before.keys() == after.keys() and len(before) > 0
    assert any("running_mean" in k for k in before)  # the adapter's own normalisation statistics too
    assert all(torch.equal(before[k], after[k]) for k in before)
    fast_start, fast_end = recorder.fast_before[1], det.adapter_state("fast")
    assert any(not torch.equal(fast_start[k], fast_end[k]) for k in fast_start)
    # The fast learner started as an exact copy of the slow one.
    assert all(torch.equal(fast_start[k], before[k]) for k in before)


def test_optimiser_sees_only_the_trained_adapter_and_its_cosine_head(stream_run):
    strategy, recorder, _ = stream_run
    model = strategy.model
    fast_params = {id(p) for n, p in model.detector.backbone.named_parameters() if ".fast." in n}
    slow_params = {id(p) for n, p in model.detector.backbone.named_parameters() if ".slow." in n}
    head_params = {id(p) for p in model.fast_head.parameters()}
    assert recorder.optimised[1] == fast_params | head_params
    assert not recorder.optimised[1] & slow_params
    assert not recorder.optimised[0] & fast_params


def test_cosine_schedule_spans_exactly_the_iterations_run(stream_run):
    _, recorder, _ = stream_run
    for lrs, epochs in zip(recorder.lrs, (3, 2)):
        total = epochs * math.ceil(48 / 16)
        assert len(lrs) == total
        expected = [LR * 0.5 * (1 + math.cos(math.pi * step / total)) for step in range(1, total + 1)]
        assert lrs == pytest.approx(expected, abs=1e-12)


def _analytic_inputs(model: SlowFastLearners, x: torch.Tensor, paths: list[str]) -> dict[str, torch.Tensor]:
    """What the analytic heads should see, by the configured ``analytic_input``."""
    if model.config.analytic_input == "pooled":
        return model.detector.multi_features(x, paths)
    return {p: stage_statistics_input(o.stage_statistics) for p, o in model.detector.multi_outputs(x, paths).items()}


def test_eval_forward_is_the_entropy_merged_analytic_prediction(stream_run):
    strategy, _, bench = stream_run
    model = strategy.model.eval()
    x = next(iter(torch.utils.data.DataLoader(bench.test_stream[1].dataset.eval(), batch_size=8)))[0]
    with torch.no_grad():
        logits = model(x)
        w_slow, w_fast = strategy.aggregation_weights
        features = model.detector.multi_features(x, ["slow", "fast"])
        inputs = _analytic_inputs(model, x, ["slow", "fast"])
        expected = merge_logits(model.slow_analytic(inputs["slow"]), model.fast_analytic(inputs["fast"]), 1.0)
    assert logits.shape == (8, 3)
    assert torch.allclose(logits, expected.logits, atol=1e-5)
    assert torch.allclose(w_slow + w_fast, torch.ones(8))
    assert torch.allclose(w_fast, expected.w_fast, atol=1e-6)
    assert torch.equal(model.last_features, features["fast"])
    assert len(strategy.chosen_regularisation) == 2 and all(set(c) == {"slow", "fast"} for c in strategy.chosen_regularisation)


@pytest.mark.parametrize("mode", ["fast", "slow"])
def test_single_learner_prediction_modes_use_that_learners_analytic_head(stream_run, mode):
    strategy, _, bench = stream_run
    model = strategy.model.eval()
    x = next(iter(torch.utils.data.DataLoader(bench.test_stream[1].dataset.eval(), batch_size=8)))[0]
    model.config.prediction = mode
    try:
        with torch.no_grad():
            logits = model(x)
            w_slow, w_fast = model.last_weights
            inputs = _analytic_inputs(model, x, [mode])[mode]
            expected = (model.fast_analytic if mode == "fast" else model.slow_analytic)(inputs)
    finally:
        model.config.prediction = "merged"
    assert torch.allclose(logits, expected, atol=1e-5)
    assert torch.equal(w_fast, torch.ones(8) if mode == "fast" else torch.zeros(8))
    assert torch.equal(w_slow + w_fast, torch.ones(8))


def test_merged_prediction_learns_both_generators(stream_run):
    strategy, _, bench = stream_run
    assert _accuracy(strategy, bench.test_stream) >= 0.75


def test_slow_only_prediction_trains_no_fast_learner_and_predicts_as_the_trained_run_read_slow(stream_run):
    """With ``prediction="slow"`` later experiences run no step: the fast adapter stays the slow
    one's copy, no fast analytic head is kept, and every prediction equals that of a run whose
    fast learner did train, read through its slow head."""
    strategy, recorder, bench = _run(48, prediction="slow")
    model = strategy.model.eval()
    assert len(recorder.lrs[0]) > 0 and recorder.lrs[1] == []  # steps in the first experience only
    fast, slow = model.detector.adapter_state("fast"), model.detector.adapter_state("slow")
    assert all(torch.equal(fast[k], slow[k]) for k in slow)
    assert model.fast_analytic is None and set(strategy.chosen_regularisation[1]) == {"slow"}
    trained = stream_run[0].model.eval()
    assert trained.fast_analytic.samples_seen > 0  # the merged run's fast learner did train
    x = torch.cat([next(iter(torch.utils.data.DataLoader(e.dataset.eval(), batch_size=32)))[0]
                   for e in bench.test_stream])
    trained.config.prediction = "slow"
    try:
        with torch.no_grad():
            expected = trained(x)
    finally:
        trained.config.prediction = "merged"
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-6)
    assert _accuracy(strategy, bench.test_stream) >= 0.75  # and it still learns the second generator


# ----------------------------------------------------------------------------- routed experts
@pytest.fixture(scope="module")
def routed_run():
    return _run(32, prediction="routed")


def test_each_experience_leaves_a_frozen_expert_with_its_own_classes(routed_run):
    strategy, _, _ = routed_run
    model, det = strategy.model, strategy.model.detector
    experts = model.experts
    assert len(experts) == 2 and experts.adapters == ["slow", "expert1"]
    assert {"slow", "expert1"} <= det.frozen_adapters and "fast" not in det.frozen_adapters
    for name, tensor in det.adapter_state("expert1").items():  # the fast adapter as it ended experience 2
        assert torch.equal(tensor, det.adapter_state("fast")[name.replace("expert1", "fast")])
    assert experts.class_masks.tolist() == [[True, True, False], [True, False, True]]
    assert model.fast_analytic is None  # the routed prediction keeps no fast analytic head


def test_routed_prediction_is_the_two_level_mixture_computed_by_hand(routed_run):
    strategy, _, bench = routed_run
    model = strategy.model.eval()
    x = torch.cat([next(iter(torch.utils.data.DataLoader(bench.test_stream[i].dataset.eval(), batch_size=8)))[0]
                   for i in (0, 1)])
    with torch.no_grad():
        logits = model(x)
        z_slow = model.slow_analytic(_analytic_inputs(model, x, ["slow"])["slow"])
        p_slow = z_slow.softmax(1)
        expected = p_slow.clone()
        for i in range(len(x)):
            masses = [float(p_slow[i, mask].sum()) for mask in model.experts.class_masks]
            e = int(np.argmax(masses))
            adapter = model.experts.adapter_name(e)
            z = model.experts.logits(e, _analytic_inputs(model, x[i:i + 1], [adapter])[adapter])[0]
            mask = model.experts.class_masks[e]
            expected[i, mask] = masses[e] * (z[mask] + z_slow[i, mask]).softmax(0)
            assert float(model.last_weights[1][i]) == float(e > 0)
    assert torch.allclose(logits.exp(), expected, atol=1e-5)
    assert torch.allclose(logits.exp().sum(1), torch.ones(len(x)), atol=1e-5)
    assert 0 < float(model.last_weights[1].mean()) < 1  # both the slow learner and the fast expert answer


def test_the_fast_expert_decides_its_images_and_only_those(routed_run):
    strategy, _, bench = routed_run
    model, det = strategy.model.eval(), strategy.model.detector
    x = torch.cat([next(iter(torch.utils.data.DataLoader(bench.test_stream[i].dataset.eval(), batch_size=16)))[0]
                   for i in (0, 1)])
    kept = det.adapter_state("expert1")
    with torch.no_grad():
        before = model(x)
        routed_to_fast = model.last_weights[1].bool()
        det.load_adapter_state("fast", {k: v + 0.1 for k, v in det.adapter_state("fast").items()})
        assert torch.equal(model(x), before)  # the live fast adapter does not vote; its frozen expert does
        det.load_adapter_state("expert1", {k: v * 1.5 for k, v in kept.items()})
        after = model(x)
        det.load_adapter_state("expert1", kept)
    changed = (after - before).abs().amax(1) > 1e-4
    assert routed_to_fast.any() and torch.equal(changed, routed_to_fast)


def test_routed_prediction_learns_both_generators(routed_run):
    strategy, _, bench = routed_run
    assert _accuracy(strategy, bench.test_stream) >= 0.75


def test_adamw_trains_the_adapter_of_each_phase_on_the_cosine_schedule():
    strategy, recorder, bench = _run(32, prediction="routed", optimizer="adamw", lr=3e-3)
    assert isinstance(strategy.optimizer, torch.optim.AdamW)
    trained = {id(p) for p in strategy.model.trainable_parameters()}
    assert recorder.optimised[-1] == trained and recorder.optimised[0] != trained  # the fast learner's, then
    assert recorder.lrs[-1][0] < 3e-3 and recorder.lrs[-1][-1] == pytest.approx(0.0, abs=1e-12)
    assert not all(torch.equal(v, recorder.fast_before[-1][k]) for k, v in
                   strategy.model.detector.adapter_state("expert1").items())  # the fast adapter moved
    with pytest.raises(ValueError, match="optimizer='adam'; valid: adamw, sgd"):
        SlowFastStrategy(model=_detector(), optimizer="adam")


def _state_shapes(strategy: SlowFastStrategy) -> dict[str, tuple[int, ...]]:
    shapes = {f"model.{k}": tuple(v.shape) for k, v in strategy.model.state_dict().items()}
    for i, state in strategy.optimizer.state_dict()["state"].items():
        shapes.update({f"optim.{i}.{k}": tuple(v.shape) for k, v in state.items() if torch.is_tensor(v)})
    for owner, obj in (("strategy", strategy), ("learners", strategy.model)):
        shapes.update({f"{owner}.{k}": tuple(v.shape) for k, v in vars(obj).items() if torch.is_tensor(v)})
    return shapes


def test_state_holds_no_exemplar_and_does_not_grow_with_images(stream_run):
    small, _, _ = stream_run
    large, _, _ = _run(80)
    shapes = _state_shapes(small)
    assert not [k for k, s in shapes.items() if len(s) == 4 and s[1:] == (3, IMAGE, IMAGE)]
    # The last batch's features are kept for plug-ins: batch-sized, never image-count-sized.
    per_batch = {k for k in shapes if k.startswith("learners.last_") or k.startswith("learners._teacher")}
    assert all(shapes[k][0] <= 64 for k in per_batch)
    large_shapes = _state_shapes(large)
    assert {k: v for k, v in shapes.items() if k not in per_batch} == {
        k: v for k, v in large_shapes.items() if k not in per_batch
    }
    assert int(large.model.slow_analytic.samples_seen) == 160


def test_online_stream_needs_task_boundaries_and_switches_learners_once_per_experience():
    bench = _benchmark(32)
    strategy = SlowFastStrategy(
        model=_detector(), config=SlowFastConfig(projection_dim=32), train_mb_size=16, evaluator=None
    )
    with pytest.raises(ValueError, match="access_task_boundaries=True"):
        strategy.train(next(iter(split_online_stream(bench.train_stream, 16))), eval_streams=[])
    online = split_online_stream(bench.train_stream, 16, access_task_boundaries=True)
    phases = []
    for sub in online:
        strategy.train(sub, eval_streams=[])
        phases.append(strategy.model.learner)
    assert phases == ["slow", "fast", "fast", "fast"]
    assert len(strategy.chosen_regularisation) == 2
    assert int(strategy.model.slow_analytic.samples_seen) == 64


@pytest.mark.parametrize("analytic_input", ["pooled", "stage_statistics"])
def test_analytic_heads_read_the_configured_input_and_last_features_stay_pooled(analytic_input):
    cfg = SlowFastConfig(analytic_head="ridge", projection_dim=32, ridge_lambdas=(1e-1, 1e1), analytic_input=analytic_input)
    model = SlowFastLearners(_detector(), cfg)
    model.grow_classes(2)
    det = model.detector
    expected_dim = det.num_features if analytic_input == "pooled" else sum(det.stage_statistics_dims())
    assert model.slow_analytic.projection.shape == (expected_dim, 32)
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(10, 3, IMAGE, IMAGE, generator=g), torch.arange(10) % 2
    model.begin_analytic_experience()
    model.accumulate_analytic(x, y)
    model.finish_analytic_experience()
    model.eval()
    with torch.no_grad():
        logits = model(x)
        assert torch.allclose(logits, model.slow_analytic(_analytic_inputs(model, x, ["slow"])["slow"]), atol=1e-5)
        assert torch.allclose(model.last_features, det.multi_features(x, ["slow"])["slow"], atol=1e-5)


@pytest.mark.parametrize("analytic_head", ["discriminant", "ridge"])
def test_the_configured_analytic_head_fits_the_slow_learners_statistics(analytic_head):
    cfg = SlowFastConfig(analytic_head=analytic_head, projection_dim=32, ridge_lambdas=(1e-1, 1e1))
    model = SlowFastLearners(_detector(), cfg)
    model.grow_classes(2)
    expected = DiscriminantHead if analytic_head == "discriminant" else RidgeHead
    assert type(model.slow_analytic) is expected and model.fast_analytic is None  # the slow head alone predicts
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(12, 3, IMAGE, IMAGE, generator=g), torch.arange(12) % 2
    model.begin_analytic_experience()
    model.accumulate_analytic(x, y)
    model.finish_analytic_experience()
    assert int(model.slow_analytic.samples_seen) == 12
    if analytic_head == "discriminant":  # its statistics are the class means of the stage statistics
        with torch.no_grad():
            inputs = _analytic_inputs(model.eval(), x, ["slow"])["slow"].double()
        torch.testing.assert_close(model.slow_analytic.class_sums[1] / 6, inputs[y == 1].mean(0), rtol=1e-4, atol=1e-5)


class _DriftRecorder(SupervisedPlugin):
    """The fast adapter at the start of each experience, and whether its frozen copy exists while training."""

    def __init__(self) -> None:
        super().__init__()
        self.fast_at_start, self.copy_while_training = [], []

    def before_training_exp(self, strategy, **kwargs):
        det = strategy.model.detector
        self.fast_at_start.append(det.adapter_state("fast") if "fast" in det.adapter_names else None)

    def before_training_epoch(self, strategy, **kwargs):
        self.copy_while_training.append(PREVIOUS_FAST in strategy.model.detector.adapter_names)


def test_affine_drift_compensation_maps_old_fast_statistics_into_the_current_fast_features():
    recorder = _DriftRecorder()
    strategy = SlowFastStrategy(
        model=_detector(), config=SlowFastConfig(drift_compensation="affine", prediction="merged"),
        lr=LR, train_mb_size=16, plugins=[recorder], evaluator=None,
    )
    bench = _benchmark(32)
    for experience in bench.train_stream:
        strategy.train(experience, eval_streams=[])
    model, det = strategy.model.eval(), strategy.model.detector
    assert recorder.copy_while_training == [False, True]  # the copy lives only while the fast learner trains
    assert PREVIOUS_FAST not in det.adapter_names and det.adapter_names == ["slow", "fast"]
    # by hand: fit x_new ≈ a x_old + b per dimension on experience 2's images (fast adapter before
    # / after experience 2), then map experience 1's class-1 sums summed with the fast adapter of then
    det.add_adapter("check", copy_from="fast")
    det.load_adapter_state("check", recorder.fast_at_start[1])
    det.freeze_adapter("check")
    loader = lambda i: torch.utils.data.DataLoader(bench.train_stream[i].dataset.eval(), batch_size=64)  # noqa: E731
    with torch.no_grad():
        old, new = zip(*[(_analytic_inputs(model, x, ["check"])["check"], _analytic_inputs(model, x, ["fast"])["fast"])
                         for x, _, _ in loader(1)])
        first = [(_analytic_inputs(model, x, ["check"])["check"], y) for x, y, _ in loader(0)]
    old, new = torch.cat(old).double(), torch.cat(new).double()
    variance = old.var(0, unbiased=False)
    varied = variance > 1e-9  # e.g. the std of a 1 x 1 map is always 0: those keep a = 1
    a = torch.where(varied, ((old - old.mean(0)) * (new - new.mean(0))).mean(0) / variance.clamp_min(1e-30), 1.0)
    b = new.mean(0) - a * old.mean(0)
    assert varied.sum() > 500 and (a[varied] - 1).abs().max() > 0.01  # the features did drift
    class_one = torch.cat([x[y == 1] for x, y in first]).double()
    expected = a * class_one.sum(0) + len(class_one) * b
    torch.testing.assert_close(model.fast_analytic.class_sums[1], expected, rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize("prediction", ["slow", "merged"])
def test_napa_vq_on_the_slow_fast_learners_reads_the_trained_adapter_whatever_predicts(prediction):
    recipe = load_recipe("cldf", [f"slow_fast.prediction={prediction}"])
    det = _detector()
    model = model_for(recipe, det)
    (napa,) = [p for p in method_plugins(recipe, det) if isinstance(p, NAPAVQPlugin)]
    x = torch.randn(6, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(9))
    model.start_fast_learner()
    model.eval()
    with torch.no_grad():
        det.load_adapter_state("fast", {k: v + 0.05 for k, v in det.adapter_state("fast").items()})
        seen = napa.features_of(x)
        fast, slow = (det.multi_features(x, [name])[name] for name in ("fast", "slow"))
    torch.testing.assert_close(seen, fast)
    assert not torch.allclose(fast, slow, atol=1e-3)  # the two learners differ, so the check can fail


def test_napa_vq_prototypes_come_from_the_strategys_one_end_of_experience_pass(monkeypatch):
    recipe = load_recipe("cldf", ["slow_fast.lambda_fa=5"])
    det = _detector()
    model = model_for(recipe, det)
    (napa,) = [p for p in method_plugins(recipe, det) if isinstance(p, NAPAVQPlugin)]

    def own_pass(*args, **kwargs):
        raise AssertionError("NAPA-VQ made its own end-of-experience pass")

    monkeypatch.setattr(napa, "_experience_feature_sums", own_pass)
    strategy = SlowFastStrategy(model=model, config=recipe.methods["slow_fast"], lr=LR, train_mb_size=16,
                                plugins=[napa], evaluator=None)
    bench = _benchmark(32)
    for i, experience in enumerate(bench.train_stream):
        strategy.train(experience, eval_streams=[])
        # by hand: the mean normalised feature of the experience's new fake class, through the adapter it trained
        loader = torch.utils.data.DataLoader(experience.dataset.eval(), batch_size=64)
        model.eval()
        with torch.no_grad():
            pairs = [(napa.learner.embed(det.multi_features(x, ["fast"])["fast"]), y) for x, y, _ in loader]
        features, labels = torch.cat([f for f, _ in pairs]), torch.cat([y for _, y in pairs])
        new_class = i + 1
        torch.testing.assert_close(napa.learner.prototypes.means[new_class], features[labels == new_class].mean(0),
                                   rtol=1e-4, atol=1e-5, msg=lambda m: f"experience {i}: {m}")
    assert bool(napa.learner.prototypes.known[:3].all())
    assert not strategy.experience_pass.will_run and not strategy.experience_pass._consumers


def test_a_state_with_a_fast_analytic_head_loads_into_a_prediction_that_keeps_none():
    """Checkpoints from when every prediction kept a fast analytic head still load (the head is dropped)."""
    written = SlowFastLearners(_detector(), SlowFastConfig(prediction="merged"))
    written.slow_analytic.gram.normal_()
    state = written.state_dict()
    assert any(k.startswith("fast_analytic.") for k in state)
    model = SlowFastLearners(_detector(), SlowFastConfig(prediction="slow"))
    incompatible = model.load_state_dict(state, strict=True)
    assert not incompatible.unexpected_keys and not incompatible.missing_keys
    assert model.fast_analytic is None and torch.equal(model.slow_analytic.gram, written.slow_analytic.gram)
