"""Lazy image datasets: only paths and labels live in memory; pixels are read per item."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from PIL import Image
from torch.utils.data import Dataset

from cldf.streams.errors import SkippedFilesWarning

#: What PIL raises on unreadable, truncated or corrupt files.
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
#: How many other images of the same class are tried when an image fails during training.
MAX_SUBSTITUTES = 16


class ImageSource(Protocol):
    """Anything that yields a PIL image by index.

    A source with ``subset(indices) -> ImageSource`` can be filtered (validation carved from
    train, unreadable files left out).
    """

    def __len__(self) -> int: ...

    def load(self, index: int) -> Image.Image: ...

    def describe(self, index: int) -> str: ...


class FileImages:
    """Image files on disk, opened with PIL only when asked for."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        with Image.open(self.paths[index]) as image:
            return image.convert("RGB")

    def describe(self, index: int) -> str:
        return self.paths[index]

    def subset(self, indices: Sequence[int]) -> FileImages:
        return FileImages([self.paths[i] for i in indices])


class ImageDataset(Dataset):
    """``(transform(image), target)`` items over an :class:`ImageSource`.

    An image that fails to load here (e.g. a file changed after the load-time check) is replaced
    by the next image of the same target that loads, with a :class:`SkippedFilesWarning`, so a
    bad file never stops training midway. ``failed`` lists what failed in this process.
    """

    def __init__(
        self,
        images: ImageSource,
        targets: Sequence[int],
        transform: Callable[[Image.Image], Any] | None = None,
    ):
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = list(targets)
        self.transform = transform
        self.failed: set[int] = set()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        target = self.targets[index]
        image = self._load_or_substitute(index)
        return (self.transform(image) if self.transform else image), target

    def _load_or_substitute(self, index: int) -> Image.Image:
        target = self.targets[index]
        tried: list[str] = []
        candidates = (j % len(self) for j in range(index, index + len(self)))
        for candidate in candidates:
            if candidate in self.failed or self.targets[candidate] != target:
                continue
            try:
                return self.images.load(candidate)
            except IMAGE_ERRORS as error:
                self.failed.add(candidate)
                tried.append(self.images.describe(candidate))
                warnings.warn(
                    f"could not read {self.images.describe(candidate)} ({error}); "
                    f"using another image of class {target} instead",
                    SkippedFilesWarning, stacklevel=2)
            if len(tried) > MAX_SUBSTITUTES:
                break
        raise RuntimeError(
            f"no readable image of class {target} near index {index}; failed: {tried}")
