"""The targets the figures are held to, and the table of a bench run (on standard error)."""

from __future__ import annotations

from typing import Any

from bench.demo import print_demo

# The reference AS-GCN at its NTU-60 configuration on this machine kind (2 cores, 2 threads).
REFERENCE_FIGURES = {"train_s_per_sample": 6.4, "infer_s_per_sample": 2.05, "rss_gb_per_sample": 1.6,
                     "train_gflop_per_sample": 206.6, "stgcn_train_s_per_sample": 1.7}
TARGETS = {"train_s_per_sample": 2.5, "rss_gb_per_sample": 0.33, "matmul_fraction": 0.7, "loader_margin": 20.0,
           "prepare_files_per_s": 290.0, "demo_fps": 25.0, "cpu_s_vs_original": 3.0, "rss_vs_original": 4.5,
           "busy_over_idle": 2.5}


def versus_original(results: dict[str, Any]) -> dict[str, float]:
    """How many times less CPU time and peak memory per training sample than the original formulation."""
    ref, original = results["models"].get("reference", {}), results["models"].get("original", {})
    ratios = {}
    for key, name in (("train_cpu_s_per_sample", "cpu_s_vs_original"), ("peak_memory_gb_per_sample", "rss_vs_original"),
                      ("train_s_per_sample", "wall_s_vs_original"),
                      ("train_gflop_per_sample", "gflop_vs_original")):
        if ref.get(key) and original.get(key):
            ratios[name] = original[key] / ref[key]
    return ratios


