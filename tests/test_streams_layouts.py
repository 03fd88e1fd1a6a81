"""Every data layout on tiny fixture trees: counts, labels, class ids, layout errors."""

import json

import pytest
from test_streams_fixtures import (
    SHIPPED, SPLIT_SIZES, make_cddb, make_csv, make_deepfakebench, make_folders, write_image,
    write_manifest)

from cldf.streams import (
    ManifestPathError, StreamDataError, StreamSpecError, build_stream, load_stream,
    parse_stream_spec)


def stream(root, layout, experiences, **keys):
    return build_stream(parse_stream_spec(
        {"name": "t", "layout": layout, "root": str(root), "experiences": experiences, **keys}))


def counts(exp):
    """split -> (n_real, n_fake)."""
    return {s: (len(d) - sum(d.is_fake), sum(d.is_fake)) for s, d in exp.splits.items()}


def test_cddb_val_serves_as_test_and_objects_are_walked(tmp_path):
    make_cddb(tmp_path, ["gaugan"])
    make_cddb(tmp_path, ["cyclegan"], objects=["apple", "horse"])
    loaded = stream(tmp_path, "cddb", ["gaugan", "cyclegan"])
    gaugan, cyclegan = loaded.experiences
    # no test folder: val is the test split, and validation_holdout (10 %, at least one image
    # per class) of train is held back as the validation split that calibration is fitted on
    assert counts(gaugan) == {"train": (3, 3), "val": (1, 1), "test": (2, 2)}
    assert counts(cyclegan) == {"train": (7, 7), "val": (1, 1), "test": (4, 4)}
    assert loaded.has_validation
    assert not set(gaugan.splits["train"].paths) & set(gaugan.splits["val"].paths)
    assert counts(stream(tmp_path, "cddb", ["gaugan"], validation_holdout=0).experiences[0]) == \
        {"train": (4, 4), "test": (2, 2)}
    assert loaded.class_map.names == ("real:gaugan", "fake:gaugan", "real:cyclegan",
                                      "fake:cyclegan")
    assert cyclegan.class_ids == [2, 3]
    for data, targets in zip(cyclegan.splits.values(), cyclegan.targets.values()):
        assert targets == [3 if fake else 2 for fake in data.is_fake]
        assert all(("1_fake" in p) == bool(f) for p, f in zip(data.paths, data.is_fake))
        assert set(data.generators) == {"cyclegan"}


def test_cddb_with_test_folder_keeps_val_as_validation(tmp_path):
    make_cddb(tmp_path, ["san"], with_test=True)
    (exp,) = stream(tmp_path, "cddb", ["san"]).experiences
    assert counts(exp) == {"train": (4, 4), "val": (2, 2), "test": (3, 3)}


def test_missing_root_or_generator_names_the_path_and_the_layout(tmp_path):
    make_cddb(tmp_path, ["gaugan"])
    with pytest.raises(StreamDataError) as error:
        stream(tmp_path, "cddb", ["gaugan", "biggan"])
    assert str(tmp_path / "biggan") in str(error.value)
    assert "<root>/<generator>/train/[<object>/]0_real" in str(error.value)
    with pytest.raises(StreamDataError, match="CDDB data root .*nowhere.* does not exist"):
        stream(tmp_path / "nowhere", "cddb", ["gaugan"])
    with pytest.raises(StreamDataError, match=r"<root>/<generator>/real/\*"):
        stream(tmp_path, "folders", ["gaugan"])


