"""NAPA-VQ core (plain PyTorch) on hand-built cases."""

import math

import pytest

from cldf.config_io import ConfigError, from_mapping
import torch
from safetensors.torch import load_file, save_file

from cldf.methods.napa_vq import (
    CachedPreviousFeatures, CodeBook, FeatureSums, FrozenModelCopy, NAPAVQ, NAPAVQConfig, PrototypeStore,
    distance_cross_entropy, feature_distillation, nearest_code_vectors, refresh_age_prune,
    sample_keys, sample_pseudo_features, separation_loss,
)

EPS = 0.9


def test_refreshed_edges_are_one_and_unrefreshed_winner_edges_age_per_missing_sample():
    edges = torch.eye(4)
    edges[0, 2], edges[0, 3], edges[1, 2] = 0.8, 0.5, 0.6
    # three samples won by CV 0; CV 1 is in two top-2 lists, CV 2 in one, CV 3 in none
    topk = torch.tensor([[0, 1], [0, 1], [0, 2]])
    out = refresh_age_prune(edges, topk, EPS, max_age=10)
    assert out[0, 0] == 1 and out[0, 1] == 1 and out[0, 2] == 1  # refreshed (before symmetry)
    assert out[0, 3] == pytest.approx(0.5 * EPS**3)  # 3 samples of the winner missed it
    assert torch.equal(out[1:], edges[1:])  # rows of non-winners unchanged


@pytest.mark.parametrize("missing", [1, 2, 5])
def test_unrefreshed_winner_edge_decays_by_epsilon_per_missing_sample(missing):
    edges = torch.eye(3)
    edges[0, 2] = 0.95
    topk = torch.tensor([[0, 1]] * missing)
    out = refresh_age_prune(edges, topk, EPS, max_age=10)
    assert out[0, 2] == pytest.approx(0.95 * EPS**missing, rel=1e-6)


def test_edges_below_epsilon_power_max_age_are_removed():
    edges = torch.eye(4)
    edges[0, 2] = EPS**8      # aged by 3 samples -> 0.9^11 < 0.9^10: removed
    edges[0, 3] = EPS**6      # aged by 3 samples -> 0.9^9: kept
    edges[1, 3] = 0.9 * EPS**10  # non-winner row, already below the threshold: removed
    out = refresh_age_prune(edges, torch.tensor([[0, 1]] * 3), EPS, max_age=10)
    assert out[0, 2] == 0
    assert out[0, 3] == pytest.approx(EPS**9, rel=1e-6)
    assert out[1, 3] == 0


def test_graph_update_on_code_vectors_gives_hand_computed_symmetric_matrix():
    book = CodeBook(dim=2, k=2, epsilon=EPS, max_age=10)
    book.grow(4)
    book.vectors.data = torch.tensor([[0.0, 0], [1, 0], [5, 0], [9, 0]])
    book.edges[0, 3] = book.edges[3, 0] = 0.7
    z = torch.tensor([[0.1, 0], [-0.2, 0], [8.9, 0]])  # 2 samples won by CV0 (CV1 second), 1 by CV3
    book.update_graph(z)
    expected = torch.eye(4)
    e01, e03 = 1.0, 0.7 * EPS**2  # CV0 row: 1 refreshed, 3 aged by its 2 samples
    e32, e30 = 1.0, 0.7 * EPS     # CV3 row: 2 refreshed, 0 aged by its 1 sample
    expected[0, 1] = expected[1, 0] = e01 / 2
    expected[0, 3] = expected[3, 0] = (e03 + e30) / 2
    expected[3, 2] = expected[2, 3] = e32 / 2
    assert torch.allclose(book.edges, expected, atol=1e-6)


def test_graph_stays_symmetric_with_unit_diagonal_over_many_batches():
    torch.manual_seed(0)
    book = CodeBook(dim=8, k=3)
    book.grow(12)
    for _ in range(30):
        book.update_graph(torch.randn(16, 8) * 1.5)
    e = book.edges
    assert torch.equal(e, e.T)
    assert torch.equal(e.diagonal(), torch.ones(12))
    assert ((e >= 0) & (e <= 1)).all()
    assert book.neighbour_mask().any()  # the graph did learn edges


def test_faiss_top_k_equals_torch_top_k():
    torch.manual_seed(1)
    vectors, z = torch.randn(500, 32), torch.randn(64, 32)
    via_faiss = nearest_code_vectors(z, vectors, 15, use_faiss=True)
    via_torch = nearest_code_vectors(z, vectors, 15, use_faiss=False)
    assert via_faiss.shape == (64, 15)
    assert torch.equal(via_faiss, via_torch)
    assert nearest_code_vectors(z, vectors[:4], 15, use_faiss=True).shape == (64, 4)  # k capped


