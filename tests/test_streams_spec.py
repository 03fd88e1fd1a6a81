"""Stream descriptions: YAML loading, validation messages, class maps, shipped streams."""

from pathlib import Path

import pytest
import yaml
from test_streams_fixtures import SHIPPED

from cldf.streams import (
    DATA_ROOT_ENV, ClassMap, StreamSpecError, load_stream_spec, parse_stream_spec)


def write_yaml(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


def test_class_map_orders_real_source_then_generators_per_experience():
    spec = parse_stream_spec({
        "name": "s", "layout": "folders", "root": "/data",
        "experiences": ["a", {"name": "b", "generators": ["b1", "b2"], "real_source": "a"},
                        {"name": "c", "real_source": "other"}]})
    cmap = spec.class_map
    assert cmap.names == ("real:a", "fake:a", "fake:b1", "fake:b2", "real:other", "fake:c")
    assert cmap.real_classes == [0, 4]
    assert cmap.fake_classes == [1, 2, 3, 5]
    assert cmap.fake_class("b2") == 3 and cmap.real_class("other") == 4
    assert cmap.is_real(4) and not cmap.is_real(5)
    with pytest.raises(KeyError, match="fake:zzz"):
        cmap.fake_class("zzz")


def test_stream_level_real_source_is_shared_by_all_experiences():
    spec = parse_stream_spec({"name": "s", "layout": "folders", "root": "/d",
                              "real_source": "youtube", "experiences": ["x", "y"]})
    assert spec.class_map == ClassMap(("real:youtube", "fake:x", "fake:y"))


def test_unknown_keys_and_bad_values_name_the_key_and_allowed_values(tmp_path):
    base = {"layout": "cddb", "root": "/d", "experiences": ["g"]}
    with pytest.raises(StreamSpecError, match=r"'layout' is 'cdbb'; valid layouts: cddb, folders"):
        parse_stream_spec({**base, "name": "s", "layout": "cdbb"})
    with pytest.raises(StreamSpecError,
                       match=r"stream key 'epochs' is unknown; allowed keys:.*seed"):
        parse_stream_spec({**base, "name": "s", "epochs": 3})
    with pytest.raises(StreamSpecError,
                       match=r"'on_bad_file' is 'ignore'; valid values: skip, error"):
        parse_stream_spec({**base, "name": "s", "on_bad_file": "ignore"})
    with pytest.raises(StreamSpecError, match=r"experiences\[0\]: key 'manifest' is unknown"):
        parse_stream_spec({**base, "name": "s", "experiences": [{"name": "g", "manifest": "x"}]})
    with pytest.raises(StreamSpecError, match="already belongs to experience 'a'"):
        parse_stream_spec({**base, "name": "s", "experiences": ["a", {"name": "b",
                                                                      "generators": ["a"]}]})
    with pytest.raises(StreamSpecError, match="'experiences' must be a non-empty list"):
        parse_stream_spec({**base, "name": "s", "experiences": []})
    with pytest.raises(StreamSpecError, match="'allow_single_class' must be true or false"):
        parse_stream_spec({**base, "name": "s", "allow_single_class": "yes"})


def test_yaml_file_name_overrides_and_data_root(tmp_path, monkeypatch):
    path = write_yaml(tmp_path / "mine.yaml",
                      {"layout": "cddb", "root": "CDDB", "experiences": ["gaugan"]})
    spec = load_stream_spec(path, data_root=tmp_path, overrides={"allow_single_class": True})
    assert spec.name == "mine" and spec.root == tmp_path / "CDDB" and spec.allow_single_class
    monkeypatch.setenv(DATA_ROOT_ENV, "/env/root")
    assert load_stream_spec(path).root == Path("/env/root/CDDB")
    monkeypatch.delenv(DATA_ROOT_ENV)
    with pytest.raises(StreamSpecError, match=f"--data DIR.*{DATA_ROOT_ENV}"):
        load_stream_spec(path)


def test_yaml_is_read_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("layout: !!python/object/apply:os.system ['true']\nexperiences: [a]\n")
    with pytest.raises(yaml.YAMLError):
        load_stream_spec(path, data_root=tmp_path)


@pytest.mark.parametrize("name, layout, experiences", [
    ("cddb_hard", "cddb", ["gaugan", "biggan", "wild", "whichfaceisreal", "san"]),
    ("cddb_easy", "cddb", ["gaugan", "biggan", "cyclegan", "imle", "deepfake", "crn", "wild"]),
    ("cddb_long", "cddb", ["gaugan", "biggan", "cyclegan", "imle", "deepfake", "crn", "wild",
                           "glow", "stargan_gf", "stylegan", "whichfaceisreal", "san"]),
    ("ffpp_methods", "deepfakebench", ["deepfakes", "face2face", "faceshifter", "neuraltextures"]),
    ("df40_types", "deepfakebench", ["face_swapping", "face_reenactment",
                                     "entire_face_synthesis"]),
    ("embedded", "embedded", ["gan_upsample", "self_blend", "local_warp", "reconstruction",
                              "noise_splice"]),
])
def test_shipped_stream_descriptions_parse(name, layout, experiences):
    spec = load_stream_spec(SHIPPED / f"{name}.yaml", data_root="/data")
    assert (spec.name, spec.layout, spec.experience_names) == (name, layout, experiences)
    assert len(spec.class_map.fake_classes) == len(experiences)


def test_embedded_class_map_is_photos_then_families():
    spec = load_stream_spec(SHIPPED / "embedded.yaml")
    assert spec.root is None
    assert spec.class_map.names[0] == "real:photos"
    assert spec.class_map.names[1:] == tuple(f"fake:{f}" for f in spec.experience_names)
    assert spec.options["validation_photos"] == "shared"


def test_embedded_validation_photos_option_reaches_the_splits_and_bad_values_are_named():
    from cldf.streams import build_stream

    held = build_stream(load_stream_spec(SHIPPED / "embedded.yaml", overrides={
        "validation_photos": "held_out", "n_per_class": 1}))
    assert all(e.splits["val"].images.split.validation_photos == "held_out" for e in held.experiences)
    with pytest.raises(StreamSpecError, match="'validation_photos' must be one of shared, held_out, got 'nearby'"):
        build_stream(load_stream_spec(SHIPPED / "embedded.yaml", overrides={"validation_photos": "nearby"}))
