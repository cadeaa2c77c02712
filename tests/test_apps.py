"""Using trained models: prediction on every input kind, localisation, the video demo, export and pictures.

Three small models are trained once per session on real machinery (the Trainer, checkpoints, the
run's saved config): an NTU-layout model on three synthetic classes, an OpenPose BODY_25 model on
the real soccer-kick OpenPose fixtures (the bench's demo model), and an AS-GCN with A-links (a few
batches: its weights only need to exist for export parity and the A-link picture).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, compose_config
from helpers import train_kick_model
from omegaconf import OmegaConf
from PIL import Image
from rich.console import Console

from asgcn_lightning.apps import demo
from asgcn_lightning.apps.demo import JsonPoses, run_demo, video_frames
from asgcn_lightning.apps.localise import LocaliseSettings, localise_input
from asgcn_lightning.apps.predict import predict
from asgcn_lightning.apps.train import train
from asgcn_lightning.data.formats.openpose_json import group_frame_files, read_openpose_frame, read_openpose_sequence
from asgcn_lightning.data.sources.ntu import prepare_ntu
from asgcn_lightning.data.store import SkeletonStore
from asgcn_lightning.data.tracking import normalise_by_extent
from asgcn_lightning.errors import UserError
from asgcn_lightning.export import example_batch, export, export_model, parity
from asgcn_lightning.inference import load_model
from asgcn_lightning.inference.inputs import SkeletonInput, people_to_sequence, read_inputs
from asgcn_lightning.inference.localise import localise, merge_windows, owned_spans
from asgcn_lightning.models.asgcn import ASGCN
from asgcn_lightning.skeleton.layouts import make_layout
from asgcn_lightning.visual.__main__ import main as pictures
from asgcn_lightning.visual.alinks import alink_figure, drawn_frame

FAST = ["trainer=cpu", "dataset.num_workers=0", "logger=csv"]
SYNTHETIC_CLASSES = ["wave right hand", "kick right leg", "squat"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One thread per process, as the demo runs: on 2 shared cores, spinning OpenMP threads cost 5-10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train_run(tmp: Path, data_dir: Path, overrides: list[str]) -> Path:
    """Train into ``tmp``, saving the composed config where a Hydra run keeps it; returns the last checkpoint."""
    cfg = compose_config("train", [*FAST, "torch_threads=1", *overrides], tmp, data_dir)
    (tmp / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, tmp / ".hydra" / "config.yaml")
    threads = torch.get_num_threads()
    try:
        train(cfg)
    finally:
        torch.set_num_threads(threads)  # train() sets it for its process; other test modules keep theirs
    return tmp / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def synthetic_ckpt(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    classes = "[" + ",".join(f"'{name}'" for name in SYNTHETIC_CLASSES) + "]"
    return _train_run(tmp_path_factory.mktemp("synthetic_run"), data_dir,
                      ["model=tiny", f"dataset.classes={classes}", "trainer.max_epochs=7", "test_after_fit=false"])


@pytest.fixture(scope="session")
def openpose_ckpt(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Path:
    """A BODY_25 model on the 20 real soccer kicks, labelled curl or laces (the kick type): the bench's demo model."""
    return train_kick_model(fixtures_dir / "openpose" / "soccer_kicks", tmp_path_factory.mktemp("openpose_run"),
                            store_dir=tmp_path_factory.mktemp("kick_store") / "kicks")


