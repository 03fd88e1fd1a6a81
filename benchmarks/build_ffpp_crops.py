"""Build a leak-free FaceForensics++ face-crop stream from shuvornb/FakeImageDetection.

The repository https://github.com/shuvornb/FakeImageDetection holds, across its git history,
256x256 PNG face crops of FaceForensics++ (FF++) videos:

- ``[fakeimagedetection/]sample_data/{deepfake,face2face,faceshifter}/{train,test}/{real,fake}/``
  (older commits, e.g. 88a4284);
- ``fakeimagedetection/sample_data/data_256/{df,ff,fs,nt}/{train,test}/{real,fake}/`` (HEAD).

Files are named ``image_<video>_<frame>.png``. The repository's own train and test folders share
video ids (deepfake train/real and test/fake both hold ``image_901_*``: the real video and its
manipulation), so they are not used as splits. Instead every unique image of a method is pooled
(duplicates removed by git blob id and by decoded pixels, across classes and methods), images
are grouped by video id, and whole groups go to train / val / test (seeded), stratified by
method and class, so that no video id crosses splits. With ``--group-scope global`` (default)
a video id keeps one split in every method, since FF++ methods manipulate the same videos; with
``--group-scope method`` the constraint holds within each method only.

Output, CDDB layout (``benchmarks/streams/ffpp_crops.yaml``)::

    <out>/<method>/{train,val,test}/{0_real,1_fake}/image_<video>_<frame>_<tag>.png
    <out>/build_manifest.json     counts, seed, source commits, video ids per split

Methods: deepfakes (deepfake, df), face2face (face2face, ff), faceshifter (faceshifter, fs),
neuraltextures (nt).

Data licence: FaceForensics++ images may be used for non-commercial research only, under the
FaceForensics++ terms of use (https://github.com/ondyari/FaceForensics); they must not be
redistributed. Keep the output outside any git checkout and never commit it; this script refuses
an output folder inside a git work tree.

Build (reads a bare git dir, a checkout with its .git history, or a plain folder tree)::

    python benchmarks/build_ffpp_crops.py --source /work/.mirror/shuvornb+FakeImageDetection/repo --out ~/data/ffpp_crops

Dependencies: the standard library, numpy, Pillow and tqdm.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

METHODS = ("deepfakes", "face2face", "faceshifter", "neuraltextures")
FOLDER_METHOD = {
    "deepfake": "deepfakes", "df": "deepfakes",
    "face2face": "face2face", "ff": "face2face",
    "faceshifter": "faceshifter", "fs": "faceshifter",
    "nt": "neuraltextures",
}
SPLITS = ("train", "val", "test")
CLASS_DIRS = ("0_real", "1_fake")
SOURCE_TAGS = ("sd", "d256")  # sample_data/<method>/ (older commits), sample_data/data_256/<m>/
PATH_RE = re.compile(
    r"^(?:fakeimagedetection/)?sample_data/"
    r"(?:(?P<old>deepfake|face2face|faceshifter)|data_256/(?P<new>df|ff|fs|nt))/"
    r"(?P<split>train|test)/(?P<cls>real|fake)/(?P<name>[^/]+\.(?:png|jpe?g))$",
    re.IGNORECASE)
NAME_RE = re.compile(r"^image_(?P<video>\d+)_(?P<frame>\d+)$")
MANIFEST = "build_manifest.json"
PREFIX = "fakeimagedetection/"  # some commits hold sample_data/ at the top, others under this


@dataclass(frozen=True)
class Origin:
    """One place an image file was found: its path, the commit (or ``worktree``) and labels."""

    path: str
    commit: str
    method: str
    repo_split: str
    fake: int
    tag: str
    name: str

    @property
    def video(self) -> str:
        """The video id of the file name (leading zeros dropped), else ``img:<name>``: a name
        without the ``image_<video>_<frame>`` pattern is a group of its own."""
        match = NAME_RE.match(Path(self.name).stem)
        if match is None:
            return f"img:{self.name}"
        return match["video"].lstrip("0") or "0"


@dataclass
class CropFile:
    """A unique file (git blob) with every origin it was found at."""

    blob: str
    data: bytes
    origins: list[Origin] = field(default_factory=list)
    pixels: str = ""


@dataclass
class Kept:
    """An image kept after de-duplication, with its method, class, video and split."""

    image: CropFile
    origin: Origin
    split: str = ""

    @property
    def method(self) -> str:
        return self.origin.method

    @property
    def fake(self) -> int:
        return self.origin.fake

    @property
    def video(self) -> str:
        return self.origin.video


def parse_path(path: str, commit: str) -> Origin | None:
    """An :class:`Origin` for a crop path of the repository, ``None`` for any other path."""
    match = PATH_RE.match(path)
    if not match:
        return None
    folder = (match["old"] or match["new"]).lower()
    return Origin(path=path, commit=commit, method=FOLDER_METHOD[folder],
                  repo_split=match["split"].lower(), fake=int(match["cls"].lower() == "fake"),
                  tag="sd" if match["old"] else "d256", name=match["name"])


def blob_id(data: bytes) -> str:
    """Git's blob id of ``data`` (so working-tree files match history blobs)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# ----------------------------------------------------------------------------------- reading


