"""The method registry: every entry runs through the whole run machinery, its kept state is
counted, and a new method needs only an entry (no other file names it)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from avalanche.core import SupervisedPlugin
from test_resume import RECIPE_SETS, STREAM_SETS

from cldf.config_io import ConfigError, apply_overrides
from cldf.methods.entry import MethodEntry
from cldf.methods.registry import METHODS
from cldf.recipes import STRATEGIES, StrategyKind, load_recipe, parse_recipe
from cldf.resources import EMBEDDED_STREAM
from cldf.run import run
from cldf.streams import build_stream, load_stream_spec

EXPERIENCES = ["gan_upsample", "self_blend"]


@pytest.fixture(scope="module")
def tiny_stream():
    overrides = apply_overrides({"experiences": EXPERIENCES}, STREAM_SETS)
    return build_stream(load_stream_spec(EMBEDDED_STREAM, overrides=overrides))


def single_method_strategy(section: str) -> str:
    return next(name for name, kind in STRATEGIES.items() if kind.sections == (section,))


def test_every_entry_is_complete_and_used_by_a_strategy():
    for section, entry in METHODS.items():
        assert entry.section == section and entry.keeps
        assert (entry.plugin is None) != (entry.template is None), section  # acts one way
        for reference in (entry.plugin, entry.template, entry.model):
            if reference:
                assert callable(entry.load(reference)), reference
        assert any(section in kind.sections for kind in STRATEGIES.values()), section
    assert all(s in METHODS for kind in STRATEGIES.values() for s in kind.sections)


@pytest.mark.parametrize("section", list(METHODS))
def test_each_entry_runs_and_its_kept_state_is_counted(section, tiny_stream):
    naive = run(load_recipe("naive", RECIPE_SETS), tiny_stream, progress=False)
    name = single_method_strategy(section)
    sets = [*RECIPE_SETS, "training.optimizer=sgd"] if section == "slow_fast" else RECIPE_SETS
    results = run(load_recipe(name, sets), tiny_stream, progress=False)
    assert math.isfinite(results["metrics"]["avg_auc"])
    if section == "ema_balance":  # "swap": at every boundary the shadow is the weights, kept once
        assert results["cost"]["state_bytes"] == naive["cost"]["state_bytes"]
    else:  # snapshots, code vectors, memories, extra adapters come on top of naive's adapter and head
        assert results["cost"]["state_bytes"] > naive["cost"]["state_bytes"], section


def test_two_methods_setting_the_prediction_are_refused_when_parsed():
    with pytest.raises(ConfigError, match="slow_fast and napa_vq each set what the detector predicts"):
        load_recipe("cldf", ["napa_vq.prediction=nearest_cv"])


# ----------------------------------------------------------------------------- a new method
@dataclass
class CountingConfig:
    weight: float = 1.0


class CountingPlugin(SupervisedPlugin):
    """A toy method: counts the experiences it trained on and keeps that count."""

    calls: list[int] = []

    def __init__(self, config: CountingConfig) -> None:
        super().__init__()
        self.config = config

    def after_training_exp(self, strategy, *args, **kwargs) -> None:
        CountingPlugin.calls.append(strategy.experience.current_experience)

    def kept_bytes(self) -> int:
        return 1000


def make_counting_plugin(config: CountingConfig, detector, wrapped: bool) -> CountingPlugin:
    return CountingPlugin(config)


def test_a_new_method_is_one_entry_and_one_strategy_line(monkeypatch, tiny_stream):
    entry = MethodEntry("counting", CountingConfig, keeps="a number", plugin=f"{__name__}:make_counting_plugin")
    monkeypatch.setitem(METHODS, "counting", entry)
    monkeypatch.setitem(STRATEGIES, "counting", StrategyKind(("counting",)))
    recipe = parse_recipe({"strategy": "counting", "counting": {"weight": 2.0},
                           **load_recipe("naive", RECIPE_SETS).to_raw() | {"strategy": "counting"}})
    assert recipe.methods["counting"] == CountingConfig(2.0)
    CountingPlugin.calls.clear()
    results = run(recipe, tiny_stream, progress=False)
    naive = run(load_recipe("naive", RECIPE_SETS), tiny_stream, progress=False)
    assert CountingPlugin.calls == [0, 1]
    assert results["cost"]["state_bytes"] == naive["cost"]["state_bytes"] + 1000


def test_ema_swaps_before_napa_vq_reads_the_weights():
    from cldf.avalanche.build import method_plugins
    from cldf.detector import Detector
    recipe = load_recipe("cldf", ["detector.image_size=32", "detector.pretrained=false"])
    names = [type(p).__name__ for p in method_plugins(recipe, Detector(recipe.detector))]
    assert names.index("EMABalancePlugin") < names.index("NAPAVQPlugin")
