"""The optimised model paths compute what the plain formulations of ``reference_ops`` compute.

Same weights → same outputs and gradients within float tolerance, for the graph convolution (both
channel-mixing paths), the block, the whole network in both stages' passes and the AIM pair
computations; plus the behaviour the optimisations promise: only the AIM encoder runs in the main
stage, the graph convolution keeps no ``K``-times-wider intermediate for backward, and bf16
autocast works. No timings here: figures belong in ``python -m bench`` (``make bench``).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asgcn_lightning.models import reference_ops
from asgcn_lightning.models.aim import LinkEncoder, MotionDecoder, PairMLP
from asgcn_lightning.models.asgcn import ASGCN
from asgcn_lightning.models.blocks import MIN_BMM_FRAMES, ASGCBlock, ASGraphConv, TemporalConv
from asgcn_lightning.skeleton.graph import structural_links
from asgcn_lightning.skeleton.layouts import NTU25

TINY = {"channels": (8, 16), "strides": (1, 2), "max_hop": 2, "dropout": 0.0, "aim_hidden": 8,
        "aim_input_frames": 8, "aim_rollout": 4, "predict_frames": 3}
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


pytestmark = pytest.mark.usefixtures("one_thread")  # from conftest.py


def joint_major(x: torch.Tensor) -> torch.Tensor:
    """Time-major ``(B, C, T, V)`` → the blocks' joint-major ``(B, V, C, T)``."""
    return x.permute(0, 3, 1, 2).contiguous()


def perturb(module: nn.Module) -> nn.Module:
    """Move every parameter off its initial value (edge importances start at exactly one)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    return module


def gradients(module: nn.Module, run: Callable[[], torch.Tensor], *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Output and the gradients of a fixed random projection of it w.r.t. the parameters and ``inputs``."""
    module.zero_grad(set_to_none=True)
    for tensor in inputs:
        tensor.grad = None
    out = run()
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    return {"output": out.detach(), **grads, **{f"input {i}": t.grad.clone() for i, t in enumerate(inputs)}}


def assert_all_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Close within :data:`TOLERANCE`, absolute errors relative to the largest gradient: the biases in front of
    a batch norm have an exact gradient of zero, which either formulation only reaches up to rounding."""
    assert actual.keys() == expected.keys()
    scale = max(float(e.abs().max()) for e in expected.values())
    for name, e in expected.items():
        torch.testing.assert_close(actual[name], e, rtol=TOLERANCE["rtol"], atol=TOLERANCE["atol"] * scale,
                                   msg=lambda m, name=name: f"{name}: {m}")


def links(batch: int, types: int) -> tuple[torch.Tensor, torch.Tensor]:
    s_links = torch.from_numpy(structural_links(NTU25, max_hop=2))
    a_links = torch.rand(batch, types, 25, 25)
    return s_links, a_links / a_links.sum(dim=2, keepdim=True)


# -- graph convolution and block --------------------------------------------------------------------------
@pytest.mark.parametrize("frames", [1, MIN_BMM_FRAMES - 1, MIN_BMM_FRAMES + 4], ids=lambda t: f"T{t}")
@pytest.mark.parametrize("alink_types", [0, 2], ids=["slinks", "alinks"])
def test_graph_conv_matches_the_reference_formulation(frames: int, alink_types: int) -> None:
    s_links, a_links = links(3, alink_types)
    module = perturb(ASGraphConv(5, 7, 25, s_links.shape[0], alink_types, lambda_=0.7))
    x = torch.randn(3, 5, frames, 25, requires_grad=True)
    a_links.requires_grad_(alink_types > 0)  # finetuned A-links take a gradient too
    extra = (a_links,) if alink_types else ()
    optimised = gradients(module, lambda: module(joint_major(x), s_links, a_links).permute(0, 2, 3, 1), x, *extra)
    reference = gradients(module, lambda: reference_ops.graph_conv(module, x, s_links, a_links), x, *extra)
    assert_all_close(optimised, reference)


def test_graph_conv_traced_path_gives_the_same_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exporters and compilers see plain products instead of the custom Function; same result."""
    s_links, a_links = links(2, 2)
    module = perturb(ASGraphConv(4, 6, 25, s_links.shape[0], 2))
    x = torch.randn(2, 25, 4, 20)
    with torch.no_grad():
        expected = module(x, s_links, a_links)
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        torch.testing.assert_close(module(x, s_links, a_links), expected, **TOLERANCE)


@pytest.mark.parametrize("stride", [1, 2])
def test_block_matches_the_reference_formulation(stride: int) -> None:
    s_links, a_links = links(2, 2)
    block = perturb(ASGCBlock(6, 8, 25, s_links.shape[0], 2, stride=stride, temporal_kernel=5, dropout=0.0))
    x = torch.randn(2, 6, 20, 25, requires_grad=True)
    optimised = gradients(block, lambda: block(joint_major(x), s_links, a_links).permute(0, 2, 3, 1), x)
    reference = gradients(block, lambda: reference_ops.block(block, x, s_links, a_links), x)
    assert_all_close(optimised, reference)


