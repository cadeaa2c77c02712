"""Beyond one data set: transfer (freezing, joint mapping), label mapping, one-shot metrics, streams, ensembles."""

from __future__ import annotations

import functools
import types
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import CONFIG_DIR, compose_config
from omegaconf import DictConfig, OmegaConf

from asgcn_lightning.apps.components import build_datamodule, build_module
from asgcn_lightning.apps.cross_eval import ModelInput, cross_evaluate, label_mapping, mapped_confusion
from asgcn_lightning.apps.ensemble import accuracies, ensemble, fuse
from asgcn_lightning.apps.evaluate import evaluate
from asgcn_lightning.apps.oneshot import (
    METRICS,
    NTU120_ONESHOT_CLASSES,
    NTU120_ONESHOT_EXEMPLARS,
    draw_support,
    few_shot_metrics,
    kshot,
    ntu120_support,
    oneshot,
)
from asgcn_lightning.apps.train import train
from asgcn_lightning.data.sources.ntu import ntu_class_names
from asgcn_lightning.data.store import SampleRecord, SkeletonStore, StoreWriter
from asgcn_lightning.errors import UserError
from asgcn_lightning.inference.evaluation import top_k_accuracy
from asgcn_lightning.models.asgcn import ASGCN
from asgcn_lightning.models.embedding import EmbeddingNetwork, MotionDescriptor, embeddings
from asgcn_lightning.models.transfer import SourceCheckpoint, Transfer, joint_mapping
from asgcn_lightning.prepare import prepare
from asgcn_lightning.skeleton.graph import structural_links
from asgcn_lightning.skeleton.layouts import NTU25, OPENPOSE25, make_layout

FAST = ["model=tiny", "dataset.num_workers=0"]
NATOPS8 = make_layout(name="natops8", joints=["left_hand_tip", "right_hand_tip", "left_elbow", "right_elbow",
                                              "left_wrist", "right_wrist", "left_thumb", "right_thumb"],
                      edges=[[2, 4], [4, 0], [4, 6], [3, 5], [5, 1], [5, 7], [2, 3]], centre=2)
SMALL = {"channels": [8, 8], "strides": [1, 2], "max_hop": 1, "use_alinks": False, "prediction_head": False,
         "dropout": 0.0}
SHORT = ["logger=none", "trainer.max_epochs=1",
         "trainer.limit_train_batches=4", "test_after_fit=false", "dataset.batch_size=32"]


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


def _save_run(module: L.LightningModule, run: Path) -> Path:
    """What a training run leaves: ``checkpoints/last.ckpt`` with the module's model card; returns the checkpoint."""
    (run / "checkpoints").mkdir(parents=True)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)  # as Lightning's checkpointing calls it
    torch.save(checkpoint, run / "checkpoints" / "last.ckpt")
    return run / "checkpoints" / "last.ckpt"


def _model_run(compose, run: Path, overrides: list[str], seed: int | None = None) -> tuple[Path, L.LightningModule]:
    """A model of ``overrides`` saved as a run: randomised far from initialisation (``seed``), or freshly
    initialised with batch-norm statistics of one training batch — untrained, yet its outputs differ from
    sample to sample (with the initial statistics every sample gets nearly the same logits)."""
    cfg = compose(overrides)
    torch.manual_seed(0)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    if seed is not None:
        _randomise(module, seed)
    else:
        datamodule.setup()
        norms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d)]
        for norm in norms:
            norm.momentum = 1.0  # the running statistics become this batch's
        with torch.no_grad():
            module.network.train().forward_train(next(iter(datamodule.train_dataloader()))[0])
        for norm in norms:
            norm.momentum = 0.1
    return _save_run(module, run), module.eval()


@pytest.fixture
def source_ckpt(compose, tmp_path) -> Path:
    """A 'trained' tiny synthetic model (10 classes) saved as a run folder."""
    return _model_run(compose, tmp_path / "source_run", FAST, seed=0)[0]


