"""Data layouts: each turns a stream description into per-experience split data."""

from cldf.streams.layouts.base import SPLITS, Layout, SplitData
from cldf.streams.layouts.cddb import CDDB
from cldf.streams.layouts.csv_manifest import CSV
from cldf.streams.layouts.deepfakebench import DEEPFAKEBENCH
from cldf.streams.layouts.embedded import EMBEDDED
from cldf.streams.layouts.folders import FOLDERS
from cldf.streams.layouts.hf import HF

LAYOUTS: dict[str, Layout] = {layout.name: layout
                              for layout in (CDDB, FOLDERS, DEEPFAKEBENCH, CSV, HF, EMBEDDED)}

__all__ = ["LAYOUTS", "SPLITS", "Layout", "SplitData"]
