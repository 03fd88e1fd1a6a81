"""Turn a stream description into checked per-experience data (paths and labels only)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cldf.streams.bad_files import REPORTED_PATHS, BadFileReport, find_bad_files
from cldf.streams.errors import BadImageError, LeakageWarning, SkippedFilesWarning, StreamDataError, StreamSpecError
from cldf.streams.layouts import LAYOUTS, SplitData
from cldf.streams.spec import ClassMap, ExperienceSpec, StreamSpec, load_stream_spec, parse_stream_spec

REQUIRED_SPLITS = ("train", "test")


@dataclass
class ExperienceData:
    """One experience's splits and their class ids (``targets``)."""

    spec: ExperienceSpec
    splits: dict[str, SplitData]
    targets: dict[str, list[int]]

    @property
    def name(self) -> str:
        return self.spec.name

    def split(self, name: str) -> tuple[SplitData, list[int]]:
        """A split's data and class ids; empty when the experience has no such split."""
        if name not in self.splits:
            return SplitData.from_files([]), []
        return self.splits[name], self.targets[name]

    @property
    def class_ids(self) -> list[int]:
        """The classes this experience's data contains."""
        return sorted({t for targets in self.targets.values() for t in targets})


@dataclass
class Stream:
    """A loaded stream: experiences in order, the class map and the skipped-file report."""

    spec: StreamSpec
    class_map: ClassMap
    experiences: list[ExperienceData]
    bad_files: BadFileReport = field(default_factory=BadFileReport)

    @property
    def experience_names(self) -> list[str]:
        return [exp.name for exp in self.experiences]

    @property
    def has_validation(self) -> bool:
        """True when every experience has a validation split."""
        return all("val" in exp.splits for exp in self.experiences)


def load_stream(path: str | os.PathLike, data_root: str | os.PathLike | None = None,
                overrides: dict | None = None) -> Stream:
    """Read a stream YAML and its data (see :func:`load_stream_spec` and :func:`build_stream`)."""
    return build_stream(load_stream_spec(path, data_root=data_root, overrides=overrides))


def stream_from_root(root: str | os.PathLike, layout: str, order: Sequence[str] | None = None,
                     overrides: dict | None = None) -> Stream:
    """A stream over the data under ``root`` in ``layout``, without a YAML. ``order``: the
    generators in stream order; for a layout with one folder per generator it defaults to the
    folders, sorted, and every name must be one of them; a layout that lists its generators
    (``hf``) defaults to those, sorted."""
    root = Path(root)
    if layout not in LAYOUTS or not LAYOUTS[layout].needs_root:
        valid = ", ".join(name for name, lay in LAYOUTS.items() if lay.needs_root)
        raise StreamSpecError(f"layout {layout!r} cannot be read from a data root; valid: {valid}")
    if not root.is_dir():
        raise StreamSpecError(f"data root {root} does not exist or is not a folder")
    chosen = LAYOUTS[layout]
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    base = {"name": f"{layout}:{root.name}", "layout": layout, "root": str(root.resolve())}
    if order is None:
        if chosen.generator_folders:
            order = folders
        elif chosen.list_generators is not None:
            order = chosen.list_generators(parse_stream_spec(
                {**base, "experiences": ["?"], **(overrides or {})}, source="data root"))
        else:
            raise StreamSpecError(f"layout {layout} needs the generators in stream order (--order g1,g2,...)")
    missing = [g for g in order if g not in folders] if chosen.generator_folders else []
    if missing:
        raise StreamSpecError(f"generator(s) {', '.join(missing)} not found under {root}; "
                              f"found: {', '.join(folders) or 'nothing'}")
    raw = {**base, "experiences": list(order), **(overrides or {})}
    return build_stream(parse_stream_spec(raw, source="data root"))


