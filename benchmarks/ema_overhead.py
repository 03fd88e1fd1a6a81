"""Cost of the EMA balance weighting: time per training step with and without it, extra memory.

One run, one detector, interleaved repetitions (the order alternates between repetitions):
plain fine-tuning steps vs. fine-tuning steps followed by ``EMABalance.step()``. Reports the
median of the per-repetition time ratios, the median time of ``EMABalance.step()`` alone, and
the bytes of the two extra float32 copies.

    python benchmarks/ema_overhead.py --threads 1 --out benchmarks/results/ema_overhead.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys

import torch
from torch import nn

from timing import benchmark_parser, device_name, publish, timed

from cldf.detector import AdapterConfig, Detector, DetectorConfig
from cldf.methods.ema_balance import EMABalance, select_parameters


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = benchmark_parser(__doc__, reps=40)
    parser.add_argument("--steps", type=int, default=1, help="training steps per repetition and variant")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, argv: list[str]) -> str:
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    det = Detector(DetectorConfig(backbone=args.backbone, pretrained=False, image_size=args.image_size,
                                  adapter=AdapterConfig(r=args.rank), device=args.device, num_classes=2))
    det.train(True)
    device = det.device
    trainable = select_parameters(det)
    optimizer = torch.optim.AdamW([p for _, p in trainable], lr=1e-4)
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, 2, (args.batch,), device=device)
    ema = EMABalance(trainable)
    ema.start_experience()

    def plain_step() -> None:
        optimizer.zero_grad()
        nn.functional.cross_entropy(det(x.clone()), y).backward()  # a new tensor, as from a loader
        optimizer.step()

    def ema_step() -> None:
        plain_step()
        ema.step()

    for _ in range(2):  # warm-up of both variants
        plain_step()
        ema_step()
    plain_times, ema_times, ratios, ema_only = [], [], [], []
    for rep in range(args.reps):
        order = (plain_step, ema_step) if rep % 2 == 0 else (ema_step, plain_step)
        times = {fn: timed(fn, args.steps, device) for fn in order}
        plain_times.append(times[plain_step])
        ema_times.append(times[ema_step])
        ratios.append(times[ema_step] / times[plain_step])
        ema_only.append(timed(ema.step, 10, device))

    n_params = sum(p.numel() for _, p in trainable)
    param_bytes = sum(p.numel() * p.element_size() for _, p in trainable)
    extra = ema.extra_memory_bytes()
    groups = ", ".join(f"{g}: {s['tensors']}" for g, s in ema.alpha_stats().items())
    median_plain = statistics.median(plain_times)
    lines = [
        "# EMA balance weighting: cost per training step",
        "",
        "```",
        " ".join(["python benchmarks/ema_overhead.py", *argv]),
        "```",
        "",
        f"- device: {device} ({device_name(device)}, {os.cpu_count()} CPUs), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, python {platform.python_version()}",
        f"- machine load average (1 min) at start / end: {load_before:.1f} / {os.getloadavg()[0]:.1f}",
        f"- model: Detector({args.backbone}, pretrained=False, LoRA r={args.rank}, adapt_norm), "
        f"{args.image_size} px, batch {args.batch}, AdamW",
        f"- tracked tensors: {len(trainable)} ({groups}); trainable parameters: {n_params:,} "
        f"({param_bytes:,} bytes)",
        f"- protocol: {args.reps} interleaved repetitions x {args.steps} steps per variant, "
        "order alternating; 2 warm-up steps each",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| median time per step, plain fine-tuning | {median_plain * 1e3:.1f} ms |",
        f"| median time per step, fine-tuning + EMA | {statistics.median(ema_times) * 1e3:.1f} ms |",
        f"| **median per-repetition ratio (EMA / plain)** | **{statistics.median(ratios):.3f}x** |",
        f"| ratio range over repetitions | {min(ratios):.3f} - {max(ratios):.3f} |",
        "| median time of `EMABalance.step()` alone (10 calls per repetition) | "
        f"{statistics.median(ema_only) * 1e3:.2f} ms "
        f"({statistics.median(ema_only) / median_plain:.2%} of a plain step) |",
        f"| extra memory (float32 shadow + previous gradient) | {extra:,} bytes "
        f"({extra / 2**20:.2f} MiB; 2 x 4 bytes x {n_params:,}) |",
        "",
        "Target: ratio <= 1.05x. The ratio compares whole training steps and so carries the",
        "timing noise of the machine (see the ratio range and the load average); the time of",
        "`EMABalance.step()` alone, relative to a plain step, is the direct measure of the overhead.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse_args(argv)
    report = run(args, argv)
    publish(report, args.out)


if __name__ == "__main__":
    main()
