"""No exemplars, ever: what an exemplar-free strategy keeps holds no image and does not grow with
the number of images seen. The replay reference point, which does store images, fails both checks."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from cldf.recipes import load_recipe
from cldf.run.runner import run
from cldf.streams import build_stream, load_stream_spec
from cldf.cli import EMBEDDED_STREAM

SIZE = 32
SETTINGS = ["detector.image_size=32", "training.epochs=1", "training.batch_size=16"]


def _run(recipe: str, n_train: int, out):
    stream = build_stream(load_stream_spec(EMBEDDED_STREAM, overrides={
        "image_size": SIZE, "n_per_class": {"train": n_train, "val": 4, "test": 8},
        "experiences": ["gan_upsample", "reconstruction"],
    }))
    results = run(load_recipe(recipe, SETTINGS), stream, seed=0, out_dir=out, progress=False)
    state = load_file(str(out / "checkpoints" / "exp_001" / "state.safetensors"))
    return results["cost"]["state_bytes"], state


def _image_like(state) -> list[str]:
    return [k for k, v in state.items() if v.ndim >= 3 and tuple(v.shape[-3:]) == (3, SIZE, SIZE)]


@pytest.mark.parametrize("recipe", ["naive", "lwf", "ewc", "safe", "napa_vq", "ema", "cldf"])
def test_exemplar_free_state_holds_no_images_and_does_not_grow(recipe, tmp_path):
    small_bytes, small_state = _run(recipe, 8, tmp_path / "small")
    large_bytes, large_state = _run(recipe, 16, tmp_path / "large")
    assert _image_like(small_state) == [] and _image_like(large_state) == []
    assert {k: v.shape for k, v in small_state.items()} == {k: v.shape for k, v in large_state.items()}
    assert small_bytes == large_bytes


def test_replay_reference_stores_images_and_grows_with_them(tmp_path):
    small_bytes, _ = _run("replay", 8, tmp_path / "small")
    large_bytes, _ = _run("replay", 16, tmp_path / "large")
    assert large_bytes > small_bytes