@pytest.mark.parametrize(("frames", "stride"), [(1, 1), (2, 1), (3, 2), (4, 2)])
def test_temporal_conv_on_fewer_frames_than_its_padding_matches_the_full_kernel(frames: int, stride: int) -> None:
    # Such inputs skip the taps that only meet padding (a oneDNN bf16 backward fault); the sums are the same.
    module = perturb(TemporalConv(6, kernel_size=9, stride=stride))
    x = torch.randn(3, 5, 6, frames, requires_grad=True)

    def full_kernel() -> torch.Tensor:
        weight = module.conv.weight.view(6, 6, 1, 9)
        y = F.conv2d(x.reshape(15, 6, 1, frames), weight, module.conv.bias, (1, stride), (0, 4))
        return module.bn(y).view(3, 5, 6, -1)

    optimised, reference = gradients(module, lambda: module(x), x), gradients(module, full_kernel, x)
    assert optimised["output"].shape == reference["output"].shape
    assert_all_close(optimised, reference)


def test_block_dropout_keeps_the_expected_scale() -> None:
    s_links, _ = links(1, 0)
    block = ASGCBlock(4, 4, 25, s_links.shape[0], dropout=0.5, residual=False)
    x = joint_major(torch.randn(4, 4, 40, 25))
    outputs = torch.stack([block(x, s_links) for _ in range(40)])
    assert (outputs == 0).float().mean() > 0.5  # dropout plus ReLU
    block.eval()
    with torch.no_grad():
        torch.testing.assert_close(outputs.mean(0), block(x, s_links), rtol=0.5, atol=0.5)


# -- whole network ------------------------------------------------------------------------------------------
def test_inference_matches_the_reference_formulation() -> None:
    network = perturb(ASGCN(5, NTU25, **TINY)).eval()
    x = torch.randn(2, 3, 12, 25, 2)
    with torch.no_grad():
        torch.testing.assert_close(network(x), reference_ops.logits(network, x), **TOLERANCE)


def test_training_pass_matches_the_reference_formulation() -> None:
    network = perturb(ASGCN(5, NTU25, **TINY))
    x, labels = torch.randn(3, 3, 14, 25, 2), torch.tensor([0, 3, 4])
    observed = 14 - TINY["predict_frames"]

    def optimised() -> torch.Tensor:
        torch.manual_seed(3)  # the same Gumbel link sample in both passes
        out = network.forward_train(x)
        return torch.stack([F.cross_entropy(out.logits, labels), out.losses["prediction"]])

    def reference() -> torch.Tensor:
        torch.manual_seed(3)
        # one pass over the whole window: the classifier pools every frame, the prediction side task reads
        # the output frames that see the observed frames only
        bodies = network.bodies(x)
        a_links = network.alink_weights(bodies)
        features = reference_ops.features(network, bodies, a_links)
        clean = network.observed_output_frames(observed)
        assert 0 < clean < features.shape[2]
        pooled = features.mean(dim=(2, 3)).view(x.shape[0], x.shape[-1], -1).mean(dim=1)
        logits = network.head.fc(pooled)
        observed_bodies = bodies[:, :, :observed]
        predicted = reference_ops.prediction(network.predictor, features[:, :, :clean],
                                             network.recent_frames(observed_bodies), network.s_links, a_links)
        target = network.bodies(x[:, :, observed:]).transpose(1, 2)
        squared = (predicted - target).square().sum(dim=2)
        return torch.stack([F.cross_entropy(logits, labels), network.prediction_weight * squared.mean()])

    assert_all_close(gradients(network, optimised), gradients(network, reference))


def test_main_stage_runs_only_the_aim_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    network = ASGCN(5, NTU25, **TINY)

    def forbidden(*args: object) -> None:
        raise AssertionError("the main stage must not run the AIM decoder")

    monkeypatch.setattr(network.aim.decoder, "forward", forbidden)
    x = torch.randn(2, 3, 12, 25, 2)
    out = network.forward_train(x)
    (out.logits.sum() + out.losses["prediction"]).backward()
    network.eval()
    assert network(x).shape == (2, 5)


def test_graph_conv_keeps_no_wide_intermediate_for_backward() -> None:
    """What autograd keeps from a graph convolution: its input and the links, not ``K`` times the channels."""
    s_links, a_links = links(2, 2)
    module = ASGraphConv(16, 16, 25, s_links.shape[0], 2)
    x = torch.randn(2, 25, 16, 30, requires_grad=True)
    saved: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        module(x, s_links, a_links)
    wide = (s_links.shape[0] + 2) * x.numel()  # what the reference's formulation keeps
    assert max(saved) == x.numel() and sum(saved) < wide / 4


