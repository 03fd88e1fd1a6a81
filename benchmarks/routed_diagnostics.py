"""Where the routed prediction (``slow_fast.prediction=routed``) wins or loses, on the embedded
stream's validation split (100 training / 30 validation images per class).

After each experience, for each validation experience j seen so far: the share of its images
routed to its own expert, and the AUC of the slow head alone, of the mixture with expert j forced
(oracle routing), of expert j's head alone, of the routed mixture, and of the fast learner's own
trained (cosine) head over expert j's features (meaningful for the latest expert: the head has
moved on since the earlier ones were kept).

    python benchmarks/routed_diagnostics.py --seed 0

``--fingerprint-levels 2,3`` runs instead the plasticity probe's stream (gan_upsample, then the
GAN fingerprint at 2-3 grey levels; ``benchmarks/plasticity_probe.py``) at 48 px with 400
training and 64 validation images per class; add ``--set training.epochs=8`` as the probe does.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from cldf.config_io import apply_overrides
from cldf.methods.slow_fast import SlowFastLearners
from cldf.methods.slow_fast.experts import Routing
from cldf.recipes import load_recipe
from cldf.resources import EMBEDDED_STREAM
from cldf.run.runner import assemble
from cldf.scores import fake_log_odds_from_logits
from cldf.streams import build_stream, load_stream_spec
from plasticity_probe import register_faint_fingerprint


@torch.no_grad()
def experience_row(model: SlowFastLearners, dataset, j: int, real: list[int]) -> str:
    x, y = (torch.cat(t) for t in zip(*[(b[0], b[1]) for b in torch.utils.data.DataLoader(dataset, batch_size=64)]))
    fake = np.array([int(c) not in real for c in y])
    auc = lambda z: roc_auc_score(fake, fake_log_odds_from_logits(z, real).numpy())  # noqa: E731
    routed = model(x)
    slow = model.slow_analytic(model.analytic_passes(x, ["slow"])[1]["slow"])
    routing = model.experts.route(slow)
    adapter = model.experts.adapter_name(j)
    expert = model.experts.logits(j, model.analytic_passes(x, [adapter])[1][adapter])
    mask = model.experts.class_masks[j]
    oracle = model.experts.mix(slow, Routing(torch.full_like(routing.expert, j), slow.softmax(1)[:, mask].sum(1)), expert)
    trained = model.fast_head(model.detector.multi_features(x, [adapter])[adapter])
    return (f"| {j + 1} | {float((routing.expert == j).float().mean()):.2f} | {auc(slow):.3f} | {auc(oracle):.3f} | "
            f"{auc(expert):.3f} | {auc(routed):.3f} | {auc(trained):.3f} |")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="extra cldf recipe settings")
    parser.add_argument("--fingerprint-levels", metavar="LOW,HIGH", help="the plasticity probe's stream instead")
    parser.add_argument("--validation-photos", choices=["shared", "held_out"], default="shared",
                        help="validation images from the training photos (the stream's default) or from "
                             "held-out photos (as benchmarks/tune_on_validation.py validates)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    stream, size = ["n_per_class={train: 100, val: 30, test: 50}"], []
    if args.fingerprint_levels:
        family = register_faint_fingerprint(*map(float, args.fingerprint_levels.split(",")))
        stream = [f"experiences=[gan_upsample,{family}]", "image_size=48", "n_per_class={train: 400, val: 64, test: 4}"]
        size = ["detector.image_size=48", "training.batch_size=16"]
    stream.append(f"validation_photos={args.validation_photos}")
    spec = load_stream_spec(EMBEDDED_STREAM, overrides=apply_overrides({}, stream))
    recipe = load_recipe("cldf", ["slow_fast.prediction=routed", *size, *args.set])
    parts = assemble(recipe, build_stream(spec), seed=args.seed, plugins=(), progress=False)
    strategy, bench = parts.strategy, parts.benchmark
    print(f"Command: `python benchmarks/routed_diagnostics.py {' '.join(argv)}`\n")
    for t, experience in enumerate(bench.train_stream):
        strategy.train(experience)
        model = strategy.model.eval()
        print(f"\nAfter experience {t + 1}:\n\n| validation experience | routed to its expert | slow | oracle routing | "
              "its expert alone | routed | fast learner's trained head |\n|---|---:|---:|---:|---:|---:|---:|")
        for j in range(t + 1):
            print(experience_row(model, bench.valid_stream[j].dataset.eval(), j, bench.real_classes), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
