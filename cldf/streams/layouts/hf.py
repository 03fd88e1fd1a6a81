"""Hugging Face / Arrow datasets: a saved ``Dataset``/``DatasetDict``, an ``imagefolder``, or the Hub.

The data root is a folder written by ``save_to_disk`` (read with ``datasets.load_from_disk``)
or an ``imagefolder`` folder (``<split>/...`` with a ``metadata.csv`` naming each file's label
and generator). A ``hub`` name loads a Hub dataset instead, and only then is the network used.
Each row has an image, a label (``real``/``fake``, ``0``/``1``, a boolean, or a ``ClassLabel``
with such names) and a generator, in the columns named by ``columns``. Splits are the
dataset's own (``train``; ``validation``, ``val`` or ``valid``; ``test``; renamed with
``splits``), or, for a single ``Dataset``, the values of its ``split`` column. Without a
validation split, ``validation_holdout`` carves one from train as for the other layouts.

``streaming: true`` reads the rows as a stream (Hub and imagefolder data are never copied
to the disk; a saved dataset is iterated instead of indexed). Building the stream then costs
one pass over the label and generator columns of every split (counts are only known after
it); images are read per experience split, see :class:`StreamedImages`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from cldf.streams.errors import MissingExtraError, StreamDataError, StreamSpecError
from cldf.streams.layouts.base import (
    SPLITS, Collected, Layout, SplitData, layout_error, option, require_dir)
from cldf.streams.layouts.hf_images import ArrowImages, StreamedImages

COLUMNS = {"image": "image", "label": "label", "generator": "generator", "split": "split"}
#: The dataset split names tried for each split, in order, unless ``splits`` names one.
SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val", "valid"), "test": ("test",)}
LABELS = {"0": 0, "real": 0, "0_real": 0, "false": 0, "1": 1, "fake": 1, "1_fake": 1, "true": 1}
FORMATS = ("auto", "arrow", "imagefolder")
EXPECTED = """\
  <root>/ written by Dataset(Dict).save_to_disk (dataset_dict.json or state.json + *.arrow), or
  <root>/<split>/... images + metadata.csv (imagefolder: file_name,label,generator), or
  hub: <name> in the stream YAML (a Hub dataset; the only case that uses the network)
  rows: image, label (real|fake|0|1), generator; splits train, validation|val, test
  (or one Dataset with a split column)"""

#: (the dataset holding a split's rows, [(row, is_fake, generator)]) per split
Index = dict[str, tuple[Any, list[tuple[int, int, str]]]]


def collect(stream) -> Collected:
    data, where = load(stream)
    columns = _columns(stream.options)
    index = _index(data, columns, _split_names(stream.options), where)
    known = sorted({g for _, rows in index.values() for _, _, g in rows})
    collected: Collected = []
    for exp in stream.experiences:
        for generator in exp.generators:
            if generator not in known:
                raise StreamDataError(
                    f"{where}: no rows for generator {generator!r} (experience {exp.name!r}) in "
                    f"column {columns['generator']!r}; generators in the dataset: "
                    f"{', '.join(known) or 'none'}")
        splits: dict[str, SplitData] = {}
        for split, (part, rows) in index.items():
            chosen = [r for r in rows if r[2] in exp.generators]
            if chosen:
                images = _images(part, columns["image"], [r[0] for r in chosen],
                                 f"{where} split {split!r}", stream.options["streaming"])
                splits[split] = SplitData(images, [r[1] for r in chosen], [r[2] for r in chosen])
        collected.append(splits)
    return collected


def list_generators(stream) -> list[str]:
    """The generators in the dataset, sorted (one pass over the columns when streaming)."""
    data, where = load(stream)
    index = _index(data, _columns(stream.options), _split_names(stream.options), where)
    return sorted({g for _, rows in index.values() for _, _, g in rows})


def load(stream) -> tuple[Any, str]:
    """The dataset (a dict of splits or one dataset; iterable when streaming) and its name."""
    datasets = _import_datasets()
    where = "hf layout"
    hub = option(stream.options, "hub", (str, type(None)), where)
    config = option(stream.options, "hub_config", (str, type(None)), where)
    streaming = option(stream.options, "streaming", bool, where)
    cache_dir = option(stream.options, "cache_dir", (str, type(None)), where)
    kind = option(stream.options, "format", str, where)
    if kind not in FORMATS:
        raise StreamSpecError(f"{where}: 'format' is {kind!r}; valid: {', '.join(FORMATS)}")
    if hub is not None:
        try:
            return datasets.load_dataset(hub, config, streaming=streaming, cache_dir=cache_dir), \
                f"Hub dataset {hub!r}"
        except (OSError, ValueError) as error:
            raise StreamDataError(f"{where}: Hub dataset {hub!r} cannot be loaded: {error}") from None
    root = require_dir(stream.root, HF, "data root")
    if kind == "auto":
        saved = (root / "dataset_dict.json").is_file() or (root / "state.json").is_file()
        kind = "arrow" if saved else "imagefolder"
    try:
        if kind == "arrow":
            data = datasets.load_from_disk(str(root))
            return (_iterable(data) if streaming else data), str(root)
        return datasets.load_dataset("imagefolder", data_dir=str(root), streaming=streaming,
                                     cache_dir=cache_dir), str(root)
    except (OSError, ValueError) as error:
        raise layout_error(HF, f"{root} cannot be read as {kind} data: {error}") from None


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise MissingExtraError("the hf layout needs the Hugging Face datasets package: "
                                "pip install 'cldf[hf]'") from None
    return datasets


def _iterable(data: Any) -> Any:
    """A saved dataset read as a stream, as ``load_dataset(..., streaming=True)`` would give."""
    if isinstance(data, dict):
        from datasets import IterableDatasetDict
        return IterableDatasetDict({name: part.to_iterable_dataset() for name, part in data.items()})
    return data.to_iterable_dataset()


def _columns(options: Mapping[str, Any]) -> dict[str, str]:
    given = option(options, "columns", dict, "hf layout")
    unknown = set(given) - set(COLUMNS)
    if unknown or not all(isinstance(v, str) and v for v in given.values()):
        raise StreamSpecError(f"hf layout: 'columns' maps {', '.join(COLUMNS)} to column names, "
                              f"got {given!r}")
    return {**COLUMNS, **given}


def _split_names(options: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    given = option(options, "splits", (dict, type(None)), "hf layout") or {}
    unknown = set(given) - set(SPLITS)
    if unknown or not all(isinstance(v, str) and v for v in given.values()):
        raise StreamSpecError(f"hf layout: 'splits' maps {', '.join(SPLITS)} to the dataset's "
                              f"split names, got {given!r}")
    return {split: (given[split],) if split in given else SPLIT_NAMES[split] for split in SPLITS}


def _index(data: Any, columns: dict[str, str], names: dict[str, tuple[str, ...]],
           where: str) -> Index:
    """Every split's rows as ``(row, is_fake, generator)``, from the label and generator columns."""
    if isinstance(data, dict):  # DatasetDict / IterableDatasetDict
        index: Index = {}
        for split, candidates in names.items():
            found = next((name for name in candidates if name in data), None)
            if found is None and split != "val":
                raise layout_error(HF, f"{where}: no {split!r} split (tried {list(candidates)}); "
                                       f"the dataset's splits: {list(data)}. Name it with "
                                       f"splits: {{{split}: <split name>}} in the stream YAML.")
            if found is not None:
                part = data[found]
                rows = _scan(part, columns, None, f"{where} split {found!r}")
                index[split] = (part, [(r, fake, g) for r, fake, g, _ in rows])
        return index
    by_value = {name: split for split, candidates in names.items() for name in candidates}
    rows = _scan(data, columns, "split", where)
    index = {}
    for row, fake, generator, value in rows:
        if value not in by_value:
            raise StreamDataError(f"{where} row {row}: split {value!r} in column "
                                  f"{columns['split']!r} is not one of {', '.join(by_value)}")
        index.setdefault(by_value[value], (data, []))[1].append((row, fake, generator))
    return index


