"""Loss terms of the slow/fast learners: transfer, feature alignment, cross-classification."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_STD_EPS = 1e-5


def _standardise(features: Tensor) -> Tensor:
    """Zero mean, unit variance per feature dimension over the batch."""
    centred = features - features.mean(dim=0, keepdim=True)
    return centred / (centred.pow(2).mean(dim=0, keepdim=True) + _STD_EPS).sqrt()


def transfer_loss(
    slow_features: Tensor,
    pretrained_features: Tensor,
    *,
    lambda_diag: float,
    lambda_rdn: float,
    form: str = "standardised",
) -> Tensor:
    """Cross-correlation loss tying the slow learner's features to the pretrained ones.

    M = (1/B) A_sᵀ A_p (d x d). ``"standardised"``: A = features standardised per dimension
    over the batch, loss = λ_diag mean_i (1 - M_ii)² + λ_rdn mean_{i≠j} M_ij².
    ``"original"``: A = per-sample L2-normalised features and the two terms are summed.
    The pretrained features are treated as constants (no gradient reaches them).
    """
    if slow_features.shape != pretrained_features.shape or slow_features.dim() != 2:
        raise ValueError(
            f"transfer_loss needs two B x d feature batches of equal shape, got "
            f"{tuple(slow_features.shape)} and {tuple(pretrained_features.shape)}"
        )
    pretrained_features = pretrained_features.detach()
    if form == "standardised":
        a_s, a_p = _standardise(slow_features), _standardise(pretrained_features)
    elif form == "original":
        a_s, a_p = F.normalize(slow_features, dim=1), F.normalize(pretrained_features, dim=1)
    else:
        raise ValueError(f"transfer_loss form={form!r}; valid: 'standardised', 'original'")
    batch, dim = slow_features.shape
    corr = a_s.T @ a_p / batch
    diag = torch.diagonal(corr)
    diag_term = (1.0 - diag).pow(2)
    off_sum = corr.pow(2).sum() - diag.pow(2).sum()
    if form == "standardised":
        diag_loss = diag_term.mean()
        off_loss = off_sum / max(dim * (dim - 1), 1)
    else:
        diag_loss = diag_term.sum()
        off_loss = off_sum
    return lambda_diag * diag_loss + lambda_rdn * off_loss


def feature_alignment_loss(fast_features: Tensor, slow_features: Tensor) -> Tensor:
    """mean_b (1 - cos(f_F, f_S)); the slow features are constants."""
    return (1.0 - F.cosine_similarity(fast_features, slow_features.detach(), dim=1)).mean()


def cross_classification_loss(
    fast_head: nn.Module,
    slow_head: nn.Module,
    fast_features: Tensor,
    slow_features: Tensor,
    targets: Tensor,
    old_classes: Tensor,
) -> Tensor:
    """Each learner's head classifies the other's old class rows and current features.

    CE(h_F([W_S[old]; f_S]), [old; y]) + CE(h_S([W_F[old]; f_F]), [old; y]). Class rows act
    as pseudo-features of the old classes; the slow side (W_S, f_S) is treated as constant.
    """
    labels = torch.cat([old_classes, targets])
    slow_inputs = torch.cat([slow_head.weight[old_classes], slow_features]).detach()
    fast_inputs = torch.cat([fast_head.weight[old_classes], fast_features])
    return F.cross_entropy(fast_head(slow_inputs), labels) + F.cross_entropy(slow_head(fast_inputs), labels)
