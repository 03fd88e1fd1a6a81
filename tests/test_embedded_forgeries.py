"""Tests of the embedded offline stream: photos, forgery families, lazy datasets."""

import numpy as np
import pytest
from PIL import Image

from cldf.streams.embedded import FORGERY_FAMILIES, EmbeddedSplit, embedded_split
from cldf.streams.embedded.families import match_global_statistics
from cldf.streams.embedded.photos import (
    HELD_OUT_VAL_PHOTOS, TEST_PHOTOS, TRAIN_VAL_PHOTOS, load_photo, photos_for_split, random_crop)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def crops(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    photo = load_photo(TRAIN_VAL_PHOTOS[seed % len(TRAIN_VAL_PHOTOS)])
    return random_crop(photo, rng, size), random_crop(photo, rng, size), rng


def windowed_luminance(image: np.ndarray) -> np.ndarray:
    """Grey image times a Hann window, so the FFT sees no wrap-around edges."""
    grey = image.mean(axis=2)
    window = np.outer(np.hanning(grey.shape[0]), np.hanning(grey.shape[1]))
    return (grey - grey.mean()) * window


def luminance_spectrum(image: np.ndarray) -> np.ndarray:
    return np.abs(np.fft.fft2(windowed_luminance(image))) ** 2


def test_photos_load_offline_as_rgb_and_test_photos_are_disjoint():
    assert not set(photos_for_split("test")) & set(photos_for_split("train"))
    assert photos_for_split("val") == photos_for_split("train")
    for name in TRAIN_VAL_PHOTOS + TEST_PHOTOS:
        photo = load_photo(name)
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3, name
        assert min(photo.shape[:2]) >= 112, name
    with pytest.raises(ValueError, match="astronaut"):
        load_photo("no_such_photo")


def test_held_out_validation_photos_are_disjoint_from_train_and_test():
    train, val, test = (photos_for_split(s, "held_out") for s in ("train", "val", "test"))
    assert val == HELD_OUT_VAL_PHOTOS and test == TEST_PHOTOS
    assert not set(train) & set(val) and not set(val) & set(test) and not set(train) & set(test)
    assert set(train) | set(val) == set(TRAIN_VAL_PHOTOS) and len(train) == len(TRAIN_VAL_PHOTOS) - len(val)
    held = embedded_split("self_blend", "val", 2, 48, 5, validation_photos="held_out")
    assert held._photos == HELD_OUT_VAL_PHOTOS
    with pytest.raises(ValueError, match="shared, held_out"):
        photos_for_split("val", "nearby")


def test_same_seed_same_pixels_other_seed_other_pixels():
    first = embedded_split("self_blend", "train", 3, 48, seed=5)
    again = embedded_split("self_blend", "train", 3, 48, seed=5)
    other = embedded_split("self_blend", "train", 3, 48, seed=6)
    for i in range(len(first)):
        assert np.array_equal(pixels(first[i][0]), pixels(again[i][0]))
        assert np.array_equal(pixels(first[i][0]), pixels(first[i][0]))  # lazy, repeatable
        assert not np.array_equal(pixels(first[i][0]), pixels(other[i][0]))
    train, val = embedded_split("self_blend", "train", 2, 48, 5), embedded_split("self_blend", "val", 2, 48, 5)
    assert not np.array_equal(pixels(train[0][0]), pixels(val[0][0]))


def test_labels_sizes_and_shared_final_pipeline():
    for size in (40, 96):
        ds = embedded_split("double_jpeg", "test", 4, size, seed=0)
        assert isinstance(ds, EmbeddedSplit) and ds.family == "double_jpeg"
        assert len(ds) == 8 and ds.labels == [0, 1] * 4
        for i in range(len(ds)):
            image, label = ds[i]
            assert label == ds.labels[i]
            assert image.mode == "RGB" and image.size == (size, size)
            assert image.format == "JPEG"  # real and fake both end as a JPEG
    for family in FORGERY_FAMILIES:
        image, label = embedded_split(family, "val", 1, 33, seed=1)[1]
        assert label == 1 and image.size == (33, 33)


def test_every_family_changes_its_source_crop():
    for family, forge in FORGERY_FAMILIES.items():
        for seed in range(3):
            image, donor, rng = crops(seed)
            forged = forge(image.copy(), donor, rng)
            assert forged.shape == image.shape, family
            assert np.abs(forged - image).mean() > 0.5, family


def test_families_draw_their_parameters_from_the_generator():
    for family, forge in FORGERY_FAMILIES.items():
        image, donor, _ = crops(0)
        one = forge(image, donor, np.random.default_rng(1))
        two = forge(image, donor, np.random.default_rng(2))
        assert not np.allclose(one, two), family


def test_gan_upsample_adds_energy_at_the_checkerboard_frequency():
    for seed in range(4):
        image, donor, rng = crops(seed)
        forged = FORGERY_FAMILIES["gan_upsample"](image, donor, rng)
        half = image.shape[0] // 2

        def nyquist_share(x: np.ndarray) -> float:
            power = luminance_spectrum(x)
            return (power[half, 0] + power[0, half] + power[half, half]) / power.sum()

        assert nyquist_share(forged) > 5 * nyquist_share(image)


def test_reconstruction_replaces_the_source_high_frequencies():
    energy_ratios = []
    for seed in range(8):
        image, donor, rng = crops(seed)
        forged = FORGERY_FAMILIES["reconstruction"](image, donor, rng)
        freq = np.abs(np.fft.fftfreq(image.shape[0]))
        high = (freq[:, None] > 0.25) | (freq[None, :] > 0.25)
        energy_ratios.append(luminance_spectrum(forged)[high].sum() / luminance_spectrum(image)[high].sum())
        source_detail = np.fft.ifft2(np.fft.fft2(windowed_luminance(image)) * high).real
        forged_detail = np.fft.ifft2(np.fft.fft2(windowed_luminance(forged)) * high).real
        # the fine detail left is not the source's own (the donor's texture stands in)
        assert abs(np.corrcoef(source_detail.ravel(), forged_detail.ravel())[0, 1]) < 0.3
    # and it is fainter (30-70% of the lost amplitude) but not gone: a soft image, not a blur
    assert 0.05 < np.median(energy_ratios) < 0.8


def test_match_global_statistics_keeps_local_changes():
    image, donor, rng = crops(3)
    forged = FORGERY_FAMILIES["colour_mismatch"](image, donor, rng) * 1.3 + 20
    matched = match_global_statistics(forged, image)
    np.testing.assert_allclose(matched.mean(axis=(0, 1)), image.mean(axis=(0, 1)), atol=1e-2)
    np.testing.assert_allclose(matched.std(axis=(0, 1)), image.std(axis=(0, 1)), rtol=1e-4)
    # a global affine change per channel: the forgery's local structure is untouched
    for c in range(3):
        assert np.corrcoef(matched[:, :, c].ravel(), forged[:, :, c].ravel())[0, 1] > 0.9999


def test_real_and_fake_of_a_pair_share_their_source_crop():
    ds = embedded_split("colour_mismatch", "train", 4, 64, seed=0)
    same, other = [], []
    for k in range(4):
        real, fake, next_real = (pixels(ds[i][0]).astype(float) for i in (2 * k, 2 * k + 1, (2 * k + 2) % 8))
        same.append(np.corrcoef(real.mean(axis=2).ravel(), fake.mean(axis=2).ravel())[0, 1])
        other.append(np.corrcoef(fake.mean(axis=2).ravel(), next_real.mean(axis=2).ravel())[0, 1])
    assert min(same) > 0.5 and max(np.abs(other)) < min(same)


def high_pass(image: np.ndarray) -> np.ndarray:
    grey = image.mean(axis=2)
    neighbours = np.roll(grey, 1, 0) + np.roll(grey, -1, 0) + np.roll(grey, 1, 1) + np.roll(grey, -1, 1)
    return grey - neighbours / 4


def test_noise_splice_pastes_the_donor_with_another_noise_level():
    changes = []
    for seed in range(6):
        image, donor, rng = crops(seed)
        forged = FORGERY_FAMILIES["noise_splice"](image, donor, rng)
        inside = np.abs(forged - donor).mean(axis=2) < np.abs(forged - image).mean(axis=2)
        inside[:2], inside[-2:], inside[:, :2], inside[:, -2:] = False, False, False, False
        assert 0.05 < inside.mean() < 0.6  # a region was pasted, not the whole image
        changes.append(abs(np.log(high_pass(forged)[inside].std() / high_pass(donor)[inside].std())))
    assert np.median(changes) > 0.2


def test_bad_arguments_name_the_valid_values():
    with pytest.raises(ValueError, match="gan_upsample.*double_jpeg"):
        embedded_split("stylegan9", "train", 2)
    with pytest.raises(ValueError, match="train, val, test"):
        embedded_split("self_blend", "holdout", 2)
    with pytest.raises(ValueError, match="n_per_class"):
        embedded_split("self_blend", "train", 0)
    with pytest.raises(ValueError, match="image_size"):
        embedded_split("self_blend", "train", 2, image_size=8)
    with pytest.raises(ValueError, match="seed"):
        embedded_split("self_blend", "train", 2, seed=-1)
    with pytest.raises(IndexError, match="out of range"):
        embedded_split("self_blend", "train", 2)[4]


def test_fingerprint_adds_one_fixed_faint_pattern_to_every_fake():
    residuals = []
    for seed in (0, 1, 2):
        image, donor, rng = crops(seed)
        residuals.append((FORGERY_FAMILIES["fingerprint"](image, donor, rng) - image).ravel())
    for residual in residuals:
        assert 3.0 <= residual.std() <= 5.0  # grey levels
        assert abs(residual.mean()) < 0.5
    # the same pattern in every image (only its strength changes), unrelated to the content
    assert np.corrcoef(residuals)[np.triu_indices(3, 1)].min() > 0.999
