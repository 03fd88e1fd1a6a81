"""EMA balance weighting core (cldf.methods.ema_balance): formula, fallbacks, shadow, checkpoints."""

import math

import pytest

from cldf.config_io import ConfigError, from_mapping
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cldf.methods.ema_balance import (EMABalance, EMABalanceConfig, balance_alpha, parameter_group,
                                      select_parameters)


def _param(values) -> nn.Parameter:
    return nn.Parameter(torch.tensor(values, dtype=torch.float32))


def _set(p: nn.Parameter, values, grad) -> None:
    """Play the optimiser: new weights and the gradient of this step."""
    with torch.no_grad():
        p.copy_(torch.tensor(values))
    p.grad = torch.tensor(grad, dtype=p.dtype)


# ----------------------------------------------------------------- the formula
def test_alpha_equals_formula_on_hand_made_tensors():
    p = _param([0.0, 0.0])
    q = _param([[1.0, 1.0]])
    ema = EMABalance([("layer.lora_A.default.weight", p), ("head.weight", q)])
    ema.start_experience()
    # step 1 (first step): alpha = fallback 0.01 for both
    _set(p, [1.0, -2.0], [0.5, 0.5])
    _set(q, [[1.0, 1.0]], [[0.1, 0.1]])
    ema.step()
    assert ema.last_alpha.tolist() == pytest.approx([0.01, 0.01])
    s_p = [0.01 * 1.0, 0.01 * -2.0]
    assert ema.shadow["layer.lora_A.default.weight"].tolist() == pytest.approx(s_p)
    # step 2: by hand a = |3-0.01| + |-4+0.02| = 6.97, b = 2, c = |1-0.5| + |-1-0.5| = 2
    _set(p, [3.0, -4.0], [1.0, -1.0])
    _set(q, [[1.0, 1.0]], [[0.1, 0.1]])  # unchanged weights and gradient: a = 0, c = 0 -> fallback
    ema.step()
    alpha_p = 2 * (1 + 2.0) / (6.97 * 2.0)
    assert 0 < alpha_p < 1
    assert ema.last_alpha.tolist() == pytest.approx([alpha_p, 0.01], rel=1e-6)
    expected = [(1 - alpha_p) * s + alpha_p * t for s, t in zip(s_p, [3.0, -4.0])]
    assert ema.shadow["layer.lora_A.default.weight"].tolist() == pytest.approx(expected, rel=1e-6)
    assert ema.shadow["head.weight"].tolist() == [[1.0, 1.0]]


def test_scale_setting_changes_alpha():
    a, b, c = torch.tensor([10.0]), torch.tensor([1.0]), torch.tensor([8.0])
    alpha, replaced = balance_alpha(a, b, c, EMABalanceConfig(scale=3.0))
    assert alpha.item() == pytest.approx(3.0 * 2.0 / 80.0)
    assert not replaced.item()


def test_each_fallback_case():
    cfg = EMABalanceConfig(scale=2.0, fallback=0.05)
    # in range | alpha >= 1 | alpha <= 0 (negative a) | a*c = 0 | a*c overflows -> raw 0 | first step
    a = torch.tensor([10.0, 0.1, -1.0, 0.0, 1e30, 10.0])
    b = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    c = torch.tensor([8.0, 0.1, 8.0, 3.0, 1e30, 8.0])
    first = torch.tensor([False, False, False, False, False, True])  # raw value here equals fallback
    alpha, replaced = balance_alpha(a, b, c, cfg, first)
    assert alpha.tolist() == pytest.approx([2 * 2.0 / 80.0] + [0.05] * 5)
    assert replaced.tolist() == [False, True, True, True, True, True]
    assert torch.isfinite(alpha).all()


