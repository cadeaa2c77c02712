"""``python -m bench [--quick] [--configs reference default stgcn] [--fixtures <folder>] ...``: the benchmark suite.

Each model configuration is measured in a fresh subprocess (``--worker``), so its peak memory is
its own; then the data loaders, NTU parsing and the demo (both from the recorded fixtures of
``--fixtures``; skipped with the reason without them). The figures go to standard output as one
line of JSON and to ``bench/results/<timestamp>.json``; the table goes to standard error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from asgcn_lightning.memory import set_malloc_mmap_threshold
from bench import REPO_ROOT
from bench.busy import measure_busy_machine
from bench.demo import run_demo_bench
from bench.loading import measure_loader, measure_parse
from bench.measure import CONFIGS, matmul_flops, measure_model
from bench.report import REFERENCE_FIGURES, check_targets, print_table

RESULTS_DIR = REPO_ROOT / "bench" / "results"
HUGE_PAGES = "THP_MEM_ALLOC_ENABLE"  # read by PyTorch's CPU allocator at its first allocation


def run_worker(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`measure_model` in a fresh interpreter, for a peak memory of that configuration alone."""
    command = [sys.executable, "-m", "bench", "--worker", name, "--device", args.device,
               "--threads", str(args.threads)]
    flags = ("quick", "profile", "return_freed_memory")
    command += [f"--{flag.replace('_', '-')}" for flag in flags if getattr(args, flag)]
    if args.batch:
        command += ["--batch", str(args.batch)]
    env = dict(os.environ)
    if args.omp_passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if args.huge_pages:
        env[HUGE_PAGES] = "1"
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip()[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description="The benchmark suite of asgcn-lightning.")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a smaller parse run")
    parser.add_argument("--configs", nargs="*", choices=sorted(CONFIGS), default=["reference", "original", "default"],
                        help="model configurations to measure; none (--configs alone): no model figures")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--batch", type=int, default=None,
                        help="batch size of every configuration instead of its own (8): for machines with less memory")
    parser.add_argument("--profile", action="store_true", help="add a torch.profiler table of one training step")
    parser.add_argument("--return-freed-memory", action="store_true",
                        help="glibc malloc returns freed blocks over 1 MiB to the kernel (see asgcn_lightning.memory)")
    parser.add_argument("--huge-pages", action="store_true",
                        help=f"{HUGE_PAGES}=1: PyTorch asks the kernel for transparent huge pages for tensors of 2 MiB "
                             "and more (docs/performance.md: less memory, a slower step)")
    parser.add_argument("--omp-passive", action="store_true",
                        help="OpenMP threads sleep instead of spinning while they wait (OMP_WAIT_POLICY=PASSIVE): "
                             "on cores shared with other work, 2 threads then run 2× faster, not 2× slower")
    parser.add_argument("--busy-repeats", type=int, default=None,
                        help="alternated rounds of the busy-machine figure (default 2, 1 with --quick; 0: skipped)")
    parser.add_argument("--busy-baseline", action="store_true",
                        help="busy-machine figure also with libgomp's spinning default, for comparison")
    parser.add_argument("--skip-data", action="store_true", help="no loader or NTU parse figures")
    parser.add_argument("--skip-demo", action="store_true", help="no demo.py frame rates (about 75 s on 2 cores)")
    parser.add_argument("--fixtures", type=Path, default=None,
                        help="the recorded fixtures (ntu/skeletons, openpose/soccer_kicks, video/ta_chi.mp4)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--worker", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 5
    device = torch.device(args.device)
    if args.worker:
        returned = args.return_freed_memory and set_malloc_mmap_threshold(1 << 20)
        result = measure_model(args.worker, repeats, device, args.profile, args.batch)
        print(json.dumps({**result, "malloc": "mmap threshold 1 MiB" if returned else "default",
                          "huge_pages": os.environ.get(HUGE_PAGES) == "1"}))
        return

    results: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "device": str(device), "threads": args.threads,
        "torch": torch.__version__, "cpu_count": os.cpu_count(), "quick": args.quick,
        "omp_wait_policy": "PASSIVE" if args.omp_passive else os.environ.get("OMP_WAIT_POLICY", "default"),
        "load_average": list(os.getloadavg()), "reference_figures": REFERENCE_FIGURES,
        "machine_matmul_gflops": matmul_flops(device)[0] / 1e9,
        "models": {name: run_worker(name, args) for name in args.configs},
    }
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
    if not args.skip_data:
        results["loader"] = measure_loader(2 if args.quick else 3)
        results["parse"] = measure_parse(args.fixtures, args.quick)
    results["demo"] = {"skipped": "--skip-demo"} if args.skip_demo else run_demo_bench(args.fixtures, args.quick)
    busy_repeats = args.busy_repeats if args.busy_repeats is not None else (1 if args.quick else 2)
    results["busy_machine"] = (measure_busy_machine(busy_repeats, baseline=args.busy_baseline) if busy_repeats > 0
                               else {"skipped": "--busy-repeats 0"})
    results["load_average_after"] = list(os.getloadavg())
    results["targets"] = check_targets(results)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=1))
    print_table(results)  # on stderr: standard output is the JSON alone (make bench > figures.json)
    print(f"results: {path}", file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
