"""CDDB: ``<root>/<generator>/{train,val,test}/[<object>/]{0_real,1_fake}/*``.

Without a ``test`` folder, ``val`` serves as the test split (and there is no validation split).
"""

from __future__ import annotations

from pathlib import Path

from cldf.streams.layouts.base import (
    Collected, Layout, SplitData, layout_error, list_images, require_dir)

CLASS_FOLDERS = {"0_real": 0, "1_fake": 1}
EXPECTED = """\
  <root>/<generator>/train/[<object>/]0_real/*.png|jpg
  <root>/<generator>/train/[<object>/]1_fake/*.png|jpg
  <root>/<generator>/val/...    (same inside)
  <root>/<generator>/test/...   (optional; val serves as test without it)"""


def collect(stream) -> Collected:
    root = require_dir(stream.root, CDDB, "CDDB data root")
    collected: Collected = []
    for exp in stream.experiences:
        samples: dict[str, list[tuple[str, int, str]]] = {}
        for generator in exp.generators:
            gen_dir = require_dir(root / generator, CDDB, f"folder of generator {generator!r}")
            for split, folder in _split_folders(gen_dir).items():
                samples.setdefault(split, []).extend(
                    (path, is_fake, generator)
                    for class_dir, is_fake in _class_folders(folder)
                    for path in list_images(class_dir))
        collected.append({split: SplitData.from_files(s) for split, s in samples.items()})
    return collected


def _split_folders(gen_dir: Path) -> dict[str, Path]:
    train = require_dir(gen_dir / "train", CDDB, "training folder")
    if (gen_dir / "test").is_dir():
        folders = {"train": train, "test": gen_dir / "test"}
        if (gen_dir / "val").is_dir():
            folders["val"] = gen_dir / "val"
        return folders
    return {"train": train, "test": require_dir(gen_dir / "val", CDDB, "test (or val) folder")}


def _class_folders(split_dir: Path) -> list[tuple[Path, int]]:
    """``0_real``/``1_fake`` directly in ``split_dir``, or inside each object folder."""
    direct = [(split_dir / n, c) for n, c in CLASS_FOLDERS.items() if (split_dir / n).is_dir()]
    if direct:
        return direct
    nested = [(obj / n, c) for obj in sorted(split_dir.iterdir()) if obj.is_dir()
              for n, c in CLASS_FOLDERS.items() if (obj / n).is_dir()]
    if not nested:
        raise layout_error(CDDB, f"no 0_real or 1_fake folder in {str(split_dir)!r} "
                                 f"(directly or in object sub-folders).")
    return nested


CDDB = Layout(name="cddb", expected=EXPECTED, collect=collect, stream_options={},
              experience_options={}, generator_folders=True)
