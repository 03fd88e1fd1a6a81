"""Generic folders: ``<root>/<generator>/{real,fake}/*``, split by a seeded shuffle.

Each (generator, class) list is sorted, shuffled with a generator seeded by the stream seed,
the generator name and the class, then cut by ``split_fractions`` (test and val rounded,
train takes the rest), so the split is the same on every machine.
"""

from __future__ import annotations

import math
import random

from cldf.streams.errors import StreamSpecError
from cldf.streams.layouts.base import (
    SPLITS, Collected, Layout, SplitData, list_images, option, require_dir)

CLASS_FOLDERS = {"real": 0, "fake": 1}
EXPECTED = """\
  <root>/<generator>/real/*.png|jpg   (sub-folders are searched too)
  <root>/<generator>/fake/*.png|jpg"""


def collect(stream) -> Collected:
    fractions = _fractions(stream.options)
    root = require_dir(stream.root, FOLDERS, "data root")
    collected: Collected = []
    for exp in stream.experiences:
        samples: dict[str, list[tuple[str, int, str]]] = {split: [] for split in SPLITS}
        for generator in exp.generators:
            gen_dir = require_dir(root / generator, FOLDERS, f"folder of generator {generator!r}")
            for name, is_fake in CLASS_FOLDERS.items():
                paths = list_images(require_dir(gen_dir / name, FOLDERS, "class folder"))
                random.Random(f"{stream.seed}/{generator}/{name}").shuffle(paths)
                for split, part in seeded_split(paths, fractions).items():
                    samples[split].extend((p, is_fake, generator) for p in part)
        collected.append({s: SplitData.from_files(v) for s, v in samples.items() if v})
    return collected


def seeded_split(items: list[str], fractions: dict[str, float]) -> dict[str, list[str]]:
    """Cut an already shuffled list: test first, then val, train takes the rest."""
    n_test = round(len(items) * fractions["test"])
    n_val = round(len(items) * fractions["val"])
    return {"test": items[:n_test], "val": items[n_test:n_test + n_val],
            "train": items[n_test + n_val:]}


def _fractions(options) -> dict[str, float]:
    where = "folders layout"
    raw = option(options, "split_fractions", dict, where)
    unknown = set(raw) - set(SPLITS)
    if unknown:
        raise StreamSpecError(f"{where}: split_fractions has unknown split(s) {sorted(unknown)}; "
                              f"valid splits: {', '.join(SPLITS)}")
    fractions = {split: raw.get(split, 0.0) for split in SPLITS}
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0
           for v in fractions.values()) or not math.isclose(sum(fractions.values()), 1.0):
        raise StreamSpecError(f"{where}: split_fractions must be non-negative numbers summing "
                              f"to 1, got {raw!r}")
    if fractions["train"] == 0 or fractions["test"] == 0:
        raise StreamSpecError(f"{where}: split_fractions needs train > 0 and test > 0, "
                              f"got {raw!r}")
    return fractions


FOLDERS = Layout(name="folders", expected=EXPECTED, collect=collect,
                 stream_options={"split_fractions": {"train": 0.7, "val": 0.1, "test": 0.2}},
                 experience_options={}, generator_folders=True)
