"""The detector: a timm backbone, peft adapters on its tail, a growing head, ``p_fake``."""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, ContextManager, Iterator, Optional, Sequence

import torch
from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save
from torch import Tensor, nn

from ..atomic_io import write_bytes_atomic
from ..device import resolve_device
from ..scores import p_fake_from_logits
from .adapters import build_peft_config, tail_norm_modules
from .backbone import create_backbone
from .config import DetectorConfig
from .heads import GrowingLinearHead
from .frozen_pass_memo import FrozenPassMemo, Rows
from .merged_tails import MergedTails
from .preprocess import ImageLike, check_batch, make_preprocess, prepare_batch
from .split import BackboneSplit, TailOutputs, as_float32

DEFAULT_ADAPTER = "default"


class Detector(nn.Module):
    """Real/fake detector with attribution over a growing set of classes.

    The backbone weights are held once; named peft adapters (e.g. ``slow`` and ``fast``) live on
    its tuned tail and can be switched. Only adapters and the head are trainable.
    ``forward`` returns logits and keeps the pooled features of that pass in ``last_features``.
    """

    def __init__(self, config: Optional[DetectorConfig] = None, adapter_name: str = DEFAULT_ADAPTER) -> None:
        super().__init__()
        self.config = config or DetectorConfig()
        cfg = self.config
        timm_model, self.weights_source = create_backbone(
            cfg.backbone, cfg.pretrained, cfg.weights, num_classes=0, **cfg.backbone_kwargs
        )
        self.num_features: int = timm_model.num_features
        self.in_chans: int = timm_model.default_cfg.get("in_chans", 3) if hasattr(timm_model, "default_cfg") else 3
        self.preprocess = make_preprocess(timm_model, cfg.image_size)
        self.split = BackboneSplit(timm_model, cfg.adapter.tuned_stages)
        self._peft_config = build_peft_config(cfg.adapter, timm_model, self.split)
        self.backbone = get_peft_model(timm_model, self._peft_config, adapter_name=adapter_name)
        # Modules whose statistics never move: the shared prefix (set non-recursively, so the tail
        # keeps its mode) and tail normalisation layers that adapters share instead of copying.
        adapted_norms, shared_norms = tail_norm_modules(timm_model, self.split)
        fixed_norms = shared_norms if cfg.adapter.adapt_norm else adapted_norms + shared_norms
        self._fixed_statistics = [timm_model.get_submodule(n) for n in self.split.prefix_module_names()] + [
            sub for n in fixed_norms for sub in timm_model.get_submodule(n).modules()
        ]
        self.head = GrowingLinearHead(self.num_features, cfg.num_classes)
        self.real_classes: list[int] = list(cfg.real_classes)
        self.class_map_size: Optional[int] = None
        self._frozen: set[str] = set()
        self._head_trainable = True
        self.last_features: Optional[Tensor] = None
        self._prefix_cache: Optional[tuple[Tensor, Tensor, Optional[list[bytes]]]] = None
        self._memo: Optional[FrozenPassMemo] = None
        self._autocast_dtype: Optional[torch.dtype] = None
        self._channels_last = False
        self._merged_tails = MergedTails(self.backbone, cfg.adapter.tuned_stages)
        self._apply_trainability()
        self.to(resolve_device(cfg.device))
        self.train(False)

    def __deepcopy__(self, memo: dict) -> "Detector":
        """Copies (e.g. LwF's previous model) drop the per-batch caches (``last_features`` is a
        non-leaf tensor, which cannot be deep-copied)."""
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        state = {**self.__dict__, "last_features": None, "_prefix_cache": None, "_memo": None,
                 "_merged_tails": None}
        clone.__dict__.update(copy.deepcopy(state, memo))
        clone._merged_tails = MergedTails(clone.backbone, clone.config.adapter.tuned_stages)
        return clone

    # ----------------------------------------------------------------- forward passes
    @property
    def device(self) -> torch.device:
        return self.head.linear.weight.device

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the active adapter; the features of this pass go to ``last_features``."""
        features = self.features(x)
        self.last_features = features
        return self.head(features)

    def features(self, x: Tensor) -> Tensor:
        """Pooled pre-logit features with the active adapter."""
        with self._backbone_precision():
            return self.split.tail(self._prefix(x)).float()

    def multi_features(self, x: Tensor, adapters: Sequence[Optional[str]],
                       rows: int | Tensor | None = None) -> dict[Optional[str], Tensor]:
        """Features of several adapters (``None`` = pretrained, no adapter) with one prefix pass.

        Frozen adapters and the pretrained path run without gradient and with frozen
        normalisation statistics, so they never change. A pass without gradient in eval mode
        (inference, or a frozen adapter) runs a copy of the tail with the adapter merged into
        its weights (:class:`MergedTails`): the same features, cheaper. ``rows``: only the
        batch's first ``rows`` samples (an int) or the samples at these indices (a tensor) go
        through the tails (the prefix pass of the whole batch is reused).
        """
        return self._tails(x, adapters, rows, statistics=False)

    def multi_outputs(self, x: Tensor, adapters: Sequence[Optional[str]],
                      rows: int | Tensor | None = None) -> dict[Optional[str], TailOutputs]:
        """:meth:`multi_features` with each tail's per-stage map statistics as well
        (:class:`~cldf.detector.split.TailOutputs`)."""
        return self._tails(x, adapters, rows, statistics=True)

    def _tails(self, x: Tensor, adapters: Sequence[Optional[str]], rows: int | Tensor | None,
               statistics: bool) -> dict[Optional[str], Any]:
        with self._backbone_precision():
            h = self._prefix(x)
            keys = self._prefix_cache[2]
            if isinstance(rows, Tensor):
                rows = rows.nonzero().flatten() if rows.dtype == torch.bool else rows
                h = h[rows.to(h.device)]
                keys = None if keys is None else [keys[i] for i in rows.tolist()]
            elif rows is not None:
                h, keys = h[:rows], None if keys is None else keys[:rows]
            out: dict[Optional[str], Any] = {}
            for name in adapters:
                frozen = name is None or name in self._frozen
                if name is not None and (frozen or not (self.training or torch.is_grad_enabled())):
                    split = self._merged_tails.split(name)  # a new copy whenever the adapter changed
                    with torch.no_grad():
                        out[name] = self._tail(split, h, statistics, (name, split) if frozen else None, keys)
                    continue
                with self.using_adapter(name), self._frozen_mode(frozen):
                    out[name] = self._tail(self.split, h, statistics, ("pretrained",) if frozen else None, keys)
        return {name: as_float32(o) for name, o in out.items()}

    def _tail(self, split: BackboneSplit, h: Tensor, statistics: bool, memo_owner: Optional[tuple],
              keys: Optional[list[bytes]]) -> Tensor | TailOutputs:
        """One tail pass; a frozen one (``memo_owner`` names it) through the memo when one is
        kept, with its statistics where the layout has them, so either kind of request is served."""
        if keys is None or memo_owner is None or split.layout is None:
            return split.tail_outputs(h) if statistics else split.tail(h)

        def compute(index: Optional[Tensor]) -> Rows:
            outputs = split.tail_outputs(h if index is None else h[index.to(h.device)])
            return [outputs.features, *outputs.stage_statistics]

        features, *stage_statistics = self._memo.outputs(memo_owner, keys, compute)
        return TailOutputs(features, stage_statistics) if statistics else features

    @torch.no_grad()
    def stage_statistics_dims(self) -> list[int]:
        """Widths of :meth:`multi_outputs`' per-stage statistics (one small pass, eval mode)."""
        was_training = self.training
        self.train(False)
        size = self.config.image_size
        h = self.split.prefix(torch.zeros(1, self.in_chans, size, size, device=self.device))
        dims = [s.shape[1] for s in self.split.tail_outputs(h).stage_statistics]
        self.train(was_training)
        return dims

    def _prefix(self, x: Tensor) -> Tensor:
        """The frozen prefix's output; reused when the same batch tensor comes again (e.g. a
        distillation pass through a previous adapter right after the training forward)."""
        if self._prefix_cache is not None and self._prefix_cache[0] is x:
            return self._prefix_cache[1]
        check_batch(x, self.in_chans)
        layout = torch.channels_last if self._channels_last else torch.preserve_format
        keys = None if self._memo is None else self._memo.digests(x)

        def compute(index: Optional[Tensor]) -> Rows:
            batch = x if index is None else x[index]
            return [self.split.prefix(batch.to(self.device, memory_format=layout))]

        with torch.no_grad():
            h = compute(None)[0] if keys is None else self._memo.outputs(("prefix",), keys, compute)[0]
        self._prefix_cache = (x, h, keys)
        return h

    def start_frozen_pass_memo(self, budget_mb: float) -> Optional[FrozenPassMemo]:
        """From now on each image's frozen passes (the prefix, frozen adapters' tails, the
        pretrained tail) are computed once (see :mod:`~cldf.detector.frozen_pass_memo`), until
        :meth:`drop_frozen_pass_memo`; a budget of 0 keeps nothing (and digests nothing).
        Starting again drops what was kept."""
        self._memo = FrozenPassMemo(int(budget_mb * 2**20)) if budget_mb > 0 else None
        self._prefix_cache = None
        return self._memo

    @property
    def frozen_passes_memoized(self) -> bool:
        """Whether frozen passes are being kept per image (between :meth:`start_frozen_pass_memo`
        with a budget and :meth:`drop_frozen_pass_memo`)."""
        return self._memo is not None

    def drop_frozen_pass_memo(self) -> None:
        """Forget every kept output."""
        self._memo = None
        self._prefix_cache = None

    # ----------------------------------------------------------------- speed
    def set_speed(self, autocast_dtype: Optional[torch.dtype], channels_last: bool) -> None:
        """Run the backbone passes under autocast to ``autocast_dtype`` (``None``: float32) and,
        with ``channels_last``, in that memory format (weights converted now, batches on entry).
        What leaves the backbone (features, stage statistics) is float32, so heads, losses and
        analytic statistics never run in reduced precision. See :mod:`cldf.speed`."""
        self._autocast_dtype = autocast_dtype
        self._channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def _backbone_precision(self) -> ContextManager[Any]:
        if self._autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    @contextmanager
    def _frozen_mode(self, frozen: bool) -> Iterator[None]:
        if not frozen:
            yield
            return
        was_training = self.training
        self.train(False)
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def use_class_map(self, real_classes: Sequence[int], num_classes: int) -> None:
        """Score against a stream's class map: its real class ids (any number, learned yet or
        not) among ``num_classes`` classes in all."""
        self.real_classes = [int(c) for c in real_classes]
        self.class_map_size = int(num_classes)

    def p_fake(self, logits: Tensor) -> Tensor:
        """Detection score: 1 - total probability of the real classes (those the head has grown
        to; see :meth:`use_class_map`)."""
        return p_fake_from_logits(logits, self.real_classes, self.class_map_size)

    def prepare(self, images: Sequence[ImageLike]) -> Tensor:
        """PIL images or uint8 arrays -> a normalised batch on the detector's device."""
        return prepare_batch(images, self.preprocess).to(self.device)

    @torch.no_grad()
    def score(self, images: Sequence[ImageLike]) -> tuple[Tensor, Tensor]:
        """``p_fake`` and the attributed class of each image (eval mode)."""
        was_training = self.training
        self.train(False)
        logits = self(self.prepare(images))
        self.train(was_training)
        return self.p_fake(logits), logits.argmax(dim=1)

    def train(self, mode: bool = True) -> "Detector":
        """Set train/eval mode; the shared frozen prefix always stays in eval mode."""
        super().train(mode)
        for module in self._fixed_statistics:
            module.training = False
        return self

    # ----------------------------------------------------------------- classes
    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def grow_classes(self, num_classes: int) -> None:
        """Have at least ``num_classes`` head outputs, keeping the learned rows."""
        self.head.grow(num_classes)
        self._apply_trainability()

    # ----------------------------------------------------------------- adapters
    @property
    def adapter_names(self) -> list[str]:
        return list(self.backbone.peft_config)

    @property
    def active_adapter(self) -> str:
        return self.backbone.active_adapter

    def add_adapter(self, name: str, copy_from: Optional[str] = None) -> None:
        """Add an adapter (fresh, or a copy of ``copy_from``); the active adapter is unchanged."""
        if name in self.adapter_names:
            raise ValueError(f"adapter {name!r} already exists; adapters: {', '.join(self.adapter_names)}")
        if any(name in module_name.split(".") for module_name, _ in self.backbone.named_modules()):
            raise ValueError(f"adapter name {name!r} is also the name of a part of the backbone (peft finds an "
                             "adapter's tensors by name); choose another, e.g. with a letter prefix")
        if copy_from is not None:
            self._check_adapter(copy_from)
        active = self.active_adapter
        self.backbone.add_adapter(name, self._peft_config)
        self._merged_tails.forget(name)
        if copy_from is not None:
            self.load_adapter_state(name, self.adapter_state(copy_from))
        self.backbone.to(self.device)
        self.set_adapter(active)

    def delete_adapter(self, name: str) -> None:
        """Remove an adapter that is not active."""
        self._check_adapter(name)
        if name == self.active_adapter:
            raise ValueError(f"cannot delete the active adapter {name!r}; switch first")
        self.backbone.delete_adapter(name)
        self._merged_tails.forget(name)
        self._frozen.discard(name)
        self._apply_trainability()

    def set_adapter(self, name: str) -> None:
        """Make ``name`` the adapter used by ``forward``/``features``."""
        self._check_adapter(name)
        self.backbone.set_adapter(name)
        self._apply_trainability()

    def freeze_adapter(self, name: str) -> None:
        """Freeze an adapter for good: no gradient, and frozen statistics in ``multi_features``."""
        self._check_adapter(name)
        self._frozen.add(name)
        self._apply_trainability()

    @property
    def frozen_adapters(self) -> set[str]:
        return set(self._frozen)

    @contextmanager
    def using_adapter(self, name: Optional[str]) -> Iterator[None]:
        """Temporarily activate ``name``; ``None`` disables adapters (pretrained backbone)."""
        if name is None:
            with self.backbone.disable_adapter():
                yield
            self._apply_trainability()
            return
        active = self.active_adapter
        if name == active:
            yield
            return
        self.set_adapter(name)
        try:
            yield
        finally:
            self.set_adapter(active)

    def adapter_state(self, name: str) -> dict[str, Tensor]:
        """The tensors of one adapter (weights and its normalisation statistics), keys without its name."""
        self._check_adapter(name)
        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.backbone, adapter_name=name).items()}

    def load_adapter_state(self, name: str, state: dict[str, Tensor]) -> None:
        """Load tensors from :meth:`adapter_state` into adapter ``name``."""
        self._check_adapter(name)
        result = set_peft_model_state_dict(self.backbone, state, adapter_name=name)
        bad = [k for k in result.unexpected_keys]
        if bad:
            raise ValueError(f"adapter state for {name!r} has keys this detector lacks: {', '.join(bad[:8])}")

    def save_adapter(self, name: str, path: str | Path) -> None:
        """Write one adapter alone (no backbone) to a safetensors file, atomically."""
        state = {k: v.contiguous().cpu() for k, v in self.adapter_state(name).items()}
        meta = {"backbone": self.config.backbone, "adapter": json.dumps(self._adapter_meta())}
        write_bytes_atomic(Path(path), save(state, metadata=meta))

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load an adapter written by :meth:`save_adapter` (created if absent)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        expected = {"backbone": self.config.backbone, "adapter": self._adapter_meta()}
        found = {"backbone": meta.get("backbone"), "adapter": json.loads(meta.get("adapter", "null"))}
        if found != expected:
            raise ValueError(f"adapter file {path} was made for {found}, this detector is {expected}")
        if name not in self.adapter_names:
            self.add_adapter(name)
        self.load_adapter_state(name, load_file(str(path), device=str(self.device)))

    def _adapter_meta(self) -> dict:
        a = self.config.adapter
        return {"tuner": a.tuner, "r": a.r, "alpha": a.alpha, "tuned_stages": a.tuned_stages, "adapt_norm": a.adapt_norm}

    def _check_adapter(self, name: str) -> None:
        if name not in self.adapter_names:
            raise KeyError(f"no adapter {name!r}; adapters: {', '.join(self.adapter_names)}")

    def _apply_trainability(self) -> None:
        """Only the active, unfrozen adapter and the head are trainable."""
        active = self.active_adapter
        trainable = active not in self._frozen
        for pname, p in self.backbone.named_parameters():
            p.requires_grad = trainable and _belongs_to(pname, active)
        for p in self.head.parameters():
            p.requires_grad = self._head_trainable

    def set_head_trainable(self, trainable: bool) -> None:
        """Train the linear head or not (a method with heads of its own leaves it frozen);
        the choice holds across adapter switches and head growth."""
        self._head_trainable = trainable
        self._apply_trainability()

    def is_backbone_key(self, key: str) -> bool:
        """Whether a key of this detector's ``state_dict`` is a frozen pretrained backbone tensor."""
        if not key.startswith("backbone."):
            return False
        return self.backbone.base_model.prefix not in key and ".modules_to_save." not in key

    def trainable_parameter_count(self) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        return sum(p.numel() for p in self.parameters() if p.requires_grad), total


def learned_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """``model.state_dict()`` without the frozen pretrained backbone tensors of any
    :class:`Detector` inside it: adapters, heads and method statistics only."""
    detectors = [(f"{name}." if name else "", m) for name, m in model.named_modules() if isinstance(m, Detector)]
    return {
        key: value for key, value in model.state_dict().items()
        if not any(key.startswith(prefix) and det.is_backbone_key(key[len(prefix):]) for prefix, det in detectors)
    }


def _belongs_to(param_name: str, adapter: str) -> bool:
    return f".{adapter}." in param_name or param_name.endswith(f".{adapter}")
