"""NTU ``.skeleton`` parse and prepare throughput (files/s) and NTU loading (samples/s); prints JSON.

The 60 real fixture files are copied under ten performer numbers (600 files, half of them on the
xsub training side) so that each run takes a few seconds. ``prepare`` is the full path (name
filtering, worker processes, denoising, store writing), ``parse`` the single-process reader
alone; ``loader`` is the training loader of ``python train.py dataset=ntu60 split=xsub`` on the
prepared store (centre, align, random crop-resize to 64 frames, random rotation). Each figure is
the median of three runs.

    python -m bench.ntu_parse --fixtures <folder> [--workers 2] [--copies 10]   (from the repository root)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from asgcn_lightning.data.formats.ntu_skeleton import read_ntu_skeleton
from asgcn_lightning.data.sources.ntu import SPLIT_VALUES, prepare_ntu
from bench.loading import measure_loader

RUNS = 3


def median_rate(num_files: int, run: Callable[[], object]) -> float:
    """Median files/s over :data:`RUNS` runs."""
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return round(num_files / statistics.median(times), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, required=True, help="the recorded fixtures (ntu/skeletons/)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--copies", type=int, default=10)
    args = parser.parse_args()
    sources = sorted((args.fixtures / "ntu" / "skeletons").glob("*.skeleton"))
    if not sources:
        raise SystemExit(f"no NTU fixtures under {args.fixtures / 'ntu' / 'skeletons'}")

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        training = SPLIT_VALUES[60]["xsub"]  # performers alternately of the xsub training and test sides
        held_out = [subject for subject in range(1, 41) if subject not in training]
        performers = [subject for pair in zip(training, held_out, strict=False) for subject in pair]
        for performer in performers[:args.copies]:
            for source in sources:  # S001C001P001R001Axxx → that performer
                shutil.copyfile(source, raw / source.name.replace("P001", f"P{performer:03d}"))
        files = sorted(raw.iterdir())

        def parse_all() -> None:
            for path in files:
                read_ntu_skeleton(path)

        result = {
            "files": len(files),
            "parse_files_per_s": median_rate(len(files), parse_all),
            "prepare_1_worker_files_per_s": median_rate(
                len(files), lambda: prepare_ntu(Path(tmp) / "store1", raw_dir=raw, num_workers=1)),
            "prepare_files_per_s": median_rate(
                len(files), lambda: prepare_ntu(Path(tmp) / "store", raw_dir=raw, num_workers=args.workers)),
            "num_workers": args.workers,
            "cpu_count": os.cpu_count(),
            "loader": measure_loader(RUNS, ["dataset=ntu60", "split=xsub", f"dataset.store_dir={Path(tmp) / 'store'}"]),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
