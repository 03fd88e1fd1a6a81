"""Does validation rank designs as test does? Candidates scored on several video splits of FF++.

The FF++ crops hold few videos per method (5 to 15 in a validation split), so the figures of one
split can mislead. This script builds the stream once per split seed (``build_ffpp_crops.py
--seed S``, into ``<data-root>/ffpp_split<S>`` unless it is there), trains every candidate on
each split (training seed = split seed, so seeds differ everywhere) and scores it on the
validation videos and, in a separate run, on the test videos. The table gives each candidate's
mean ± std over splits on both, its difference to the first candidate split by split, and per
split which candidate validation picks and how test ranks it; a PNG plots test against
validation. Each run's figures are cached in ``--work`` (one JSON file per run), so an
interrupted study resumes where it stopped.

    python benchmarks/split_study.py --source /work/.mirror/shuvornb+FakeImageDetection/repo \\
        --data-root /work/data --splits 0 1 2 3 4 --jobs 2 --set detector.image_size=224 \\
        --candidate @frozen --candidate '' --candidate slow_fast.prediction=routed \\
        --work runs/split_study --out benchmarks/results/ffpp224_split_study.md
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from tune_on_validation import candidate_recipe, mean_std, parse_args, score_candidate

HERE = Path(__file__).resolve().parent
STREAM = HERE / "streams" / "ffpp_crops.yaml"
SPLITS = ("val", "test")


def label(candidate: str) -> str:
    return candidate or "(recipe defaults)"


def split_data(args: argparse.Namespace, split: int) -> Path:
    """The stream's data root for one split seed, built by ``build_ffpp_crops.py`` if missing."""
    root = args.data_root / f"ffpp_split{split}"
    if not (root / "build_manifest.json").exists():
        subprocess.run([sys.executable, str(HERE / "build_ffpp_crops.py"), "--source", str(args.source),
                        "--out", str(root), "--seed", str(split)], check=True)
    return root


def cache_file(args: argparse.Namespace, split: int, on: str, candidate: str) -> Path:
    name = "".join(c if c.isalnum() or c in "=.-" else "_" for c in label(candidate))
    return args.work / f"split{split}_{on}_{name}.json"


def _score(job: tuple[argparse.Namespace, int, str, str]) -> None:
    """One training run scored on one split's val or test videos; its figures go to the cache."""
    args, split, on, candidate = job
    run_args = parse_args(["--recipe", args.recipe, *(f"--set={s}" for s in args.set), "--stream", str(STREAM),
                           "--data", str(args.data_root / f"ffpp_split{split}"), "--on", on,
                           f"--candidate={candidate}", "--out", os.devnull])
    _, _, auc, forgetting, seconds = score_candidate((run_args, candidate, split))
    target = cache_file(args, split, on, candidate)
    partial = target.with_suffix(".part")
    partial.write_text(json.dumps({"split": split, "on": on, "candidate": candidate, "avg_auc": auc,
                                   "forgetting": forgetting, "seconds": seconds}))
    os.replace(partial, target)


def table(args: argparse.Namespace, auc: dict[tuple[int, str, str], float]) -> list[str]:
    """The Markdown report of the cached figures."""
    splits, candidates = args.splits, args.candidate
    reference = candidates[0]
    lines = ["| candidate | val avg AUC | test avg AUC | val − first | test − first | test per split |",
             "|---|---:|---:|---:|---:|---|"]
    for c in candidates:
        val = [auc[(s, "val", c)] for s in splits]
        test = [auc[(s, "test", c)] for s in splits]
        d_val = [auc[(s, "val", c)] - auc[(s, "val", reference)] for s in splits]
        d_test = [auc[(s, "test", c)] - auc[(s, "test", reference)] for s in splits]
        lines.append(f"| {label(c)} | {mean_std(val)} | {mean_std(test)} | "
                     f"{mean_std(d_val) if c != reference else '—'} | {mean_std(d_test) if c != reference else '—'} | "
                     f"{', '.join(f'{t:.3f}' for t in test)} |")
    lines += ["", "| split | validation picks | its test AUC | its test rank | test's best |", "|---:|---|---:|---:|---|"]
    picked_test = []
    for s in splits:
        pick = max(candidates, key=lambda c: auc[(s, "val", c)])
        ranked = sorted(candidates, key=lambda c: -auc[(s, "test", c)])
        picked_test.append(auc[(s, "test", pick)])
        lines.append(f"| {s} | {label(pick)} | {auc[(s, 'test', pick)]:.3f} | {ranked.index(pick) + 1} of "
                     f"{len(candidates)} | {label(ranked[0])} |")
    pairs = np.array([(auc[(s, "val", c)], auc[(s, "test", c)]) for s in splits for c in candidates])
    rho = float(spearmanr(pairs[:, 0], pairs[:, 1]).statistic)
    lines += ["", f"Choosing on validation split by split gives test {mean_std(picked_test)}; "
              f"rank correlation of val and test AUC over all (split, candidate) runs: {rho:.2f}."]
    return lines


def plot(args: argparse.Namespace, auc: dict[tuple[int, str, str], float], path: Path) -> None:
    """Test against validation average AUC, one marker per candidate and one point per split."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for c, marker in zip(args.candidate, "osD^v<>ph*"):
        ax.scatter([auc[(s, "val", c)] for s in args.splits], [auc[(s, "test", c)] for s in args.splits],
                   marker=marker, label=label(c))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
    ax.set(xlabel="validation average AUC", ylabel="test average AUC", xlim=(0.3, 1.0), ylim=(0.3, 1.0),
           title=f"FF++ crops, splits {' '.join(map(str, args.splits))}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="shuvornb/FakeImageDetection (git dir or tree)")
    parser.add_argument("--data-root", type=Path, required=True, help="holds ffpp_split<S>/ (built if missing)")
    parser.add_argument("--splits", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--recipe", default="cldf")
    parser.add_argument("--candidate", action="append", required=True,
                        help="as in tune_on_validation.py; the first is the reference of the differences")
    parser.add_argument("--set", action="append", default=[], help="settings shared by every candidate")
    parser.add_argument("--jobs", type=int, default=1, help="trainings run at once (one thread each)")
    parser.add_argument("--work", type=Path, required=True, help="cache of each run's figures")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for candidate in args.candidate:  # every setting valid before anything runs
        candidate_recipe(args, candidate)
    args.work.mkdir(parents=True, exist_ok=True)
    for split in args.splits:
        split_data(args, split)
    jobs = [(args, s, on, c) for s in args.splits for on in SPLITS for c in args.candidate
            if not cache_file(args, s, on, c).exists()]
    print(f"{len(jobs)} runs to do ({len(args.splits) * len(SPLITS) * len(args.candidate) - len(jobs)} cached)",
          flush=True)
    with ProcessPoolExecutor(args.jobs, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        list(pool.map(_score, jobs))
    auc = {(s, on, c): json.loads(cache_file(args, s, on, c).read_text())["avg_auc"]
           for s in args.splits for on in SPLITS for c in args.candidate}
    png = args.out.with_suffix(".png")
    lines = [f"# Validation against test over {len(args.splits)} video splits of the FF++ crops", "",
             f"Command: `python {shlex.join(sys.argv)}`", "",
             f"Recipe `{args.recipe}`; split seeds {' '.join(map(str, args.splits))} (training seed = split seed); "
             "average AUC of the final detector over the four methods; mean ± std over splits; "
             f"differences to `{label(args.candidate[0])}` taken split by split.", "",
             *table(args, auc), "", f"![test against validation]({png.name})", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    plot(args, auc, png)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
