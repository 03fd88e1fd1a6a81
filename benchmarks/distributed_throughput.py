"""Training throughput of ``cldf run`` with 1 vs N processes (torch.distributed, DDP).

Each repetition runs the same recipe through the same embedded stream with ``--nproc 1`` and
``--nproc N`` (interleaved), and reads the training time from ``results.json`` (rank 0's
``cost.train_seconds``: every process takes part in each step, so rank 0's time is the run's).
Throughput = training images seen per second, summed over processes (each process takes
``training.batch_size`` images per step, so one epoch is the same pass over the data).
Process start-up and evaluation are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import publish

REPO = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="cldf")
    parser.add_argument("--nproc", type=int, default=2, help="processes to compare with one")
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions of each setting")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--train-per-class", type=int, default=32)
    parser.add_argument("--experiences", default="gan_upsample,self_blend")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra recipe overrides")
    parser.add_argument("--out", type=Path, help="write the markdown report here (default: print only)")
    return parser.parse_args()


def run_args(args: argparse.Namespace, nproc: int, out: Path) -> list[str]:
    streams = [f"experiences=[{args.experiences}]", f"image_size={args.image_size}",
               f"n_per_class.train={args.train_per_class}", "n_per_class.val=4", "n_per_class.test=16"]
    sets = [f"detector.image_size={args.image_size}", f"training.epochs={args.epochs}",
            f"training.batch_size={args.batch}", *args.set]
    return ["run", args.recipe, *(f"--stream-set={s}" for s in streams), *(f"--set={s}" for s in sets),
            "--no-progress", f"--nproc={nproc}", "--out", str(out)]


def one_run(args: argparse.Namespace, nproc: int) -> dict:
    """Train once with ``nproc`` processes; returns results.json."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "cldf", *run_args(args, nproc, Path(tmp))]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-4000:]}")
        return json.loads((Path(tmp) / "results.json").read_text())


def main() -> None:
    args = parse_args()
    experiences = args.experiences.split(",")
    images = len(experiences) * 2 * args.train_per_class * args.epochs  # real + one generator per experience
    settings = (1, args.nproc)
    seconds: dict[int, list[float]] = {n: [] for n in settings}
    auc: dict[int, list[float]] = {n: [] for n in settings}
    for rep in range(args.reps):
        for n in settings:
            results = one_run(args, n)
            seconds[n].append(results["cost"]["train_seconds"])
            auc[n].append(results["metrics"]["avg_auc"])
            print(f"rep {rep + 1}/{args.reps} nproc={n}: {seconds[n][-1]:.1f} s training", flush=True)
    rate = {n: images / statistics.median(seconds[n]) for n in settings}
    command = "python benchmarks/distributed_throughput.py " + " ".join(sys.argv[1:])
    lines = [
        "# Distributed training throughput (torch.distributed, DDP)", "",
        f"Command: `{command}`", "",
        f"Recipe `{args.recipe}`, embedded stream ({', '.join(experiences)}), {args.image_size} px, "
        f"{args.train_per_class} training images per class, {args.epochs} epoch(s), batch {args.batch} per process; "
        f"{images} training images per run; {args.reps} interleaved repetitions, median shown. "
        f"CPU, gloo backend, one torch thread per process, on a machine with {os.cpu_count()} cores shared with other jobs.",
        "",
        "| processes | training time (s, median) | throughput (images/s) | speed-up | final average AUC |",
        "|---|---|---|---|---|",
    ]
    for n in settings:
        lines.append(f"| {n} | {statistics.median(seconds[n]):.1f} | {rate[n]:.1f} | {rate[n] / rate[1]:.2f}x | "
                     f"{statistics.mean(auc[n]):.3f} |")
    lines += ["", "The processes hold identical weights, EMA shadows, NAPA-VQ state and analytic-head statistics "
              "(tests/test_distributed.py); with N processes the effective batch is N times larger, so the "
              "metrics are not expected to equal the single-process run's."]
    report = "\n".join(lines) + "\n"
    publish(report, args.out)


if __name__ == "__main__":
    main()
