"""NAPA-VQ loss terms (algorithms.md 2.3-2.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cldf.methods.napa_vq.codebook import distance_logits, squared_distances


def separation_loss(z: Tensor, y: Tensor, vectors: Tensor, neighbours: Tensor,
                    scale: float = 0.001) -> Tensor:
    """Neighbourhood-aware separation loss L_NA.

    ``d_pos = ||z - c_y||^2``; ``d_j = ||z - c_j||^2`` for the neighbours j of y
    (``neighbours[y, j]`` True); ``w = softmax_j(-scale d_j)`` without gradient;
    loss = mean_i ReLU(d_pos - sum_j w_j d_j). Samples whose class has no neighbour add 0.
    """
    if z.shape[0] == 0:
        return z.sum() * 0
    sq = squared_distances(z, vectors)
    d_pos = sq.gather(1, y[:, None]).squeeze(1)
    mask = neighbours[y]
    has_neighbour = mask.any(1)
    scores = (-scale * sq.detach()).masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=1).nan_to_num(0.0)  # all -inf rows -> 0
    d_neg = (weights * sq.masked_fill(~mask, 0.0)).sum(1)
    per_sample = F.relu(d_pos - d_neg) * has_neighbour
    return per_sample.mean()


def distance_cross_entropy(z: Tensor, y: Tensor, vectors: Tensor, T: float) -> Tensor:
    """CE of the distance classifier (L_DCE on real features, L_PA on pseudo-features)."""
    return F.cross_entropy(distance_logits(z, vectors, T), y)


def feature_distillation(z_new: Tensor, z_old: Tensor) -> Tensor:
    """L_KD averaged per sample: ``mean_i ||z_new_i - z_old_i||_2`` (z_old carries no gradient)."""
    if z_new.shape != z_old.shape:
        raise ValueError(
            f"feature_distillation: z_new {tuple(z_new.shape)} and z_old {tuple(z_old.shape)} differ"
        )
    return torch.linalg.vector_norm(z_new - z_old.detach(), dim=1).mean()
