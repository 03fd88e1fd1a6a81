"""Can cldf learn a generator its slow learner's features cannot separate? (issue 21, item 2)

Two-experience embedded streams, ``gan_upsample`` then a probe family, for each recipe variant:
the AUC on the probe family right after its experience (R[2, 2]) and on the first generator
(R[2, 1], against R[1, 1]). ``frozen`` never trains (the analytic head over pretrained
statistics); ``slow`` is cldf predicting with the slow learner alone; ``routed`` lets the
per-experience fast experts answer (``slow_fast.prediction=routed``); ``naive`` fine-tunes the
adapter and head (can gradient training learn the probe at all?).

    python benchmarks/plasticity_probe.py --families fingerprint double_jpeg colour_mismatch \
        --out benchmarks/results/plasticity_probe.md

``--fingerprint-levels 1,2`` adds a probe family ``fingerprint_1-2``: the fixed pattern of the
``fingerprint`` family at 1-2 grey levels instead of 3-5 (fainter, harder for frozen statistics).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from cldf.config_io import apply_overrides
from cldf.recipes import load_recipe
from cldf.resources import EMBEDDED_STREAM
from cldf.run.runner import run
from cldf.streams import build_stream, load_stream_spec
from cldf.streams.embedded import FORGERY_FAMILIES
from cldf.streams.embedded.families import Fingerprint

VARIANTS = {"frozen": ("frozen", []), "slow": ("cldf", ["slow_fast.prediction=slow"]),
            "routed": ("cldf", ["slow_fast.prediction=routed"]), "naive": ("naive", [])}


def register_faint_fingerprint(low: float, high: float) -> str:
    """Add the ``fingerprint`` family's pattern at ``low``-``high`` grey levels as a family; its name."""
    name = f"fingerprint_{low:g}-{high:g}"
    FORGERY_FAMILIES[name] = Fingerprint(low, high)
    return name


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="*", default=["fingerprint", "double_jpeg", "colour_mismatch"])
    parser.add_argument("--fingerprint-levels", nargs="*", default=[], metavar="LOW,HIGH",
                        help="add a fainter fingerprint probe per LOW,HIGH pair (grey levels)")
    parser.add_argument("--variants", nargs="+", default=["frozen", "slow", "routed"], choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, help="training.epochs of every variant (default: the recipes')")
    parser.add_argument("--cldf-set", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override for the cldf variants (slow, routed); repeatable")
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--train-per-class", type=int, default=96)
    parser.add_argument("--test-per-class", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    families = args.families + [register_faint_fingerprint(*map(float, pair.split(","))) for pair in args.fingerprint_levels]
    epochs = [] if args.epochs is None else [f"training.epochs={args.epochs}"]
    lines = [f"# Plasticity probe: {args.image_size} px, {args.train_per_class} training images per class, "
             f"{args.epochs or 'recipe default'} epochs, seed {args.seed}",
             "", f"Command: `python benchmarks/plasticity_probe.py {shlex.join(argv)}`", "",
             "| probe family | variant | R[1,1] gan_upsample | R[2,1] gan_upsample | **R[2,2] probe** | seconds |",
             "|---|---|---:|---:|---:|---:|"]
    for family in families:
        overrides = [f"experiences=[gan_upsample,{family}]", f"image_size={args.image_size}",
                     f"n_per_class={{train: {args.train_per_class}, val: 4, test: {args.test_per_class}}}"]
        stream = build_stream(load_stream_spec(EMBEDDED_STREAM, overrides=apply_overrides({}, overrides)))
        for variant in args.variants:
            recipe, sets = VARIANTS[variant]
            sets = [*sets, *args.cldf_set] if recipe == "cldf" else sets
            start = time.perf_counter()
            auc = run(load_recipe(recipe, [f"detector.image_size={args.image_size}", "training.batch_size=16", *epochs, *sets]),
                      stream, seed=args.seed, progress=False, echo=lambda line: None)["metrics"]["auc"]
            lines.append(f"| {family} | {variant} | {auc[0][0]:.3f} | {auc[1][0]:.3f} | **{auc[1][1]:.3f}** | "
                         f"{time.perf_counter() - start:.0f} |")
            print(lines[-1], flush=True)
    report = "\n".join(lines) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
