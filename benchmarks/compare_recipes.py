"""Every recipe on a stream (default: the embedded one) with several seeds, side by side.

    python benchmarks/compare_recipes.py --seeds 0 1 2 --jobs 2 --out runs/bench \
        --report benchmarks/results/embedded.md

``--jobs N`` runs N trainings at once, each on one CPU thread. Runs go to ``OUT/<recipe>/seed<k>/`` (results.json, report, checkpoints); the combined report
(mean ± std over seeds per recipe, plots) goes next to ``--report``. Extra ``--set`` settings
apply to every recipe, so all share the detector, input size and epochs.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from cldf.cli import EMBEDDED_STREAM
from cldf.config_io import apply_overrides
from cldf.recipes import load_recipe
from cldf.report.report import write_report
from cldf.run.runner import run
from cldf.streams import build_stream, load_stream_spec

RECIPES = ("naive", "lwf", "ewc", "safe", "napa_vq", "ema", "cldf", "frozen", "replay", "joint")


def _run_one(job: tuple[argparse.Namespace, str, int]) -> Path:
    args, name, seed = job
    out = args.out / name / f"seed{seed}"
    if args.keep and (out / "results.json").is_file():
        return out / "results.json"
    stream = build_stream(load_stream_spec(args.stream, data_root=args.data,
                                           overrides=apply_overrides({}, args.stream_set)))
    run(load_recipe(name, args.set), stream, seed=seed, out_dir=out, recipe_name=name, progress=False,
        echo=lambda line: print(f"[{name} seed {seed}] {line}", flush=True))
    return out / "results.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--stream", type=Path, default=EMBEDDED_STREAM)
    parser.add_argument("--data", type=Path, help="data root of the stream (e.g. the built FF++ crops)")
    parser.add_argument("--stream-set", action="append", default=[])
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--keep", action="store_true", help="reuse runs whose results.json exists")
    parser.add_argument("--jobs", type=int, default=1, help="trainings run at once (one thread each)")
    parser.add_argument("--report", type=Path, default=Path("benchmarks/results/embedded.md"))
    args = parser.parse_args()

    jobs = [(name, seed) for seed in args.seeds for name in args.recipes]
    for name in args.recipes:
        load_recipe(name, args.set)  # every recipe and setting valid before anything runs
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        paths = list(pool.map(_run_one, [(args, name, seed) for name, seed in jobs]))
    report_dir = args.report.parent
    report = write_report(paths, report_dir)
    command = "python " + " ".join(sys.argv)
    text = report.read_text().replace("# cldf results", f"# cldf results\n\nCommand: `{command}` "
                                      f"({time.perf_counter() - start:.0f} s on this machine)", 1)
    args.report.write_text(text)
    if report != args.report:
        report.unlink()
    print(args.report.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
