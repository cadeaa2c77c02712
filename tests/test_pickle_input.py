"""Bad pickles and bad checkpoints (docs/bad_input.md, "Pickles" and "Checkpoints"): one test per row.

Every pickle is generated here, a few annotations of 12 frames, so each preparation takes well under a second.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO_ROOT
from pose_helpers import skipped_reasons

from asgcn_lightning.data.sources.losses import loss_policy
from asgcn_lightning.data.sources.pyskl import prepare_pyskl
from asgcn_lightning.data.store import SkeletonStore
from asgcn_lightning.errors import DataFormatError, UserError
from asgcn_lightning.schemas import LossPolicy
from asgcn_lightning.skeleton.layouts import KINECT20


def _annotation(name: str, label: Any, rng: np.random.Generator, joints: int = 20, dimensions: int = 3,
                people: int = 1) -> dict[str, Any]:
    """A Kinect-like 3D sample standing about 2.6 m from the camera (or 2D pixels with scores)."""
    frames = 12
    if dimensions == 3:
        keypoint = rng.normal(0, 0.3, (people, frames, joints, 3)).astype(np.float32)
        keypoint[..., 2] += 2.6
        return {"frame_dir": name, "label": label, "keypoint": keypoint, "total_frames": frames}
    keypoint = rng.uniform(100, 300, (people, frames, joints, 2)).astype(np.float32)
    return {"frame_dir": name, "label": label, "keypoint": keypoint, "total_frames": frames,
            "keypoint_score": rng.uniform(0.5, 1, (people, frames, joints)).astype(np.float32),
            "img_shape": (480, 640)}


def _pickle(path: Path, count: int = 8, seed: int = 0, protocol: int = pickle.DEFAULT_PROTOCOL,
            **extra: Any) -> dict[str, Any]:
    """``count`` annotations labelled 0..3 in turn; the first three quarters ``train``, the rest ``test``."""
    rng = np.random.default_rng(seed)
    annotations = [_annotation(f"s{i:02d}", i % 4, rng) for i in range(count)]
    names = [a["frame_dir"] for a in annotations]
    content = {"split": {"train": names[:count * 3 // 4], "test": names[count * 3 // 4:]},
               "annotations": annotations, **extra}
    _write(path, content, protocol)
    return content


def _write(path: Path, content: dict[str, Any], protocol: int = pickle.DEFAULT_PROTOCOL) -> Path:
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    return path


def _prepare(tmp_path: Path, path: Path, **options: Any) -> SkeletonStore:
    """A preparation that keeps what it could read, however much it lost (the skips are what these tests check)."""
    with loss_policy(LossPolicy(accept=True)):
        return SkeletonStore(prepare_pyskl(tmp_path / "store", path=path, **options))


class _RunsShell:
    """Unpickling this runs a shell command: what a malicious annotation file can hide."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (self.command,)


# -- Pickles ------------------------------------------------------------------------------------------
def test_a_pickle_that_runs_code_is_refused_before_the_code_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    content = _pickle(tmp_path / "anno.pkl")
    content["annotations"][3]["label"] = _RunsShell(f"touch {marker}")
    _write(tmp_path / "anno.pkl", content)
    with pytest.raises(DataFormatError) as error:
        _prepare(tmp_path, tmp_path / "anno.pkl")
    assert not marker.exists()
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'anno.pkl'}: refused: the pickle calls posix.system")
    assert "dataset.trust_pickle=true" in message and "\n" not in message
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_load_with_every_pickle_protocol(tmp_path: Path, protocol: int) -> None:
    content = _pickle(tmp_path / "anno.pkl", protocol=protocol)
    content["annotations"][0]["label"] = np.int64(0)  # numpy scalars are numbers too
    _write(tmp_path / "anno.pkl", content, protocol)
    store = _prepare(tmp_path, tmp_path / "anno.pkl", normalise=False)
    assert len(store) == 8
    expected = content["annotations"][5]["keypoint"].transpose(1, 0, 2, 3)
    np.testing.assert_array_equal(store.sequence(5), expected)


