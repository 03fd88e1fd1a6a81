"""The ``hf`` layout on real photos: Arrow datasets agree with the same images as files.

The images are those :mod:`photo_trees` writes for the CDDB tree (crops of scikit-image's
photos and their procedural forgeries), stored once as PNG files and once as Arrow rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")

from cldf.cli import main  # noqa: E402
from cldf.streams import (  # noqa: E402
    ImageDataset, MissingExtraError, StreamDataError, StreamSpecError, build_stream, parse_stream_spec,
    stream_from_root)
from cldf.streams.layouts.hf_images import StreamedImages  # noqa: E402

from photo_trees import images, make_cddb  # noqa: E402

GENERATORS = ["gaugan", "biggan", "cyclegan"]
HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}
# label ids as imagefolder assigns them (folder names sorted): 0 is fake, so ids must be read by name
FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["fake", "real"]),
                              "generator": datasets.Value("string")})


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _rows(split: str) -> list[dict]:
    """The rows of one split: every generator's images of the CDDB tree, as PNG bytes."""
    return [{"image": {"bytes": _png(image), "path": None}, "label": "fake" if fake else "real", "generator": g}
            for index, g in enumerate(GENERATORS) for image, fake in images(index, split)]


def save_dict(root: Path, splits=("train", "val", "test")) -> Path:
    """A ``DatasetDict`` (train/validation/test) with a ``ClassLabel`` label column."""
    parts = {HF_SPLITS[s]: datasets.Dataset.from_list(
        [{**r, "label": FEATURES["label"].str2int(r["label"])} for r in _rows(s)], features=FEATURES)
        for s in splits}
    datasets.DatasetDict(parts).save_to_disk(str(root))
    return root


def save_single(root: Path) -> Path:
    """One ``Dataset`` with string labels and a ``split`` column."""
    rows = [{**r, "split": HF_SPLITS[s]} for s in HF_SPLITS for r in _rows(s)]
    datasets.Dataset.from_list(rows, features=datasets.Features(
        {"image": datasets.Image(), "label": datasets.Value("string"), "generator": datasets.Value("string"),
         "split": datasets.Value("string")})).save_to_disk(str(root))
    return root


def write_imagefolder(root: Path) -> Path:
    """``<split>/<generator>_<k>.png`` with a ``metadata.csv`` per split."""
    for split, name in HF_SPLITS.items():
        folder = root / name
        folder.mkdir(parents=True)
        with (folder / "metadata.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file_name", "label", "generator"])
            for index, g in enumerate(GENERATORS):
                for k, (image, fake) in enumerate(images(index, split)):
                    image.save(folder / f"{g}_{k}.png")
                    writer.writerow([f"{g}_{k}.png", "fake" if fake else "real", g])
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hf")
    return {"cddb": make_cddb(base / "cddb", GENERATORS, splits=("train", "val", "test")),
            "dict": save_dict(base / "dict"), "single": save_single(base / "single"),
            "imagefolder": write_imagefolder(base / "imagefolder"), "cache": base / "cache"}


def hf_stream(root: Path, **options):
    return build_stream(parse_stream_spec(
        {"name": "hf", "layout": "hf", "root": str(root), "experiences": GENERATORS, **options}, source="test"))


def cddb_stream(root: Path):
    return build_stream(parse_stream_spec(
        {"name": "hf", "layout": "cddb", "root": str(root), "experiences": GENERATORS}, source="test"))


def contents(stream) -> list[dict[str, list[tuple[int, str]]]]:
    """Per experience and split: sorted (class id, pixel hash) pairs, images read through
    :class:`ImageDataset` with a transform, as training reads them."""
    def pixels(image: Image.Image) -> str:
        return hashlib.sha1(np.asarray(image).tobytes()).hexdigest()

    return [{name: sorted((t, h) for h, t in ImageDataset(data.images, exp.targets[name], transform=pixels))
             for name, data in exp.splits.items()} for exp in stream.experiences]


@pytest.mark.parametrize("source", ["dict", "single", "imagefolder"])
def test_arrow_stream_matches_the_folder_stream(source, data):
    folder = cddb_stream(data["cddb"])
    arrow = hf_stream(data[source], cache_dir=str(data["cache"]))
    assert arrow.class_map == folder.class_map
    counts = [[{n: len(d) for n, d in e.splits.items()} for e in s.experiences] for s in (arrow, folder)]
    assert counts[0] == counts[1] == [{"train": 12, "val": 6, "test": 8}] * 3
    assert contents(arrow) == contents(folder)


def test_missing_validation_split_is_carved_from_train(tmp_path):
    stream = hf_stream(save_dict(tmp_path / "data", splits=("train", "test")), validation_holdout=0.25)
    for exp in stream.experiences:
        train, val = exp.splits["train"], exp.splits["val"]
        assert (len(train), len(val), sum(val.is_fake)) == (8, 4, 2)
        assert not set(train.images.rows) & set(val.images.rows)


