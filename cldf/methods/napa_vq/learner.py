"""NAPA-VQ as a training-loop companion in plain PyTorch (no Avalanche).

Call order per experience: :meth:`NAPAVQ.begin_experience` -> per step
:meth:`~NAPAVQ.training_loss` (add it to the loss before backward) and :meth:`~NAPAVQ.step`
(after backward) -> per epoch :meth:`~NAPAVQ.end_epoch` -> at the end, accumulate features of
the experience's training data into :meth:`~NAPAVQ.new_feature_sums` and pass them to
:meth:`~NAPAVQ.end_experience`.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cldf.methods.napa_vq.codebook import CodeBook
from cldf.methods.napa_vq.config import NAPAVQConfig
from cldf.methods.napa_vq.losses import distance_cross_entropy, feature_distillation, separation_loss
from cldf.methods.napa_vq.previous import CachedPreviousFeatures, PreviousFeatures
from cldf.methods.napa_vq.prototypes import FeatureSums, PrototypeStore, sample_pseudo_features


MISSING_CLASS_LOGIT = -1e4
"""Logit given, under nearest-CV prediction, to head outputs that have no code vector yet."""


class NAPAVQ:
    """Code vectors, graph, prototypes and the previous-model snapshot of one feature space.

    Class c owns code vector rows ``c * R + r`` with R = 4 when rotations are on (r = the
    number of quarter turns), else R = 1. Prototypes exist for the unrotated rows only.
    ``reduce`` sums a tensor over data-parallel processes (None: one process); with it the
    per-batch edge counts, the code vectors' gradients (averaged) and the prototype sums are
    combined over processes, so every process holds the same state.
    """

    def __init__(self, config: NAPAVQConfig, dim: int,
                 previous: Optional[PreviousFeatures] = None, device: torch.device | str = "cpu",
                 reduce: Optional[Callable[[Tensor], Tensor]] = None) -> None:
        self.config = config
        self.reduce = reduce
        self.dim = dim
        self.device = torch.device(device)
        self.rotations = 4 if config.use_rotations else 1
        self.codebook = CodeBook(dim, config.k, config.epsilon, config.max_age, config.faiss_threshold,
                                 init_scale=dim ** -0.5 if config.normalize else 1.0).to(self.device)
        self.prototypes = PrototypeStore(dim).to(self.device)
        if previous is not None and config.kd_cache_mb > 0:
            previous = CachedPreviousFeatures(previous, int(config.kd_cache_mb * 2**20))
        self.previous = previous
        self.classes_seen = torch.zeros(0, dtype=torch.bool, device=self.device)
        self.experiences_done = 0
        self.generator = torch.Generator().manual_seed(config.seed)  # CPU: draws are moved
        self.current_classes: list[int] = []
        self.optimizer: Optional[torch.optim.SGD] = None
        self.scheduler: Optional[torch.optim.lr_scheduler.StepLR] = None
        self.last_terms: dict[str, float] = {}

    # ------------------------------------------------------------------ experience boundaries
    def begin_experience(self, classes: Iterable[int]) -> None:
        """Grow the code vectors to cover ``classes`` and set up the code-vector optimiser."""
        self.current_classes = sorted({int(c) for c in classes})
        if not self.current_classes or self.current_classes[0] < 0:
            raise ValueError(f"NAPAVQ.begin_experience: classes {self.current_classes} must be ids >= 0")
        num_classes = max(self.current_classes[-1] + 1, self.classes_seen.numel())
        self.codebook.grow(num_classes * self.rotations, generator=self.generator)
        self.prototypes.grow(num_classes * self.rotations)
        self.classes_seen = torch.cat(
            [self.classes_seen, self.classes_seen.new_zeros(num_classes - self.classes_seen.numel())])
        cfg = self.config
        lr = cfg.cv_lr_first if self.experiences_done == 0 else cfg.cv_lr_later
        self.optimizer = torch.optim.SGD([self.codebook.vectors], lr=lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=cfg.cv_lr_step_epochs, gamma=cfg.cv_lr_gamma)

    def embed(self, z: Tensor) -> Tensor:
        """Backbone features -> the space of the code vectors and prototypes."""
        return F.normalize(z, dim=1) if self.config.normalize else z

    def new_feature_sums(self) -> FeatureSums:
        """An empty accumulator for the end-of-experience prototype pass."""
        return FeatureSums(self.classes_seen.numel() * self.rotations, self.dim, self.device)

    def prototype_labels(self, y: Tensor) -> Tensor:
        """Rows of the unrotated code vectors of classes ``y`` (what FeatureSums.add expects)."""
        return y * self.rotations

    def end_experience(self, sums: FeatureSums) -> None:
        """Store prototypes of the classes new in this experience, freeze their code vectors
        and snapshot the model for distillation."""
        new = [c for c in self.current_classes if not self.classes_seen[c]]
        if self.reduce is not None:
            sums.reduce(self.reduce)
        self.prototypes.commit(sums, [c * self.rotations for c in new])
        seen = torch.as_tensor(self.current_classes, dtype=torch.long, device=self.device)
        self.classes_seen[seen] = True
        rows = (seen[:, None] * self.rotations + torch.arange(self.rotations, device=self.device)).flatten()
        self.codebook.freeze(rows)
        if self.previous is not None:
            self.previous.snapshot()
        self.experiences_done += 1

    # ------------------------------------------------------------------ per step
    @property
    def distills(self) -> bool:
        """Whether :meth:`training_loss` wants ``z_old`` (a snapshot exists and w_kd > 0)."""
        return self.previous is not None and self.previous.ready and self.config.w_kd > 0

    def distilled_rows(self, batch_size: int) -> int:
        """How many of a batch's first samples are distilled (``config.kd_fraction``)."""
        return max(1, math.ceil(self.config.kd_fraction * batch_size))

    def previous_features(self, x: Tensor) -> Optional[Tensor]:
        """Z_old for :meth:`training_loss`: the previous model's features of the batch's
        :meth:`distilled_rows` first samples, or ``None`` when there is nothing to distil."""
        if not self.distills:
            return None
        return self.previous(x, rows=self.distilled_rows(len(x)))

    def training_loss(self, views: Sequence[Tensor], y: Tensor, z_old: Optional[Tensor] = None) -> Tensor:
        """Weighted NAPA-VQ terms for one batch; also updates the edge graph.

        ``views[r]`` are the batch's features after r quarter turns (one view without
        rotations); ``y`` are class ids; ``z_old`` the previous model's features of view 0's
        first ``len(z_old)`` samples (see :meth:`distilled_rows`).
        """
        if len(views) != self.rotations:
            raise ValueError(f"NAPAVQ.training_loss: expected {self.rotations} views, got {len(views)}")
        cfg = self.config
        vectors = self.codebook.vectors
        views = [self.embed(v) for v in views]
        z = torch.cat(views)
        labels = torch.cat([y * self.rotations + r for r in range(self.rotations)])
        neighbours = self.codebook.neighbour_mask()
        terms = {
            "dce": distance_cross_entropy(z, labels, vectors, cfg.T),
            "na": separation_loss(z, labels, vectors, neighbours, cfg.na_scale),
        }
        if cfg.n_pseudo > 0 and bool(self.prototypes.known.any()):
            p, c, _, _ = sample_pseudo_features(self.prototypes.means, self.prototypes.known,
                                                self.codebook.edges, cfg.n_pseudo,
                                                self.generator, cfg.pseudo_weight_min)
            terms["na_pseudo"] = separation_loss(p, c, vectors, neighbours, cfg.na_scale)
            terms["pa"] = distance_cross_entropy(p, c, vectors, cfg.T)
        if z_old is not None:
            terms["kd"] = feature_distillation(views[0][: len(z_old)], self.embed(z_old))
        weights = {"dce": cfg.w_dce, "na": cfg.w_na, "na_pseudo": cfg.w_na, "pa": cfg.w_pa, "kd": cfg.w_kd}
        total = sum(weights[name] * value for name, value in terms.items())
        self.codebook.update_graph(z.detach(), self.reduce)
        self.last_terms = {name: float(value.detach()) for name, value in terms.items()}
        return total

    def step(self, scaler: Optional[torch.amp.GradScaler] = None) -> None:
        """SGD step on the code vectors (old ones' gradients zeroed), then clear their gradients;
        with the ``scaler`` of a scaled (fp16) loss, the step unscales them (and is skipped when
        one is not finite)."""
        if self.optimizer is None:
            raise RuntimeError("NAPAVQ.step: call begin_experience() first")
        grad = self.codebook.vectors.grad
        if self.reduce is not None and grad is not None:
            processes = self.reduce(torch.ones((), device=grad.device))
            grad.copy_(self.reduce(grad) / processes)
        self.codebook.zero_frozen_grads()
        if scaler is None or grad is None:
            self.optimizer.step()
        else:
            scaler.step(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)

    def end_epoch(self) -> None:
        """Advance the code vectors' step-decay schedule."""
        if self.scheduler is None:
            raise RuntimeError("NAPAVQ.end_epoch: call begin_experience() first")
        self.scheduler.step()

    # ------------------------------------------------------------------ prediction
    def predict_logits(self, z: Tensor) -> Tensor:
        """Nearest-code-vector prediction: cosine to each class's unrotated CV, divided by T."""
        logits = self.codebook.cosine_logits(z, self.config.T)
        return logits[:, :: self.rotations]

    def prediction(self, z: Tensor, head_logits: Tensor) -> Tensor:
        """The model's output under ``config.prediction``: the head's logits (``"head"``, or before
        any code vector exists), else the nearest-code-vector logits widened to the head's
        outputs, classes without a code vector at :data:`MISSING_CLASS_LOGIT`."""
        if self.config.prediction != "nearest_cv" or self.codebook.num_vectors == 0:
            return head_logits
        logits = self.predict_logits(z)
        width = max(head_logits.shape[1], logits.shape[1])
        padded = logits.new_full((logits.shape[0], width), MISSING_CLASS_LOGIT)
        padded[:, : logits.shape[1]] = logits
        return padded

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only (for safetensors): code vectors, edges, prototypes, previous snapshot."""
        state = {
            "codebook.vectors": self.codebook.vectors.detach().clone(),
            "codebook.edges": self.codebook.edges.clone(),
            "codebook.frozen": self.codebook.frozen.clone(),
            "prototypes.means": self.prototypes.means.clone(),
            "prototypes.known": self.prototypes.known.clone(),
            "classes_seen": self.classes_seen.clone(),
            "experiences_done": torch.tensor(self.experiences_done),
            "rotations": torch.tensor(self.rotations),
            "generator": self.generator.get_state(),
        }
        if self.previous is not None:
            state.update({f"previous.{k}": v for k, v in self.previous.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        own = {k for k in self.state_dict() if not k.startswith("previous.")}
        missing = sorted(own - set(state))
        if missing:
            raise KeyError(f"NAPAVQ state lacks {missing}")
        extra = sorted(k for k in set(state) - own if not k.startswith("previous."))
        if extra:
            raise KeyError(f"NAPAVQ state has unknown keys {extra}")
        if int(state["rotations"]) != self.rotations:
            raise ValueError(f"NAPAVQ state was saved with rotations={int(state['rotations'])}, "
                             f"this config has use_rotations={self.config.use_rotations}")
        if state["codebook.vectors"].shape[1] != self.dim:
            raise ValueError(f"NAPAVQ state has dim {state['codebook.vectors'].shape[1]}, expected {self.dim}")
        dev = self.device
        self.codebook.vectors = torch.nn.Parameter(state["codebook.vectors"].to(dev).clone())
        self.codebook.edges = state["codebook.edges"].to(dev).clone()
        self.codebook.frozen = state["codebook.frozen"].to(dev, torch.bool).clone()
        self.prototypes.means = state["prototypes.means"].to(dev).clone()
        self.prototypes.known = state["prototypes.known"].to(dev, torch.bool).clone()
        self.classes_seen = state["classes_seen"].to(dev, torch.bool).clone()
        self.experiences_done = int(state["experiences_done"])
        self.generator.set_state(state["generator"].cpu())
        previous = {k[len("previous."):]: v for k, v in state.items() if k.startswith("previous.")}
        if previous and self.previous is None:
            raise ValueError("NAPAVQ state holds a previous-model snapshot but no `previous` was given")
        if self.previous is not None:
            self.previous.load_state_dict(previous)
        self.optimizer = self.scheduler = None
