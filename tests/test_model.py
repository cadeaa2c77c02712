"""The AS-GCN network: reference parameter counts, shapes for any layout, both training stages, ablations;
the module's one classification path and multi-clip testing."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning import Trainer
from torch.utils.data import DataLoader, TensorDataset

from asgcn_lightning.data.sources.synthetic import SyntheticSkeletons
from asgcn_lightning.data.transforms import CentreOnJoint, Compose, UniformSample
from asgcn_lightning.errors import UserError
from asgcn_lightning.models.asgcn import ASGCN
from asgcn_lightning.models.module import ActionRecognitionModule
from asgcn_lightning.models.summary import REFERENCE, count, main, parameter_counts
from asgcn_lightning.skeleton.layouts import BUILTIN_LAYOUTS, NTU25, Layout, make_layout
from asgcn_lightning.visual.alinks import save_alink_figure

TINY = {"channels": (16, 16, 32), "strides": (1, 2, 1), "max_hop": 2, "dropout": 0.0, "aim_hidden": 16,
        "aim_input_frames": 12, "aim_rollout": 4, "predict_frames": 4}
REFERENCE_CHANNELS = (64, 64, 64, 128, 128, 128, 256, 256, 256)
CUSTOM8 = make_layout(
    "custom8", joints=["hip", "spine", "neck", "head", "left_hand", "right_hand", "left_foot", "right_foot"],
    edges=[("hip", "spine"), ("spine", "neck"), ("neck", "head"), ("neck", "left_hand"),
           ("neck", "right_hand"), ("hip", "left_foot"), ("hip", "right_foot")],
    centre="spine",
)
LAYOUTS = [*BUILTIN_LAYOUTS.values(), CUSTOM8]


pytestmark = pytest.mark.usefixtures("one_thread")  # from conftest.py


def synthetic_batch(first: int, size: int, frames: int = 24,
                    num_person: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` synthetic NTU samples ``(N, 3, frames, 25, M)``, every second frame so that poses move."""
    generator = SyntheticSkeletons()
    records = generator.records()[first:first + size]
    samples = [generator.sample(r)[: 2 * frames : 2, :num_person].transpose(3, 0, 2, 1) for r in records]
    return torch.from_numpy(np.stack(samples)), torch.tensor([r.label for r in records])


def graph_conv_size(channels: Sequence[int], in_channels: int = 3) -> int:
    """Weights and biases of one ``in → out`` 1×1 convolution slice per block: a subset or link type."""
    widths = [in_channels, *channels]
    return sum(a * b + b for a, b in itertools.pairwise(widths))


# -- parameter counts --------------------------------------------------------------------------------
def test_reference_parameter_counts_match_the_paper_code() -> None:
    counts = parameter_counts(ASGCN(60, NTU25))
    for part, reference in REFERENCE.items():
        assert abs(counts[part] - reference) <= 0.02 * reference, (part, counts[part], reference)
    assert counts["backbone + recognition"] == 4_797_267


def test_ablations_differ_by_the_expected_parameters() -> None:
    slinks_only = ASGCN(60, NTU25, use_alinks=False, prediction_head=False)
    assert slinks_only.aim is None and slinks_only.predictor is None
    assert count(slinks_only) == 4_368_211
    area = NTU25.num_joints ** 2  # one edge importance mask per subset and block
    blocks = len(REFERENCE_CHANNELS)
    per_slice = graph_conv_size(REFERENCE_CHANNELS)

    stgcn = ASGCN(60, NTU25, max_hop=1, use_alinks=False, prediction_head=False)
    assert count(stgcn) == count(slinks_only) - 6 * (per_slice + blocks * area)

    full = parameter_counts(ASGCN(60, NTU25))
    assert full["backbone + recognition"] - count(slinks_only) == 2 * per_slice

    four_types = parameter_counts(ASGCN(60, NTU25, num_alink_types=4, prediction_head=False))
    assert four_types["backbone + recognition"] - count(slinks_only) == 3 * per_slice
    assert four_types["prediction head"] == 0 and four_types["AIM"] > full["AIM"]

    alinks_only = parameter_counts(ASGCN(60, NTU25, use_slinks=False, prediction_head=False))
    # the S-links shrink to the identity (1 subset instead of 9) and two A-link slices join
    expected = count(slinks_only) - 8 * (per_slice + blocks * area) + 2 * per_slice
    assert alinks_only["backbone + recognition"] == expected
    assert alinks_only["AIM"] == full["AIM"]

    assert parameter_counts(ASGCN(60, NTU25, lambda_=1.0)) == full
    with pytest.raises(UserError):
        ASGCN(60, NTU25, use_slinks=False, use_alinks=False)
    with pytest.raises(UserError):
        ASGCN(60, NTU25, num_alink_types=1)
    with pytest.raises(UserError):
        ASGCN(60, NTU25, prior=(0.9, 0.1))


