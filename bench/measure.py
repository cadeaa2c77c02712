"""One model configuration measured: training and inference step times, peak memory, FLOPs.

Peak memory is the resident set's high-water mark (reset through ``/proc/self/clear_refs``) minus the
resident set before the first step, or CUDA's peak allocation on a GPU; next to it, the bytes
autograd keeps for the backward pass, which no allocator slack inflates. Times are medians over
several runs after a warm-up run, in wall and in process CPU seconds; FLOPs come from
:class:`torch.utils.flop_counter.FlopCounterMode` on the warm-up run and are set against an fp32
matrix product timed in the same process just before, so that the ratio holds on a machine shared
with other work. :func:`measure_model` is meant for a fresh process (``python -m bench --worker``),
so that its peak memory is its own.
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from asgcn_lightning.config import compose_config
from asgcn_lightning.models import reference_ops
from asgcn_lightning.skeleton.layouts import make_layout
from bench import REPO_ROOT

# model=<name> with the input the figures are quoted for; frames/classes None: the data set's. "original": the
# reference configuration's weights computed as the original code does (reference_ops.original_training_loss).
# Every input has NTU's 25 joints: the data sets' configs leave the layout to their prepared stores.
BENCH_LAYOUT = "ntu25"
CONFIGS: dict[str, dict[str, Any]] = {
    "reference": {"model": "asgcn", "frames": 300, "num_class": 60, "batch": 8},
    "original": {"model": "asgcn", "frames": 300, "num_class": 60, "batch": 8, "original": True},
    "default": {"model": "asgcn_small", "frames": None, "num_class": None, "batch": 8},
    "stgcn": {"model": "stgcn", "frames": 300, "num_class": 60, "batch": 8},
}


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


def measure_model(name: str, repeats: int, device: torch.device, profile: bool,
                  batch: int | None = None) -> dict[str, Any]:
    """Everything about one model configuration; run it in a fresh process (see :func:`run_worker`).

    ``batch`` replaces the configuration's batch size (the original formulation at batch 8 needs about
    12 GB), so a smaller machine can compare both formulations at one smaller batch.
    """
    spec = CONFIGS[name]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config("train", [f"model={spec['model']}"], tmp, REPO_ROOT)
    frames = spec["frames"] or int(cfg.dataset.window)
    num_class = spec["num_class"] or (len(cfg.dataset.classes) if cfg.dataset.classes else 10)
    batch, num_person = batch or spec["batch"], int(cfg.dataset.num_person)
    network = instantiate(cfg.model.network, _partial_=True)(
        num_class=num_class, layout=make_layout(BENCH_LAYOUT), in_channels=3, num_person=num_person)
    network.to(device).train()
    aim_params = {id(p) for p in network.aim.parameters()} if network.aim is not None else set()
    optimizer = instantiate(cfg.model.optimizer)([p for p in network.parameters() if id(p) not in aim_params])
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, frames, network.layout.num_joints, num_person, generator=generator).to(device)
    y = torch.randint(0, num_class, (batch,), generator=generator).to(device)

    original = spec.get("original", False)

    def training_loss() -> torch.Tensor:
        if original:
            return reference_ops.original_training_loss(network, x, y)
        out = network.forward_train(x)
        return F.cross_entropy(out.logits, y) + sum(out.losses.values())

    def train_step(autocast: bool = False) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = training_loss()
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
    parameters = {p.untyped_storage().data_ptr() for p in network.parameters()}
    result["saved_gb_per_sample"] = saved_bytes(training_loss, parameters) / batch / 1e9
    if network.aim is not None and not original:
        aim_optimizer = torch.optim.Adam(network.aim.parameters())

        def aim_step() -> None:
            loss = sum(network.aim_loss(x).losses.values())
            aim_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            aim_optimizer.step()

        result["aim_train_s_per_sample"] = median_seconds(aim_step, device, repeats)[0] / batch

    if original:  # the baseline of the training figures only
        return result
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
