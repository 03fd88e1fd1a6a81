"""A loaded stream as an Avalanche 0.6 benchmark (one experience per stream experience).

Items are ``(x, class_id, task_label)``: Avalanche appends the task label (always 0: the
detector is task-agnostic) from the ``targets_task_labels`` attribute. ``generator`` and
``is_fake`` are data attributes of every dataset and are not returned by ``__getitem__``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from avalanche.benchmarks.scenarios import benchmark_from_datasets
from avalanche.benchmarks.scenarios.generic_scenario import CLScenario, CLStream
from avalanche.benchmarks.scenarios.online import split_online_stream
from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
from avalanche.benchmarks.utils.classification_dataset import (
    TaskAwareSupervisedClassificationDataset)
from avalanche.benchmarks.utils.data_attribute import DataAttribute, TaskLabels
from avalanche.benchmarks.utils.flat_data import ConstantSequence
from avalanche.benchmarks.utils.transform_groups import TransformGroups

from cldf.streams.bad_files import BadFileReport
from cldf.streams.images import ImageDataset
from cldf.streams.layouts import SplitData
from cldf.streams.spec import ClassMap
from cldf.streams.stream import Stream

Transform = Callable[[Any], Any]
STREAM_SPLITS = {"train": "train", "test": "test", "valid": "val"}


class StreamBenchmark(CLScenario):
    """An Avalanche benchmark that also knows its stream: class map, experience names, ...

    Streams: ``train_stream``, ``test_stream`` and, when every experience has a validation
    split, ``valid_stream``; their experiences carry Avalanche's classes timeline
    (``classes_in_this_experience``, ``classes_seen_so_far``, ...).
    """

    def __init__(self, streams: list[CLStream], stream: Stream):
        super().__init__(streams)
        self.stream = stream

    @property
    def class_map(self) -> ClassMap:
        return self.stream.class_map

    @property
    def real_classes(self) -> list[int]:
        return self.stream.class_map.real_classes

    @property
    def n_classes(self) -> int:
        return len(self.stream.class_map)

    @property
    def experience_names(self) -> list[str]:
        return self.stream.experience_names

    @property
    def experience_generators(self) -> list[tuple[str, ...]]:
        return [exp.spec.generators for exp in self.stream.experiences]

    @property
    def classes_per_experience(self) -> list[list[int]]:
        return [exp.class_ids for exp in self.stream.experiences]

    @property
    def bad_files(self) -> BadFileReport:
        return self.stream.bad_files


def to_benchmark(stream: Stream, transform: Transform,
                 eval_transform: Transform | None = None) -> StreamBenchmark:
    """Build the benchmark. ``transform`` (PIL image -> tensor, e.g. ``det.preprocess``) is the
    ``train`` transform group, ``eval_transform`` (default: the same) the ``eval`` group."""
    eval_transform = eval_transform or transform
    datasets = {}
    for stream_name, split in STREAM_SPLITS.items():
        if split == "val" and not stream.has_validation:
            continue
        group = "train" if split == "train" else "eval"
        datasets[stream_name] = [
            experience_dataset(*exp.split(split), transform, eval_transform, group)
            for exp in stream.experiences]
    scenario = with_classes_timeline(benchmark_from_datasets(**datasets))
    return StreamBenchmark(list(scenario.streams.values()), stream)


def experience_dataset(split: SplitData, targets: list[int], transform: Transform,
                       eval_transform: Transform, group: str
                       ) -> TaskAwareSupervisedClassificationDataset:
    """One split as an Avalanche classification dataset with ``targets``, task labels (0),
    ``generator`` and ``is_fake`` attributes, starting in transform ``group``."""
    attributes = [
        DataAttribute(targets, "targets"),
        TaskLabels(ConstantSequence(0, len(targets))),
        DataAttribute(list(split.generators), "generator"),
        DataAttribute(list(split.is_fake), "is_fake"),
    ]
    groups = TransformGroups({"train": transform, "eval": eval_transform})
    dataset = TaskAwareSupervisedClassificationDataset(
        [ImageDataset(split.images, targets)], data_attributes=attributes,
        transform_groups=groups)
    return dataset.with_transforms(group)


def online_train_stream(benchmark: CLScenario, experience_size: int, *, shuffle: bool = True,
                        seed: int = 0, access_task_boundaries: bool = False) -> CLStream:
    """The train stream cut into mini-experiences of ``experience_size`` items (the last may
    be smaller), each with ``origin_experience`` and first/last-sub-experience flags.

    The stream is generated lazily and can be iterated once; call again for another pass
    (the same ``seed`` gives the same pieces)."""
    if experience_size < 1:
        raise ValueError(f"experience_size must be >= 1, got {experience_size}")
    return split_online_stream(benchmark.train_stream, experience_size, shuffle=shuffle,
                               access_task_boundaries=access_task_boundaries, seed=seed)