def test_summary_prints_a_table_for_any_layout(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--layout", "openpose25", "--num-class", "5"])
    out = capsys.readouterr().out
    assert "openpose25" in out and "prediction head" in out and "AIM" in out and "total" in out


# -- shapes and inference ------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
@pytest.mark.parametrize("num_person", [1, 2])
def test_shapes_for_every_layout(layout: Layout, num_person: int) -> None:
    in_channels = 2 if layout is CUSTOM8 else 3  # a 2D data set works the same way
    network = ASGCN(7, layout, in_channels=in_channels, num_person=num_person, **TINY)
    x = torch.randn(3, in_channels, 23, layout.num_joints, num_person)
    out = network.forward_train(x)
    assert out.logits.shape == (3, 7)
    assert set(out.losses) == {"prediction"} and set(out.metrics) == {"mpjpe", "mpjpe_repeat_last"}
    aim = network.aim_loss(x)
    assert set(aim.losses) == {"nll", "kl"} and set(aim.metrics) == {"aim_mse"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in [*out.losses.values(), *aim.losses.values()])
    network.eval()
    assert network(x).shape == (3, 7)
    probabilities = network.alink_probabilities(x)
    assert probabilities.shape == (3, num_person, layout.num_joints, layout.num_joints, 3)


def test_alink_probabilities_sum_to_one_and_no_joint_links_to_itself() -> None:
    network = ASGCN(5, NTU25, **TINY)
    probabilities = network.alink_probabilities(torch.randn(2, 3, 20, 25, 2))
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(probabilities.shape[:-1]))
    assert (probabilities >= 0).all()
    diagonal = probabilities.diagonal(dim1=2, dim2=3)
    assert (diagonal[:, :, 0] == 1).all()


def test_expected_alinks_are_the_same_graph_in_training_and_evaluation() -> None:
    """Sampled links in training but the most probable in evaluation shift the backbone's input graph."""
    x = torch.randn(2, 3, 20, 25, 2)
    expected = ASGCN(5, NTU25, **TINY)
    bodies = expected.bodies(x)
    with torch.no_grad():
        expected.train().aim.eval()  # as in the main stage: the AIM is frozen
        in_training = expected.alink_weights(bodies)
        in_evaluation = expected.eval().alink_weights(bodies)
    torch.testing.assert_close(in_training, in_evaluation)
    assert (in_training > 0).float().mean() > 0.9, "every pair carries its probability of each link type"
    sampled = ASGCN(5, NTU25, **{**TINY, "alinks": "sampled"})
    sampled.load_state_dict(expected.state_dict())
    with torch.no_grad():
        sampled.train().aim.eval()
        one_hot = sampled.alink_weights(bodies)
    assert (one_hot > 0).float().mean() < 0.5 and not torch.allclose(one_hot, in_training)
    with pytest.raises(UserError, match="alinks must be one of"):
        ASGCN(5, NTU25, **{**TINY, "alinks": "soft"})


def test_original_alink_normalisation_adds_self_links_and_scales_by_a_tenth() -> None:
    x = torch.randn(2, 3, 20, 25, 1)
    mean = ASGCN(5, NTU25, **{**TINY, "alinks": "sampled"}).eval()
    original = ASGCN(5, NTU25, **{**TINY, "alinks": "sampled", "alink_normalisation": "original"}).eval()
    original.load_state_dict(mean.state_dict())
    bodies = mean.bodies(x)
    with torch.no_grad():
        links = mean.aim.links(mean.aim.logits(mean.aim.resample(bodies)), sample=False)[..., 1:].permute(0, 3, 1, 2)
        weights = original.alink_weights(bodies)
    with_self = links + torch.eye(25)
    torch.testing.assert_close(weights, 0.1 * with_self / with_self.sum(dim=2, keepdim=True))
    torch.testing.assert_close(weights.sum(dim=2), torch.full((2, 2, 25), 0.1))
    with pytest.raises(UserError, match="alink_normalisation must be one of"):
        ASGCN(5, NTU25, alink_normalisation="sum")


