"""Code vectors, the distance classifier and the learned neighbourhood graph (algorithms.md 2.1-2.2)."""

from __future__ import annotations

from typing import Callable, Optional

import faiss
import numpy as np
import torch
from torch import Tensor, nn


def squared_distances(z: Tensor, vectors: Tensor) -> Tensor:
    """``||z_i - c_j||^2`` for every pair (B x C), differentiable in both arguments."""
    cross = z @ vectors.T
    sq = z.pow(2).sum(1, keepdim=True) - 2 * cross + vectors.pow(2).sum(1)
    return sq.clamp_min(0)


def distances(z: Tensor, vectors: Tensor) -> Tensor:
    """``||z_i - c_j||`` (B x C); the small floor keeps the gradient finite at distance 0."""
    return squared_distances(z, vectors).clamp_min(1e-12).sqrt()


def distance_logits(z: Tensor, vectors: Tensor, T: float) -> Tensor:
    """Logits of the distance classifier, ``-||z - c_j|| / T``."""
    return -distances(z, vectors) / T


def nearest_code_vectors(z: Tensor, vectors: Tensor, k: int, use_faiss: bool) -> Tensor:
    """Indices of the ``k`` nearest code vectors of each row of ``z``, nearest first (B x k).

    ``use_faiss`` runs an exact faiss flat L2 search; otherwise torch's top-k on the distances.
    Both give the same neighbours (up to ties).
    """
    k = min(k, vectors.shape[0])
    if use_faiss:
        index = faiss.IndexFlatL2(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors.detach().float().cpu().numpy()))
        _, idx = index.search(np.ascontiguousarray(z.detach().float().cpu().numpy()), k)
        return torch.from_numpy(idx).to(device=z.device, dtype=torch.long)
    sq = squared_distances(z.detach(), vectors.detach())
    return sq.topk(k, dim=1, largest=False, sorted=True).indices


def edge_counts(topk: Tensor, num: int) -> tuple[Tensor, Tensor]:
    """Per-batch counts of the edge rule: ``won[a]`` = v_a, the samples whose nearest code vector
    (first column of ``topk``, B x k) is a, and ``hits[a, j]`` = r_aj, those of them with j in
    their top-k. Both are sums over samples, so several processes' counts add up (all-reduce)."""
    member = torch.zeros(topk.shape[0], num, device=topk.device)
    member.scatter_(1, topk, 1.0)
    hits = torch.zeros(num, num, device=topk.device)
    hits.index_add_(0, topk[:, 0], member)
    won = torch.bincount(topk[:, 0], minlength=num).to(hits)
    return won, hits


def apply_edge_counts(edges: Tensor, won: Tensor, hits: Tensor, epsilon: float, max_age: int) -> Tensor:
    """One batch of competitive Hebbian learning on the edge matrix, before symmetrisation.

    With v_a = ``won[a]`` and r_aj = ``hits[a, j]`` (see :func:`edge_counts`): an edge of a winner
    row with r_aj > 0 is refreshed to 1; every other edge of a winner row is aged by
    ``epsilon ** (v_a - r_aj)`` (one factor per sample of a that missed it); rows of
    non-winners are unchanged; edges below ``epsilon ** max_age`` are removed.
    A refreshed edge stays 1 (ageing applies to the edges that were not refreshed), which is
    what the rule "refresh, then age by the missing samples" gives for an edge every sample hit.
    """
    rows = (won > 0).nonzero().squeeze(1)
    won, hits = won[rows].to(edges.dtype), hits[rows].to(edges.dtype)
    missing = (won[:, None] - hits).clamp_min(0)
    aged = edges[rows] * torch.pow(torch.full_like(missing, epsilon), missing)
    updated = torch.where(hits > 0, torch.ones_like(aged), aged)
    out = edges.clone()
    out[rows] = updated
    return out.masked_fill(out < epsilon**max_age, 0.0)


