"""Summarise a multirun folder: ``python -m asgcn_lightning.apps.sweep_summary <multirun dir>``.

Reads every job's ``.hydra/overrides.yaml`` and the ``metrics.json`` that ``train.py`` writes at the
end of a run, prints the jobs (only the overrides that differ between them) and the metric per
override value as rich tables, and writes the same as ``sweep_summary.json`` in the folder. The
metric and its direction default to the sweep's own: ``optimized_metric`` of the job config and
the Optuna sweeper's ``direction`` (else higher is better). A job's value is the best checkpoint's
score (``best/<metric>``) where the run ranked its checkpoints by that metric, as the sweeper got
it, else the last value logged. Jobs are compared on that (validation) metric only; each job's
``test/*`` metrics, scored once on its best checkpoint, are reported beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from asgcn_lightning.atomic import write_atomically
from asgcn_lightning.errors import UserError, exit_on_user_error


@dataclass
class Job:
    """One job of the sweep: its folder, overrides and the summarised metric (``None`` if missing)."""

    name: str
    dir: str
    overrides: dict[str, str]
    value: float | None
    status: str
    swept: dict[str, str] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)  # test/* of the job's best checkpoint


def _override_items(lines: list[str]) -> dict[str, str]:
    items = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        items[key.lstrip("+~")] = value
    return items


def _natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _value_key(text: str) -> tuple[int, Any]:
    """Numbers by value (natural order puts 0.1 before 0.05), anything else naturally (job9 before job10)."""
    try:
        return 0, float(text)
    except ValueError:
        return 1, _natural_key(text)


def read_jobs(multirun_dir: Path, metric: str | None) -> tuple[list[Job], str, str | None]:
    """The jobs under ``multirun_dir``, the metric name and the sweeper's direction, if it has one."""
    override_files = sorted(multirun_dir.glob("**/.hydra/overrides.yaml"),
                            key=lambda p: _natural_key(str(p.relative_to(multirun_dir))))
    if not override_files:
        raise UserError(f"{multirun_dir}: no jobs (no */.hydra/overrides.yaml); give the folder of a "
                        "`python train.py -m ...` run")
    jobs, direction = [], None
    for path in override_files:
        job_dir = path.parent.parent
        config_file, hydra_file = path.with_name("config.yaml"), path.with_name("hydra.yaml")
        if metric is None and config_file.is_file():
            metric = OmegaConf.load(config_file).get("optimized_metric")
        if direction is None and hydra_file.is_file():
            found = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.sweeper.direction", default=None)
            direction = str(found[0] if OmegaConf.is_list(found) else found) if found is not None else None
        metrics_file = job_dir / "metrics.json"
        value, status, test = None, "no metrics.json: failed or still running", {}
        if metrics_file.is_file():
            metrics = json.loads(metrics_file.read_text())
            # the best checkpoint's score where the run ranked its checkpoints by the metric: what the sweeper got
            value = metrics.get(f"best/{metric}", metrics.get(metric)) if metric else None
            status = "ok" if value is not None else f"{metric} not logged"
            test = {key: float(number) for key, number in metrics.items() if key.startswith("test/")}
        name = str(job_dir.relative_to(multirun_dir))
        jobs.append(Job(name, str(job_dir), _override_items(OmegaConf.load(path)), value, status, test=test))
    if metric is None:
        raise UserError("the jobs' configs name no optimized_metric; give one with --metric")
    swept = {key for job in jobs for key in job.overrides
             if len({other.overrides.get(key) for other in jobs}) > 1}
    for job in jobs:
        job.swept = {key: job.overrides.get(key, "") for key in sorted(swept)}
    return jobs, metric, direction


def summarise(jobs: list[Job], metric: str, mode: str) -> dict[str, Any]:
    """Best job and, for every swept override, the metric's mean and best over the jobs with each value."""
    better = max if mode == "max" else min
    done = [job for job in jobs if job.value is not None and math.isfinite(job.value)]
    best = better(done, key=lambda job: job.value) if done else None
    per_override: dict[str, dict[str, dict[str, float | int]]] = {}
    for key in jobs[0].swept if jobs else []:
        groups: dict[str, list[float]] = defaultdict(list)
        for job in done:
            groups[job.swept[key]].append(job.value)
        per_override[key] = {value: {"jobs": len(values), "mean": sum(values) / len(values), "best": better(values)}
                             for value, values in sorted(groups.items(), key=lambda kv: _value_key(kv[0]))}
    common = {k: v for k, v in (jobs[0].overrides.items() if jobs else []) if k not in jobs[0].swept}
    return {"metric": metric, "test_metric": test_counterpart(metric), "mode": mode,
            "best": asdict(best) if best else None,
            "jobs": [asdict(job) for job in jobs], "per_override": per_override, "common_overrides": common}


