"""Strategy recipes: YAML files shipped in the package (``cldf/resources/recipes/``, the checkout's
``strategies/``) -> a validated :class:`Recipe`.

Every recipe shares the detector, input size, epochs and optimiser defaults below; a recipe only
states its strategy and the settings of its method(s). Reference points that store past images
(``replay``, ``joint``) are flagged ``stores_exemplars``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import yaml

from .config_io import ConfigError, apply_overrides, from_mapping
from .detector import DetectorConfig
from .methods.registry import METHODS
from .optimizers import OPTIMIZERS
from .resources import RECIPES_DIR, shipped_names
from .speed import CHANNELS_LAST_CHOICES, PRECISIONS

NONFINITE_LOSS_POLICIES = ("error", "skip")


@dataclass
class TrainingConfig:
    """Optimiser and loop settings shared by every recipe; ``precision``, ``channels_last`` and
    ``num_workers`` are speed settings, ``auto`` deciding from the device (:mod:`cldf.speed`)."""

    epochs: int = 2
    batch_size: int = 32
    eval_batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    num_workers: int | str = "auto"  # "auto": 0 on the CPU, up to 8 on CUDA
    on_nonfinite_loss: str = "error"  # "error": stop the run; "skip": drop the batch and count it
    precision: str = "auto"  # "auto": bf16 (fp16 without bf16) on CUDA, fp32 on the CPU
    channels_last: bool | str = "auto"  # "auto": on CUDA
    frozen_pass_memo_mb: float = 1024  # on the CPU: frozen passes' outputs kept within an experience (0: none)

    def __post_init__(self) -> None:
        self._check_choice("optimizer", OPTIMIZERS)
        self._check_choice("on_nonfinite_loss", NONFINITE_LOSS_POLICIES)
        self._check_choice("precision", PRECISIONS)
        self._check_choice("channels_last", CHANNELS_LAST_CHOICES)
        if not (self.num_workers == "auto" or (type(self.num_workers) is int and self.num_workers >= 0)):
            raise ValueError(f"training.num_workers={self.num_workers!r}; valid: 'auto' or an integer >= 0")
        for key in ("epochs", "batch_size", "eval_batch_size"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"training.{key}={getattr(self, key)!r} must be a positive integer")
        if not float(self.lr) > 0:
            raise ValueError(f"training.lr={self.lr!r} must be > 0")
        if not float(self.frozen_pass_memo_mb) >= 0:
            raise ValueError(f"training.frozen_pass_memo_mb={self.frozen_pass_memo_mb!r} must be >= 0 (0 keeps none)")

    def _check_choice(self, key: str, valid: tuple) -> None:
        value = getattr(self, key)
        if not any(value == v and type(value) is type(v) for v in valid):
            shown = (str(v).lower() if isinstance(v, bool) else v for v in valid)  # as YAML writes them
            raise ValueError(f"training.{key}={value!r}; valid: {', '.join(shown)}")


@dataclass
class DecisionConfig:
    """How decisions are fitted on each experience's validation images (:mod:`cldf.metrics.calibration`):
    the decision threshold calls at most ``target_fpr`` of real images fake; the novelty alarm
    fires on ``novelty_rate`` of the validation images."""

    target_fpr: float = 0.05
    novelty_rate: float = 0.05

    def __post_init__(self) -> None:
        for key in ("target_fpr", "novelty_rate"):
            if not 0.0 < float(getattr(self, key)) < 1.0:
                raise ValueError(f"decision.{key}={getattr(self, key)!r} must be in (0, 1)")


@dataclass(frozen=True)
class StrategyKind:
    """What a strategy name means: the method sections it uses (:data:`METHODS`), the Avalanche
    template when no method brings its own (``naive`` fine-tuning, or ``joint``: cumulative
    training on every experience so far), training epochs if fixed, whether it stores images,
    whether a checkpoint holds all the template keeps."""

    sections: tuple[str, ...]
    template: str = "naive"
    train_epochs: Optional[int] = None
    stores_exemplars: bool = False
    resumable: bool = True


STRATEGIES: dict[str, StrategyKind] = {
    "naive": StrategyKind(()),
    "lwf": StrategyKind(("lwf",)),
    "ewc": StrategyKind(("ewc",)),
    "safe": StrategyKind(("slow_fast",)),
    # no gradient step: the adapters keep their identity initialisation and only the analytic
    # heads are fitted on each experience's features (the reference for what training adds)
    "frozen": StrategyKind(("slow_fast",), train_epochs=0),
    "napa_vq": StrategyKind(("napa_vq",)),
    "ema": StrategyKind(("ema_balance",)),
    "cldf": StrategyKind(("slow_fast", "napa_vq", "ema_balance")),
    "replay": StrategyKind(("replay",), stores_exemplars=True),
    "joint": StrategyKind((), template="joint", stores_exemplars=True, resumable=False),
}


@dataclass
class Recipe:
    """A validated recipe: strategy name, shared detector/training settings, method settings."""

    strategy: str
    description: str = ""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    methods: dict[str, Any] = field(default_factory=dict)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    dropped: tuple[str, ...] = ()  # method sections of the strategy left out (ablations)

    @property
    def stores_exemplars(self) -> bool:
        return STRATEGIES[self.strategy].stores_exemplars

    def for_run_seed(self, seed: int) -> "Recipe":
        """This recipe with every method's own generator seed offset by the run's ``--seed``
        (head initialisation, pseudo-features), so that runs with different seeds differ in every
        random choice; at seed 0 the recipe is unchanged."""
        methods = {name: replace(cfg, seed=cfg.seed + seed) if hasattr(cfg, "seed") else cfg
                   for name, cfg in self.methods.items()}
        return replace(self, methods=methods)

    def to_raw(self) -> dict[str, Any]:
        """The fully resolved recipe as a plain mapping that :func:`parse_recipe` reads back."""
        return {
            "strategy": self.strategy, "description": self.description,
            "detector": asdict(self.detector), "training": asdict(self.training),
            "decision": asdict(self.decision),
            **{name: asdict(cfg) for name, cfg in self.methods.items()},
            **({"drop": list(self.dropped)} if self.dropped else {}),
        }


def available_recipes() -> list[str]:
    """Names of the recipes shipped with the package (``naive``, ``cldf``, ...)."""
    return shipped_names(RECIPES_DIR)


def recipe_path(name_or_path: str) -> Path:
    """A recipe file from a shipped name (``naive``) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        return path
    shipped = RECIPES_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ConfigError(f"unknown recipe {name_or_path!r}; shipped recipes: {', '.join(available_recipes())} (or a path to a .yaml file)")
    return shipped


