"""On-disk data trees of real photos for end-to-end runs, one writer per stream layout.

Content is real: crops of scikit-image's shipped photos, each real crop paired with a forgery
of it by one of the embedded stream's procedural families (generator ``k`` of a tree uses
family ``k`` modulo their number). Every generator gets its own real images, as CDDB's
per-generator ``0_real`` folders do.
"""

from __future__ import annotations

import csv
import json
from functools import lru_cache
from pathlib import Path

from PIL import Image

from cldf.streams.embedded import FORGERY_FAMILIES, embedded_split

SIZE = 32  # pixels: the smallest the embedded families draw
PER_CLASS = {"train": 6, "val": 3, "test": 4}
FAMILIES = tuple(FORGERY_FAMILIES)


@lru_cache(maxsize=None)
def _pairs(index: int, split: str, n: int) -> tuple[tuple[Image.Image, int], ...]:
    dataset = embedded_split(FAMILIES[index % len(FAMILIES)], split, n, image_size=SIZE, seed=index)
    return tuple(dataset[i] for i in range(len(dataset)))


def images(index: int, split: str, n: int | None = None) -> list[tuple[Image.Image, int]]:
    """``n`` real and ``n`` fake images (``(image, is_fake)``) of generator ``index``."""
    return list(_pairs(index, split, n or PER_CLASS[split]))


def make_cddb(root: Path, generators: list[str], *, objects: dict[str, list[str]] | None = None,
              splits: tuple[str, ...] = ("train", "val")) -> Path:
    """``<root>/<gen>/<split>/[<object>/]{0_real,1_fake}/<i>.png``; ``objects`` names the
    object sub-folders of some generators (CDDB's cyclegan, glow, ...)."""
    for index, generator in enumerate(generators):
        for split in splits:
            subfolders = (objects or {}).get(generator, [""])
            for k, (image, fake) in enumerate(images(index, split)):
                folder = root / generator / split / subfolders[k % len(subfolders)]
                _save(image, folder / ("1_fake" if fake else "0_real") / f"{k}.png")
    return root


def make_folders(root: Path, generators: list[str]) -> Path:
    """``<root>/<gen>/{real,fake}/<i>.png`` (the layout splits them itself)."""
    for index, generator in enumerate(generators):
        for k, (image, fake) in enumerate(images(index, "train", 10)):
            _save(image, root / generator / ("fake" if fake else "real") / f"{k}.png")
    return root


def make_csv(root: Path, generators: list[str], name: str = "manifest.csv") -> Path:
    """``<root>/<name>`` with ``path,label,generator,split`` rows; images under ``images/``."""
    rows = []
    for index, generator in enumerate(generators):
        for split in PER_CLASS:
            for k, (image, fake) in enumerate(images(index, split)):
                rel = f"images/{generator}/{split}_{k}.png"
                _save(image, root / rel)
                rows.append({"path": rel, "label": "fake" if fake else "real",
                             "generator": generator, "split": split})
    with (root / name).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "generator", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def make_deepfakebench(root: Path, manifests: dict[str, tuple[str | None, list[str]]], *,
                       frames: int = 2, compression: str | None = "c23",
                       real_label: str = "FF-real", json_dir: str = "dataset_json") -> Path:
    """DeepfakeBench dataset JSONs: ``manifests`` maps a file name under ``json_dir`` to
    ``(dataset key or None for the file stem, fake labels)``. Real videos are shared by every
    file, as FF++'s original videos are; each fake label gets its own videos."""
    (root / json_dir).mkdir(parents=True, exist_ok=True)
    for index, (file_name, (dataset, fake_labels)) in enumerate(manifests.items()):
        groups: dict = {}
        for label_index, label in enumerate([real_label, *fake_labels]):
            fake = label_index > 0
            group = groups.setdefault(label, {})
            for split in PER_CLASS:
                pool = [im for im, is_fake in images(index, split) if is_fake == fake]
                videos = {}
                for v in range(len(pool) // frames):
                    name = f"{split}_{label_index}_{v:02d}"
                    paths = []
                    for f in range(frames):
                        rel = f"frames/{label}/{name}/{f}.png"
                        if not (root / rel).exists():
                            _save(pool[v * frames + f], root / rel)
                        paths.append(rel)
                    videos[name] = {"label": label, "frames": paths}
                group[split] = {compression: videos} if compression else videos
        key = dataset or Path(file_name).stem
        (root / json_dir / file_name).write_text(json.dumps({key: groups}))
    return root


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