def test_evaluation_is_deterministic() -> None:
    network = ASGCN(5, NTU25, **{**TINY, "dropout": 0.5}).eval()
    x = torch.randn(2, 3, 21, 25, 2)
    with torch.no_grad():
        torch.testing.assert_close(network(x), network(x), rtol=0, atol=0)
        first, second = network.forward_train(x), network.forward_train(x)
    torch.testing.assert_close(first.logits, second.logits, rtol=0, atol=0)
    torch.testing.assert_close(first.metrics["mpjpe"], second.metrics["mpjpe"], rtol=0, atol=0)


def test_prediction_needs_frames_to_observe() -> None:
    network = ASGCN(5, NTU25, **TINY)
    # 6 frames: observe two (the last pose and the last velocity), predict four
    assert network.forward_train(torch.randn(2, 3, 6, 25, 1)).logits.shape == (2, 5)
    with pytest.raises(UserError, match="too short"):
        network.forward_train(torch.randn(2, 3, 5, 25, 1))


def test_prediction_error_leaves_out_absent_persons() -> None:
    network = ASGCN(5, NTU25, **TINY).eval()
    x = torch.randn(2, 3, 20, 25, 2)
    x[..., 1] = 0
    with torch.no_grad():
        both, first = network.forward_train(x), network.forward_train(x[..., :1])
    # the absent person still joins the mean over persons for the logits, but not the prediction error
    torch.testing.assert_close(both.metrics["mpjpe"], first.metrics["mpjpe"])


# -- gradients in both stages ----------------------------------------------------------------------------
def test_aim_stage_reaches_every_aim_parameter() -> None:
    network = ASGCN(5, NTU25, **TINY)
    x = torch.randn(4, 3, 20, 25, 2)
    sum(network.aim_loss(x).losses.values()).backward()
    missing = [name for name, p in network.aim.named_parameters() if p.grad is None]
    assert not missing
    assert all(p.grad is None for name, p in network.named_parameters() if not name.startswith("aim."))


