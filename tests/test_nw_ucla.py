"""Northwestern-UCLA: the real release (extracted once per session) read into a store, its splits and the recipe."""

from __future__ import annotations

import collections
import json
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from omegaconf import OmegaConf
from pose_helpers import skipped_reasons

from asgcn_lightning.data.sources.losses import loss_policy
from asgcn_lightning.data.sources.nw_ucla import NW_UCLA_ACTIONS, parse_nw_ucla_name, prepare_nw_ucla
from asgcn_lightning.data.splits import MetadataSplit
from asgcn_lightning.data.store import SkeletonStore
from asgcn_lightning.errors import UserError
from asgcn_lightning.schemas import LossPolicy
from asgcn_lightning.skeleton.layouts import KINECT20

ARCHIVE = Path("nw_ucla") / "NW-UCLA.tar.xz"


@pytest.fixture(scope="session")
def release(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The extracted ``NW-UCLA`` folder (``all_sqe/*.json`` and ``val_label.pkl``)."""
    archive = fixtures_dir / ARCHIVE
    if not archive.is_file():
        pytest.skip(f"the Northwestern-UCLA archive is not at {archive}")
    target = tmp_path_factory.mktemp("nw_ucla")
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target / "NW-UCLA"


@pytest.fixture(scope="session")
def store(release: Path, tmp_path_factory: pytest.TempPathFactory) -> SkeletonStore:
    return SkeletonStore(prepare_nw_ucla(tmp_path_factory.mktemp("store") / "nw_ucla", raw_dir=release / "all_sqe"))


class _PlainDataUnpickler(pickle.Unpickler):
    """Lists, dicts, strings and numbers only: a pickle that names any class or function is refused."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def _names(store: SkeletonStore, rows: np.ndarray) -> set[str]:
    return {str(store.index["name"][row]) for row in rows}


def test_the_release_has_1484_sequences_of_ten_actions(store: SkeletonStore) -> None:
    assert len(store) == 1484 and not store.meta.skipped
    assert store.frame_shape == (1, 20, 3) and store.meta.layout == "kinect20"
    assert store.meta.class_names == list(NW_UCLA_ACTIONS.values()) and len(store.meta.class_names) == 10
    counts = collections.Counter(store.index["label"].tolist())
    assert counts == {0: 150, 1: 152, 2: 141, 3: 173, 4: 148, 5: 149, 6: 142, 7: 142, 8: 145, 9: 142}
    assert set(store.index["subject"].tolist()) == set(range(1, 11))
    assert collections.Counter(store.index["camera"].tolist()) == {1: 516, 2: 504, 3: 464}
    assert store.index["length"].min() >= 1 and store.index["length"].max() == 201


def test_cross_view_is_views_1_and_2_against_the_release_list_of_view_3(store: SkeletonStore, release: Path) -> None:
    train, test = MetadataSplit("xview", "camera", [1, 2]).sides(store.index)  # training side (train + val)
    assert (len(train), len(test)) == (1020, 464)
    with open(release / "val_label.pkl", "rb") as handle:
        listed = {entry["file_name"] for entry in _PlainDataUnpickler(handle).load()}
    assert _names(store, test) == listed


def test_cross_subject_trains_on_subjects_1_to_7(store: SkeletonStore) -> None:
    values = OmegaConf.load(REPO_ROOT / "configs" / "dataset" / "nw_ucla.yaml").split_values
    train, test = MetadataSplit("xsub", "subject", values.xsub).sides(store.index)
    assert (len(train), len(test)) == (1039, 445)
    assert set(store.index["subject"][test].tolist()) == {8, 9, 10}


def test_a_sample_holds_the_coordinates_of_its_json(store: SkeletonStore, release: Path) -> None:
    name = "a05_s04_e02_v03"
    row = int(np.flatnonzero(store.index["name"] == name)[0])
    content = json.loads((release / "all_sqe" / f"{name}.json").read_text())
    np.testing.assert_array_equal(store.sequence(row)[:, 0], np.asarray(content["skeletons"], dtype=np.float32))
    assert store.index["label"][row] == content["label"] - 1 == 4
    assert (store.index["subject"][row], store.index["camera"][row], store.index["replication"][row]) == (4, 3, 2)


def test_unusable_files_are_skipped_with_the_reason(tmp_path: Path) -> None:
    frames = np.random.default_rng(0).normal(size=(5, 20, 3)).tolist()
    files = {
        "a01_s01_e00_v01": {"file_name": "a01_s01_e00_v01", "skeletons": frames, "label": 1},
        "a02_s01_e00_v01": {"file_name": "a02_s01_e00_v01", "skeletons": frames, "label": 3},
        "a03_s01_e00_v01": {"file_name": "a03_s01_e00_v01", "skeletons": np.zeros((5, 19, 3)).tolist(), "label": 3},
        "a07_s01_e00_v01": {"file_name": "a07_s01_e00_v01", "skeletons": frames, "label": 7},
        "clip": {"skeletons": frames, "label": 1},
    }
    for name, content in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(content))
    (tmp_path / "a04_s01_e00_v01.json").write_text("{not json")
    with loss_policy(LossPolicy(accept=True)):  # the skips are what this test checks, however many
        store = SkeletonStore(prepare_nw_ucla(tmp_path / "store", raw_dir=tmp_path))
    assert store.index["name"].tolist() == ["a01_s01_e00_v01"]
    reasons = skipped_reasons(store)
    assert "label 3 contradicts action a02" in reasons[str(tmp_path / "a02_s01_e00_v01.json")]
    assert "shape (5, 19, 3)" in reasons[str(tmp_path / "a03_s01_e00_v01.json")]
    assert "not readable JSON" in reasons[str(tmp_path / "a04_s01_e00_v01.json")]
    assert "a07 is not one of the release's ten" in reasons[str(tmp_path / "a07_s01_e00_v01.json")]
    assert "not a sequence name" in reasons[str(tmp_path / "clip.json")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no \.json files"):
        prepare_nw_ucla(tmp_path / "other", raw_dir=tmp_path / "empty")
    with pytest.raises(UserError, match=r"dataset\.raw_dir is not set"):
        prepare_nw_ucla(tmp_path / "other", raw_dir=None)


def test_sequence_names() -> None:
    assert parse_nw_ucla_name("data/a12_s10_e04_v03.json") == {"action": 12, "subject": 10, "take": 4, "view": 3}
    with pytest.raises(UserError, match="not a Northwestern-UCLA sequence name"):
        parse_nw_ucla_name("S001C001P001R001A001")


def test_the_kinect_v1_layout_is_the_release_joint_order() -> None:
    assert KINECT20.joints[:4] == ("hip_centre", "spine", "shoulder_centre", "head")
    assert KINECT20.joints[4:8] == ("left_shoulder", "left_elbow", "left_wrist", "left_hand")
    assert KINECT20.joints[12:20:4] == ("left_hip", "right_hip")
    assert len(KINECT20.bones) == 19  # one tree over the 20 joints


def test_the_prepare_command_reads_the_release_folder(release: Path, tmp_path: Path) -> None:
    """``python -m asgcn_lightning.prepare dataset=nw_ucla dataset.raw_dir=<...>``, given the folder above all_sqe."""
    result = subprocess.run(
        [sys.executable, "-m", "asgcn_lightning.prepare", "dataset=nw_ucla", f"dataset.raw_dir={release}",
         f"paths.data_dir={tmp_path}/data", f"hydra.run.dir={tmp_path}/prepare"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((tmp_path / "data" / "nw_ucla" / "meta.json").read_text())
    assert (meta["num_samples"], meta["num_person"], meta["num_joints"]) == (1484, 1, 20)
    assert meta["source"] == str(release / "all_sqe")


def test_the_recipe_composes_to_a_cross_view_joint_stream_model(compose) -> None:
    cfg = compose(["experiment=nw_ucla"])
    assert (cfg.dataset.name, cfg.split.name, cfg.dataset.stream) == ("nw_ucla", "xview", None)
    assert cfg.dataset.prepare._target_ == "asgcn_lightning.data.sources.nw_ucla.prepare_nw_ucla"
    assert list(cfg.split.train_values) == [1, 2] and cfg.dataset.num_person == 1
    assert not cfg.model.network.use_alinks and cfg.model.aim is None
    assert max(cfg.model.scheduler.schedule.milestones) < cfg.trainer.max_epochs
