"""Benchmark suite (``make bench``): training and inference speed, memory, FLOPs, data loading, NTU parsing, demo fps.

    python -m asgcn_lightning.bench [--quick] [--configs reference default stgcn] [--threads N] [--profile]
                                    [--skip-data] [--skip-demo]

Each model configuration is measured in a fresh subprocess, so its peak memory is its own: the
resident set's high-water mark (reset through ``/proc/self/clear_refs``) minus the resident set
before the first step, or CUDA's peak allocation on a GPU; next to it, the bytes autograd keeps
for the backward pass, which no allocator slack inflates. Times are medians over several runs
after a warm-up run, in wall and in process CPU seconds; FLOPs come from
:class:`torch.utils.flop_counter.FlopCounterMode` on the warm-up run and are set against an fp32
matrix product timed in the same process just before, so that the ratio holds on a machine
shared with other work. The demo part trains a tiny BODY_25 model on the soccer-kick fixtures and
runs ``demo.py`` on a real video, offline and in real-time mode, on PyTorch and onnxruntime, and
reports the median end-to-end frame rate. Results go to ``bench/results/<timestamp>.json`` and a table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from asgcn_lightning.memory import set_malloc_mmap_threshold

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
FIXTURES_DIR = REPO_ROOT.parent / "shared" / "fixtures"  # the real recordings of a dev checkout (not shipped)

# model=<name> with the input the figures are quoted for; frames/classes None: the data set's
CONFIGS: dict[str, dict[str, Any]] = {
    "reference": {"model": "asgcn", "frames": 300, "num_class": 60, "batch": 8},
    "default": {"model": "asgcn_small", "frames": None, "num_class": None, "batch": 8},
    "stgcn": {"model": "stgcn", "frames": 300, "num_class": 60, "batch": 8},
}
# The reference AS-GCN at its NTU-60 configuration on this machine kind (2 cores, 2 threads; issue 9).
REFERENCE_FIGURES = {"train_s_per_sample": 6.4, "infer_s_per_sample": 2.05, "rss_gb_per_sample": 1.6,
                     "train_gflop_per_sample": 206.6, "stgcn_train_s_per_sample": 1.7}
TARGETS = {"train_s_per_sample": 2.5, "rss_gb_per_sample": 0.4, "matmul_fraction": 0.7, "loader_margin": 20.0,
           "prepare_files_per_s": 290.0, "demo_fps": 25.0}
# demo.py overrides of each measured mode: offline writes the annotated video, real time draws and drops it
DEMO_MODES: dict[str, list[str]] = {
    "offline torch": [],
    "offline onnx": ["backend=onnx"],
    "real time torch": ["realtime=true", "output=none"],
    "real time onnx": ["realtime=true", "output=none", "backend=onnx"],
}


# -- measuring -----------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(run: Callable[[], object], device: torch.device, repeats: int,
                   warmup: int = 1) -> tuple[float, float]:
    """Median wall time and median process CPU time of ``run`` over ``repeats`` calls after ``warmup`` calls.

    CUDA events time the GPU. On a CPU shared with other work the wall time grows with the load,
    while the CPU time of a one-thread run stays close to what the work costs on an idle core.
    """
    for _ in range(warmup):
        run()
    wall, cpu = [], []
    for _ in range(repeats):
        begin, begin_cpu = time.perf_counter(), time.process_time()
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            torch.cuda.synchronize(device)
            wall.append(start.elapsed_time(end) / 1000)
        else:
            run()
            wall.append(time.perf_counter() - begin)
        cpu.append(time.process_time() - begin_cpu)
    return statistics.median(wall), statistics.median(cpu)


def matmul_flops(device: torch.device, size: int = 2048, repeats: int = 7) -> tuple[float, float]:
    """FLOP/s (per second, per CPU-second) of an fp32 ``size × size`` matrix product: the practical peak."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    wall, cpu = median_seconds(lambda: a @ b, device, repeats, warmup=2)
    return 2 * size**3 / wall, 2 * size**3 / cpu


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_resident() -> bool:
    """Restart the kernel's resident-set high-water mark at the current size (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_resident_bytes(reset: bool) -> int:
    if reset:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def count_flops(run: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def saved_bytes(run: Callable[[], object], exclude: set[int]) -> int:
    """Bytes of the distinct storages that autograd keeps for the backward pass of ``run``, except ``exclude``."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in exclude:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(storages.values())


