"""Three-way splits: validation carved from the training side, chosen on it alone, the test scored once at the end."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from asgcn_lightning.apps.train import check_validation_only
from asgcn_lightning.data.datamodule import SkeletonDataModule
from asgcn_lightning.data.provenance import prepare_store
from asgcn_lightning.data.sources.synthetic import prepare_synthetic
from asgcn_lightning.data.splits import MetadataSplit, RandomSplit, carve_validation
from asgcn_lightning.errors import UserError

FAST = ["model=tiny", "trainer=cpu", "dataset.num_workers=0", "torch_threads=1"]


def _index(subjects: int = 10, classes: int = 4, per_pair: int = 3) -> dict[str, np.ndarray]:
    """Every subject performs every class ``per_pair`` times."""
    grid = np.array([(s, c) for s in range(1, subjects + 1) for c in range(classes) for _ in range(per_pair)])
    return {"subject": grid[:, 0], "label": grid[:, 1], "camera": np.full(len(grid), -1),
            "setup": (grid[:, 0] % 2) + 1, "replication": np.full(len(grid), -1)}


def test_splits_are_disjoint_and_validation_holds_out_whole_training_subjects():
    index = _index()
    split = MetadataSplit("xsub", "subject", [1, 2, 3, 4, 5, 6, 7, 8], val_fraction=0.1, val_seed=3)
    parts = split(index)
    rows = [set(part.tolist()) for part in parts]
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])
    assert set.union(*rows) == set(range(len(index["label"])))
    subjects = [set(index["subject"][part].tolist()) for part in parts]
    assert subjects[2] == {9, 10} and subjects[0] | subjects[1] == set(range(1, 9))
    assert len(subjects[1]) == 1 and not subjects[0] & subjects[1]  # one of 8 subjects: 12.5 % ≥ 10 %
    assert len(parts.train) + len(parts.val) == 8 * 12 and not parts.validates_on_test
    # seeded: the same seed draws the same subjects, other seeds others
    assert np.array_equal(split(index).val, parts.val)
    drawn = {tuple(MetadataSplit("xsub", "subject", range(1, 9), val_seed=seed)(index).val) for seed in range(8)}
    assert len(drawn) > 1


def test_validation_takes_the_number_of_subjects_closest_to_its_fraction():
    index = _index(subjects=11, classes=3, per_pair=3)  # 9 samples a subject, 99 in all: 10 % is 9.9
    for seed in range(5):
        train, val = carve_validation(index, np.arange(99), 0.1, seed)
        assert len(val) == 9 and len(train) == 90  # one subject (0.9 short), not two (8.1 over)
    train, val = carve_validation(index, np.arange(99), 0.15, 0)  # 14.85: two subjects (18) are closer than one
    assert len(val) == 18 and len(set(index["subject"][val].tolist())) == 2
    train, val = carve_validation(index, np.arange(18), 0.01, 0)  # a tiny share still validates on one subject
    assert len(val) == 9 and len(train) == 9


def test_without_subjects_validation_is_a_class_stratified_share():
    index = _index(subjects=1, classes=3, per_pair=20)
    index["subject"][:] = -1
    parts = RandomSplit(test_fraction=0.2, seed=0, val_fraction=0.1, val_seed=1)(index)
    labels = [np.bincount(index["label"][part], minlength=3).tolist() for part in parts]
    assert labels == [[14, 14, 14], [2, 2, 2], [4, 4, 4]]  # 20 a class: 4 test, then 10 % of 16 validate
    assert not set(parts.val.tolist()) & set(parts.train.tolist())
    singletons = {"subject": np.full(20, -1), "label": np.arange(20)}  # one sample a class: a random share
    train, val = carve_validation(singletons, np.arange(20), 0.1, seed=0)
    assert len(val) == 2 and sorted([*train, *val]) == list(range(20))
    # the test set depends on the split's own seed only, not on the run seed that draws validation
    other = RandomSplit(test_fraction=0.2, seed=0, val_fraction=0.1, val_seed=2)(index)
    assert np.array_equal(other.test, parts.test) and not np.array_equal(other.val, parts.val)


def test_val_fraction_is_checked_and_its_config_is_typed(compose):
    with pytest.raises(UserError, match=r"split.val_fraction must be at least 0 and below 1, got 1.0"):
        MetadataSplit("xsub", "subject", [1], val_fraction=1.0)
    cfg = compose(["split=xview", "split.val_fraction=0.25", "seed=7"])
    split = instantiate(cfg.split)
    assert (split.val_fraction, split.val_seed) == (0.25, 7)  # validation drawn by the run seed
    with pytest.raises(Exception, match="val_frac"):
        compose(["split.val_frac=0.2"])


def test_the_datamodule_logs_the_sizes_and_warns_when_validating_on_the_test_set(tmp_path, caplog):
    prepare_synthetic(tmp_path / "syn", num_subjects=4, num_cameras=1, num_setups=1)
    caplog.set_level(logging.INFO, logger="asgcn_lightning.data.datamodule")
    three_way = SkeletonDataModule(tmp_path / "syn", MetadataSplit("xsub", "subject", [1, 2, 3]), name="syn")
    three_way.setup()
    assert (len(three_way.train_set), len(three_way.val_set), len(three_way.test_set)) == (20, 10, 10)
    assert "syn split xsub: train 20, validation 10, test 10 samples" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert three_way.val_dataloader().dataset is three_way.val_set
    assert three_way.test_dataloader().dataset is three_way.test_set

    caplog.clear()
    literature = SkeletonDataModule(tmp_path / "syn", MetadataSplit("xsub", "subject", [1, 2, 3], val_fraction=0),
                                    name="syn")
    literature.setup()
    assert literature.val_set is literature.test_set and len(literature.train_set) == 30
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "split.val_fraction=0: validating on the test set" in warnings[0]


def _monitors(node, path=""):
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if key == "monitor":
            yield f"{path}{key}", value
        yield from _monitors(value, f"{path}{key}.")


@pytest.mark.parametrize(("overrides", "checkpoint_by"), [
    ([], ("val/acc_top1", "max")),
    (["experiment=natops"], ("val/loss", "min")),  # 18 validation samples: their accuracy ties early
    (["hparams_search=optuna_lr"], ("val/acc_top1", "max")),
    (["experiment=ntu_reference"], ("val/acc_top1", "max")),
])
def test_checkpoints_and_sweeps_rank_on_validation(compose, overrides, checkpoint_by):
    cfg = compose(overrides)
    assert (cfg.callbacks.model_checkpoint.monitor, cfg.callbacks.model_checkpoint.mode) == checkpoint_by
    assert cfg.optimized_metric == "val/acc_top1"
    monitors = dict(_monitors(OmegaConf.to_container(cfg, resolve=False)))
    assert monitors and all(str(value).startswith("val/") for value in monitors.values()), monitors
    check_validation_only(cfg)


@pytest.mark.parametrize(("override", "named"), [
    ("callbacks.model_checkpoint.monitor=test/acc_top1", "callbacks.model_checkpoint.monitor=test/acc_top1"),
    ("optimized_metric=test/acc_top1", "optimized_metric=test/acc_top1"),
    ("+callbacks.early_stopping={_target_: lightning.pytorch.callbacks.EarlyStopping, monitor: test/loss}",
     "callbacks.early_stopping.monitor=test/loss"),
])
def test_choosing_anything_by_the_test_split_is_refused(compose, override, named):
    with pytest.raises(UserError, match=f"{named}: checkpoints, schedules, early stopping and sweeps follow "
                                        "validation metrics"):
        check_validation_only(compose([override]))


def test_test_metrics_are_those_of_the_best_checkpoint_by_validation(compose, tmp_path, one_thread):
    from asgcn_lightning.apps.evaluate import evaluate
    from asgcn_lightning.apps.train import train
    from asgcn_lightning.config import compose_config

    # two classes: validation saturates, and ties keep the earlier checkpoint; the default loggers (CSV, W&B)
    cfg = compose([*FAST, "trainer.max_epochs=4", "dataset.classes=[1,4]"])
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    written = json.loads((run / "metrics.json").read_text())
    assert written["test/acc_top1"] == pytest.approx(metrics["test/acc_top1"])
    [best] = [path for path in (run / "checkpoints").glob("epoch*.ckpt")]
    assert not best.name.startswith("epoch003"), "the model must peak before its last epoch to tell them apart"

    def scored(checkpoint: Path) -> dict[str, float]:
        folder = tmp_path / f"eval_{checkpoint.stem}"
        return evaluate(compose_config("eval", [f"ckpt_path={checkpoint}", "torch_threads=1"], folder))

    of_best, of_last = scored(best), scored(run / "checkpoints" / "last.ckpt")
    for key in ("test/acc_top1", "test/loss"):
        assert metrics[key] == pytest.approx(of_best[key], rel=1e-6), key
    assert of_last["test/loss"] != pytest.approx(of_best["test/loss"], rel=1e-6)
    assert metrics["best/val/acc_top1"] == pytest.approx(float(best.stem.split("acc")[1]), abs=1e-4)
    summary = _wandb_summary(run)
    assert summary["test/acc_top1"] == pytest.approx(of_best["test/acc_top1"])
    assert summary["best/val/acc_top1"] == pytest.approx(metrics["best/val/acc_top1"])


def _wandb_summary(run_dir: Path) -> dict[str, float]:
    """The run summary of the offline W&B run under ``run_dir``, read from its run file."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal.datastore import DataStore

    (path,) = run_dir.glob("wandb/offline-run-*/*.wandb")
    store, summary = DataStore(), {}
    store.open_for_scan(str(path))
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "summary":
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.summary.update})
    return summary


