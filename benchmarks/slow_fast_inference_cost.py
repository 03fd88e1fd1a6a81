"""Cost of the merged slow/fast prediction relative to a single learner (inference).

One run, one detector with the ``slow`` (frozen) and ``fast`` adapters and both analytic heads,
in eval mode. Three variants per interleaved repetition (the order rotates):
  single  - one learner: prefix + fast tail + fast analytic head;
  merged  - ``SlowFastLearners.forward``: one shared prefix pass (``multi_features``), both
            tails, both analytic heads and the entropy merge;
  two-pass - the naive merge: two complete forwards (prefix run twice), both heads, merge.
Reports the median per-repetition ratio merged / single (target <= 1.3x) and two-pass / single,
for each number of tuned stages (the adapters live on the last ``tuned_stages`` stages; the
stages before them are the shared prefix). A second table times the routed prediction
(``prediction='routed'``, discriminant heads, three experiences: the slow expert and two fast
experts) against its slow learner alone: the slow tail routes, then each image runs through one
expert's tail, images grouped by expert.

    python benchmarks/slow_fast_inference_cost.py --out benchmarks/results/slow_fast_inference_cost.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from typing import Callable

import torch

from timing import benchmark_parser, publish, sync

from cldf.detector import AdapterConfig, Detector, DetectorConfig
from cldf.methods.slow_fast import SlowFastConfig, SlowFastLearners, merge_logits


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, reps=15)
    parser.add_argument("--tuned-stages", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--projection-dim", type=int, default=2048, help="M of the analytic heads")
    parser.add_argument("--classes", type=int, default=5)
    return parser.parse_args(argv)


def _detector(args: argparse.Namespace, tuned_stages: int) -> Detector:
    torch.manual_seed(0)
    adapter = AdapterConfig(r=args.rank, tuned_stages=tuned_stages)
    return Detector(DetectorConfig(backbone=args.backbone, pretrained="auto", image_size=args.image_size,
                                   adapter=adapter, device=args.device, num_classes=args.classes))


def _learners(args: argparse.Namespace, tuned_stages: int) -> SlowFastLearners:
    det = _detector(args, tuned_stages)
    config = SlowFastConfig(analytic_head="ridge", projection_dim=args.projection_dim, prediction="merged")
    model = SlowFastLearners(det, config)
    model.start_fast_learner()
    model.grow_classes(args.classes)
    model.begin_analytic_experience()
    g = torch.Generator().manual_seed(1)
    for _ in range(2):  # fit the heads on a little data so every path computes real numbers
        x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=g).to(det.device)
        model.accumulate_analytic(x, torch.randint(0, args.classes, (args.batch,), generator=g))
    model.finish_analytic_experience()
    return model.eval()


def _routed_learners(args: argparse.Namespace, tuned_stages: int) -> SlowFastLearners:
    det = _detector(args, tuned_stages)
    model = SlowFastLearners(det, SlowFastConfig(prediction="routed"))
    model.start_fast_learner()
    model.grow_classes(args.classes)
    g = torch.Generator().manual_seed(1)
    for experience in range(3):  # classes {0, e + 1}; the fast adapter moves between experiences
        det.load_adapter_state("fast", {k: v + 0.01 * torch.randn(v.shape, generator=g).to(v) if "lora_" in k else v
                                        for k, v in det.adapter_state("fast").items()})
        model.begin_analytic_experience()
        for _ in range(2):
            x = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=g).to(det.device)
            y = torch.randint(0, 2, (args.batch,), generator=g) * (experience + 1)
            model.accumulate_analytic(x, y)
        model.finish_analytic_experience()
    return model.eval()


def _routed_variants(model: SlowFastLearners) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    def slow(x: torch.Tensor) -> torch.Tensor:
        return model.slow_analytic(model.analytic_passes(x, ["slow"])[1]["slow"])

    return {"single": slow, "routed": model}


def _variants(model: SlowFastLearners) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    gamma = model.config.gamma

    def single(x: torch.Tensor) -> torch.Tensor:
        return model.fast_analytic(model.analytic_passes(x, ["fast"])[1]["fast"])

    def two_pass(x: torch.Tensor) -> torch.Tensor:
        slow = model.analytic_passes(x, ["slow"])[1]["slow"]
        fast = model.analytic_passes(x.clone(), ["fast"])[1]["fast"]  # a new tensor: no prefix cache hit
        return merge_logits(model.slow_analytic(slow), model.fast_analytic(fast), gamma).logits

    return {"single": single, "merged": model, "two-pass": two_pass}



@torch.no_grad()
def _measure(model: SlowFastLearners, args: argparse.Namespace,
             variants: dict[str, Callable[[torch.Tensor], torch.Tensor]]) -> dict[str, list[float]]:
    device = model.detector.device
    shape = (args.batch, 3, args.image_size, args.image_size)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2)).to(device)
    if "two-pass" in variants and not torch.allclose(variants["two-pass"](x.clone()), variants["merged"](x.clone()),
                                                     atol=1e-4):
        raise RuntimeError("shared-prefix merge and two-pass merge disagree")
    for fn in variants.values():  # warm-up
        fn(x.clone())
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            fresh = x.clone()  # the detector caches the prefix per input tensor: never reuse one
            sync(device)
            start = time.perf_counter()
            variants[name](fresh)
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def _report(args: argparse.Namespace, rows: list[tuple[int, dict[str, list[float]]]], device: str,
            routed_rows: list[tuple[int, dict[str, list[float]], float]]) -> str:
    command = " ".join(["python", "benchmarks/slow_fast_inference_cost.py", *sys.argv[1:]])
    lines = [
        "# Slow/fast learners: cost of the merged prediction (inference)", "", "```", command, "```", "",
        f"- device: {device} ({platform.machine()}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"python {platform.python_version()}",
        f"- model: Detector({args.backbone}, LoRA r={args.rank}, adapt_norm), {args.image_size} px, "
        f"batch {args.batch}, "
        f"analytic heads M={args.projection_dim}, {args.classes} classes, eval mode, no grad",
        f"- protocol: {args.reps} interleaved repetitions (order rotates), median of the per-repetition ratios; "
        "the merged output is checked equal to the two-pass merge first",
        "- single = prefix + fast tail + fast analytic head; merged = one prefix + slow and fast tails + both heads "
        "+ entropy merge (`SlowFastLearners.forward`); two-pass = two complete forwards + merge",
        "",
        "| tuned stages | single (ms/batch) | merged (ms/batch) | two-pass (ms/batch) "
        "| **merged / single** | two-pass / single |",
        "|---|---|---|---|---|---|",
    ]
    for stages, times in rows:
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        ratio = statistics.median(m / s for m, s in zip(times["merged"], times["single"]))
        ratio2 = statistics.median(m / s for m, s in zip(times["two-pass"], times["single"]))
        lines.append(f"| {stages} | {med['single']:.1f} | {med['merged']:.1f} | {med['two-pass']:.1f} | "
                     f"**{ratio:.2f}x** | {ratio2:.2f}x |")
    lines += ["", "Routed prediction (discriminant heads; slow = prefix + slow tail + slow head; routed = "
              "`SlowFastLearners.forward` with `prediction='routed'`):", "",
              "| tuned stages | slow (ms/batch) | routed (ms/batch) | share routed to fast experts | **routed / slow** |",
              "|---|---|---|---|---|"]
    for stages, times, share in routed_rows:
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        ratio = statistics.median(m / s for m, s in zip(times["routed"], times["single"]))
        lines.append(f"| {stages} | {med['single']:.1f} | {med['routed']:.1f} | {share:.2f} | **{ratio:.2f}x** |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    rows, routed_rows = [], []
    device = ""
    for stages in args.tuned_stages:
        model = _learners(args, stages)
        device = str(model.detector.device)
        rows.append((stages, _measure(model, args, _variants(model))))
        routed = _routed_learners(args, stages)
        times = _measure(routed, args, _routed_variants(routed))
        routed_rows.append((stages, times, float(routed.last_weights[1].mean())))
        print(f"tuned_stages={stages} done", file=sys.stderr)
    report = _report(args, rows, device, routed_rows)
    publish(report, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