def test_main_stage_reaches_every_backbone_and_head_parameter() -> None:
    network = ASGCN(5, NTU25, **TINY)
    x, y = torch.randn(4, 3, 20, 25, 2), torch.randint(0, 5, (4,))
    out = network.forward_train(x)
    (F.cross_entropy(out.logits, y) + sum(out.losses.values())).backward()
    main_params = {name: p for name, p in network.named_parameters() if not name.startswith("aim.")}
    missing = [name for name, p in main_params.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(p.grad is None for p in network.aim.parameters())  # detached A-links: the AIM stays frozen


def test_finetuned_alinks_pass_gradient_into_the_encoder() -> None:
    network = ASGCN(5, NTU25, **TINY)
    network.detach_alinks = False
    out = network.forward_train(torch.randn(4, 3, 20, 25, 2))
    (out.logits.square().sum() + sum(out.losses.values())).backward()
    assert all(p.grad is not None for p in network.aim.encoder.parameters())


# -- learning on synthetic data ----------------------------------------------------------------------------
def test_aim_training_lowers_the_reconstruction_loss() -> None:
    x, _ = synthetic_batch(0, 24)
    network = ASGCN(10, NTU25, **TINY)
    with torch.no_grad():
        before = network.eval().aim_loss(x).losses["nll"]
    network.train()
    optimizer = torch.optim.Adam(network.aim.parameters(), lr=1e-2)
    for _ in range(30):
        loss = sum(network.aim_loss(x).losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = network.eval().aim_loss(x).losses["nll"]
    assert after < 0.5 * before


def test_prediction_head_beats_repeating_the_last_frame() -> None:
    # S-links only: with an untrained AIM, training-time link samples and evaluation-time argmax links
    # differ, which would blur what this test is about, the prediction head
    x, y = synthetic_batch(0, 32)
    network = ASGCN(10, NTU25, **{**TINY, "use_alinks": False})
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    for _ in range(80):
        out = network.forward_train(x)
        loss = F.cross_entropy(out.logits, y) + sum(out.losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        mpjpe = network.eval().forward_train(x).metrics["mpjpe"]
    frames = TINY["predict_frames"]
    future, last = x[:, :, -frames:], x[:, :, -frames - 1: -frames]
    repeat_last = (future - last).square().sum(1).sqrt().mean()
    assert mpjpe < 0.9 * repeat_last


# -- pictures ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", [NTU25, CUSTOM8], ids=lambda layout: layout.name)
def test_alink_figure_is_written(layout: Layout, tmp_path: Path) -> None:
    network = ASGCN(5, layout, **TINY).train()
    sample = torch.randn(3, 20, layout.num_joints, 2)
    path = save_alink_figure(network, sample, tmp_path / "alinks.png", top_k=5)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert network.training  # the picture does not leave the network in evaluation mode


# -- one classification path ---------------------------------------------------------------------------------
def tiny_module(network: ASGCN, aim_epochs: int = 1) -> ActionRecognitionModule:
    return ActionRecognitionModule(
        network, optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9),
        aim={"pretrain_epochs": aim_epochs, "optimizer": functools.partial(torch.optim.Adam, lr=1e-3)})


def test_training_classifies_the_whole_window_and_predicts_apart() -> None:
    network = ASGCN(5, NTU25, **TINY).eval()
    x = torch.randn(2, 3, 20, 25, 2)
    with torch.no_grad():
        out, side = network.forward_train(x), network.prediction(x)
        torch.testing.assert_close(out.logits, network(x), rtol=0, atol=0)
    assert out.losses == side.losses and out.metrics == side.metrics
    # the prediction metric does not see the predicted frames: changing them changes it, not the observed pass
    changed = x.clone()
    changed[:, :, -TINY["predict_frames"]:] += 1.0
    with torch.no_grad():
        moved = network.prediction(changed)
    assert moved.metrics["mpjpe_repeat_last"] > side.metrics["mpjpe_repeat_last"]
    assert ASGCN(5, NTU25, **{**TINY, "prediction_head": False}).prediction(x).losses == {}


def test_observed_classifier_input_is_the_original_single_pass() -> None:
    window = ASGCN(5, NTU25, **TINY).eval()
    observed = ASGCN(5, NTU25, **{**TINY, "classifier_input": "observed"}).eval()
    observed.load_state_dict(window.state_dict())
    x = torch.randn(2, 3, 20, 25, 2)
    with torch.no_grad():
        out = observed.forward_train(x)
        torch.testing.assert_close(out.logits, observed(x), rtol=0, atol=0)  # deployed as trained
        torch.testing.assert_close(observed(x), window(x[:, :, : -TINY["predict_frames"]]))
        assert out.metrics == window.prediction(x).metrics
    with pytest.raises(UserError, match="classifier_input must be one of"):
        ASGCN(5, NTU25, classifier_input="future")


def test_reported_accuracy_is_that_of_the_deployed_forward(tmp_path: Path) -> None:
    """With a prediction head, validation and test score ``network(x)`` on the whole window, as predict does."""
    train, test = synthetic_batch(0, 40), synthetic_batch(40, 30)
    module = tiny_module(ASGCN(10, NTU25, num_person=1, **TINY))
    trainer = Trainer(max_epochs=3, default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                      enable_model_summary=False)
    trainer.fit(module, DataLoader(TensorDataset(*train), batch_size=8, shuffle=True),
                DataLoader(TensorDataset(*test), batch_size=8))
    loader = DataLoader(TensorDataset(*test), batch_size=8)
    reported = {**trainer.validate(module, loader, verbose=False)[0], **trainer.test(module, loader, verbose=False)[0]}
    network = module.network.eval()
    with torch.no_grad():
        logits = torch.cat([network(x) for x, _ in loader])
        observed_only = torch.cat([network(x[:, :, : -TINY["predict_frames"]]) for x, _ in loader])
    deployed = logits.argmax(dim=1)
    accuracy = (deployed == test[1]).float().mean().item()
    assert reported["val/acc_top1"] == pytest.approx(accuracy, abs=1e-6)
    assert reported["test/acc_top1"] == pytest.approx(accuracy, abs=1e-6)
    assert "test/mpjpe" in reported and "test/mpjpe_repeat_last" in reported
    predicted = trainer.predict(module, loader)
    assert torch.equal(torch.cat([p["probabilities"] for p in predicted]).argmax(dim=1), deployed)
    # the loss too is that of the whole window, not of the window less the frames the prediction head predicts
    assert reported["test/ce"] == pytest.approx(F.cross_entropy(logits, test[1]).item(), rel=1e-5)
    assert reported["test/ce"] != pytest.approx(F.cross_entropy(observed_only, test[1]).item(), rel=1e-4)


def test_a_diverged_training_ends_with_an_error_after_its_epoch(tmp_path: Path) -> None:
    """Once a step's loss is NaN or infinite the run stops at the end of that epoch, naming it."""
    train = synthetic_batch(0, 24)
    module = ActionRecognitionModule(ASGCN(10, NTU25, num_person=1, **TINY),
                                     optimizer=functools.partial(torch.optim.SGD, lr=float("inf")))
    trainer = Trainer(max_epochs=3, default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                      enable_model_summary=False)
    with pytest.raises(UserError, match=r"diverged in epoch 0 \(main stage\): the loss was NaN or infinite in 2 steps"):
        trainer.fit(module, DataLoader(TensorDataset(*train), batch_size=8))
    assert trainer.current_epoch == 0 and trainer.global_step == 3


@pytest.mark.parametrize("aim_epochs", [0, 1], ids=["main-stage", "aim-stage"])
def test_an_evaluation_stand_in_counts_in_no_metric(aim_epochs: int, tmp_path: Path) -> None:
    """A process without an evaluation sample of its own runs a stand-in batch: every logged number stays that
    of the real samples."""
    from asgcn_lightning.models.module import NO_LABEL

    x, y = synthetic_batch(0, 10)
    module = tiny_module(ASGCN(10, NTU25, num_person=1, **TINY), aim_epochs=aim_epochs)
    trainer = Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                      enable_model_summary=False)
    with_stand_in = TensorDataset(torch.cat([x, x[:1] * 7]), torch.cat([y, torch.tensor([NO_LABEL])]))
    real = trainer.validate(module, DataLoader(TensorDataset(x, y), batch_size=4), verbose=False)[0]
    both = trainer.validate(module, DataLoader(with_stand_in, batch_sampler=[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [10]]),
                            verbose=False)[0]
    assert real.keys() == both.keys() and len(real) > 1, real
    for name, value in real.items():
        assert both[name] == pytest.approx(value, rel=1e-6), name
    if not aim_epochs:
        assert torch.equal(module.last_val_confusion.sum(), torch.tensor(10))


def test_side_losses_of_a_batch_are_the_sample_weighted_mean_of_its_shards() -> None:
    """AIM and prediction terms are means over samples, so processes holding shards of a batch (weighted by
    their share, as the training step and evaluation do) compute the whole batch's numbers, also when the
    shards hold different numbers of second persons."""
    x, _ = synthetic_batch(0, 7, num_person=2)
    x[..., 1] = synthetic_batch(7, 7)[0][..., 0].flip(2) + 0.5  # a second person, moving otherwise
    x[[0, 3, 4], ..., 1] = 0.0  # absent in three samples, all in the first shard
    network = ASGCN(5, NTU25, num_person=2, **TINY).eval()
    with torch.no_grad():
        whole = {**network.aim_loss(x).losses, **network.aim_loss(x).metrics, **network.forward_train(x).losses,
                 **network.forward_train(x).metrics}
        shards = [(len(part), {**network.aim_loss(part).losses, **network.aim_loss(part).metrics,
                               **network.forward_train(part).losses, **network.forward_train(part).metrics})
                  for part in (x[:5], x[5:])]
    assert set(whole) >= {"nll", "kl", "aim_mse", "prediction", "mpjpe", "mpjpe_repeat_last"}
    for name, value in whole.items():
        combined = sum(size * terms[name] for size, terms in shards) / len(x)
        torch.testing.assert_close(combined, value, rtol=1e-5, atol=0, msg=name)
        unweighted = sum(terms[name] for _, terms in shards) / len(shards)
        assert name == "kl" or not torch.isclose(unweighted, value, rtol=1e-3), name  # the shards do differ


# -- multi-clip testing -------------------------------------------------------------------------------------
def test_uniform_sample_clips_are_evenly_spaced_phases_of_each_segment() -> None:
    sequence = np.arange(40, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 3, 3), np.float32)
    layout = make_layout("line", joints=["a", "b", "c"], edges=[[0, 1], [1, 2]])
    rng = np.random.default_rng(0)
    one = Compose([UniformSample(8)])(sequence, layout, rng)
    assert one.shape == (8, 2, 3, 3)
    np.testing.assert_allclose(one[:, 0, 0, 0], 2.5 + 5 * np.arange(8))  # segment centres, as before
    three = Compose([UniformSample(8, num_clips=3), CentreOnJoint("a")])(sequence, layout, rng)
    assert three.shape == (8, 6, 3, 3)  # 3 clips of 2 persons side by side
    # clip i at the fraction (i + 0.5) / 3 of every 5-frame segment; frames then centred clip by clip
    raw = Compose([UniformSample(8, num_clips=3)])(sequence, layout, rng)
    for clip in range(3):
        expected = np.minimum(5 * (clip + 0.5) / 3 + 5 * np.arange(8), 39)  # not past the last frame
        np.testing.assert_allclose(raw[:, 2 * clip, 0, 0], expected, rtol=1e-6)
    assert (three[:, :, 0] == 0).all()
    with pytest.raises(UserError, match="num_clips > 1 is for evaluation"):
        UniformSample(8, jitter=True, num_clips=2)
    with pytest.raises(UserError, match="at most one may set num_clips"):
        Compose([UniformSample(8, num_clips=2), UniformSample(8, num_clips=3)])