@pytest.fixture(scope="session")
def asgcn_ckpt(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return _train_run(tmp_path_factory.mktemp("asgcn_run"), data_dir, [
        "model=asgcn_tiny", "model.aim.pretrain_epochs=1", "trainer.max_epochs=2", "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1", "test_after_fit=false"])


@pytest.fixture(scope="session")
def short_video(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Path:
    """The first 60 frames of the tai chi clip (340x256, 30 fps)."""
    import cv2

    capture = cv2.VideoCapture(str(fixtures_dir / "video" / "ta_chi.mp4"))
    fps = capture.get(cv2.CAP_PROP_FPS)
    path = tmp_path_factory.mktemp("video") / "ta_chi_60.mp4"
    writer = None
    for _ in range(60):
        ok, frame = capture.read()
        assert ok
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frame.shape[1::-1])
        writer.write(frame)
    writer.release()
    capture.release()
    return path


def _compose(config: str, ckpt: Path, tmp_path: Path, data_dir: Path, *overrides: str):
    return compose_config(config, [f"ckpt_path={ckpt}", *overrides], tmp_path / "out", data_dir)


def _non_trivial_picture(path: Path, min_bytes: int = 8_000) -> None:
    assert path.is_file() and path.stat().st_size > min_bytes, path
    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert pixels.std() > 5, f"{path} is (nearly) blank"


def test_eval_of_an_asgcn_checkpoint_tests_the_classifier_on_the_runs_own_data(asgcn_ckpt, tmp_path, data_dir):
    """``eval.py ckpt_path=...`` alone: the checkpoint names its data, and the AIM stage is not re-entered
    (a fresh Trainer starts at epoch 0, inside the AIM epochs of a two-stage model)."""
    from asgcn_lightning.apps.evaluate import evaluate
    from asgcn_lightning.config import compose_config as compose_as_a_command
    from asgcn_lightning.inference.evaluation import dataset_logits

    results = evaluate(compose_as_a_command("eval", [f"ckpt_path={asgcn_ckpt}", "torch_threads=1"], tmp_path))
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    confusion = np.asarray(saved["confusion"])
    model = load_model(asgcn_ckpt)
    datamodule = model.datamodule()
    datamodule.setup("test")
    assert saved["store_dir"] == str(data_dir / "synthetic"), "the training run's data, as its checkpoint says"
    assert confusion.sum() == len(datamodule.test_set) > 0
    assert results["test/acc_top1"] == pytest.approx(np.trace(confusion) / confusion.sum(), abs=1e-6)
    assert "test/mpjpe" in results  # the prediction head is evaluated too
    logits, labels = dataset_logits(model.network, datamodule.test_set)  # the evaluation apps' logits
    assert results["test/acc_top1"] == pytest.approx(float((logits.argmax(dim=1) == labels).float().mean()), abs=1e-6)


def test_a_checkpoint_copied_alone_works_with_every_app(synthetic_ckpt, tmp_path, data_dir):
    """Nothing of the training run beside it: eval (its data found through the checkpoint, or moved and named by
    ``store_dir``), predict, export and the pictures. eval's accuracy is predict's over the same test samples."""
    import shutil

    from asgcn_lightning.apps.evaluate import evaluate
    from asgcn_lightning.config import compose_config as compose_as_a_command

    alone = tmp_path / "elsewhere" / "model.ckpt"
    alone.parent.mkdir()
    shutil.copy(synthetic_ckpt, alone)
    moved = tmp_path / "moved" / "synthetic"
    shutil.copytree(data_dir / "synthetic", moved)
    results = evaluate(compose_as_a_command("eval", [f"ckpt_path={alone}", f"store_dir={moved}", "torch_threads=1"],
                                            tmp_path / "eval"))
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["store_dir"] == str(moved)

    model = load_model(alone)
    datamodule = model.datamodule(moved)
    datamodule.setup("test")
    test_indices = datamodule.test_set.indices.tolist()
    report = predict(compose_as_a_command("predict", [f"ckpt_path={alone}", f"store_dir={moved}", "input=store:0"],
                                          tmp_path / "predict"))
    assert report["class_names"] == SYNTHETIC_CLASSES and report["layout"] == "ntu25"
    items = [read_inputs(f"store:{i}", model, store_dir=moved)[0] for i in test_indices]
    predicted = model.probabilities([item.window() for item in items]).argmax(axis=1)
    truth = np.asarray(datamodule.test_set.labels)
    assert len(items) == 72 and results["test/acc_top1"] == pytest.approx(float((predicted == truth).mean()), abs=1e-6)

    exported = export(compose_as_a_command("export", [f"ckpt_path={alone}"], tmp_path / "export"))
    assert Path(exported["path"]) == alone.with_suffix(".onnx") and exported["max_abs_difference"] < 1e-4
    _non_trivial_picture(pictures(["confusion", "--ckpt", str(alone), "--out", str(tmp_path / "confusion.png")]))


def test_a_checkpoint_copied_alone_serves_the_demo_and_the_other_evaluation_apps(
        synthetic_ckpt, openpose_ckpt, tmp_path, data_dir, fixtures_dir):
    """One-shot, ensembles and cross-data-set evaluation of a copied checkpoint and its moved data; the demo of
    a copied pose model. Two copies of one model fuse to that model's own accuracy, which eval.py reports."""
    import shutil

    from asgcn_lightning.apps.cross_eval import cross_evaluate
    from asgcn_lightning.apps.ensemble import ensemble
    from asgcn_lightning.apps.evaluate import evaluate
    from asgcn_lightning.apps.oneshot import oneshot
    from asgcn_lightning.config import compose_config as compose_as_a_command

    copies = [tmp_path / "elsewhere" / name for name in ("a.ckpt", "b.ckpt", "kicks.ckpt")]
    copies[0].parent.mkdir()
    for source, copy in zip((synthetic_ckpt, synthetic_ckpt, openpose_ckpt), copies, strict=True):
        shutil.copy(source, copy)
    moved = tmp_path / "moved" / "synthetic"
    shutil.copytree(data_dir / "synthetic", moved)
    moved_data = [f"store_dir={moved}", "torch_threads=1"]

    def command(app: str, *overrides: str) -> object:
        return compose_as_a_command(app, [*overrides, *moved_data], tmp_path / app)

    accuracy = evaluate(command("eval", f"ckpt_path={copies[0]}"))["test/acc_top1"]
    fused = ensemble(command("ensemble", f"ckpt_paths=[{copies[0]},{copies[1]}]"))
    assert fused["fused"]["top1"] == pytest.approx(accuracy, abs=1e-6) and fused["samples"] == 72
    few = oneshot(command("oneshot", f"ckpt_path={copies[0]}", "oneshot.shots=[1]", "oneshot.draws=2"))
    assert few["classes"] and not set(few["classes"]) & set(SYNTHETIC_CLASSES), "novel classes only"
    assert 0.0 <= few["results"][1]["accuracy"]["mean"] <= 1.0
    crossed = cross_evaluate(compose_config("cross_eval", [f"ckpt_path={copies[0]}", "torch_threads=1"],
                                            tmp_path / "cross_eval", data_dir))  # the synthetic set as the target
    assert crossed["evaluated"] > 0 and 0.0 <= crossed["accuracy"] <= 1.0

    kicks, poses = fixtures_dir / "openpose" / "soccer_kicks", tmp_path / "kick1"
    poses.mkdir()
    for path in (kicks / "json").glob("Kick_1_*_keypoints.json"):
        (poses / path.name).symlink_to(path)
    report = run_demo(_compose("demo", copies[2], tmp_path, data_dir, f"input={kicks / 'video' / 'kick_01.mp4'}",
                               f"poses={poses}", "max_frames=56", "window=16", "min_frames=12", "every=8",
                               "output=none"))
    assert report.frames == 56 and report.classifications


def test_eval_command_names_its_folder_after_the_checkpoints_run_and_prints_what_it_writes(synthetic_ckpt, tmp_path):
    done = subprocess.run([sys.executable, "eval.py", f"ckpt_path={synthetic_ckpt}", f"paths.log_dir={tmp_path}",
                           "torch_threads=1"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (written,) = tmp_path.glob("eval/runs/*/*/evaluation.json")
    assert written.parent.parent.name == "synthetic-xsub-tiny"  # the training run's experiment, not eval's default
    assert f"evaluation → {written}" in done.stdout


@pytest.mark.parametrize("command", [
    "predict.py ckpt_path={ckpt} input=store:0 output={file}/predictions.json",
    "-m asgcn_lightning.export ckpt_path={ckpt} export_path={file}/model.onnx",
], ids=["predict", "export"])
def test_an_output_path_below_a_file_is_one_line(synthetic_ckpt, tmp_path, command):
    file = tmp_path / "file"
    file.write_text("a file, not a folder")
    done = subprocess.run([sys.executable, *command.format(ckpt=synthetic_ckpt, file=file).split(),
                           f"paths.log_dir={tmp_path / 'logs'}", "torch_threads=1"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == f"error: {file}: exists and is not a folder", done.stderr[-2000:]


def test_a_checkpoint_without_a_model_card_is_one_clear_error(synthetic_ckpt, tmp_path):
    old = torch.load(synthetic_ckpt, weights_only=False)
    del old["model_card"]
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(UserError, match="carries no model card"):
        load_model(tmp_path / "old.ckpt")


@pytest.mark.parametrize("app", ["eval", "predict", "demo", "export", "oneshot", "ensemble", "cross_eval"])
def test_app_configs_compose_only_what_they_use(app, tmp_path, data_dir):
    """A checkpoint says which model and data it is: no app composes training (optimiser, LR scaling, loggers)."""
    cfg = compose_config(app, [], tmp_path, data_dir)
    assert cfg.task_name == app and "store_dir" in cfg and OmegaConf.is_missing(cfg, "ckpt_paths" if app == "ensemble"
                                                                                  else "ckpt_path")
    assert not {"model", "lr_scaling", "logger", "callbacks", "transfer", "optimized_metric"} & set(cfg)


def test_app_options_are_typed(synthetic_ckpt, tmp_path, data_dir):
    from asgcn_lightning.apps.oneshot import oneshot

    with pytest.raises(UserError, match="pose: Key 'sise' not in 'PoseSettings'"):
        predict(_compose("predict", synthetic_ckpt, tmp_path, data_dir, "input=store:0", "+pose.sise=3"))
    with pytest.raises(UserError, match="localise: Value 'abc' of type 'str' could not be converted to Integer"):
        predict(_compose("predict", synthetic_ckpt, tmp_path, data_dir, "input=store:0", "localise.window=abc"))
    with pytest.raises(UserError, match="oneshot: Value 'many' of type 'str' could not be converted to Integer"):
        oneshot(_compose("oneshot", synthetic_ckpt, tmp_path, data_dir, "oneshot.shots=[1,many]"))


# -- prediction --------------------------------------------------------------------------------------
def _recognised_held_out(checkpoint: Path, store: SkeletonStore, name: str) -> list[int]:
    """Held-out samples (subjects the model never saw) of class ``name`` that the model recognises on their own.

    What the apps add to a model (tables, files, timelines) is tested on samples the model gets right; how
    often it gets them right is the evaluation's business.
    """
    model = load_model(checkpoint)
    candidates = [i for i in range(len(store)) if store.record(i).subject > 8
                  and store.meta.class_names[store.record(i).label] == name]
    predicted = model.probabilities([store.sequence(i) for i in candidates]).argmax(axis=1)
    recognised = [i for i, label in zip(candidates, predicted, strict=True) if model.class_names[label] == name]
    assert len(recognised) > len(candidates) / 2, f"the model recognises {len(recognised)} of {len(candidates)}"
    return recognised


def test_predict_store_sample_gives_sorted_top_k_table_and_json(synthetic_ckpt, tmp_path, data_dir):
    store = SkeletonStore(data_dir / "synthetic")
    index = _recognised_held_out(synthetic_ckpt, store, "squat")[0]
    output = tmp_path / "predictions.json"
    report = predict(_compose("predict", synthetic_ckpt, tmp_path, data_dir, f"input=store:{index}", "top_k=3",
                              f"output={output}"))
    saved = json.loads(output.read_text())
    assert saved == json.loads(json.dumps(report))
    (result,) = saved["predictions"]
    assert saved["class_names"] == SYNTHETIC_CLASSES and result["true_class"] == "squat"
    probabilities = [row["probability"] for row in result["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True) and abs(sum(probabilities) - 1) < 1e-5
    assert result["top_k"][0]["class"] == "squat", result


def test_predict_ntu_skeleton_file_matches_the_same_sample_prepared_into_a_store(synthetic_ckpt, tmp_path, data_dir,
                                                                                  fixtures_dir):
    """A raw ``.skeleton`` file is read and preprocessed exactly as preparation stores it: the NTU fixtures
    prepared into a store and read back as ``store:<name>`` give the same probabilities."""
    names = ["S001C001P001R001A001", "S001C001P001R001A024", "S001C001P001R001A050"]  # one, noise body, two people
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in names:
        (raw / f"{name}.skeleton").symlink_to(fixtures_dir / "ntu" / "skeletons" / f"{name}.skeleton")
    prepare_ntu(tmp_path / "ntu60", raw_dir=raw, num_workers=1)
    path = raw / f"{names[1]}.skeleton"
    report = predict(_compose("predict", synthetic_ckpt, tmp_path, data_dir, f"input={path}"))
    (result,) = report["predictions"]
    assert result["name"] == path.stem and result["frames"] > 30 and len(result["top_k"]) == 3

    recogniser = load_model(synthetic_ckpt)
    from_files = [item for name in names for item in read_inputs(str(raw / f"{name}.skeleton"), recogniser)]
    # the synthetic run's model reads the NTU store: its classes are not NTU's
    from_store = [item for name in names for item in read_inputs(f"store:{name}", recogniser,
                                                                  store_dir=tmp_path / "ntu60")]
    ntu_names = ("drink water", "kicking something", "punching/slapping other person")
    assert [item.label for item in from_store] == [f"{name} (not among the model's classes)" for name in ntu_names]
    assert [len(a.sequence) for a in from_files] == [len(b.sequence) for b in from_store]
    files = recogniser.probabilities([item.window() for item in from_files])
    stored = recogniser.probabilities([item.window() for item in from_store])
    np.testing.assert_allclose(files, stored, atol=1e-5)
    assert not np.allclose(files, np.roll(stored, 1, axis=0), atol=1e-5)  # another sample's would not do
    by_class = {row["class"]: row["probability"] for row in result["top_k"]}
    np.testing.assert_allclose([by_class[c] for c in recogniser.class_names], files[1], atol=1e-6)


def test_predict_openpose_folder_matches_the_prepared_store(openpose_ckpt, tmp_path, data_dir, fixtures_dir):
    """Every video of an OpenPose folder is tracked and normalised as preparation did: its probabilities are
    those of ``store:<video>``, the sample the model was trained or validated on."""
    folder = fixtures_dir / "openpose" / "soccer_kicks" / "json"
    report = predict(_compose("predict", openpose_ckpt, tmp_path, data_dir, f"input={folder}", "top_k=2"))
    names = [r["name"] for r in report["predictions"]]
    assert len(names) == 20 and "Kick_1" in names
    recogniser = load_model(openpose_ckpt)
    stored = recogniser.probabilities([read_inputs(f"store:{name}", recogniser)[0].window() for name in names])
    predicted = np.array([[{row["class"]: row["probability"] for row in r["top_k"]}[c] for c in recogniser.class_names]
                          for r in report["predictions"]])
    np.testing.assert_allclose(predicted, stored, atol=1e-5)
    assert not np.allclose(predicted, np.roll(stored, 1, axis=0), atol=1e-5)  # another video's would not do


def test_predict_video_estimates_poses_with_the_builtin_backend(openpose_ckpt, short_video, tmp_path, data_dir):
    recogniser = load_model(openpose_ckpt)
    (item,) = read_inputs(str(short_video), recogniser)
    assert item.sequence.shape == (60, 1, 25, 3) and item.fps == pytest.approx(30, abs=0.1)
    assert (item.sequence[..., 2] > 0).mean() > 0.5  # the person is found in most frames
    window = item.window()
    assert np.abs(window[..., :2]).max() <= 0.5 + 1e-6  # centred on the people, as the store was prepared


def test_layout_mismatch_is_a_clear_error(synthetic_ckpt, openpose_ckpt, tmp_path, data_dir, fixtures_dir):
    folder = fixtures_dir / "openpose" / "soccer_kicks" / "json"
    with pytest.raises(UserError, match=r"skeletons are openpose25 \(25 joints\), but the model .* trained on ntu25"):
        predict(_compose("predict", synthetic_ckpt, tmp_path, data_dir, f"input={folder}"))
    skeleton = fixtures_dir / "ntu" / "skeletons" / "S001C001P001R001A001.skeleton"
    result = subprocess.run([sys.executable, "predict.py", f"ckpt_path={openpose_ckpt}", f"input={skeleton}",
                             f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path}/cli"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "its skeletons are ntu25 (25 joints), but the model" in result.stderr
    assert "use a checkpoint trained on ntu25 data" in result.stderr


# -- localisation ------------------------------------------------------------------------------------
def test_merge_windows_joins_runs_splits_at_centres_and_drops_unsure_windows():
    starts, ends = [0, 10, 20, 30, 40], [20, 30, 40, 50, 60]
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.55, 0.45], [0.2, 0.8], [0.1, 0.9]])
    assert owned_spans(starts, ends, 60) == [(0, 15), (15, 25), (25, 35), (35, 45), (45, 60)]
    segments = merge_windows(starts, ends, probabilities, ["a", "b"], threshold=0.6, fps=10.0, length=60)
    assert [(s.label, s.start_frame, s.end_frame, s.windows) for s in segments] == [("a", 0, 25, 2), ("b", 35, 60, 2)]
    assert segments[0].confidence == pytest.approx(0.85) and segments[1].start_s == pytest.approx(3.5)


def test_localisation_finds_the_change_between_two_actions(synthetic_ckpt, tmp_path, data_dir):
    recogniser = load_model(synthetic_ckpt)
    store = SkeletonStore(data_dir / "synthetic")
    def held_out(name: str) -> np.ndarray:
        """Three samples of a class by subjects the model was not trained on, one after the other."""
        return np.concatenate([store.sequence(i) for i in _recognised_held_out(synthetic_ckpt, store, name)[:3]])

    first, second = held_out("squat"), held_out("kick right leg")
    item = SkeletonInput("squat_then_kick", "synthetic", np.concatenate([first, second]), 30.0, recogniser.layout)
    timeline = localise(recogniser, item, window=48, stride=8, threshold=0.5)
    segments = timeline.segments
    assert segments[0].label == "squat" and segments[-1].label == "kick right leg", segments
    change = [s.end_frame for s in segments if s.label == "squat"][-1]
    # a window takes the label of most of its frames: the change is found to half a window plus a stride
    assert abs(change - len(first)) <= 48 // 2 + 8, (change, len(first), segments)
    assert segments[0].start_frame <= 24 and segments[-1].end_frame == len(item.sequence)
    record = localise_input(recogniser, item, LocaliseSettings(window=48, stride=8, threshold=0.5),
                            tmp_path / "predictions.json", Console())
    assert json.loads(json.dumps(record))["segments"][0]["label"] == "squat"
    _non_trivial_picture(Path(record["picture"]))


# -- demo --------------------------------------------------------------------------------------------
def _frame(path: Path, index: int) -> np.ndarray:
    import cv2

    capture = cv2.VideoCapture(str(path))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = capture.read()
    capture.release()
    assert ok, (path, index)
    return frame.astype(np.float32)


def test_demo_offline_writes_a_playable_annotated_video(openpose_ckpt, short_video, tmp_path, data_dir):
    report = run_demo(_compose("demo", openpose_ckpt, tmp_path, data_dir, f"input={short_video}", "window=32",
                               "every=8", "min_frames=16"))
    frames, fps, size = video_frames(report.output)
    assert (frames, size) == (60, (340, 256)) and fps == pytest.approx(30, abs=0.1)
    assert report.mode == "offline" and report.frames == 60 and report.fps > 0 and not report.interrupted
    assert [c.frame for c in report.classifications] == [15, 23, 31, 39, 47, 55]
    saved = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert saved["classifications"][0]["top_k"][0]["class"] in ("curl", "laces")
    # frame 40 shows the classification of frame 39: the label in white in the (black) band on top, and a bar
    # chart at the bottom left whose orange bars are as long as the probabilities (340 px wide: bars of 113 px)
    drawn, original = _frame(Path(report.output), 40), _frame(short_video, 40)
    white = (drawn[:20] > 170).all(axis=-1)
    assert white.sum() > 60 and not (original[:20] > 170).all(axis=-1).any()
    assert np.flatnonzero(white.any(axis=0)).max() < 120  # "laces 0.55" or "curl 0.61", from the left edge
    for rank, middle in enumerate((231, 243)):  # the middle rows of the two bars, inside their grey outline
        probability = report.classifications[3].top_k[rank]["probability"]
        row, before = drawn[middle, 5:117], original[middle, 5:117]
        orange = (row[:, 2] > 170) & (row[:, 1] > 100) & (row[:, 1] < 220) & (row[:, 0] < 90)
        assert abs(orange.sum() - (round(113 * probability) - 1)) <= 3, (rank, orange.sum(), probability)
        assert not ((before[:, 2] > 170) & (before[:, 0] < 90)).any()
    untouched = (slice(40, 200), slice(0, 30))  # left edge, between the band and the chart: nobody there
    assert np.abs(drawn[untouched] - original[untouched]).mean() < 4


def test_demo_from_a_stream_url_stops_cleanly_on_ctrl_c(openpose_ckpt, short_video, tmp_path, data_dir, monkeypatch):
    """A ``file://`` URL takes the camera/stream path of ``open_capture`` (live: real time, no video written);
    Ctrl+C after 40 frames ends the run like the end of a video, and the report is still written."""
    read_frames = demo.frames_of

    def interrupted(capture, max_frames):
        for count, frame in enumerate(read_frames(capture, max_frames)):
            if count == 40:
                raise KeyboardInterrupt
            yield frame

    monkeypatch.setattr(demo, "frames_of", interrupted)
    report = run_demo(_compose("demo", openpose_ckpt, tmp_path, data_dir, f"input=file://{short_video}",
                               "window=32", "min_frames=16", "every=8"))
    assert report.mode == "real time" and report.output is None and report.interrupted
    assert report.frames == 40 and report.fps > 0
    assert report.classifications and report.classifications[0].frame == 15  # the first window always runs
    assert all(c.frame in (15, 23, 31, 39) for c in report.classifications)
    saved = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert saved["frames"] == 40 and saved["interrupted"] and saved["fps"] == pytest.approx(report.fps)
    assert not list((tmp_path / "out").glob("*.mp4"))


def test_demo_real_time_on_onnx_with_a_video_standing_in_for_the_camera(openpose_ckpt, short_video, tmp_path,
                                                                       data_dir):
    report = run_demo(_compose("demo", openpose_ckpt, tmp_path, data_dir, f"input={short_video}", "realtime=true",
                               "output=none", "backend=onnx", "window=32", "min_frames=16"))
    assert report.mode == "real time" and report.output is None and report.frames == 60
    assert report.classifications, "the classifier thread produced nothing"
    eager = run_demo(_compose("demo", openpose_ckpt, tmp_path, data_dir, f"input={short_video}", "output=none",
                              "window=32", "min_frames=16", "max_frames=16"))
    # the first window is the same in both runs: ONNX and PyTorch agree on it
    assert eager.classifications[0].top_k[0]["probability"] == pytest.approx(
        report.classifications[0].top_k[0]["probability"], abs=1e-4)


def test_demo_with_given_openpose_json(openpose_ckpt, tmp_path, data_dir, fixtures_dir):
    kicks = fixtures_dir / "openpose" / "soccer_kicks"
    poses = tmp_path / "kick1"
    poses.mkdir()
    for path in (kicks / "json").glob("Kick_1_*_keypoints.json"):
        (poses / path.name).symlink_to(path)
    report = run_demo(_compose("demo", openpose_ckpt, tmp_path, data_dir, f"input={kicks / 'video' / 'kick_01.mp4'}",
                               f"poses={poses}", "max_frames=56", "window=16", "min_frames=12", "every=8"))
    # OpenPose found the kicker from frame 36 on; windows without anybody are not classified
    assert report.frames == 56 and [c.frame for c in report.classifications] == [43, 51]
    assert video_frames(report.output)[:2] == (56, pytest.approx(29.97, abs=0.01))


def test_demo_matches_openpose_files_to_frames_by_their_number(openpose_ckpt, tmp_path, data_dir, fixtures_dir):
    """Files numbered from 1 with frames 37-48 missing: each file is the frame its name says, not the next in line."""
    kicks = fixtures_dir / "openpose" / "soccer_kicks"
    (files,) = group_frame_files((kicks / "json").glob("Kick_1_*_keypoints.json"))[0].values()
    poses = tmp_path / "kick1"
    poses.mkdir()
    for original, path in enumerate(files):  # the fixture numbers 0..89 without a gap
        if not 36 <= original <= 47:
            (poses / f"Kick_1_{original + 1:012d}_keypoints.json").symlink_to(path)
    given = JsonPoses(poses)
    assert given(0, None).shape == (0, 25, 3) and given(40, None).shape == (0, 25, 3)
    np.testing.assert_array_equal(given(49, None), read_openpose_frame(files[48]))
    assert given(81, None).shape == (1, 25, 3) and given(82, None).shape == (0, 25, 3)  # the kicker's last file
    report = run_demo(_compose("demo", openpose_ckpt, tmp_path, data_dir, f"input={kicks / 'video' / 'kick_01.mp4'}",
                               f"poses={poses}", "max_frames=56", "window=16", "min_frames=12", "every=8"))
    # the kicker (files 36.. of the fixture) is in frames 49.. now; by position the window of frame 43 had him
    assert [c.frame for c in report.classifications] == [51]


def test_bench_measures_the_demo_in_each_mode(openpose_ckpt, short_video, tmp_path, capsys):
    from bench.demo import DEMO_MODES, measure_demo, print_demo, run_demo_bench
    from bench.report import check_targets

    result = measure_demo(openpose_ckpt, short_video, 1, tmp_path, max_frames=40)
    assert list(result["modes"]) == list(DEMO_MODES) and result["frames"] == 40 and result["runs"] == 1
    # window 64, first at 32 frames, every 8: frames 31 and 39; offline classifies every one of them
    counts = {mode: figures["classifications"] for mode, figures in result["modes"].items()}
    assert counts["offline torch"] == counts["offline onnx"] == 2 and 1 <= counts["real time onnx"] <= 2
    assert len(list(tmp_path.glob("offline_*_0/*_demo.mp4"))) == 2 and not list(tmp_path.glob("real_time_*/*.mp4"))
    medians = [mode["fps_median"] for mode in result["modes"].values()]
    assert all(mode["fps_median"] == mode["fps"][0] > 0 for mode in result["modes"].values())
    assert result["fps_slowest_median"] == min(medians)
    target = check_targets({"models": {}, "demo": result})["demo_fps"]
    assert target == {"value": min(medians), "target": ">= 25.0", "met": min(medians) >= 25}
    skipped = run_demo_bench(tmp_path / "no_fixtures", quick=True)
    assert "ta_chi.mp4 not found" in skipped["skipped"]
    assert check_targets({"models": {}, "demo": skipped})["demo_fps"]["met"] is None
    print_demo(result, Console(width=200))
    assert "real time onnx" in capsys.readouterr().out


# -- export ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_eager_pytorch(asgcn_ckpt, fmt, tmp_path, data_dir):
    cfg = _compose("export", asgcn_ckpt, tmp_path, data_dir, f"format={fmt}",
                   f"export_path={tmp_path / ('model.' + fmt)}")
    result = export(cfg)
    assert result["max_abs_difference"] < 1e-4 and Path(result["path"]).is_file()
    recogniser = load_model(asgcn_ckpt)
    assert recogniser.network.aim is not None  # A-links are part of what is exported
    noise = 0.3 * torch.randn_like(example_batch(recogniser, 3))  # other data than the export's own check
    assert parity(recogniser, result["path"], fmt, noise) < 1e-4
    with pytest.raises(UserError, match="format='tflite'"):
        export_model(recogniser, "tflite")


def test_export_command_logs_under_its_own_task(asgcn_ckpt, tmp_path, data_dir):
    done = subprocess.run([sys.executable, "-m", "asgcn_lightning.export", f"ckpt_path={asgcn_ckpt}",
                           f"export_path={tmp_path / 'model.onnx'}", f"paths.data_dir={data_dir}",
                           f"paths.log_dir={tmp_path / 'logs'}", "torch_threads=1"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    (run,) = (tmp_path / "logs").glob("*/runs/*/*")
    assert run.parent.parent.parent.name == "export" and (tmp_path / "model.onnx").is_file()
    assert run.parent.name == "synthetic-xsub-asgcn_tiny"  # named after the checkpoint's training run
    assert OmegaConf.load(run / ".hydra" / "config.yaml").task_name == "export"


# -- pictures ----------------------------------------------------------------------------------------
def test_pictures_of_data_and_models(synthetic_ckpt, asgcn_ckpt, tmp_path, data_dir, fixtures_dir):
    out = tmp_path / "pictures"
    gif = pictures(["animate", "store:7", "--store", str(data_dir / "synthetic"), "--out", str(out / "a.gif")])
    with Image.open(gif) as image:
        assert image.n_frames > 20 and gif.stat().st_size > 20_000
    kicks = pictures(["animate", str(fixtures_dir / "openpose" / "soccer_kicks" / "json"), "--video", "Kick_3",
                      "--max-frames", "10", "--out", str(out / "kick.gif")])
    with Image.open(kicks) as image:
        assert image.n_frames == 10
    _non_trivial_picture(pictures(["alinks", "store:3", "--ckpt", str(asgcn_ckpt), "--out", str(out / "alinks.png")]))
    _non_trivial_picture(pictures(["importance", "--ckpt", str(synthetic_ckpt), "--per-class", "6",
                                   "--out", str(out / "importance.png")]))
    _non_trivial_picture(pictures(["confusion", "--ckpt", str(synthetic_ckpt), "--out", str(out / "confusion.png")]))
    _non_trivial_picture(pictures(["curves", str(synthetic_ckpt.parent.parent), "--out", str(out / "curves.png"),
                                   "--wandb"]))
    assert list((out / "wandb").glob("offline-run-*")), "--wandb logs the picture to an offline W&B run"
    with pytest.raises(SystemExit) as stopped:
        pictures(["alinks", "store:3", "--ckpt", str(synthetic_ckpt), "--out", str(out / "none.png")])
    assert stopped.value.code == 2  # a model without A-links: one clear line, not a traceback


def _kick_sample(fixtures_dir: Path, frames: int) -> np.ndarray:
    """The first ``frames`` frames of the real Kick_1 as a network input ``(C, T, V, M)``: the kicker from frame 36."""
    (files,) = group_frame_files((fixtures_dir / "openpose" / "soccer_kicks" / "json").glob("Kick_1_*"))[0].values()
    people = people_to_sequence(read_openpose_sequence(files[:frames]), 1, "Kick_1")
    return normalise_by_extent(people).transpose(3, 0, 2, 1)


def test_alink_picture_of_an_image_layout_stands_upright_at_a_frame_with_the_person(fixtures_dir):
    """OpenPose y grows down the image: the picture flips its axis so the head is on top. In the first 60
    frames of the kick nobody is in the middle frame (30), so the body is drawn at frame 36, the nearest."""
    layout = make_layout("openpose25")
    network = ASGCN(2, layout, num_person=1, channels=(16, 16), strides=(1, 1), max_hop=2, aim_hidden=16,
                    aim_input_frames=12, predict_frames=4)
    sample = _kick_sample(fixtures_dir, 60)
    assert not np.abs(sample[:, 30]).sum() and drawn_frame(sample, 0) == 36
    figure = alink_figure(network, sample, top_k=5)
    assert figure.texts[0].get_text().endswith("frame 36")
    nose, ankle = sample[:2, 36, 0, 0], sample[:2, 36, 11, 0]  # 0 Nose, 11 RAnkle
    assert nose[1] < ankle[1]  # image coordinates: the head has the smaller y
    for panel in figure.axes[:-1]:  # the last is the probability legend
        low, high = panel.get_ylim()
        assert low > high  # inverted
        (_, nose_up), (_, ankle_up) = panel.transData.transform([nose, ankle])
        assert nose_up > ankle_up  # on the picture the head is above the feet
    with pytest.raises(UserError, match="person 0 is absent from frame 30"):
        drawn_frame(sample, 0, frame=30)
    with pytest.raises(UserError, match="absent from every frame"):
        drawn_frame(sample[:, :30], 0)