def test_codebook_uses_faiss_above_threshold_with_same_graph():
    torch.manual_seed(2)
    z = torch.randn(32, 16)
    books = []
    for threshold in (10_000, 0):  # torch path, faiss path
        torch.manual_seed(3)
        book = CodeBook(dim=16, k=5, faiss_threshold=threshold)
        book.grow(40)
        book.update_graph(z)
        books.append(book)
    assert torch.equal(books[0].edges, books[1].edges)


def _one_neighbour_case(own_distance, neighbour_distance):
    z = torch.zeros(1, 2, requires_grad=True)
    vectors = torch.tensor([[own_distance, 0.0], [0.0, neighbour_distance], [50.0, 50.0]])
    neighbours = torch.tensor([[False, True, False], [True, False, False], [False] * 3])
    return separation_loss(z, torch.tensor([0]), vectors, neighbours), z


def test_separation_loss_zero_when_own_code_vector_is_nearer_than_every_neighbour():
    loss, _ = _one_neighbour_case(1.0, 2.0)
    assert loss.item() == 0


def test_separation_loss_positive_when_a_neighbour_is_nearer():
    loss, z = _one_neighbour_case(2.0, 1.0)
    assert loss.item() == pytest.approx(4.0 - 1.0)  # d_pos - d_neighbour (one neighbour: w = 1)
    loss.backward()
    assert z.grad.abs().sum() > 0


def test_separation_loss_weights_neighbours_by_softmax_of_distance():
    z = torch.zeros(1, 2)
    vectors = torch.tensor([[30.0, 0], [0, 10.0], [0, 20.0]])
    neighbours = torch.tensor([[False, True, True], [True, False, False], [True, False, False]])
    d = torch.tensor([100.0, 400.0])
    w = torch.softmax(-0.001 * d, 0)
    expected = 900.0 - (w * d).sum()
    assert separation_loss(z, torch.tensor([0]), vectors, neighbours).item() == pytest.approx(expected.item())


def test_separation_loss_without_neighbours_is_zero_and_finite():
    z = torch.randn(5, 3, requires_grad=True)
    vectors = torch.randn(4, 3, requires_grad=True)
    neighbours = torch.zeros(4, 4, dtype=torch.bool)
    loss = separation_loss(z, torch.tensor([0, 1, 2, 3, 0]), vectors, neighbours)
    loss.backward()
    assert loss.item() == 0
    assert torch.isfinite(z.grad).all() and torch.isfinite(vectors.grad).all()


def test_pseudo_features_lie_between_prototype_and_a_neighbour_prototype():
    torch.manual_seed(4)
    means = torch.randn(4, 6)
    known = torch.tensor([True, True, True, False])  # class 3 has no prototype yet
    edges = torch.eye(4)
    edges[0, 1] = edges[1, 0] = 0.5
    edges[1, 3] = edges[3, 1] = 0.5
    gen = torch.Generator().manual_seed(0)
    feats, c, m, gamma = sample_pseudo_features(means, known, edges, 500, gen, weight_min=0.5)
    assert ((gamma >= 0.5) & (gamma <= 1)).all()
    assert torch.allclose(feats, gamma[:, None] * means[c] + (1 - gamma[:, None]) * means[m], atol=1e-6)
    # on the segment: p - P_m is gamma times (P_c - P_m)
    assert torch.allclose(feats - means[m], gamma[:, None] * (means[c] - means[m]), atol=1e-6)
    assert set(c.tolist()) == {0, 1, 2}
    allowed = {0: {0, 1}, 1: {0, 1}, 2: {2}}  # neighbours with a prototype, and the class itself
    assert all(mi in allowed[ci] for ci, mi in zip(c.tolist(), m.tolist()))
    assert (m != c).any()  # neighbours do get picked


def test_prototypes_are_class_means_and_sums_can_be_reduced():
    torch.manual_seed(5)
    z, y = torch.randn(20, 3), torch.tensor([0, 2] * 10)
    whole, half_a, half_b = FeatureSums(3, 3), FeatureSums(3, 3), FeatureSums(3, 3)
    whole.add(z, y)
    half_a.add(z[:7], y[:7])
    half_b.add(z[7:], y[7:])
    half_a.sums += half_b.sums  # what an all-reduce would do
    half_a.counts += half_b.counts
    store = PrototypeStore(3)
    store.commit(half_a, [0, 2])
    assert torch.allclose(store.means[0], z[y == 0].mean(0), atol=1e-6)
    assert torch.allclose(store.means[2], z[y == 2].mean(0), atol=1e-6)
    assert store.known.tolist() == [True, False, True]
    assert torch.equal(whole.counts, half_a.counts)
    with pytest.raises(ValueError, match="class 1"):
        store.commit(whole, [1])  # no sample of class 1
    with pytest.raises(ValueError, match="already has a prototype"):
        store.commit(whole, [0])


