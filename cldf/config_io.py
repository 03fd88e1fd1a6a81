"""Build config dataclasses from YAML mappings, with errors that name the bad key and the valid ones."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A recipe or setting that cannot be used; the message names the key and the valid values."""


def from_mapping(cls: type[T], raw: Mapping[str, Any] | None, where: str) -> T:
    """Instantiate dataclass ``cls`` from ``raw``; nested dataclass fields are built recursively.

    Unknown keys raise :class:`ConfigError` listing the allowed keys; a value the dataclass
    rejects (its ``__post_init__``) is re-raised with ``where`` in the message.
    """
    raw = dict(raw or {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        hint = hints.get(key)
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            value = from_mapping(hint, value, f"{where}.{key}")
        elif hint in (int, float) and isinstance(value, (str, int)) and not isinstance(value, bool):
            value = _number(value, hint, f"{where}.{key}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{where}: {err}") from err


def _number(value: str | int, kind: type, where: str) -> int | float:
    """YAML 1.1 reads ``1e-4`` as a string; accept it (and ints for floats) as the field's type."""
    try:
        number = kind(value)
    except ValueError as err:
        raise ConfigError(f"{where}={value!r} is not a valid {kind.__name__}") from err
    if kind is int and isinstance(value, str) and str(number) != value.strip():
        raise ConfigError(f"{where}={value!r} is not an integer")
    return number


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` settings (values parsed as YAML: numbers, booleans, lists)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. training.epochs=3")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(text)
    return raw