def test_clip_mode_clamps_and_first_step_uses_fallback():
    cfg = EMABalanceConfig(mode="clip", alpha_min=0.02, alpha_max=0.3, fallback=0.01)
    a = torch.tensor([10.0, 0.1, 1000.0, 0.0, 10.0])
    b = torch.ones(5)
    c = torch.tensor([8.0, 0.1, 1000.0, 3.0, 8.0])
    first = torch.tensor([False, False, False, False, True])
    alpha, replaced = balance_alpha(a, b, c, cfg, first)
    # 0.05 in range; 400 -> 0.3; 4e-6 -> 0.02; zero denominator (inf) -> 0.3; first step -> 0.01
    assert alpha.tolist() == pytest.approx([0.05, 0.3, 0.02, 0.3, 0.01])
    assert replaced.tolist() == [False, True, True, True, True]


def test_first_step_of_each_experience_uses_fallback():
    p = _param([0.0, 0.0])
    ema = EMABalance([("w", p)], EMABalanceConfig(mode="clip", alpha_min=0.2, alpha_max=0.9, fallback=0.01))
    ema.start_experience()
    _set(p, [1.0, 1.0], [1.0, 1.0])
    ema.step()
    assert ema.last_alpha.item() == pytest.approx(0.01)
    _set(p, [2.0, 2.0], [2.0, 2.0])
    ema.step()
    assert ema.last_alpha.item() == pytest.approx(0.9)  # raw 2*5/(3.98*2) = 1.26 -> clamped
    ema.start_experience()
    _set(p, [3.0, 3.0], [3.0, 3.0])
    ema.step()
    assert ema.last_alpha.item() == pytest.approx(0.01)


# ----------------------------------------------------------------- the shadow
@pytest.mark.parametrize("mode", ["fallback", "clip"])
def test_shadow_converges_to_constant_weights(mode):
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(6, 5))
    ema = EMABalance([("w", p)], EMABalanceConfig(mode=mode))
    target = torch.randn(6, 5)
    with torch.no_grad():
        p.copy_(target)  # weights jump once, then stay constant
    ema.start_experience()
    gaps = []
    for _ in range(1200):
        p.grad = torch.randn(6, 5)
        ema.step()
        gaps.append((ema.shadow["w"] - target).abs().max().item())
    assert all(later <= earlier for earlier, later in zip(gaps, gaps[1:]))
    assert gaps[0] > 0.5
    assert gaps[-1] < 1e-3 * gaps[0]


def test_frozen_tensors_are_not_selected_or_touched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    frozen_before = [t.clone() for t in model[0].parameters()]
    named = select_parameters(model)
    assert [n for n, _ in named] == ["1.weight", "1.bias"]
    with pytest.raises(ValueError, match="'0.weight' does not require grad"):
        EMABalance([("0.weight", model[0].weight)])
    ema = EMABalance(named)
    ema.start_experience()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 3)).pow(2).mean().backward()
        opt.step()
        ema.step()
    ema.copy_shadow_to()
    for before, after in zip(frozen_before, model[0].parameters()):
        assert torch.equal(before, after)
    assert torch.equal(model[1].weight.detach(), ema.shadow["1.weight"])


def test_include_filter_selects_by_name_substring():
    model = nn.ModuleDict({"fast": nn.Linear(2, 2), "slow": nn.Linear(2, 2), "head": nn.Linear(2, 2)})
    names = [n for n, _ in select_parameters(model, include=("fast", "head"))]
    assert names == ["fast.weight", "fast.bias", "head.weight", "head.bias"]