def test_bf16_autocast_trains_close_to_float32() -> None:
    network = perturb(ASGCN(5, NTU25, **TINY))
    x = torch.randn(2, 3, 12, 25, 2)
    network.eval()  # deterministic links and batch norm: the two passes differ only in precision
    with torch.no_grad():
        full = network.forward_train(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = network.forward_train(x)
    torch.testing.assert_close(half.logits.float(), full.logits, rtol=0.1, atol=0.1)
    network.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = network.forward_train(x)
        loss = out.logits.float().square().mean() + out.losses["prediction"]
    loss.backward()
    grads = [p.grad for name, p in network.named_parameters() if not name.startswith("aim.")]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


# -- AIM pair computations ----------------------------------------------------------------------------------
def test_pair_mlp_matches_the_explicit_concatenation() -> None:
    module = PairMLP(6, 4, 10, 5)
    nodes, pair_features = torch.randn(2, 7, 6), torch.randn(2, 7, 7, 4)
    torch.testing.assert_close(module(nodes, pair_features), reference_ops.pair_mlp(module, nodes, pair_features),
                               **TOLERANCE)


def test_link_encoder_matches_the_joint_by_joint_mean() -> None:
    module = LinkEncoder(12, 8, 3)
    trajectories = torch.randn(2, 9, 12)
    torch.testing.assert_close(module(trajectories), reference_ops.link_encoder(module, trajectories), **TOLERANCE)


def test_motion_decoder_matches_the_per_pair_einsums() -> None:
    module = perturb(MotionDecoder(3, 8, 2, rollout=3))
    poses, links = torch.randn(2, 7, 6, 3, requires_grad=True), torch.rand(2, 6, 6, 2, requires_grad=True)
    optimised = gradients(module, lambda: module(poses, links), poses, links)
    reference = gradients(module, lambda: reference_ops.motion_decoder(module, poses, links), poses, links)
    assert_all_close(optimised, reference)


# -- benchmark report ---------------------------------------------------------------------------------------
def test_bench_checks_each_target(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.report import check_targets, print_table

    model = {"model": "asgcn", "frames": 300, "train_s_per_sample": 2.0, "peak_memory_gb_per_sample": 0.5,
             "matmul_fraction": 0.75, "matmul_gflops": 100.0}
    results = {"device": "cpu", "threads": 2, "load_average": [1.0, 1.0, 1.0], "omp_wait_policy": "default",
               "models": {"reference": model, "default": {**model, "train_s_per_sample": 0.05}},
               "loader": {"samples_per_s": 300.0, "samples_per_s_0_workers": 500.0, "num_workers": 2, "batch": 16},
               "parse": {}}
    results["targets"] = check_targets(results)
    met = {key: check["met"] for key, check in results["targets"].items()}
    assert met == {"train_s_per_sample": True, "rss_gb_per_sample": False, "matmul_fraction": True,
                   "loader_margin": False, "prepare_files_per_s": None, "cpu_s_vs_original": None,
                   "rss_vs_original": None}
    original = {**model, "train_cpu_s_per_sample": 9.0, "peak_memory_gb_per_sample": 1.5}
    results["models"].update(reference={**model, "train_cpu_s_per_sample": 2.5, "peak_memory_gb_per_sample": 0.3},
                             original=original)
    targets = check_targets(results)
    assert targets["cpu_s_vs_original"]["value"] == pytest.approx(3.6) and targets["cpu_s_vs_original"]["met"]
    assert targets["rss_vs_original"]["value"] == pytest.approx(5.0) and targets["rss_vs_original"]["met"]
    assert results["loader"]["margin_over_default_training"] == pytest.approx(15.0)
    print_table(results)
    assert "not met" in capsys.readouterr().err


# -- allocator --------------------------------------------------------------------------------------------
_HEAP_SLACK = """
import os, sys, torch
from asgcn_lightning.memory import set_malloc_mmap_threshold
def resident(): return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
if sys.argv[1] == 'fixed': assert set_malloc_mmap_threshold(1 << 20)
del_after_use = torch.ones(16 << 20, dtype=torch.uint8); del del_after_use  # glibc raises its threshold
before = resident()
blocks = [torch.ones(8 << 20, dtype=torch.uint8) for _ in range(8)]  # 64 MiB of activations
kept = torch.ones(1 << 20, dtype=torch.uint8)  # allocated last: the heap cannot shrink below it
del blocks
print((resident() - before) / 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_fixed_mmap_threshold_returns_freed_activations_to_the_kernel() -> None:
    def slack(mode: str) -> float:
        run = subprocess.run([sys.executable, "-c", _HEAP_SLACK, mode], capture_output=True, text=True, check=True)
        return float(run.stdout)

    assert slack("default") > 48, "glibc's default keeps freed 8 MiB blocks resident after a 16 MiB one"
    assert slack("fixed") < 8


def test_original_training_loss_is_the_observed_single_pass() -> None:
    """The bench's baseline computes the loss of ``classifier_input=observed`` with expected A-links (no dropout)."""
    network = perturb(ASGCN(5, NTU25, **{**TINY, "classifier_input": "observed"})).double().eval()
    x, labels = torch.randn(3, 3, 14, 25, 2, dtype=torch.float64), torch.tensor([0, 3, 4])
    with torch.no_grad():
        out = network.forward_train(x)
        observed = F.cross_entropy(out.logits, labels) + out.losses["prediction"]
        torch.testing.assert_close(reference_ops.original_training_loss(network, x, labels), observed)