def test_folders_seeded_split_is_stratified_disjoint_and_reproducible(tmp_path):
    make_folders(tmp_path, ["a", "b"], n_per_class=10)
    first = stream(tmp_path, "folders", ["a", "b"], seed=3)
    again = stream(tmp_path, "folders", ["a", "b"], seed=3)
    other = stream(tmp_path, "folders", ["a", "b"], seed=4)
    a = first.experiences[0]
    # 10 per class: test round(2.0) = 2, val round(1.0) = 1, train 7
    assert counts(a) == {"train": (7, 7), "val": (1, 1), "test": (2, 2)}
    paths = {s: d.paths for s, d in a.splits.items()}
    assert sum(map(len, paths.values())) == len(set().union(*map(set, paths.values()))) == 20
    assert paths == {s: d.paths for s, d in again.experiences[0].splits.items()}
    assert paths["test"] != other.experiences[0].splits["test"].paths
    assert first.has_validation
    custom = stream(tmp_path, "folders", ["a"], split_fractions={"train": 0.5, "test": 0.5})
    assert counts(custom.experiences[0]) == {"train": (4, 4), "val": (1, 1), "test": (5, 5)}  # val held back
    with pytest.raises(StreamSpecError, match="summing to 1"):
        stream(tmp_path, "folders", ["a"], split_fractions={"train": 0.5, "test": 0.6})
    with pytest.raises(StreamSpecError, match="unknown split"):
        stream(tmp_path, "folders", ["a"], split_fractions={"train": 0.5, "tst": 0.5})


def test_deepfakebench_json_with_compression_level_and_frame_sampling(tmp_path):
    make_deepfakebench(tmp_path, "FF-DF", "FF-DF", frames=4)
    make_deepfakebench(tmp_path, "FF-F2F", "FF-F2F", frames=4)
    loaded = stream(tmp_path, "deepfakebench",
                    [{"name": "deepfakes", "manifest": "FF-DF.json"},
                     {"name": "face2face", "dataset": "FF-F2F"}],
                    real_source="youtube", frames_per_video=2)
    deepfakes, face2face = loaded.experiences
    # train: 2 real + 2 fake videos x 2 frames; val and test: 1 + 1 video x 2 frames
    assert counts(deepfakes) == {"train": (4, 4), "val": (2, 2), "test": (2, 2)}
    assert loaded.class_map.names == ("real:youtube", "fake:deepfakes", "fake:face2face")
    assert face2face.class_ids == [0, 2]
    frames = [p.rsplit("/", 1)[1] for p in deepfakes.splits["test"].paths]
    assert frames == ["000.png", "002.png"] * 2  # evenly spread: frames 0 and 2 of 4
    real_train = [p for p, f in zip(deepfakes.splits["train"].paths,
                                    deepfakes.splits["train"].is_fake) if not f]
    assert real_train == [p for p, f in zip(face2face.splits["train"].paths,
                                            face2face.splits["train"].is_fake) if not f]
    all_frames = stream(tmp_path, "deepfakebench", [{"name": "x", "manifest": "FF-DF.json"}])
    assert counts(all_frames.experiences[0])["train"] == (8, 8)


def test_deepfakebench_label_rule_flat_splits_and_errors(tmp_path):
    make_deepfakebench(tmp_path, "simswap_ff", "simswap_Fake", real_label="simswap_Real",
                       compression=None)
    (exp,) = stream(tmp_path, "deepfakebench", ["simswap_ff"]).experiences
    assert counts(exp)["train"] == (8, 8)
    with pytest.raises(StreamDataError, match=r"no compression level 'c40'; available: \['c23'\]"):
        make_deepfakebench(tmp_path, "FF-NT", "FF-NT")
        stream(tmp_path, "deepfakebench", ["FF-NT"], compression="c40")
    with pytest.raises(StreamSpecError, match="map fake labels to them with 'fake_labels"):
        stream(tmp_path, "deepfakebench",
               [{"name": "FF-NT", "generators": ["nt1", "nt2"]}])
    split = stream(tmp_path, "deepfakebench", [{"name": "FF-NT", "generators": ["nt1", "nt2"],
                                                "fake_labels": {"FF-NT": "nt2"}}])
    assert split.experiences[0].class_ids == [0, 2]  # real:FF-NT, fake:nt1 (unused), fake:nt2