def test_feature_distillation_is_mean_per_sample_distance():
    z_new = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert feature_distillation(z_new, torch.zeros(2, 2)).item() == pytest.approx(2.5)
    z = torch.ones(3, 2, requires_grad=True)
    feature_distillation(z, z.detach().clone()).backward()  # zero distance: finite gradient
    assert torch.isfinite(z.grad).all()


def test_distance_classifier_training_reduces_its_loss():
    torch.manual_seed(6)
    y = torch.arange(3).repeat(20)
    z = torch.randn(60, 4) * 0.3 + torch.eye(4)[y] * 3
    book = CodeBook(dim=4)
    book.grow(3)
    opt = torch.optim.SGD([book.vectors], lr=0.5)
    first = distance_cross_entropy(z, y, book.vectors, 0.1).item()
    for _ in range(50):
        opt.zero_grad()
        distance_cross_entropy(z, y, book.vectors, 0.1).backward()
        opt.step()
    assert distance_cross_entropy(z, y, book.vectors, 0.1).item() < 0.2 * first


def _features(model, x):
    model(x)
    return model.last_features


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.head = torch.nn.Linear(5, 4), torch.nn.Linear(4, 3)
        self.last_features = None

    def forward(self, x):
        self.last_features = torch.tanh(self.body(x))
        return self.head(self.last_features)


# The spec's code-vector learning rates (5, then 0.5) assume many classes per batch; with the
# 2-3 classes per batch of these cases the squared-distance separation term makes them diverge.
STABLE = dict(cv_lr_first=0.1, cv_lr_later=0.05)


