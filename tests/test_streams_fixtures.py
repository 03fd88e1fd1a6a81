"""Tiny on-disk fixture trees for every stream layout (helpers shared by tests/test_streams_*).

Real images are dark noise and fake images bright noise, so a small model can separate them.
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision import transforms as T

from cldf.resources import STREAMS_DIR

SHIPPED = STREAMS_DIR  # the stream YAMLs shipped in the package (the checkout's benchmarks/streams/)
TRANSFORM = T.Compose([T.Resize((32, 32)), T.ToTensor()])
SPLIT_SIZES = {"train": 4, "val": 2, "test": 3}  # images per class


def write_image(path: Path, fake: int, size: int = 20) -> Path:
    """A noise image, bright when ``fake``; PNG or JPEG by extension."""
    rng = np.random.default_rng(zlib.crc32(str(path).encode()))
    low, high = (150, 255) if fake else (0, 100)
    pixels = rng.integers(low, high, size=(size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_corrupt_png(path: Path) -> Path:
    """A PNG whose pixel data is garbage (valid signature, broken chunks)."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[40:60] = b"\xff" * 20
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def write_truncated_jpeg(path: Path) -> Path:
    """A JPEG cut in the middle of its scan: the header opens, decoding fails."""
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def make_cddb(root: Path, generators: list[str], objects: list[str] | None = None,
              with_test: bool = False) -> Path:
    """``<root>/<gen>/{train,val[,test]}/[<object>/]{0_real,1_fake}/i.png``."""
    splits = ["train", "val", "test"] if with_test else ["train", "val"]
    for gen in generators:
        for split in splits:
            for obj in objects or [""]:
                for cls, fake in (("0_real", 0), ("1_fake", 1)):
                    for i in range(SPLIT_SIZES[split]):
                        write_image(root / gen / split / obj / cls / f"{i}.png", fake)
    return root


def make_folders(root: Path, generators: list[str], n_per_class: int = 10) -> Path:
    """``<root>/<gen>/{real,fake}/i.jpg``."""
    for gen in generators:
        for cls, fake in (("real", 0), ("fake", 1)):
            for i in range(n_per_class):
                write_image(root / gen / cls / f"{i}.jpg", fake)
    return root


def make_deepfakebench(root: Path, dataset: str, fake_label: str, real_label: str = "FF-real",
                       frames: int = 4, compression: str | None = "c23") -> Path:
    """A DeepfakeBench JSON (``<root>/dataset_json/<dataset>.json``) and its frames.

    Videos per split: train 2 real + 2 fake, val 1 + 1, test 1 + 1. Real videos live under
    ``rgb/real`` and are shared by every dataset made in the same root.
    """
    videos_per_split = {"train": 2, "val": 1, "test": 1}
    groups: dict = {real_label: {}, fake_label: {}}
    for label, fake, folder in ((real_label, 0, "real"), (fake_label, 1, fake_label)):
        for split, n_videos in videos_per_split.items():
            videos = {}
            for v in range(n_videos):
                name = f"{split}_{v:03d}"
                paths = []
                for f in range(frames):
                    rel = f"rgb/{folder}/{name}/{f:03d}.png"
                    if not (root / rel).exists():
                        write_image(root / rel, fake)
                    paths.append(rel)
                videos[name] = {"label": label, "frames": paths}
            groups[label][split] = {compression: videos} if compression else videos
    (root / "dataset_json").mkdir(parents=True, exist_ok=True)
    (root / "dataset_json" / f"{dataset}.json").write_text(json.dumps({dataset: groups}))
    return root


def make_csv(root: Path, generators: list[str], name: str = "manifest.csv") -> Path:
    """``<root>/<name>`` with rows ``path,label,generator,split``; images under ``images/``."""
    rows = []
    for gen in generators:
        for split, n in SPLIT_SIZES.items():
            for label, fake in (("real", 0), ("fake", 1)):
                for i in range(n):
                    rel = f"images/{gen}/{split}_{label}_{i}.png"
                    write_image(root / rel, fake)
                    rows.append({"path": rel, "label": label, "generator": gen, "split": split})
    write_manifest(root / name, rows)
    return root


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "generator", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path
