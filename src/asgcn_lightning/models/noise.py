"""Random draws that belong to the sample, not to the process that trains on it.

Dropout masks and Gumbel noise drawn from a process's global generator depend on which process
holds a sample and where it sits in that process's batch, so N processes would train another
model than one process with the same global batch, and a resumed run another than the
uninterrupted one. Inside :func:`per_sample_noise` every draw comes from a generator seeded by
the sample's own seed (the training sampler gives each sample one per epoch): its noise is the
same whichever process, batch position or run draws it. Outside it (evaluation, inference, code
that calls the network directly) draws fall back to torch's global generator.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F

_STREAMS: ContextVar[list[torch.Generator] | None] = ContextVar("asgcn_sample_streams", default=None)


@contextmanager
def per_sample_noise(seeds: Sequence[int] | torch.Tensor, device: torch.device | str) -> Iterator[None]:
    """Draw the noise of batch sample ``i`` from a generator seeded with ``seeds[i]``."""
    values = seeds.tolist() if isinstance(seeds, torch.Tensor) else list(seeds)
    streams = [torch.Generator(device=device).manual_seed(int(seed)) for seed in values]
    token = _STREAMS.set(streams)
    try:
        yield
    finally:
        _STREAMS.reset(token)


def rand_like(tensor: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) noise shaped like ``tensor``, whose rows are the batch's samples (or persons of them).

    With ``B`` seeded samples and ``B·k`` rows, rows ``i·k … i·k + k − 1`` belong to sample ``i``
    (the network folds persons into the batch sample-major).
    """
    streams = _STREAMS.get()
    if streams is None:
        return torch.rand_like(tensor)
    rows, samples = tensor.shape[0], len(streams)
    if rows % samples:
        raise ValueError(f"{rows} rows cannot be split over the batch's {samples} samples")
    shape = (rows // samples, *tensor.shape[1:])
    return torch.cat([torch.rand(shape, generator=stream, device=tensor.device, dtype=tensor.dtype)
                      for stream in streams])


def dropout_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """Boolean mask keeping each element with probability ``1 − p``."""
    return rand_like(like) >= p


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout whose mask follows :func:`rand_like`."""
    if not training or p <= 0:
        return x
    if p >= 1:
        return torch.zeros_like(x)
    return x * dropout_mask(x, p) / (1.0 - p)


def gumbel_softmax_hard(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """One-hot samples of ``softmax(logits)`` over the last axis, with the Gumbel-softmax straight-through gradient."""
    uniform = rand_like(logits).clamp_(min=torch.finfo(logits.dtype).tiny)
    soft = F.softmax((logits - torch.log(-torch.log(uniform))) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft
