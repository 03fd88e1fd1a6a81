"""Lazily generated real/fake datasets of one forgery family (the embedded offline stream)."""

from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from cldf.streams.embedded.families import FORGERY_FAMILIES, match_global_statistics
from cldf.streams.embedded.photos import load_photo, photos_for_split, random_crop

SPLITS: tuple[str, ...] = ("train", "val", "test")
FINAL_JPEG_QUALITY: tuple[int, int] = (85, 95)  # inclusive range, drawn per image
MIN_IMAGE_SIZE = 32


def finish(image: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """The final pipeline every image (real or fake) goes through: clip, round, and save as
    JPEG at a random quality in ``FINAL_JPEG_QUALITY``, as a camera or web upload would.
    Returns the decoded JPEG (its ``quantization`` tables stay readable)."""
    pixels = np.clip(image, 0, 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    quality = int(rng.integers(FINAL_JPEG_QUALITY[0], FINAL_JPEG_QUALITY[1] + 1))
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    decoded = Image.open(buffer)
    decoded.load()
    return decoded


class EmbeddedSplit(Dataset):
    """``2 * n_per_class`` images of one family and split; even indices real, odd fake.

    Image ``i`` is drawn from a generator seeded by (seed, family, split, i), so it is the same
    on every call and nothing but the source photos is held in memory. Images ``2k`` and
    ``2k + 1`` share their source: a random crop of a photo, shown as is (real) and forged by
    the family (fake, with a second crop of the same photo as donor), as real/fake pairs of
    forensics data sets share their source videos; so content cannot tell them apart, only the
    artifact can. The fake is brought back to the source crop's per-channel mean and std. Both
    go through :func:`finish`.
    """

    def __init__(self, family: str, split: str, n_per_class: int, image_size: int, seed: int,
                 validation_photos: str = "shared"):
        if family not in FORGERY_FAMILIES:
            raise ValueError(
                f"unknown forgery family {family!r}; valid families: {', '.join(FORGERY_FAMILIES)}")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        if not isinstance(n_per_class, int) or n_per_class < 1:
            raise ValueError(f"n_per_class must be a positive int, got {n_per_class!r}")
        if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size must be an int >= {MIN_IMAGE_SIZE}, got {image_size!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.family = family
        self.split = split
        self.n_per_class = n_per_class
        self.image_size = image_size
        self.seed = seed
        self.labels: list[int] = [i % 2 for i in range(2 * n_per_class)]
        self.validation_photos = validation_photos
        self._photos = photos_for_split(split, validation_photos)
        self._entropy = (seed, zlib.crc32(family.encode()), SPLITS.index(split))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        pair_rng = np.random.default_rng(np.random.SeedSequence((*self._entropy, index // 2)))
        photo = load_photo(self._photos[pair_rng.integers(len(self._photos))])
        image = random_crop(photo, pair_rng, self.image_size)
        rng = np.random.default_rng(np.random.SeedSequence((*self._entropy, index)))
        label = self.labels[index]
        if label == 1:
            donor = random_crop(photo, rng, self.image_size)
            forged = FORGERY_FAMILIES[self.family](image, donor, rng)
            image = match_global_statistics(forged, image)
        return finish(image, rng), label

    def __repr__(self) -> str:
        return (f"EmbeddedSplit(family={self.family!r}, split={self.split!r}, "
                f"n_per_class={self.n_per_class}, image_size={self.image_size}, seed={self.seed}, "
                f"validation_photos={self.validation_photos!r})")


def embedded_split(
    family: str, split: str, n_per_class: int, image_size: int = 112, seed: int = 0,
    validation_photos: str = "shared",
) -> EmbeddedSplit:
    """The real/fake dataset of one forgery family and split (see :class:`EmbeddedSplit`;
    ``validation_photos``: see :func:`cldf.streams.embedded.photos.photos_for_split`)."""
    return EmbeddedSplit(family, split, n_per_class, image_size, seed, validation_photos)
