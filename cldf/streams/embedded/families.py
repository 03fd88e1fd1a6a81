"""Procedural forgery families, each modelled on a real class of generator artifact.

Every family is a function ``(image, donor, rng) -> forged image`` on float32
``H x W x 3`` arrays in [0, 255]: ``image`` is the crop to forge, ``donor`` another crop of
the same size (used by splicing), ``rng`` draws the family's parameters, so each fake has its
own strength, region and kernel. The output is not clipped; the dataset's final pipeline
(shared with real images) clips and JPEG-encodes.
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

ForgeryFn = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def soft_ellipse_mask(
    size: tuple[int, int], rng: np.random.Generator, area: tuple[float, float], feather: float
) -> np.ndarray:
    """A random rotated ellipse covering a fraction ``area`` of the image, edge blurred by
    a Gaussian of ``feather`` pixels. Returns float32 H x W x 1 in [0, 1]."""
    height, width = size
    fraction = rng.uniform(*area)
    aspect = rng.uniform(0.6, 1.6)
    semi_a = np.sqrt(fraction * height * width / np.pi * aspect)
    semi_b = semi_a / aspect
    centre_y = rng.uniform(0.3, 0.7) * height
    centre_x = rng.uniform(0.3, 0.7) * width
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    dy, dx = yy - centre_y, xx - centre_x
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    mask = ((u / semi_a) ** 2 + (v / semi_b) ** 2 <= 1.0).astype(np.float32)
    if feather > 0:
        mask = ndimage.gaussian_filter(mask, feather)
    return mask[:, :, None]


def _resize(image: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """Resize each channel of a float image to (height, width) with PIL."""
    channels = [
        np.asarray(Image.fromarray(image[:, :, c]).resize(size[::-1], resample))
        for c in range(image.shape[2])
    ]
    return np.stack(channels, axis=2).astype(np.float32)


def match_global_statistics(forged: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Give ``forged`` the per-channel mean and standard deviation of ``source`` (a global
    affine change that keeps every local artifact), so global brightness and contrast say
    nothing about the label."""
    forged_mean, forged_std = forged.mean(axis=(0, 1)), forged.std(axis=(0, 1))
    source_mean, source_std = source.mean(axis=(0, 1)), source.std(axis=(0, 1))
    scale = source_std / np.maximum(forged_std, 1e-6)
    return ((forged - forged_mean) * scale + source_mean).astype(np.float32)


def signed_uniform(rng: np.random.Generator, low: float, high: float, size=None) -> np.ndarray:
    """Magnitudes uniform in [low, high] with a random sign: every fake has at least ``low``
    of the change, and the change is symmetric around none (no global drift on average)."""
    return rng.uniform(low, high, size) * rng.choice([-1.0, 1.0], size)


