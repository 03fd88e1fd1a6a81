"""Compare two sets of runs field by field: are their results bit-identical?

    python benchmarks/same_results.py runs/before runs/after

Each folder holds ``<recipe>/seed<k>/results.json`` (as ``compare_recipes.py`` writes them).
Everything a run learned and measured must match exactly; what depends on the machine or the
moment (timings, memory, package versions, paths) is left out. Prints one line per run and
exits 1 when any differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# machine- and moment-dependent fields, by path in results.json
IGNORED = {("cost", "train_seconds"), ("cost", "peak_rss_mb"), ("versions",), ("created",),
           ("config", "stream", "root")}


def differences(a: Any, b: Any, path: tuple = ()) -> list[str]:
    """Paths where ``a`` and ``b`` differ (exact equality; NaN equals NaN)."""
    if path in IGNORED:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in differences(a.get(k), b.get(k), path + (k,))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, path + (i,))]
    same = a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)
    return [] if same else ["/".join(map(str, path)) + f": {a!r} != {b!r}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    failed = False
    for path in sorted(args.before.glob("*/seed*/results.json")):
        other = args.after / path.relative_to(args.before)
        if not other.is_file():
            print(f"{path.relative_to(args.before)}: missing in {args.after}")
            failed = True
            continue
        diffs = differences(json.loads(path.read_text()), json.loads(other.read_text()))
        avg = json.loads(path.read_text())["metrics"]["avg_auc"]
        print(f"{path.relative_to(args.before)}: {'identical' if not diffs else f'{len(diffs)} difference(s)'}"
              f" (final average AUC {avg:.4f})")
        for line in diffs[:5]:
            print(f"    {line}")
        failed |= bool(diffs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
