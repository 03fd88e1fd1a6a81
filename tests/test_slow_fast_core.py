"""Slow/fast core: losses, heads, aggregation and config, checked against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cldf.methods.slow_fast import (
    RidgeHead,
    CosineHead,
    DiscriminantHead,
    SlowFastConfig,
    cross_classification_loss,
    feature_alignment_loss,
    merge_logits,
    prediction_entropy,
    transfer_loss,
)
from cldf.methods.slow_fast.experts import FastExperts


def _decorrelated_features(batch: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Features whose batch-standardised columns are orthonormal up to scale (M = I)."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(raw - raw.mean(0))
    return (q * 3.0 + torch.randn(dim, generator=g, dtype=torch.float64)).float()


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "field, value",
    [
        ("transfer_form", "barlow"),
        ("prediction", "both"),
        ("lambda_fa", -1.0),
        ("gamma", float("nan")),
        ("holdout_fraction", 1.0),
        ("projection_dim", 0),
        ("ridge_lambdas", ()),
        ("cosine_scale_init", 0.0),
        ("analytic_input", "logits"),
        ("drift_compensation", "linear"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SlowFastConfig(**{field: value})


def test_config_defaults_follow_the_spec():
    cfg = SlowFastConfig()
    assert (cfg.lambda_diag, cfg.lambda_rdn, cfg.lambda_fa, cfg.lambda_cc, cfg.gamma) == (1, 1, 50, 1, 1)
    assert (cfg.analytic_head, cfg.shrinkage, cfg.prediction, cfg.drift_compensation) == ("discriminant", 0.3, "slow", "none")
    assert cfg.ridge_lambdas == (1e3, 1e4, 1e5, 1e6, 1e7, 1e8)
    assert (cfg.projection_dim, cfg.holdout_fraction, cfg.cosine_scale_init) == (2048, 0.2, 10.0)


# ----------------------------------------------------------------------------- transfer loss
def test_standardised_transfer_loss_is_zero_for_identical_decorrelated_features_and_grows_with_change():
    f_p = _decorrelated_features(64, 8)
    same = transfer_loss(f_p.clone(), f_p, lambda_diag=1.0, lambda_rdn=1.0)
    assert same.item() < 1e-6
    # Standardisation makes the loss blind to per-dimension scale and shift.
    rescaled = transfer_loss(f_p * 5.0 + 2.0, f_p, lambda_diag=1.0, lambda_rdn=1.0)
    assert rescaled.item() < 1e-6
    g = torch.Generator().manual_seed(1)
    previous = same.item()
    for noise in (0.1, 0.5, 2.0):
        changed = transfer_loss(f_p + noise * torch.randn(f_p.shape, generator=g), f_p, lambda_diag=1.0, lambda_rdn=1.0)
        assert changed.item() > previous
        previous = changed.item()


def test_standardised_diag_term_is_minimal_at_identical_correlated_features():
    g = torch.Generator().manual_seed(2)
    f_p = torch.randn(32, 16, generator=g) @ torch.randn(16, 16, generator=g)
    f_s = f_p.clone().requires_grad_(True)
    loss = transfer_loss(f_s, f_p, lambda_diag=1.0, lambda_rdn=0.0)
    loss.backward()
    assert loss.item() < 1e-6
    assert f_s.grad.abs().max().item() < 1e-4
    other = transfer_loss(torch.randn(32, 16, generator=g), f_p, lambda_diag=1.0, lambda_rdn=0.0)
    assert other.item() > 0.5


def test_standardised_transfer_loss_matches_hand_computation_and_never_touches_pretrained_grad():
    g = torch.Generator().manual_seed(3)
    f_s = torch.randn(10, 4, generator=g, requires_grad=True)
    f_p = torch.randn(10, 4, generator=g, requires_grad=True)
    loss = transfer_loss(f_s, f_p, lambda_diag=2.0, lambda_rdn=3.0)
    a = (f_s - f_s.mean(0)) / (f_s.var(0, unbiased=False) + 1e-5).sqrt()
    b = (f_p - f_p.mean(0)) / (f_p.var(0, unbiased=False) + 1e-5).sqrt()
    m = (a.T @ b / 10).detach().numpy()
    off = m[~np.eye(4, dtype=bool)]
    expected = 2.0 * np.mean((1 - np.diag(m)) ** 2) + 3.0 * np.mean(off**2)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert f_p.grad is None and f_s.grad is not None and f_s.grad.abs().sum() > 0


def test_original_transfer_loss_is_summed_over_l2_normalised_features():
    f_s = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    f_p = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    a = np.array([[0.6, 0.8], [1.0, 0.0]])
    b = np.array([[0.0, 1.0], [1 / math.sqrt(2), 1 / math.sqrt(2)]])
    m = a.T @ b / 2
    expected = 0.5 * ((m[0, 0] - 1) ** 2 + (m[1, 1] - 1) ** 2) + 0.25 * (m[0, 1] ** 2 + m[1, 0] ** 2)
    got = transfer_loss(f_s, f_p, lambda_diag=0.5, lambda_rdn=0.25, form="original")
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_original_diag_term_cannot_fall_below_d_minus_two():
    f = _decorrelated_features(64, 16)
    assert transfer_loss(f, f, lambda_diag=1.0, lambda_rdn=0.0, form="original").item() >= 16 - 2


def test_transfer_loss_rejects_mismatched_shapes_and_forms():
    with pytest.raises(ValueError, match="equal shape"):
        transfer_loss(torch.zeros(4, 3), torch.zeros(4, 2), lambda_diag=1, lambda_rdn=1)
    with pytest.raises(ValueError, match="form='bad'"):
        transfer_loss(torch.zeros(4, 3), torch.zeros(4, 3), lambda_diag=1, lambda_rdn=1, form="bad")


# ----------------------------------------------------------------------------- fast-learner terms
def test_feature_alignment_is_mean_one_minus_cosine_and_only_moves_the_fast_features():
    f_s = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    f_f = torch.tensor([[2.0, 0.0], [1.0, 1.0]], requires_grad=True)
    loss = feature_alignment_loss(f_f, f_s)
    assert loss.item() == pytest.approx((0.0 + (1.0 - 1.0 / math.sqrt(2))) / 2)
    loss.backward()
    assert f_s.grad is None and f_f.grad.abs().sum() > 0


def test_cross_classification_matches_explicit_concatenation():
    torch.manual_seed(0)
    fast_head, slow_head = CosineHead(6, 5), CosineHead(6, 5)
    slow_head.requires_grad_(False)
    f_f = torch.randn(4, 6, requires_grad=True)
    f_s = torch.randn(4, 6, requires_grad=True)
    y = torch.tensor([3, 4, 3, 0])
    old = torch.tensor([0, 1, 2])
    got = cross_classification_loss(fast_head, slow_head, f_f, f_s, y, old)
    labels = torch.tensor([0, 1, 2, 3, 4, 3, 0])
    expected = F.cross_entropy(fast_head(torch.cat([slow_head.weight[:3], f_s])), labels) + F.cross_entropy(
        slow_head(torch.cat([fast_head.weight[:3], f_f])), labels
    )
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    got.backward()
    assert f_s.grad is None
    assert fast_head.weight.grad[:3].abs().sum() > 0 and f_f.grad.abs().sum() > 0


def test_cross_classification_training_decreases_the_loss():
    torch.manual_seed(1)
    fast_head, slow_head = CosineHead(8, 4), CosineHead(8, 4)
    slow_head.requires_grad_(False)
    f_s = torch.randn(16, 8)
    y = torch.randint(0, 4, (16,))
    f_f = torch.randn(16, 8, requires_grad=True)
    opt = torch.optim.SGD([f_f, *fast_head.parameters()], lr=0.5)
    old = torch.tensor([0, 1])
    first = cross_classification_loss(fast_head, slow_head, f_f, f_s, y, old).item()
    for _ in range(30):
        opt.zero_grad()
        cross_classification_loss(fast_head, slow_head, f_f, f_s, y, old).backward()
        opt.step()
    assert cross_classification_loss(fast_head, slow_head, f_f, f_s, y, old).item() < 0.7 * first


# ----------------------------------------------------------------------------- cosine head
def test_cosine_head_is_scaled_cosine_and_grows_keeping_rows():
    head = CosineHead(3, 2, scale_init=10.0, generator=torch.Generator().manual_seed(0))
    f = torch.tensor([[1.0, 2.0, 2.0]])
    w = head.weight.detach()
    expected = 10.0 * (w @ f[0]) / (w.norm(dim=1) * 3.0)
    assert torch.allclose(head(f)[0], expected, atol=1e-6)
    assert head.scale.requires_grad and head.scale.item() == 10.0
    head.grow_classes(4)
    assert head.num_classes == 4 and torch.equal(head.weight[:2].detach(), w)
    fresh = CosineHead(3, 2)
    fresh.load_state_dict(head.state_dict())
    assert torch.equal(fresh(f), head(f))


# ----------------------------------------------------------------------------- analytic head
def _numpy_ridge(h: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    return np.linalg.solve(h.T @ h + ridge * np.eye(h.shape[1]), h.T @ y).T


def _held_mask(n: int, fraction: float) -> np.ndarray:
    p = np.arange(n)
    return np.floor((p + 1) * fraction) > np.floor(p * fraction)


def test_analytic_head_equals_numpy_closed_form_with_lambda_chosen_on_the_holdout():
    g = torch.Generator().manual_seed(0)
    lambdas = (1e-3, 1e-1, 1e1, 1e3)
    head = RidgeHead(6, 16, ridge_lambdas=lambdas, holdout_fraction=0.2, num_classes=3, generator=g)
    # Two experiences: the second brings a new class (3), so the head grows.
    feats1 = torch.randn(40, 6, generator=g) + torch.tensor([2.0, 0, 0, 0, 0, 0])
    y1 = torch.randint(0, 3, (40,), generator=g)
    feats2 = torch.randn(30, 6, generator=g) - 1.0
    y2 = torch.randint(2, 4, (30,), generator=g)
    proj = head.projection.double().numpy()

    head.begin_experience()
    for chunk in range(0, 40, 16):
        head.accumulate(feats1[chunk : chunk + 16], y1[chunk : chunk + 16])
    chosen1 = head.finish_experience()
    head.grow_classes(4)
    head.begin_experience()
    for chunk in range(0, 30, 7):
        head.accumulate(feats2[chunk : chunk + 7], y2[chunk : chunk + 7])
    chosen2 = head.finish_experience()

    h1 = np.maximum(feats1.double().numpy() @ proj, 0)
    h2 = np.maximum(feats2.double().numpy() @ proj, 0)
    y1h, y2h = np.eye(4)[y1.numpy()], np.eye(4)[y2.numpy()]

    def best(h_prev, y_prev, h, y):
        held = _held_mask(len(h), 0.2)
        fit_h, fit_y = np.vstack([h_prev, h[~held]]), np.vstack([y_prev, y[~held]])
        errors = [np.mean((h[held] @ _numpy_ridge(fit_h, fit_y, lam).T - y[held]) ** 2) for lam in lambdas]
        return lambdas[int(np.argmin(errors))]

    assert chosen1 == best(np.zeros((0, 16)), np.zeros((0, 4)), h1, y1h)
    assert chosen2 == best(h1, y1h, h2, y2h)
    expected = _numpy_ridge(np.vstack([h1, h2]), np.vstack([y1h, y2h]), chosen2)
    np.testing.assert_allclose(head.weight.double().numpy(), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        head(feats2).double().numpy(), np.maximum(feats2.double().numpy() @ proj, 0) @ expected.T, rtol=1e-4, atol=1e-5
    )
    assert int(head.samples_seen) == 70


def test_analytic_state_is_tensors_of_fixed_size_and_reloads_into_a_smaller_head():
    g = torch.Generator().manual_seed(1)
    head = RidgeHead(5, 8, ridge_lambdas=(1.0, 10.0), num_classes=2, generator=g)
    sizes = {k: v.shape for k, v in head.state_dict().items()}
    head.grow_classes(3)
    for n in (10, 200):  # more samples must not add or enlarge any tensor
        head.begin_experience()
        head.accumulate(torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g))
        head.finish_experience()
        state = head.state_dict()
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        assert set(state) == set(sizes)
        assert {k: tuple(v.shape) for k, v in state.items() if k not in ("cross", "weight")} == {
            k: tuple(s) for k, s in sizes.items() if k not in ("cross", "weight")
        }
        assert state["cross"].shape == (8, 3) and state["weight"].shape == (3, 8)
    fresh = RidgeHead(5, 8, ridge_lambdas=(1.0, 10.0), num_classes=2)
    fresh.load_state_dict(head.state_dict())
    x = torch.randn(4, 5, generator=g)
    assert torch.equal(fresh(x), head(x))


@pytest.mark.parametrize("make_head", [lambda: RidgeHead(3, 4, num_classes=2),
                                       lambda: DiscriminantHead(3, num_classes=2)], ids=["ridge", "discriminant"])
def test_analytic_heads_reject_targets_outside_their_classes_and_calls_out_of_order(make_head):
    head = make_head()
    with pytest.raises(RuntimeError, match="begin_experience"):
        head.accumulate(torch.zeros(1, 3), torch.tensor([0]))
    head.begin_experience()
    with pytest.raises(ValueError, match="grow_classes"):
        head.accumulate(torch.zeros(1, 3), torch.tensor([2]))


# ----------------------------------------------------------------------------- aggregation
def test_aggregation_favours_the_lower_entropy_learner():
    confident = torch.tensor([[8.0, 0.0, 0.0]])
    unsure = torch.tensor([[0.1, 0.0, 0.05]])
    merged = merge_logits(unsure, confident, gamma=1.0)
    assert merged.w_fast.item() > 0.5 > merged.w_slow.item()
    h_s, h_f = prediction_entropy(unsure).item(), prediction_entropy(confident).item()
    expected_w_fast = math.exp(-h_f) / (math.exp(-h_f) + math.exp(-h_s))
    assert merged.w_fast.item() == pytest.approx(expected_w_fast, rel=1e-6)
    assert torch.allclose(merged.logits, merged.w_slow * unsure + merged.w_fast * confident)
    swapped = merge_logits(confident, unsure, gamma=100.0)
    assert swapped.w_slow.item() > 0.999


def test_aggregation_is_half_half_for_equal_entropies():
    a = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]])  # permutations / uniform: same entropy
    merged = merge_logits(a, b, gamma=1.0)
    assert torch.allclose(merged.w_slow, torch.full((2,), 0.5)) and torch.allclose(merged.w_fast, torch.full((2,), 0.5))
    assert prediction_entropy(b[1:]).item() == pytest.approx(math.log(3), rel=1e-6)
    with pytest.raises(ValueError, match="equal shape"):
        merge_logits(a, b[:, :2], gamma=1.0)


def test_stage_statistics_input_gives_every_stage_unit_rms_whatever_its_scale():
    from cldf.methods.slow_fast.learners import stage_statistics_input

    g = torch.Generator().manual_seed(0)
    narrow, wide = torch.randn(4, 6, generator=g) * 100.0, torch.randn(4, 40, generator=g) * 0.01
    joined = stage_statistics_input([narrow, wide])
    assert joined.shape == (4, 46)
    for block in (joined[:, :6], joined[:, 6:]):
        assert torch.allclose(block.pow(2).mean(1), torch.ones(4), atol=1e-5)
    assert torch.allclose(stage_statistics_input([narrow * 7.0, wide]), joined, atol=1e-5)
    assert torch.allclose(joined[:, :6] / joined[:, :6].norm(dim=1, keepdim=True),
                          narrow / narrow.norm(dim=1, keepdim=True), atol=1e-6)


# ----------------------------------------------------------------------------- routed experts
def test_routed_prediction_needs_the_discriminant_and_no_drift_compensation():
    with pytest.raises(ValueError, match="routed.*analytic_head='ridge'"):
        SlowFastConfig(prediction="routed", analytic_head="ridge")
    with pytest.raises(ValueError, match="drift_compensation='affine'"):
        SlowFastConfig(prediction="routed", drift_compensation="affine")


def test_experts_route_by_class_mass_and_mix_within_the_routed_classes():
    experts = FastExperts(2, 3, "slow")
    neutral = torch.zeros(3, 2)
    experts.add(neutral, torch.tensor([0.0, 0.0, -1e9]), torch.zeros(2))  # classes 0, 1
    assert experts.add(neutral, torch.tensor([0.0, -1e9, math.log(3.0)]), torch.zeros(2)) == "expert1"  # 0, 2
    slow = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]]).log()
    routing = experts.route(slow)
    assert routing.expert.tolist() == [0, 1] and torch.allclose(routing.mass, torch.tensor([0.8, 0.8]))
    expert_logits = torch.stack([experts.logits(0, torch.zeros(1, 2))[0], experts.logits(1, torch.zeros(1, 2))[0]])
    p = experts.mix(slow, routing, expert_logits).exp()
    # image 0: expert 0 is indifferent, so mass 0.8 is split 5:3 as the slow head has it; class 2 keeps 0.2
    # image 1: expert 1 says 1:3, the slow head 1:7, pooled 1:21 over classes 0, 2; class 1 keeps 0.2
    assert torch.allclose(p, torch.tensor([[0.5, 0.3, 0.2], [0.8 / 22, 0.2, 0.8 * 21 / 22]]), atol=1e-6)


def test_experts_state_reloads_into_a_fresh_module_and_grows_classes():
    experts = FastExperts(2, 2, "slow")
    experts.add(torch.ones(2, 2), torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.5]))
    experts.grow_classes(3)
    fresh = FastExperts(2, 2, "slow")
    fresh.load_state_dict(experts.state_dict())
    assert len(fresh) == 1 and fresh.adapters == ["slow"]
    assert fresh.bias.tolist() == [[1.0, 2.0, -1e9]] and fresh.class_masks.tolist() == [[True, True, False]]
    with pytest.raises(ValueError, match="expected weight"):
        fresh.add(torch.ones(2, 2), torch.ones(2), torch.zeros(2))
