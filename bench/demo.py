"""``demo.py``'s end-to-end frame rate, offline and in real time, on PyTorch and onnxruntime.

A tiny BODY_25 model is trained with ``train.py`` on the recorded soccer-kick OpenPose fixtures
(labelled curl or laces, the kick type), then the demo runs on ``video/ta_chi.mp4`` with BlazePose.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asgcn_lightning.config import compose_config
from asgcn_lightning.errors import UserError
from bench import REPO_ROOT

# demo.py overrides of each measured mode: offline writes the annotated video, real time draws and drops it
DEMO_MODES: dict[str, list[str]] = {
    "offline torch": [],
    "offline onnx": ["backend=onnx"],
    "real time torch": ["realtime=true", "output=none"],
    "real time onnx": ["realtime=true", "output=none", "backend=onnx"],
}


def train_demo_model(kicks: Path, run_dir: Path, epochs: int = 2) -> Path:
    """``python train.py model=tiny dataset=openpose_folder ...`` on the 20 kicks; returns its last checkpoint."""
    run_dir.mkdir(parents=True, exist_ok=True)
    table = np.load(kicks / "labels.npy", allow_pickle=True)  # column 4: kick type, 0 curl / 1 laces
    labels = run_dir / "kick_labels.csv"
    labels.write_text("video,label\n" + "".join(f"Kick_{row[0]},{('curl', 'laces')[row[4]]}\n" for row in table))
    command = [sys.executable, "train.py", "model=tiny", "dataset=openpose_folder", f"dataset.root={kicks / 'json'}",
               f"dataset.labels={labels}", f"dataset.store_dir={run_dir / 'store'}", "dataset.num_person=1",
               "dataset.auto_prepare=true", "dataset.num_workers=0", "split=random", f"trainer.max_epochs={epochs}",
               "test_after_fit=false", "logger=csv", "torch_threads=1", f"hydra.run.dir={run_dir}"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UserError(f"training the demo model failed: {(done.stderr or done.stdout).strip().splitlines()[-1]}")
    return run_dir / "checkpoints" / "last.ckpt"


def measure_demo(ckpt: Path, video: Path, runs: int, work_dir: Path, max_frames: int | None = None,
                 console: Any = None) -> dict[str, Any]:
    """Median end-to-end fps of ``run_demo`` per mode of :data:`DEMO_MODES` over ``runs`` runs each.

    The modes take turns run after run, so a change in the machine's load touches them alike. The
    ONNX model is exported before the first run: an export is not part of a frame rate.
    """
    from asgcn_lightning.apps.demo import run_demo
    from asgcn_lightning.apps.predict import load_recogniser

    base = [f"ckpt_path={ckpt}", f"input={video}", "torch_threads=1"]
    if max_frames is not None:
        base.append(f"max_frames={max_frames}")
    threads = torch.get_num_threads()
    try:
        load_recogniser(compose_config("demo", base, work_dir / "export"), "onnx")
        fps: dict[str, list[float]] = {mode: [] for mode in DEMO_MODES}
        frames, classifications = 0, dict.fromkeys(DEMO_MODES, 0)
        load_before = list(os.getloadavg())
        for run in range(runs):
            for mode, overrides in DEMO_MODES.items():
                out = work_dir / f"{mode.replace(' ', '_')}_{run}"
                report = run_demo(compose_config("demo", [*base, *overrides], out), console)
                fps[mode].append(report.fps)
                frames, classifications[mode] = report.frames, len(report.classifications)
    finally:
        torch.set_num_threads(threads)  # the demo sets torch_threads=1 for the process
    return {"video": str(video), "frames": frames, "runs": runs, "torch_threads": 1, "pose": "BlazePose complexity 1",
            "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
            "modes": {mode: {"fps_median": statistics.median(values), "fps": values,
                             "classifications": classifications[mode]} for mode, values in fps.items()},
            "fps_slowest_median": min(statistics.median(values) for values in fps.values())}


def run_demo_bench(fixtures: Path | None, quick: bool) -> dict[str, Any]:
    """Train the demo model, then :func:`measure_demo` on ``video/ta_chi.mp4`` of the fixtures."""
    from rich.console import Console

    if fixtures is None:
        return {"skipped": "no --fixtures folder given (video/ta_chi.mp4 and openpose/soccer_kicks)"}
    video, kicks = fixtures / "video" / "ta_chi.mp4", fixtures / "openpose" / "soccer_kicks"
    for needed in (video, kicks / "labels.npy"):
        if not needed.is_file():
            return {"skipped": f"{needed} not found"}
    with tempfile.TemporaryDirectory() as tmp:
        begin = time.perf_counter()
        try:
            ckpt = train_demo_model(kicks, Path(tmp) / "kick_run")
            trained = time.perf_counter() - begin
            result = measure_demo(ckpt, video, 1 if quick else 3, Path(tmp) / "demo", console=Console(stderr=True))
        except UserError as error:  # e.g. the video extra (OpenCV, mediapipe) not installed
            return {"skipped": str(error)}
    return {**result, "model": "tiny, BODY_25, soccer kicks", "train_seconds": trained,
            "seconds": time.perf_counter() - begin}


def print_demo(demo: dict[str, Any] | None, console: Any) -> None:
    """The demo's median frame rates per mode, with the load they were measured under."""
    from rich.table import Table

    if demo is None:
        return
    if "modes" not in demo:
        console.print(f"demo: skipped ({demo.get('skipped')})")
        return
    load = f"load {demo['load_average_before'][0]:.1f} → {demo['load_average_after'][0]:.1f}"
    table = Table(title=f"demo.py on {Path(demo['video']).name} ({demo['frames']} frames, torch_threads=1, "
                        f"median of {demo['runs']}, {load})")
    for column in ("mode", "fps (median)", "fps (each run)", "classifications"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for mode, figures in demo["modes"].items():
        table.add_row(mode, f"{figures['fps_median']:.1f}", ", ".join(f"{v:.1f}" for v in figures["fps"]),
                      str(figures["classifications"]))
    console.print(table)
