"""Real photos that ship inside installed packages, and random crops of them.

scikit-image 0.26 ships these images offline (no download); synthetic ones (binary_blobs,
checkerboard, colorwheel, logo, shepp_logan_phantom, horse) and the 102 px microaneurysms are
left out, and ``cat`` is the same picture as ``chelsea``. scikit-learn ships two more photos
(``china.jpg``, ``flower.jpg``), matplotlib one (``grace_hopper.jpg``), and scikit-image's
stereo pair gives ``motorcycle`` (the left view). Grey images are repeated into three channels.

The test split uses photos that train/val never see, so a detector cannot score by
recognising content: 15 photos for train/val, 6 for test. For tuning, the validation split can
hold out its own photos too (``validation_photos="held_out"``): train then draws from 12 of the
15 and val from the other 3, so validation, like test, rewards what transfers to new content.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

TRAIN_VAL_PHOTOS: tuple[str, ...] = (
    "astronaut", "chelsea", "china", "hubble_deep_field", "immunohistochemistry", "retina",
    "brick", "cell", "clock", "gravel", "moon", "page", "text", "motorcycle", "grace_hopper",
)
TEST_PHOTOS: tuple[str, ...] = ("coffee", "rocket", "flower", "camera", "grass", "coins")
HELD_OUT_VAL_PHOTOS: tuple[str, ...] = ("chelsea", "gravel", "clock")  # natural colour, texture, grey objects
SKLEARN_PHOTOS: tuple[str, ...] = ("china", "flower")
VALIDATION_PHOTOS: tuple[str, ...] = ("shared", "held_out")

MIN_CROP_STD = 10.0  # grey levels; flatter crops (sky, black retina border) are redrawn
MAX_CROP_TRIES = 20
CROP_SCALE_MAX = 3.0  # crop side / output side
WHITE_BALANCE = 0.15  # log-gain range per channel; also hides which photos are grey


@lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """Return the named photo as read-only uint8 H x W x 3 (loaded once, then cached)."""
    if name in SKLEARN_PHOTOS:
        from sklearn.datasets import load_sample_image

        image = load_sample_image(f"{name}.jpg")
    elif name == "grace_hopper":
        from matplotlib import cbook

        image = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))
    elif name == "motorcycle":
        import skimage.data

        image = skimage.data.stereo_motorcycle()[0]
    elif name in TRAIN_VAL_PHOTOS + TEST_PHOTOS:
        import skimage.data

        image = getattr(skimage.data, name)()
    else:
        valid = ", ".join(sorted(TRAIN_VAL_PHOTOS + TEST_PHOTOS))
        raise ValueError(f"unknown photo {name!r}; valid photos: {valid}")
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = image[:, :, :3].astype(np.uint8)
    image.setflags(write=False)
    return image


def photos_for_split(split: str, validation_photos: str = "shared") -> tuple[str, ...]:
    """Names of the source photos of a split: test photos are disjoint from train/val ones.

    ``validation_photos``: ``"shared"`` (train and val draw from the same 15 photos) or
    ``"held_out"`` (val draws from :data:`HELD_OUT_VAL_PHOTOS`, train from the other 12).
    """
    if validation_photos not in VALIDATION_PHOTOS:
        raise ValueError(f"validation_photos={validation_photos!r}; valid: {', '.join(VALIDATION_PHOTOS)}")
    if split == "test":
        return TEST_PHOTOS
    if validation_photos == "shared":
        return TRAIN_VAL_PHOTOS
    if split == "val":
        return HELD_OUT_VAL_PHOTOS
    return tuple(p for p in TRAIN_VAL_PHOTOS if p not in HELD_OUT_VAL_PHOTOS)


def random_crop(photo: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop of ``photo``, turned by a random multiple of 90 degrees, maybe
    mirrored, resized to ``size``, with a random white balance (per-channel gains within
    ``exp(+-WHITE_BALANCE)``, as cameras differ). Turns and scales multiply the few source
    photos into more distinct views, which is what lets a detector generalise to unseen ones.

    The crop side is 1-3 times ``size`` (capped by the photo), so the resize is a mild
    down-scale. Crops flatter than ``MIN_CROP_STD`` are redrawn (up to ``MAX_CROP_TRIES``).
    Returns float32 ``size x size x 3`` in [0, 255].
    """
    height, width = photo.shape[:2]
    for _ in range(MAX_CROP_TRIES):
        side = min(int(round(size * rng.uniform(1.0, CROP_SCALE_MAX))), height, width)
        top = rng.integers(height - side + 1)
        left = rng.integers(width - side + 1)
        crop = photo[top : top + side, left : left + side]
        if crop.std() >= MIN_CROP_STD:
            break
    crop = np.rot90(crop, rng.integers(4))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    resized = Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.BICUBIC)
    gains = np.exp(rng.uniform(-WHITE_BALANCE, WHITE_BALANCE, size=(1, 1, 3)))
    return (np.asarray(resized, dtype=np.float32) * gains).astype(np.float32)
