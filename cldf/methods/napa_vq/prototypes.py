"""Class prototypes (mean features) and neighbourhood-aware pseudo-features (algorithms.md 2.4).

Only per-class sums and counts are accumulated, never per-image features, so several workers'
accumulators can be all-reduced (summed) before :meth:`PrototypeStore.commit`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


class FeatureSums:
    """Running per-class feature sums (float64) and sample counts."""

    def __init__(self, num_classes: int, dim: int, device: torch.device | str = "cpu") -> None:
        self.sums = torch.zeros(num_classes, dim, dtype=torch.float64, device=device)
        self.counts = torch.zeros(num_classes, dtype=torch.long, device=device)

    @torch.no_grad()
    def add(self, features: Tensor, labels: Tensor) -> None:
        if features.shape[0] != labels.shape[0]:
            raise ValueError(
                f"FeatureSums.add: {features.shape[0]} features but {labels.shape[0]} labels"
            )
        if labels.numel() and int(labels.max()) >= self.counts.shape[0]:
            raise ValueError(
                f"FeatureSums.add: label {int(labels.max())} >= num_classes {self.counts.shape[0]}"
            )
        self.sums.index_add_(0, labels, features.detach().to(self.sums))
        self.counts += torch.bincount(labels, minlength=self.counts.shape[0]).to(self.counts)

    def reduce(self, reduce: Callable[[Tensor], Tensor]) -> None:
        """Replace sums and counts by ``reduce`` of them (e.g. their totals over processes)."""
        self.sums, self.counts = reduce(self.sums), reduce(self.counts)


class PrototypeStore(nn.Module):
    """Prototype P_c per class (row c of ``means``) and which classes have one (``known``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("means", torch.zeros(0, dim))
        self.register_buffer("known", torch.zeros(0, dtype=torch.bool))

    def grow(self, n: int) -> None:
        old = self.means.shape[0]
        if n > old:
            self.means = torch.cat([self.means, self.means.new_zeros(n - old, self.means.shape[1])])
            self.known = torch.cat([self.known, self.known.new_zeros(n - old)])

    def commit(self, acc: FeatureSums, classes: list[int]) -> None:
        """Store the mean feature of each class in ``classes``; a stored prototype never changes."""
        self.grow(acc.counts.shape[0])
        for c in classes:
            if self.known[c]:
                raise ValueError(f"PrototypeStore.commit: class {c} already has a prototype")
            if acc.counts[c] == 0:
                raise ValueError(f"PrototypeStore.commit: no features were accumulated for class {c}")
        idx = torch.as_tensor(classes, dtype=torch.long, device=self.means.device)
        means = acc.sums[idx] / acc.counts[idx, None].to(acc.sums)
        self.means[idx] = means.to(self.means)
        self.known[idx] = True


def sample_pseudo_features(means: Tensor, known: Tensor, edges: Tensor, n: int,
                           generator: torch.Generator | None = None,
                           weight_min: float = 0.5) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Draw ``n`` pseudo-features ``gamma P_c + (1 - gamma) P_m`` labelled c.

    c ~ U(classes with a prototype); m ~ U({j : E_cj > 0 and j has a prototype}), which
    includes c itself; gamma ~ U(weight_min, 1).
    Returns (features, labels c, partners m, gamma). ``generator`` must be a CPU generator.
    """
    classes = known.nonzero().squeeze(1).cpu()
    if classes.numel() == 0:
        raise ValueError("sample_pseudo_features: no class has a prototype yet")
    # random draws on the CPU (the generator's device), results moved to the features' device
    c = classes[torch.randint(classes.numel(), (n,), generator=generator)]
    allowed = (edges[c.to(edges.device)] > 0).cpu() & known.cpu()[None, :]
    allowed[torch.arange(n), c] = True
    m = torch.multinomial(allowed.float(), 1, generator=generator).squeeze(1)
    gamma = weight_min + (1 - weight_min) * torch.rand(n, generator=generator)
    c, m, gamma = c.to(means.device), m.to(means.device), gamma.to(means)
    feats = gamma[:, None] * means[c] + (1 - gamma[:, None]) * means[m]
    return feats, c, m, gamma