def test_shadow_is_float32_when_training_in_bfloat16():
    torch.manual_seed(0)
    model = nn.Linear(16, 3).to(torch.bfloat16)
    ema = EMABalance(select_parameters(model))
    ema.start_experience()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reference = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(4, 16, dtype=torch.bfloat16)).float().pow(2).mean().backward()
        opt.step()
        ema.step()
        for i, (n, p) in enumerate(model.named_parameters()):
            alpha = ema.last_alpha[i].item()
            reference[n] = (1 - alpha) * reference[n] + alpha * p.detach().double()
    state = ema.state_dict()
    for n, p in model.named_parameters():
        assert p.dtype == torch.bfloat16
        assert ema.shadow[n].dtype == torch.float32
        assert state[f"prev_grad.{n}"].dtype == torch.float32
        assert torch.allclose(ema.shadow[n].double(), reference[n], atol=1e-6)
    assert ema.extra_memory_bytes() == 2 * 4 * (16 * 3 + 3)
    ema.copy_shadow_to()
    assert model.weight.dtype == torch.bfloat16
    assert torch.allclose(model.weight.float(), ema.shadow["weight"], atol=1e-2)


# ----------------------------------------------------------------- missing gradients
def test_missing_gradient_is_skipped_then_restarts_as_first_step():
    p, q = _param([0.0]), _param([0.0])
    ema = EMABalance([("p", p), ("q", q)], EMABalanceConfig(mode="clip", alpha_min=0.5, alpha_max=0.5))
    ema.start_experience()
    _set(p, [1.0], [1.0])
    _set(q, [1.0], [1.0])
    ema.step()
    _set(p, [2.0], [2.0])
    q.grad = None
    with torch.no_grad():
        q.fill_(5.0)
    ema.step()
    assert math.isnan(ema.last_alpha[1].item())
    assert ema.shadow["q"].item() == pytest.approx(0.01)  # untouched by the skipped step
    assert ema.last_alpha[0].item() == pytest.approx(0.5)
    _set(q, [6.0], [1.0])
    ema.step()
    assert ema.last_alpha[1].item() == pytest.approx(0.01)  # first step again
    stats = ema.alpha_stats()["other"]
    assert stats["updates"] == 5


def test_missing_gradient_error_mode_names_the_tensor():
    p = _param([0.0])
    ema = EMABalance([("blocks.3.lora_B.default.weight", p)], EMABalanceConfig(on_missing_grad="error"))
    with pytest.raises(RuntimeError, match="blocks.3.lora_B.default.weight"):
        ema.step()


# ----------------------------------------------------------------- statistics
def test_alpha_stats_per_group_by_hand():
    a_param, head = _param([0.0, 0.0]), _param([0.0])
    ema = EMABalance([("m.lora_A.default.weight", a_param), ("head.linear.weight", head)])
    ema.start_experience()
    _set(a_param, [1.0, -2.0], [0.5, 0.5])
    _set(head, [1.0], [1.0])
    ema.step()
    _set(a_param, [3.0, -4.0], [1.0, -1.0])
    _set(head, [1.0], [1.0])
    ema.step()
    alpha_2 = 2 * 3.0 / (6.97 * 2.0)
    stats = ema.alpha_stats()
    assert list(stats) == ["lora_A", "head"]
    lora = stats["lora_A"]
    assert lora["tensors"] == 1 and lora["updates"] == 2
    assert lora["mean"] == pytest.approx((0.01 + alpha_2) / 2, rel=1e-6)
    assert lora["min"] == pytest.approx(0.01) and lora["max"] == pytest.approx(alpha_2, rel=1e-6)
    assert lora["fallback_share"] == pytest.approx(0.5)
    assert stats["head"]["fallback_share"] == pytest.approx(1.0)
    ema.reset_stats()
    assert ema.alpha_stats()["head"] == {"tensors": 1, "updates": 0, "mean": None, "min": None,
                                         "max": None, "fallback_share": None}


@pytest.mark.parametrize("name, group", [
    ("base_model.model.blocks.5.0.conv_pw.lora_A.default.weight", "lora_A"),
    ("blocks.1.attn.qkv.lora_B.fast.weight", "lora_B"),
    ("blocks.2.conv_pw.hada_w1_a.default", "adapter"),
    ("head.linear.weight", "head"), ("classifier.bias", "head"), ("fc.weight", "head"),
    ("blocks.5.0.bn2.modules_to_save.default.weight", "norm"), ("norm.bias", "norm"),
    ("blocks.0.mlp.fc1.weight", "other"),
])
def test_parameter_group(name, group):
    assert parameter_group(name) == group


