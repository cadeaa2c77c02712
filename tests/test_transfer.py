"""Beyond one data set: transfer (freezing, joint mapping), label mapping, one-shot metrics, streams, ensembles."""

from __future__ import annotations

import types
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import CONFIG_DIR
from omegaconf import OmegaConf

from asgcn_lightning.apps.components import build_datamodule, build_module
from asgcn_lightning.apps.cross_eval import cross_evaluate, label_mapping, mapped_confusion
from asgcn_lightning.apps.ensemble import ensemble, fuse, top_k
from asgcn_lightning.apps.oneshot import (
    NTU120_ONESHOT_CLASSES,
    NTU120_ONESHOT_EXEMPLARS,
    draw_support,
    few_shot_metrics,
    kshot,
    ntu120_support,
    oneshot,
)
from asgcn_lightning.apps.train import train
from asgcn_lightning.errors import UserError
from asgcn_lightning.models.asgcn import ASGCN
from asgcn_lightning.models.embedding import EmbeddingNetwork, MotionDescriptor, embeddings
from asgcn_lightning.models.layouts import NTU25, make_layout
from asgcn_lightning.models.transfer import SourceCheckpoint, Transfer, joint_mapping

FAST = ["model=tiny", "dataset.num_workers=0", "trainer.enable_progress_bar=false", "callbacks.rich_progress_bar=null"]
NATOPS8 = make_layout(name="natops8", joints=["left_hand_tip", "right_hand_tip", "left_elbow", "right_elbow",
                                              "left_wrist", "right_wrist", "left_thumb", "right_thumb"],
                      edges=[[2, 4], [4, 0], [4, 6], [3, 5], [5, 1], [5, 7], [2, 3]], centre=2)
SMALL = {"channels": [8, 8], "strides": [1, 2], "max_hop": 1, "use_alinks": False, "prediction_head": False,
         "dropout": 0.0}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # the CI machine is shared; OpenMP threads only contend


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Weights and BN statistics far from any initialisation, so a loaded tensor is recognisable."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in module.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=generator) + 0.5)


@pytest.fixture
def source_ckpt(compose, tmp_path) -> Path:
    """A 'trained' tiny synthetic model (10 classes) saved as a run folder: checkpoint + .hydra/config.yaml."""
    cfg = compose([*FAST])
    module = build_module(cfg, build_datamodule(cfg))
    _randomise(module, 0)
    run = tmp_path / "source_run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    torch.save({"state_dict": module.state_dict()}, run / "checkpoints" / "last.ckpt")
    return run / "checkpoints" / "last.ckpt"


def _fit(module: L.LightningModule, datamodule: L.LightningDataModule, steps: int) -> L.Trainer:
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=steps, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, datamodule=datamodule)
    return trainer


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# -- transfer ------------------------------------------------------------------------------------------------
def test_finetune_loads_the_source_freezes_named_modules_and_trains_the_rest_slower(compose, source_ckpt):
    cfg = compose([*FAST, "dataset.classes=[1,2,3]", "transfer=finetune", f"transfer.checkpoint={source_ckpt}",
                   "transfer.freeze=[data_bn,blocks.0]", "transfer.backbone_lr_scale=0.1"])
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    source = torch.load(source_ckpt, weights_only=False)["state_dict"]
    own = module.state_dict()
    for key in ("network.data_bn.running_mean", "network.blocks.1.graph_conv.conv.weight",
                "network.blocks.2.graph_conv.edge_importance", "network.blocks.2.temporal.bn.running_var"):
        assert torch.equal(own[key], source[key]), key  # really the source's weights
    assert module.network.head.fc.weight.shape == (3, 32) and module.num_class == 3
    assert not torch.allclose(own["network.head.fc.bias"], source["network.head.fc.bias"][:3])
    frozen = [n for n, p in module.network.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("data_bn.", "blocks.0.")) for n in frozen)

    before = _snapshot(module.network)
    trainer = _fit(module, datamodule, steps=3)
    after = module.network.state_dict()
    for key, value in before.items():
        if key.startswith(("data_bn.", "blocks.0.")):  # parameters and BN statistics alike
            assert torch.equal(after[key], value), f"frozen {key} changed"
    assert not torch.equal(after["blocks.1.graph_conv.conv.weight"], before["blocks.1.graph_conv.conv.weight"])
    assert not torch.equal(after["head.fc.weight"], before["head.fc.weight"])
    groups = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}
    assert groups["backbone"] == pytest.approx(0.1 * groups["classifier"])


