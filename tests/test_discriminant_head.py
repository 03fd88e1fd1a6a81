"""The shrunk linear discriminant head, checked against a NumPy closed form and Bayes' rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cldf.methods.slow_fast import DiscriminantHead, RidgeHead, SlowFastConfig
from cldf.methods.slow_fast.discriminant_head import NO_DATA_LOGIT
from cldf.methods.slow_fast.drift import AffineDrift


def _numpy_lda_logits(x: np.ndarray, y: np.ndarray, query: np.ndarray, shrinkage: float) -> np.ndarray:
    """z_c = μ_cᵀΣ⁻¹q − ½μ_cᵀΣ⁻¹μ_c + log π_c, Σ = D((1−α)R + αI)D from the pooled within-class covariance."""
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(0) for c in classes])
    centred = x - means[np.searchsorted(classes, y)]
    within = centred.T @ centred / len(x)
    scale = np.sqrt(np.diag(within))
    corr = within / np.outer(scale, scale)
    sigma = np.outer(scale, scale) * ((1 - shrinkage) * corr + shrinkage * np.eye(len(corr)))
    directions = np.linalg.solve(sigma, means.T)
    priors = np.array([(y == c).mean() for c in classes])
    return query @ directions - 0.5 * np.einsum("cd,dc->c", means, directions) + np.log(priors)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def _data(n: int, dim: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, dim, generator=g) * torch.linspace(0.5, 3.0, dim) + 2.0 * torch.randn(classes, dim, generator=g)[y]
    return x, y


def test_streamed_statistics_give_the_numpy_closed_form_over_all_data():
    x, y = _data(90, 5, 3, seed=0)
    head = DiscriminantHead(5, shrinkage=0.3, num_classes=2)
    # experience 1 holds classes 0 and 1; experience 2 brings class 2 and more of class 0
    first, second = (y < 2) & (torch.arange(90) < 60), ~((y < 2) & (torch.arange(90) < 60))
    head.begin_experience()
    for chunk in torch.split(torch.nonzero(first).flatten(), 7):
        head.accumulate(x[chunk], y[chunk])
    head.finish_experience()
    np.testing.assert_allclose(  # logits up to a per-sample constant: compare log-posteriors
        head(x)[:, :2].log_softmax(1).double().numpy(),
        _log_softmax(_numpy_lda_logits(x[first].double().numpy(), y[first].numpy(), x.double().numpy(), 0.3)),
        rtol=1e-4, atol=1e-4,
    )
    head.grow_classes(3)
    assert torch.all(head(x)[:, 2] == NO_DATA_LOGIT)  # no data yet: never predicted
    head.begin_experience()
    head.accumulate(x[second], y[second])
    assert head.finish_experience() == 0.3
    expected = _numpy_lda_logits(x.double().numpy(), y.numpy(), x.double().numpy(), 0.3)
    np.testing.assert_allclose(head(x).log_softmax(1).double().numpy(), _log_softmax(expected), rtol=1e-4, atol=1e-4)
    assert int(head.class_counts.sum()) == 90


def test_with_known_gaussians_its_posterior_is_bayes_rule():
    """Two classes with a shared diagonal covariance and shrinkage 1 (diagonal Σ): the head's
    softmax must match the exact Bayes posterior of the estimated Gaussians."""
    g = torch.Generator().manual_seed(3)
    n, std = 4000, torch.tensor([1.0, 2.0])
    y = (torch.arange(n) % 4 == 0).long()  # prior 3:1
    means = torch.tensor([[0.0, 0.0], [1.5, -1.0]])
    x = means[y] + torch.randn(n, 2, generator=g) * std
    head = DiscriminantHead(2, shrinkage=1.0, num_classes=2)
    head.begin_experience()
    head.accumulate(x, y)
    head.finish_experience()
    q = torch.tensor([[0.5, 0.0], [2.0, -2.0], [-1.0, 1.0]])
    log_lik = -0.5 * (((q[:, None, :] - means[None]) / std) ** 2).sum(-1) + torch.tensor([0.75, 0.25]).log()
    np.testing.assert_allclose(head(q).softmax(1).numpy(), log_lik.softmax(1).numpy(), atol=0.03)
    accuracy = (head(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.8


def test_summed_process_blocks_give_the_single_process_head():
    x, y = _data(60, 4, 3, seed=1)
    single = DiscriminantHead(4, num_classes=3)
    single.begin_experience()
    single.accumulate(x, y)
    single.finish_experience()
    halves = [DiscriminantHead(4, num_classes=3) for _ in range(2)]
    for head, part in zip(halves, (slice(0, 25), slice(25, 60))):
        head.begin_experience()
        head.accumulate(x[part], y[part])
    other = halves[1]._pending
    sums = iter(other)
    halves[0].finish_experience(reduce=lambda t: t + next(sums))
    torch.testing.assert_close(halves[0](x), single(x), rtol=1e-5, atol=1e-4)


def test_state_is_fixed_size_and_reloads_into_a_head_with_fewer_classes():
    x, y = _data(50, 4, 3, seed=2)
    head = DiscriminantHead(4, num_classes=2)
    head.grow_classes(3)
    for n in (10, 50):  # more samples must not enlarge any tensor
        head.begin_experience()
        head.accumulate(x[:n], y[:n])
        head.finish_experience()
        assert {k: tuple(v.shape) for k, v in head.state_dict().items()} == {
            "gram": (4, 4), "class_sums": (3, 4), "class_counts": (3,), "weight": (3, 4), "bias": (3,),
            "center": (4,)}
    fresh = DiscriminantHead(4, num_classes=2)
    fresh.load_state_dict(head.state_dict())
    assert torch.equal(fresh(x), head(x))


def test_bad_shrinkage_and_head_type_are_named():
    # targets and call order: test_slow_fast_core, for both analytic heads
    with pytest.raises(ValueError, match="shrinkage"):
        DiscriminantHead(3, shrinkage=0.0)
    with pytest.raises(ValueError, match="shrinkage"):
        SlowFastConfig(shrinkage=1.5)
    with pytest.raises(ValueError, match="analytic_head"):
        SlowFastConfig(analytic_head="qda")


def test_affine_drift_recovers_a_per_dimension_map_and_keeps_constant_dimensions():
    g = torch.Generator().manual_seed(4)
    old = torch.randn(200, 4, generator=g) * 3 + 1
    old[:, 3] = 2.0  # never varies: nothing to fit, a stays 1
    a, b = torch.tensor([2.0, -0.5, 1.0, 7.0]), torch.tensor([1.0, 0.0, -3.0, 0.5])
    new = old * a + b
    drift = AffineDrift(4)
    for part in torch.split(torch.arange(200), 64):
        drift.accumulate(old[part], new[part])
    scale, offset = drift.fit()
    torch.testing.assert_close(scale[:3], a[:3].double(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(offset[:3], b[:3].double(), rtol=1e-6, atol=1e-5)
    assert scale[3] == 1.0 and offset[3] == pytest.approx(float(new[0, 3] - old[0, 3]))
    with pytest.raises(RuntimeError, match="at least one"):
        AffineDrift(4).fit()


def test_shifted_statistics_equal_those_of_the_mapped_samples():
    x, y = _data(80, 5, 3, seed=5)
    a, b = torch.linspace(0.5, 2.0, 5), torch.linspace(-1.0, 1.0, 5)
    shifted, direct = DiscriminantHead(5, num_classes=3), DiscriminantHead(5, num_classes=3)
    for head, data in ((shifted, x), (direct, x * a + b)):
        head.begin_experience()
        head.accumulate(data, y)
        head.finish_experience()
    shifted.shift_statistics(a, b)
    for name in ("gram", "class_sums", "class_counts"):
        torch.testing.assert_close(getattr(shifted, name), getattr(direct, name), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(shifted(x * a + b), direct(x * a + b), rtol=1e-4, atol=1e-3)


def test_drift_compensation_brings_a_stale_head_close_to_one_refitted_on_current_features():
    """Old statistics summed before the features drifted: mapped through the drift fitted on new
    data, the head predicts like a head fitted on the old data's current features."""
    x_old, y_old = _data(150, 6, 2, seed=6)
    x_new_exp, y_new_exp = _data(150, 6, 3, seed=7)
    y_new_exp = torch.where(y_new_exp == 2, 2, y_new_exp)  # the new experience brings class 2
    g = torch.Generator().manual_seed(8)
    a, b = 1.0 + torch.rand(6, generator=g), torch.randn(6, generator=g)
    drifted = lambda t: t * a + b + 0.01 * torch.randn(t.shape, generator=g)  # noqa: E731

    def head_with(old_features: torch.Tensor, compensate: bool) -> DiscriminantHead:
        head = DiscriminantHead(6, num_classes=3)
        head.begin_experience()
        head.accumulate(old_features, y_old)
        head.finish_experience()
        head.begin_experience()
        if compensate:
            drift = AffineDrift(6)
            drift.accumulate(x_new_exp, drifted(x_new_exp))
            head.shift_statistics(*drift.fit())
        head.accumulate(drifted(x_new_exp), y_new_exp)
        head.finish_experience()
        return head

    query = drifted(x_old)
    refit = head_with(query, compensate=False)(query).log_softmax(1)
    stale = head_with(x_old, compensate=False)(query).log_softmax(1)
    compensated = head_with(x_old, compensate=True)(query).log_softmax(1)
    stale_gap, compensated_gap = (stale - refit).abs().mean(), (compensated - refit).abs().mean()
    assert stale_gap > 0.5  # nats: the drift does matter for the stale head
    assert compensated_gap < 0.05 * stale_gap


@pytest.mark.parametrize("make_head", [lambda: DiscriminantHead(4, num_classes=2),
                                       lambda: RidgeHead(4, 8, ridge_lambdas=(1.0,), num_classes=2)])
def test_a_non_finite_batch_is_refused_before_it_spoils_the_statistics(make_head):
    head = make_head()
    head.begin_experience()
    head.accumulate(torch.randn(6, 4), torch.tensor([0, 1] * 3))
    features = torch.randn(6, 4)
    features[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite features \(1 of 6 samples\).*lower training.lr"):
        head.accumulate(features, torch.tensor([0, 1] * 3))
    head.finish_experience()
    assert all(torch.isfinite(v.double()).all() for v in head.state_dict().values() if v.is_floating_point())
