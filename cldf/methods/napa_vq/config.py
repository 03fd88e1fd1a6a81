"""Settings of NAPA-VQ (algorithms.md section 2)."""

from __future__ import annotations

from dataclasses import dataclass

PREDICTION_MODES = ("head", "nearest_cv")


@dataclass
class NAPAVQConfig:
    """NAPA-VQ settings; defaults follow the original release where it is clear.

    Attributes:
        T: temperature of the distance classifier, logit_j = -||z - c_j|| / T.
        k: neighbourhood size of the graph update (capped at the number of code vectors).
        epsilon: ageing factor of an edge per sample that misses it.
        max_age: edges below ``epsilon ** max_age`` are removed.
        n_pseudo: pseudo-features drawn per training step after the first experience.
        pseudo_weight_min: lower end of gamma in ``gamma P_c + (1 - gamma) P_n`` (upper end is 1).
        na_scale: scale s of the neighbour weights softmax(-s d_j) in the separation loss.
        cv_lr_first: code-vector SGD learning rate in the first experience.
        cv_lr_later: code-vector SGD learning rate in later experiences. (cldf) 0.1 / 0.01 on
            the unit sphere (``normalize``); the original's 5 / 0.5 suit raw features and make
            normalised code vectors jump by ~50 per step, which wrecks training.
        cv_lr_step_epochs: the code-vector learning rate is multiplied by ``cv_lr_gamma``
            every this many epochs.
        cv_lr_gamma: step decay factor of the code-vector learning rate.
        w_dce: weight of the distance-classifier cross-entropy on the batch.
        w_na: weight of the separation loss (on the batch and on the pseudo-features).
        w_pa: weight of the prototype-augmentation cross-entropy.
        w_kd: weight of the feature distillation; cldf averages it per sample, so the
            original's 10 needs re-tuning.
        kd_fraction: (cldf) share of each batch that is distilled (its first
            ``ceil(kd_fraction * B)`` samples; batches are shuffled, so an unbiased estimate of
            the per-sample average). 1.0 stays the default (why: ``benchmarks/results/recipe_choices.md``).
        kd_cache_mb: (cldf) memory for previous-model features cached during an experience
            (:class:`~cldf.methods.napa_vq.previous.CachedPreviousFeatures`): the previous model is
            frozen, so an input seen again (a later epoch, no random augmentation) is not passed
            through it again. The same loss, exactly; 0 turns the cache off. Not used while the
            detector's frozen-pass memo (``training.frozen_pass_memo_mb``) keeps those outputs.
        faiss_threshold: above this many code vectors the top-k search uses faiss.
        use_rotations: feed each image also at 90/180/270 degrees with labels 4y + r.
        prediction: "head" keeps the model's logits; "nearest_cv" predicts with the
            cosine similarity to the code vectors (divided by T).
        seed: seed of the pseudo-feature sampler and of new code vectors.
        normalize: (cldf) run every NAPA-VQ term on L2-normalised features (unit sphere, new
            code vectors drawn at scale 1/sqrt(d)). The original's raw squared distances
            between high-dimensional backbone features (|z| ~ 30 for 1280-d EfficientNet
            features) make the separation loss explode within a few steps.
    """

    T: float = 0.1
    k: int = 15
    epsilon: float = 0.9
    max_age: int = 10
    n_pseudo: int = 64
    pseudo_weight_min: float = 0.5
    na_scale: float = 0.001
    cv_lr_first: float = 0.1
    cv_lr_later: float = 0.01
    cv_lr_step_epochs: int = 20
    cv_lr_gamma: float = 0.1
    w_dce: float = 1.0
    w_na: float = 1.0
    w_pa: float = 10.0
    w_kd: float = 10.0
    kd_fraction: float = 1.0
    kd_cache_mb: float = 256.0
    faiss_threshold: int = 2048
    use_rotations: bool = False
    prediction: str = "head"
    seed: int = 0
    normalize: bool = True

    def __post_init__(self) -> None:
        errors = []
        for name in ("T", "epsilon", "cv_lr_first", "cv_lr_later", "cv_lr_gamma"):
            if not float(getattr(self, name)) > 0:
                errors.append(f"{name}={getattr(self, name)!r} must be > 0")
        if not self.epsilon < 1:
            errors.append(f"epsilon={self.epsilon!r} must be < 1 (edges must age)")
        for name in ("k", "max_age", "cv_lr_step_epochs"):
            if int(getattr(self, name)) < 1 or int(getattr(self, name)) != getattr(self, name):
                errors.append(f"{name}={getattr(self, name)!r} must be an integer >= 1")
        for name in ("n_pseudo", "faiss_threshold"):
            if int(getattr(self, name)) < 0 or int(getattr(self, name)) != getattr(self, name):
                errors.append(f"{name}={getattr(self, name)!r} must be an integer >= 0")
        if not 0 <= self.pseudo_weight_min <= 1:
            errors.append(f"pseudo_weight_min={self.pseudo_weight_min!r} must lie in [0, 1]")
        for name in ("na_scale", "w_dce", "w_na", "w_pa", "w_kd", "kd_cache_mb"):
            if not float(getattr(self, name)) >= 0:
                errors.append(f"{name}={getattr(self, name)!r} must be >= 0")
        if not 0 < float(self.kd_fraction) <= 1:
            errors.append(f"kd_fraction={self.kd_fraction!r} must lie in (0, 1]")
        if self.prediction not in PREDICTION_MODES:
            errors.append(f"prediction={self.prediction!r} must be one of {PREDICTION_MODES}")
        if not isinstance(self.use_rotations, bool):
            errors.append(f"use_rotations={self.use_rotations!r} must be true or false")
        if errors:
            raise ValueError("invalid NAPAVQConfig: " + "; ".join(errors))
