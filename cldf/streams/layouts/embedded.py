"""The embedded offline stream: one procedural forgery family per generator, generated lazily
by :mod:`cldf.streams.embedded` (no files; nothing to download)."""

from __future__ import annotations

from cldf.streams.errors import StreamSpecError
from cldf.streams.layouts.base import SPLITS, Collected, Layout, SplitData, option

EXPECTED = """\
  no files: generators are forgery families of cldf.streams.embedded.FORGERY_FAMILIES"""


class EmbeddedImages:
    """The images of an embedded split, as an image source."""

    def __init__(self, split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def load(self, index: int):
        return self.split[index][0]

    def describe(self, index: int) -> str:
        return f"{self.split!r}[{index}]"


def collect(stream) -> Collected:
    # imported here so that file layouts do not load the embedded photos' dependencies
    from cldf.streams.embedded import FORGERY_FAMILIES, embedded_split
    from cldf.streams.embedded.photos import VALIDATION_PHOTOS

    where = "embedded layout"
    sizes = _split_sizes(option(stream.options, "n_per_class", (int, dict), where))
    image_size = option(stream.options, "image_size", int, where)
    validation_photos = option(stream.options, "validation_photos", str, where)
    if validation_photos not in VALIDATION_PHOTOS:
        raise StreamSpecError(f"{where}: 'validation_photos' must be one of {', '.join(VALIDATION_PHOTOS)}, "
                              f"got {validation_photos!r}")
    collected: Collected = []
    for exp in stream.experiences:
        splits: dict[str, SplitData] = {}
        for family in exp.generators:
            if family not in FORGERY_FAMILIES:
                raise StreamSpecError(f"experience {exp.name!r}: unknown forgery family "
                                      f"{family!r}; valid families: {', '.join(FORGERY_FAMILIES)}")
        if len(exp.generators) != 1:
            raise StreamSpecError(f"experience {exp.name!r}: the embedded layout takes one family "
                                  f"per experience, got {list(exp.generators)}")
        family = exp.generators[0]
        for split, n in sizes.items():
            data = embedded_split(family, split, n_per_class=n, image_size=image_size,
                                  seed=stream.seed, validation_photos=validation_photos)
            splits[split] = SplitData(EmbeddedImages(data), list(data.labels), [family] * len(data))
        collected.append(splits)
    return collected


def _split_sizes(raw: int | dict) -> dict[str, int]:
    sizes = {split: raw for split in SPLITS} if isinstance(raw, int) else dict(raw)
    if set(sizes) - set(SPLITS) or not {"train", "test"} <= set(sizes) or any(
            not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in sizes.values()):
        raise StreamSpecError(f"embedded layout: 'n_per_class' must be a positive int or a "
                              f"mapping with train and test (and optionally val), got {raw!r}")
    return sizes


EMBEDDED = Layout(
    name="embedded", expected=EXPECTED, collect=collect, needs_root=False,
    stream_options={"n_per_class": {"train": 64, "val": 16, "test": 32}, "image_size": 112,
                    "validation_photos": "shared"},
    experience_options={})