def git(git_dir: Path, *args: str, data: bytes | None = None) -> bytes:
    """Run a git command against ``git_dir`` and return its stdout."""
    result = subprocess.run(["git", f"--git-dir={git_dir}", *args], input=data,
                            capture_output=True, check=False)
    if result.returncode:
        raise SystemExit(f"error: git {' '.join(args[:2])} failed in {git_dir}: "
                         f"{result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def is_git_dir(path: Path) -> bool:
    """True when ``path`` is a git directory (bare repository or a checkout's ``.git``)."""
    result = subprocess.run(["git", f"--git-dir={path}", "rev-parse", "--git-dir"],
                            capture_output=True, check=False)
    return result.returncode == 0


def history_files(git_dir: Path) -> tuple[dict[tuple[str, str], str], dict]:
    """``{(path, blob): first commit}`` for crop paths over all commits, and commit info."""
    commits = git(git_dir, "rev-list", "--all", "--reverse", "--topo-order").decode().split()
    head = git(git_dir, "rev-parse", "HEAD").decode().strip()
    found: dict[tuple[str, str], str] = {}
    for commit in tqdm(commits, desc="listing commits", unit="commit"):
        for entry in git(git_dir, "ls-tree", "-r", "-z", commit).split(b"\0"):
            if not entry:
                continue
            meta, path = entry.decode().split("\t", 1)
            kind, blob = meta.split()[1:3]
            if kind == "blob" and PATH_RE.match(path):
                found.setdefault((path, blob), commit)
    return found, {"git_dir": str(git_dir), "head": head, "commits_scanned": len(commits)}


def read_blobs(git_dir: Path, blobs: list[str]) -> dict[str, bytes]:
    """Contents of ``blobs`` through one ``git cat-file --batch``."""
    out = git(git_dir, "cat-file", "--batch", data="".join(f"{b}\n" for b in blobs).encode())
    contents, pos = {}, 0
    for blob in blobs:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        if header[1] == b"missing":
            raise SystemExit(f"error: blob {blob} is missing from {git_dir} (partial clone?)")
        size = int(header[2])
        contents[blob] = out[end + 1:end + 1 + size]
        pos = end + 1 + size + 1
    return contents


def tree_files(root: Path) -> dict[tuple[str, str], bytes]:
    """``{(relative path, blob): bytes}`` for crop paths in a folder tree (skips ``.git``)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for filename in sorted(filenames):
            rel = Path(dirpath, filename).relative_to(root).as_posix()
            if PATH_RE.match(rel):
                data = Path(dirpath, filename).read_bytes()
                found[(rel, blob_id(data))] = data
    return found


def collect(source: Path) -> tuple[dict[str, CropFile], dict]:
    """Every crop file of ``source`` (git history and/or folder tree), keyed by blob id."""
    git_dir = source / ".git" if (source / ".git").exists() else source
    images: dict[str, CropFile] = {}
    info: dict = {"source": str(source)}
    if is_git_dir(git_dir):
        found, info["git"] = history_files(git_dir)
        contents = read_blobs(git_dir, sorted({blob for _, blob in found}))
        for (path, blob), commit in found.items():
            images.setdefault(blob, CropFile(blob, contents[blob])).origins.append(
                parse_path(path, commit))
    if git_dir != source or not is_git_dir(git_dir):  # a checkout or a plain folder
        for (path, blob), data in tree_files(source).items():
            images.setdefault(blob, CropFile(blob, data)).origins.append(
                parse_path(path, "worktree"))
    if not images:
        raise SystemExit(f"error: no FF++ crops found in {source} (expected paths like "
                         f"fakeimagedetection/sample_data/data_256/df/train/real/image_1_2.png)")
    for image in images.values():
        image.origins.sort(key=origin_rank)
    return images, info


def only_methods(images: dict[str, CropFile], methods: tuple[str, ...]) -> dict[str, CropFile]:
    """The files found under ``methods``, with their other origins dropped."""
    for image in images.values():
        image.origins = [o for o in image.origins if o.method in methods]
    return {blob: image for blob, image in images.items() if image.origins}


def origin_rank(origin: Origin) -> tuple:
    """Preference among copies: method order, older source set first, then path."""
    return (METHODS.index(origin.method), SOURCE_TAGS.index(origin.tag), origin.path,
            origin.commit)


# ------------------------------------------------------------------------------- de-duplication


def pixel_hash(data: bytes) -> str | None:
    """SHA-256 of the decoded RGB pixels (and size), ``None`` when the file does not decode."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB")
    except Exception:  # noqa: BLE001 - any decoder failure means a corrupt file
        return None
    return hashlib.sha256(b"%dx%d" % rgb.size + rgb.tobytes()).hexdigest()


