"""Data loading figures: the training loader's samples/s, and NTU ``.skeleton`` parsing (:mod:`bench.ntu_parse`)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asgcn_lightning.apps.components import build_datamodule
from asgcn_lightning.config import compose_config
from bench import REPO_ROOT


def measure_loader(repeats: int, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Training samples/s of the data module of ``python train.py <overrides>`` (default: synthetic)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config("train", overrides, tmp, REPO_ROOT)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    result: dict[str, Any] = {"batch": datamodule.batch_size, "samples": len(datamodule.train_set)}
    for workers in sorted({int(cfg.dataset.num_workers), 0}, reverse=True):
        datamodule.num_workers = workers
        loader = datamodule.train_dataloader()
        for _ in loader:  # a warm-up epoch: worker start-up is not throughput (the workers persist)
            pass
        rates = []
        for _ in range(repeats):  # whole epochs, so prefetched batches cannot inflate the rate
            begin, count = time.perf_counter(), 0
            for batch in loader:  # (samples, labels, seeds)
                count += len(batch[0])
            rates.append(count / (time.perf_counter() - begin))
        result[f"samples_per_s_{workers}_workers"] = statistics.median(rates)
    result["num_workers"] = int(cfg.dataset.num_workers)
    result["samples_per_s"] = result[f"samples_per_s_{result['num_workers']}_workers"]
    return result


def measure_parse(fixtures: Path | None, quick: bool) -> dict[str, Any]:
    """NTU ``.skeleton`` parse and prepare files/s: ``python -m bench.ntu_parse`` on the recorded fixtures."""
    if fixtures is None:
        return {"skipped": "no --fixtures folder given (the NTU .skeleton files are under ntu/skeletons)"}
    command = [sys.executable, "-m", "bench.ntu_parse", "--fixtures", str(fixtures), "--copies", "4" if quick else "10"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"skipped": (done.stderr or done.stdout).strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])