def compose(overrides: Sequence[str], output_dir: Path) -> Any:
    """The training config of ``python train.py <overrides>``, with outputs in ``output_dir``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from asgcn_lightning.config import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = hydra_compose("train", overrides=[f"paths.root_dir={REPO_ROOT}", f"paths.output_dir={output_dir}",
                                                *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def measure_model(name: str, repeats: int, device: torch.device, profile: bool) -> dict[str, Any]:
    """Everything about one model configuration; run it in a fresh process (see :func:`run_worker`)."""
    from hydra.utils import instantiate

    from asgcn_lightning.skeleton.layouts import make_layout

    spec = CONFIGS[name]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([f"model={spec['model']}"], Path(tmp))
    frames = spec["frames"] or int(cfg.dataset.window)
    num_class = spec["num_class"] or (len(cfg.dataset.classes) if cfg.dataset.classes else 10)
    batch, num_person = spec["batch"], int(cfg.dataset.num_person)
    network = instantiate(cfg.model.network, _partial_=True)(
        num_class=num_class, layout=make_layout(**cfg.dataset.layout), in_channels=3, num_person=num_person)
    network.to(device).train()
    aim_params = {id(p) for p in network.aim.parameters()} if network.aim is not None else set()
    optimizer = instantiate(cfg.model.optimizer)([p for p in network.parameters() if id(p) not in aim_params])
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, frames, network.layout.num_joints, num_person, generator=generator).to(device)
    y = torch.randint(0, num_class, (batch,), generator=generator).to(device)

    def train_step(autocast: bool = False) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = network.forward_train(x)
            loss = F.cross_entropy(out.logits, y) + sum(out.losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    result: dict[str, Any] = {"model": spec["model"], "frames": frames, "num_class": num_class, "batch": batch,
                              "num_person": num_person, "parameters": sum(p.numel() for p in network.parameters())}
    matmul, matmul_cpu = matmul_flops(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
    else:
        reset = reset_peak_resident()
        baseline = resident_bytes()
    train_flops = count_flops(train_step)  # also the warm-up run
    synchronize(device)
    seconds, cpu_seconds = median_seconds(train_step, device, repeats, warmup=0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - baseline
    else:
        peak = peak_resident_bytes(reset) - baseline
    result.update(train_s_per_sample=seconds / batch, train_gflop_per_sample=train_flops / batch / 1e9,
                  peak_memory_gb_per_sample=peak / batch / 1e9,
                  memory_kind="cuda max allocated" if device.type == "cuda" else "RSS high-water mark delta")
    result.update(train_gflops=train_flops / seconds / 1e9, matmul_gflops=matmul / 1e9,
                  matmul_fraction=train_flops / seconds / matmul)
    if device.type == "cpu":
        result.update(train_cpu_s_per_sample=cpu_seconds / batch, matmul_gflops_per_cpu_s=matmul_cpu / 1e9,
                      train_gflops_per_cpu_s=train_flops / cpu_seconds / 1e9,
                      matmul_fraction_cpu=train_flops / cpu_seconds / matmul_cpu)
    if device.type == "cuda":
        result["train_bf16_s_per_sample"] = median_seconds(lambda: train_step(True), device, repeats)[0] / batch
    def forward_loss() -> None:
        out = network.forward_train(x)
        F.cross_entropy(out.logits, y) + sum(out.losses.values())

    parameters = {p.untyped_storage().data_ptr() for p in network.parameters()}
    result["saved_gb_per_sample"] = saved_bytes(forward_loss, parameters) / batch / 1e9
    if network.aim is not None:
        aim_optimizer = torch.optim.Adam(network.aim.parameters())

        def aim_step() -> None:
            loss = sum(network.aim_loss(x).losses.values())
            aim_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            aim_optimizer.step()

        result["aim_train_s_per_sample"] = median_seconds(aim_step, device, repeats)[0] / batch

    network.eval()
    with torch.inference_mode():
        result["infer_gflop_per_sample"] = count_flops(lambda: network(x)) / batch / 1e9
        for size in (1, batch):
            seconds = median_seconds(lambda part=x[:size]: network(part), device, repeats)[0]
            result[f"infer_b{size}_s_per_sample"] = seconds / size
    if profile:
        network.train()
        with torch.profiler.profile() as profiler:
            train_step()
            synchronize(device)
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        result["profile"] = profiler.key_averages().table(sort_by=sort, row_limit=20)
    return result


def measure_loader(repeats: int, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Training samples/s of the ``SkeletonDataModule`` of ``python train.py <overrides>`` (default: synthetic)."""
    from asgcn_lightning.apps.components import build_datamodule

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(overrides, Path(tmp))
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
            for _, labels in loader:
                count += len(labels)
            rates.append(count / (time.perf_counter() - begin))
        result[f"samples_per_s_{workers}_workers"] = statistics.median(rates)
    result["num_workers"] = int(cfg.dataset.num_workers)
    result["samples_per_s"] = result[f"samples_per_s_{result['num_workers']}_workers"]
    return result