def test_sweep_summary_ranks_jobs_on_validation_and_reports_their_test(tmp_path, capsys):
    from asgcn_lightning.apps.sweep_summary import main as summary_main

    # job 1 has the better test score, job 0 the better validation score: job 0 is the sweep's best
    for number, (val, test) in enumerate([(0.8, 0.6), (0.7, 0.9)]):
        job = tmp_path / str(number)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- model.optimizer.lr={0.1 * (number + 1)}\n")
        (job / ".hydra" / "config.yaml").write_text("optimized_metric: val/acc_top1\n")
        (job / "metrics.json").write_text(json.dumps({"best/val/acc_top1": val, "val/acc_top1": val - 0.1,
                                                      "test/acc_top1": test, "test/loss": 1 - test}))
    summary_main([str(tmp_path)])
    printed = " ".join(capsys.readouterr().out.split())
    assert "best: job 0 val/acc_top1 = 0.8000, test/acc_top1 = 0.6000 model.optimizer.lr=0.1" in printed
    summary = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert summary["best"]["name"] == "0" and summary["test_metric"] == "test/acc_top1"
    assert summary["best"]["test"] == {"test/acc_top1": 0.6, "test/loss": pytest.approx(0.4)}
    assert [job["test"]["test/acc_top1"] for job in summary["jobs"]] == [0.6, 0.9]


