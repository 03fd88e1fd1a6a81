"""The slow and fast learners on one detector, their heads and the prediction.

Plain PyTorch over the :class:`cldf.detector.Detector` interface (``multi_features``,
named adapters). The first experience trains the ``slow`` adapter with a transfer loss
against the pretrained features; :meth:`SlowFastLearners.start_fast_learner` then freezes it
for good and starts the ``fast`` adapter as its copy, trained on every later experience with
feature alignment and cross-classification when the prediction reads it. Prediction merges the
two analytic heads by entropy, uses one learner's head, or routes to per-experience fast experts
(``SlowFastConfig.prediction``); the heads are shrunk linear discriminants
(:class:`DiscriminantHead`, default) or SAFE's ridge (:class:`RidgeHead`).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from cldf.detector.snapshot import DetectorAdapterSnapshot
from cldf.methods.slow_fast.aggregation import merge_logits
from cldf.methods.slow_fast.ridge_head import RidgeHead
from cldf.methods.slow_fast.config import SlowFastConfig
from cldf.methods.slow_fast.cosine_head import CosineHead
from cldf.methods.slow_fast.discriminant_head import DiscriminantHead
from cldf.methods.slow_fast.drift import AffineDrift
from cldf.methods.slow_fast.experts import FastExperts
from cldf.methods.slow_fast.losses import cross_classification_loss, feature_alignment_loss, transfer_loss

SLOW, FAST = "slow", "fast"
PREVIOUS_FAST = "fast_previous"  # the fast adapter as it was at the start of the experience
PLACEHOLDER_ADAPTER = "default"
FAST_HEAD_PREDICTIONS = ("merged", "fast")  # the predictions that read the fast analytic head


def stage_statistics_input(statistics: list[Tensor]) -> Tensor:
    """The analytic heads' input from per-stage map statistics: each stage's vector scaled to
    unit RMS (so wide and narrow stages weigh alike, whatever their activation scale), concatenated."""
    return torch.cat([s * (s.shape[1] ** 0.5) / s.norm(dim=1, keepdim=True).clamp_min(1e-12) for s in statistics], 1)


class SlowFastLearners(nn.Module):
    """Detector + slow/fast adapters, cosine training heads and analytic prediction heads.

    ``forward`` in training mode returns the training logits of the learner being trained
    (slow on the first experience, fast afterwards); in eval mode it returns the configured
    prediction: the slow analytic head, the fast one, or their entropy merge (the slow analytic
    head alone while no fast learner exists, and the slow cosine head before any analytic fit).
    ``last_features`` holds the features of the learner being trained (training) or of the
    predicting learner in eval (the fast one for the merged prediction, once it exists); plug-ins
    that need the trained learner's features in eval read them from the detector's active adapter
    instead (see ``cldf.avalanche.build``). ``last_weights`` holds the per-sample
    ``(w_slow, w_fast)`` of the last prediction (one-hot unless merged).
    """

    def __init__(self, detector: Any, config: Optional[SlowFastConfig] = None) -> None:
        super().__init__()
        self.config = config or SlowFastConfig()
        self.detector = detector
        self._adopt_slow_adapter()
        detector.set_head_trainable(False)  # unused: the cosine and analytic heads replace it
        cfg, dim, classes = self.config, detector.num_features, detector.num_classes
        analytic_dim = dim if cfg.analytic_input == "pooled" else sum(detector.stage_statistics_dims())
        generator = torch.Generator().manual_seed(cfg.seed)
        device = detector.device
        self.slow_head = CosineHead(dim, classes, cfg.cosine_scale_init, generator).to(device)
        self.fast_head = CosineHead(dim, classes, cfg.cosine_scale_init, generator).to(device)
        self.fast_head.requires_grad_(False)
        self.slow_analytic = self._analytic_head(analytic_dim, classes, generator).to(device)
        # only the predictions that read it keep a fast analytic head (a d x d Gram, tens of MB)
        self.fast_analytic = (self._analytic_head(analytic_dim, classes, generator).to(device)
                              if cfg.prediction in FAST_HEAD_PREDICTIONS else None)
        self._register_load_state_dict_pre_hook(self._drop_unkept_fast_head)
        routed = cfg.prediction == "routed"
        self.experts = FastExperts(analytic_dim, classes, SLOW).to(device) if routed else None
        self._expert_head: Optional[DiscriminantHead] = None
        self.register_buffer("fast_started", torch.tensor(False, device=device))
        self.register_buffer("trained_classes", torch.zeros(classes, dtype=torch.bool, device=device))
        self.last_features: Optional[Tensor] = None
        self.last_weights: Optional[tuple[Tensor, Tensor]] = None
        self._teacher_features: Optional[Tensor] = None
        self._drift: Optional[AffineDrift] = None

    def _drop_unkept_fast_head(self, state: dict[str, Tensor], prefix: str, *args: Any) -> None:
        """Checkpoints written when every prediction kept a fast analytic head load into a model
        whose prediction does not read one: those tensors are dropped."""
        if self.fast_analytic is None:
            for key in [k for k in state if k.startswith(prefix + "fast_analytic.")]:
                del state[key]

    def _analytic_head(self, dim: int, classes: int, generator: torch.Generator) -> RidgeHead | DiscriminantHead:
        cfg = self.config
        if cfg.analytic_head == "discriminant":
            return DiscriminantHead(dim, cfg.shrinkage, classes)
        return RidgeHead(dim, cfg.projection_dim, cfg.ridge_lambdas, cfg.holdout_fraction, classes, generator)

    def _adopt_slow_adapter(self) -> None:
        """Make ``slow`` (a copy of the active adapter) the active one; drop the detector's initial ``default`` adapter."""
        det = self.detector
        if FAST in det.adapter_names:
            raise ValueError(
                f"the detector already has a {FAST!r} adapter; SlowFastLearners needs a detector without one"
            )
        if SLOW not in det.adapter_names:
            previous = det.active_adapter
            det.add_adapter(SLOW, copy_from=previous)
            det.set_adapter(SLOW)
            if previous == PLACEHOLDER_ADAPTER:
                det.delete_adapter(previous)
        det.set_adapter(SLOW)

    # ----------------------------------------------------------------- state
    @property
    def learner(self) -> str:
        """The learner being trained: ``slow`` until the fast learner starts, then ``fast``."""
        return FAST if bool(self.fast_started) else SLOW

    @property
    def fast_learner_predicts(self) -> bool:
        """Whether the fast learner reaches the prediction (every ``prediction`` but ``"slow"``).
        When it does not, nothing it could learn would change an output, so it is neither
        trained (:class:`~cldf.methods.slow_fast.strategy.SlowFastStrategy`) nor given statistics."""
        return self.config.prediction != "slow"

    @property
    def training_head(self) -> CosineHead:
        return self.fast_head if bool(self.fast_started) else self.slow_head

    @property
    def num_classes(self) -> int:
        return self.slow_head.num_classes

    def grow_classes(self, num_classes: int) -> None:
        """Give every head at least ``num_classes`` outputs (old rows and statistics kept)."""
        if num_classes <= self.num_classes:
            return
        generator = torch.Generator().manual_seed(self.config.seed + num_classes)
        self.slow_head.grow_classes(num_classes, generator)
        self.fast_head.grow_classes(num_classes, generator)
        self.slow_analytic.grow_classes(num_classes)
        if self.fast_analytic is not None:
            self.fast_analytic.grow_classes(num_classes)
        if self.experts is not None:
            self.experts.grow_classes(num_classes)
        grown = torch.zeros(num_classes, dtype=torch.bool, device=self.trained_classes.device)
        grown[: self.trained_classes.numel()] = self.trained_classes
        self.trained_classes = grown

    def mark_trained(self, classes: Tensor) -> None:
        """Record classes as learned; they become the 'old classes' of cross-classification."""
        self.trained_classes[classes.long().to(self.trained_classes.device)] = True

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The adapter being trained and its cosine head: what the optimiser should see."""
        adapter = [p for p in self.detector.backbone.parameters() if p.requires_grad]
        return adapter + list(self.training_head.parameters())

    def start_fast_learner(self) -> None:
        """Freeze the slow adapter and head for good; start ``fast`` as their copy."""
        if bool(self.fast_started):
            raise RuntimeError("the fast learner has already started")
        det = self.detector
        det.freeze_adapter(SLOW)
        self.slow_head.requires_grad_(False)
        det.add_adapter(FAST, copy_from=SLOW)
        det.set_adapter(FAST)
        self.fast_head.load_state_dict(self.slow_head.state_dict())
        self.fast_head.requires_grad_(True)
        self.fast_started.fill_(True)

    # ----------------------------------------------------------------- forward and losses
    def _teacher(self) -> Optional[str]:
        cfg = self.config
        if bool(self.fast_started):
            return SLOW if cfg.lambda_fa > 0 or cfg.lambda_cc > 0 else None
        return "pretrained" if cfg.lambda_diag > 0 or cfg.lambda_rdn > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return self._training_logits(x)
        return self._prediction_logits(x)

    def _training_logits(self, x: Tensor) -> Tensor:
        learner, teacher = self.learner, self._teacher()
        paths = [learner] if teacher is None else [learner, SLOW if teacher == SLOW else None]
        features = self.detector.multi_features(x, paths)
        self.last_features = features[learner]
        self._teacher_features = None if teacher is None else features[paths[1]]
        return self.training_head(self.last_features)

    def analytic_passes(self, x: Tensor, learners: list[str],
                        rows: Optional[Tensor] = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Pooled features and analytic-head inputs of ``learners`` (adapter names; one prefix
        pass, reused when the same batch comes again), of the batch's ``rows`` only if given."""
        if self.config.analytic_input == "pooled":
            features = self.detector.multi_features(x, learners, rows=rows)
            return features, features
        outputs = self.detector.multi_outputs(x, learners, rows=rows)
        return ({p: o.features for p, o in outputs.items()},
                {p: stage_statistics_input(o.stage_statistics) for p, o in outputs.items()})

    def _prediction_logits(self, x: Tensor) -> Tensor:
        if not bool(self.fast_started):
            features, inputs = self.analytic_passes(x, [SLOW])
            slow = features[SLOW]
            self.last_features = slow
            self.last_weights = (torch.ones(len(slow), device=slow.device), torch.zeros(len(slow), device=slow.device))
            return self.slow_analytic(inputs[SLOW]) if self.slow_analytic.is_fitted else self.slow_head(slow)
        mode = self.config.prediction
        if mode == "routed":
            return self._routed_logits(x)
        if mode != "merged":
            learner, head = (FAST, self.fast_analytic) if mode == "fast" else (SLOW, self.slow_analytic)
            features, inputs = self.analytic_passes(x, [learner])
            self.last_features = features[learner]
            w = torch.ones(len(self.last_features), device=self.last_features.device)
            self.last_weights = (1 - w, w) if learner == FAST else (w, 1 - w)
            return head(inputs[learner])
        features, inputs = self.analytic_passes(x, [SLOW, FAST])
        self.last_features = features[FAST]
        merged = merge_logits(self.slow_analytic(inputs[SLOW]), self.fast_analytic(inputs[FAST]), self.config.gamma)
        self.last_weights = (merged.w_slow, merged.w_fast)
        return merged.logits

    def _routed_logits(self, x: Tensor) -> Tensor:
        """The experts' two-level mixture (:mod:`~cldf.methods.slow_fast.experts`): the slow pass
        routes, then each expert's tail runs on the images routed to it."""
        features, inputs = self.analytic_passes(x, [SLOW])
        slow_logits = self.slow_analytic(inputs[SLOW])
        routing = self.experts.route(slow_logits)
        expert_logits = torch.empty_like(slow_logits)
        for index in routing.expert.unique().tolist():
            rows = (routing.expert == index).nonzero().flatten()
            adapter = self.experts.adapter_name(index)
            routed = inputs[SLOW][rows] if adapter == SLOW else self.analytic_passes(x, [adapter], rows)[1][adapter]
            expert_logits[rows] = self.experts.logits(index, routed)
        self.last_features = features[SLOW]
        w_fast = (routing.expert > 0).float()
        self.last_weights = (1 - w_fast, w_fast)
        return self.experts.mix(slow_logits, routing, expert_logits)

    def auxiliary_loss(self, targets: Tensor) -> Tensor:
        """The method's terms for the last training forward (added to its cross-entropy).

        Slow phase: transfer loss to the pretrained features. Fast phase:
        λ_fa feature alignment + λ_cc cross-classification with the slow learner.
        """
        if self.last_features is None:
            raise RuntimeError("auxiliary_loss needs a training forward pass first")
        cfg, student, teacher = self.config, self.last_features, self._teacher_features
        if teacher is None:
            return student.new_zeros(())
        if not bool(self.fast_started):
            return transfer_loss(
                student, teacher, lambda_diag=cfg.lambda_diag, lambda_rdn=cfg.lambda_rdn, form=cfg.transfer_form
            )
        old = self.trained_classes.nonzero().flatten()
        loss = cfg.lambda_fa * feature_alignment_loss(student, teacher)
        if cfg.lambda_cc > 0:
            loss = loss + cfg.lambda_cc * cross_classification_loss(
                self.fast_head, self.slow_head, student, teacher, targets, old
            )
        return loss

    # ----------------------------------------------------------------- analytic heads
    def begin_fast_experience(self) -> None:
        """At the start of an experience of the fast learner: with ``drift_compensation='affine'``,
        keep a frozen copy of the fast adapter (:data:`PREVIOUS_FAST`) until the analytic heads are
        fitted, so that the drift of its features over the experience can be measured."""
        if self.config.drift_compensation == "affine" and bool(self.fast_started) and self.fast_learner_predicts:
            DetectorAdapterSnapshot(self.detector, adapter=FAST, name=PREVIOUS_FAST).snapshot()

    def begin_analytic_experience(self, first_position: int = 0) -> None:
        """Start collecting one experience's statistics for both analytic heads (``first_position``:
        see :meth:`RidgeHead.begin_experience`)."""
        self.slow_analytic.begin_experience(first_position)
        if self.experts is not None:
            self._expert_head = DiscriminantHead(self.slow_analytic.gram.shape[0], self.config.shrinkage,
                                                 self.num_classes).to(self.detector.device)
            self._expert_head.begin_experience(first_position)
        elif self._fast_statistics():
            self.fast_analytic.begin_experience(first_position)
        tracking = PREVIOUS_FAST in self.detector.adapter_names
        self._drift = AffineDrift(self.slow_analytic.gram.shape[0], self.detector.device) if tracking else None

    @torch.no_grad()
    def accumulate_analytic(self, x: Tensor, targets: Tensor) -> Tensor:
        """Add a batch (eval transforms) to both analytic heads, in eval mode, one prefix pass
        (and, when drift is tracked, to the drift sums of the fast adapter's previous copy).
        Returns the pooled features of the learner trained on the experience (the fast adapter
        after the first experience, or the slow one, its untouched copy, when the fast learner
        does not predict)."""
        was_training = self.training
        self.train(False)
        expert = self._expert_adapter()
        paths = [SLOW, FAST] if self._fast_statistics() or expert == FAST else [SLOW]
        features, inputs = self.analytic_passes(x, paths + ([PREVIOUS_FAST] if self._drift is not None else []))
        self.train(was_training)
        targets = targets.to(inputs[SLOW].device)
        self.slow_analytic.accumulate(inputs[SLOW], targets)
        if self._expert_head is not None:
            self._expert_head.accumulate(inputs[expert], targets)
        elif self._fast_statistics():
            self.fast_analytic.accumulate(inputs[FAST], targets)
        if self._drift is not None:
            self._drift.accumulate(inputs[PREVIOUS_FAST], inputs[FAST])
        return features[FAST] if FAST in features else features[SLOW]

    def finish_analytic_experience(self, reduce: Optional[Callable[[Tensor], Tensor]] = None) -> dict[str, float]:
        """Solve both analytic heads (``reduce``: see :meth:`RidgeHead.finish_experience`);
        returns each learner's regularisation (the ridge's chosen λ, or the discriminant's shrinkage).
        With tracked drift, the fast head's earlier statistics are first mapped into the current
        fast features and the adapter's previous copy is dropped."""
        chosen = {SLOW: self.slow_analytic.finish_experience(reduce)}
        if self._drift is not None:
            self.fast_analytic.shift_statistics(*self._drift.fit(reduce))
            self._drift = None
            self.detector.delete_adapter(PREVIOUS_FAST)
        if self._expert_head is not None:
            chosen[FAST] = self._expert_head.finish_experience(reduce)
            self._keep_expert()
        elif self._fast_statistics():
            chosen[FAST] = self.fast_analytic.finish_experience(reduce)
        return chosen

    def _fast_statistics(self) -> bool:
        """Whether the fast analytic head collects this experience's statistics."""
        return bool(self.fast_started) and self.fast_analytic is not None

    def _expert_adapter(self) -> Optional[str]:
        """The adapter this experience's expert reads (routed prediction only): the slow one on
        the first experience, the fast one afterwards."""
        if self.experts is None:
            return None
        return SLOW if len(self.experts) == 0 else FAST

    def _keep_expert(self) -> None:
        """Keep the experience's solved discriminant and a frozen copy of the adapter it reads."""
        head, self._expert_head = self._expert_head, None
        adapter = self.experts.add(head.weight, head.bias, head.center)
        if adapter != SLOW:
            DetectorAdapterSnapshot(self.detector, adapter=FAST, name=adapter).snapshot()
