"""A CSV manifest with columns ``path,label,generator,split`` (more columns are ignored).

``path`` is relative to the manifest's folder and must stay inside the data root; ``label`` is
``0``/``real`` or ``1``/``fake``; ``generator`` is the generator whose experience the row
belongs to (real rows too); ``split`` is ``train``, ``val`` or ``test``.
"""

from __future__ import annotations

import csv

from cldf.streams.errors import StreamDataError
from cldf.streams.layouts.base import (
    SPLITS, Collected, Layout, SplitData, option, path_inside_root, require_dir, require_file)

COLUMNS = ("path", "label", "generator", "split")
LABELS = {"0": 0, "real": 0, "1": 1, "fake": 1}
EXPECTED = """\
  <root>/<manifest>.csv with header path,label,generator,split, e.g.
    images/gaugan/001.png,fake,gaugan,train
    images/gaugan/real_001.png,real,gaugan,test
  (paths relative to the manifest's folder, inside <root>)"""


def collect(stream) -> Collected:
    root = require_dir(stream.root, CSV, "data root")
    manifest = require_file(root / option(stream.options, "manifest", str, "csv layout"),
                            CSV, "manifest")
    rows = _read_rows(manifest, root)
    collected: Collected = []
    for exp in stream.experiences:
        samples: dict[str, list[tuple[str, int, str]]] = {}
        for generator in exp.generators:
            if generator not in rows:
                raise StreamDataError(
                    f"{manifest}: no rows for generator {generator!r} (experience {exp.name!r}); "
                    f"generators in the manifest: {', '.join(sorted(rows)) or 'none'}")
            for split, path, is_fake in rows[generator]:
                samples.setdefault(split, []).append((path, is_fake, generator))
        collected.append({s: SplitData.from_files(v) for s, v in samples.items()})
    return collected


def _read_rows(manifest, root) -> dict[str, list[tuple[str, str, int]]]:
    """generator -> [(split, absolute path, is_fake)] in file order."""
    rows: dict[str, list[tuple[str, str, int]]] = {}
    with manifest.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise StreamDataError(f"{manifest}: missing column(s) {missing}; the header must "
                                  f"contain {','.join(COLUMNS)}, found {reader.fieldnames}")
        for row in reader:
            where = f"{manifest} line {reader.line_num}"
            if not any((v or "").strip() for v in row.values()):
                continue
            label = (row["label"] or "").strip().lower()
            split = (row["split"] or "").strip()
            generator = (row["generator"] or "").strip()
            if label not in LABELS:
                raise StreamDataError(f"{where}: label {row['label']!r} is not one of "
                                      f"{', '.join(LABELS)}")
            if split not in SPLITS:
                raise StreamDataError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
            if not generator:
                raise StreamDataError(f"{where}: empty generator")
            path = path_inside_root(root, manifest.parent, (row["path"] or "").strip(), where)
            rows.setdefault(generator, []).append((split, path, LABELS[label]))
    return rows


CSV = Layout(name="csv", expected=EXPECTED, collect=collect,
             stream_options={"manifest": "manifest.csv"}, experience_options={})
