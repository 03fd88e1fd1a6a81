"""Settings of the slow/fast learners (SAFE, algorithms.md section 1)."""

from __future__ import annotations

from dataclasses import dataclass

TRANSFER_FORMS = ("standardised", "original")
PREDICTIONS = ("merged", "fast", "slow", "routed")
ANALYTIC_INPUTS = ("pooled", "stage_statistics")
ANALYTIC_HEADS = ("discriminant", "ridge")
DRIFT_COMPENSATIONS = ("none", "affine")


@dataclass
class SlowFastConfig:
    """Loss weights, head sizes and aggregation of the slow/fast learners.

    ``transfer_form``: ``"standardised"`` (cldf: batch-standardised features, averaged terms)
    or ``"original"`` (SAFE release: per-sample L2-normalised features, summed terms).
    ``analytic_head``: the prediction heads fitted from running feature statistics:
    ``"discriminant"`` (cldf, the default: linear discriminant analysis with the pooled
    correlation matrix shrunk by ``shrinkage`` towards the identity, :class:`DiscriminantHead`;
    chosen on held-out-photo validation: ``benchmarks/results/tuning_heldout_validation.md``) or
    ``"ridge"`` (SAFE's RanPAC-style ridge over ReLU random features, :class:`RidgeHead`).
    ``prediction``: ``"slow"`` (the default: the slow learner's head alone, chosen on held-out-photo
    validation, where it beat the merge: the fast head's statistics of old experiences were summed
    with earlier fast features; no fast learner is then trained), ``"merged"`` (SAFE's entropy-weighted merge of both heads),
    ``"fast"``, or ``"routed"`` (cldf: each experience's fast adapter kept as a frozen expert with
    a discriminant of that experience's exact statistics, the slow head routing each image to one
    expert: :mod:`~cldf.methods.slow_fast.experts`; discriminant heads only).
    ``drift_compensation``: ``"affine"`` carries the fast head's statistics of earlier
    experiences into the fast adapter's current feature space at the end of each experience
    (a per-dimension affine map fitted on the experience's images through the adapter before and
    after training, :class:`~cldf.methods.slow_fast.drift.AffineDrift`; discriminant heads only);
    ``"none"`` keeps them as they were summed (SAFE).
    For the ridge, ``ridge_lambdas`` are the candidates for the penalty, chosen on the
    ``holdout_fraction`` of each experience; ``projection_dim`` is M of the random projection.
    ``analytic_input``: what the analytic heads see: ``"pooled"`` (the pooled pre-logit features,
    as in SAFE) or ``"stage_statistics"`` (cldf, the default: per-channel mean and std of the
    tail's input map and of each tuned stage's output, each stage's vector scaled to unit RMS,
    concatenated; chosen on held-out-photo validation: ``benchmarks/results/tuning_heldout_validation.md``).
    """

    lambda_diag: float = 1.0
    lambda_rdn: float = 1.0
    transfer_form: str = "standardised"
    lambda_fa: float = 50.0
    lambda_cc: float = 1.0
    gamma: float = 1.0
    prediction: str = "slow"
    analytic_input: str = "stage_statistics"
    analytic_head: str = "discriminant"
    shrinkage: float = 0.3
    drift_compensation: str = "none"
    cosine_scale_init: float = 10.0
    projection_dim: int = 2048
    ridge_lambdas: tuple[float, ...] = (1e3, 1e4, 1e5, 1e6, 1e7, 1e8)
    holdout_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        self.ridge_lambdas = tuple(float(v) for v in self.ridge_lambdas)
        for name in ("lambda_diag", "lambda_rdn", "lambda_fa", "lambda_cc", "gamma"):
            value = getattr(self, name)
            if not value >= 0.0:
                raise ValueError(f"SlowFastConfig.{name}={value!r} must be a number >= 0")
        for name, choices in (("transfer_form", TRANSFER_FORMS), ("prediction", PREDICTIONS),
                              ("analytic_input", ANALYTIC_INPUTS), ("analytic_head", ANALYTIC_HEADS),
                              ("drift_compensation", DRIFT_COMPENSATIONS)):
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"SlowFastConfig.{name}={value!r}; valid: {', '.join(choices)}")
        if self.drift_compensation == "affine" and self.analytic_head != "discriminant":
            raise ValueError(
                "SlowFastConfig.drift_compensation='affine' needs analytic_head='discriminant' (the ridge "
                "head's statistics live in its random-feature space and cannot be mapped); set "
                "drift_compensation='none' for the ridge"
            )
        if self.prediction == "routed" and (self.analytic_head != "discriminant" or self.drift_compensation != "none"):
            raise ValueError(
                "SlowFastConfig.prediction='routed' needs analytic_head='discriminant' (each expert keeps a "
                "solved linear discriminant) and drift_compensation='none' (experts never drift); got "
                f"analytic_head={self.analytic_head!r}, drift_compensation={self.drift_compensation!r}"
            )
        if not 0.0 < self.shrinkage <= 1.0:
            raise ValueError(f"SlowFastConfig.shrinkage={self.shrinkage!r} must be in (0, 1]")
        if not self.cosine_scale_init > 0.0:
            raise ValueError(f"SlowFastConfig.cosine_scale_init={self.cosine_scale_init!r} must be > 0")
        if not isinstance(self.projection_dim, int) or self.projection_dim < 1:
            raise ValueError(f"SlowFastConfig.projection_dim={self.projection_dim!r} must be a positive integer")
        if not self.ridge_lambdas or any(not v > 0.0 for v in self.ridge_lambdas):
            raise ValueError(
                f"SlowFastConfig.ridge_lambdas={self.ridge_lambdas!r} must be a non-empty list of numbers > 0"
            )
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"SlowFastConfig.holdout_fraction={self.holdout_fraction!r} must be in (0, 1)")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"SlowFastConfig.seed={self.seed!r} must be a non-negative integer")
