"""NTU ``.skeleton`` parse and prepare throughput (files/s) on the real fixtures; prints JSON.

The 60 fixture files are copied under ten performer numbers (600 files) so that each run takes a
few seconds; ``prepare`` is the full path (name filtering, worker processes, denoising, store
writing), ``parse`` the single-process reader alone. Each figure is the median of three runs.

    python bench/bench_ntu_parse.py [--fixtures ../shared/fixtures] [--workers 2] [--copies 10]
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
from asgcn_lightning.data.ntu import prepare_ntu

REPO_ROOT = Path(__file__).resolve().parents[1]
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
    parser.add_argument("--fixtures", type=Path, default=REPO_ROOT.parent / "shared" / "fixtures")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--copies", type=int, default=10)
    args = parser.parse_args()
    sources = sorted((args.fixtures / "ntu" / "skeletons").glob("*.skeleton"))
    if not sources:
        raise SystemExit(f"no NTU fixtures under {args.fixtures / 'ntu' / 'skeletons'}")

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        for copy in range(args.copies):
            for source in sources:  # S001C001P001R001Axxx → performer P(copy+1)
                shutil.copyfile(source, raw / source.name.replace("P001", f"P{copy + 1:03d}"))
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
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