def deduplicate(images: dict[str, CropFile]) -> tuple[list[Kept], dict]:
    """One :class:`Kept` per unique pixel content; drop corrupt files and label conflicts."""
    stats: Counter = Counter(pixel_duplicate_blobs=0, images_under_several_methods=0)
    corrupt: list[str] = []
    by_pixels: dict[str, list[CropFile]] = defaultdict(list)
    for image in tqdm(sorted(images.values(), key=lambda i: origin_rank(i.origins[0])),
                      desc="decoding", unit="img"):
        image.pixels = pixel_hash(image.data) or ""
        if not image.pixels:
            corrupt.append(image.origins[0].path)
            continue
        by_pixels[image.pixels].append(image)
    paths = sum(len({o.path for o in i.origins}) for i in images.values())
    aliases = sum(len({o.path.removeprefix(PREFIX) for o in i.origins}) for i in images.values())
    stats["paths"], stats["unique_blobs"] = paths, len(images)
    stats["blob_duplicate_paths"] = paths - len(images)
    stats["blob_duplicates_beyond_prefix_alias"] = aliases - len(images)
    kept, conflicts = [], []
    for group in by_pixels.values():
        origins = sorted((o for img in group for o in img.origins), key=origin_rank)
        stats["pixel_duplicate_blobs"] += len(group) - 1
        stats["images_under_several_methods"] += len({o.method for o in origins}) > 1
        if len({o.fake for o in origins}) > 1:
            conflicts.append(sorted({o.path for o in origins}))
            continue
        best = origins[0]
        image = next(img for img in group if best in img.origins)
        kept.append(Kept(image, best))
    stats["corrupt"], stats["label_conflicts"] = len(corrupt), len(conflicts)
    stats["kept"] = len(kept)
    return kept, {**stats, "corrupt_paths": corrupt, "label_conflict_paths": conflicts}


