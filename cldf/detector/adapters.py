"""peft tuner configs for a backbone: default target modules, per-adapter normalisation layers."""

from __future__ import annotations

from peft import LoHaConfig, LoKrConfig, LoraConfig, PeftConfig
from torch import nn

from .config import AdapterConfig
from .split import BackboneSplit

NORM_TYPES = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def _is_pointwise(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Linear)
        or (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1)
    )


def default_target_modules(model: nn.Module, split: BackboneSplit) -> list[str]:
    """Linear layers and 1x1, non-grouped convolutions of the tuned tail (by full module name)."""
    return [name for name, m in model.named_modules() if name and split.in_tail(name) and _is_pointwise(m)]


def tail_norm_modules(model: nn.Module, split: BackboneSplit) -> tuple[list[str], list[str]]:
    """Normalisation layers of the tuned tail: (copied and tuned per adapter, shared and frozen).

    peft matches ``modules_to_save`` by name suffix, so a name that is also the suffix of another
    module's name (a top-level ``bn2`` versus ``blocks.0.0.bn2``) would catch both; such layers
    stay shared and frozen rather than letting the adapter reach into the shared prefix.
    """
    names = [name for name, _ in model.named_modules() if name]
    norms = [name for name, m in model.named_modules() if name and split.in_tail(name) and isinstance(m, NORM_TYPES)]
    ambiguous = {name for name in norms if any(other.endswith("." + name) for other in names)}
    return [n for n in norms if n not in ambiguous], [n for n in norms if n in ambiguous]


def build_peft_config(cfg: AdapterConfig, model: nn.Module, split: BackboneSplit) -> PeftConfig:
    """The peft config for one adapter on ``model`` following ``cfg``."""
    targets = cfg.target_modules or default_target_modules(model, split)
    if not targets:
        raise ValueError(f"no module to adapt in {type(model).__name__}; set adapter.target_modules explicitly")
    names = {name for name, _ in model.named_modules()}
    unknown = [t for t in targets if t not in names and not any(n.endswith("." + t) for n in names)]
    if unknown:
        raise ValueError(f"adapter.target_modules not found in {type(model).__name__}: {', '.join(unknown[:8])}")
    in_prefix = sorted({t for t in targets for n in names if (n == t or n.endswith("." + t)) and not split.in_tail(n)})
    if in_prefix:  # the prefix runs once for every adapter (and is kept per image): it holds none
        raise ValueError(
            f"adapter.target_modules {', '.join(in_prefix[:8])} match modules before the tuned tail of "
            f"{type(model).__name__} (its last adapter.tuned_stages={len(split.tail_stages)} stages); "
            "name tail modules by their full name (e.g. blocks.11.attn.qkv) or raise adapter.tuned_stages")
    common = dict(
        target_modules=targets,
        modules_to_save=tail_norm_modules(model, split)[0] if cfg.adapt_norm else None,
    )
    if cfg.tuner == "lora":
        return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, **common)
    if cfg.tuner == "loha":
        return LoHaConfig(r=cfg.r, alpha=cfg.alpha, module_dropout=cfg.dropout, **common)
    return LoKrConfig(r=cfg.r, alpha=cfg.alpha, module_dropout=cfg.dropout, **common)
