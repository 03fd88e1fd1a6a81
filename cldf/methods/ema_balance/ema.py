"""EMA balance weighting (LLaCA): a float32 shadow of the trainable weights with an adaptive rate.

After every optimiser step, per tracked tensor (algorithms.md section 3)::

    a = ||theta_t - theta*||_1,  b = ||g_t||_1,  c = ||g_t - g_{t-1}||_1
    alpha = scale * (1 + b) / (a * c)          (then fallback or clip, see EMABalanceConfig)
    theta* <- (1 - alpha) * theta* + alpha * theta_t

All tensors are processed together with ``torch._foreach_*`` kernels; the per-step statistics
stay on the device, so a step never waits for the device.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn

from .config import EMABalanceConfig

_STAT_KEYS = ("sum", "min", "max", "count", "replaced")
_HEAD_COMPONENTS = ("head", "classifier", "fc")


def parameter_group(name: str) -> str:
    """Statistics group of a parameter, from its name: lora_A, lora_B, adapter, head, norm, other."""
    parts = name.split(".")
    for tag in ("lora_A", "lora_B"):
        if tag in parts:
            return tag
    if any(part.startswith(("hada_", "lokr_")) for part in parts):
        return "adapter"
    if any(part in _HEAD_COMPONENTS or part.endswith("_head") for part in parts):
        return "head"
    if any("norm" in part or part.startswith("bn") or part == "ln" for part in parts):
        return "norm"
    return "other"


def select_parameters(model: nn.Module, include: Sequence[str] = ()) -> list[tuple[str, nn.Parameter]]:
    """Trainable parameters of ``model`` whose name contains one of ``include`` (empty = all)."""
    return [
        (name, p)
        for name, p in model.named_parameters()
        if p.requires_grad and (not include or any(s in name for s in include))
    ]


def balance_alpha(
    a: Tensor, b: Tensor, c: Tensor, config: EMABalanceConfig, first_step: Optional[Tensor] = None
) -> tuple[Tensor, Tensor]:
    """Balance weight per tensor from the norms ``a, b, c`` (1-D tensors of equal length).

    Returns ``(alpha, replaced)``: ``replaced`` is True where ``alpha`` is not the raw formula
    value (fallback used, value clamped, or first step). A zero denominator gives an infinite
    raw value; ``first_step`` (bool, optional) marks tensors without a previous gradient.
    """
    raw = config.scale * (1.0 + b) / (a * c)
    fallback = torch.full_like(raw, config.fallback)
    if config.mode == "fallback":
        replaced = ~((raw > 0) & (raw < 1))
        alpha = torch.where(replaced, fallback, raw)
    else:
        clamped = raw.clamp(config.alpha_min, config.alpha_max)
        replaced = clamped != raw
        alpha = torch.where(raw.isnan(), fallback, clamped)
    if first_step is not None:
        alpha = torch.where(first_step, fallback, alpha)
        replaced = replaced | first_step
    return alpha, replaced


class EMABalance:
    """Float32 shadow of a list of named trainable parameters, updated by :meth:`step`.

    Call :meth:`step` right after each ``optimizer.step()`` (it reads ``.grad``) and
    :meth:`start_experience` at the start of each experience. Extra memory: two float32 copies
    of the tracked parameters (shadow and previous gradient), see :meth:`extra_memory_bytes`.
    ``carry_from`` reuses the shadow of another instance for tensors with the same name and shape
    (e.g. when the set of trainable tensors changes between experiences).
    """

    def __init__(
        self,
        named_parameters: Iterable[tuple[str, nn.Parameter]],
        config: Optional[EMABalanceConfig] = None,
        carry_from: Optional["EMABalance"] = None,
    ) -> None:
        self.config = config or EMABalanceConfig()
        named = list(named_parameters)
        if not named:
            raise ValueError("EMABalance needs at least one trainable parameter; none was given")
        self.names = [name for name, _ in named]
        self.parameters = [p for _, p in named]
        self._check_parameters()
        self.groups = [parameter_group(name) for name in self.names]
        self._index = {name: i for i, name in enumerate(self.names)}
        device = self.parameters[0].device
        with torch.no_grad():
            self._shadow = [p.detach().to(torch.float32, copy=True) for p in self.parameters]
            if carry_from is not None:
                self._carry_shadow(carry_from)
        self._prev_grad = [torch.zeros_like(s) for s in self._shadow]
        self._has_prev = [False] * len(named)
        # alpha and its statistics in float64 (float32 where the device has no float64)
        self._alpha_dtype = torch.float32 if device.type == "mps" else torch.float64
        self._stats = {key: torch.zeros(len(named), device=device, dtype=self._alpha_dtype) for key in _STAT_KEYS}
        self.num_steps = 0
        self.last_alpha: Optional[Tensor] = None
        self.reset_stats()

    def _check_parameters(self) -> None:
        duplicates = sorted({n for n in self.names if self.names.count(n) > 1})
        if duplicates:
            raise ValueError(f"EMABalance: duplicate parameter names {duplicates}")
        for name, p in zip(self.names, self.parameters):
            if not p.requires_grad:
                raise ValueError(
                    f"EMABalance: parameter {name!r} does not require grad; only trainable tensors are tracked"
                )
            if not p.is_floating_point():
                raise ValueError(
                    f"EMABalance: parameter {name!r} has dtype {p.dtype}; a floating-point dtype is needed"
                )
        devices = {p.device for p in self.parameters}
        if len(devices) > 1:
            raise ValueError(f"EMABalance: parameters lie on several devices {sorted(map(str, devices))}; use one")

    def _carry_shadow(self, other: "EMABalance") -> None:
        for i, name in enumerate(self.names):
            j = other._index.get(name)
            if j is not None and other._shadow[j].shape == self._shadow[i].shape:
                self._shadow[i].copy_(other._shadow[j])

    # ----------------------------------------------------------------- update
    def start_experience(self) -> None:
        """Begin an experience: the next step of every tensor is a first step; stats restart."""
        self._has_prev = [False] * len(self.names)
        self.reset_stats()

    def reset_stats(self) -> None:
        """Clear the alpha statistics (they accumulate over steps until reset)."""
        for key in _STAT_KEYS:
            fill = {"min": float("inf"), "max": float("-inf")}.get(key, 0.0)
            self._stats[key].fill_(fill)
        self.num_steps = 0

    @torch.no_grad()
    def step(self) -> None:
        """Update the shadow from the current weights and gradients (call after the optimiser step)."""
        present = [i for i, p in enumerate(self.parameters) if p.grad is not None]
        self._handle_missing(present)
        self.num_steps += 1
        n = len(self.names)
        device = self._stats["sum"].device
        if not present:
            self.last_alpha = torch.full((n,), float("nan"), device=device, dtype=self._alpha_dtype)
            return
        thetas = [self.parameters[i].detach().float() for i in present]
        grads = [self.parameters[i].grad.detach().float() for i in present]
        shadows = [self._shadow[i] for i in present]
        prevs = [self._prev_grad[i] for i in present]

        diff = torch._foreach_sub(thetas, shadows)
        a = torch.stack(torch._foreach_norm(diff, 1)).to(self._alpha_dtype)
        b = torch.stack(torch._foreach_norm(grads, 1)).to(self._alpha_dtype)
        torch._foreach_sub_(prevs, grads)
        c = torch.stack(torch._foreach_norm(prevs, 1)).to(self._alpha_dtype)
        torch._foreach_copy_(prevs, grads)

        first = [not self._has_prev[i] for i in present]
        first_mask = torch.tensor(first, device=device) if any(first) else None
        alpha, replaced = balance_alpha(a, b, c, self.config, first_mask)
        torch._foreach_mul_(diff, list(alpha.unbind()))
        torch._foreach_add_(shadows, diff)
        for i in present:
            self._has_prev[i] = True
        self._record(present, alpha, replaced)

    def _handle_missing(self, present: list[int]) -> None:
        if len(present) == len(self.names):
            return
        missing = sorted(set(range(len(self.names))) - set(present))
        if self.config.on_missing_grad == "error":
            shown = ", ".join(self.names[i] for i in missing[:5])
            raise RuntimeError(
                f"EMABalance: {len(missing)} tracked tensor(s) have no gradient at this step ({shown}); "
                "set on_missing_grad='skip' or leave them out with 'include'"
            )
        for i in missing:
            self._has_prev[i] = False

    def _record(self, present: list[int], alpha: Tensor, replaced: Tensor) -> None:
        n = len(self.names)
        if len(present) == n:
            alpha_full, replaced_full = alpha, replaced
        else:
            idx = torch.tensor(present, device=alpha.device)
            alpha_full = torch.full_like(self._stats["sum"], float("nan")).index_copy_(0, idx, alpha)
            replaced_full = torch.zeros(n, dtype=torch.bool, device=alpha.device).index_copy_(0, idx, replaced)
        valid = ~alpha_full.isnan()
        s = self._stats
        s["sum"].add_(torch.where(valid, alpha_full, 0.0))
        torch.fmin(s["min"], alpha_full, out=s["min"])
        torch.fmax(s["max"], alpha_full, out=s["max"])
        s["count"].add_(valid)
        s["replaced"].add_(replaced_full)
        self.last_alpha = alpha_full

    # ----------------------------------------------------------------- statistics
    def alpha_stats(self) -> dict[str, dict[str, Optional[float]]]:
        """Per group: tensors, updates (tensor-steps), mean/min/max alpha and fallback_share.

        ``fallback_share`` is the share of updates whose alpha was not the raw formula value
        (first step, out-of-range fallback, or clamp in ``clip`` mode). Values are ``None``
        for a group without updates. Reads the device once.
        """
        rows = torch.stack([self._stats[key] for key in _STAT_KEYS]).tolist()
        per_tensor = dict(zip(_STAT_KEYS, rows))
        out: dict[str, dict[str, Optional[float]]] = {}
        for group in dict.fromkeys(self.groups):
            members = [i for i, g in enumerate(self.groups) if g == group]
            count = sum(per_tensor["count"][i] for i in members)
            entry: dict[str, Optional[float]] = {"tensors": len(members), "updates": int(count)}
            if count:
                entry["mean"] = sum(per_tensor["sum"][i] for i in members) / count
                entry["min"] = min(per_tensor["min"][i] for i in members)
                entry["max"] = max(per_tensor["max"][i] for i in members)
                entry["fallback_share"] = sum(per_tensor["replaced"][i] for i in members) / count
            else:
                entry.update(mean=None, min=None, max=None, fallback_share=None)
            out[group] = entry
        return out

    def extra_memory_bytes(self) -> int:
        """Bytes held by the shadow and the previous-gradient copies."""
        return sum(t.numel() * t.element_size() for t in self._shadow + self._prev_grad)

    # ----------------------------------------------------------------- shadow access
    @property
    def shadow(self) -> dict[str, Tensor]:
        """The float32 shadow tensors by parameter name (live, do not modify)."""
        return dict(zip(self.names, self._shadow))

    @torch.no_grad()
    def copy_shadow_to(self, named_parameters: Optional[Iterable[tuple[str, Tensor]]] = None) -> None:
        """Copy the shadow into ``named_parameters`` (default: the tracked parameters), by name."""
        if named_parameters is None:
            targets, sources = self.parameters, self._shadow
        else:
            targets, sources = [], []
            for name, tensor in named_parameters:
                i = self._index.get(name)
                if i is None:
                    raise KeyError(f"EMABalance: no shadow for parameter {name!r}; tracked: {self.names[:5]}...")
                if tensor.shape != self._shadow[i].shape:
                    raise ValueError(
                        f"EMABalance: shape of {name!r} is {tuple(tensor.shape)}, "
                        f"shadow has {tuple(self._shadow[i].shape)}"
                    )
                targets.append(tensor)
                sources.append(self._shadow[i])
        if targets:
            # on the tensors, not .data: bumps their version counters, so cached merged copies
            # of an adapter (cldf.detector.MergedTails) see the new weights
            torch._foreach_copy_(targets, sources)

    @contextmanager
    def using_shadow(self) -> Iterator[None]:
        """Temporarily put the shadow into the tracked parameters; the training weights come back after."""
        with torch.no_grad():
            backup = [p.detach().clone() for p in self.parameters]
        self.copy_shadow_to()
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(list(self.parameters), backup)

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only (safetensors-ready): shadow, previous gradients, first-step flags, stats."""
        state = {f"shadow.{n}": t for n, t in zip(self.names, self._shadow)}
        state.update({f"prev_grad.{n}": t for n, t in zip(self.names, self._prev_grad)})
        state["has_prev"] = torch.tensor(self._has_prev, dtype=torch.bool)
        state.update({f"stats.{key}": self._stats[key] for key in _STAT_KEYS})
        state["num_steps"] = torch.tensor(self.num_steps, dtype=torch.int64)
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load a :meth:`state_dict` of an instance tracking the same names and shapes."""
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"EMABalance state: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        for key, tensor in own.items():
            if state[key].shape != tensor.shape:
                raise ValueError(
                    f"EMABalance state: {key!r} has shape {tuple(state[key].shape)}, "
                    f"expected {tuple(tensor.shape)}"
                )
        for key in own:
            if key.startswith(("shadow.", "prev_grad.", "stats.")):
                own[key].copy_(state[key])
        self._has_prev = [bool(v) for v in state["has_prev"].tolist()]
        self.num_steps = int(state["num_steps"])