def check_targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The targets, for the reference configuration on a CPU; ``met`` is None where not measured."""
    ref, default = results["models"].get("reference", {}), results["models"].get("default", {})
    loader, parse = results.get("loader", {}), results.get("parse", {})
    consumed = 1 / default["train_s_per_sample"] if "train_s_per_sample" in default else None
    margin = loader["samples_per_s"] / consumed if consumed and "samples_per_s" in loader else None
    if margin is not None:
        loader["margin_over_default_training"] = margin
    checks = {
        "train_s_per_sample": (ref.get("train_s_per_sample"), "<=", TARGETS["train_s_per_sample"]),
        "rss_gb_per_sample": (ref.get("peak_memory_gb_per_sample"), "<=", TARGETS["rss_gb_per_sample"]),
        "matmul_fraction": (ref.get("matmul_fraction"), ">=", TARGETS["matmul_fraction"]),
        "loader_margin": (margin, ">=", TARGETS["loader_margin"]),
        "prepare_files_per_s": (parse.get("prepare_files_per_s"), ">=", TARGETS["prepare_files_per_s"]),
    }
    ratios = versus_original(results)
    for key in ("cpu_s_vs_original", "rss_vs_original"):
        checks[key] = (ratios.get(key), ">=", TARGETS[key])
    if "busy_machine" in results:  # python train.py model=asgcn_tiny trainer.max_epochs=2 beside 2 CPU hogs ÷ alone
        checks["busy_over_idle"] = (results["busy_machine"].get("busy_over_idle"), "<=", TARGETS["busy_over_idle"])
    if "demo" in results:  # the slowest mode: the goal holds for the demo as a whole
        checks["demo_fps"] = (results["demo"].get("fps_slowest_median"), ">=", TARGETS["demo_fps"])
    return {key: {"value": value, "target": f"{op} {target}",
                  "met": None if value is None else (value <= target if op == "<=" else value >= target)}
            for key, (value, op, target) in checks.items()}


def print_table(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    models = {name: r for name, r in results["models"].items() if "error" not in r}
    table = Table(title=f"asgcn-lightning bench ({results['device']}, {results['threads']} threads, OpenMP wait "
                        f"{results['omp_wait_policy']}, load {results['load_average'][0]:.1f})")
    table.add_column("metric")
    for name in models:
        table.add_column(f"{name}\n(model={models[name]['model']}, T={models[name]['frames']})", justify="right")
    table.add_column("issue's reference AS-GCN", justify="right")
    rows = [("train s/sample (batch 8)", "train_s_per_sample", "{:.3f}", REFERENCE_FIGURES["train_s_per_sample"]),
            ("AIM-stage train s/sample", "aim_train_s_per_sample", "{:.3f}", None),
            ("infer s/sample, batch 1", "infer_b1_s_per_sample", "{:.3f}", REFERENCE_FIGURES["infer_s_per_sample"]),
            ("infer s/sample, batch 8", "infer_b8_s_per_sample", "{:.3f}", None),
            ("peak memory GB/sample", "peak_memory_gb_per_sample", "{:.3f}", REFERENCE_FIGURES["rss_gb_per_sample"]),
            ("saved for backward GB/sample", "saved_gb_per_sample", "{:.3f}", None),
            ("train GFLOP/sample", "train_gflop_per_sample", "{:.1f}", REFERENCE_FIGURES["train_gflop_per_sample"]),
            ("infer GFLOP/sample", "infer_gflop_per_sample", "{:.1f}", None),
            ("train GFLOP/s", "train_gflops", "{:.1f}", None),
            ("matmul GFLOP/s (same process)", "matmul_gflops", "{:.1f}", None),
            ("train FLOP/s / matmul", "matmul_fraction", "{:.0%}", None),
            ("train CPU-s/sample", "train_cpu_s_per_sample", "{:.3f}", None),
            ("train GFLOP per CPU-s", "train_gflops_per_cpu_s", "{:.1f}", None),
            ("matmul GFLOP per CPU-s", "matmul_gflops_per_cpu_s", "{:.1f}", None),
            ("per CPU-s: train / matmul", "matmul_fraction_cpu", "{:.0%}", None)]
    if results["device"].startswith("cuda"):
        rows.insert(1, ("train bf16 s/sample", "train_bf16_s_per_sample", "{:.3f}", None))
    for label, key, fmt, reference in rows:
        cells = [fmt.format(r[key]) if key in r else "–" for r in models.values()]
        table.add_row(label, *cells, "–" if reference is None else str(reference))
    console = Console(stderr=True)
    if models:  # none with --configs alone
        console.print(table)
        kinds = {key: ", ".join(sorted({str(r.get(key)) for r in models.values()}))
                 for key in ("malloc", "memory_kind")}
        console.print(f"peak memory: {kinds['memory_kind']} (malloc: {kinds['malloc']})")
    if results["load_average"][0] > (results.get("cpu_count") or 1):
        console.print("[yellow]the machine was busy with other work (load above the core count): times are "
                      "pessimistic, and spinning OpenMP threads much more so (try --omp-passive or --threads 1); "
                      "the CPU-second figures of a one-thread run hold best[/]")
    for name, r in results["models"].items():
        if "error" in r:
            console.print(f"[red]{name} failed:[/] {r['error']}")
    loader, parse = results.get("loader", {}), results.get("parse", {})
    if "samples_per_s" in loader:
        console.print(f"data loader (synthetic, batch {loader['batch']}): {loader['samples_per_s']:.0f} samples/s "
                      f"with {loader['num_workers']} workers, {loader['samples_per_s_0_workers']:.0f} in-process")
    if "prepare_files_per_s" in parse:
        console.print(f"NTU .skeleton: parse {parse['parse_files_per_s']:.0f} files/s, prepare "
                      f"{parse['prepare_files_per_s']:.0f} files/s ({parse['num_workers']} workers); "
                      f"ntu60 xsub loader {parse['loader']['samples_per_s']:.0f} samples/s")
    elif "skipped" in parse:
        console.print(f"NTU parse: skipped ({parse['skipped']})")
    for name, ratio in versus_original(results).items():
        console.print(f"reference vs original formulation: {name.replace('_vs_original', '')} {ratio:.2f}× less")
    print_demo(results.get("demo"), console)
    busy = results.get("busy_machine", {})
    if "busy_over_idle" in busy:
        console.print(f"busy machine ({busy['command']}, medians of {busy['repeats']}): "
                      f"{busy['project']['idle_median_s']:.1f} s alone, "
                      f"{busy['project']['busy_median_s']:.1f} s beside "
                      f"{busy['hogs']} CPU hogs ({busy['busy_over_idle']:.2f}×)"
                      + (f"; libgomp's spinning default {busy['spinning']['idle_median_s']:.1f} s / "
                         f"{busy['spinning']['busy_median_s']:.1f} s ({busy['spinning']['busy_over_idle']:.2f}×)"
                         if "spinning" in busy else ""), soft_wrap=True)
    for key, check in results["targets"].items():
        mark = {True: "[green]met[/]", False: "[red]not met[/]", None: "[yellow]not measured[/]"}[check["met"]]
        value = "–" if check["value"] is None else f"{check['value']:.3g}"
        console.print(f"target {key} {check['target']}: {value} {mark}")
    for name, r in results["models"].items():
        if "profile" in r:
            console.print(f"\n[bold]{name}: one training step[/]\n{r['profile']}")