def repo_split_leak(images: dict[str, CropFile]) -> dict[str, dict]:
    """Per method: video ids found in both the repository's train and test folders."""
    ids: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    test_images: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for image in images.values():
        for origin in image.origins:
            ids[origin.method][origin.repo_split].add(origin.video)
            if origin.repo_split == "test":
                test_images[origin.method][origin.video].add(image.blob)
    leak = {}
    for method in METHODS:
        shared = ids[method]["train"] & ids[method]["test"]
        leak[method] = {
            "train_videos": len(ids[method]["train"]), "test_videos": len(ids[method]["test"]),
            "shared_videos": len(shared),
            "test_images_of_shared_videos": sum(len(test_images[method][v]) for v in shared),
            "test_images": sum(len(s) for s in test_images[method].values()),
            "shared_ids": sorted(shared, key=video_key)}
    return leak


def video_key(video: str) -> tuple:
    """Sort video ids numerically, image-named groups last."""
    return (0, int(video), "") if video.isdigit() else (1, 0, video)


# ------------------------------------------------------------------------------------ splitting


def assign_splits(kept: list[Kept], fractions: dict[str, float], seed: int, scope: str) -> None:
    """Give each video group a split: groups in seeded random order, each to the split whose
    per-(method, class) image share lags its target most (stratified group split)."""
    groups: dict[tuple, list[Kept]] = defaultdict(list)
    for item in kept:
        groups[(item.video,) if scope == "global" else (item.method, item.video)].append(item)
    cells = sorted({(k.method, k.fake) for k in kept})
    totals = Counter((k.method, k.fake) for k in kept)
    placed = {s: Counter() for s in SPLITS}
    keys = sorted(groups, key=lambda g: tuple(map(str, g)))
    order = np.random.default_rng(seed).permutation(len(keys))
    for index in order:
        members = groups[keys[index]]
        sizes = Counter((k.method, k.fake) for k in members)
        lag = {s: sum(sizes[c] / totals[c] * (fractions[s] - placed[s][c] / totals[c])
                      for c in cells) for s in SPLITS}
        split = max(SPLITS, key=lambda s: (lag[s], fractions[s]))
        placed[split].update(sizes)
        for item in members:
            item.split = split


def check_splits(kept: list[Kept], methods: tuple[str, ...]) -> None:
    """Every method and split has real and fake images; no video id crosses splits."""
    absent = [m for m in methods if not any(k.method == m for k in kept)]
    if absent:
        raise SystemExit(f"error: the source holds no images of {', '.join(absent)} (HEAD "
                         f"holds data_256/nt; older commits the rest); pass a source with the "
                         f"full history or choose --methods")
    have = Counter((k.method, k.split, k.fake) for k in kept)
    missing = [f"{m}/{s}/{CLASS_DIRS[c]}" for m in methods for s in SPLITS for c in (0, 1)
               if not have[(m, s, c)]]
    if missing:
        raise SystemExit("error: these splits would have no images, so AUC is undefined: "
                         f"{', '.join(missing)}. Try another --seed or other fractions.")
    splits_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for item in kept:
        splits_of[(item.method, item.video)].add(item.split)
    crossing = [key for key, splits in splits_of.items() if len(splits) > 1]
    if crossing:
        raise SystemExit(f"internal error: video ids cross splits: {crossing[:5]}")


def cross_method_overlap(kept: list[Kept]) -> int:
    """Video ids that sit in different splits in different methods (0 with global scope)."""
    splits_of: dict[str, set[str]] = defaultdict(set)
    for item in kept:
        splits_of[item.video].add(item.split)
    return sum(len(s) > 1 for s in splits_of.values())


# -------------------------------------------------------------------------------------- writing