def build_stream(spec: StreamSpec) -> Stream:
    """List every experience's files, skip unreadable ones, check classes and leakage."""
    collected = LAYOUTS[spec.layout].collect(spec)
    collected, report = _skip_bad_files(collected, spec)
    if report.count:
        warnings.warn(f"stream {spec.name!r}: {report.summary()}\nthey were skipped",
                      SkippedFilesWarning, stacklevel=2)
    class_map = spec.class_map
    experiences = []
    for position, (exp, splits) in enumerate(zip(spec.experiences, collected)):
        splits = {name: data for name, data in splits.items() if len(data) or name != "val"}
        _check_splits(exp, splits, spec)
        if "val" not in splits and spec.validation_holdout > 0 and "train" in splits and splits["train"].can_keep:
            splits.update(hold_out_validation(splits["train"], spec.validation_holdout, (spec.seed, position)))
        real_id = class_map.real_class(exp.real_source)
        targets = {name: [class_map.fake_class(g) if fake else real_id
                          for fake, g in zip(data.is_fake, data.generators)]
                   for name, data in splits.items()}
        experiences.append(ExperienceData(exp, splits, targets))
    _warn_on_leakage(experiences)
    return Stream(spec, class_map, experiences, report)


def hold_out_validation(train: SplitData, fraction: float, seed: tuple[int, ...]) -> dict[str, SplitData]:
    """``{"train", "val"}``: ``fraction`` of each class of ``train`` (at least one image of a class
    with two or more) held back as the validation split that calibration is fitted on, drawn with
    a generator seeded by ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    held: list[int] = []
    for label in (0, 1):
        members = [i for i, fake in enumerate(train.is_fake) if fake == label]
        if len(members) >= 2:
            count = max(1, round(fraction * len(members)))
            held += rng.choice(members, size=count, replace=False).tolist()
    kept = sorted(set(range(len(train))) - set(held))
    return {"train": train.keep(kept), "val": train.keep(sorted(held))}


def _skip_bad_files(collected, spec: StreamSpec):
    paths = sorted({path for splits in collected for data in splits.values()
                    for path in data.paths or []})
    report = BadFileReport(checked=len(paths) if spec.check_files != "none" else 0,
                           bad=find_bad_files(paths, spec.check_files))
    if report.count and spec.on_bad_file == "error":
        raise BadImageError(f"stream {spec.name!r}: {report.summary()}\n"
                            f"(set on_bad_file: skip to leave them out)")
    if not report.count:
        return collected, report
    filtered = [{name: _without(data, report.bad) for name, data in splits.items()}
                for splits in collected]
    return filtered, report


def _without(data: SplitData, bad: dict[str, str]) -> SplitData:
    if data.paths is None:
        return data
    return data.keep([i for i, path in enumerate(data.paths) if path not in bad])


def _check_splits(exp: ExperienceSpec, splits: dict[str, SplitData], spec: StreamSpec) -> None:
    for name in REQUIRED_SPLITS:
        if not len(splits.get(name, ())) and not spec.allow_empty_splits:
            raise StreamDataError(
                f"experience {exp.name!r} (generators {list(exp.generators)}) has no images in "
                f"its {name!r} split; set allow_empty_splits: true to accept this")
    for name, data in splits.items():
        n_fake = sum(data.is_fake)
        n_real = len(data) - n_fake
        if len(data) and (n_fake == 0 or n_real == 0) and not spec.allow_single_class:
            only = "real" if n_fake == 0 else "fake"
            raise StreamDataError(
                f"experience {exp.name!r} split {name!r} has only {only} images ({n_real} real, "
                f"{n_fake} fake): AUC is undefined. Add the missing class, or set "
                f"allow_single_class: true to accept this")


def _warn_on_leakage(experiences: list[ExperienceData]) -> None:
    def files(split: str) -> dict[str, str]:
        return {os.path.realpath(p): p for exp in experiences if split in exp.splits
                for p in exp.splits[split].paths or []}

    train, test = files("train"), files("test")
    shared = sorted(set(train) & set(test))
    if shared:
        first = ", ".join(train[p] for p in shared[:REPORTED_PATHS])
        warnings.warn(f"{len(shared)} file(s) appear in both a train and a test split "
                      f"(test results will be optimistic): {first}", LeakageWarning, stacklevel=3)
