"""The ``cldf`` command line: ``run``, ``demo``, ``report``, ``predict``.

Everything a run needs is validated before training starts: recipe keys, data root, the
generator order, and that the output folder is writable.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

from cldf.config_io import ConfigError
from cldf.resources import EMBEDDED_STREAM, shipped_streams, stream_path
from cldf.streams.errors import StreamDataError, StreamSpecError
from cldf.streams.layouts import LAYOUTS
DEMO_RECIPES = ("naive", "cldf")
LOGGER_HELP = ("watch a run while it trains (repeatable): text, csv, tensorboard or wandb (offline unless "
               "WANDB_MODE=online); files under OUT/logs")


class UsageError(ValueError):
    """A command-line problem found before any training."""


class RunError(RuntimeError):
    """Training or a checkpoint failed; the message says what was kept."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``cldf`` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.handler(args)
    except (UsageError, ConfigError, StreamSpecError, StreamDataError, FileNotFoundError) as err:
        print(f"cldf {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RunError as err:
        print(f"cldf {args.command}: error: {err}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cldf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train a recipe through a stream of new forgeries")
    run.add_argument("recipe", help="a shipped recipe (naive, cldf, ...; the checkout's strategies/) or a .yaml path")
    _add_stream_arguments(run)
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe setting, e.g. training.epochs=3")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", type=Path, help="output folder (results.json, report.md, plots, checkpoints); default: the --resume folder")
    run.add_argument("--resume", type=Path, metavar="DIR",
                     help="continue a run after its last completed experience (a run folder or one checkpoint folder)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument("--logger", action="append", default=[], metavar="NAME", help=LOGGER_HELP)
    run.add_argument("--nproc", type=int, default=1, metavar="N",
                     help="train with N processes (torchrun: DistributedDataParallel, one GPU each when CUDA exists)")
    run.set_defaults(handler=_cmd_run)

    demo = sub.add_parser("demo", help="naive vs cldf on the embedded offline stream, side by side")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"))
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    demo.add_argument("--no-progress", action="store_true")
    demo.add_argument("--logger", action="append", default=[], metavar="NAME", help=LOGGER_HELP)
    demo.set_defaults(handler=_cmd_demo)

    report = sub.add_parser("report", help="compare runs: a Markdown table and plots")
    report.add_argument("runs", nargs="+", type=Path, help="run folders or results.json files")
    report.add_argument("--out", type=Path, default=Path("runs/report"))
    report.set_defaults(handler=_cmd_report)

    predict = sub.add_parser("predict", help="score images and videos with a trained detector")
    predict.add_argument("checkpoint", type=Path, help="a run folder (its latest checkpoint) or a checkpoint folder")
    predict.add_argument("images", type=Path, metavar="target",
                         help="an image or video file, or a folder of images and/or videos")
    predict.add_argument("--format", choices=("csv", "json"), default="csv", help="json also lists each video's frame scores")
    predict.add_argument("--frames", type=int, default=16, metavar="N",
                         help="frames scored per video, spread uniformly (default 16)")
    predict.add_argument("--aggregate", choices=("mean", "max"), default="mean",
                         help="a video's score: the mean of its frames' log-odds, or its most fake frame (default mean)")
    predict.set_defaults(handler=_cmd_predict)
    return parser


def _add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stream", type=Path, metavar="NAME|YAML",
                        help=f"a shipped stream ({', '.join(shipped_streams())}) or a stream YAML "
                             "(default: embedded, the offline stream)")
    parser.add_argument("--data", type=Path, help="data root (for --stream files with a relative root, or with --layout)")
    parser.add_argument("--layout", choices=[name for name, layout in LAYOUTS.items() if layout.needs_root],
                        help="build a stream from --data in this layout")
    parser.add_argument("--order", help="comma-separated generators, in stream order (default: the generator folders, or the hf dataset's generators, sorted)")
    parser.add_argument("--stream-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a stream setting, e.g. n_per_class.train=128")