def test_deepfakebench_rejects_frame_paths_that_escape_the_root(tmp_path):
    root = tmp_path / "data"
    make_deepfakebench(root, "FF-DF", "FF-DF", frames=1)
    write_image(tmp_path / "outside.png", 1)
    manifest = root / "dataset_json" / "FF-DF.json"
    data = json.loads(manifest.read_text())
    data["FF-DF"]["FF-DF"]["test"]["c23"]["test_000"]["frames"] = ["../outside.png"]
    manifest.write_text(json.dumps(data))
    with pytest.raises(ManifestPathError, match=r"'\.\./outside\.png' resolves to .*outside the"):
        stream(root, "deepfakebench", ["FF-DF"])


def test_csv_manifest_counts_labels_and_generators(tmp_path):
    make_csv(tmp_path, ["gaugan", "biggan", "unused"])
    loaded = stream(tmp_path, "csv", ["gaugan", "biggan"])
    gaugan, biggan = loaded.experiences
    n = SPLIT_SIZES
    assert counts(biggan) == {s: (n[s], n[s]) for s in ("train", "val", "test")}
    assert biggan.class_ids == [2, 3]
    assert all(("_fake_" in p) == bool(f) for p, f in zip(biggan.splits["train"].paths,
                                                         biggan.splits["train"].is_fake))
    assert all(p.startswith(str(tmp_path / "images" / "gaugan")) for p in
               gaugan.splits["test"].paths)


def test_csv_manifest_errors_name_the_line_and_the_valid_values(tmp_path):
    make_csv(tmp_path, ["gaugan"])
    with pytest.raises(StreamDataError, match="no rows for generator 'biggan'.*gaugan"):
        stream(tmp_path, "csv", ["gaugan", "biggan"])
    write_image(tmp_path.parent / "secret.png", 0)
    rows = [{"path": "../secret.png", "label": "real", "generator": "g", "split": "train"}]
    write_manifest(tmp_path / "escape.csv", rows)
    with pytest.raises(ManifestPathError, match=r"escape\.csv line 2: path '\.\./secret\.png'"):
        stream(tmp_path, "csv", ["g"], manifest="escape.csv")
    write_manifest(tmp_path / "label.csv", [{**rows[0], "path": "a.png", "label": "maybe"}])
    with pytest.raises(StreamDataError, match="line 2: label 'maybe' is not one of 0, real, 1"):
        stream(tmp_path, "csv", ["g"], manifest="label.csv")
    (tmp_path / "cols.csv").write_text("file,label\na.png,0\n")
    with pytest.raises(StreamDataError, match=r"missing column\(s\) \['path', 'generator'"):
        stream(tmp_path, "csv", ["g"], manifest="cols.csv")


def test_cddb_split_without_class_folders_is_explained(tmp_path):
    (tmp_path / "gaugan" / "train" / "apple").mkdir(parents=True)
    (tmp_path / "gaugan" / "val").mkdir()
    with pytest.raises(StreamDataError, match=r"no 0_real or 1_fake folder in .*gaugan/train"):
        stream(tmp_path, "cddb", ["gaugan"])


def test_shipped_cddb_and_ffpp_streams_load_their_documented_layouts(tmp_path):
    hard = ["gaugan", "biggan", "wild", "whichfaceisreal", "san"]
    make_cddb(tmp_path / "CDDB", hard)
    loaded = load_stream(SHIPPED / "cddb_hard.yaml", data_root=tmp_path / "CDDB")
    assert loaded.experience_names == hard and len(loaded.class_map) == 10
    assert [counts(e)["test"] for e in loaded.experiences] == [(2, 2)] * 5

    ffpp = tmp_path / "ffpp"
    for dataset, label in (("FF-DF", "FF-DF"), ("FF-F2F", "FF-F2F"),
                           ("FaceShifter", "FF-FH"), ("FF-NT", "FF-NT")):
        make_deepfakebench(ffpp, dataset, label, frames=10)
    loaded = load_stream(SHIPPED / "ffpp_methods.yaml", data_root=ffpp)
    assert loaded.class_map.real_classes == [0]
    assert [e.class_ids for e in loaded.experiences] == [[0, 1], [0, 2], [0, 3], [0, 4]]
    assert counts(loaded.experiences[2])["train"] == (16, 16)  # 2 videos x 8 of 10 frames
