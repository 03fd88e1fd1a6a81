"""DeepfakeBench / DF40 dataset JSON files (``preprocessing/dataset_json/<dataset>.json``).

Format, as DeepfakeBench's ``rearrange.py`` writes it and its ``abstract_dataset.py`` reads it::

    {dataset: {label_group: {split: {[compression: {]video: {"label": str,
                                                              "frames": [path, ...]}}}}}

FaceForensics++-derived files have the compression level (``c23``, ``c40``, ``raw``) between the
split and the videos; the others do not. A label is real when it ends with ``real`` (any case,
as in ``FF-real`` or ``simswap_Real``) and fake otherwise, matching DeepfakeBench's
``label_dict``. Relative frame paths are anchored at ``frames_root``; every path must stay
inside the data root.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cldf.streams.errors import StreamDataError, StreamSpecError
from cldf.streams.layouts.base import (
    SPLITS, Collected, Layout, SplitData, option, path_inside_root, require_dir, require_file)

EXPECTED = """\
  <root>/<json_dir>/<manifest>.json  (DeepfakeBench dataset_json):
    {"<dataset>": {"<label group>": {"train"|"val"|"test": {["c23": {]"<video>":
        {"label": "FF-real"|"FF-DF"|..., "frames": ["<path>", ...]}}}}}
  frame paths relative to <root>/<frames_root> (or absolute, inside <root>)"""


def collect(stream) -> Collected:
    root = require_dir(stream.root, DEEPFAKEBENCH, "data root")
    where = "deepfakebench layout"
    json_dir = root / option(stream.options, "json_dir", str, where)
    frames_root = root / option(stream.options, "frames_root", str, where)
    compression = option(stream.options, "compression", str, where)
    per_video = option(stream.options, "frames_per_video", (int, type(None)), where)
    if per_video is not None and per_video < 1:
        raise StreamSpecError(f"{where}: 'frames_per_video' must be >= 1 or null, got {per_video}")
    collected: Collected = []
    for exp in stream.experiences:
        manifest_name = exp.options["manifest"] or f"{exp.options['dataset'] or exp.name}.json"
        manifest = require_file(json_dir / manifest_name, DEEPFAKEBENCH, "dataset JSON")
        groups = _dataset_groups(manifest, exp.options["dataset"])
        label_to_generator = _fake_label_map(exp)
        samples: dict[str, list[tuple[str, int, str]]] = {}
        for group_name, group in groups.items():
            for split in SPLITS:
                videos = _videos(group.get(split, {}), compression,
                                 f"{manifest}: {group_name}/{split}")
                for video_name, info in videos.items():
                    spot = f"{manifest}: {group_name}/{split}/{video_name}"
                    label, frames = _video_fields(info, spot)
                    is_fake = int(not label.lower().endswith("real"))
                    generator = label_to_generator(label) if is_fake else exp.generators[0]
                    samples.setdefault(split, []).extend(
                        (path_inside_root(root, frames_root, frame, spot), is_fake, generator)
                        for frame in _pick_frames(frames, per_video))
        collected.append({s: SplitData.from_files(v) for s, v in samples.items()})
    return collected


def _dataset_groups(manifest: Path, dataset: str | None) -> dict[str, Any]:
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise StreamDataError(f"{manifest}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or not data:
        raise StreamDataError(f"{manifest}: expected {{dataset: {{label group: ...}}}}")
    if dataset is None:
        if len(data) != 1:
            raise StreamSpecError(f"{manifest} holds datasets {sorted(data)}; name one with the "
                                  f"experience key 'dataset'")
        dataset = next(iter(data))
    if dataset not in data:
        raise StreamDataError(f"{manifest}: no dataset {dataset!r}; it holds {sorted(data)}")
    if not isinstance(data[dataset], dict):
        raise StreamDataError(f"{manifest}: {dataset!r} must map label groups to splits")
    return data[dataset]


def _videos(level: Any, compression: str, where: str) -> dict[str, Any]:
    """The video mapping of one split, stepping into the compression level when present."""
    if not isinstance(level, dict):
        raise StreamDataError(f"{where}: expected a mapping, got {type(level).__name__}")
    if not level or any(isinstance(v, dict) and "frames" in v for v in level.values()):
        return level
    if compression not in level:
        raise StreamDataError(f"{where}: no compression level {compression!r}; available: "
                              f"{sorted(level)} (set 'compression' in the stream YAML)")
    return _videos(level[compression], compression, f"{where}/{compression}")


def _video_fields(info: Any, where: str) -> tuple[str, list[str]]:
    if not isinstance(info, dict) or not isinstance(info.get("label"), str) \
            or not isinstance(info.get("frames"), list):
        raise StreamDataError(f"{where}: expected {{'label': str, 'frames': [paths]}}")
    return info["label"], info["frames"]


def _pick_frames(frames: list[str], per_video: int | None) -> list[str]:
    """``per_video`` frames spread evenly over the video (all when None or fewer)."""
    if per_video is None or len(frames) <= per_video:
        return frames
    return [frames[i * len(frames) // per_video] for i in range(per_video)]


def _fake_label_map(exp):
    """label -> generator for fake videos; ``fake_labels`` is needed with several generators."""
    mapping = exp.options["fake_labels"]
    if mapping is None:
        if len(exp.generators) > 1:
            raise StreamSpecError(f"experience {exp.name!r} has generators {list(exp.generators)}"
                                  f"; map fake labels to them with 'fake_labels: {{label: gen}}'")
        return lambda label: exp.generators[0]
    if not isinstance(mapping, dict) or not all(g in exp.generators for g in mapping.values()):
        raise StreamSpecError(f"experience {exp.name!r}: 'fake_labels' must map label strings to "
                              f"its generators {list(exp.generators)}, got {mapping!r}")

    def generator_of(label: str) -> str:
        if label not in mapping:
            raise StreamDataError(f"experience {exp.name!r}: fake label {label!r} is not in "
                                  f"'fake_labels' ({sorted(mapping)})")
        return mapping[label]
    return generator_of


DEEPFAKEBENCH = Layout(
    name="deepfakebench", expected=EXPECTED, collect=collect,
    stream_options={"json_dir": "dataset_json", "frames_root": ".", "compression": "c23",
                    "frames_per_video": None},
    experience_options={"manifest": None, "dataset": None, "fake_labels": None})