def test_counterpart(metric: str) -> str:
    """The test metric reported beside a validation metric: ``val/acc_top1`` → ``test/acc_top1``."""
    return "test/" + metric.removeprefix("val/")


def print_summary(summary: dict[str, Any], console: Console) -> None:
    metric, jobs, best = summary["metric"], summary["jobs"], summary["best"]
    test_metric = summary["test_metric"]
    tested = any(test_metric in job["test"] for job in jobs)
    swept = list(summary["per_override"])
    table = Table(title=f"{len(jobs)} jobs, {metric} ({summary['mode']} is best)")
    table.add_column("job", justify="right")
    for key in swept:
        table.add_column(key)
    table.add_column(metric, justify="right")
    if tested:
        table.add_column(f"{test_metric} (best checkpoint)", justify="right")
    table.add_column("status")
    for job in jobs:
        value = "" if job["value"] is None else f"{job['value']:.4f}"
        test = [f"{job['test'][test_metric]:.4f}" if test_metric in job["test"] else ""] if tested else []
        style = "bold green" if best and job["name"] == best["name"] else None
        table.add_row(job["name"], *[job["swept"][key] for key in swept], value, *test, job["status"], style=style)
    if summary["common_overrides"]:
        table.caption = "all jobs: " + " ".join(f"{k}={v}" for k, v in summary["common_overrides"].items())
    console.print(table)
    for key, values in summary["per_override"].items():
        per_value = Table(title=f"{metric} per {key}")
        for column in (key, "jobs", "mean", "best"):
            per_value.add_column(column, justify="left" if column == key else "right")
        for value, stats in values.items():
            per_value.add_row(value, str(stats["jobs"]), f"{stats['mean']:.4f}", f"{stats['best']:.4f}")
        console.print(per_value)
    if best:
        test = f", {test_metric} = {best['test'][test_metric]:.4f}" if test_metric in best["test"] else ""
        console.print(f"best: job {best['name']} {metric} = {best['value']:.4f}{test} "
                      + " ".join(f"{k}={v}" for k, v in best["swept"].items()))
    else:
        console.print(f"no job has logged {metric} yet")


def write_summary(multirun_dir: Path, metric: str | None = None, mode: str | None = None,
                  output: Path | None = None, console: Console | None = None) -> Path:
    """Print the summary tables of a multirun folder and write them as JSON (default: in that folder)."""
    if not multirun_dir.is_dir():
        raise UserError(f"{multirun_dir}: no such folder")
    jobs, metric, direction = read_jobs(multirun_dir, metric)
    mode = mode or ("min" if direction and direction.lower().startswith("min") else "max")
    summary = {"multirun_dir": str(multirun_dir), **summarise(jobs, metric, mode)}
    print_summary(summary, console or Console())
    output = output or multirun_dir / "sweep_summary.json"
    write_atomically(output, json.dumps(summary, indent=1))
    print(f"summary written to {output}", file=sys.stderr)
    return output


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m asgcn_lightning.apps.sweep_summary",
                                     description="Summarise the jobs of a Hydra multirun folder.")
    parser.add_argument("multirun_dir", type=Path, help="folder of a `python train.py -m ...` run")
    parser.add_argument("--metric", help="metric of the jobs' metrics.json (default: their optimized_metric)")
    parser.add_argument("--mode", choices=["max", "min"], help="which is best (default: the sweeper's "
                        "direction, else max)")
    parser.add_argument("--json", type=Path, help="where to write the summary (default: "
                        "<multirun dir>/sweep_summary.json)")
    args = parser.parse_args(argv)
    write_summary(args.multirun_dir, args.metric, args.mode, args.json)


if __name__ == "__main__":
    main()
