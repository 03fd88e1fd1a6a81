"""What every layout shares: the layout record, split data, and path checks."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cldf.streams.errors import ManifestPathError, StreamDataError, StreamSpecError
from cldf.streams.images import FileImages, ImageSource

if TYPE_CHECKING:
    from cldf.streams.spec import StreamSpec

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"})


@dataclass
class SplitData:
    """The images of one experience and split, with a binary label and a generator each.

    For a real image, ``generators`` holds the generator whose data it came with.
    """

    images: ImageSource
    is_fake: list[int]
    generators: list[str]

    def __len__(self) -> int:
        return len(self.is_fake)

    @property
    def paths(self) -> list[str] | None:
        return self.images.paths if isinstance(self.images, FileImages) else None

    @classmethod
    def from_files(cls, samples: Sequence[tuple[str, int, str]]) -> SplitData:
        """From ``(path, is_fake, generator)`` triples."""
        return cls(FileImages([s[0] for s in samples]), [s[1] for s in samples],
                   [s[2] for s in samples])

    @property
    def can_keep(self) -> bool:
        """Whether :meth:`keep` works: the image source has ``subset`` (files, Arrow rows)."""
        return hasattr(self.images, "subset")

    def keep(self, indices: Sequence[int]) -> SplitData:
        """The same split restricted to ``indices`` (image sources with ``subset`` only)."""
        if not self.can_keep:
            raise TypeError(f"{type(self.images).__name__} images cannot be filtered")
        return SplitData(self.images.subset(indices), [self.is_fake[i] for i in indices],
                         [self.generators[i] for i in indices])


#: One dict per experience, in stream order: split name -> data (absent split = none).
Collected = list[dict[str, SplitData]]


@dataclass(frozen=True)
class Layout:
    """A way data lies on disk: its keys (with defaults) and how to list its files."""

    name: str
    expected: str  # the expected layout, shown in error messages
    collect: Callable[[StreamSpec], Collected]
    stream_options: Mapping[str, Any]
    experience_options: Mapping[str, Any]
    needs_root: bool = True
    generator_folders: bool = False  # one folder per generator under the root (listed as the default order)
    #: whether the stream options (defaults filled in) read a data root; None: ``needs_root``
    root_needed: Callable[[Mapping[str, Any]], bool] | None = None
    #: the generators in the data, sorted: the default order of a stream built from a data root
    list_generators: Callable[[StreamSpec], list[str]] | None = None


def layout_error(layout: Layout, problem: str) -> StreamDataError:
    """An error stating ``problem`` followed by the expected layout."""
    return StreamDataError(f"{problem}\nExpected layout ({layout.name}):\n{layout.expected}")


def require_dir(path: Path, layout: Layout, what: str) -> Path:
    """``path`` if it is a folder, else an error naming it and the expected layout."""
    if not path.is_dir():
        raise layout_error(layout, f"{what} {str(path)!r} does not exist or is not a folder.")
    return path


def require_file(path: Path, layout: Layout, what: str) -> Path:
    if not path.is_file():
        raise layout_error(layout, f"{what} {str(path)!r} does not exist.")
    return path


def list_images(folder: Path) -> list[str]:
    """Image files under ``folder`` (recursively), sorted, by extension."""
    found = []
    for directory, _, names in os.walk(folder):
        found.extend(os.path.join(directory, n) for n in names
                     if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
    return sorted(found)


def path_inside_root(root: Path, base: Path, relative: str, where: str) -> str:
    """``base / relative`` normalised; a :class:`ManifestPathError` if it leaves ``root``."""
    resolved = os.path.normpath(os.path.join(os.path.abspath(base), relative))
    root_abs = os.path.normpath(os.path.abspath(root))
    if os.path.commonpath([resolved, root_abs]) != root_abs:
        raise ManifestPathError(
            f"{where}: path {relative!r} resolves to {resolved!r}, outside the data root "
            f"{root_abs!r}; manifest paths must stay inside the data root")
    return resolved


def option(spec_options: Mapping[str, Any], key: str, kind: type | tuple[type, ...],
           where: str) -> Any:
    """A layout option, type-checked, with an error naming it."""
    value = spec_options[key]
    if not isinstance(value, kind) or isinstance(value, bool) and bool not in _as_tuple(kind):
        names = " or ".join(t.__name__ for t in _as_tuple(kind))
        raise StreamSpecError(f"{where}: {key!r} must be {names}, got {value!r}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