def output_name(item: Kept, taken: set[Path], folder: Path) -> Path:
    """``<folder>/<stem>_<tag>.png``, with a short blob id appended on a name collision."""
    stem, suffix = Path(item.origin.name).stem, Path(item.origin.name).suffix.lower()
    path = folder / f"{stem}_{item.origin.tag}{suffix}"
    if path in taken:
        path = folder / f"{stem}_{item.origin.tag}_{item.image.blob[:7]}{suffix}"
    taken.add(path)
    return path


def write_images(kept: list[Kept], root: Path) -> dict[str, list[dict]]:
    """Write the kept files' original bytes into the CDDB layout; return per-method records."""
    taken: set[Path] = set()
    records: dict[str, list[dict]] = defaultdict(list)
    for item in tqdm(sorted(kept, key=lambda k: origin_rank(k.origin)), desc="writing",
                     unit="img"):
        folder = root / item.method / item.split / CLASS_DIRS[item.fake]
        folder.mkdir(parents=True, exist_ok=True)
        path = output_name(item, taken, folder)
        path.write_bytes(item.image.data)
        records[item.method].append({
            "file": path.relative_to(root).as_posix(), "split": item.split,
            "label": "fake" if item.fake else "real", "video": item.video,
            "source_path": item.origin.path, "source_commit": item.origin.commit,
            "blob": item.image.blob, "pixel_sha256": item.image.pixels})
    return records


def present(kept: list[Kept]) -> list[str]:
    """The methods of ``kept``, in stream order."""
    return [m for m in METHODS if any(k.method == m for k in kept)]


def counts_table(kept: list[Kept]) -> tuple[dict, str]:
    """Per method/split: real, fake and video counts, as a dict and a printable table."""
    counts: dict = {}
    lines = [f"{'method':<16}{'split':<7}{'real':>6}{'fake':>6}{'total':>7}{'videos':>8}"]
    for method in present(kept):
        for split in SPLITS:
            items = [k for k in kept if k.method == method and k.split == split]
            fake = sum(k.fake for k in items)
            row = {"real": len(items) - fake, "fake": fake, "total": len(items),
                   "videos": len({k.video for k in items})}
            counts.setdefault(method, {})[split] = row
            lines.append(f"{method:<16}{split:<7}{row['real']:>6}{row['fake']:>6}"
                         f"{row['total']:>7}{row['videos']:>8}")
    fake = sum(k.fake for k in kept)
    lines.append(f"{'all':<16}{'':<7}{len(kept) - fake:>6}{fake:>6}{len(kept):>7}"
                 f"{len({k.video for k in kept}):>8}")
    return counts, "\n".join(lines)


def video_ids(kept: list[Kept]) -> dict[str, dict[str, list[str]]]:
    """Sorted video ids per method and split."""
    ids: dict[str, dict[str, set[str]]] = {m: {s: set() for s in SPLITS} for m in present(kept)}
    for item in kept:
        ids[item.method][item.split].add(item.video)
    return {m: {s: sorted(v, key=video_key) for s, v in splits.items()}
            for m, splits in ids.items()}


# ------------------------------------------------------------------------------- output folder


def enclosing_checkout(path: Path) -> Path | None:
    """The git work tree containing ``path`` (which may not exist yet), if any."""
    for parent in (path, *path.parents):
        if (parent / ".git").exists():
            return parent
    return None


def prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse an output inside a git checkout, or a non-empty one without ``--overwrite``."""
    checkout = enclosing_checkout(out)
    if checkout is not None:
        raise SystemExit(
            f"error: --out {out} is inside the git checkout {checkout}. FaceForensics++ images "
            f"may not be redistributed, so they must never be committed: choose a folder "
            f"outside any repository (e.g. ~/data/ffpp_crops).")
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SystemExit(f"error: --out {out} exists and is not empty; pass --overwrite to "
                         f"replace the stream folders ({', '.join(METHODS)}) and {MANIFEST}")


def install(staging: Path, out: Path) -> None:
    """Move the built method folders and manifest from ``staging`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (*METHODS, MANIFEST):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        if (staging / name).exists():
            (staging / name).rename(target)


# ----------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True,
                        help="bare git dir, checkout, or plain folder of FakeImageDetection")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (CDDB layout), outside any git checkout")
    parser.add_argument("--seed", type=int, default=0, help="seed of the group split (0)")
    parser.add_argument("--val-fraction", type=float, default=0.15,
                        help="share of each method's images (per class) for val (0.15)")
    parser.add_argument("--test-fraction", type=float, default=0.25,
                        help="share of each method's images (per class) for test (0.25)")
    parser.add_argument("--group-scope", choices=("global", "method"), default="global",
                        help="a video id keeps one split in all methods (global, default) or "
                             "within each method only (method)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="methods to build, in stream order (default: all four)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the method folders and manifest of a non-empty --out")
    args = parser.parse_args(argv)
    if not (0 < args.val_fraction and 0 < args.test_fraction
            and args.val_fraction + args.test_fraction < 1):
        parser.error("--val-fraction and --test-fraction must be > 0 and sum to < 1")
    args.methods = tuple(m for m in METHODS if m in args.methods)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    source, out = args.source.expanduser().resolve(), args.out.expanduser().resolve()
    if not source.exists():
        raise SystemExit(f"error: --source {source} does not exist")
    prepare_out(out, args.overwrite)
    fractions = {"test": args.test_fraction, "val": args.val_fraction}
    fractions["train"] = 1 - fractions["test"] - fractions["val"]

    images, info = collect(source)
    leak = repo_split_leak(images)
    images = only_methods(images, args.methods)
    kept, dedup = deduplicate(images)
    assign_splits(kept, fractions, args.seed, args.group_scope)
    check_splits(kept, args.methods)
    counts, table = counts_table(kept)

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        staging = Path(tmp)
        records = write_images(kept, staging)
        manifest = {
            "description": "FaceForensics++ face crops from shuvornb/FakeImageDetection, "
                           "split by video id (research use only; do not redistribute)",
            "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "seed": args.seed, "fractions": fractions, "group_scope": args.group_scope,
            "source": info, "source_commits": sorted({k.origin.commit for k in kept}),
            "counts": counts, "deduplication": dedup,
            "repository_split_leak": leak,
            "videos_in_several_splits_across_methods": cross_method_overlap(kept),
            "video_ids": video_ids(kept), "files": records}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        install(staging, out)
    report(out, table, dedup, leak, cross_method_overlap(kept))


def report(out: Path, table: str, dedup: dict, leak: dict, crossing: int) -> None:
    """Print the counts table and the de-duplication and leak findings."""
    print(f"\nwrote {out} (CDDB layout) and {out / MANIFEST}\n\n{table}\n")
    print(f"files: {dedup['paths']} crop paths, {dedup['unique_blobs']} unique blobs: "
          f"{dedup['blob_duplicate_paths']} duplicate paths "
          f"({dedup['blob_duplicates_beyond_prefix_alias']} beyond the {PREFIX} alias)")
    print(f"pixel duplicates among unique blobs: {dedup['pixel_duplicate_blobs']}; images under "
          f"several methods (kept in the first): {dedup['images_under_several_methods']}; "
          f"real/fake label conflicts (dropped): {dedup['label_conflicts']}")
    print(f"corrupt files skipped: {dedup['corrupt']}"
          + "".join(f"\n  {p}" for p in dedup["corrupt_paths"][:10]))
    print("repository train/test leak (video ids in both of its folders):")
    for method, row in leak.items():
        print(f"  {method:<15} {row['shared_videos']:>3} of {row['test_videos']:>3} test videos "
              f"also in train; {row['test_images_of_shared_videos']} of {row['test_images']} "
              f"test images")
    print(f"video ids in different splits across methods: {crossing}")


if __name__ == "__main__":
    main()
