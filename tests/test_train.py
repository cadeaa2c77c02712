"""End-to-end training on the synthetic set with the real Trainer, loggers and checkpoints."""

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
import wandb

from asgcn_lightning import callbacks
from asgcn_lightning.apps.components import build_datamodule, build_module
from asgcn_lightning.apps.train import train
from asgcn_lightning.callbacks import ALinkReport
from asgcn_lightning.errors import UserError
from asgcn_lightning.inference.model import load_weights
from asgcn_lightning.visual.confusion import confusion_figure

# one thread: two OpenMP threads on two busy cores slow small models down many times over
FAST = ["model=tiny", "trainer=cpu", "dataset.num_workers=0", "dataset.batch_size=16", "torch_threads=1"]


def _metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_fast_dev_run_trains_validates_and_tests_without_any_logger(compose):
    """logger=none with the default callbacks: the learning-rate monitor, which needs a logger, is left out."""
    cfg = compose([*FAST, "logger=none", "+trainer.fast_dev_run=true"])
    assert cfg.callbacks.learning_rate_monitor is not None
    metrics = train(cfg)
    assert {"train/loss", "val/acc_top1", "test/acc_top1"} <= set(metrics)


def test_training_learns_and_writes_checkpoint_csv_and_confusion_png(compose, monkeypatch):
    cfg = compose([*FAST, "logger=csv", "trainer.max_epochs=4"])
    titles = []  # the real pictures are drawn; their titles are recorded on the way

    def recording_figure(*args, title, **kwargs):
        titles.append(title)
        return confusion_figure(*args, title=title, **kwargs)

    monkeypatch.setattr(callbacks, "confusion_figure", recording_figure)
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    assert metrics["val/acc_top1"] >= 0.5, metrics  # 10 classes: chance is 0.1
    losses = [float(r["train/loss_epoch"]) for r in _metrics_rows(run) if r.get("train/loss_epoch")]
    assert len(losses) == 4 and losses[-1] < 0.6 * losses[0]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    # the best checkpoint (the first epoch with the highest accuracy) is named by its epoch and metric
    accuracies = [float(r["val/acc_top1"]) for r in _metrics_rows(run) if r.get("val/acc_top1")]
    best = accuracies.index(max(accuracies))
    assert sorted(p.name for p in (run / "checkpoints").glob("*.ckpt")) == \
        [f"epoch{best:03d}-acc{max(accuracies):.4f}.ckpt", "last.ckpt"]
    assert metrics["best/val/acc_top1"] == pytest.approx(max(accuracies))
    # pictures count epochs as checkpoint names do; the test's is the tested checkpoint's epoch
    assert titles == [f"val, epoch {epoch}" for epoch in range(4)] + [f"test, epoch {best}"]
    assert (run / "confusion_val.png").stat().st_size > 10_000
    assert (run / "per_class_test.csv").read_text().startswith("class,samples,accuracy")

    # checkpoint round trip: a freshly built model with the saved weights gives identical logits
    trained = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    x, _ = next(iter(datamodule.val_dataloader()))
    first, second = build_module(cfg, datamodule), build_module(cfg, datamodule)
    first.load_state_dict(trained["state_dict"])
    load_weights(second, run / "checkpoints" / "last.ckpt")
    first.eval(), second.eval()
    with torch.no_grad():
        assert torch.equal(first(x), second(x))
        assert not torch.equal(first(x), build_module(cfg, datamodule).eval()(x))


def test_mismatched_checkpoint_names_the_keys(compose, tmp_path):
    cfg = compose([*FAST, "logger=csv"])
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    state = {k: v for k, v in module.state_dict().items() if "blocks.2" not in k}
    state["network.head.fc.weight"] = torch.zeros(5, 32)
    torch.save({"state_dict": state}, tmp_path / "other.ckpt")
    with pytest.raises(UserError, match=r"missing network\.blocks\.2.*shape differs for network\.head\.fc\.weight"):
        load_weights(module, tmp_path / "other.ckpt")
    (tmp_path / "torn.ckpt").write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_weights(module, tmp_path / "torn.ckpt")