def _run_experience(learner, model, classes, steps=10):
    """Train one experience by hand; returns (last terms, code vectors right after begin)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    learner.begin_experience(classes)
    at_begin = learner.codebook.vectors.detach().clone()
    y = torch.tensor(classes).repeat(8)
    x = torch.randn(len(y), 5) + y[:, None].float()
    for _ in range(steps):
        opt.zero_grad()
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss = loss + learner.training_loss([model.last_features], y, learner.previous_features(x))
        loss.backward()
        opt.step()
        learner.step()
    learner.end_epoch()
    sums = learner.new_feature_sums()
    with torch.no_grad():
        sums.add(_features(model, x), learner.prototype_labels(y))
    learner.end_experience(sums)
    return learner.last_terms, at_begin


def test_old_code_vectors_unchanged_after_an_experience_and_all_terms_active_later():
    torch.manual_seed(7)
    model = TinyNet()
    learner = NAPAVQ(NAPAVQConfig(k=2, n_pseudo=16, **STABLE), 4, previous=FrozenModelCopy(model))
    first_terms, _ = _run_experience(learner, model, [0, 1])
    assert set(first_terms) == {"dce", "na"}
    after_first = learner.codebook.vectors.detach().clone()
    later_terms, at_begin = _run_experience(learner, model, [0, 2])
    assert set(later_terms) == {"dce", "na", "na_pseudo", "pa", "kd"}
    assert later_terms["kd"] > 0
    assert all(math.isfinite(v) for v in later_terms.values())
    now = learner.codebook.vectors.detach()
    assert torch.equal(now[:2], after_first[:2])  # real class 0 and class 1 stay fixed
    assert not torch.allclose(now[2], at_begin[2])  # the new class's code vector learned
    assert learner.prototypes.known.tolist() == [True, True, True]
    assert learner.codebook.frozen.tolist() == [True, True, True]


def test_state_dict_round_trips_through_safetensors(tmp_path):
    torch.manual_seed(8)
    model = TinyNet()
    learner = NAPAVQ(NAPAVQConfig(k=2, **STABLE), 4, previous=FrozenModelCopy(model))
    _run_experience(learner, model, [0, 1])
    state = learner.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "napa.safetensors")
    restored = NAPAVQ(NAPAVQConfig(k=2, **STABLE), 4, previous=FrozenModelCopy(TinyNet()))
    restored.load_state_dict(load_file(tmp_path / "napa.safetensors"))
    for key, value in restored.state_dict().items():
        assert torch.equal(value, state[key]), key
    x = torch.randn(6, 5)
    assert torch.allclose(restored.previous(x), learner.previous(x))
    with pytest.raises(KeyError, match="codebook.edges"):
        restored.load_state_dict({k: v for k, v in state.items() if k != "codebook.edges"})


def test_nearest_cv_prediction_uses_cosine_to_unrotated_code_vectors():
    learner = NAPAVQ(NAPAVQConfig(use_rotations=True), 2)
    learner.begin_experience([0, 1])
    learner.codebook.vectors.data = torch.tensor(
        [[1.0, 0], [0, 5], [0, 5], [0, 5], [0, 1], [1, 0], [1, 0], [1, 0]])
    logits = learner.predict_logits(torch.tensor([[2.0, 0.1], [0.1, 3.0]]))
    assert logits.shape == (2, 2)
    assert logits.argmax(1).tolist() == [0, 1]
    assert logits[0, 0].item() == pytest.approx(2.0 / math.hypot(2.0, 0.1) / 0.1, rel=1e-5)


@pytest.mark.parametrize("field,value", [("T", 0.0), ("k", 0), ("epsilon", 1.0), ("prediction", "knn"),
                                          ("pseudo_weight_min", 1.5), ("w_kd", -1.0)])
def test_config_names_bad_fields(field, value):
    with pytest.raises(ValueError, match=field):
        NAPAVQConfig(**{field: value})
    with pytest.raises(ConfigError, match="unknown key.*temperature.*allowed: .*T, "):
        from_mapping(NAPAVQConfig, {"temperature": 0.1}, "napa_vq")


@pytest.mark.parametrize("fraction, batch, rows", [(0.25, 32, 8), (0.25, 30, 8), (1.0, 30, 30), (0.01, 30, 1)])
def test_kd_fraction_distils_the_first_ceil_share_of_the_batch(fraction, batch, rows):
    learner = NAPAVQ(NAPAVQConfig(kd_fraction=fraction), 4)
    assert learner.distilled_rows(batch) == rows


def test_kd_term_on_a_share_of_the_batch_is_the_mean_distance_over_those_rows():
    torch.manual_seed(9)
    model = TinyNet()
    learner = NAPAVQ(NAPAVQConfig(k=2, n_pseudo=0, kd_fraction=0.5, normalize=False, **STABLE), 4,
                     previous=FrozenModelCopy(model))
    _run_experience(learner, model, [0, 1])
    learner.begin_experience([0, 2])
    with torch.no_grad():
        model.body.weight.add_(0.3)  # the model moved away from its snapshot
    x, y = torch.randn(10, 5), torch.tensor([0, 2] * 5)
    model(x)
    z_old = learner.previous_features(x)
    assert z_old.shape == (5, 4)
    learner.training_loss([model.last_features], y, z_old)
    expected = torch.linalg.vector_norm(model.last_features[:5] - z_old, dim=1).mean()
    assert learner.last_terms["kd"] == pytest.approx(float(expected.detach()), rel=1e-5)
    with pytest.raises(ValueError, match="kd_fraction"):
        NAPAVQConfig(kd_fraction=0.0)


def test_cached_previous_features_are_exact_and_skip_the_pass_for_inputs_seen_again():
    torch.manual_seed(10)
    model = TinyNet()
    learner = NAPAVQ(NAPAVQConfig(k=2, **STABLE), 4, previous=FrozenModelCopy(model))
    _run_experience(learner, model, [0, 1])
    learner.begin_experience([0, 2])
    cache = learner.previous
    assert isinstance(cache, CachedPreviousFeatures)
    x = torch.randn(8, 5)
    first = cache(x)
    assert (cache.misses, cache.hits) == (8, 0)
    again = cache(x.clone())  # a new tensor with the same rows
    assert (cache.misses, cache.hits) == (8, 8)
    assert torch.equal(again, first)
    shuffled = torch.randperm(8)
    assert torch.equal(cache(x[shuffled]), first[shuffled])
    assert torch.equal(cache(x, rows=3), first[:3])
    x2 = x.clone()
    x2[5, 0] += 1e-3  # one changed value: the batch goes through the previous model again
    z2 = cache(x2)
    assert cache.misses == 16
    assert torch.allclose(z2, cache.previous(x2)) and not torch.equal(z2[5], first[5])
    sums = learner.new_feature_sums()
    sums.add(torch.randn(2, 4), learner.prototype_labels(torch.tensor([0, 2])))
    learner.end_experience(sums)  # the snapshot changes: nothing cached survives the experience
    assert len(cache._features) == 0 and cache._bytes == 0


def test_feature_cache_respects_its_memory_limit_and_can_be_turned_off():
    model = TinyNet()
    cache = CachedPreviousFeatures(FrozenModelCopy(model), max_bytes=3 * 4 * 4)  # three 4-d float rows
    cache.snapshot()
    cache(torch.randn(5, 5))
    assert len(cache._features) == 3 and cache._bytes == 48
    assert isinstance(NAPAVQ(NAPAVQConfig(kd_cache_mb=0), 4, previous=FrozenModelCopy(model)).previous,
                      FrozenModelCopy)


def test_sample_keys_tell_dtype_and_every_value_apart():
    x = torch.zeros(3, 2, 2)
    x[1, 1, 1] = 1e-30
    keys = sample_keys(x)
    assert keys[0] == keys[2] != keys[1]
    assert sample_keys(x.double())[0] != keys[0]
