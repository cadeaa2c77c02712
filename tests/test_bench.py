"""``make bench``'s model figures: one configuration measured the way the suite measures each (a fresh process)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO_ROOT


def test_the_default_configuration_is_measured_in_a_worker_process() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "--worker", "default", "--device", "cpu", "--threads", "1",
                           "--quick"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert (figures["model"], figures["frames"], figures["batch"]) == ("asgcn_small", 32, 8)
    assert figures["train_gflop_per_sample"] > figures["infer_gflop_per_sample"] > 0  # backward costs FLOPs too
    assert figures["peak_memory_gb_per_sample"] > figures["saved_gb_per_sample"] > 0
    assert min(figures["train_s_per_sample"], figures["aim_train_s_per_sample"], figures["infer_b8_s_per_sample"]) > 0
