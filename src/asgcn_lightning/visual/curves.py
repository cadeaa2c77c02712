"""Training curves from a run's ``csv/metrics.csv`` (Lightning's CSV logger): loss, accuracy, learning rate."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from asgcn_lightning.errors import DataFormatError, UserError

# panel title → does a metric name belong there; the first panel that claims a metric gets it
PANELS = (
    # the AIM's Gaussian NLL is orders of magnitude above the cross-entropy: a panel of its own
    ("A-link inference", lambda name: "aim" in name or name.endswith(("/nll", "/kl"))),
    ("loss", lambda name: "loss" in name or name.endswith("/ce")),
    ("accuracy", lambda name: "acc" in name),
    ("learning rate", lambda name: name.startswith("lr-")),
    ("other", lambda name: not name.startswith("perf/") and name != "stage"),
)


def metrics_csv(run_or_file: str | Path) -> Path:
    """The ``metrics.csv`` of a run folder (``<run>/csv/metrics.csv``), or the file itself."""
    path = Path(run_or_file)
    for candidate in (path, path / "csv" / "metrics.csv", path / "metrics.csv"):
        if candidate.is_file():
            return candidate
    raise DataFormatError(path, "no metrics.csv here (expected a training run folder or its csv/metrics.csv)")


def read_metrics(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Every logged metric as ``(step, value)`` points.

    The global step is the one axis every row has: the learning-rate monitor logs before an
    epoch's first step, where the epoch column is still empty.
    """
    path = metrics_csv(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "step" not in rows[0]:
        raise DataFormatError(path, "not a Lightning CSV-logger metrics file (no 'step' column)")
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        for name, text in row.items():
            if name in ("epoch", "step") or not text:
                continue
            try:
                value = float(text)
            except ValueError:
                raise DataFormatError(path, f"metric {name}: {text!r} is not a number") from None
            if math.isfinite(value):
                series.setdefault(name, []).append((float(row["step"]), value))
    if not series:
        raise DataFormatError(path, "no metric values logged yet")
    return series


def spans_orders_of_magnitude(values: Sequence[float], orders: float = 2.0) -> bool:
    """Whether positive ``values`` range over more than ``orders`` powers of ten (a log axis shows them all)."""
    positive = [value for value in values if value > 0]
    return len(positive) == len(values) > 1 and max(positive) / min(positive) > 10 ** orders


def grid_shape(panels: int, columns: int = 3) -> tuple[int, int]:
    """Rows and columns of a grid for ``panels`` panels, at most ``columns`` wide."""
    width = min(panels, columns)
    return math.ceil(panels / width), width


def curves_figure(series: dict[str, list[tuple[float, float]]], title: str = "") -> Figure:
    """One panel per metric family with a line per metric, in a grid; per-step values are left out as too noisy.

    A panel whose values span orders of magnitude (the AIM's NLL falls from ~1e5, learning rates) has a log
    axis; values down to zero or below get a symmetric log axis instead.
    """
    epochwise = {name: points for name, points in series.items() if not name.endswith("_step")}
    panels: dict[str, list[str]] = {}
    for name in sorted(epochwise):
        panel = next((panel for panel, claims in PANELS if claims(name)), None)
        if panel is not None:
            panels.setdefault(panel, []).append(name)
    if not panels:
        raise UserError(f"nothing to draw: the metrics are {sorted(series)}")
    rows, columns = grid_shape(len(panels))
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows), squeeze=False)
    for ax, (panel, names) in zip(axes.flat, panels.items(), strict=False):
        values = [value for name in names for _, value in epochwise[name]]
        for name in names:
            xs, ys = zip(*epochwise[name], strict=True)
            ax.plot(xs, ys, marker="o", markersize=3, label=name)
        ax.set_title(panel)
        ax.set_xlabel("step")
        if spans_orders_of_magnitude(values):
            ax.set_yscale("log")
        elif min(values) <= 0 < max(values) and spans_orders_of_magnitude([abs(v) for v in values if v]):
            ax.set_yscale("symlog", linthresh=min(abs(v) for v in values if v))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def save_curves(run_or_file: str | Path, path: str | Path, title: str = "") -> Path:
    """Draw the curves of a run's ``metrics.csv`` into a PNG."""
    source = metrics_csv(run_or_file)
    run = source.parent.parent
    figure = curves_figure(read_metrics(source), title or f"{run.parent.name} {run.name}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