def test_wandb_offline_run_holds_the_logged_metrics(compose, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "300")  # a loaded CI machine starts the W&B service slowly
    monkeypatch.delenv("WANDB_MODE", raising=False)
    # W&B already used in this process without WANDB_MODE (as after a picture command) must not force a login
    wandb.init(mode="offline", dir=tmp_path, project="earlier").finish()
    cfg = compose([*FAST, "model=asgcn_tiny", "model.aim.pretrain_epochs=0", "logger=default",
                   "trainer.max_epochs=1", "test_after_fit=false", "++trainer.limit_train_batches=3"])
    train(cfg)
    run = Path(cfg.paths.output_dir)
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "W&B must run offline by default and write a run folder"
    record = next(runs[0].glob("*.wandb")).read_bytes()
    last = [r for r in _metrics_rows(run) if r.get("val/acc_top1")][-1]
    for key in ("val/acc_top1", "train/loss_epoch", "val/confusion_matrix", "val/alinks", "lr-SGD"):
        assert key.encode() in record
    # the same value the CSV logger saw is in the W&B history (values are stored as JSON text)
    assert repr(float(last["val/acc_top1"])).encode()[:6] in record
    assert (runs[0] / "files" / "media" / "images" / "val").is_dir()
    assert (run / "alinks_val.png").stat().st_size > 10_000


def test_alink_report_draws_a_fixed_sample_without_touching_the_training_random_stream(compose, tmp_path):
    cfg = compose([*FAST, "model=asgcn_tiny", "model.aim.pretrain_epochs=0"])
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    report = ALinkReport(tmp_path, sample_index=5)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, callbacks=[report])
    trainer.fit(module, datamodule=datamodule)
    picture = tmp_path / "alinks_val.png"
    assert picture.stat().st_size > 10_000
    picture.unlink()
    state = torch.get_rng_state()
    report.on_validation_end(trainer, module)
    assert torch.equal(torch.get_rng_state(), state), "reading the sample must not advance training's RNG"
    assert picture.is_file()
    # a model without A-links: nothing drawn, no error
    plain = build_module(compose([*FAST]), datamodule)
    picture.unlink()
    report.on_validation_end(trainer, plain)
    assert not picture.exists()


def test_frozen_aim_stays_unchanged_in_the_main_stage_batch_norm_statistics_included(compose):
    cfg = compose([*FAST, "model=asgcn_tiny", "model.aim.pretrain_epochs=1"])
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    snapshots = {}

    class Snapshot(L.Callback):
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            snapshots[trainer.current_epoch] = {k: v.clone() for k, v in pl_module.network.aim.state_dict().items()}

    trainer = L.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, logger=False,
                        enable_checkpointing=False, callbacks=[Snapshot()])
    trainer.fit(module, datamodule=datamodule)
    running = [k for k in snapshots[0] if k.endswith("running_mean")]
    assert running, "the AIM has batch norms"
    for key, value in snapshots[0].items():
        assert torch.equal(snapshots[2][key], value), f"{key} changed in the main stage"


def test_asgcn_two_stages_in_one_run_aim_learns_then_model_learns_and_predicts(compose):
    """AIM pretraining lowers its reconstruction loss, then the full model classifies and logs its prediction error.

    That the prediction head beats "repeat the last frame" is shown by tests/test_model.py and by the default run.
    """
    cfg = compose([*FAST, "model=asgcn_tiny", "logger=csv", "model.aim.pretrain_epochs=2", "trainer.max_epochs=5",
                   "test_after_fit=false"])
    metrics = train(cfg)
    rows = _metrics_rows(Path(cfg.paths.output_dir))
    aim_mse = [float(r["train/aim_mse"]) for r in rows if r.get("train/aim_mse")]
    assert len(aim_mse) == 2 and aim_mse[1] < aim_mse[0]
    stages = [float(r["stage"]) for r in rows if r.get("stage")]
    assert stages == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert metrics["val/acc_top1"] >= 0.3, metrics  # 10 classes: chance is 0.1
    assert 0 < metrics["val/mpjpe"] < 2 * metrics["val/mpjpe_repeat_last"], metrics  # logged, same scale
