"""Per-experience fast experts, routed by the slow learner (``SlowFastConfig.prediction='routed'``).

At the end of each experience the fast adapter, as trained on it (after EMA and NAPA-VQ have
shaped it), is kept as a frozen *expert* with a discriminant solved from that experience's
statistics alone, in that expert's own feature space: exact, never summed across feature
spaces that later drifted (the fault of SAFE's fast head). The first experience's expert is the
slow adapter itself.

Prediction is a two-level mixture. The slow learner's head, fitted on every experience, gives
class posteriors p_S(c | x); the mass each expert's classes C_e receive, m_e = Σ_{c∈C_e} p_S(c | x),
routes the image to one expert e* = argmax_e m_e. Within C_e* the expert's evidence is pooled
with the slow head's (log-linear pooling: the sum of their logits), keeping the routed mass:
p(c | x) = m_e* · softmax_{C_e*}(z_e*(c) + z_S(c)) for c ∈ C_e*, p_S(c | x) elsewhere (the
probabilities still sum to 1). Where the slow features cannot tell the expert's classes apart,
its logits there are near equal and the expert decides; where both can, both count. One
expert tail per image (images are grouped by expert, sharing the prefix pass), so inference
costs one slow tail plus one expert tail whatever the number of experts.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cldf.methods.slow_fast.discriminant_head import NO_DATA_LOGIT, discriminant_logits
from cldf.methods.slow_fast.growth import match_saved_shapes

EXPERT_PREFIX = "expert"


class Routing(NamedTuple):
    """Each image's expert index and the probability mass the slow head gave that expert's classes."""

    expert: Tensor
    mass: Tensor


class FastExperts(nn.Module):
    """The solved discriminants of the per-experience experts and the adapter each one reads.

    Buffers (one row per expert): ``weight`` E x K x d, ``bias`` E x K (:data:`NO_DATA_LOGIT`
    outside the expert's classes), ``center`` E x d. ``adapters`` names each expert's adapter on
    the detector; it is rebuilt from the expert count when loading (expert 0 reads the slow
    adapter, expert e >= 1 the adapter ``expert<e>``).
    """

    def __init__(self, in_features: int, num_classes: int, first_adapter: str) -> None:
        super().__init__()
        self.first_adapter = first_adapter
        self.register_buffer("weight", torch.zeros(0, num_classes, in_features))
        self.register_buffer("bias", torch.zeros(0, num_classes))
        self.register_buffer("center", torch.zeros(0, in_features))

    def __len__(self) -> int:
        return self.weight.shape[0]

    @property
    def adapters(self) -> list[str]:
        return [self.adapter_name(e) for e in range(len(self))]

    def adapter_name(self, index: int) -> str:
        """The adapter expert ``index`` reads: the slow adapter for the first experience."""
        return self.first_adapter if index == 0 else f"{EXPERT_PREFIX}{index}"

    @property
    def class_masks(self) -> Tensor:
        """E x K, True where the expert has a class (it was in the expert's experience)."""
        return self.bias > NO_DATA_LOGIT / 2

    def grow_classes(self, num_classes: int) -> None:
        extra = num_classes - self.weight.shape[1]
        if extra > 0:
            self.weight = F.pad(self.weight, (0, 0, 0, extra))
            self.bias = F.pad(self.bias, (0, extra), value=NO_DATA_LOGIT)

    def add(self, weight: Tensor, bias: Tensor, center: Tensor) -> str:
        """Keep a solved discriminant (K x d, K, d) as the next expert; returns the adapter name
        the caller must provide for it."""
        if weight.shape != self.weight.shape[1:] or bias.shape != self.bias.shape[1:]:
            raise ValueError(f"FastExperts.add: expected weight {tuple(self.weight.shape[1:])} and bias "
                             f"{tuple(self.bias.shape[1:])}, got {tuple(weight.shape)} and {tuple(bias.shape)}")
        self.weight = torch.cat([self.weight, weight[None].to(self.weight)])
        self.bias = torch.cat([self.bias, bias[None].to(self.bias)])
        self.center = torch.cat([self.center, center[None].to(self.center)])
        return self.adapter_name(len(self) - 1)

    def route(self, slow_logits: Tensor) -> Routing:
        """Each image's expert: the one whose classes hold the most slow-head probability."""
        masses = slow_logits.softmax(1) @ self.class_masks.to(slow_logits.dtype).T
        mass, expert = masses.max(1)
        return Routing(expert, mass)

    def logits(self, index: int, inputs: Tensor) -> Tensor:
        """Expert ``index``'s discriminant logits (K; :data:`NO_DATA_LOGIT` outside its classes)."""
        return discriminant_logits(inputs, self.weight[index], self.bias[index], self.center[index])

    def mix(self, slow_logits: Tensor, routing: Routing, expert_logits: Tensor) -> Tensor:
        """Log-probabilities of the two-level mixture (see the module docstring); ``expert_logits``
        holds each image's routed expert's logits."""
        inside = self.class_masks[routing.expert]
        within = (expert_logits + slow_logits).masked_fill(~inside, float("-inf")).log_softmax(1)
        routed = routing.mass.clamp_min(1e-30).log()[:, None] + within
        return torch.where(inside, routed, slow_logits.log_softmax(1))

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        match_saved_shapes(self, state_dict, prefix, ("weight", "bias", "center"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