def test_streaming_gives_the_same_images_and_labels_one_split_in_memory(data):
    indexed = hf_stream(data["dict"])
    streamed = hf_stream(data["dict"], streaming=True)
    assert streamed.class_map == indexed.class_map
    assert [e.targets for e in streamed.experiences] == [e.targets for e in indexed.experiences]
    sources = [d.images for e in streamed.experiences for d in e.splits.values()]
    assert all(isinstance(s, StreamedImages) and s._images is None for s in sources)  # counted, no image read
    for exp_streamed, exp_indexed in zip(streamed.experiences, indexed.experiences):
        for name, split in exp_streamed.splits.items():
            other = exp_indexed.splits[name]
            assert split.generators == other.generators and split.is_fake == other.is_fake
            for i in range(len(split)):
                assert np.array_equal(np.asarray(split.images.load(i)), np.asarray(other.images.load(i)))
            assert [s for s in sources if s._images is not None] == [split.images]


def test_cli_runs_on_a_saved_dataset_streamed_or_not(data, tmp_path):
    auc = {}
    for streaming in ("false", "true"):
        out, run = io.StringIO(), tmp_path / f"streaming_{streaming}"
        with redirect_stdout(out):
            code = main([str(a) for a in (
                "run", "naive", "--data", data["dict"], "--layout", "hf", "--order", "gaugan,biggan",
                "--stream-set", f"streaming={streaming}", "--set", "detector.image_size=32",
                "--set", "training.epochs=1", "--set", "training.batch_size=6", "--no-progress", "--out", run)])
        assert code == 0, out.getvalue()
        results = json.loads((run / "results.json").read_text())
        assert results["stream"]["experiences"] == ["gaugan", "biggan"]
        auc[streaming] = np.array(results["metrics"]["auc"], dtype=float)
    assert np.isfinite(auc["false"]).all()
    assert np.array_equal(auc["true"], auc["false"])  # the same images in the same order


def test_generators_default_to_those_of_the_dataset(data):
    assert stream_from_root(data["dict"], "hf").experience_names == sorted(GENERATORS)


def test_missing_column_lists_the_columns(tmp_path, data):
    root = tmp_path / "renamed"
    datasets.load_from_disk(str(data["dict"])).rename_column("generator", "model").save_to_disk(str(root))
    with pytest.raises(StreamDataError, match=r"no generator column 'generator'; the dataset's columns: "
                                              r"\['image', 'label', 'model'\]\. Name it with columns: \{generator"):
        hf_stream(root)
    assert hf_stream(root, columns={"generator": "model"}).class_map == hf_stream(data["dict"]).class_map


@pytest.mark.parametrize("options, error, message", [
    ({"experiences": ["gaugan", "midjourney"]}, StreamDataError,
     r"no rows for generator 'midjourney'.*generators in the dataset: biggan, cyclegan, gaugan"),
    ({"splits": {"test": "holdout"}}, StreamDataError,
     r"no 'test' split \(tried \['holdout'\]\); the dataset's splits: \['train', 'validation', 'test'\]"),
    ({"columns": {"picture": "img"}}, StreamSpecError, r"'columns' maps image, label, generator, split"),
    ({"format": "parquet"}, StreamSpecError, r"'format' is 'parquet'; valid: auto, arrow, imagefolder"),
])
def test_bad_options_name_what_is_valid(options, error, message, data):
    with pytest.raises(error, match=message):
        hf_stream(data["dict"], **options)


def test_bad_label_value_is_named(tmp_path):
    rows = [{"image": r["image"], "label": "maybe" if i == 3 else r["label"], "generator": r["generator"]}
            for i, r in enumerate(_rows("train"))]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows, features=datasets.Features(
        {"image": datasets.Image(), "label": datasets.Value("string"), "generator": datasets.Value("string")}))
    }).save_to_disk(str(tmp_path / "data"))
    with pytest.raises(StreamDataError, match=r"split 'train' row 3: label 'maybe' is not one of 0, real"):
        hf_stream(tmp_path / "data")


def test_hub_name_needs_no_data_root_and_is_the_only_network_use(data, monkeypatch):
    monkeypatch.delenv("CLDF_DATA_ROOT", raising=False)
    calls = []

    def load_dataset(name, config=None, **kwargs):
        calls.append((name, config, kwargs["streaming"]))
        return datasets.load_from_disk(str(data["dict"]))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    spec = parse_stream_spec({"name": "hub", "layout": "hf", "hub": "someone/forgeries", "experiences": GENERATORS},
                             source="test")
    assert spec.root is None
    assert build_stream(spec).class_map == hf_stream(data["dict"]).class_map
    assert calls == [("someone/forgeries", None, False)]
    with pytest.raises(StreamSpecError, match="no data root given"):  # without hub, the data root is needed
        parse_stream_spec({"name": "x", "layout": "hf", "experiences": GENERATORS}, source="test")


def test_without_datasets_the_error_names_the_extra(data, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'cldf\[hf\]'"):
        hf_stream(data["dict"])