def test_feature_extraction_trains_only_the_new_head(compose, source_ckpt):
    cfg = compose([*FAST, "dataset.classes=[4,5]", "transfer=feature_extraction",
                   f"transfer.checkpoint={source_ckpt}"])
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    trainable = {n for n, p in module.network.named_parameters() if p.requires_grad}
    assert trainable == {"head.fc.weight", "head.fc.bias"}
    before = _snapshot(module.network)
    _fit(module, datamodule, steps=2)
    changed = {k for k, v in module.network.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"head.fc.weight", "head.fc.bias"}  # BN statistics of the backbone included


def test_mismatched_architecture_is_refused_and_architecture_only_loads_nothing(compose, source_ckpt):
    narrow = compose([*FAST, "model.network.channels=[8,8,16]", "transfer=finetune",
                      f"transfer.checkpoint={source_ckpt}"])
    with pytest.raises(UserError, match=r"differs from the source's.*channels="):
        build_module(narrow, build_datamodule(narrow))
    cfg = compose([*FAST, "transfer=architecture_only", f"transfer.checkpoint={source_ckpt}"])
    module = build_module(cfg, build_datamodule(cfg))
    source = torch.load(source_ckpt, weights_only=False)["state_dict"]
    assert not torch.equal(module.state_dict()["network.blocks.1.graph_conv.conv.weight"],
                           source["network.blocks.1.graph_conv.conv.weight"])
    assert all(p.requires_grad for p in module.network.parameters())


def test_joint_mapping_carries_layout_dependent_tensors_across_layouts(tmp_path):
    source_net = ASGCN(num_class=6, layout=NATOPS8, in_channels=3, num_person=1, **SMALL)
    _randomise(source_net, 1)
    torch.save({"state_dict": {f"network.{k}": v for k, v in source_net.state_dict().items()}}, tmp_path / "s.ckpt")
    target_net = ASGCN(num_class=10, layout=NTU25, in_channels=3, num_person=2, **SMALL)
    init = _snapshot(target_net)
    transfer = Transfer(mode="finetune", source=SourceCheckpoint.load(tmp_path / "s.ckpt"), freeze=[],
                        backbone_lr_scale=1.0, joint_map="name", source_layout={"name": "natops8",
                        "joints": list(NATOPS8.joints), "edges": [list(e) for e in NATOPS8.edges], "centre": 2},
                        strict=True)
    report = transfer.apply(types.SimpleNamespace(network=target_net), NTU25)
    assert {"data_bn.weight", "data_bn.running_mean", "blocks.0.graph_conv.edge_importance"} <= set(report.mapped)
    target, source = target_net.state_dict(), source_net.state_dict()
    elbow, wrist, head = NTU25.index("left_elbow"), NTU25.index("left_wrist"), NTU25.index("head")
    for key in ("data_bn.weight", "data_bn.running_var"):  # joint-major: joint v owns entries 3v..3v+2
        assert torch.equal(target[key][3 * elbow:3 * elbow + 3], source[key][6:9])
        assert torch.equal(target[key][3 * head:3 * head + 3], init[key][3 * head:3 * head + 3])  # unmapped
    importance = "blocks.1.graph_conv.edge_importance"
    assert torch.equal(target[importance][:, elbow, wrist], source[importance][:, 2, 4])
    assert torch.equal(target[importance][:, head, head], init[importance][:, head, head])
    assert torch.equal(target["blocks.1.temporal.conv.weight"], source["blocks.1.temporal.conv.weight"])

    assert joint_mapping(NATOPS8, NTU25, {"head": "left_elbow", 0: 1}) == {NTU25.index("head"): 2, 0: 1}
    assert joint_mapping(NATOPS8, NTU25, "index") == {j: j for j in range(8)}
    with pytest.raises(UserError, match="no joint 'nose'"):
        joint_mapping(NATOPS8, NTU25, {"nose": 0})
    with pytest.raises(UserError, match="share no joint names"):
        joint_mapping(NATOPS8, make_layout(name="two", joints=["a", "b"], edges=[[0, 1]]))