@pytest.fixture(scope="module")
def ntu_store(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The real NTU fixture skeletons (60 classes, one sample each), prepared once; the overrides that read them."""
    store = tmp_path_factory.mktemp("ntu") / "ntu60"
    overrides = ["dataset=ntu60", f"dataset.raw_dir={fixtures_dir / 'ntu' / 'skeletons'}", f"dataset.store_dir={store}",
                 "dataset.prepare.num_workers=1"]
    prepare(compose_config("prepare", overrides, store.parent / "run", store.parent))
    return [*overrides, "dataset.num_workers=0"]


def _logits(network: torch.nn.Module, inputs: list[np.ndarray]) -> torch.Tensor:
    """The test-step logits (what eval.py scores) of ``(T, M, V, C)`` sequences."""
    x = torch.stack([torch.from_numpy(np.ascontiguousarray(i)).permute(3, 0, 2, 1) for i in inputs])
    with torch.no_grad():
        return network.eval().forward_train(x).logits


def _fit(module: L.LightningModule, datamodule: L.LightningDataModule, steps: int) -> L.Trainer:
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=steps, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_model_summary=False)
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
    transfer = _transfer(tmp_path / "s.ckpt", {**NATOPS8_SPEC, "centre": 2})
    report = transfer.apply(types.SimpleNamespace(network=target_net), NTU25)
    assert {"data_bn.weight", "data_bn.running_mean", "blocks.0.graph_conv.edge_importance"} <= set(report.mapped)
    target, source = target_net.state_dict(), source_net.state_dict()
    elbow, wrist, head = NTU25.index("left_elbow"), NTU25.index("left_wrist"), NTU25.index("head")
    for key in ("data_bn.weight", "data_bn.running_var"):  # joint-major: joint v owns entries 3v..3v+2
        assert torch.equal(target[key][3 * elbow:3 * elbow + 3], source[key][6:9])
        assert torch.equal(target[key][3 * head:3 * head + 3], init[key][3 * head:3 * head + 3])  # unmapped
    importance = "blocks.1.graph_conv.edge_importance"
    # elbow → wrist: a one-hop link from the centre's side (subset 1) in both layouts; the other subsets
    # have no such link in the source, so their (never trained) values do not come over
    assert torch.equal(target[importance][1, elbow, wrist], source[importance][1, 2, 4])
    assert torch.equal(target[importance][[0, 2], elbow, wrist], init[importance][[0, 2], elbow, wrist])
    assert torch.equal(target[importance][:, head, head], init[importance][:, head, head])
    assert torch.equal(target["blocks.1.temporal.conv.weight"], source["blocks.1.temporal.conv.weight"])

    assert joint_mapping(NATOPS8, NTU25, {"head": "left_elbow", 0: 1}) == {NTU25.index("head"): 2, 0: 1}
    assert joint_mapping(NATOPS8, NTU25, "index") == {j: j for j in range(8)}
    with pytest.raises(UserError, match="no joint 'nose'"):
        joint_mapping(NATOPS8, NTU25, {"nose": 0})
    with pytest.raises(UserError, match="share no joint names"):
        joint_mapping(NATOPS8, make_layout(name="two", joints=["a", "b"], edges=[[0, 1]]))


def _transfer(checkpoint: Path, source_layout: dict, **settings) -> Transfer:
    """A finetune transfer of ``SMALL`` networks, as prepare_transfer would build it."""
    return Transfer(**{"mode": "finetune", "source": SourceCheckpoint.load(checkpoint), "freeze": [],
                       "backbone_lr_scale": 1.0, "joint_map": "name", "source_layout": source_layout, "strict": True,
                       "network_factory": functools.partial(ASGCN, **SMALL), **settings})


NATOPS8_SPEC = {"name": "natops8", "joints": list(NATOPS8.joints), "edges": [list(e) for e in NATOPS8.edges]}


def test_edge_importances_come_over_only_within_the_same_s_link_subset(tmp_path):
    """Same joints and bones, another centre: the spatial partition sorts some links into the other subset."""
    source_net = ASGCN(num_class=6, layout=NATOPS8, in_channels=3, num_person=1, **SMALL)  # centre: left elbow
    _randomise(source_net, 2)
    torch.save({"state_dict": {f"network.{k}": v for k, v in source_net.state_dict().items()}}, tmp_path / "s.ckpt")
    wrist_centred = make_layout(**NATOPS8_SPEC, centre=NATOPS8.index("right_wrist"))
    target_net = ASGCN(num_class=6, layout=wrist_centred, in_channels=3, num_person=1, **SMALL)
    report = _transfer(tmp_path / "s.ckpt", {**NATOPS8_SPEC, "centre": 2}).apply(
        types.SimpleNamespace(network=target_net), wrist_centred)
    key = "blocks.0.graph_conv.edge_importance"
    source, target = source_net.state_dict()[key], target_net.state_dict()[key]
    le, lw, re, rw = (NATOPS8.index(n) for n in ("left_elbow", "left_wrist", "right_elbow", "right_wrist"))
    # left elbow → left wrist is nearer the centre in both layouts (subset 1): the trained value comes over
    assert target[1, le, lw] == source[1, le, lw]
    # right elbow → right wrist: nearer the left-elbow centre (subset 1), farther from the right-wrist one
    # (subset 2); source[2, re, rw] multiplied no link, so the link restarts from its initial 1
    assert source[2, re, rw] != 1.0 and target[2, re, rw] == 1.0 and target[1, re, rw] == 1.0
    links = (torch.from_numpy(structural_links(NATOPS8, 1)), torch.from_numpy(structural_links(wrist_centred, 1)))
    same = (links[0] != 0) & (links[1] != 0)
    assert torch.equal(target, torch.where(same, source, torch.ones_like(source)))
    flipped = int(((links[1] != 0) & (links[0] == 0)).sum())
    assert flipped > 0 and report.links_reset == 2 * flipped  # two blocks, one importance tensor each
    assert torch.equal(target_net.state_dict()["data_bn.weight"], source_net.state_dict()["data_bn.weight"])


def test_transfer_across_layouts_through_the_module_build(compose, source_ckpt, fixtures_dir):
    """Synthetic (NTU, 25 joints) → the real NATOPS set (8 sensors named as NTU joints), built as train.py does."""
    cfg = compose([*FAST, "dataset=natops", f"dataset.root={fixtures_dir / 'natops'}", "split=predefined",
                   "transfer=finetune", f"transfer.checkpoint={source_ckpt}", "transfer.freeze=[data_bn]"])
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    layout, source, own = datamodule.layout, torch.load(source_ckpt, weights_only=False)["state_dict"], \
        module.state_dict()
    assert module.num_class == 6 and layout.num_joints == 8
    for v, name in enumerate(layout.joints):  # data batch norm: each sensor from the NTU joint of its name
        s = NTU25.index(name)
        for stat in ("weight", "running_mean", "running_var"):
            key = f"network.data_bn.{stat}"
            assert torch.equal(own[key][3 * v:3 * v + 3], source[key][3 * s:3 * s + 3]), (key, name)
    key = "network.blocks.0.graph_conv.edge_importance"
    le, lw, re = (layout.index(n) for n in ("left_elbow", "left_wrist", "right_elbow"))
    assert own[key][1, le, lw] == source[key][1, NTU25.index("left_elbow"), NTU25.index("left_wrist")]
    # NATOPS joins the elbows directly, NTU only through the shoulders: no trained importance to bring
    assert own[key][1, le, re] == 1.0 != source[key][1, NTU25.index("left_elbow"), NTU25.index("right_elbow")]
    assert torch.equal(own["network.blocks.1.temporal.conv.weight"], source["network.blocks.1.temporal.conv.weight"])

    before = _snapshot(module.network)
    _fit(module, datamodule, steps=2)
    after = module.network.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith("data_bn."))
    assert not torch.equal(after["head.fc.weight"], before["head.fc.weight"])
    assert not torch.equal(after["blocks.0.graph_conv.conv.weight"], before["blocks.0.graph_conv.conv.weight"])


def test_aim_model_transfers_with_frozen_modules_that_stay_frozen_over_a_resume(compose, tmp_path):
    aim_model = ["model=asgcn_tiny", *FAST[1:], *SHORT, "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    source_ckpt, _ = _model_run(compose, tmp_path / "source", aim_model, seed=3)
    run = [*aim_model, "dataset.classes=[1,2,3]", "transfer=finetune", f"transfer.checkpoint={source_ckpt}",
           "transfer.freeze=[aim,blocks.0]"]
    cfg = compose(run)
    cfg.paths.output_dir = str(tmp_path / "first")
    train(cfg)
    assert cfg.model.aim.pretrain_epochs == 0 and cfg.model.aim.optimizer is None  # the AIM came trained
    first = torch.load(tmp_path / "first" / "checkpoints" / "last.ckpt", weights_only=False)
    resumed = compose([*run, f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}", "trainer.max_epochs=2"])
    resumed.paths.output_dir = str(tmp_path / "resumed")
    train(resumed)
    second = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert (first["global_step"], second["global_step"]) == (2, 4)  # one more epoch of 2 steps
    source = torch.load(source_ckpt, weights_only=False)["state_dict"]
    frozen = [k for k in source if k.startswith(("network.aim.", "network.blocks.0."))]
    assert any(k.startswith("network.aim.") for k in frozen)
    for key in frozen:
        assert torch.equal(first["state_dict"][key], source[key]), key
        assert torch.equal(second["state_dict"][key], source[key]), key
    for key in ("network.blocks.1.graph_conv.conv.weight", "network.head.fc.weight"):
        assert not torch.equal(second["state_dict"][key], first["state_dict"][key]), f"{key} stopped training"
    assert len(first["optimizer_states"]) == 1  # a frozen AIM gets no optimiser


def test_transfer_refuses_a_frozen_classifier_and_another_input_stream(compose, source_ckpt):
    base = [*FAST, f"transfer.checkpoint={source_ckpt}"]

    def build(*overrides: str) -> L.LightningModule:
        cfg = compose([*base, *overrides])
        return build_module(cfg, build_datamodule(cfg))

    for names in ("[head]", "[blocks.0,head.fc]"):
        with pytest.raises(UserError, match=r"holds the new classifier head\.fc"):
            build("transfer=finetune", f"transfer.freeze={names}")
    with pytest.raises(UserError, match=r"transfer.freeze=\['data_bn'\] applies to transfer=finetune"):
        build("transfer=feature_extraction", "+transfer.freeze=[data_bn]")
    with pytest.raises(UserError, match=r"reads the joint stream, this run feeds it bone; set stream=joint"):
        build("transfer=finetune", "stream=bone")
    assert build("transfer=finetune", "stream=bone", "transfer.strict=false").num_class == 10  # on purpose
    assert build("transfer=architecture_only", "stream=bone").num_class == 10  # no weights: no stream


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


def _mapped_confusion(logits: torch.Tensor, truth: list[str], label_map: dict[str, str], model_classes: list[str],
                      labels: list[str]) -> np.ndarray:
    """The cross-data-set confusion by hand: softmax over mapped classes, probabilities summed per label."""
    mapped = [i for i, name in enumerate(model_classes) if name in label_map]
    probabilities = torch.softmax(logits[:, mapped].double(), dim=1).numpy()
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    for row, label in zip(probabilities, truth, strict=True):
        scores = {name: 0.0 for name in labels}
        for p, i in zip(row, mapped, strict=True):
            scores[label_map[model_classes[i]]] += p
        confusion[labels.index(label), labels.index(max(scores, key=scores.get))] += 1
    return confusion


def _ntu_inputs(compose, ntu_store: list[str], classes: list[str], window: int) -> tuple[list[np.ndarray], list[str]]:
    """The fixture's samples of ``classes`` through NTU's own eval transforms, and their class names."""
    target = build_datamodule(compose([*ntu_store, f"dataset.window={window}"]))
    store = SkeletonStore(target.store_dir)
    names = store.meta.class_names
    picked = [i for i, label in enumerate(store.index["label"]) if names[label] in classes]
    rng = np.random.default_rng(0)
    return ([target.eval_transform(store.sequence(i), NTU25, rng) for i in picked],
            [names[store.index["label"][i]] for i in picked])


def test_cross_eval_of_a_synthetic_model_on_real_ntu_skeletons(compose, tmp_path, ntu_store):
    """configs/mapping/synthetic_to_ntu60.yaml: two real different data sets, one layout, a many-to-one label map."""
    checkpoint, module = _model_run(compose, tmp_path / "synthetic", FAST)
    cfg = compose([f"ckpt_path={checkpoint}", "mapping=synthetic_to_ntu60", *ntu_store], config_name="cross_eval")
    result = cross_evaluate(cfg)
    label_map = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "mapping" / "synthetic_to_ntu60.yaml").label_map)
    labels = [name for name in ntu_class_names(60) if name in label_map.values()]
    assert result["labels"] == labels and len(labels) == 8  # both waves → hand waving
    assert result["model_classes"]["wave left hand"] == result["model_classes"]["wave right hand"] == "hand waving"
    assert result["joints"] == {name: name for name in NTU25.joints} and result["stream"] == "joint"

    inputs, truth = _ntu_inputs(compose, ntu_store, labels, window=32)  # the mapping's window
    confusion = _mapped_confusion(_logits(module.network, inputs), truth, label_map,
                                  list(module.class_names), labels)
    assert np.asarray(result["confusion"]).tolist() == confusion.tolist()
    assert np.sum(result["confusion"]) == result["evaluated"] == len(truth) == 8 and result["ignored"] == 52
    assert result["accuracy"] == pytest.approx(np.trace(confusion) / 8)


def test_cross_eval_reindexes_the_target_joints_into_the_model_layout(compose, tmp_path, ntu_store):
    """An OpenPose BODY_25 one-person model on the real NTU skeletons: joints by name, the rest zero."""
    store = tmp_path / "openpose_toy"
    classes = ["hand waving", "clapping", "jump up"]  # label_map null pairs them with NTU's classes of these names
    with StoreWriter(store, dataset="openpose_toy", layout="openpose25", num_person=1, num_joints=25, channels=3,
                     class_names=classes) as writer:
        for i in range(6):
            writer.add(SampleRecord(f"video{i}", label=i % 3), np.random.default_rng(i).normal(size=(20, 1, 25, 3)))
        writer.commit()
    checkpoint, module = _model_run(compose, tmp_path / "openpose", [*FAST, "dataset=openpose_folder",
                                                                     f"dataset.store_dir={store}", "split=random"])
    cfg = compose([f"ckpt_path={checkpoint}", *ntu_store, "target_samples=all"], config_name="cross_eval")
    result = cross_evaluate(cfg)
    shared = [name for name in OPENPOSE25.joints if name in NTU25.joints]
    assert result["joints"] == {name: name for name in shared} and len(shared) == 13  # nose, eyes, feet...: zero

    inputs, truth = _ntu_inputs(compose, ntu_store, classes, window=64)  # NTU's own window
    model_inputs = []
    for sequence in inputs:  # by hand: the first person, each BODY_25 joint from the NTU joint of its name
        x = np.zeros((len(sequence), 1, 25, 3), dtype=np.float32)
        for joint in shared:
            x[:, 0, OPENPOSE25.index(joint)] = sequence[:, 0, NTU25.index(joint)]
        model_inputs.append(x)
    labels = [name for name in ntu_class_names(60) if name in classes]
    confusion = _mapped_confusion(_logits(module.network, model_inputs), truth, {c: c for c in classes}, classes,
                                  labels)
    assert result["labels"] == labels and np.asarray(result["confusion"]).tolist() == confusion.tolist()
    assert result["evaluated"] == 3 and result["ignored"] == 57

    # the re-indexing itself, on one real sequence: the joint stream, then bones (none to a missing parent)
    mapping = {OPENPOSE25.index(name): NTU25.index(name) for name in shared}
    rng = np.random.default_rng(0)
    assert np.array_equal(ModelInput(mapping, OPENPOSE25, "joint", 1)(inputs[0], NTU25, rng), model_inputs[0])
    bones = ModelInput(mapping, OPENPOSE25, "bone", 1)(inputs[0], NTU25, rng)
    elbow, shoulder = OPENPOSE25.index("right_elbow"), OPENPOSE25.index("right_shoulder")
    assert np.allclose(bones[:, 0, elbow], model_inputs[0][:, 0, elbow] - model_inputs[0][:, 0, shoulder])
    assert OPENPOSE25.parents[OPENPOSE25.index("right_hip")] == OPENPOSE25.index("mid_hip")  # mid_hip: no NTU joint
    assert not bones[:, :, [OPENPOSE25.index("right_hip"), OPENPOSE25.index("nose")]].any()

    with pytest.raises(UserError, match="joint_map: layout 'ntu25' has no joint 'nose'"):
        cross_evaluate(compose([f"ckpt_path={checkpoint}", *ntu_store, "target_samples=all", "joint_map={nose: nose}"],
                               config_name="cross_eval"))


def test_cross_eval_always_feeds_the_model_its_own_stream(compose, tmp_path):
    checkpoint, module = _model_run(compose, tmp_path / "bone", [*FAST, "stream=bone"])

    def confusion_on(stream: str) -> list[list[int]]:
        datamodule = build_datamodule(compose([*FAST, f"stream={stream}"]))
        datamodule.setup()
        with torch.no_grad():
            pairs = [(module.network.forward_train(x).logits.argmax(dim=1), y) for x, y in datamodule.test_dataloader()]
        predicted, truth = (torch.cat(side) for side in zip(*pairs, strict=True))
        return np.bincount(truth * 10 + predicted, minlength=100).reshape(10, 10).tolist()

    bone, joint = confusion_on("bone"), confusion_on("joint")
    assert bone != joint  # the test can tell the streams apart
    # the target's config reads joints: the model still gets its bones
    same_batches = "batch_size=16"  # as the data module's loader: the very same float sums
    result = cross_evaluate(compose([f"ckpt_path={checkpoint}", same_batches], config_name="cross_eval"))
    assert result["stream"] == "bone" and result["confusion"] == bone
    assert cross_evaluate(compose([f"ckpt_path={checkpoint}", "dataset.stream=bone", same_batches],
                                  config_name="cross_eval"))["confusion"] == bone
    with pytest.raises(UserError, match=r"dataset\.stream=joint: the model .* reads the bone stream"):
        cross_evaluate(compose([f"ckpt_path={checkpoint}", "dataset.stream=joint"], config_name="cross_eval"))


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


def test_ntu120_protocol_end_to_end_on_a_fake_store(compose, tmp_path):
    """oneshot.protocol=ntu120 from the checkpoint of experiment=oneshot_ntu120 on a 120-class store named as NTU.

    Every sample of a novel class moves exactly like its listed exemplar, except one A7 query that moves
    like A13: the embedding cannot tell those apart, so that query — and only it — goes to A13.
    """
    store = tmp_path / "ntu120"
    rng = np.random.default_rng(0)
    motion = {a: rng.normal(size=(12, 2, 25, 3)) for a in NTU120_ONESHOT_CLASSES}
    with StoreWriter(store, dataset="ntu120", layout="ntu25", num_person=2, num_joints=25, channels=3,
                     class_names=ntu_class_names(120)) as writer:
        def add(name: str, frames: np.ndarray) -> None:
            writer.add(SampleRecord(name, label=int(name[17:]) - 1, subject=int(name[9:12]), camera=int(name[5:8]),
                                    setup=int(name[1:4]), replication=int(name[13:16])), frames)

        for exemplar in NTU120_ONESHOT_EXEMPLARS:  # the exemplar and two other performers
            for name in (exemplar, exemplar.replace("P008", "P002"), exemplar.replace("P008", "P003")):
                add(name, motion[int(exemplar[17:])])
        add("S001C001P003R002A007", motion[13])
        for performer in ("P002", "P003", "P008"):  # an auxiliary class: trained on, never evaluated
            add(f"S001C003{performer}R001A002", rng.normal(size=(12, 2, 25, 3)))
        writer.commit()
    checkpoint, _ = _model_run(compose, tmp_path / "aux", ["experiment=oneshot_ntu120", "model=tiny",
                                                           f"dataset.store_dir={store}", "dataset.num_workers=0",
                                                           "model.network.embedding_dim=16"])
    result = oneshot(compose([f"ckpt_path={checkpoint}", "oneshot.protocol=ntu120"], config_name="oneshot"))
    names = ntu_class_names(120)
    assert result["classes"] == [names[a - 1] for a in NTU120_ONESHOT_CLASSES] and result["pool"] == "all"
    assert result["samples"] == 61 and result["replaced"] == {}  # 20 exemplars, 41 queries; A2 left out
    scores = {m: result["results"][1][m]["mean"] for m in METRICS}
    # A7: 2 of its 3 queries right (recall 2/3); A13: 3 predicted, 2 right (precision 2/3); F1 0.8 for both
    assert scores == pytest.approx({"accuracy": 40 / 41, "precision": (19 + 2 / 3) / 20, "recall": (19 + 2 / 3) / 20,
                                    "f1": (18 + 2 * 0.8) / 20})


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
def _test_logits(cfg: DictConfig, checkpoint: Path) -> tuple[L.LightningModule, torch.Tensor, torch.Tensor]:
    """A run's model and the logits and labels of its own test step, batch by batch as the trainer takes them."""
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    module.load_state_dict(torch.load(checkpoint, weights_only=False)["state_dict"])
    datamodule.setup()
    with torch.no_grad():
        pairs = [(module.network.eval().forward_train(x).logits, y) for x, y in datamodule.test_dataloader()]
    logits, labels = (torch.cat(side) for side in zip(*pairs, strict=True))
    return module, logits, labels


def test_stream_models_fuse_and_the_evaluation_apps_run(compose, tmp_path):
    checkpoints, runs = [], []
    # the joint model has a prediction head: its test step classifies the window less its last 4 frames
    for stream, extra in (("joint", ["model.network.prediction_head=true", "model.network.predict_frames=4"]),
                          ("bone", [])):
        cfg = compose([*FAST, *SHORT, f"stream={stream}", *extra])
        cfg.paths.output_dir = str(tmp_path / stream)
        assert build_datamodule(cfg).eval_transform.transforms[-1].kind == stream
        train(cfg)
        checkpoints.append(tmp_path / stream / "checkpoints" / "last.ckpt")
        runs.append(cfg)
    same_batches = "batch_size=32"  # as the runs' test loaders: the very same float sums

    cfg = compose([f"ckpt_paths=[{checkpoints[0]},{checkpoints[1]}]", "weights=[0.6,0.4]", same_batches],
                  config_name="ensemble")
    result = ensemble(cfg)
    assert [m["stream"] for m in result["members"]] == ["joint", "bone"] and result["samples"] == 240
    own = []
    Path(compose().paths.output_dir).mkdir(parents=True, exist_ok=True)  # where eval.py writes evaluation.json
    for run, checkpoint, member in zip(runs, checkpoints, result["members"], strict=True):
        module, logits, labels = _test_logits(run, checkpoint)
        own.append(logits)
        hits = {k: (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1) for k in (1, 5)}
        by_hand = {k: float(hit.float().mean()) for k, hit in hits.items()}
        assert (member["top1"], member["top5"]) == pytest.approx((by_hand[1], by_hand[5]), abs=1e-6)
        figure = evaluate(compose([f"ckpt_path={checkpoint}"], config_name="eval"))["test/acc_top1"]
        assert member["top1"] == pytest.approx(figure, abs=1e-6)  # eval.py's figure for that checkpoint
    fused = fuse(own, [0.6, 0.4])
    assert result["fused"] == {"top1": top_k_accuracy(fused, labels, 1), "top5": top_k_accuracy(fused, labels, 5)}
    assert 0 < result["fused"]["top1"] < 1  # neither trivial nor perfect: the comparison means something

    coarse = "{wave right hand: wave, wave left hand: wave, squat: squat}"  # a relabelled class subset
    cfg = compose([f"ckpt_path={checkpoints[0]}", "dataset.classes=[1,2,6,7]", f"label_map={coarse}",
                   f"target_map={coarse}"], config_name="cross_eval")
    result = cross_evaluate(cfg)
    assert result["labels"] == ["wave", "squat"] and result["ignored"] == 24  # class 7 (bow) is not mapped
    assert result["evaluated"] == 72 and Path(cfg.paths.output_dir, "confusion_cross.png").is_file()

    cfg = compose([f"ckpt_path={checkpoints[1]}", "oneshot.shots=[1,3]", "oneshot.draws=2", same_batches],
                  config_name="oneshot")
    result = oneshot(cfg)  # trained on all classes: few-shot on seen classes
    assert len(result["classes"]) == 10 and result["samples"] == 240
    datamodule = build_datamodule(runs[1])  # by hand: the classifier's input features of the bone test samples
    datamodule.setup()
    embedded = torch.cat([embeddings(module.network, x) for x, _ in datamodule.test_dataloader()]).double()
    expected = kshot(embedded, labels.numpy(), 10, shots=[1, 3], draws=2, seed=0)
    for k in (1, 3):
        assert {m: result["results"][k][m]["mean"] for m in METRICS} == \
            pytest.approx({m: expected[k][m]["mean"] for m in METRICS})


def test_fusion_weights_and_top_k():
    a = torch.tensor([[4.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 9.0], [0.0, 9.0]])
    labels = torch.tensor([0, 1])
    assert top_k_accuracy(fuse([a, b], [1.0, 0.0]), labels, 1) == 1.0
    assert top_k_accuracy(fuse([a, b], [1.0, 1.0], "logits"), labels, 1) == 0.5
    with pytest.raises(UserError, match="one weight per checkpoint"):
        fuse([a, b], [1.0])
    # top-5 only means something with more than five classes
    assert set(accuracies(torch.randn(4, 5), torch.tensor([0, 1, 2, 3]))) == {"top1"}
    lowest = torch.tensor([[(j - i) % 6 for j in range(6)] for i in range(6)], dtype=torch.float)  # label last
    assert accuracies(lowest, torch.arange(6)) == {"top1": 0.0, "top5": 0.0}


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml")))
def test_experiment_configs_compose(compose, name):
    from hydra.utils import get_class

    cfg = compose([f"experiment={name}"])
    get_class(cfg.model.network._target_)
