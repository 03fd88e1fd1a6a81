"""One end-of-experience pass over the training data, shared by the plug-ins that need one.

A strategy that already makes a no-grad pass over each experience's training data (eval
transforms) at its end - the slow/fast strategy, to fit its analytic heads - offers that pass to
plug-ins: a plug-in that would otherwise make its own (NAPA-VQ, for its prototypes) joins it
with :func:`join_experience_pass` and receives every batch's features of the learner trained on
the experience. Images are then loaded and sent through the trained tail once, not once per
method. A strategy offers the pass by having an ``experience_pass`` attribute (an
:class:`ExperiencePass`) whose :meth:`ExperiencePass.will_run` says whether it runs at the end of
the current (sub-)experience. The pass runs after every plug-in's ``after_training_exp``, so
what a joined plug-in computes from it (NAPA-VQ's prototypes) is ready from ``after_training``
on, not in other plug-ins' ``after_training_exp``.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor


class PassConsumer(Protocol):
    """What a plug-in hands to the shared pass."""

    def begin(self) -> None:
        """Before the first batch."""

    def add(self, features: Tensor, targets: Tensor) -> None:
        """One batch: the trained learner's pooled features (B x d, no grad) and the class ids."""

    def finish(self) -> None:
        """After the last batch, once the strategy's own use of the pass is done."""


class ExperiencePass:
    """The consumers that joined the coming end-of-experience pass; the strategy calls
    :meth:`begin`, :meth:`add` per batch and :meth:`finish`."""

    def __init__(self) -> None:
        self.will_run = False
        self._consumers: list[PassConsumer] = []

    def join(self, consumer: PassConsumer) -> None:
        self._consumers.append(consumer)

    def begin(self) -> None:
        for consumer in self._consumers:
            consumer.begin()

    def add(self, features: Tensor, targets: Tensor) -> None:
        for consumer in self._consumers:
            consumer.add(features, targets)

    def finish(self) -> None:
        consumers, self._consumers = self._consumers, []
        for consumer in consumers:
            consumer.finish()


def join_experience_pass(strategy: Any, consumer: PassConsumer) -> bool:
    """Hand ``consumer`` to the strategy's end-of-experience pass if it runs one at the end of
    this (sub-)experience; False if not (the plug-in then makes its own pass)."""
    shared = getattr(strategy, "experience_pass", None)
    if not isinstance(shared, ExperiencePass) or not shared.will_run:
        return False
    shared.join(consumer)
    return True
