"""Tails with one adapter merged into their weights, for passes without gradient.

A LoRA (LoHa, LoKr) layer runs its base layer plus the adapter's low-rank branch; with the
adapter merged into the weights it runs the base layer alone (about 30% less tail time on a
CPU). :class:`MergedTails` keeps one merged copy of the backbone per adapter and rebuilds it
when any tensor of that adapter, or of the backbone itself, changed since (tracked by the
tensors' in-place version counters and storage), so a copy is never stale. Only the tail is
copied: the frozen prefix holds no adapter and a copy never runs it, so every copy shares the
original's prefix modules.
"""

from __future__ import annotations

import copy

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import ModulesToSaveWrapper
from torch import Tensor, nn

from .split import BackboneSplit


class MergedTails:
    """Merged inference tails of a peft backbone, one per adapter, built on demand."""

    def __init__(self, backbone: nn.Module, tuned_stages: int) -> None:
        self.backbone = backbone
        self.tuned_stages = tuned_stages
        self._tails: dict[str, tuple[tuple, BackboneSplit]] = {}
        self._owned: dict[str, list[Tensor]] = {}
        self._prefix_modules = prefix_subtrees(backbone.get_base_model(), tuned_stages)
        self._prefix_ids = {id(sub) for m in self._prefix_modules for sub in m.modules()}

    def split(self, name: str) -> BackboneSplit:
        """The split of ``name``'s backbone copy with its weights merged (rebuilt if anything
        changed): call its ``tail`` or ``tail_outputs``."""
        key = self._fingerprint(name)
        cached = self._tails.get(name)
        if cached is None or cached[0] != key:
            self._tails[name] = (key, self._build(name))
        return self._tails[name][1]

    def forget(self, name: str | None = None) -> None:
        """An adapter was added, or ``name`` was deleted: list every adapter's tensors afresh
        and drop ``name``'s copy (a later adapter of that name holds other tensors). Other
        copies are kept: their fingerprints, taken over the new lists, tell whether they still
        hold (adding an adapter leaves the others' tensors as they were)."""
        self._owned.clear()
        if name is None:
            self._tails.clear()
        else:
            self._tails.pop(name, None)

    def _owned_tensors(self, name: str) -> list[Tensor]:
        """Every parameter and buffer of the backbone except those of other adapters (listed
        once, until :meth:`forget`)."""
        if name not in self._owned:
            others = adapter_members(self.backbone, set(self.backbone.peft_config) - {name})
            excluded = {id(t) for member in others
                        for t in ([member] if isinstance(member, Tensor) else [*member.parameters(), *member.buffers()])}
            self._owned[name] = [t for t in [*self.backbone.parameters(), *self.backbone.buffers()]
                                 if id(t) not in excluded]
        return self._owned[name]

    def _fingerprint(self, name: str) -> tuple:
        """Storage and version of each tensor; for normalisation step counters their value
        instead (a train-mode pass bumps them, and only them, when it moves the running
        statistics in place; moving the backbone to its device renews their storage)."""
        return tuple(int(t) if t.dtype == torch.long and t.dim() == 0 else (t.data_ptr(), t._version)
                     for t in self._owned_tensors(name))

    def _shared_with_copy(self, name: str) -> dict[int, object]:
        """A deep-copy memo sharing what a copy merging ``name`` never changes: the prefix, and
        the modules and tensors of every other adapter (merging drops them from the copy)."""
        others = adapter_members(self.backbone, set(self.backbone.peft_config) - {name})
        return {id(obj): obj for obj in [*self._prefix_modules, *others]}

    @torch.no_grad()
    def _build(self, name: str) -> BackboneSplit:
        trainable = [(p, p.requires_grad) for p in self.backbone.parameters()]
        clone = copy.deepcopy(self.backbone, memo=self._shared_with_copy(name))
        clone.set_adapter(name)  # also sets requires_grad of the other adapters, shared: restored below
        plain = clone.merge_and_unload(adapter_names=[name])
        for tensor, flag in trainable:
            tensor.requires_grad_(flag)
        for module in plain.modules():  # the copied modules only; the shared prefix is left as it is
            if id(module) not in self._prefix_ids:
                module.training = False
                for tensor in module.parameters(recurse=False):
                    tensor.requires_grad_(False)
        return BackboneSplit(plain, self.tuned_stages)


def prefix_subtrees(model: nn.Module, tuned_stages: int) -> list[nn.Module]:
    """The modules of ``model``'s frozen prefix that hold no part of its tail and are neither in
    nor around an adapter layer (sharing one of them shares everything below it)."""
    split = BackboneSplit(model, tuned_stages)
    tail = [name for name, _ in model.named_modules() if name and split.in_tail(name)]
    adapted = {id(sub) for m in model.modules() if isinstance(m, (BaseTunerLayer, ModulesToSaveWrapper))
               for sub in m.modules()}  # adapter layers and everything they wrap (merging rewrites them)
    subtrees = []
    for name in split.prefix_module_names():
        module = model.get_submodule(name)
        if not any(id(m) in adapted for m in module.modules()) and not any(t.startswith(name + ".") for t in tail):
            subtrees.append(module)
    return subtrees


def adapter_members(backbone: nn.Module, names: set[str]) -> list[nn.Module | Tensor]:
    """What holds adapters ``names`` in a peft model: their entries in each tuner layer's
    per-adapter dictionaries and in each ``modules_to_save`` wrapper (found by structure, not by
    module names, so no adapter name can be mistaken for a part of the backbone)."""
    members: list[nn.Module | Tensor] = []
    for module in backbone.modules():
        if isinstance(module, BaseTunerLayer):
            containers = [getattr(module, attribute) for attribute in module.adapter_layer_names]
        elif isinstance(module, ModulesToSaveWrapper):
            containers = [module.modules_to_save]
        else:
            continue
        members += [member for container in containers for key, member in container.items() if key in names]
    return members
