"""BatchNorm statistics over the global batch on CPUs too, for ``trainer.sync_batchnorm=true``.

PyTorch's ``SyncBatchNorm`` runs only on GPUs (no CPU kernels, and DDP rejects it for CPU
modules), so DDP over CPU processes (``trainer=ddp_sim``, CPU clusters) would normalise each
process's shard on its own and train another model than one process with the same global batch.
On CPU the per-channel statistics here go through differentiable all-reduces instead; on GPUs
PyTorch's fused ``SyncBatchNorm`` is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist
from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm
from lightning.pytorch.strategies import DDPStrategy
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose gradient is the sum of all processes' gradients (each loss uses the sum)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def runs_on_cpu(accelerator: str) -> bool:
    """Whether ``trainer.accelerator`` trains on CPUs: ``cpu``, or ``auto`` on a machine without CUDA."""
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())


def process_count(devices: int | str | Sequence[int], num_nodes: int = 1, accelerator: str = "auto") -> int:
    """Training processes of a run, as Lightning counts them: devices per node × nodes.

    ``auto``/``-1`` mean every GPU when there are GPUs, else one CPU process.
    """
    if isinstance(devices, str) and devices.strip() not in ("auto", "-1"):
        devices = [d for d in devices.split(",") if d.strip()] if "," in devices else int(devices)
    if devices in ("auto", "-1", -1):
        count = 1 if runs_on_cpu(accelerator) or not torch.cuda.is_available() else torch.cuda.device_count()
    else:
        count = len(devices) if isinstance(devices, Sequence) else int(devices)
    return count * int(num_nodes)


def training_strategy(devices: int | str | Sequence[int] = 1, num_nodes: int = 1, accelerator: str = "auto",
                      start_method: str = "popen", process_group_backend: str | None = None,
                      find_unused_parameters: bool = True, timeout_s: float | None = None) -> str | DDPStrategy:
    """The strategy of ``trainer.strategy``: one process as is, several through DDP.

    ``find_unused_parameters``: in the AIM stage only the AIM gets gradients and in the main stage
    (``aim.mode=frozen``) only the backbone and heads, so DDP must look for unused parameters.
    ``timeout_s`` bounds every collective: a process that died or went out of step ends the run
    with an error after that long instead of leaving the others waiting for ever (None: 5 minutes on
    CPUs, 30 on GPUs, where one process may compile or save much longer alone).
    """
    if process_count(devices, num_nodes, accelerator) == 1:
        return "auto"
    if timeout_s is None:
        timeout_s = 300 if runs_on_cpu(accelerator) else 1800
    return DDPStrategy(start_method=start_method, process_group_backend=process_group_backend,
                       find_unused_parameters=find_unused_parameters, timeout=timedelta(seconds=timeout_s))


COLLECTIVE_FAILURES = ("gloo", "nccl", "connection closed by peer", "connection reset by peer", "timed out", "timeout",
                       "pair closure")


def collective_failure(error: BaseException) -> str | None:
    """The first line of ``error`` when it is a failed collective (a process died, hung or went out of step)."""
    text = str(error).strip()
    failed = isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and any(word in text.lower() for word in COLLECTIVE_FAILURES))
    return (text.splitlines() or [type(error).__name__])[0] if failed else None


def all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over all processes (torch.distributed.nn's version is deprecated)."""
    return _AllReduceSum.apply(tensor)


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over all processes' samples; a plain batch norm in evaluation or in one process.

    Mean and variance take one all-reduce each (two passes, not sums of squares), which keeps the
    numbers as close to a single process's batch norm as the summation order allows.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        totals = all_reduce(torch.cat([input.sum(dims), input.new_tensor([input.numel() // input.shape[1]])]))
        count = totals[-1]
        centred = input - (totals[:-1] / count).view(shape)
        var = all_reduce(centred.square().sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(totals[:-1] / count, momentum)
                self.running_var.lerp_(var * count / (count - 1).clamp(min=1.0), momentum)
        output = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output


class SyncBatchNormPlugin(TorchSyncBatchNorm):
    """Lightning layer-sync plugin: PyTorch's ``SyncBatchNorm`` on GPUs, :class:`CPUSyncBatchNorm` on CPUs.

    ``enabled`` follows ``trainer.sync_batchnorm`` and ``accelerator`` ``trainer.accelerator``, so
    the plugin can always be configured and the Trainer flag stays the one switch.
    """

    def __init__(self, enabled: bool = True, accelerator: str = "auto") -> None:
        self.enabled = enabled
        self.on_cpu = runs_on_cpu(accelerator)

    def apply(self, model: nn.Module) -> nn.Module:
        if not self.enabled:
            return model
        return self._to_cpu_sync(model) if self.on_cpu else super().apply(model)

    @classmethod
    def _to_cpu_sync(cls, module: nn.Module) -> nn.Module:
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
            synced = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                      module.track_running_stats)
            # the same parameter and buffer objects: optimiser state and checkpoints keep pointing at them
            if module.affine:
                synced.weight, synced.bias = module.weight, module.bias
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(synced, name, getattr(module, name))
            synced.train(module.training)
            return synced
        for name, child in module.named_children():
            module.add_module(name, cls._to_cpu_sync(child))
        return module
