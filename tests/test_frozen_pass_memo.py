"""The per-experience memo of frozen passes: same outputs, each image computed once per pass, bounded, dropped."""

import numpy as np
import torch
from avalanche.core import SupervisedPlugin

from cldf.detector import Detector, DetectorConfig
from cldf.detector.frozen_pass_memo import FrozenPassMemo


def detector() -> Detector:
    torch.manual_seed(0)
    return Detector(DetectorConfig(pretrained=False, image_size=32))


def test_outputs_match_and_each_image_is_computed_once():
    det = detector()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        plain = det.features(x.clone())  # (a new tensor: the same-batch reuse would skip the memo)
        memo = det.start_frozen_pass_memo(64)
        first = det.features(x)
        again = det.features(x[[5, 0, 3]])  # a later epoch: other batches, other order
        mixed = det.features(torch.cat([x[:2], torch.randn(2, 3, 32, 32)]))
        det.drop_frozen_pass_memo()
    assert torch.equal(first, plain)  # a batch of unseen images is computed whole, as before
    assert torch.allclose(again, plain[[5, 0, 3]], atol=1e-5)
    assert torch.allclose(mixed[:2], plain[:2], atol=1e-5)
    assert (memo.misses["prefix"], memo.hits["prefix"]) == (8, 5)


def test_the_budget_bounds_what_is_kept():
    calls = []

    def compute(batch):
        calls.append(len(batch))
        return [batch.flatten(1)[:, :4].clone()]

    x = torch.randn(4, 3, 8, 8)
    memo = FrozenPassMemo(budget_bytes=2 * 4 * 4)  # two rows of four float32
    keys = memo.digests(x)
    memo.outputs(("pass",), keys, lambda index: compute(x if index is None else x[index]))
    out = memo.outputs(("pass",), keys, lambda index: compute(x if index is None else x[index]))[0]
    assert torch.equal(out, x.flatten(1)[:, :4]) and calls == [4, 2] and memo.used_bytes == 32


def test_a_run_keeps_nothing_after_each_experience_and_learns_the_same(tmp_path):
    from test_resume import RECIPE_SETS, STREAM_SETS

    from cldf.config_io import apply_overrides
    from cldf.recipes import load_recipe
    from cldf.resources import EMBEDDED_STREAM
    from cldf.run.runner import assemble, train_experiences, RunProgress
    from cldf.streams import build_stream, load_stream_spec

    stream = build_stream(load_stream_spec(EMBEDDED_STREAM, overrides=apply_overrides(
        {"experiences": ["gan_upsample", "self_blend"]}, STREAM_SETS)))
    aucs = []
    for budget in (0, 64):
        recipe = load_recipe("safe", [*RECIPE_SETS, "training.epochs=2", f"training.frozen_pass_memo_mb={budget}",
                                      "slow_fast.prediction=merged"])  # the fast learner trains too
        parts = assemble(recipe, stream, 0, [], False)
        memos = []
        parts.strategy.plugins.append(type("Watch", (SupervisedPlugin,), {
            "after_training_exp": lambda self, s, **k: memos.append(parts.detector._memo)})())
        train_experiences(parts, RunProgress(), stream, {}, None, "safe", lambda line: None)
        assert parts.detector._memo is None  # dropped once the experience is done
        if budget:  # the second epoch and the end-of-experience pass looked every image up
            assert all(m.hits["prefix"] >= 2 * m.misses["prefix"] > 0 for m in memos) and memos[0] is not memos[1]
            # the teachers' tails: the pretrained one in the second epoch of the first experience;
            # the frozen slow learner in the second epoch and in the end-of-experience pass later
            assert memos[0].hits["pretrained"] == memos[0].misses["pretrained"] > 0
            assert memos[1].hits["slow"] >= 2 * memos[1].misses["slow"] > 0
        aucs.append(parts.metric.matrix("auc"))
    assert np.allclose(aucs[0], aucs[1], atol=0.02)


def test_napa_vq_does_not_cache_a_snapshot_the_memo_already_keeps():
    from cldf.detector import DetectorAdapterSnapshot
    from cldf.methods.napa_vq import CachedPreviousFeatures

    det = detector()
    previous = DetectorAdapterSnapshot(det, name="napa_prev")
    previous.snapshot()
    cache = CachedPreviousFeatures(previous, max_bytes=2**20)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        memo = det.start_frozen_pass_memo(64)
        kept, again = cache(x), cache(x.clone())
        det.drop_frozen_pass_memo()
        assert cache._bytes == 0 and (memo.misses["napa_prev"], memo.hits["napa_prev"]) == (4, 4)
        plain = cache(x.clone())  # no memo: the cache keeps them
    assert cache._bytes > 0 and cache.misses == 4
    assert torch.allclose(kept, plain, atol=1e-5) and torch.allclose(again, plain, atol=1e-5)
