"""Stream descriptions: experiences, their generators and real sources, and the class map.

A stream YAML names a layout (how the files lie on disk), a data root and an ordered list of
experiences. Keys are validated here; the layout modules declare which extra keys they accept.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cldf.streams.errors import StreamSpecError
from cldf.streams.layouts import LAYOUTS, Layout

DATA_ROOT_ENV = "CLDF_DATA_ROOT"
ON_BAD_FILE = ("skip", "error")
CHECK_FILES = ("decode", "header", "none")
STREAM_KEYS = {
    "name": None,
    "description": "",
    "layout": None,
    "root": ".",
    "real_source": None,
    "seed": 0,
    "on_bad_file": "skip",
    "check_files": "decode",
    "allow_single_class": False,
    "allow_empty_splits": False,
    "validation_holdout": 0.1,
    "experiences": None,
}
EXPERIENCE_KEYS = ("name", "generators", "real_source")


@dataclass(frozen=True)
class ClassMap:
    """Class ids of a stream: ``real:<source>`` and ``fake:<generator>`` names, in id order."""

    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def real_classes(self) -> list[int]:
        return [i for i, name in enumerate(self.names) if name.startswith("real:")]

    @property
    def fake_classes(self) -> list[int]:
        return [i for i, name in enumerate(self.names) if name.startswith("fake:")]

    def id_of(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"class {name!r} is not in the class map {list(self.names)}") from None

    def real_class(self, source: str) -> int:
        return self.id_of(f"real:{source}")

    def fake_class(self, generator: str) -> int:
        return self.id_of(f"fake:{generator}")

    def is_real(self, class_id: int) -> bool:
        return self.names[class_id].startswith("real:")


@dataclass(frozen=True)
class ExperienceSpec:
    """One experience: its name, the generator(s) it brings and the source of its real images."""

    name: str
    generators: tuple[str, ...]
    real_source: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamSpec:
    """A validated stream description (see ``benchmarks/streams/*.yaml``)."""

    name: str
    layout: str
    root: Path | None
    experiences: tuple[ExperienceSpec, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    seed: int = 0
    on_bad_file: str = "skip"
    check_files: str = "decode"
    allow_single_class: bool = False
    allow_empty_splits: bool = False
    validation_holdout: float = 0.1

    @property
    def class_map(self) -> ClassMap:
        """Per experience in order: ``real:<source>`` when the source is new, then
        ``fake:<generator>`` for each of its generators."""
        names: list[str] = []
        for exp in self.experiences:
            for name in (f"real:{exp.real_source}", *(f"fake:{g}" for g in exp.generators)):
                if name not in names:
                    names.append(name)
        return ClassMap(tuple(names))

    @property
    def experience_names(self) -> list[str]:
        return [exp.name for exp in self.experiences]


def load_stream_spec(
    path: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> StreamSpec:
    """Read a stream YAML (``yaml.safe_load``) and validate it.

    ``data_root`` (else the ``CLDF_DATA_ROOT`` environment variable) anchors a relative ``root``.
    ``overrides`` replace top-level keys of the file (e.g. ``{"allow_single_class": True}``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"stream description {str(path)!r} does not exist")
    with path.open(encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    if not isinstance(raw, dict):
        raise StreamSpecError(
            f"{path}: expected a mapping of stream keys, got {type(raw).__name__}")
    raw = {"name": path.stem, **raw, **(overrides or {})}
    return parse_stream_spec(raw, data_root=data_root, source=str(path))


def parse_stream_spec(
    raw: Mapping[str, Any], data_root: str | os.PathLike | None = None, source: str = "<stream>"
) -> StreamSpec:
    """Validate a stream description given as a mapping (the parsed YAML)."""
    layout_name = raw.get("layout")
    if not isinstance(layout_name, str) or layout_name not in LAYOUTS:
        raise StreamSpecError(
            f"{source}: 'layout' is {layout_name!r}; valid layouts: {', '.join(LAYOUTS)}")
    layout = LAYOUTS[layout_name]
    allowed = {**STREAM_KEYS, **layout.stream_options}
    _reject_unknown(raw, allowed, f"{source}: stream key")
    values = {**allowed, **raw}
    name = _require_str(values["name"], f"{source}: 'name'")
    _check_choice(values["on_bad_file"], ON_BAD_FILE, f"{source}: 'on_bad_file'")
    _check_choice(values["check_files"], CHECK_FILES, f"{source}: 'check_files'")
    for key in ("allow_single_class", "allow_empty_splits"):
        if not isinstance(values[key], bool):
            raise StreamSpecError(f"{source}: {key!r} must be true or false, got {values[key]!r}")
    holdout = values["validation_holdout"]
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 <= holdout < 0.5:
        raise StreamSpecError(f"{source}: 'validation_holdout' must be a fraction in [0, 0.5), got {holdout!r}")
    if not isinstance(values["seed"], int) or isinstance(values["seed"], bool):
        raise StreamSpecError(f"{source}: 'seed' must be an integer, got {values['seed']!r}")
    default_source = values["real_source"]
    if default_source is not None:
        default_source = _require_str(default_source, f"{source}: 'real_source'")
    experiences = _parse_experiences(values["experiences"], layout, default_source, source)
    needs_root = layout.needs_root if layout.root_needed is None else layout.root_needed(values)
    root = _resolve_root(values["root"], data_root, needs_root, source)
    options = {key: values[key] for key in layout.stream_options}
    return StreamSpec(
        name=name,
        layout=layout_name,
        root=root,
        experiences=experiences,
        options=options,
        description=str(values["description"]),
        seed=values["seed"],
        on_bad_file=values["on_bad_file"],
        check_files=values["check_files"],
        allow_single_class=values["allow_single_class"],
        allow_empty_splits=values["allow_empty_splits"],
        validation_holdout=float(holdout),
    )


def _parse_experiences(raw: Any, layout: Layout, default_source: str | None,
                       source: str) -> tuple[ExperienceSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise StreamSpecError(f"{source}: 'experiences' must be a non-empty list, got {raw!r}")
    experiences: list[ExperienceSpec] = []
    owner: dict[str, str] = {}
    for position, entry in enumerate(raw):
        where = f"{source}: experiences[{position}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict):
            raise StreamSpecError(f"{where} must be a name or a mapping, got {entry!r}")
        allowed = {key: None for key in EXPERIENCE_KEYS} | dict(layout.experience_options)
        _reject_unknown(entry, allowed, f"{where}: key")
        name = _require_str(entry.get("name"), f"{where}: 'name'")
        generators = entry.get("generators", [name])
        if isinstance(generators, str):
            generators = [generators]
        if not isinstance(generators, list) or not generators:
            raise StreamSpecError(f"{where}: 'generators' must be a non-empty list of names")
        generators = tuple(_require_str(g, f"{where}: generator") for g in generators)
        real_source = _require_str(entry.get("real_source", default_source or name),
                                   f"{where}: 'real_source'")
        for generator in generators:
            if generator in owner:
                raise StreamSpecError(
                    f"{where}: generator {generator!r} already belongs to experience "
                    f"{owner[generator]!r}; each generator may appear in one experience only")
            owner[generator] = name
        if name in (exp.name for exp in experiences):
            raise StreamSpecError(f"{where}: duplicate experience name {name!r}")
        options = {key: entry.get(key, default)
                   for key, default in layout.experience_options.items()}
        experiences.append(ExperienceSpec(name, generators, real_source, options))
    return tuple(experiences)


def _resolve_root(root: Any, data_root, needs_root: bool, source: str) -> Path | None:
    if not needs_root:
        return None
    root = Path(_require_str(root, f"{source}: 'root'")).expanduser()
    if root.is_absolute():
        return root
    base = data_root if data_root is not None else os.environ.get(DATA_ROOT_ENV)
    if not base:
        raise StreamSpecError(
            f"{source}: no data root given; pass it on the command line (--data DIR) or set "
            f"{DATA_ROOT_ENV} (the stream's 'root' is {str(root)!r}, relative to that folder)")
    return Path(base).expanduser() / root


def _reject_unknown(raw: Mapping[str, Any], allowed: Mapping[str, Any], what: str) -> None:
    for key in raw:
        if key not in allowed:
            raise StreamSpecError(f"{what} {key!r} is unknown; allowed keys: {', '.join(allowed)}")


def _check_choice(value: Any, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise StreamSpecError(f"{what} is {value!r}; valid values: {', '.join(choices)}")


def _require_str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise StreamSpecError(f"{what} must be a non-empty string, got {value!r}")
    return value
