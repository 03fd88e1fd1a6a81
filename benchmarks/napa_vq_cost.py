"""Cost of NAPA-VQ: time per training step with its terms vs. plain fine-tuning, graph scaling.

One run, one detector (LoRA adapter + linear head), interleaved repetitions whose order
alternates. Part 1 times training steps over a small experience (``--batches`` distinct batches,
the recipes' default number of epochs, each batch a fresh tensor as from a data loader): plain
fine-tuning (forward, CE, backward, step) against a later NAPA-VQ experience (distance CE,
separation loss on the batch and on pseudo-features, prototype augmentation, distillation
through the frozen previous adapter, the graph update and the code-vector SGD step; the cache of
previous-adapter features starts empty, as at the start of an experience) and a first one
(distance CE, separation loss, graph update), and reports the median of the per-repetition
ratios. The steps call the same core methods the Avalanche plug-in calls in
``before_backward`` / ``after_update``. Part 2 times ``CodeBook.update_graph`` alone for 10, 100
and 1000 code vectors, with torch's top-k and faiss.

    python benchmarks/napa_vq_cost.py --out benchmarks/results/napa_vq_cost.md
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
from typing import Callable

import faiss
import torch
import torch.nn.functional as F

from timing import benchmark_parser, publish, timed

from cldf.detector import AdapterConfig, Detector, DetectorConfig
from cldf.detector import DetectorAdapterSnapshot
from cldf.methods.napa_vq import CachedPreviousFeatures, CodeBook, NAPAVQ, NAPAVQConfig
from cldf.recipes import TrainingConfig

Batch = tuple[torch.Tensor, torch.Tensor]


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, reps=12)
    parser.add_argument("--batches", type=int, default=3, help="distinct batches in the timed experience")
    parser.add_argument("--epochs", type=int, default=TrainingConfig().epochs,
                        help="epochs over them (default: the recipes' default)")
    parser.add_argument("--graph-reps", type=int, default=30, help="repetitions per graph-update timing")
    parser.add_argument("--cv-lr", type=float, default=0.05,
                        help="code-vector lr in both experiences (timing-neutral; the spec's 5 / 0.5 "
                             "diverge with 2-3 classes per batch)")
    return parser.parse_args(argv)


def _interleaved(variants: dict[str, Callable[[], None]], reps: int, steps: int,
                 device: torch.device) -> dict[str, list[float]]:
    """Seconds per step of each variant, repetition by repetition, alternating the order."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            times[name].append(timed(variants[name], 1, device) / steps)
    return times


def _fresh(batch: Batch) -> Batch:
    """A new tensor with the batch's values (a data loader hands out a new one every step)."""
    return batch[0].clone(), batch[1]


