"""Streams of new forgeries: stream descriptions, data layouts and the Avalanche bridge.

>>> stream = load_stream("benchmarks/streams/cddb_hard.yaml", data_root="/data/CDDB")
>>> bm = to_benchmark(stream, det.preprocess)            # avalanche benchmark
>>> bm.experience_names, bm.class_map.names, bm.classes_per_experience

The Avalanche bridge (``to_benchmark``, ``online_train_stream``, ``StreamBenchmark``) is
imported on first use, so reading streams does not import Avalanche.
"""

from cldf.streams.bad_files import BadFileReport
from cldf.streams.errors import (
    BadImageError, LeakageWarning, ManifestPathError, MissingExtraError, SkippedFilesWarning,
    StreamDataError, StreamSpecError)
from cldf.streams.images import FileImages, ImageDataset
from cldf.streams.spec import (
    DATA_ROOT_ENV, ClassMap, ExperienceSpec, StreamSpec, load_stream_spec, parse_stream_spec)
from cldf.streams.layouts import LAYOUTS
from cldf.streams.stream import ExperienceData, Stream, build_stream, load_stream, stream_from_root

_BRIDGE = ("StreamBenchmark", "to_benchmark", "online_train_stream", "experience_dataset")


def __getattr__(name: str):
    if name in _BRIDGE:
        from cldf.streams import avalanche_bridge
        return getattr(avalanche_bridge, name)
    raise AttributeError(f"module 'cldf.streams' has no attribute {name!r}")


__all__ = [
    "DATA_ROOT_ENV", "BadFileReport", "BadImageError", "ClassMap", "ExperienceData",
    "ExperienceSpec", "FileImages", "ImageDataset", "LeakageWarning", "ManifestPathError",
    "MissingExtraError", "SkippedFilesWarning", "Stream", "StreamDataError", "StreamSpec", "StreamSpecError",
    "LAYOUTS", "build_stream", "load_stream", "load_stream_spec", "parse_stream_spec", "stream_from_root",
    *_BRIDGE,
]