# -- cross-data-set label mapping ------------------------------------------------------------------------
def test_label_mapping_many_to_one_and_unmapped_classes():
    source, target = ["walk", "jog", "sit", "jump"], ["move", "sit", "wave"]
    mapping = label_mapping(source, target, {"walk": "move", "jog": "move", 3: "sit"})  # "jump" unmapped
    assert mapping.labels == ["move", "sit"] and mapping.source.tolist() == [0, 0, 1, -1]
    assert mapping.target.tolist() == [0, 1, -1]  # no model class maps to "wave": not evaluated
    logits = torch.tensor([[2.5, 2.4, 3.0, 9.0],  # jump unmapped; sit beats walk or jog, not both
                           [0.0, 0.0, 1.0, 0.0],    # sit
                           [1.0, 0.0, 0.0, 0.0],    # move, but truth is "sit"
                           [0.0, 0.0, 0.0, 0.0]])   # a "wave" sample: ignored
    confusion, ignored = mapped_confusion(logits, torch.tensor([0, 1, 1, 2]), mapping)
    assert confusion.tolist() == [[1, 0], [1, 1]] and ignored == 1
    coarse = label_mapping(source, ["stroll", "rest"], {"walk": "locomotion", "sit": "still"},
                           target_map={"stroll": "locomotion", "rest": "still"})
    assert coarse.labels == ["locomotion", "still"] and coarse.target.tolist() == [0, 1]
    assert label_mapping(source, ["sit", "walk"]).source.tolist() == [1, -1, 0, -1]  # by name
    with pytest.raises(UserError, match="unknown class 'run'"):
        label_mapping(source, target, {"run": "move"})


# -- one-shot ---------------------------------------------------------------------------------------------
def test_few_shot_metrics_are_macro_averages():
    truth = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 1, 1])
    metrics = few_shot_metrics(predicted, truth, 3)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["precision"] == pytest.approx((1 + 2 / 4 + 0) / 3)   # class 2 never predicted: 0
    assert metrics["recall"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 2 * 0.5 * 1 / 1.5, 0.0]
    assert metrics["f1"] == pytest.approx(np.mean(f1))


def test_kshot_on_separable_embeddings_and_ntu120_exemplars():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 8)
    centres = torch.nn.functional.normalize(torch.randn(4, 16, dtype=torch.float64), dim=1)
    embedded = torch.nn.functional.normalize(centres[labels] + 0.05 * torch.randn(32, 16, dtype=torch.float64), dim=1)
    results = kshot(embedded, labels, 4, shots=[1, 5], draws=3, seed=0)
    assert results[1]["accuracy"]["mean"] == 1.0 and results[5]["f1"]["mean"] == 1.0
    assert len(results[5]["draws"]) == 3
    support, query = draw_support(labels, 5, rng)
    assert np.bincount(labels[support]).tolist() == [5] * 4 and len(query) == 12
    with pytest.raises(UserError, match="needs at least 9"):
        draw_support(labels, 8, rng)

    assert len(NTU120_ONESHOT_CLASSES) == 20 == len(NTU120_ONESHOT_EXEMPLARS)
    names, labels = [], []
    for label, exemplar in enumerate(NTU120_ONESHOT_EXEMPLARS):
        others = [exemplar.replace("P008", f"P{p:03d}") for p in (2, 9)]
        names += others if label == 3 else [*others, exemplar]  # A19's listed exemplar missing
        labels += [label] * (2 if label == 3 else 3)
    support, query, replaced = ntu120_support(names, np.array(labels))
    assert len(support) == 20 and len(query) == len(names) - 20
    assert {names[i] for i in support} - set(NTU120_ONESHOT_EXEMPLARS) == {"S001C003P002R001A019"}
    assert replaced == {"S001C003P008R001A019": "S001C003P002R001A019"}  # first of its class by name


