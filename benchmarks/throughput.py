"""Training and inference throughput of every recipe relative to naive, at several input sizes.

    python benchmarks/throughput.py --sizes 112 224 --out benchmarks/results/throughput_cpu.md
    python benchmarks/throughput.py --device cuda --sizes 112 224 --out "$OUT/throughput_cuda.md"

One process, recipes one after another on the same small embedded stream (so their ratios are
comparable on a noisy machine), each built as ``cldf run`` builds it (``cldf.run.runner.assemble``:
the recipe's speed settings resolved for the device). Training throughput = the stream's training
images (x epochs) per second of ``strategy.train`` over all experiences: what a recipe adds (replay
memory, joint's past data, analytic-head and prototype passes, distillation) counts as its cost.
Inference throughput = test images per second of ``strategy.eval`` over the whole test stream after
training (the recipe's own prediction, metrics included). Seconds are the process's CPU time on
the CPU (one thread, no loader workers: other jobs on a shared machine barely change it) and wall
time on a GPU. Each recipe runs ``--reps`` times, the order rotating, and its fastest run counts;
an unmeasured naive run on the first experience warms each size up.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from timing import device_name, publish, sync

from cldf.config_io import apply_overrides
from cldf.recipes import STRATEGIES, load_recipe
from cldf.resources import EMBEDDED_STREAM
from cldf.run.runner import RunParts, assemble
from cldf.streams import Stream, build_stream, load_stream_spec


@dataclass
class Throughput:
    """One recipe at one size: images and seconds of training and of inference."""

    train_images: int
    train_seconds: float
    eval_images: int
    eval_seconds: float

    @property
    def train_rate(self) -> float:
        return self.train_images / self.train_seconds

    @property
    def eval_rate(self) -> float:
        return self.eval_images / self.eval_seconds


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=list(STRATEGIES), help="naive first: the reference; a recipe may carry its own overrides: cldf,slow_fast.prediction=routed")
    parser.add_argument("--sizes", nargs="+", type=int, default=[112, 224], help="input sizes (px)")
    parser.add_argument("--device", default="cpu", help="detector.device: cpu, cuda, auto")
    parser.add_argument("--precision", default="auto", help="training.precision: auto, bf16, fp16, fp32")
    parser.add_argument("--experiences", default="gan_upsample,self_blend")
    parser.add_argument("--train-per-class", type=int, default=16)
    parser.add_argument("--test-per-class", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3, help="repetitions, recipe order rotating; the best counts")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on a shared machine)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra recipe overrides")
    parser.add_argument("--out", type=Path, help="write the markdown report here (default: print only)")
    return parser.parse_args(argv)


def small_stream(args: argparse.Namespace, size: int) -> Stream:
    """The embedded stream with few images per class, generated at ``size`` px."""
    overrides = [f"experiences=[{args.experiences}]", f"image_size={size}",
                 f"n_per_class={{train: {args.train_per_class}, test: {args.test_per_class}}}"]
    return build_stream(load_stream_spec(EMBEDDED_STREAM, overrides=apply_overrides({}, overrides)))


def recipe_overrides(name: str) -> tuple[str, list[str]]:
    """``recipe[,key=value,...]``: a recipe name and its own overrides (e.g. ``cldf,slow_fast.prediction=routed``)."""
    recipe, *overrides = name.split(",")
    return recipe, overrides


def build(args: argparse.Namespace, name: str, stream: Stream, size: int) -> RunParts:
    recipe, overrides = recipe_overrides(name)
    recipe = load_recipe(recipe, [f"detector.image_size={size}", f"detector.device={args.device}",
                                  f"training.precision={args.precision}", f"training.epochs={args.epochs}",
                                  *args.set, *overrides])
    return assemble(recipe, stream, seed=0, plugins=(), progress=False)


def clock_for(device: torch.device) -> Callable[[], float]:
    """Wall time on a GPU; on the CPU the process's CPU time (one thread, no loader workers),
    which other jobs on a shared machine barely change."""
    return time.perf_counter if device.type == "cuda" else time.process_time


def timed_call(parts: RunParts, call: Callable[[], Any]) -> float:
    device = parts.detector.device
    clock = clock_for(device)
    sync(device)
    start = clock()
    call()
    sync(device)
    return clock() - start


def measure(args: argparse.Namespace, name: str, stream: Stream, size: int) -> tuple[Throughput, RunParts]:
    """Train ``name`` through the stream, then evaluate the test stream, timing both."""
    parts = build(args, name, stream, size)
    strategy, bench, workers = parts.strategy, parts.benchmark, parts.speed.num_workers
    train_seconds = sum(timed_call(parts, lambda: strategy.train(exp, num_workers=workers))
                        for exp in bench.train_stream)
    eval_seconds = timed_call(parts, lambda: strategy.eval(bench.test_stream, num_workers=workers))
    train_images = args.epochs * sum(len(exp.dataset) for exp in bench.train_stream)
    eval_images = sum(len(exp.dataset) for exp in bench.test_stream)
    return Throughput(train_images, train_seconds, eval_images, eval_seconds), parts


def best(runs: list[Throughput]) -> Throughput:
    """The fastest training and the fastest inference among repetitions (least disturbed)."""
    train = min(runs, key=lambda r: r.train_seconds / r.train_images)
    evaluation = min(runs, key=lambda r: r.eval_seconds / r.eval_images)
    return Throughput(train.train_images, train.train_seconds, evaluation.eval_images, evaluation.eval_seconds)


def size_table(size: int, results: dict[str, Throughput]) -> list[str]:
    reference = results[next(iter(results))]
    lines = [f"## {size} px", "",
             "| recipe | training img/s | training vs naive | inference img/s | inference vs naive |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r.train_rate:.1f} | {r.train_rate / reference.train_rate:.2f}x | "
                     f"{r.eval_rate:.1f} | {r.eval_rate / reference.eval_rate:.2f}x |")
    return lines + [""]


def measure_size(args: argparse.Namespace, size: int) -> tuple[dict[str, Throughput], RunParts]:
    """Every recipe at ``size`` px, ``--reps`` times in rotating order: each one's best run, and
    the parts of the last run (for its device and speed settings)."""
    stream = small_stream(args, size)
    warm = build(args, args.recipes[0], stream, size)
    warm.strategy.train(warm.benchmark.train_stream[0], num_workers=warm.speed.num_workers)
    runs: dict[str, list[Throughput]] = {name: [] for name in args.recipes}
    for rep in range(args.reps):
        turn = rep % len(args.recipes)
        for name in args.recipes[turn:] + args.recipes[:turn]:
            result, parts = measure(args, name, stream, size)
            runs[name].append(result)
            print(f"{size} px {name} (rep {rep + 1}): training {result.train_rate:.1f} img/s, "
                  f"inference {result.eval_rate:.1f} img/s", flush=True)
    return {name: best(r) for name, r in runs.items()}, parts


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.recipes:
        recipe, overrides = recipe_overrides(name)
        load_recipe(recipe, args.set + overrides)  # every recipe and setting valid before anything runs
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    tables = []
    for size in args.sizes:
        results, parts = measure_size(args, size)
        tables += size_table(size, results)
    device, speed = parts.detector.device, parts.speed
    experiences = args.experiences.split(",")
    lines = [
        "# Throughput of every recipe", "",
        "```", " ".join(["python benchmarks/throughput.py", *argv]), "```", "",
        f"- device: {device} ({device_name(device)}, {os.cpu_count()} CPUs), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, python {platform.python_version()}",
        f"- speed settings (resolved from training.precision={args.precision}): precision {speed.precision}, "
        f"channels_last {speed.channels_last}, loader workers {speed.num_workers}",
        f"- stream: embedded, {len(experiences)} experiences ({', '.join(experiences)}), {args.train_per_class} "
        f"training and {args.test_per_class} test images per class (real + one generator per experience), "
        f"{args.epochs} epoch(s), recipe batch sizes; generated at each size",
        f"- seconds: {'wall time' if device.type == 'cuda' else 'process CPU time'}; best of {args.reps} "
        f"repetitions per recipe (order rotating)",
        f"- machine load average (1 min) at start / end: {load_before:.1f} / {os.getloadavg()[0]:.1f}; "
        f"whole run {time.perf_counter() - start:.0f} s (wall)",
        "",
        *tables,
        "Ratios come from one process, recipes measured one after another, so they share the machine's "
        "state; absolute rates are indicative only. `lwf`, `ewc`, `ema`, `replay` and `joint` predict "
        "exactly as `naive` does (one detector forward), so their inference ratios show the "
        "measurement noise. `frozen` takes no gradient step (its training is the analytic-head pass); "
        "`joint` trains on every experience so far; `replay` adds memory images to each batch.",
    ]
    publish("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
