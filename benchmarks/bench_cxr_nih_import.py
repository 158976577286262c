"""Time ``tonle data import-cxr nih-cxr14`` on a full-size NIH ChestX-ray14 label file.

Writes a 112,120-row ``Data_Entry_2017.csv`` in the published layout (NIH's per-label
counts, patient-wise ``test_list.txt``, ``BBox_List_2017.csv``) with hard-linked
placeholder PNGs (:func:`training.cxr_public_formats.write_nih`), imports it, and checks
that the per-label counts equal the file's and that no patient is in two splits.
Target: import < 60 s.

Usage:
    .venv/bin/python benchmarks/bench_cxr_nih_import.py [--rows 112120] [--images N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from training.cxr_import import import_dataset
from training.cxr_public_formats import NIH_ROWS, write_nih


def main() -> None:
    """Write, import, check and print the timing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=NIH_ROWS)
    parser.add_argument("--images", type=int, default=None, help="placeholders (default all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nih-bench-") as tmp:
        root, out = Path(tmp) / "nih", Path(tmp) / "out"
        counts = write_nih(root, args.rows, n_images=args.images, n_boxes=984)
        start = time.perf_counter()
        path = import_dataset("nih-cxr14", root, out)
        seconds = time.perf_counter() - start
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        source = table["source_labels"].str.split("|")
        equal = all(
            int(source.map(lambda f, lab=label: lab in f).sum()) == n
            for label, n in counts.items()
        ) if args.images is None else None  # fmt: skip
        mixed = int((table.groupby("patient_id")["split"].nunique() > 1).sum())
        print(f"rows {args.rows}, images imported {len(table)}, import {seconds:.1f} s")
        print(
            f"Nodule {int((table['nodule'] == '1').sum())} (file {counts['Nodule']}), "
            f"Effusion {int((table['effusion'] == '1').sum())} (file {counts['Effusion']}), "
            f"No Finding {int((table['abnormal'] == '0').sum())} (file {counts['No Finding']})"
        )
        print(f"every per-label count equals the file's: {equal}; patients in two splits: {mixed}")
        print(
            "splits",
            table["split"].value_counts().to_dict(),
            "masks",
            int((table["mask"] != "").sum()),
        )


if __name__ == "__main__":
    main()
