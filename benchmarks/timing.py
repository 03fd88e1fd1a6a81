"""Shared pieces of the cost benchmarks: common arguments and a synchronised timer."""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from cldf.detector import AdapterConfig


def benchmark_parser(doc: str, reps: int) -> argparse.ArgumentParser:
    """Arguments every cost benchmark takes; the adapter rank defaults to the detector's."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rank", type=int, default=AdapterConfig().r, help="LoRA rank of the adapter(s)")
    parser.add_argument("--reps", type=int, default=reps, help="interleaved repetitions")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on a shared machine)")
    parser.add_argument("--out", type=Path, help="write the markdown report here (default: print only)")
    return parser


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], n: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over ``n`` calls."""
    sync(device)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - start) / n


def publish(report: str, out: Path | None) -> None:
    """Print a Markdown report and, with ``out``, write it there."""
    print(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