def load_recipe(name_or_path: str, overrides: Optional[list[str]] = None) -> Recipe:
    """Read a recipe with ``yaml.safe_load``, apply ``--set`` overrides, validate every key."""
    path = recipe_path(name_or_path)
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return parse_recipe(apply_overrides(raw, overrides or []), str(path))


# Settings added after checkpoints were first written, with the behaviour that applied before each
# existed: a stored recipe that lacks one was trained (and must be rebuilt) that way.
BEHAVIOUR_BEFORE_SETTING: dict[str, dict[str, Any]] = {
    "slow_fast": {"prediction": "merged", "analytic_input": "pooled", "analytic_head": "ridge",
                  "drift_compensation": "none"},
}


def parse_stored_recipe(raw: dict[str, Any], source: str) -> Recipe:
    """:func:`parse_recipe` for a fully resolved recipe stored by an earlier cldf (a checkpoint's
    manifest): a setting it lacks takes the behaviour from before the setting existed, not
    today's default (:data:`BEHAVIOUR_BEFORE_SETTING`)."""
    raw = dict(raw)
    for section, before in BEHAVIOUR_BEFORE_SETTING.items():
        if isinstance(raw.get(section), dict):
            raw[section] = {**before, **raw[section]}
    return parse_recipe(raw, source)


def parse_recipe(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    """Validate a recipe mapping; errors name the file, the key and the valid values."""
    raw = dict(raw)
    strategy = raw.pop("strategy", None)
    if strategy not in STRATEGIES:
        raise ConfigError(f"{source}: strategy={strategy!r}; valid: {', '.join(STRATEGIES)}")
    kind = STRATEGIES[strategy]
    allowed = {"description", "detector", "training", "decision", "drop", *kind.sections}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)} for strategy {strategy!r}; allowed: {', '.join(sorted(allowed))}")
    dropped = raw.get("drop") or []
    if not isinstance(dropped, list) or any(d not in kind.sections for d in dropped):
        raise ConfigError(f"{source}: drop={dropped!r}; give a list of the strategy's method sections to leave "
                          f"out (for an ablation), from: {', '.join(kind.sections) or 'none'}")
    methods = {s: from_mapping(METHODS[s].config, raw.get(s), f"{source}: {s}")
               for s in kind.sections if s not in dropped}
    predicting = [s for s, cfg in methods.items() if METHODS[s].predicts(cfg)]
    if len(predicting) > 1:
        raise ConfigError(
            f"{source}: {' and '.join(predicting)} each set what the detector predicts; keep one "
            f"(e.g. napa_vq.prediction: head alongside slow_fast.prediction)")
    return Recipe(
        strategy=strategy,
        description=str(raw.get("description", "")),
        detector=from_mapping(DetectorConfig, raw.get("detector"), f"{source}: detector"),
        training=from_mapping(TrainingConfig, raw.get("training"), f"{source}: training"),
        methods=methods,
        decision=from_mapping(DecisionConfig, raw.get("decision"), f"{source}: decision"),
        dropped=tuple(dropped),
    )
