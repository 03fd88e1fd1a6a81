"""Checkpoints: safetensors for tensors + a JSON manifest with checksums, written atomically.

Layout: ``DIR/checkpoints/exp_003/{state.safetensors, manifest.json}`` and
``DIR/checkpoints/latest.json`` naming the newest complete checkpoint. The tensor file is written
first and the manifest (holding its SHA-256) last, so a checkpoint only exists once it is whole;
a truncated or altered tensor file fails the checksum and is refused. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from safetensors.torch import load, save
from torch import Tensor

from cldf.atomic_io import write_bytes_atomic, write_json_atomic

FORMAT = "cldf-checkpoint/2"
STATE_FILE = "state.safetensors"
MANIFEST_FILE = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, damaged, or made for another setup."""


def checkpoint_dir(run_dir: Path, experience: int) -> Path:
    """Folder of the checkpoint taken after ``experience`` (0-based)."""
    return Path(run_dir) / "checkpoints" / f"exp_{experience:03d}"


def save_checkpoint(folder: Path, tensors: Mapping[str, Tensor], manifest: Mapping[str, Any]) -> Path:
    """Write ``tensors`` and ``manifest`` into ``folder`` atomically; update ``latest.json``.

    On failure (full disk, unwritable folder) the previous checkpoint stays valid and the error
    says so.
    """
    folder = Path(folder)
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    try:
        write_bytes_atomic(folder / STATE_FILE, data)
        write_json_atomic(folder / MANIFEST_FILE, {
            **manifest, "format": FORMAT, "files": {STATE_FILE: hashlib.sha256(data).hexdigest()},
        })
        write_json_atomic(folder.parent / "latest.json", {"checkpoint": folder.name})
    except OSError as err:
        raise CheckpointError(
            f"could not write checkpoint {folder} ({err.strerror or err}); the previous checkpoint, if any, is intact"
        ) from err
    return folder


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or ``None``."""
    pointer = Path(run_dir) / "checkpoints" / "latest.json"
    if not pointer.is_file():
        return None
    try:
        return pointer.parent / json.loads(pointer.read_text())["checkpoint"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{pointer} is damaged ({err}); pass a checkpoint folder such as {pointer.parent}/exp_000 instead") from err


def load_checkpoint(folder: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read and verify a checkpoint: (tensors, manifest). Damage is a :class:`CheckpointError`."""
    folder = Path(folder)
    manifest_path, state_path = folder / MANIFEST_FILE, folder / STATE_FILE
    if not manifest_path.is_file() or not state_path.is_file():
        raise CheckpointError(f"{folder} is not a complete cldf checkpoint (needs {MANIFEST_FILE} and {STATE_FILE})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{manifest_path} is not valid JSON: {err}") from err
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{manifest_path}: format {manifest.get('format')!r}; this cldf reads {FORMAT!r}")
    data = state_path.read_bytes()
    expected = manifest.get("files", {}).get(STATE_FILE)
    if hashlib.sha256(data).hexdigest() != expected:
        raise CheckpointError(f"{state_path} does not match the checksum in its manifest: truncated or modified; refusing it")
    return load(data), manifest


def check_compatible(manifest: Mapping[str, Any], expected: Mapping[str, Any], source: Path,
                     ignore: Sequence[str] = ()) -> None:
    """Raise listing every setting (``recipe.detector.backbone``, ``class_names``, ...) whose value
    in ``manifest`` differs from ``expected``; nested mappings are compared key by key, and keys
    in ``ignore`` (dotted) are skipped."""
    found, wanted = _flatten(manifest), _flatten(json.loads(json.dumps(expected, default=str)))  # as stored
    diffs = [
        f"{key}: checkpoint {found.get(key, '<absent>')!r} vs now {wanted.get(key, '<absent>')!r}"
        for key in sorted(set(wanted) | {k for k in found if k.split(".", 1)[0] in expected})
        if key not in ignore and found.get(key) != wanted.get(key)
    ]
    if diffs:
        raise CheckpointError(f"checkpoint {source} was made for another setup:\n  " + "\n  ".join(diffs))


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