def test_a_trusted_pickle_may_hold_other_objects(tmp_path: Path) -> None:
    content = _pickle(tmp_path / "anno.pkl")
    content["source"] = Path("/recorded/somewhere")  # harmless, but not plain data
    _write(tmp_path / "anno.pkl", content)
    with pytest.raises(DataFormatError, match=r"calls pathlib\.PosixPath.*dataset\.trust_pickle=true"):
        _prepare(tmp_path, tmp_path / "anno.pkl")
    assert len(_prepare(tmp_path, tmp_path / "anno.pkl", trust_pickle=True)) == 8


@pytest.mark.parametrize(("value", "reason"), [(np.nan, "NaN or infinity"), (np.inf, "NaN or infinity"),
                                               (1e300, "NaN or infinity (as float32)")])
def test_non_finite_keypoints_skip_that_sample(tmp_path: Path, value: float, reason: str) -> None:
    content = _pickle(tmp_path / "anno.pkl")
    keypoint = content["annotations"][2]["keypoint"].astype(np.float64)
    keypoint[0, 5, 3, 1] = value
    content["annotations"][2]["keypoint"] = keypoint
    store = _prepare(tmp_path, _write(tmp_path / "anno.pkl", content))
    assert len(store) == 7 and "s02" not in store.index["name"].tolist()
    assert reason in skipped_reasons(store)[f"{tmp_path / 'anno.pkl'}:s02"]


