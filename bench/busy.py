"""The "busy machine" figure: a short training next to two CPU-bound processes of normal priority ÷ alone.

A fair share of a 2-core machine among 2 hogs and one 2-thread training gives the training half the
cores, so about 2× the time; threads that spin while they wait for each other make it several times
more. Runs alternate (alone, busy, alone, busy, ...) and the medians are compared, as other work on
the machine comes and goes. ``baseline`` adds the same runs with libgomp's own default wait
(``GOMP_SPINCOUNT=300000``, spinning before it sleeps), the policy before :mod:`asgcn_lightning.runtime`.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench import REPO_ROOT

TRAINING = ("train.py", "model=asgcn_tiny", "trainer.max_epochs=2")
HOG = "while True: pass"
SPINNING = {"GOMP_SPINCOUNT": "300000"}  # libgomp's default without OMP_WAIT_POLICY; runtime.py then keeps it


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_training(log_dir: str, extra_env: dict[str, str]) -> dict[str, float]:
    """Wall and CPU seconds (user + system, loader workers included) of one training run in a fresh process.

    Threads that spin show as CPU seconds that did no work; with other load the CPU seconds vary less
    than the wall time. Taken before the hogs (also children) are stopped, so theirs are not counted.
    """
    command = [sys.executable, *TRAINING, f"paths.log_dir={log_dir}"]
    cpu = _children_cpu_s()
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, **extra_env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, stderr = process.communicate()
    wall, cpu = time.perf_counter() - start, _children_cpu_s() - cpu
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {stderr[-1500:]}")
    return {"wall_s": wall, "cpu_s": cpu}


def run_busy(log_dir: str, extra_env: dict[str, str], hogs: int) -> dict[str, float]:
    """One training with ``hogs`` busy loops beside it (0: alone)."""
    started = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(hogs)]
    try:
        return timed_training(log_dir, extra_env)
    finally:
        for hog in started:
            hog.kill()
            hog.wait()


def measure_busy_machine(repeats: int, hogs: int = 2, baseline: bool = False) -> dict[str, Any]:
    """Median seconds alone and busy (per wait policy), and their ratio; ``repeats`` alternated rounds."""
    policies = {"project": {}, **({"spinning": SPINNING} if baseline else {})}
    times: dict[str, dict[str, list[float]]] = {name: {"idle_s": [], "busy_s": [], "idle_cpu_s": [], "busy_cpu_s": []}
                                                for name in policies}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="bench-busy-") as log_dir:
        for _ in range(repeats):
            for condition, count in (("idle_s", 0), ("busy_s", hogs)):
                for name, env in policies.items():
                    measured = run_busy(log_dir, env, count)
                    times[name][condition].append(measured["wall_s"])
                    times[name][condition.replace("_s", "_cpu_s")].append(measured["cpu_s"])
                    load.append(os.getloadavg()[0])
    result: dict[str, Any] = {"command": "python " + " ".join(TRAINING), "hogs": hogs, "repeats": repeats,
                              "hog": f"python -c '{HOG}'", "load_average_1min": load}
    for name, measured in times.items():
        idle, busy = statistics.median(measured["idle_s"]), statistics.median(measured["busy_s"])
        result[name] = {**measured, "idle_median_s": idle, "busy_median_s": busy, "busy_over_idle": busy / idle,
                        "idle_median_cpu_s": statistics.median(measured["idle_cpu_s"]),
                        "busy_median_cpu_s": statistics.median(measured["busy_cpu_s"])}
    result["busy_over_idle"] = result["project"]["busy_over_idle"]
    if baseline:
        result["idle_vs_spinning"] = result["project"]["idle_median_s"] / result["spinning"]["idle_median_s"]
    return result


if __name__ == "__main__":  # python -m bench.busy [repeats]: this figure alone, both policies
    import json

    print(json.dumps(measure_busy_machine(int(sys.argv[1]) if len(sys.argv) > 1 else 2, baseline=True), indent=1))