def _step_timings(args: argparse.Namespace, device: torch.device) -> tuple[dict[str, list[float]], dict]:
    torch.manual_seed(0)
    det = Detector(DetectorConfig(backbone=args.backbone, pretrained="auto", image_size=args.image_size,
                                  adapter=AdapterConfig(r=args.rank), device=args.device, num_classes=3))
    det.train(True)
    cfg = NAPAVQConfig(cv_lr_first=args.cv_lr, cv_lr_later=args.cv_lr)
    first = NAPAVQ(cfg, det.num_features, device=device)  # a learner still in its first experience
    later = NAPAVQ(cfg, det.num_features, previous=DetectorAdapterSnapshot(det), device=device)
    uncached = NAPAVQ(dataclasses.replace(cfg, kd_cache_mb=0), det.num_features,
                      previous=DetectorAdapterSnapshot(det), device=device)
    later_no_kd = NAPAVQ(cfg, det.num_features, previous=None, device=device)
    params = [p for p in det.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    shape = (args.batch, 3, args.image_size, args.image_size)
    y1 = torch.arange(args.batch, device=device) % 2  # real + generator A
    y2 = torch.tensor([0, 2], device=device).repeat_interleave(args.batch // 2)  # real + generator B
    first_batches = [(torch.randn(shape, device=device), y1) for _ in range(args.batches)]
    later_batches = [(torch.randn(shape, device=device), y2) for _ in range(args.batches)]

    first.begin_experience([0, 1])
    for learner in (later, uncached, later_no_kd):
        learner.begin_experience([0, 1])
        sums = learner.new_feature_sums()
        with torch.no_grad():
            for x, y in first_batches:
                det(x)
                sums.add(det.last_features, learner.prototype_labels(y))
        learner.end_experience(sums)  # prototypes of classes 0, 1 (and the frozen previous adapter)
        learner.begin_experience([0, 2])

    def experience(step: Callable[[Batch], None], batches: list[Batch]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(args.epochs):
                for batch in batches:
                    step(_fresh(batch))
        return run

    def plain(batch: Batch) -> None:
        x, y = batch
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(det(x), y).backward()
        opt.step()

    def with_napa(learner: NAPAVQ) -> Callable[[Batch], None]:
        def step(batch: Batch) -> None:
            x, y = batch
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(det(x), y)
            loss = loss + learner.training_loss([det.last_features], y, learner.previous_features(x))
            loss.backward()
            opt.step()
            learner.step()
        return step

    def new_experience(learner: NAPAVQ) -> Callable[[], None]:
        cached = experience(with_napa(learner), later_batches)

        def run() -> None:
            learner.previous.clear()  # the cache is empty when an experience starts
            cached()
        return run

    def previous_only(batch: Batch) -> None:
        uncached.previous(batch[0])

    def prefix_only(batch: Batch) -> None:
        det.multi_features(batch[0], [])  # the shared frozen prefix alone

    variants = {"plain": experience(plain, later_batches),
                "napa_first": experience(with_napa(first), first_batches),
                "napa_later": new_experience(later),
                "napa_later_uncached": experience(with_napa(uncached), later_batches),
                "napa_later_no_kd": experience(with_napa(later_no_kd), later_batches),
                "previous": experience(previous_only, later_batches),
                "prefix": experience(prefix_only, later_batches)}
    for fn in variants.values():  # warm-up
        fn()
    steps = args.epochs * args.batches
    times = _interleaved(variants, args.reps, steps, device)
    assert isinstance(later.previous, CachedPreviousFeatures)
    info = {"weights": det.weights_source, "trainable": det.trainable_parameter_count()[0], "steps": steps,
            "terms_later": later.last_terms, "hits": later.previous.hits, "misses": later.previous.misses}
    return times, info


def _graph_timings(args: argparse.Namespace, device: torch.device, dim: int) -> list[tuple[int, float, float]]:
    rows = []
    for num in (10, 100, 1000):
        torch.manual_seed(num)
        z = torch.randn(args.batch, dim, device=device)
        timings = []
        for threshold in (10**9, 0):  # torch top-k, faiss top-k
            book = CodeBook(dim, k=15, faiss_threshold=threshold).to(device)
            book.grow(num)
            book.update_graph(z)
            timings.append(statistics.median(
                timed(lambda: book.update_graph(z), 1, device) for _ in range(args.graph_reps)))
        rows.append((num, timings[0], timings[1]))
    return rows


def run(args: argparse.Namespace, argv: list[str]) -> str:
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    times, info = _step_timings(args, device)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    ratio = {name: statistics.median(a / b for a, b in zip(times[name], times["plain"]))
             for name in times}
    graph = _graph_timings(args, device, 1280)
    cfg_default = NAPAVQConfig()
    lines = [
        "# NAPA-VQ cost",
        "",
        "```",
        "python " + " ".join(["benchmarks/napa_vq_cost.py", *argv]),
        "```",
        "",
        f"Machine: {platform.machine()}, {platform.system()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}. Backbone {args.backbone} "
        f"({info['weights']} weights), {args.image_size} px, batch {args.batch}, LoRA r={args.rank} "
        f"({info['trainable']} trainable parameters). {args.reps} interleaved repetitions per variant; "
        "ratios are medians of per-repetition ratios.",
        f"Default NAPA-VQ settings (k=15, n_pseudo=64, T=0.1, kd_fraction=1, kd_cache_mb={cfg_default.kd_cache_mb:g}) "
        f"except the code-vector learning rate ({args.cv_lr}; it does not change the cost). Each timed experience: "
        f"{args.epochs} epochs over {args.batches} distinct batches ({info['steps']} steps).",
        "",
        "## Time per training step",
        "",
        "| variant | median s/step | ratio to plain |",
        "|---|---|---|",
        f"| plain fine-tuning (forward, CE, backward, SGD step) | {med['plain']:.4f} | 1.00 |",
        f"| + NAPA-VQ, first experience (DCE, L_NA, graph update, CV step) | {med['napa_first']:.4f} "
        f"| {ratio['napa_first']:.3f} |",
        f"| + NAPA-VQ, later experience (all terms; previous-adapter features cached for the experience, "
        f"the default) | {med['napa_later']:.4f} | {ratio['napa_later']:.3f} |",
        f"| + NAPA-VQ, later experience, no cache (kd_cache_mb=0: a previous-adapter pass every step) "
        f"| {med['napa_later_uncached']:.4f} | {ratio['napa_later_uncached']:.3f} |",
        f"| + NAPA-VQ, later experience without distillation | {med['napa_later_no_kd']:.4f} "
        f"| {ratio['napa_later_no_kd']:.3f} |",
        f"| (part) a new batch through the prefix and the previous adapter's tail (no grad) "
        f"| {med['previous']:.4f} | {ratio['previous']:.3f} |",
        f"| (part) the frozen prefix of a new batch | {med['prefix']:.4f} | {ratio['prefix']:.3f} |",
        "",
        f"Target: later-experience ratio <= 1.15 -> {'met' if ratio['napa_later'] <= 1.15 else 'NOT met'}.",
        f"Cache over the timed experiences: {info['hits']} samples served from it, {info['misses']} passed "
        "through the previous adapter.",
        "Last loss terms (later experience): "
        + ", ".join(f"{k}={v:.3g}" for k, v in info["terms_later"].items()) + ".",
        "",
        "## Graph update (`CodeBook.update_graph`, batch "
        f"{args.batch}, d=1280, k=15; median of {args.graph_reps})",
        "",
        "| code vectors | torch top-k (ms) | faiss top-k (ms) |",
        "|---|---|---|",
        *(f"| {n} | {t * 1e3:.2f} | {f * 1e3:.2f} |" for n, t, f in graph),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse_args(argv)
    report = run(args, argv)
    publish(report, args.out)


if __name__ == "__main__":
    main()