def test_multi_clip_testing_averages_the_clip_probabilities(tmp_path: Path) -> None:
    clips, persons = 3, 2
    network = ASGCN(4, NTU25, num_person=persons, **{**TINY, "use_alinks": False}).eval()
    with torch.no_grad():  # an untrained network is near uniform on every clip
        for parameter in network.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    module = tiny_module(network, aim_epochs=0)
    x = torch.randn(6, 3, 16, 25, clips * persons) + 3 * torch.randn(6, 3, 1, 1, clips * persons)  # distinct clips
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    with torch.no_grad():
        single = torch.stack([network(x[..., k * persons:(k + 1) * persons]).softmax(dim=1) for k in range(clips)])
    mean = single.mean(dim=0)
    assert not torch.allclose(single[0], mean, atol=1e-2)
    trainer = Trainer(default_root_dir=tmp_path, logger=False, enable_model_summary=False)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    predicted = torch.cat([p["probabilities"] for p in trainer.predict(module, loader)])
    torch.testing.assert_close(predicted, mean)
    result = trainer.test(module, loader, verbose=False)[0]
    assert result["test/acc_top1"] == pytest.approx((mean.argmax(dim=1) == y).float().mean().item())
    assert result["test/ce"] == pytest.approx(F.nll_loss(mean.log(), y).item(), rel=1e-5)
    with pytest.raises(UserError, match="num_clips > 1 is for the eval transforms only"):
        module.training_step((x, y), 0)


