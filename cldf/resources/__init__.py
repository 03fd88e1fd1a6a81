"""Files shipped inside the package: recipes (``recipes/*.yaml``) and stream descriptions
(``streams/*.yaml``, with their ``README.md``).

They are read through :mod:`importlib.resources`, so an installed wheel finds them as a checkout
does; in a checkout, ``strategies/`` and ``benchmarks/streams/`` are symlinks to these folders.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from ..streams.errors import StreamSpecError


def _folder(name: str) -> Path:
    # cldf reads these files by path (yaml, the stream loader), so the package must be installed
    # as files, as pip does; a zipped import (Traversable without a path) is refused here.
    return Path(os.fspath(files(__name__).joinpath(name)))


RECIPES_DIR = _folder("recipes")
STREAMS_DIR = _folder("streams")
EMBEDDED_STREAM = STREAMS_DIR / "embedded.yaml"


def shipped_names(folder: Path) -> list[str]:
    """Names (file stems) of the YAML files in a shipped folder, sorted."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def shipped_streams() -> list[str]:
    """Names of the stream descriptions shipped under ``streams/`` (``embedded``, ``cddb_hard``, ...)."""
    return shipped_names(STREAMS_DIR)


def stream_path(name_or_path: str | os.PathLike) -> Path:
    """A stream YAML from a shipped name (``cddb_hard``) or a path (an existing file, or any
    ``.yaml``/``.yml`` path, left for the loader to check)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    shipped = STREAMS_DIR / f"{path}.yaml"
    if len(path.parts) == 1 and shipped.is_file():
        return shipped
    raise StreamSpecError(
        f"unknown stream {str(name_or_path)!r}; shipped streams: {', '.join(shipped_streams())} "
        "(or a path to a .yaml file)")
