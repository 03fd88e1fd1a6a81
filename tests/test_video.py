"""Video input for ``cldf predict``: uniform frame sampling, aggregation, and the command end to end."""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stdout
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from cldf.cli import main
from cldf.metrics.calibration import Calibration
from cldf.predict import load_trained, score_images
from cldf.video import VideoError, aggregate, read_frames, sampled_frames

from test_cli import TINY

N_FRAMES = 30


def _frame(k: int) -> np.ndarray:
    """Frame ``k``: red channel 8k, green 255 - 8k, noise in blue (so the detector sees texture)."""
    frame = np.random.default_rng(k).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    frame[..., 0], frame[..., 1] = 8 * k, 255 - 8 * k
    return frame


def _frame_index(image: Image.Image) -> int:
    red = np.asarray(image)[..., 0]
    assert (red == red[0, 0]).all()
    return int(red[0, 0]) // 8


def _write_video(path: Path) -> Path:
    """30 frames, 64x64, lossless (FFV1 in Matroska, RGB kept as bgr0)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "bgr0"
        for k in range(N_FRAMES):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(_frame(k), format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return _write_video(tmp_path_factory.mktemp("video") / "clip.mkv")


def test_frames_are_sampled_uniformly_and_exactly(video):
    frames = read_frames(video, 5)
    assert [image.size for image in frames] == [(64, 64)] * 5 and {image.mode for image in frames} == {"RGB"}
    assert [_frame_index(image) for image in frames] == [3, 9, 15, 21, 27]  # middles of 5 runs of 6 frames
    assert np.array_equal(np.asarray(frames[2]), _frame(15))  # lossless
    assert sampled_frames(video, 5)[0] == [3, 9, 15, 21, 27]
    assert [_frame_index(image) for image in read_frames(video, 1)] == [15]
    assert [_frame_index(image) for image in read_frames(video, 100)] == list(range(N_FRAMES))  # shorter video: all


def test_unreadable_video_names_the_file(tmp_path):
    broken = tmp_path / "x.mp4"
    broken.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoError, match="x.mp4"):
        read_frames(broken, 4)
    with pytest.raises(VideoError, match="missing.mkv"):
        read_frames(tmp_path / "missing.mkv", 4)


ROWS = [
    {"p_fake": 1 / (1 + math.exp(-z)), "log_odds": z, "decision": "?", "novelty": n, "novel": False,
     "attribution": a, "frame": i}
    for i, (z, n, a) in enumerate([(-2.0, 1.0, "real:photos"), (0.5, 3.0, "fake:gan"), (-0.1, 8.0, "fake:gan")])
]


def test_mean_aggregation_averages_log_odds_and_uses_the_threshold():
    video = aggregate(ROWS, Calibration(threshold=0.3, novelty_threshold=4.0))
    assert video["log_odds"] == pytest.approx(-1.6 / 3)
    assert video["p_fake"] == pytest.approx(1 / (1 + math.exp(1.6 / 3)))  # 0.3697
    assert video["decision"] == "fake"  # 0.3697 >= 0.3
    assert aggregate(ROWS, Calibration(threshold=0.4))["decision"] == "real"
    assert video["novelty"] == pytest.approx(4.0) and video["novel"] is False  # 4.0 is not above 4.0
    assert aggregate(ROWS, Calibration(novelty_threshold=3.9))["novel"] is True
    assert video["attribution"] == "fake:gan" and video["frames"] == ROWS


def test_max_aggregation_takes_the_most_fake_frame():
    video = aggregate(ROWS, Calibration(threshold=0.7), how="max")
    assert video["log_odds"] == 0.5 and video["p_fake"] == pytest.approx(0.6225, abs=1e-4)
    assert video["decision"] == "real"  # 0.6225 < 0.7
    assert aggregate(ROWS, Calibration(threshold=0.6), how="max")["decision"] == "fake"


def test_predict_scores_a_folder_of_videos_and_images(tmp_path, video):
    run_dir = tmp_path / "naive"
    with redirect_stdout(io.StringIO()):
        assert main(["run", "naive", "--out", str(run_dir), *TINY]) == 0
    media = tmp_path / "media"
    media.mkdir()
    (media / "clip.mkv").write_bytes(video.read_bytes())
    Image.fromarray(_frame(0)).save(media / "a.png")
    (media / "x.mp4").write_bytes(np.random.default_rng(1).bytes(4096))

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["predict", str(run_dir), str(media), "--format", "json", "--frames", "6"]) == 0
    rows = {Path(row["path"]).name: row for row in json.loads(out.getvalue())}
    assert set(rows) == {"a.png", "clip.mkv", "x.mp4"}
    assert rows["a.png"]["error"] is None and 0.0 <= rows["a.png"]["p_fake"] <= 1.0 and "frames" not in rows["a.png"]
    assert "x.mp4" in rows["x.mp4"]["error"] and rows["x.mp4"]["p_fake"] is None and rows["x.mp4"]["frames"] == []

    clip = rows["clip.mkv"]
    assert clip["error"] is None and [f["frame"] for f in clip["frames"]] == [2, 7, 12, 17, 22, 27]
    mean = np.mean([f["log_odds"] for f in clip["frames"]])
    assert clip["log_odds"] == pytest.approx(mean) and clip["p_fake"] == pytest.approx(1 / (1 + math.exp(-mean)))
    trained = load_trained(run_dir)
    expected = score_images(trained, read_frames(video, 6))
    assert clip["frames"] == [pytest.approx({**row, "frame": i}) for i, row in zip([2, 7, 12, 17, 22, 27], expected)]
    assert clip["decision"] == ("fake" if clip["p_fake"] >= trained.calibration.threshold else "real")