def check_writable(folder: Path) -> None:
    """Fail now, not after hours of training, if ``folder`` cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UsageError(f"output folder {folder} is not writable ({err.strerror or err})") from err


def stream_from_args(args: argparse.Namespace) -> Any:
    """The loaded :class:`cldf.streams.Stream` named by ``--stream`` / ``--data --layout --order``."""
    from cldf.config_io import apply_overrides
    from cldf.streams import build_stream, load_stream_spec, stream_from_root

    overrides = apply_overrides({}, args.stream_set)
    if args.layout:
        if args.stream:
            raise UsageError("give either --stream or --data with --layout, not both")
        if args.data is None:
            raise UsageError(f"--layout {args.layout} needs --data ROOT")
        order = [g.strip() for g in args.order.split(",") if g.strip()] if args.order else None
        return stream_from_root(args.data, args.layout, order, overrides)
    path = stream_path(args.stream) if args.stream else EMBEDDED_STREAM
    return build_stream(load_stream_spec(path, data_root=args.data, overrides=overrides))


def _run_one(recipe_name: str, recipe: Any, stream: Any, out: Path, seed: int, progress: bool,
             resume: Optional[Path] = None, logger_names: Sequence[str] = ()) -> dict:
    from cldf.avalanche.loggers import close_loggers, make_loggers
    from cldf.distributed import is_main
    from cldf.run import run
    from cldf.run.checkpoint import CheckpointError, latest_checkpoint
    from cldf.run.faults import NonFiniteLossError

    name = Path(recipe_name).stem
    loggers = make_loggers(list(logger_names), out, f"{name}-seed{seed}", recipe.to_raw()) if is_main() else []
    if is_main():
        print(f"== {recipe_name}: {recipe.description} | stream {stream.spec.name}: {', '.join(stream.experience_names)}")
    try:
        return run(recipe, stream, seed=seed, out_dir=out, recipe_name=name, resume=resume,
                   progress=progress, loggers=loggers)
    except CheckpointError as err:
        raise RunError(str(err)) from err
    except NonFiniteLossError as err:
        last = latest_checkpoint(out)
        kept = f"last good checkpoint: {last} (continue with --resume {out}" if last else "no checkpoint yet (start again"
        raise RunError(f"{err}\n{kept}; --set training.on_nonfinite_loss=skip drops such batches)") from err
    finally:
        close_loggers(loggers)


def torchrun_command(argv: Sequence[str], nproc: int) -> list[str]:
    """The torchrun command running ``cldf <argv>`` (without ``--nproc``) in ``nproc`` processes."""
    rest, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--nproc="):
            skip = False
            continue
        skip = arg == "--nproc"
        if not skip:
            rest.append(arg)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "cldf", *rest]


def _cmd_run(args: argparse.Namespace) -> int:
    from cldf import distributed
    from cldf.avalanche.loggers import check_logger_names
    from cldf.recipes import load_recipe

    if args.nproc < 1:
        raise UsageError(f"--nproc {args.nproc}: give a number of processes >= 1")
    recipe = load_recipe(args.recipe, args.set)  # validated before touching data or starting processes
    check_logger_names(args.logger)
    if args.nproc > 1 and not distributed.is_distributed() and "WORLD_SIZE" not in os.environ:
        return subprocess.run(torchrun_command(args.argv, args.nproc)).returncode
    try:
        return _run_in_process(args, recipe)
    finally:
        distributed.shutdown()


def _run_in_process(args: argparse.Namespace, recipe: Any) -> int:
    from cldf.distributed import init_from_env, is_main

    init_from_env()
    out = args.out or args.resume
    if out is None:
        raise UsageError("give --out DIR (or --resume DIR to continue a run in its own folder)")
    check_writable(out)
    stream = stream_from_args(args)
    results = _run_one(args.recipe, recipe, stream, out, args.seed, not args.no_progress, args.resume, args.logger)
    if not is_main():
        return 0
    m = results["metrics"]
    print(f"final average AUC {m['avg_auc']:.3f}, forgetting {_fmt(m['forgetting_auc'])}; results in {out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from cldf.avalanche.loggers import check_logger_names
    from cldf.recipes import load_recipe
    from cldf.report.report import write_report

    recipes = {name: load_recipe(name, args.set) for name in DEMO_RECIPES}
    check_logger_names(args.logger)
    check_writable(args.out)
    args.stream, args.layout, args.data, args.stream_set = None, None, None, []
    stream = stream_from_args(args)
    paths = []
    for name, recipe in recipes.items():
        _run_one(name, recipe, stream, args.out / name, args.seed, not args.no_progress, logger_names=args.logger)
        paths.append(args.out / name / "results.json")
    report = write_report(paths, args.out)
    print()
    print(_table_of(report))
    print(f"report with plots: {report}")
    return 0


def _table_of(report: Path) -> str:
    lines = report.read_text().splitlines()
    return "\n".join(line for line in lines if line.startswith("|"))


def _cmd_report(args: argparse.Namespace) -> int:
    from cldf.report.report import write_report

    paths = [p / "results.json" if p.is_dir() else p for p in args.runs]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UsageError(f"no results.json at {', '.join(missing)}")
    check_writable(args.out)
    report = write_report(paths, args.out)
    print(_table_of(report))
    print(f"report with plots: {report}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from cldf.run.checkpoint import CheckpointError
    from cldf.predict import load_trained, predict_files
    from cldf.video import media_files, predict_videos

    if args.frames < 1:
        raise UsageError(f"--frames {args.frames}: give a number of frames >= 1")
    images, videos = media_files(args.images)
    try:
        trained = load_trained(args.checkpoint)
    except CheckpointError as err:
        raise RunError(str(err)) from err
    rows = [*predict_files(trained, images), *predict_videos(trained, videos, args.frames, args.aggregate)]
    if args.format == "json":
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=["path", "p_fake", "decision", "novelty", "novel", "attribution", "error"],
                                lineterminator=os.linesep, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return 0


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"