# -- one backbone pass for both heads ---------------------------------------------------------------------
LONG = {**TINY, "channels": (8, 16, 16), "predict_frames": 3}  # a window long enough for observed-only frames


def test_one_backbone_pass_gives_the_two_pass_logits_and_prediction() -> None:
    """In float64, the shared pass equals a classification pass over the window plus a prediction pass over
    the observed frames (same A-links), the prediction head reading the frames that never see the future."""
    network = ASGCN(5, NTU25, **LONG).double().eval()
    x = torch.randn(2, 3, 40, 25, 2, dtype=torch.float64)
    observed = 40 - LONG["predict_frames"]
    clean = network.observed_output_frames(observed)
    assert clean == 11  # 36 → 32 (kernel 9) → 14 (stride 2) → 10: frames 0..10 of the last block
    with torch.no_grad():
        shared = network.forward_train(x)
        bodies = network.bodies(x)
        a_links = network.alink_weights(bodies)
        observed_bodies = network.bodies(x[:, :, :observed])
        second_pass = network.features(observed_bodies, a_links)[..., :clean].contiguous()
        two_pass = network._prediction_terms(x, observed_bodies, a_links, second_pass)
        torch.testing.assert_close(shared.logits, network(x), rtol=0, atol=0)
    for name, value in two_pass.losses.items():
        torch.testing.assert_close(shared.losses[name], value)
    for name, value in two_pass.metrics.items():
        torch.testing.assert_close(shared.metrics[name], value)