def test_an_invalid_image_size_skips_that_sample(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    annotations = [_annotation(f"s{i}", i % 2, rng, joints=17, dimensions=2) for i in range(4)]
    annotations[1]["img_shape"] = (0, 0)
    content = {"split": {"train": ["s0", "s1", "s2"], "test": ["s3"]}, "annotations": annotations}
    store = _prepare(tmp_path, _write(tmp_path / "anno.pkl", content))
    assert store.index["name"].tolist() == ["s0", "s2", "s3"]
    assert skipped_reasons(store)[f"{tmp_path / 'anno.pkl'}:s1"] == "img_shape (0, 0) is not an image size"


def test_the_layout_is_that_of_most_annotations_not_the_first(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    annotations = [_annotation(f"s{i:02d}", i % 4, rng, joints=17 if i == 0 else 20) for i in range(20)]
    names = [a["frame_dir"] for a in annotations]
    content = {"split": {"train": names[:15], "test": names[15:]}, "annotations": annotations}
    store = _prepare(tmp_path, _write(tmp_path / "anno.pkl", content))
    assert len(store) == 19 and store.meta.layout == "kinect20"
    assert skipped_reasons(store)[f"{tmp_path / 'anno.pkl'}:s00"] == (
        "17 joints × 3D, the pickle's layout kinect20 has 20 joints × 3D (that of 19 of 20 annotations)")
    # a layout given explicitly decides instead: the one 17-joint annotation is stored, the 19 others skipped
    coco = {"name": "my17", "joints": [f"j{i}" for i in range(17)], "edges": [[i, i + 1] for i in range(16)],
            "centre": 0}
    with loss_policy(LossPolicy(accept=True)):
        store = SkeletonStore(prepare_pyskl(tmp_path / "store17", path=tmp_path / "anno.pkl", layout=coco))
    assert store.index["name"].tolist() == ["s00"] and store.meta.layout == "my17"
    assert len(store.meta.skipped) == 19


def test_unusable_annotations_are_skipped_and_listed(tmp_path: Path) -> None:
    content = _pickle(tmp_path / "anno.pkl")
    del content["annotations"][1]["keypoint"]
    content["annotations"][2]["keypoint"] = content["annotations"][2]["keypoint"][0]  # (T, V, C): no person axis
    content["annotations"][3]["keypoint"] = np.zeros((0, 12, 20, 3), np.float32)  # nobody
    content["annotations"].append({"label": 0})  # no frame_dir: named by its position
    store = _prepare(tmp_path, _write(tmp_path / "anno.pkl", content))
    reasons = skipped_reasons(store)
    assert len(store) == 5
    assert reasons[f"{tmp_path / 'anno.pkl'}:s01"] == "no 'keypoint'"
    assert reasons[f"{tmp_path / 'anno.pkl'}:s03"].startswith("keypoint has shape (0, 12, 20, 3)")
    assert reasons[f"{tmp_path / 'anno.pkl'}:s02"].startswith("keypoint has shape (12, 20, 3)")
    assert reasons[f"{tmp_path / 'anno.pkl'}:annotation 8"] == "no 'frame_dir'"


@pytest.mark.parametrize(("label", "message"), [
    (2.7, r"labels must be whole numbers from 0; 1 are not: s05 \(2\.7\)"),
    ("3", r"1 are not: s05 \('3'\)"),
    (-1, r"1 are negative: s05 \(-1\)"),
    (59, r"label 59 \(s05\) among 3 labels present leaves 57 classes without samples \(labels 1, 3, 4, 5, 6\.\.\.\)"
         r"; .*dataset\.class_names=\[\.\.\.\]"),
])
def test_labels_that_are_not_0_to_n_minus_1_are_refused(tmp_path: Path, label: Any, message: str) -> None:
    content = _pickle(tmp_path / "anno.pkl")
    for i, annotation in enumerate(content["annotations"]):
        annotation["label"] = i % 2 * 2  # 0 and 2 only, so 59 leaves 1 and 3 empty too
    content["annotations"][5]["label"] = label
    with pytest.raises(UserError, match=message):
        _prepare(tmp_path, _write(tmp_path / "anno.pkl", content))


def test_a_huge_label_is_refused_without_building_its_classes(tmp_path: Path) -> None:
    content = _pickle(tmp_path / "anno.pkl")
    content["annotations"][5]["label"] = 10 ** 8
    _write(tmp_path / "anno.pkl", content)
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match=r"label 100000000 .* leaves 99999996 classes without samples"):
            _prepare(tmp_path, tmp_path / "anno.pkl")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2 ** 20  # 10^8 class names would take gigabytes


def test_class_names_come_from_the_pickle_or_the_option(tmp_path: Path) -> None:
    _pickle(tmp_path / "anno.pkl", class_names=["wave", "sit", "stand", "walk"])
    assert _prepare(tmp_path, tmp_path / "anno.pkl").meta.class_names == ["wave", "sit", "stand", "walk"]
    _pickle(tmp_path / "plain.pkl")
    assert _prepare(tmp_path, tmp_path / "plain.pkl").meta.class_names == [f"class_{i}" for i in range(4)]
    names = [f"action {i}" for i in range(6)]  # given names may also name classes this file has no sample of
    assert _prepare(tmp_path, tmp_path / "plain.pkl", class_names=names).meta.class_names == names
    with pytest.raises(UserError, match=r"2 label\(s\) outside the 3 class names: s03 \(3\), s07 \(3\)"):
        _prepare(tmp_path, tmp_path / "plain.pkl", class_names=["a", "b", "c"])


def test_splits_that_overlap_or_name_missing_samples_are_refused(tmp_path: Path) -> None:
    content = _pickle(tmp_path / "anno.pkl")
    content["split"]["test"].append("s00")
    with pytest.raises(UserError, match=r"1 sample\(s\) in both 'train' and 'test': s00"):
        _prepare(tmp_path, _write(tmp_path / "anno.pkl", content))
    content = _pickle(tmp_path / "anno.pkl")
    content["split"]["test"] += ["ghost1", "ghost2"]
    with pytest.raises(UserError, match=r"split 'test' lists 2 sample\(s\) without an annotation: ghost1, ghost2"):
        _prepare(tmp_path, _write(tmp_path / "anno.pkl", content))
    content = _pickle(tmp_path / "anno.pkl")
    content["annotations"].append(dict(content["annotations"][0]))
    with pytest.raises(UserError, match=r"1 frame_dir name\(s\) used by more than one annotation: s00"):
        _prepare(tmp_path, _write(tmp_path / "anno.pkl", content))
    content = _pickle(tmp_path / "anno.pkl")
    content["split"]["test"] = []
    with pytest.raises(UserError, match="split 'test' lists no samples"):
        _prepare(tmp_path, _write(tmp_path / "anno.pkl", content))


def test_split_names_come_from_the_pickle(tmp_path: Path) -> None:
    content = _pickle(tmp_path / "anno.pkl")
    names = content["split"]["train"] + content["split"]["test"]
    content["split"] = {"xsub_train": names[:6], "xsub_val": names[6:],
                        "xview_train": names[2:], "xview_val": names[:2]}
    assert _prepare(tmp_path, _write(tmp_path / "anno.pkl", content)).index["setup"].tolist() == [1] * 6 + [2] * 2
    store = _prepare(tmp_path, tmp_path / "anno.pkl", split_train="xview_train")
    assert store.index["setup"].tolist() == [2] * 2 + [1] * 6
    content["split"] = {"first": names[:6], "second": names[6:]}
    with pytest.raises(UserError, match=r"cannot tell its train and test splits among \['first', 'second'\]; "
                                        r"give dataset\.split_train=<name> dataset\.split_test=<name>"):
        _prepare(tmp_path, _write(tmp_path / "anno.pkl", content))
    assert len(_prepare(tmp_path, tmp_path / "anno.pkl", split_train="first", split_test="second")) == 8
    del content["split"]
    with pytest.raises(UserError, match="no 'split' dict naming the train and test samples"):
        _prepare(tmp_path, _write(tmp_path / "anno.pkl", content))


def test_3d_camera_coordinates_are_centred_and_upright_with_the_persons_present(tmp_path: Path) -> None:
    content = _pickle(tmp_path / "anno.pkl")
    store = _prepare(tmp_path, tmp_path / "anno.pkl")
    assert store.meta.num_person == 1 and store.meta.layout == "kinect20" and store.meta.channels == 3
    raw = content["annotations"][0]["keypoint"][0]  # (T, V, 3), about 2.6 m from the camera
    stored = store.sequence(0)[:, 0]
    np.testing.assert_allclose(stored[0, KINECT20.centre], 0, atol=1e-6)  # centred on the first frame
    spine = stored[0, KINECT20.spine[1]] - stored[0, KINECT20.spine[0]]
    np.testing.assert_allclose(spine / np.linalg.norm(spine), [0, 1, 0], atol=1e-5)  # turned spine-up
    # a rigid motion: the distances between joints are those of the file
    np.testing.assert_allclose(np.linalg.norm(stored[5, 3] - stored[7, 9]), np.linalg.norm(raw[5, 3] - raw[7, 9]),
                               rtol=1e-4)


def test_2d_pixels_keep_their_aspect_ratio_and_score(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    annotations = [_annotation(f"s{i}", i % 2, rng, joints=17, dimensions=2, people=3) for i in range(4)]
    content = {"split": {"train": ["s0", "s1", "s2"], "test": ["s3"]}, "annotations": annotations}
    store = _prepare(tmp_path, _write(tmp_path / "anno.pkl", content))
    assert store.meta.num_person == 2 and store.meta.channels == 3 and store.meta.layout == "coco17"
    raw, score = annotations[0]["keypoint"], annotations[0]["keypoint_score"]
    best = int(np.argmax(score.sum(axis=(1, 2))))
    stored = store.sequence(0)[:, 0]
    np.testing.assert_allclose(stored[..., :2], (raw[best] - [320, 240]) / 640, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stored[..., 2], score[best], rtol=1e-6)


def test_each_pickle_gets_its_own_store(compose) -> None:
    first = compose(["dataset=pyskl", "dataset.path=/data/kinect_a.pkl"])
    second = compose(["dataset=pyskl", "dataset.path=/data/other/kinect_b.pkl"])
    assert Path(first.dataset.store_dir).name == "pyskl_kinect_a"
    assert Path(second.dataset.store_dir).name == "pyskl_kinect_b"
    assert Path(compose(["dataset=pyskl"]).dataset.store_dir).name == "pyskl"


def test_the_short_command_prepares_and_trains_a_new_3d_set(tmp_path: Path, compose, one_thread) -> None:
    """The README's pyskl commands name only the file (the run is shrunk): the rest comes from the pickle."""
    from asgcn_lightning.apps.train import train
    from asgcn_lightning.prepare import prepare

    _pickle(tmp_path / "kinect.pkl", count=12, class_names=["wave", "sit", "stand", "walk"])
    named = ["dataset=pyskl", f"dataset.path={tmp_path / 'kinect.pkl'}"]
    store = prepare(compose(named))  # python -m asgcn_lightning.prepare dataset=pyskl dataset.path=...
    assert Path(store.root).name == "pyskl_kinect" and len(store) == 12
    assert store.meta.class_names == ["wave", "sit", "stand", "walk"] and store.meta.num_person == 1
    cfg = compose([*named, "split=predefined", "model=tiny", "trainer.max_epochs=1", "dataset.window=8",
                   "dataset.num_workers=0", "test_after_fit=false", "logger=csv"])
    assert {"train/loss", "val/acc_top1"} <= set(train(cfg))
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()


# -- Checkpoints --------------------------------------------------------------------------------------
def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def _bad_checkpoint(folder: Path, kind: str) -> tuple[Path, str]:
    """A checkpoint path that cannot be loaded, and the cause the error line must give."""
    path = folder / f"{kind}.ckpt"
    if kind == "missing":
        return path, "no such file"
    if kind == "truncated":
        import torch

        torch.save({"state_dict": {"w": torch.zeros(1000)}, "epoch": 3}, path)
        path.write_bytes(path.read_bytes()[:2000])
    else:
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path, "not a readable checkpoint"


@pytest.mark.parametrize("kind", ["missing", "truncated", "random_bytes"])
def test_every_app_names_an_unreadable_checkpoint_and_its_cause(tmp_path: Path, kind: str) -> None:
    from asgcn_lightning.inference import load_model

    path, cause = _bad_checkpoint(tmp_path, kind)
    with pytest.raises(UserError) as error:
        load_model(path)  # the one loader of eval, predict, demo, export, cross_eval, ensemble, oneshot, visual
    assert str(error.value).startswith(f"checkpoint {path}: {cause}") and "\n" not in str(error.value)


def test_train_resuming_from_an_unreadable_checkpoint_is_one_error_line(tmp_path: Path) -> None:
    _pickle(tmp_path / "tiny.pkl")
    prepare_pyskl(tmp_path / "data" / "pyskl_tiny", path=tmp_path / "tiny.pkl")
    path, cause = _bad_checkpoint(tmp_path, "truncated")
    result = _run("train.py", "dataset=pyskl", f"dataset.path={tmp_path / 'tiny.pkl'}",
                  f"paths.data_dir={tmp_path / 'data'}", "split=predefined", "model=tiny", "dataset.window=8",
                  "dataset.num_workers=0", "torch_threads=1", "logger=csv", f"hydra.run.dir={tmp_path}/run",
                  f"ckpt_path={path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: checkpoint {path}: {cause}")


@pytest.mark.parametrize("kind", ["missing", "random_bytes"])
def test_train_names_a_missing_or_foreign_checkpoint(tmp_path: Path, compose, one_thread, kind: str) -> None:
    from asgcn_lightning.apps.train import train

    _pickle(tmp_path / "tiny.pkl")
    path, cause = _bad_checkpoint(tmp_path, kind)
    cfg = compose(["dataset=pyskl", f"dataset.path={tmp_path / 'tiny.pkl'}", "split=predefined", "model=tiny",
                   "dataset.window=8", "dataset.num_workers=0", "logger=csv", f"ckpt_path={path}"])
    prepare_pyskl(cfg.dataset.store_dir, path=tmp_path / "tiny.pkl")
    with pytest.raises(UserError) as error:
        train(cfg)
    assert str(error.value).startswith(f"checkpoint {path}: {cause}") and "\n" not in str(error.value)