def _scan(part: Any, columns: dict[str, str], split_key: str | None,
          where: str) -> list[tuple[int, int, str, str | None]]:
    """``(row, is_fake, generator, split value or None)`` for every row of ``part``."""
    from datasets import Dataset

    keys = ["label", "generator", *([split_key] if split_key else [])]
    names = [columns[k] for k in keys]
    _require_columns(part.column_names, columns, ["image", *keys], where)
    if isinstance(part, Dataset):  # Arrow: whole columns, memory-mapped
        table = part.select_columns(names).with_format("arrow")[:]
        values: Any = zip(*(table.column(name).to_pylist() for name in names))
    else:
        values = _streamed_values(part, names, columns, ["image", *keys], where)
    features = part.features or {}
    out = []
    for row, (label, generator, *split) in enumerate(values):
        spot = f"{where} row {row}"
        out.append((row, _is_fake(_name(label, features.get(names[0])), spot),
                    _generator(_name(generator, features.get(names[1])), spot),
                    _name(split[0], features.get(names[2])) if split else None))
    return out


def _streamed_values(part: Any, names: list[str], columns: dict[str, str], keys: list[str],
                     where: str) -> Iterator[tuple[Any, ...]]:
    """One pass over a stream, without the image column when its columns are known; a stream
    without features has its columns checked on its first row."""
    known = part.column_names is not None
    for row, item in enumerate(part.select_columns(names) if known else part):
        if row == 0 and not known:
            _require_columns(list(item), columns, keys, where)
        yield tuple(item.get(name) for name in names)


def _require_columns(present: list[str] | None, columns: dict[str, str], keys: list[str],
                     where: str) -> None:
    if present is None:
        return
    for key in keys:
        if columns[key] not in present:
            hint = " (or save a DatasetDict with one dataset per split)" if key == "split" else ""
            raise StreamDataError(
                f"{where}: no {key} column {columns[key]!r}; the dataset's columns: {present}. "
                f"Name it with columns: {{{key}: <column>}} in the stream YAML{hint}.")


def _name(value: Any, feature: Any) -> Any:
    """A ``ClassLabel`` id as its name; other values unchanged."""
    names = getattr(feature, "names", None)
    if names and isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return names[value]
    return value


def _is_fake(value: Any, where: str) -> int:
    key = str(value).strip().lower()
    if key not in LABELS:
        raise StreamDataError(f"{where}: label {value!r} is not one of {', '.join(LABELS)}")
    return LABELS[key]


def _generator(value: Any, where: str) -> str:
    if value is None or not str(value).strip():
        raise StreamDataError(f"{where}: empty generator")
    return str(value)


def _images(part: Any, column: str, rows: list[int], where: str, streaming: bool):
    if streaming:
        from datasets import Image
        stream = part.select_columns([column])
        if isinstance((stream.features or {}).get(column), Image):
            stream = stream.cast_column(column, Image(decode=False))
        return StreamedImages(stream, column, rows, where)
    return ArrowImages(part.select_columns([column]).with_format("arrow"), column, rows, where)


HF = Layout(
    name="hf", expected=EXPECTED, collect=collect,
    stream_options={"format": "auto", "hub": None, "hub_config": None, "columns": dict(COLUMNS),
                    "splits": None, "streaming": False, "cache_dir": None},
    experience_options={},
    root_needed=lambda options: options.get("hub") is None,
    list_generators=list_generators)
