"""Using trained models: prediction on every input kind, localisation, the video demo, export and pictures.

Three small models are trained once per session on real machinery (the Trainer, checkpoints, the
run's saved config): an NTU-layout model on three synthetic classes, an OpenPose BODY_25 model on
the real soccer-kick OpenPose fixtures, and an AS-GCN with A-links (a few batches: its weights
only need to exist for export parity and the A-link picture).
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
from omegaconf import OmegaConf
from PIL import Image
from rich.console import Console

from asgcn_lightning.apps.demo import run_demo, video_frames
from asgcn_lightning.apps.localise import localise, localise_input, merge_windows, owned_spans
from asgcn_lightning.apps.predict import SkeletonInput, load_recogniser, predict, read_inputs
from asgcn_lightning.apps.train import train
from asgcn_lightning.data.store import SkeletonStore
from asgcn_lightning.errors import UserError
from asgcn_lightning.export import example_batch, export, export_model, parity
from asgcn_lightning.visual.__main__ import main as pictures

FAST = ["trainer=cpu", "dataset.num_workers=0", "trainer.enable_progress_bar=false", "logger=csv",
        "callbacks.rich_progress_bar=null", "callbacks.confusion_matrix=null", "callbacks.throughput=null"]
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
def openpose_ckpt(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, fixtures_dir: Path) -> Path:
    """A BODY_25 model on the 20 real soccer kicks, labelled curl or laces (the kick type)."""
    kicks = fixtures_dir / "openpose" / "soccer_kicks"
    table = np.load(kicks / "labels.npy", allow_pickle=True)
    labels = tmp_path_factory.mktemp("kick_labels") / "labels.csv"
    labels.write_text("video,label\n" + "".join(f"Kick_{row[0]},{('curl', 'laces')[row[4]]}\n" for row in table))
    store = tmp_path_factory.mktemp("kick_store") / "kicks"
    return _train_run(tmp_path_factory.mktemp("openpose_run"), data_dir, [
        "model=tiny", "dataset=openpose_folder", f"dataset.root={kicks / 'json'}", f"dataset.labels={labels}",
        f"dataset.store_dir={store}", "dataset.num_person=1", "dataset.auto_prepare=true", "split=random",
        "trainer.max_epochs=2", "test_after_fit=false"])


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


# -- evaluation ---------------------------------------------------------------------------------------
def test_eval_of_an_asgcn_checkpoint_tests_the_classifier_on_the_runs_own_data(asgcn_ckpt, tmp_path, data_dir):
    """``eval.py ckpt_path=...`` alone: the run's data folder is found, and the AIM stage is not re-entered
    (a fresh Trainer starts at epoch 0, inside the AIM epochs of a two-stage model)."""
    from asgcn_lightning.apps.components import build_datamodule
    from asgcn_lightning.apps.evaluate import adopt_run_config, evaluate
    from asgcn_lightning.apps.predict import compose_config as compose_as_a_command

    cfg = compose_as_a_command("eval", [f"ckpt_path={asgcn_ckpt}", "torch_threads=1"], tmp_path)
    results = evaluate(cfg)
    assert cfg.paths.data_dir == str(data_dir), "the training run's paths.data_dir"
    confusion = np.asarray(json.loads((tmp_path / "evaluation.json").read_text())["confusion"])
    datamodule = build_datamodule(cfg)
    datamodule.setup("test")
    assert confusion.sum() == len(datamodule.test_set) > 0
    assert results["test/acc_top1"] == pytest.approx(np.trace(confusion) / confusion.sum(), abs=1e-6)
    assert "test/mpjpe" in results  # the prediction head is evaluated too
    # a data folder given on this command's line wins over the run's
    elsewhere = compose_config("eval", [f"ckpt_path={asgcn_ckpt}"], tmp_path / "other", tmp_path / "moved")
    assert adopt_run_config(elsewhere, asgcn_ckpt) and elsewhere.paths.data_dir == str(tmp_path / "moved")


# -- prediction --------------------------------------------------------------------------------------
def test_predict_store_sample_gives_sorted_top_k_table_and_json(synthetic_ckpt, tmp_path, data_dir):
    store = SkeletonStore(data_dir / "synthetic")
    index = next(i for i in range(len(store)) if store.meta.class_names[store.record(i).label] == "squat"
                 and store.record(i).subject > 8)  # a held-out subject
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


def test_predict_ntu_skeleton_file_into_ntu_layout_model(synthetic_ckpt, tmp_path, data_dir, fixtures_dir):
    path = fixtures_dir / "ntu" / "skeletons" / "S001C001P001R001A024.skeleton"  # kicking something
    report = predict(_compose("predict", synthetic_ckpt, tmp_path, data_dir, f"input={path}"))
    (result,) = report["predictions"]
    assert result["name"] == path.stem and result["frames"] > 30 and len(result["top_k"]) == 3
    assert {row["class"] for row in result["top_k"]} == set(SYNTHETIC_CLASSES)


def test_predict_openpose_folder_classifies_every_video(openpose_ckpt, tmp_path, data_dir, fixtures_dir):
    folder = fixtures_dir / "openpose" / "soccer_kicks" / "json"
    report = predict(_compose("predict", openpose_ckpt, tmp_path, data_dir, f"input={folder}", "top_k=2"))
    names = [r["name"] for r in report["predictions"]]
    assert len(names) == 20 and "Kick_1" in names
    assert all({row["class"] for row in r["top_k"]} == {"curl", "laces"} for r in report["predictions"])


def test_predict_video_estimates_poses_with_the_builtin_backend(openpose_ckpt, short_video, tmp_path, data_dir):
    recogniser = load_recogniser(_compose("predict", openpose_ckpt, tmp_path, data_dir))
    (item,) = read_inputs(str(short_video), recogniser)
    assert item.sequence.shape == (60, 1, 25, 3) and item.fps == pytest.approx(30, abs=0.1)
    assert (item.sequence[..., 2] > 0).mean() > 0.5  # the person is found in most frames
    window = item.window()
    assert np.abs(window[..., :2]).max() <= 0.5 + 1e-6  # centred on the people, as the store was prepared


def test_layout_mismatch_is_a_clear_error(synthetic_ckpt, openpose_ckpt, tmp_path, data_dir, fixtures_dir):
    folder = fixtures_dir / "openpose" / "soccer_kicks" / "json"
    with pytest.raises(UserError, match=r"OpenPose BODY_25 \(openpose25, 2D\), but the model .* NTU Kinect v2"):
        predict(_compose("predict", synthetic_ckpt, tmp_path, data_dir, f"input={folder}"))
    skeleton = fixtures_dir / "ntu" / "skeletons" / "S001C001P001R001A001.skeleton"
    result = subprocess.run([sys.executable, "predict.py", f"ckpt_path={openpose_ckpt}", f"input={skeleton}",
                             f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path}/cli"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "its skeletons are NTU Kinect v2 (ntu25, 3D), but the model" in result.stderr
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
    recogniser = load_recogniser(_compose("predict", synthetic_ckpt, tmp_path, data_dir))
    store = SkeletonStore(data_dir / "synthetic")
    def held_out(name: str) -> np.ndarray:
        """Three samples of a class by a subject the model was not trained on, one after the other."""
        chosen = [i for i in range(len(store)) if store.record(i).subject > 8
                  and store.meta.class_names[store.record(i).label] == name][:3]
        return np.concatenate([store.sequence(i) for i in chosen])

    first, second = held_out("squat"), held_out("kick right leg")
    item = SkeletonInput("squat_then_kick", "synthetic", np.concatenate([first, second]), 30.0)
    timeline = localise(recogniser, item, window=48, stride=8, threshold=0.5)
    segments = timeline.segments
    assert segments[0].label == "squat" and segments[-1].label == "kick right leg", segments
    change = [s.end_frame for s in segments if s.label == "squat"][-1]
    assert abs(change - len(first)) <= 24, (change, len(first), segments)
    assert segments[0].start_frame <= 24 and segments[-1].end_frame == len(item.sequence)
    record = localise_input(recogniser, item, OmegaConf.create({"window": 48, "stride": 8, "threshold": 0.5}),
                            tmp_path / "predictions.json", Console())
    assert json.loads(json.dumps(record))["segments"][0]["label"] == "squat"
    _non_trivial_picture(Path(record["picture"]))


# -- demo --------------------------------------------------------------------------------------------
def test_demo_offline_writes_a_playable_annotated_video(openpose_ckpt, short_video, tmp_path, data_dir):
    report = run_demo(_compose("demo", openpose_ckpt, tmp_path, data_dir, f"input={short_video}", "window=32",
                               "every=8", "min_frames=16"))
    frames, fps, size = video_frames(report.output)
    assert (frames, size) == (60, (340, 256)) and fps == pytest.approx(30, abs=0.1)
    assert report.mode == "offline" and report.frames == 60 and report.fps > 0
    assert [c.frame for c in report.classifications] == [15, 23, 31, 39, 47, 55]
    saved = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert saved["classifications"][0]["top_k"][0]["class"] in ("curl", "laces")


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


# -- export ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_eager_pytorch(asgcn_ckpt, fmt, tmp_path, data_dir):
    cfg = _compose("predict", asgcn_ckpt, tmp_path, data_dir, f"format={fmt}",
                   f"export_path={tmp_path / ('model.' + fmt)}")
    result = export(cfg)
    assert result["max_abs_difference"] < 1e-4 and Path(result["path"]).is_file()
    recogniser = load_recogniser(_compose("predict", asgcn_ckpt, tmp_path, data_dir))
    assert recogniser.network.aim is not None  # A-links are part of what is exported
    noise = 0.3 * torch.randn_like(example_batch(recogniser, 3))  # other data than the export's own check
    assert parity(recogniser, result["path"], fmt, noise) < 1e-4
    with pytest.raises(UserError, match="format='tflite'"):
        export_model(recogniser, "tflite")


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
