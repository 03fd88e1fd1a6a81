"""Detection metrics against values computed by hand on small score arrays."""

import math
import warnings

import numpy as np
import pytest
import torch

from cldf.metrics import (
    SingleClassWarning,
    accuracy,
    attribution_accuracy,
    auc,
    average_precision,
    detection_summary,
    eer,
    prediction_metrics,
)
from cldf.scores import fake_log_odds_from_logits, is_fake_target, p_fake_from_logits

LABELS = [0, 0, 1, 1]

# scores, AUC, EER, AP, accuracy at 0.5 (p >= 0.5 is fake); worked out in the comments.
CASES = {
    # pairs (fake, real): 0.35>0.1, 0.35<0.4, 0.8>both -> 3/4. ROC (FPR, FNR): (0,1) (0,.5)
    # (.5,.5) (.5,0) (1,0): FPR = FNR at the point (.5,.5). Ranked F R F: AP = .5*1 + .5*2/3.
    "mixed": ([0.1, 0.4, 0.35, 0.8], 0.75, 0.5, 0.5 + 0.5 * 2 / 3, 0.75),
    # tie between a real and a fake at 0.5 counts one half: (1 + .5 + 2) / 4. ROC: (0,1) (0,.5)
    # (.5,0) (1,0): crossing halfway along the middle segment at FPR = FNR = .25.
    # Thresholds 0.9 (P=1, R=.5) and 0.5 (P=2/3, R=1). 0.5 counts as fake: 3 of 4 right.
    "ties": ([0.2, 0.5, 0.5, 0.9], 0.875, 0.25, 0.5 + 0.5 * 2 / 3, 0.75),
    "separable": ([0.1, 0.2, 0.8, 0.9], 1.0, 0.0, 1.0, 1.0),
    # ranked R R F F: P = 1/3 at R = .5, P = 2/4 at R = 1.
    "inverted": ([0.9, 0.8, 0.2, 0.1], 0.0, 1.0, 0.5 / 3 + 0.5 * 0.5, 0.0),
    # one threshold: ROC (0,1) -> (1,0), FPR = FNR = .5; precision 1/2 at recall 1.
    "all_tied": ([0.5, 0.5, 0.5, 0.5], 0.5, 0.5, 0.5, 0.5),
}


@pytest.mark.parametrize("case", CASES)
def test_metrics_equal_hand_computed_values(case):
    scores, want_auc, want_eer, want_ap, want_acc = CASES[case]
    assert auc(scores, LABELS) == pytest.approx(want_auc)
    assert eer(scores, LABELS) == pytest.approx(want_eer)
    assert average_precision(scores, LABELS) == pytest.approx(want_ap)
    assert accuracy(scores, LABELS) == pytest.approx(want_acc)
    summary = detection_summary(torch.tensor(scores), torch.tensor(LABELS))
    want = {"auc": want_auc, "eer": want_eer, "ap": want_ap, "acc": want_acc}
    assert summary == pytest.approx(want)


def test_eer_interpolates_between_roc_points():
    # reals 0.1, 0.5; fakes 0.5, 0.5, 0.9. ROC (FPR, FNR): (0,1) (0,2/3) (.5,0) (1,0).
    # On the segment (0,2/3) -> (.5,0), d = FPR - FNR goes -2/3 -> 1/2, so t = (2/3)/(7/6) = 4/7:
    # FPR = 4/7 * .5 = 2/7 and FNR = 2/3 * (1 - 4/7) = 2/7.
    scores = [0.1, 0.5, 0.5, 0.5, 0.9]
    labels = [0, 0, 1, 1, 1]
    assert eer(scores, labels) == pytest.approx(2 / 7)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0]])