def refresh_age_prune(edges: Tensor, topk: Tensor, epsilon: float, max_age: int,
                      reduce: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
    """:func:`apply_edge_counts` with the counts of ``topk`` (B x k, each sample's nearest code
    vectors, nearest first); ``reduce`` first maps the counts to their totals over processes."""
    won, hits = edge_counts(topk, edges.shape[0])
    if reduce is not None:
        won, hits = reduce(won), reduce(hits)
    return apply_edge_counts(edges, won, hits, epsilon, max_age)


def symmetrise(edges: Tensor) -> Tensor:
    """``(E + E^T) / 2``."""
    return (edges + edges.T) / 2


class CodeBook(nn.Module):
    """One learnable code vector per class, plus the edge-strength matrix between them.

    Rows are indexed by class id. Frozen rows (old classes) keep their values: their gradients
    are zeroed by :meth:`zero_frozen_grads` before the code-vector optimiser steps.
    """

    def __init__(self, dim: int, k: int = 15, epsilon: float = 0.9, max_age: int = 10,
                 faiss_threshold: int = 2048, init_scale: float = 1.0) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"CodeBook dim={dim!r} must be >= 1")
        self.k, self.epsilon, self.max_age = k, epsilon, max_age
        self.faiss_threshold = faiss_threshold
        self.init_scale = init_scale
        self.vectors = nn.Parameter(torch.empty(0, dim))
        self.register_buffer("edges", torch.zeros(0, 0))
        self.register_buffer("frozen", torch.zeros(0, dtype=torch.bool))

    @property
    def num_vectors(self) -> int:
        return self.vectors.shape[0]

    def grow(self, n: int, generator: torch.Generator | None = None) -> bool:
        """Make at least ``n`` code vectors; new ones are N(0, init_scale^2) with an identity edge row.

        Returns True when the parameter was replaced (an optimiser over it must be rebuilt).
        """
        old = self.num_vectors
        if n <= old:
            return False
        new = torch.randn(n - old, self.vectors.shape[1], generator=generator) * self.init_scale
        data = torch.cat([self.vectors.data, new.to(self.vectors)])
        self.vectors = nn.Parameter(data)
        edges = torch.eye(n, dtype=self.edges.dtype, device=self.edges.device)
        edges[:old, :old] = self.edges
        self.edges = edges
        self.frozen = torch.cat([self.frozen, self.frozen.new_zeros(n - old)])
        return True

    def freeze(self, indices: Tensor | list[int]) -> None:
        """Mark these code vectors as old: they no longer move."""
        self.frozen[torch.as_tensor(indices, dtype=torch.long, device=self.frozen.device)] = True

    def zero_frozen_grads(self) -> None:
        if self.vectors.grad is not None:
            self.vectors.grad[self.frozen] = 0

    def logits(self, z: Tensor, T: float) -> Tensor:
        return distance_logits(z, self.vectors, T)

    def cosine_logits(self, z: Tensor, T: float) -> Tensor:
        """Cosine similarity to each code vector divided by T (nearest-CV prediction)."""
        zn = nn.functional.normalize(z, dim=1)
        cn = nn.functional.normalize(self.vectors, dim=1)
        return zn @ cn.T / T

    def neighbour_mask(self) -> Tensor:
        """``M[y, j]`` is True where j is a neighbour of y (positive edge, j != y)."""
        eye = torch.eye(self.num_vectors, dtype=torch.bool, device=self.edges.device)
        return (self.edges > 0) & ~eye

    @torch.no_grad()
    def update_graph(self, z: Tensor, reduce: Optional[Callable[[Tensor], Tensor]] = None) -> None:
        """Refresh, age, prune and symmetrise the edges with one batch of features (``reduce``:
        sums the batch's edge counts over processes, so every process applies the same update)."""
        if self.num_vectors == 0:
            raise RuntimeError("CodeBook.update_graph: grow() the codebook before updating it")
        use_faiss = self.num_vectors > self.faiss_threshold
        topk = nearest_code_vectors(z, self.vectors, self.k, use_faiss)
        self.edges = symmetrise(refresh_age_prune(self.edges, topk, self.epsilon, self.max_age, reduce))