# ----------------------------------------------------------------- checkpoints and shadow access
def test_state_dict_round_trips_through_safetensors(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(5, 2)
    ema = EMABalance(select_parameters(model))
    ema.start_experience()
    for _ in range(3):
        for p in model.parameters():
            with torch.no_grad():
                p.add_(torch.randn_like(p))
            p.grad = torch.randn_like(p)
        ema.step()
    save_file(ema.state_dict(), str(tmp_path / "ema.safetensors"))
    clone = EMABalance(select_parameters(model))
    clone.load_state_dict(load_file(str(tmp_path / "ema.safetensors")))
    assert clone.alpha_stats() == ema.alpha_stats() and clone.num_steps == 3
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    ema.step()
    clone.step()
    assert torch.equal(ema.last_alpha, clone.last_alpha)
    for n in ema.names:
        assert torch.equal(ema.shadow[n], clone.shadow[n])


def test_load_state_dict_errors_name_the_key():
    ema = EMABalance(select_parameters(nn.Linear(2, 2)))
    state = dict(ema.state_dict())
    state["shadow.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="'shadow.weight' has shape"):
        ema.load_state_dict(state)
    del state["shadow.bias"]
    with pytest.raises(KeyError, match="shadow.bias"):
        ema.load_state_dict(state)


def test_using_shadow_restores_training_weights_and_copy_by_name():
    model = nn.Linear(3, 1)
    ema = EMABalance(select_parameters(model))
    with torch.no_grad():
        model.weight.fill_(7.0)
    training = model.weight.detach().clone()
    with ema.using_shadow():
        assert torch.equal(model.weight.detach(), ema.shadow["weight"])
    assert torch.equal(model.weight.detach(), training)
    other = nn.Linear(3, 1)
    ema.copy_shadow_to([("weight", other.weight)])
    assert torch.equal(other.weight.detach(), ema.shadow["weight"])
    with pytest.raises(KeyError, match="'missing'"):
        ema.copy_shadow_to([("missing", other.bias)])


def test_carry_from_keeps_shadow_of_unchanged_tensors():
    old_head, new_head = nn.Linear(3, 2), nn.Linear(3, 4)  # same name, the head grew
    old = EMABalance([("adapter", nn.Parameter(torch.full((2,), 5.0))), ("head.weight", old_head.weight)])
    adapter = nn.Parameter(torch.ones(2))
    new = EMABalance([("adapter", adapter), ("head.weight", new_head.weight)], carry_from=old)
    assert new.shadow["adapter"].tolist() == [5.0, 5.0]
    assert torch.equal(new.shadow["head.weight"], new_head.weight.detach())  # shape changed: fresh


# ----------------------------------------------------------------- settings
@pytest.mark.parametrize("kwargs, field", [
    ({"scale": 0.0}, "scale"), ({"scale": float("inf")}, "scale"), ({"fallback": 1.5}, "fallback"),
    ({"mode": "decay"}, "mode"), ({"alpha_min": 0.0}, "alpha_min"),
    ({"alpha_min": 0.5, "alpha_max": 0.2}, "alpha_max"), ({"end_of_experience": "keep"}, "end_of_experience"),
    ({"include": "lora"}, "include"), ({"on_missing_grad": "ignore"}, "on_missing_grad"),
])
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"ema_balance\.{field}="):
        EMABalanceConfig(**kwargs)


def test_config_from_mapping_rejects_unknown_keys():
    assert from_mapping(EMABalanceConfig, {"mode": "clip", "include": ["fast"]}, "ema_balance").include == ("fast",)
    with pytest.raises(ConfigError, match="ema_balance: unknown key.*decay"):
        from_mapping(EMABalanceConfig, {"decay": 0.99}, "ema_balance")