def measure_parse(quick: bool) -> dict[str, Any]:
    """NTU ``.skeleton`` parse and prepare files/s, from ``bench/bench_ntu_parse.py`` on the real fixtures."""
    script = REPO_ROOT / "bench" / "bench_ntu_parse.py"
    if not script.is_file():
        return {"skipped": f"{script} not found (a source checkout has it)"}
    command = [sys.executable, str(script), "--copies", "4" if quick else "10"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"skipped": (done.stderr or done.stdout).strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def train_kick_model(kicks: Path, run_dir: Path, store_dir: Path | None = None, epochs: int = 2) -> Path:
    """A ``model=tiny`` BODY_25 checkpoint on the 20 real soccer kicks (curl or laces), in seconds.

    A real training run (store prepared from the OpenPose JSON, Trainer, checkpoint, the run's
    config saved where a Hydra run keeps it), so the demo loads it like any user's checkpoint.
    """
    import numpy as np
    from omegaconf import OmegaConf

    from asgcn_lightning.apps.train import train

    run_dir.mkdir(parents=True, exist_ok=True)
    table = np.load(kicks / "labels.npy", allow_pickle=True)  # column 4: kick type, 0 curl / 1 laces
    labels = run_dir / "kick_labels.csv"
    labels.write_text("video,label\n" + "".join(f"Kick_{row[0]},{('curl', 'laces')[row[4]]}\n" for row in table))
    cfg = compose([
        "model=tiny", "dataset=openpose_folder", f"dataset.root={kicks / 'json'}", f"dataset.labels={labels}",
        f"dataset.store_dir={store_dir or run_dir / 'store'}", "dataset.num_person=1", "dataset.auto_prepare=true",
        "dataset.num_workers=0", "split=random", f"trainer.max_epochs={epochs}", "test_after_fit=false",
        "trainer=cpu", "trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", "logger=csv",
        "torch_threads=1",
        "callbacks.rich_progress_bar=null", "callbacks.confusion_matrix=null", "callbacks.throughput=null"], run_dir)
    (run_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    threads = torch.get_num_threads()
    try:
        train(cfg)
    finally:
        torch.set_num_threads(threads)  # train() sets torch_threads for the whole process
    return run_dir / "checkpoints" / "last.ckpt"


def measure_demo(ckpt: Path, video: Path, runs: int, work_dir: Path, max_frames: int | None = None,
                 console: Any = None) -> dict[str, Any]:
    """Median end-to-end fps of ``run_demo`` per mode of :data:`DEMO_MODES` over ``runs`` runs each.

    The modes take turns run after run, so a change in the machine's load touches them alike. The
    ONNX model is exported before the first run: an export is not part of a frame rate.
    """
    from asgcn_lightning.apps.demo import run_demo
    from asgcn_lightning.apps.predict import compose_config, load_recogniser

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


def run_demo_bench(fixtures: Path, quick: bool) -> dict[str, Any]:
    """The demo part of the bench: train the kick model, then :func:`measure_demo` on ``video/ta_chi.mp4``."""
    from rich.console import Console

    from asgcn_lightning.errors import UserError

    video, kicks = fixtures / "video" / "ta_chi.mp4", fixtures / "openpose" / "soccer_kicks"
    for needed in (video, kicks / "labels.npy"):
        if not needed.is_file():
            return {"skipped": f"{needed} not found (the real fixtures of a dev checkout)"}
    with tempfile.TemporaryDirectory() as tmp:
        begin = time.perf_counter()
        try:
            ckpt = train_kick_model(kicks, Path(tmp) / "kick_run")
            trained = time.perf_counter() - begin
            result = measure_demo(ckpt, video, 1 if quick else 3, Path(tmp) / "demo", console=Console(stderr=True))
        except UserError as error:  # e.g. the video extra (OpenCV, mediapipe) not installed
            return {"skipped": str(error)}
    return {**result, "model": "tiny, BODY_25, soccer kicks", "train_seconds": trained,
            "seconds": time.perf_counter() - begin}


def run_worker(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`measure_model` in a fresh interpreter, for a peak memory of that configuration alone."""
    command = [sys.executable, "-m", "asgcn_lightning.bench", "--worker", name, "--device", args.device,
               "--threads", str(args.threads)]
    flags = ("quick", "profile", "return_freed_memory")
    command += [f"--{flag.replace('_', '-')}" for flag in flags if getattr(args, flag)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"} if args.omp_passive else None
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip()[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- reporting -----------------------------------------------------------------------------------------
def check_targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's targets, for the reference configuration on a CPU; ``met`` is None where not measured."""
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
    print_demo(results.get("demo"), console)
    for key, check in results["targets"].items():
        mark = {True: "[green]met[/]", False: "[red]not met[/]", None: "[yellow]not measured[/]"}[check["met"]]
        value = "–" if check["value"] is None else f"{check['value']:.3g}"
        console.print(f"target {key} {check['target']}: {value} {mark}")
    for name, r in results["models"].items():
        if "profile" in r:
            console.print(f"\n[bold]{name}: one training step[/]\n{r['profile']}")


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a smaller parse run")
    parser.add_argument("--configs", nargs="*", choices=sorted(CONFIGS), default=["reference", "default"],
                        help="model configurations to measure; none (--configs alone): no model figures")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--profile", action="store_true", help="add a torch.profiler table of one training step")
    parser.add_argument("--return-freed-memory", action="store_true",
                        help="glibc malloc returns freed blocks over 1 MiB to the kernel (see asgcn_lightning.memory)")
    parser.add_argument("--omp-passive", action="store_true",
                        help="OpenMP threads sleep instead of spinning while they wait (OMP_WAIT_POLICY=PASSIVE): "
                             "on cores shared with other work, 2 threads then run 2× faster, not 2× slower")
    parser.add_argument("--skip-data", action="store_true", help="no loader or NTU parse figures")
    parser.add_argument("--skip-demo", action="store_true", help="no demo.py frame rates (about 75 s on 2 cores)")
    parser.add_argument("--fixtures", type=Path, default=FIXTURES_DIR, help="the real data fixtures (demo video)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--worker", choices=sorted(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 5
    device = torch.device(args.device)
    if args.worker:
        returned = args.return_freed_memory and set_malloc_mmap_threshold(1 << 20)
        result = measure_model(args.worker, repeats, device, args.profile)
        print(json.dumps({**result, "malloc": "mmap threshold 1 MiB" if returned else "default"}))
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
        results["parse"] = measure_parse(args.quick)
    results["demo"] = {"skipped": "--skip-demo"} if args.skip_demo else run_demo_bench(args.fixtures, args.quick)
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
