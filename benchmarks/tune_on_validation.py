"""Choose method settings on the validation splits (never the test splits).

Each candidate is a list of ``--set`` overrides; the stream's validation split of every
experience takes the place of its test split, so the R matrix, average AUC and forgetting are
validation figures. On the embedded stream the validation split holds out its own photos
(``validation_photos=held_out``: train on 12 of the 15 training photos, validate on the other 3),
as the test split does, unless ``--stream-set validation_photos=...`` says otherwise. The table
is written with the command that made it.

    python benchmarks/tune_on_validation.py --recipe napa_vq \
        --candidate "napa_vq.w_kd=1" --candidate "napa_vq.w_kd=10" --out benchmarks/results/tuning_napa_vq.md

A candidate starting with ``@name`` uses the recipe ``name`` instead of ``--recipe`` (e.g.
``@frozen``, ``@safe``, ``@cldf,drop=[napa_vq]``), so one table compares recipes and ablations.
``--on test`` runs the same candidates on the test splits: the final ablation table, made once,
after the choices were made on validation.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from cldf.cli import EMBEDDED_STREAM
from cldf.config_io import apply_overrides
from cldf.recipes import Recipe, load_recipe
from cldf.run.runner import run
from cldf.streams import Stream, StreamSpec, build_stream, load_stream_spec


def validation_as_test(stream: Stream) -> Stream:
    """The same stream with each experience's validation split used as its test split."""
    missing = [e.name for e in stream.experiences if "val" not in e.splits]
    if missing:
        raise ValueError(f"experiences without a validation split: {', '.join(missing)}")
    experiences = [
        dataclasses.replace(e, splits={"train": e.splits["train"], "test": e.splits["val"]},
                            targets={"train": e.targets["train"], "test": e.targets["val"]})
        for e in stream.experiences
    ]
    return dataclasses.replace(stream, experiences=experiences)


def tuning_spec(path: Path, stream_set: list[str], data_root: Path | None = None) -> StreamSpec:
    """The stream to tune on: an embedded stream validates on held-out photos by default."""
    overrides = apply_overrides({}, stream_set)
    spec = load_stream_spec(path, data_root=data_root, overrides=overrides)
    if spec.layout == "embedded" and "validation_photos" not in overrides:
        spec = dataclasses.replace(spec, options={**spec.options, "validation_photos": "held_out"})
    return spec


def candidate_recipe(args: argparse.Namespace, candidate: str) -> Recipe:
    """The recipe of a candidate: ``[@recipe,]key=value,...`` over ``--recipe`` and ``--set``."""
    settings = [s for s in candidate.split(",") if s]
    name = settings.pop(0)[1:] if settings and settings[0].startswith("@") else args.recipe
    return load_recipe(name, args.set + settings)


def score_candidate(job: tuple[argparse.Namespace, str, int]) -> tuple[str, int, float, float, float]:
    """Train ``candidate`` with ``seed`` and score it on ``args.on`` (``val`` or ``test``):
    ``(candidate, seed, average AUC, forgetting, seconds)``."""
    args, candidate, seed = job
    stream = build_stream(tuning_spec(args.stream, args.stream_set, args.data))
    stream = validation_as_test(stream) if args.on == "val" else stream
    start = time.perf_counter()
    m = run(candidate_recipe(args, candidate), stream, seed=seed, progress=False)["metrics"]
    print(f"{candidate or '(recipe defaults)'} seed {seed}: {args.on} avg AUC {m['avg_auc']:.3f}, "
          f"forgetting {m['forgetting_auc']:.3f}", flush=True)
    return candidate, seed, m["avg_auc"], m["forgetting_auc"], time.perf_counter() - start


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """This script's arguments (``sys.argv`` when ``argv`` is ``None``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--candidate", action="append", required=True,
                        help="comma-separated key=value settings; repeat for each candidate ('' = defaults)")
    parser.add_argument("--set", action="append", default=[], help="settings shared by every candidate")
    parser.add_argument("--stream", type=Path, default=EMBEDDED_STREAM)
    parser.add_argument("--data", type=Path, help="data root of the stream (e.g. the built FF++ crops)")
    parser.add_argument("--stream-set", action="append", default=[])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--jobs", type=int, default=1, help="trainings run at once (one thread each)")
    parser.add_argument("--on", choices=("val", "test"), default="val",
                        help="the splits scored: validation (choosing), or test (the final table, once)")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()

    for candidate in args.candidate:  # every setting valid before anything runs
        candidate_recipe(args, candidate)
    jobs = [(args, candidate, seed) for candidate in args.candidate for seed in args.seeds]
    with ProcessPoolExecutor(args.jobs, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        done = list(pool.map(score_candidate, jobs))
    rows = []
    for candidate in args.candidate:
        mine = [d for d in done if d[0] == candidate]
        aucs = [d[2] for d in mine]
        rows.append((candidate or "(recipe defaults)", float(np.mean(aucs)), mean_std(aucs),
                     mean_std([d[3] for d in mine]), sum(d[4] for d in mine)))
    best = max(rows, key=lambda r: r[1])
    seeds = " ".join(str(s) for s in args.seeds)
    title = "on the validation splits" if args.on == "val" else "on the test splits"
    lines = [f"# `{args.recipe}` candidates {title}", "", f"Command: `python {shlex.join(sys.argv)}`", "",
             f"Seeds {seeds}; mean ± std over seeds.", "",
             f"| candidate | {args.on} avg AUC | {args.on} forgetting | seconds |", "|---|---:|---:|---:|"]
    lines += [f"| {c} | {a} | {f} | {s:.0f} |" for c, _, a, f, s in rows]
    lines += ["", f"Highest {args.on} average AUC: `{best[0]}`", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
