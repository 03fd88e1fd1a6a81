"""Score videos with a trained detector: frames sampled uniformly, scored as images
(:func:`cldf.predict.score_images`) and aggregated into one score per video."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterator, Literal

import av
import numpy as np
from PIL import Image

from .metrics.calibration import Calibration
from .predict import IMAGE_SUFFIXES, SCORE_FIELDS, TrainedDetector, score_images

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
Aggregation = Literal["mean", "max"]


class VideoError(ValueError):
    """A video that cannot be opened or decoded, or has no frames."""


def media_files(target: str | Path) -> tuple[list[Path], list[Path]]:
    """Image files and video files: one file (a video if its suffix says so, else an image), or
    every image and video file under a folder (sorted)."""
    target = Path(target)
    if target.is_file():
        return ([], [target]) if target.suffix.lower() in VIDEO_SUFFIXES else ([target], [])
    if not target.is_dir():
        raise FileNotFoundError(f"{target} is neither an image or video file nor a folder")
    files = sorted(p for p in target.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))
        raise FileNotFoundError(f"no image or video files ({suffixes}) under {target}")
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    return [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES], videos


def _decoded(container: av.container.InputContainer, path: Path) -> Iterator[av.VideoFrame]:
    if not container.streams.video:
        raise VideoError(f"cannot read video {path}: no video stream")
    return container.decode(container.streams.video[0])


def sampled_frames(path: str | Path, count: int) -> tuple[list[int], list[Image.Image]]:
    """The indices and RGB images of ``count`` decoded frames spread uniformly over the video (the
    middle frame of each of ``count`` equal runs of frames; every frame if it has fewer). The
    video is decoded twice (to count its frames, then to keep some), so memory does not grow with
    its length."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            total = sum(1 for _ in _decoded(container, path))
        if total == 0:
            raise VideoError(f"cannot read video {path}: no frames decoded")
        indices = sorted({(2 * i + 1) * total // (2 * count) for i in range(count)})
        images: list[Image.Image] = []
        with av.open(str(path)) as container:
            for index, frame in enumerate(_decoded(container, path)):
                if index == indices[len(images)]:
                    images.append(frame.to_image())
                    if len(images) == len(indices):
                        break
    except av.FFmpegError as err:
        raise VideoError(f"cannot read video {path}: {err.strerror or err}") from err
    return indices[:len(images)], images


def read_frames(path: str | Path, count: int) -> list[Image.Image]:
    """``count`` RGB frames sampled uniformly over the video (fewer if it is shorter)."""
    return sampled_frames(path, count)[1]


def aggregate(rows: list[dict], calibration: Calibration, how: Aggregation = "mean") -> dict:
    """One video score from its frames' rows (:func:`cldf.predict.score_images`): ``mean`` of the
    frames' calibrated log-odds (``p_fake`` its sigmoid) or the frame with the ``max`` log-odds;
    the decision at the run's threshold, the mean novelty, the most common attribution, and
    ``frames``, the rows themselves."""
    if how == "mean":
        log_odds = float(np.mean([row["log_odds"] for row in rows]))
        p_fake = float(1.0 / (1.0 + np.exp(-log_odds)))
    else:
        top = max(rows, key=lambda row: row["log_odds"])
        log_odds, p_fake = top["log_odds"], top["p_fake"]
    novelty = float(np.mean([row["novelty"] for row in rows]))
    return {"p_fake": p_fake, "log_odds": log_odds, "decision": "fake" if calibration.decide(p_fake) else "real",
            "novelty": novelty, "novel": bool(novelty > calibration.novelty_threshold),
            "attribution": Counter(row["attribution"] for row in rows).most_common(1)[0][0], "frames": rows}


def predict_videos(trained: TrainedDetector, files: list[Path], frames: int = 16, how: Aggregation = "mean",
                   batch_size: int = 64) -> Iterator[dict]:
    """Yield ``{"path", <the aggregate's fields>, "frames", "error"}`` per video, each frame row
    with its ``frame`` index; unreadable videos get an error, no scores and no frames."""
    for path in files:
        try:
            indices, images = sampled_frames(path, frames)
        except VideoError as err:
            yield {"path": str(path), **dict.fromkeys(SCORE_FIELDS), "frames": [], "error": str(err)}
            continue
        rows = [row for start in range(0, len(images), batch_size)
                for row in score_images(trained, images[start:start + batch_size])]
        rows = [{**row, "frame": index} for index, row in zip(indices, rows)]
        yield {"path": str(path), **aggregate(rows, trained.calibration, how), "error": None}