def test_single_class_gives_nan_with_named_warning(labels):
    scores = [0.2, 0.6, 0.9]
    for metric in (auc, eer, average_precision):
        with pytest.warns(SingleClassWarning, match="only"):
            assert math.isnan(metric(scores, labels))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predicted_fake = np.array(scores) >= 0.5
        assert accuracy(scores, labels) == pytest.approx(np.mean(predicted_fake == labels))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="differ in length"):
        auc([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match="0 \\(real\\) or 1 \\(fake\\)"):
        auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="NaN"):
        auc([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        eer([], [])


def test_p_fake_is_one_minus_real_softmax_mass():
    logits = torch.tensor([[2.0, 0.0, 1.0], [-1.0, 3.0, 0.5]])
    e = logits.exp()
    want_one_real = 1 - e[:, 0] / e.sum(1)
    want_two_real = 1 - (e[:, 0] + e[:, 2]) / e.sum(1)
    assert torch.allclose(p_fake_from_logits(logits, [0]), want_one_real)
    assert torch.allclose(p_fake_from_logits(logits, [0, 2]), want_two_real)


def test_p_fake_keeps_ranking_of_confident_reals():
    # 1 - softmax rounds both to exactly 0.0 in float32 and would create a tie.
    logits = torch.tensor([[20.0, -20.0], [30.0, -30.0]])
    assert (1 - logits.softmax(1)[:, 0]).eq(0).all()
    p = p_fake_from_logits(logits, [0])
    assert p[0] > p[1] > 0


def test_rankings_use_log_odds_so_confident_fakes_do_not_tie():
    # Both rows have p_fake = 1.0 exactly in float32 and float64; their log-odds are 40 and 50.
    logits = torch.tensor([[-20.0, 20.0], [-25.0, 25.0], [3.0, 0.0], [0.0, 1.0]])
    assert p_fake_from_logits(logits[:2].double(), [0]).eq(1).all()
    odds = fake_log_odds_from_logits(logits, [0])
    torch.testing.assert_close(odds, torch.tensor([40.0, 50.0, -3.0, 1.0], dtype=torch.float64))
    # row 0 is real (scored 40), row 1 fake (50): ranked by log-odds the fake wins that pair, so
    # AUC = 3/4; the tie at p_fake = 1 would have given that pair half credit (2.5/4)
    values = prediction_metrics(logits, torch.tensor([0, 1, 0, 1]), real_classes=[0], seen_classes=[0, 1])
    assert values["auc"] == pytest.approx(0.75)
    assert auc(p_fake_from_logits(logits, [0]), [0, 1, 0, 1]) == pytest.approx(0.625)
    assert values["acc"] == pytest.approx(0.75)  # p_fake >= 0.5 for rows 0, 1, 3
    assert fake_log_odds_from_logits(torch.zeros(2, 1), [0]).eq(torch.finfo(torch.float64).min).all()


def test_p_fake_rejects_unknown_real_class():
    with pytest.raises(ValueError, match="outside the class map's ids 0..1"):
        p_fake_from_logits(torch.zeros(2, 2), [3])
    with pytest.raises(ValueError, match="outside the class map's ids 0..5"):
        p_fake_from_logits(torch.zeros(2, 2), [0, 6], num_classes=6)
    with pytest.raises(ValueError, match="empty"):
        p_fake_from_logits(torch.zeros(2, 2), [])


def test_p_fake_with_per_generator_real_classes_not_all_learned():
    # class map real:a, fake:a, real:b, fake:b, real:c, fake:c; the heads know a and b only
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0], [0.0, 0.0, 0.0, 3.0]])
    z = logits.exp()
    expected = (z[:, 1] + z[:, 3]) / z.sum(1)  # real:a and real:b (columns 0, 2) are real
    got = p_fake_from_logits(logits, [0, 2, 4], num_classes=6)
    assert torch.allclose(got, expected)
    # a column grown but never trained (here fake:b) adds nothing
    only_a = p_fake_from_logits(logits, [0, 2, 4], num_classes=6, learned_classes=[0, 1, 2])
    assert torch.allclose(only_a, z[:, 1] / z[:, :3].sum(1))
    # a real image of the unlearned source c is still real ground truth
    assert is_fake_target(torch.tensor([4, 5, 0]), [0, 2, 4]).tolist() == [0, 1, 0]


def test_attribution_counts_every_real_source_as_the_answer_real():
    logits = torch.tensor([[0.0, 0.0, 5.0, 0.0], [0.0, 0.0, 0.0, 5.0], [5.0, 0.0, 0.0, 0.0]])
    targets = torch.tensor([0, 3, 1])  # real:a predicted real:b (right), fake:b right, fake:a wrong
    assert attribution_accuracy(logits, targets, real_classes=[0, 2]) == pytest.approx(2 / 3)
    assert attribution_accuracy(logits, targets) == pytest.approx(1 / 3)


def test_is_fake_target_for_tensors_and_arrays():
    ids = [0, 1, 2, 3, 0]
    assert is_fake_target(torch.tensor(ids), [0, 3]).tolist() == [0, 1, 1, 0, 0]
    assert is_fake_target(np.array(ids), [0]).tolist() == [0, 1, 1, 1, 0]


def test_attribution_uses_only_seen_classes():
    logits = torch.tensor([[0.0, 1.0, 5.0], [3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 9.0]])
    targets = [1, 0, 1, 2]
    # all classes: predictions 2, 0, 1, 2 -> 3 of 4; seen {0, 1}: 1, 0, 1, 0 -> 3 of 4 too,
    # but a different sample is wrong: the class-2 sample cannot be attributed yet.
    assert attribution_accuracy(logits, targets) == pytest.approx(0.75)
    assert attribution_accuracy(logits, targets, seen_classes=[0, 1]) == pytest.approx(0.75)
    assert attribution_accuracy(logits[:3], targets[:3], seen_classes=[0, 1]) == pytest.approx(1.0)
    assert attribution_accuracy(logits[:3], targets[:3]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="outside the logits' columns"):
        attribution_accuracy(logits, targets, seen_classes=[0, 5])


def test_prediction_metrics_from_logits():
    # p_fake = 1 - softmax(z)_0 = 0.42, 0.73, 0.21, 0.90; targets 0, 0, 2, 1 make rows 2 and 3
    # fake: 0.21 is below both reals, 0.90 above both, so AUC = 2/4.
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, -5.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.5]])
    targets = torch.tensor([0, 0, 2, 1])
    values = prediction_metrics(logits, targets, real_classes=[0], seen_classes=[0, 1])
    assert values["auc"] == pytest.approx(auc(p_fake_from_logits(logits, [0]), [0, 0, 1, 1]))
    assert values["auc"] == pytest.approx(0.5)
    # argmax over classes 0, 1: 0, 1, 0, 1 -> rows 0 and 3 right
    assert values["attribution"] == pytest.approx(0.5)
    assert math.isnan(prediction_metrics(logits, targets, [0], seen_classes=[])["attribution"])
