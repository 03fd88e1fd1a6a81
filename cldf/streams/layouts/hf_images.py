"""Images held in a Hugging Face dataset, as image sources for :class:`ImageDataset`.

:class:`ArrowImages` reads rows of an Arrow-backed ``datasets.Dataset`` by index (memory-mapped:
only the row asked for is read). :class:`StreamedImages` serves rows of a streamed split
(``datasets.IterableDataset``), which cannot be indexed: see its docstring for the cost.
Both hand out RGB PIL images, as :class:`~cldf.streams.images.FileImages` does, so the same
transforms apply.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from PIL import Image


def decode_image(value: Any, where: str) -> Image.Image:
    """An RGB image from what an image column holds: an undecoded ``datasets.Image``
    (``{"bytes", "path"}``), raw bytes, a file path or a PIL image. Unreadable data raises one
    of :data:`cldf.streams.images.IMAGE_ERRORS`."""
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        source: Any = io.BytesIO(value)
    elif isinstance(value, str) and value:
        source = value
    else:
        raise ValueError(f"{where}: no image bytes or path, got {type(value).__name__}")
    with Image.open(source) as image:
        return image.convert("RGB")


class ArrowImages:
    """The images of chosen rows of an Arrow-backed dataset, read when asked for.

    ``table`` is the dataset with only the image column, in ``arrow`` format (no decoding by
    ``datasets``); pickling it (DataLoader workers) carries the file names, not the data.
    """

    def __init__(self, table: Any, column: str, rows: Sequence[int], where: str):
        self.table = table
        self.column = column
        self.rows = list(rows)
        self.where = where

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, index: int) -> Image.Image:
        value = self.table[self.rows[index]].column(self.column)[0].as_py()
        return decode_image(value, self.describe(index))

    def describe(self, index: int) -> str:
        return f"{self.where} row {self.rows[index]}"

    def subset(self, indices: Sequence[int]) -> ArrowImages:
        return ArrowImages(self.table, self.column, [self.rows[i] for i in indices], self.where)


class StreamedImages:
    """The images of chosen rows of a streamed split, by their position in the stream.

    A stream has no random access, so the first :meth:`load` iterates the split once and keeps
    the chosen rows' encoded images (bytes or paths, not pixels) in memory. Only one
    ``StreamedImages`` holds its images at a time: filling another drops them, so memory holds
    one experience's split, never the dataset. Reading splits in turn (train, then each test
    experience) costs one pass per split read; mixing splits of several experiences in one
    batch (replay, joint) would pass over the stream again at every switch.
    """

    _holder: StreamedImages | None = None  # the one instance whose images are in memory

    def __init__(self, stream: Any, column: str, rows: Sequence[int], where: str):
        self.stream = stream  # an IterableDataset with the image column, undecoded
        self.column = column
        self.rows = list(rows)
        self.where = where
        self._images: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, index: int) -> Image.Image:
        if self._images is None:
            self._fill()
        assert self._images is not None
        return decode_image(self._images[index], self.describe(index))

    def describe(self, index: int) -> str:
        return f"{self.where} row {self.rows[index]} (streamed)"

    def subset(self, indices: Sequence[int]) -> StreamedImages:
        return StreamedImages(self.stream, self.column, [self.rows[i] for i in indices],
                              self.where)

    def _fill(self) -> None:
        holder = StreamedImages._holder
        if holder is not None and holder is not self:
            holder._images = None
        slot = {row: k for k, row in enumerate(self.rows)}
        images: list[Any] = [None] * len(self.rows)
        last, seen = max(self.rows, default=-1), -1
        for seen, item in enumerate(self.stream):
            if seen in slot:
                images[slot[seen]] = item[self.column]
            if seen >= last:
                break
        if seen < last:
            raise RuntimeError(f"{self.where}: the stream ended at row {seen}, before row {last} "
                               f"that was counted when the stream was built (did the data change?)")
        self._images = images
        StreamedImages._holder = self

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None}  # a worker process fills its own copy
