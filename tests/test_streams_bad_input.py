"""Bad input: unreadable files, single-class or empty splits, train/test leakage."""

import shutil
import warnings

import pytest
from test_streams_fixtures import (
    make_cddb, make_csv, make_folders, write_corrupt_png, write_image, write_manifest,
    write_truncated_jpeg)

from cldf.streams import (
    BadImageError, FileImages, ImageDataset, LeakageWarning, SkippedFilesWarning, StreamDataError,
    build_stream, parse_stream_spec)
from cldf.streams.bad_files import image_problem


def stream(root, layout, experiences, **keys):
    return build_stream(parse_stream_spec(
        {"name": "t", "layout": layout, "root": str(root), "experiences": experiences, **keys}))


@pytest.fixture
def cddb_with_bad_files(tmp_path):
    make_cddb(tmp_path, ["gaugan", "biggan"])
    corrupt = write_corrupt_png(tmp_path / "gaugan" / "train" / "1_fake" / "corrupt.png")
    truncated = write_truncated_jpeg(tmp_path / "biggan" / "val" / "0_real" / "truncated.jpg")
    return tmp_path, corrupt, truncated


def test_fixture_files_are_really_broken(cddb_with_bad_files):
    _, corrupt, truncated = cddb_with_bad_files
    assert image_problem(str(corrupt), "decode") is not None
    assert image_problem(str(truncated), "decode") is not None
    assert image_problem(str(truncated), "header") is None  # verify() misses truncation


def test_unreadable_files_are_skipped_counted_and_reported(cddb_with_bad_files):
    root, corrupt, truncated = cddb_with_bad_files
    with pytest.warns(SkippedFilesWarning) as record:
        loaded = stream(root, "cddb", ["gaugan", "biggan"])
    message = str(record[0].message)
    assert "2 of 26 image files are unreadable" in message  # 2 generators x 12 + 2 bad
    assert message.endswith("they were skipped")
    assert str(corrupt) in message and str(truncated) in message
    assert loaded.bad_files.count == 2 and loaded.bad_files.checked == 26
    gaugan, biggan = loaded.experiences
    kept = gaugan.splits["train"].paths + gaugan.splits["val"].paths  # val: held back from train
    assert len(kept) == 8 and str(corrupt) not in kept
    assert len(biggan.splits["test"]) == 4


def test_on_bad_file_error_makes_them_fatal(cddb_with_bad_files):
    root, corrupt, _ = cddb_with_bad_files
    with pytest.raises(BadImageError, match=f"(?s)2 of 26 .*{corrupt.name}.*on_bad_file: skip"):
        stream(root, "cddb", ["gaugan", "biggan"], on_bad_file="error")


def test_files_failing_during_training_are_replaced_by_the_same_class(tmp_path):
    good = [str(make_folders(tmp_path, ["g"], 2) / "g" / "real" / f"{i}.jpg") for i in range(2)]
    bad = str(write_truncated_jpeg(tmp_path / "bad.jpg"))
    fake = str(tmp_path / "g" / "fake" / "0.jpg")
    dataset = ImageDataset(FileImages([good[0], bad, fake, good[1]]), [0, 0, 1, 0])
    with pytest.warns(SkippedFilesWarning, match="bad.jpg"):
        image, target = dataset[1]
    assert target == 0 and image.size == (20, 20)
    assert dataset.failed == {1}
    assert [dataset[i][1] for i in range(4)] == [0, 0, 1, 0]  # no crash on later passes
    lonely = ImageDataset(FileImages([bad, fake]), [0, 1])
    with pytest.raises(RuntimeError, match="no readable image of class 0"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFilesWarning)
        lonely[0]


def test_header_check_lets_truncated_jpeg_through_to_runtime_replacement(cddb_with_bad_files):
    root, _, truncated = cddb_with_bad_files
    with pytest.warns(SkippedFilesWarning):
        loaded = stream(root, "cddb", ["gaugan", "biggan"], check_files="header")
    assert loaded.bad_files.count == 1  # the corrupt PNG fails verify(); the JPEG does not
    test = loaded.experiences[1].splits["test"]
    dataset = ImageDataset(test.images, loaded.experiences[1].targets["test"])
    index = test.paths.index(str(truncated))
    with pytest.warns(SkippedFilesWarning, match="truncated.jpg"):
        _, target = dataset[index]
    assert target == loaded.experiences[1].targets["test"][index]


def test_single_class_experience_is_an_error_unless_allowed(tmp_path):
    make_cddb(tmp_path, ["gaugan", "san"])
    shutil.rmtree(tmp_path / "san" / "val" / "1_fake")
    with pytest.raises(StreamDataError, match=r"'san' split 'test' has only real images "
                                              r"\(2 real, 0 fake\): AUC is undefined"):
        stream(tmp_path, "cddb", ["gaugan", "san"])
    loaded = stream(tmp_path, "cddb", ["gaugan", "san"], allow_single_class=True)
    assert sum(loaded.experiences[1].splits["test"].is_fake) == 0


def test_empty_split_is_an_error_unless_allowed(tmp_path):
    make_folders(tmp_path, ["tiny"], n_per_class=1)  # round(0.2) = 0 test images
    with pytest.raises(StreamDataError, match="'tiny'.* no images in its 'test' split"):
        stream(tmp_path, "folders", ["tiny"])
    loaded = stream(tmp_path, "folders", ["tiny"], allow_empty_splits=True)
    data, targets = loaded.experiences[0].split("test")
    assert len(data) == 0 and targets == []


def test_all_files_of_a_class_unreadable_gives_the_single_class_error(tmp_path):
    for i in range(5):
        write_image(tmp_path / "g" / "real" / f"{i}.png", 0)
        write_corrupt_png(tmp_path / "g" / "fake" / f"{i}.png")
    with pytest.raises(StreamDataError, match="has only real images"), \
            pytest.warns(SkippedFilesWarning, match="5 of 10"):
        stream(tmp_path, "folders", ["g"], split_fractions={"train": 0.6, "test": 0.4})


def test_a_file_in_train_and_test_raises_a_leakage_warning(tmp_path):
    make_csv(tmp_path, ["g"])
    rows = [{"path": f"images/g/{s}_{lab}_0.png", "label": lab, "generator": "g", "split": s}
            for s in ("train", "test") for lab in ("real", "fake")]
    rows.append({**rows[0], "split": "test"})  # train_real_0 also in test
    write_manifest(tmp_path / "leaky.csv", rows)
    with pytest.warns(LeakageWarning, match=r"1 file\(s\) appear in both.*train_real_0\.png"):
        stream(tmp_path, "csv", ["g"], manifest="leaky.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error", LeakageWarning)
        stream(tmp_path, "csv", ["g"])