# -- what the prepared store decides ---------------------------------------------------------------------
def test_a_layout_on_the_command_line_must_be_the_stores_or_a_variant_of_it(compose):
    store_layout = "ntu25"  # the synthetic store's
    cfg = compose(["dataset.layout={name: coco18}"])
    with pytest.raises(UserError, match=r"dataset.layout=coco18 \(18 joints\) is not the layout of the prepared "
                                        r"store .*synthetic: ntu25 \(25 joints\)"):
        _ = instantiate(cfg.dataset).num_class
    broken = compose(["dataset.layout={name: chain, joints: [a, b, c], edges: [[0, 1], [1, 30]]}"])
    with pytest.raises(UserError, match=r"dataset.layout: layout 'chain': edge \(1, 30\) is not between two of its 3"):
        _ = instantiate(broken.dataset).num_class
    variant = instantiate(compose(["dataset.layout={name: ntu25_asgcn}"]).dataset)
    assert variant.num_class == 10 and variant.layout.name == "ntu25_asgcn"  # same joints, the original's bones
    default = instantiate(compose([]).dataset)
    assert default.num_class == 10 and default.layout.name == store_layout
    same = instantiate(compose([f"dataset.layout={store_layout}"]).dataset)  # a plain name works as well
    assert same.num_class == 10 and same.layout.name == store_layout


def test_the_readme_custom_layout_form_composes_on_every_data_set(compose):
    for dataset in ("ntu60", "openpose_folder", "natops", "synthetic", "kinetics_skeleton"):
        cfg = compose([f"dataset={dataset}", "dataset.layout={name: mine, joints: [a, b], edges: [[a, b]], centre: a}"])
        assert OmegaConf.to_container(cfg.dataset.layout) == {"name": "mine", "joints": ["a", "b"],
                                                             "edges": [["a", "b"]], "centre": "a"}


def test_training_needs_no_repetition_of_the_preparation_options(compose, tmp_path, caplog):
    """A prepared store keeps its settings; only a setting the command itself gives must agree with them."""
    from asgcn_lightning.apps.components import build_datamodule

    store_dir = tmp_path / "store"
    prepare_store(functools.partial(prepare_synthetic, num_subjects=10, num_cameras=1, num_setups=1), store_dir)
    prepared = ["dataset.auto_prepare=false", f"dataset.store_dir={store_dir}"]  # as a real data set's store
    caplog.set_level(logging.INFO, logger="asgcn_lightning.data.datamodule")
    module = build_datamodule(compose(prepared))  # the config says 12 subjects: the store's 10 apply
    module.setup()
    assert (len(module.train_set) + len(module.val_set), len(module.test_set)) == (80, 20)
    assert caplog.text.count("using the settings it was prepared with (") == 1
    assert "num_subjects=10 (now 12)" in caplog.text
    for given in ("dataset.prepare.num_subjects=12", "dataset.num_person=1"):  # another store than this one
        with pytest.raises(UserError, match=r"prepared with other settings \(num_(subjects 10 there, 12 now|person "
                                            r"null there, 1 now)\): add `dataset\.prepare\.num_\w+=\w+` to use it"):
            build_datamodule(compose([*prepared, given]))
    # outside a command (the Python API) every argument is the caller's own
    defaults = functools.partial(prepare_synthetic, num_subjects=12, num_cameras=1, num_setups=1)
    with pytest.raises(UserError, match=r"prepared with other settings \(num_subjects 10 there, 12 now\)"):
        SkeletonDataModule(store_dir, MetadataSplit("xsub", "subject", [1, 2]), prepare=defaults).prepare_data()