def test_the_shared_pass_prediction_does_not_see_the_predicted_frames() -> None:
    network = ASGCN(5, NTU25, **{**LONG, "use_alinks": False}).double().eval()
    x = torch.randn(2, 3, 40, 25, 1, dtype=torch.float64)
    changed = x.clone()
    changed[:, :, -LONG["predict_frames"]:] += 1.0
    clean = network.observed_output_frames(40 - LONG["predict_frames"])
    with torch.no_grad():
        before, after = (network.features(network.bodies(v), None)[..., :clean] for v in (x, changed))
        torch.testing.assert_close(before, after, rtol=0, atol=0)
        assert not torch.equal(network(x), network(changed))  # the classifier does see them


def test_prediction_error_counts_spatial_channels_only() -> None:
    """With ``x, y, confidence`` inputs the confidence is a feature, not a coordinate to predict or to measure."""
    network = ASGCN(5, NTU25, **{**TINY, "spatial_channels": 2}).eval()
    assert network.predictor.coord_channels == 2
    x = torch.randn(2, 3, 20, 25, 1)
    x[:, 2] = torch.rand(2, 20, 25, 1)
    x[:, 2, -1, 0] = 0.0  # a joint annotated with a confidence of 0 still counts
    lowered = x.clone()
    lowered[:, 2, -TINY["predict_frames"]:] = 0.0  # confidences of the predicted frames: not in the error
    frames = TINY["predict_frames"]
    future, last = x[:, :2, -frames:], x[:, :2, -frames - 1: -frames]
    with torch.no_grad():
        out, moved = network.forward_train(x), network.forward_train(lowered)
    torch.testing.assert_close(out.metrics["mpjpe_repeat_last"], (future - last).square().sum(1).sqrt().mean())
    torch.testing.assert_close(out.metrics, moved.metrics, rtol=0, atol=0)
    with pytest.raises(UserError, match="spatial_channels"):
        ASGCN(5, NTU25, in_channels=3, spatial_channels=4)


def test_relative_prediction_loss_stays_bounded_when_a_batch_ends_at_rest() -> None:
    """A batch whose bodies do not move in the predicted frames is measured against the running repeat-last error."""
    network = ASGCN(5, NTU25, **{**TINY, "prediction_loss": "relative_l2", "prediction_weight": 1.0}).train()
    frames = TINY["predict_frames"]
    moving = torch.randn(2, 3, 20, 25, 1)
    at_rest = moving.clone()
    at_rest[:, :, -frames:] = at_rest[:, :, -frames - 1: -frames]  # the last observed frame, held
    network.forward_train(moving)
    running = (moving[:, :, -frames:] - moving[:, :, -frames - 1: -frames]).square().sum(1).mean()
    torch.testing.assert_close(network.baseline_scale, running)  # the first batch sets it
    torch.manual_seed(0)  # the same A-link draws for both passes
    relative = network.forward_train(at_rest)
    assert relative.metrics["mpjpe_repeat_last"] == 0
    torch.testing.assert_close(network.baseline_scale, 0.9 * running)  # a tenth of the way to this batch's 0
    network.prediction_loss = "l2"
    torch.manual_seed(0)
    absolute = network.forward_train(at_rest).losses["prediction"]
    torch.testing.assert_close(relative.losses["prediction"], absolute / (0.9 * running))
    network.eval()
    with torch.no_grad():
        network.forward_train(moving)
    torch.testing.assert_close(network.baseline_scale, 0.9 * running)  # evaluation leaves it as it is
