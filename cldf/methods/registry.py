"""Every method cldf can wire, by recipe section; the order is the order of their plug-ins.

Adding a method: a folder under :mod:`cldf.methods` exporting a :class:`MethodEntry`, plus one
line here. Recipes, the strategy builder, cost accounting and checkpoints read this table.
"""

from __future__ import annotations

from cldf.methods import baselines, ema_balance, napa_vq, slow_fast
from cldf.methods.entry import MethodEntry

METHODS: dict[str, MethodEntry] = {entry.section: entry for entry in (
    *baselines.ENTRIES,
    # EMA first: at the end of an experience it swaps its shadow into the model, and NAPA-VQ's
    # prototypes and distillation snapshot must come from the weights the detector keeps
    ema_balance.ENTRY,
    napa_vq.ENTRY,
    slow_fast.ENTRY,
)}