def gan_upsample(image: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """GAN generators (DCGAN, StyleGAN, ...): the image is synthesised at a lower resolution
    and brought up by stride-2 transposed convolutions, whose uneven kernel overlap gives each
    output phase a different gain: a checkerboard pattern and spectral peaks at the Nyquist
    frequency (Odena et al. 2016; Frank et al. 2020). Modelled as 2x (sometimes 4x) down-scale,
    zero-insertion, a bilinear kernel, and a random per-phase gain."""
    height, width = image.shape[:2]
    factor = 2 if rng.random() < 0.7 else 4
    low_h, low_w = -(-height // factor), -(-width // factor)
    low = _resize(image, (low_h, low_w), Image.BOX)
    stuffed = np.zeros((low_h * factor, low_w * factor, 3), np.float32)
    stuffed[::factor, ::factor] = low * factor * factor
    tent = 1.0 - np.abs(np.arange(1 - factor, factor)) / factor
    kernel = np.outer(tent, tent) / factor**2
    up = np.stack([ndimage.convolve(stuffed[:, :, c], kernel, mode="reflect") for c in range(3)], 2)
    strength = rng.uniform(0.06, 0.14)
    phase_gain = 1.0 + rng.uniform(-strength, strength, size=(factor, factor, 1))
    gain = np.tile(phase_gain, (low_h, low_w, 1)).astype(np.float32)
    return (up * gain)[:height, :width]


def self_blend(image: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Face swaps blend a face generated at a lower resolution into a target through a soft
    mask, leaving a blending boundary and a colour/sharpness/alignment mismatch inside it.
    Modelled as self-blended images (Shiohara & Yamasaki, CVPR 2022): a copy of the image
    re-rendered at 1/3-1/5 resolution, whose lost detail comes back as the generator's own
    noise-like texture (70-100% of the lost high-frequency amplitude, which also keeps the
    file size neutral), colour-shifted, shifted by a few pixels and slightly scaled, blended
    back through a feathered ellipse."""
    height, width = image.shape[:2]
    factor = rng.uniform(3.0, 5.0)
    low_size = (max(4, round(height / factor)), max(4, round(width / factor)))
    copy = _resize(_resize(image, low_size, Image.BILINEAR), (height, width), Image.BILINEAR)
    lost_detail = (image - copy).std()
    copy = copy + rng.normal(0.0, rng.uniform(0.7, 1.0) * lost_detail, size=copy.shape)
    copy = copy * np.exp(signed_uniform(rng, 0.08, 0.2, (1, 1, 3))) + signed_uniform(rng, 6, 15)
    scale = rng.uniform(0.94, 1.06)
    shift = signed_uniform(rng, 2.0, 5.0, 2)
    centre = np.array([height, width]) / 2
    offset = centre - scale * centre + shift
    copy = np.stack(
        [ndimage.affine_transform(copy[:, :, c], [scale, scale], offset, order=1, mode="reflect")
         for c in range(3)], 2)
    mask = soft_ellipse_mask((height, width), rng, (0.25, 0.5), rng.uniform(1, 3))
    mask *= rng.uniform(0.85, 1.0)
    return image * (1 - mask) + copy * mask


def local_warp(image: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Face reenactment (Face2Face, NeuralTextures, talking-head models) moves mouth, eyes and
    head locally and re-renders the moved parts: smooth geometric warps, re-sampled by
    bilinear interpolation (Popescu & Farid 2005), and the renderer's softer texture where
    the warp acts (the blurry mouth of reenacted faces). Modelled as 3-5 Gaussian
    displacement bumps of 5-10 px (translations or radial expansions/contractions) applied
    with bilinear sampling, then a Gaussian blur (sigma 1.8-2.8 px) weighted by the bumps."""
    height, width = image.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    disp_y = np.zeros((height, width), np.float32)
    disp_x = np.zeros((height, width), np.float32)
    rendered_weight = np.zeros((height, width), np.float32)
    for _ in range(rng.integers(3, 6)):
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        radius = rng.uniform(0.08, 0.16) * min(height, width)
        bump = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
        rendered_weight = np.maximum(rendered_weight, bump)
        amplitude = rng.uniform(5.0, 10.0)
        if rng.random() < 0.5:
            angle = rng.uniform(0, 2 * np.pi)
            disp_y += amplitude * np.sin(angle) * bump
            disp_x += amplitude * np.cos(angle) * bump
        else:
            sign = rng.choice([-1.0, 1.0])
            disp_y += sign * amplitude * bump * (yy - cy) / radius
            disp_x += sign * amplitude * bump * (xx - cx) / radius
    coords = [yy + disp_y, xx + disp_x]
    warped = np.stack(
        [ndimage.map_coordinates(image[:, :, c], coords, order=1, mode="reflect")
         for c in range(3)], 2)
    sigma = rng.uniform(1.8, 2.8)
    rendered = ndimage.gaussian_filter(warped, (sigma, sigma, 0))
    weight = rendered_weight[:, :, None]
    return warped * (1 - weight) + rendered * weight


def reconstruction(image: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Autoencoder and latent-diffusion decoders reconstruct images from a down-sampled latent:
    fine detail is lost and replaced by weaker, plausible but unrelated texture. Modelled as a
    4-8x down-scale and bicubic up-scale, plus the high frequencies of another crop (the
    donor) carrying 30-70% of the lost high-frequency amplitude: edges are soft, texture is
    foreign and fainter."""
    height, width = image.shape[:2]
    factor = rng.uniform(4.0, 8.0)
    low_size = (max(4, round(height / factor)), max(4, round(width / factor)))

    def low_pass(x: np.ndarray) -> np.ndarray:
        return _resize(_resize(x, low_size, Image.BOX), (height, width), Image.BICUBIC)

    smooth = low_pass(image)
    texture = donor - low_pass(donor)
    amplitude = rng.uniform(0.3, 0.7) * (image - smooth).std() / max(texture.std(), 1e-6)
    return smooth + amplitude * texture


def noise_splice(image: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Splicing pastes a region from another picture, whose camera noise print (sensor noise,
    denoising, sharpening) differs from the host's. Modelled as an ellipse of a donor crop
    (another part of the same scene, so only the noise print is foreign), with a sharp edge,
    given strong extra Gaussian noise or a denoising blur."""
    height, width = image.shape[:2]
    if rng.random() < 0.5:
        donor = donor + rng.normal(0.0, rng.uniform(8.0, 14.0), size=donor.shape)
    else:
        sigma = rng.uniform(1.5, 2.5)
        donor = ndimage.gaussian_filter(donor, (sigma, sigma, 0))
    mask = soft_ellipse_mask((height, width), rng, (0.15, 0.4), rng.uniform(0.3, 1.0))
    return image * (1 - mask) + donor * mask


def colour_mismatch(image: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Composited or relit regions (inserted objects, face swaps without colour transfer)
    carry a white balance and illumination that disagree with the rest of the scene.
    Modelled as per-channel gains, a gamma change and an offset inside a feathered ellipse,
    each at least a clearly visible amount and symmetric around no change."""
    height, width = image.shape[:2]
    gains = np.exp(signed_uniform(rng, 0.45, 0.8, (1, 1, 3)))
    gamma = np.exp(signed_uniform(rng, 0.3, 0.6))
    offset = signed_uniform(rng, 10, 30)
    changed = 255.0 * (np.clip(image, 0, 255) / 255.0) ** gamma * gains + offset
    mask = soft_ellipse_mask((height, width), rng, (0.3, 0.6), rng.uniform(0.3, 0.8))
    return image * (1 - mask) + changed * mask


def double_jpeg(image: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Edited or re-saved images carry an earlier JPEG compression under the final one; when
    the image was cropped in between, the old 8x8 block grid is misaligned (NA-DJPG, Bianchi &
    Piva 2012). Modelled as a JPEG at quality 5-20 on a grid shifted by 0-7 pixels (aligned in
    a quarter of the cases); the dataset's final JPEG is the second compression."""
    shift_y, shift_x = (0, 0) if rng.random() < 0.25 else rng.integers(0, 8, size=2)
    padded = np.pad(np.clip(image, 0, 255), ((shift_y, 0), (shift_x, 0), (0, 0)), mode="reflect")
    buffer = io.BytesIO()
    Image.fromarray(padded.round().astype(np.uint8)).save(
        buffer, format="JPEG", quality=int(rng.integers(5, 21)))
    decoded = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32)
    return decoded[shift_y:, shift_x:]


FINGERPRINT_SEED = 20190101  # the generator's fixed pattern: one per image size, the same for every image


@lru_cache(maxsize=8)
def fingerprint_pattern(height: int, width: int) -> np.ndarray:
    """The fixed residual of :func:`fingerprint` at one image size: white Gaussian noise
    band-passed between Gaussian blurs of 1.5 and 6 pixels (the scale of a generator's last
    upsampling layers), scaled to unit standard deviation."""
    noise = np.random.default_rng(FINGERPRINT_SEED).standard_normal((height, width, 3)).astype(np.float32)
    band = ndimage.gaussian_filter(noise, (1.5, 1.5, 0)) - ndimage.gaussian_filter(noise, (6.0, 6.0, 0))
    return band / band.std()


class Fingerprint:
    """GAN fingerprints: every image of one generator carries the same faint residual, left by
    its fixed weights (Marra et al. 2019; Yu et al. 2019). Modelled as one fixed band-pass
    pattern (:func:`fingerprint_pattern`) added at ``low``-``high`` grey levels (standard
    deviation, drawn per image): hard to see, and weak in a frozen network's pooled statistics."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def __call__(self, image: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        height, width = image.shape[:2]
        return image + rng.uniform(self.low, self.high) * fingerprint_pattern(height, width)


fingerprint = Fingerprint(3.0, 5.0)  # the stream's ``fingerprint`` family


FORGERY_FAMILIES: dict[str, ForgeryFn] = {
    "gan_upsample": gan_upsample,
    "self_blend": self_blend,
    "local_warp": local_warp,
    "reconstruction": reconstruction,
    "noise_splice": noise_splice,
    "colour_mismatch": colour_mismatch,
    "double_jpeg": double_jpeg,
    "fingerprint": fingerprint,
}