def test_embedding_mode_is_invariant_to_position_and_size():
    x = torch.randn(2, 3, 12, 25, 2)
    x[1, :, :, :, 1] = 0  # an absent second person stays absent
    descriptor = MotionDescriptor(centre=NTU25.centre)
    moved = x * 2.5 + torch.tensor([0.3, -1.0, 2.0])[None, :, None, None, None]
    moved[1, :, :, :, 1] = 0
    assert torch.allclose(descriptor(x), descriptor(moved), atol=1e-5)
    network = EmbeddingNetwork(num_class=5, layout=NTU25, embedding_dim=16, **SMALL).eval()
    embedded = embeddings(network, x)
    assert embedded.shape == (2, 16) and torch.allclose(embedded.norm(dim=1), torch.ones(2))
    assert network(x).abs().max() <= 16.0 + 1e-4  # cosine logits are bounded by the scale
    plain = ASGCN(num_class=5, layout=NTU25, **SMALL).eval()
    assert embeddings(plain, x).shape == (2, 8)  # a classifier's pooled features


# -- streams, ensembles and the apps end to end ----------------------------------------------------------------
def test_stream_models_fuse_and_the_evaluation_apps_run(compose, tmp_path):
    short = [*FAST, "logger=none", "callbacks.confusion_matrix=null", "callbacks.learning_rate_monitor=null",
             "callbacks.throughput=null", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
             "test_after_fit=false", "dataset.batch_size=32"]
    checkpoints = []
    for stream in ("joint", "bone"):
        cfg = compose([*short, f"+dataset.stream={stream}"])
        cfg.paths.output_dir = str(tmp_path / stream)
        assert build_datamodule(cfg).eval_transform.transforms[-1].kind == stream
        train(cfg)
        (tmp_path / stream / ".hydra").mkdir()  # what a Hydra run leaves beside its checkpoints
        OmegaConf.save(cfg, tmp_path / stream / ".hydra" / "config.yaml")
        checkpoints.append(tmp_path / stream / "checkpoints" / "last.ckpt")

    cfg = compose([f"ckpt_paths=[{checkpoints[0]},{checkpoints[1]}]", "weights=[0.6,0.4]"],
                  config_name="ensemble")
    result = ensemble(cfg)
    assert [m["stream"] for m in result["members"]] == ["joint", "bone"]
    assert 0.0 <= result["fused"]["top1"] <= 1.0 and result["samples"] == 240

    coarse = "{wave right hand: wave, wave left hand: wave, squat: squat}"  # a relabelled class subset
    cfg = compose([f"ckpt_path={checkpoints[0]}", "dataset.classes=[1,2,6,7]", f"label_map={coarse}",
                   f"target_map={coarse}"], config_name="cross_eval")
    result = cross_evaluate(cfg)
    assert result["labels"] == ["wave", "squat"] and result["ignored"] == 24  # class 7 (bow) is not mapped
    assert result["evaluated"] == 72 and Path(cfg.paths.output_dir, "confusion_cross.png").is_file()

    cfg = compose([f"ckpt_path={checkpoints[1]}", "oneshot.shots=[1,3]", "oneshot.draws=2"],
                  config_name="oneshot")
    result = oneshot(cfg)  # trained on all classes: few-shot on seen classes
    assert set(result["results"]) == {1, 3} and len(result["classes"]) == 10


def test_fusion_weights_and_top_k():
    a = torch.tensor([[4.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 9.0], [0.0, 9.0]])
    labels = torch.tensor([0, 1])
    assert top_k(fuse([a, b], [1.0, 0.0]), labels, 1) == 1.0
    assert top_k(fuse([a, b], [1.0, 1.0], "logits"), labels, 1) == 0.5
    with pytest.raises(UserError, match="one weight per checkpoint"):
        fuse([a, b], [1.0])


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")))
def test_experiment_configs_compose(compose, name):
    from hydra.utils import get_class

    cfg = compose([f"experiment={name}"])
    get_class(cfg.model.network._target_)
    for config_name in ("oneshot", "cross_eval", "ensemble"):
        assert compose([f"experiment={name}"], config_name=config_name).task_name == config_name
