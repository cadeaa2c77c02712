"""NTU RGB+D raw skeleton files → prepared store, on the real fixture files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from asgcn_lightning.data.formats.ntu_skeleton import BodyTrack, NtuSkeletonFile, read_ntu_skeleton
from asgcn_lightning.data.sources.losses import loss_policy
from asgcn_lightning.data.sources.ntu import (
    MISSING_REASON,
    SPLIT_FIELDS,
    SPLIT_VALUES,
    ntu_class_names,
    official_missing_samples,
    parse_ntu_name,
    prepare_ntu,
)
from asgcn_lightning.data.sources.ntu_bodies import actor_sequence, motion_energy, select_actors, spurious_reason
from asgcn_lightning.data.store import SKIPPED_FILE, SkeletonStore, StoreWriter
from asgcn_lightning.errors import DataFormatError, UserError
from asgcn_lightning.schemas import LossPolicy

REPO_ROOT = Path(__file__).resolve().parents[1]
NOISY = range(24, 30)  # A024-A029 carry a spurious second body
TWO_PERSON = range(50, 61)


def fixture_name(action: int) -> str:
    return f"S001C001P001R001A{action:03d}"


def copy_fixture(skeleton_dir: Path, action: int, folder: Path, name: str | None = None) -> None:
    shutil.copyfile(skeleton_dir / f"{fixture_name(action)}.skeleton",
                    folder / f"{name or fixture_name(action)}.skeleton")


@pytest.fixture(scope="module")
def skeleton_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "ntu" / "skeletons"


@pytest.fixture(scope="module")
def parsed(skeleton_dir: Path) -> dict[int, NtuSkeletonFile]:
    return {action: read_ntu_skeleton(skeleton_dir / f"{fixture_name(action)}.skeleton")
            for action in range(1, 61)}


def read_by_hand(path: Path) -> dict[tuple[int, int, int], list[float]]:
    """An independent line-by-line reading: (frame, bodyID, joint) → [x, y, z] straight from the text."""
    lines = path.read_text().splitlines()
    values, i = {}, 1
    for frame in range(int(lines[0])):
        bodies = int(lines[i])
        i += 1
        for _ in range(bodies):
            body_id, joints = int(lines[i].split()[0]), int(lines[i + 1])
            for joint in range(joints):
                values[frame, body_id, joint] = [float(v) for v in lines[i + 2 + joint].split()[:3]]
            i += 2 + joints
    return values


# -- parser ------------------------------------------------------------------------------------------
def test_every_fixture_parses(parsed: dict[int, NtuSkeletonFile]) -> None:
    assert len(parsed) == 60
    for action, skeleton in parsed.items():
        assert skeleton.num_frames > 30, action
        expected_bodies = 2 if action in NOISY or action in TWO_PERSON else 1
        assert len(skeleton.bodies) == expected_bodies, action
        for body in skeleton.bodies:
            assert body.xyz.shape == (len(body.frames), 25, 3)
            assert np.all(np.diff(body.frames) > 0) and body.frames[-1] < skeleton.num_frames


@pytest.mark.parametrize("action", [1, 26, 55])
def test_joint_values_match_the_file_text(action: int, skeleton_dir: Path,
                                          parsed: dict[int, NtuSkeletonFile]) -> None:
    path = skeleton_dir / f"{fixture_name(action)}.skeleton"
    by_hand = read_by_hand(path)
    found = {}
    for body in parsed[action].bodies:
        for row, frame in enumerate(body.frames):
            for joint in range(25):
                found[int(frame), body.body_id, joint] = body.xyz[row, joint].tolist()
    assert found == by_hand  # exact: the same decimal text gives the same float64
    # and a few lines spelled out: frame 1, first body, joints 1 and 25
    lines = path.read_text().splitlines()
    first = parsed[action].bodies[0]
    assert first.frames[0] == 0 and int(lines[2].split()[0]) == first.body_id
    assert first.xyz[0, 0].tolist() == [float(v) for v in lines[4].split()[:3]]
    assert first.xyz[0, 24].tolist() == [float(v) for v in lines[28].split()[:3]]


def test_crlf_file_parses_identically(skeleton_dir: Path, parsed: dict[int, NtuSkeletonFile],
                                      tmp_path: Path) -> None:
    source = skeleton_dir / f"{fixture_name(55)}.skeleton"
    crlf = tmp_path / source.name
    crlf.write_bytes(source.read_bytes().replace(b"\n", b"\r\n"))
    again = read_ntu_skeleton(crlf)
    assert again.num_frames == parsed[55].num_frames
    assert [b.body_id for b in again.bodies] == [b.body_id for b in parsed[55].bodies]
    for mine, theirs in zip(again.bodies, parsed[55].bodies, strict=True):
        np.testing.assert_array_equal(mine.frames, theirs.frames)
        np.testing.assert_array_equal(mine.xyz, theirs.xyz)


def _lines(skeleton_dir: Path) -> list[str]:
    return (skeleton_dir / f"{fixture_name(1)}.skeleton").read_text().splitlines(keepends=True)


def bad_files(skeleton_dir: Path) -> dict[str, tuple[str, str]]:
    """Broken variants of A001 (103 frames, one body, 28 lines a frame): kind → (text, problem)."""
    lines = _lines(skeleton_dir)
    fewer_joints = [*lines[:3], "24\n", *lines[4:28], *lines[29:]]  # says 24 joints and has 24
    missing_line = [*lines[:10], *lines[11:]]  # says 25 joints, one joint line gone
    non_numeric = list(lines)
    non_numeric[5] = "abc " + lines[5].split(" ", 1)[1]
    return {
        "truncated": ("".join(lines[:100]), "truncated: frame 4 of 103"),
        "cut_mid_line": ("".join(lines)[:-40], "truncated: line 2885: expected joint 25"),
        "fewer_joints": ("".join(fewer_joints), "24 joints, expected 25"),
        "missing_line": ("".join(missing_line), "expected joint 25 of frame 1 body 1"),
        "non_numeric": ("".join(non_numeric), "non-numeric value 'abc'"),
        "empty": ("", "empty file"),
        "no_bodies": ("3\n0\n0\n0\n", "no body in any frame"),
    }


def broken_name(number: int) -> str:
    return f"S009C001P001R001A{number + 1:03d}.skeleton"  # valid NTU names for the broken files


def test_joint_lines_must_each_hold_twelve_values(skeleton_dir: Path, tmp_path: Path) -> None:
    """One joint line short of a value and the next one over keep the file's value count: still malformed."""
    lines = _lines(skeleton_dir)
    first, second = lines[4].split(), lines[5].split()
    ragged = [*lines[:4], " ".join(first[:11]) + "\n", " ".join([*second, "0"]) + "\n", *lines[6:]]
    path = tmp_path / broken_name(0)
    path.write_text("".join(ragged))
    with pytest.raises(DataFormatError, match=r"line 5 .*: 11 values, expected 12"):
        read_ntu_skeleton(path)
    garbled = list(lines)
    garbled[4] = " ".join([first[0], "1.2.3", *first[2:]]) + "\n"  # numeric characters, not a number
    path.write_text("".join(garbled))
    with pytest.raises(DataFormatError, match=r"line 5 \(frame 1 of 103\): non-numeric value '1.2.3'"):
        read_ntu_skeleton(path)


def test_a_byte_order_mark_is_not_a_problem(skeleton_dir: Path, tmp_path: Path) -> None:
    source = skeleton_dir / f"{fixture_name(1)}.skeleton"
    path = tmp_path / source.name
    path.write_bytes(b"\xef\xbb\xbf" + source.read_bytes())
    np.testing.assert_array_equal(read_ntu_skeleton(path).bodies[0].xyz, read_ntu_skeleton(source).bodies[0].xyz)


def test_malformed_files_raise_data_format_errors(skeleton_dir: Path, tmp_path: Path) -> None:
    for number, (text, problem) in enumerate(bad_files(skeleton_dir).values()):
        path = tmp_path / broken_name(number)
        path.write_text(text)
        with pytest.raises(DataFormatError) as caught:
            actor_sequence(read_ntu_skeleton(path))
        assert str(caught.value).startswith(str(path)), caught.value
        assert problem in caught.value.problem, caught.value.problem


# -- denoising ---------------------------------------------------------------------------------------
def test_two_person_samples_keep_both_actors(parsed: dict[int, NtuSkeletonFile]) -> None:
    for action in TWO_PERSON:
        frames, actors = actor_sequence(parsed[action])
        assert actors == 2 and frames.shape == (parsed[action].num_frames, 2, 25, 3), action
        assert np.all(np.abs(frames[:, 1]).sum(axis=(1, 2)) > 0), action


def test_single_person_samples_have_a_zero_second_actor(parsed: dict[int, NtuSkeletonFile]) -> None:
    for action in range(1, 50):
        frames, actors = actor_sequence(parsed[action])
        assert actors == 1, action
        assert np.all(frames[:, 1] == 0) and np.all(np.abs(frames[:, 0]).sum(axis=(1, 2)) > 0), action


def test_noise_bodies_are_removed_and_the_performer_kept(parsed: dict[int, NtuSkeletonFile]) -> None:
    energy_only_wrong = []
    for action in NOISY:
        skeleton = parsed[action]
        slots = select_actors(skeleton)
        assert len(slots) == 1 and len(slots[0]) == 1, action
        chosen = slots[0][0]
        (noise,) = [body for body in skeleton.bodies if body is not chosen]
        # the performer: tracked in every frame, upright and person-sized; the noise body is wider
        # than tall and under half a metre high, although it too is tracked in every frame
        height = {id(b): np.median(np.ptp(b.xyz[..., 1], axis=1)) for b in skeleton.bodies}
        width = {id(b): np.median(np.ptp(b.xyz[..., 0], axis=1)) for b in skeleton.bodies}
        assert len(chosen) == len(noise) == skeleton.num_frames
        assert height[id(chosen)] > 1.2 and width[id(chosen)] < 0.5 * height[id(chosen)], action
        assert height[id(noise)] < 0.5 and width[id(noise)] > height[id(noise)], action
        assert spurious_reason(chosen, skeleton.num_frames) is None
        assert spurious_reason(noise, skeleton.num_frames).startswith("tiny")
        if max(skeleton.bodies, key=motion_energy) is noise:
            energy_only_wrong.append(action)
        frames, actors = actor_sequence(skeleton)
        assert actors == 1 and np.array_equal(frames[:, 0], chosen.xyz.astype(np.float32))
        assert np.all(frames[:, 1] == 0)
    # the noise body moves more than the performer here: ranking by motion alone would keep it
    assert energy_only_wrong == [28, 29]


def _track(body: BodyTrack, xyz: np.ndarray | None = None, frames: np.ndarray | None = None,
           body_id: int = 1) -> BodyTrack:
    return BodyTrack(body_id=body_id, frames=body.frames if frames is None else frames,
                     xyz=body.xyz if xyz is None else xyz)


def test_spurious_rules_and_track_merging(parsed: dict[int, NtuSkeletonFile]) -> None:
    person = parsed[1].bodies[0]  # a standing performer, 103 frames
    count = parsed[1].num_frames
    assert spurious_reason(_track(person, person.xyz[:5], person.frames[:5]), count).startswith("short")
    assert spurious_reason(_track(person, person.xyz * 0.4), count).startswith("tiny")
    assert spurious_reason(_track(person, person.xyz * [8.0, 1.0, 1.0]), count).startswith("flat")
    # an implausible body is still kept when it is the only one: a sample is never emptied
    alone = NtuSkeletonFile(Path("x"), count, [_track(person, person.xyz * 0.4)])
    assert actor_sequence(alone)[1] == 1
    # Kinect re-identifies a person mid-clip: both fragments fill the same actor, not two
    half = count // 2
    split = NtuSkeletonFile(Path("x"), count, [
        _track(person, person.xyz[:half], person.frames[:half], body_id=1),
        _track(person, person.xyz[half:], person.frames[half:], body_id=2)])
    frames, actors = actor_sequence(split)
    assert actors == 1 and np.array_equal(frames[:, 0], person.xyz.astype(np.float32))
    # two people, both re-identified half-way: each second fragment joins the person standing where it starts,
    # even when the ranking by motion offers it to the other person's slot first
    def fragment(shift: float, part: slice, body_id: int, wiggle: float) -> BodyTrack:
        xyz = person.xyz[part] + [shift, 0.0, 0.0]
        xyz[::2] *= 1 + wiggle  # motion energy orders the fragments A1, B1, B2, A2
        return _track(person, xyz, person.frames[part], body_id)

    a1, b1 = fragment(0.0, slice(None, half), 1, 0.03), fragment(1.5, slice(None, half), 2, 0.02)
    b2, a2 = fragment(1.5, slice(half, None), 3, 0.01), fragment(0.0, slice(half, None), 4, 0.0)
    pair = NtuSkeletonFile(Path("x"), count, [a2, b2, b1, a1])
    assert sorted(pair.bodies, key=motion_energy, reverse=True) == [a1, b1, b2, a2]
    assert [[track.body_id for track in slot] for slot in select_actors(pair)] == [[1, 4], [2, 3]]
    # frames without any body are dropped
    late = NtuSkeletonFile(Path("x"), count + 10, [_track(person, frames=person.frames + 10)])
    assert actor_sequence(late)[0].shape[0] == count


# -- names, splits and resources -------------------------------------------------------------------
def test_parse_ntu_name() -> None:
    info = parse_ntu_name("S018C002P045R001A061")
    assert info == {"setup": 18, "camera": 2, "subject": 45, "replication": 1, "action": 61}
    assert parse_ntu_name("/data/S001C003P008R002A120.skeleton")["action"] == 120
    with pytest.raises(UserError, match="not an NTU sample name"):
        parse_ntu_name("S01C002P045R001A061")


@pytest.mark.parametrize(("edition", "split", "train", "test"), [
    (60, "xsub", 40_091, 16_487), (60, "xview", 37_646, 18_932),
    (120, "xsub", 63_026, 50_919), (120, "xset", 54_468, 59_477),
])
def test_standard_split_sizes(fixtures_dir: Path, compose, edition: int, split: str, train: int,
                              test: int) -> None:
    """The split the training command composes (``dataset=ntuXX split=...``), on the index of every sample."""
    from hydra.utils import instantiate

    names = (fixtures_dir / "ntu" / "lists" / f"ntu{edition}_available_samples.txt").read_text().split()
    infos = [parse_ntu_name(name) for name in names]
    if edition == 60:
        assert all(i["setup"] <= 17 and i["action"] <= 60 for i in infos)
    assert not set(names) & official_missing_samples(edition)
    index = {key: np.array([info[key] for info in infos]) for key in ("subject", "camera", "setup", "replication")}
    index["label"] = np.array([info["action"] - 1 for info in infos])
    parts = instantiate(compose([f"dataset=ntu{edition}", f"split={split}"]).split)(index)
    train_rows, test_rows = np.concatenate([parts.train, parts.val]), parts.test  # validation: from the train side
    assert (len(train_rows), len(test_rows)) == (train, test)
    assert not set(train_rows.tolist()) & set(test_rows.tolist())
    assert not set(index["subject"][parts.train]) & set(index["subject"][parts.val])  # whole subjects validate
    # the whole subjects closest to a tenth: off by at most half the largest training subject's samples
    largest = np.bincount(index["subject"][train_rows]).max()
    assert abs(len(parts.val) - 0.1 * len(train_rows)) <= largest / 2
    values = set(SPLIT_VALUES[edition][split])  # and the rule, sample by sample
    assert all(infos[row][SPLIT_FIELDS[split]] in values for row in train_rows[::97])
    assert all(infos[row][SPLIT_FIELDS[split]] not in values for row in test_rows[::97])


def test_dataset_configs_match_the_split_constants() -> None:
    for edition in (60, 120):
        config = OmegaConf.load(REPO_ROOT / "configs" / "dataset" / f"ntu{edition}.yaml")
        assert config.name == f"ntu{edition}" and config.prepare.edition == edition
        assert OmegaConf.to_container(config.split_values) == {
            split: list(values) for split, values in SPLIT_VALUES[edition].items()}


def test_shipped_class_names_and_missing_lists(fixtures_dir: Path) -> None:
    names = ntu_class_names(120)
    assert len(names) == len(set(names)) == 120 and ntu_class_names(60) == names[:60]
    assert (names[0], names[49], names[59], names[60]) == (
        "drink water", "punching/slapping other person", "walking apart from each other", "put on headphone")
    assert "rock-paper-scissors" in names[119]
    lists = fixtures_dir / "ntu" / "lists"
    for edition, count, file in [(60, 302, "NTU_RGBD_samples_with_missing_skeletons.txt"),
                                 (120, 535, "NTU_RGBD120_samples_with_missing_skeletons.txt")]:
        official = {line for line in (lists / file).read_text().split() if line.startswith("S0")}
        assert official_missing_samples(edition) == official and len(official) == count


# -- preparation -------------------------------------------------------------------------------------
MISSING_NAMES = ("S001C002P005R002A008", "S017C003P020R001A059")  # on the official NTU-60 list
OUTSIDE_NTU60 = ("S018C001P001R001A001", "S001C001P001R001A061")  # NTU-120-only setup / action


@pytest.fixture(scope="module")
def raw_dir(skeleton_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 60 fixtures, plus copies under missing-list and NTU-120-only names, plus broken files."""
    raw = tmp_path_factory.mktemp("ntu_raw")
    nested = raw / "nturgb+d_skeletons"
    nested.mkdir()
    for action in range(1, 61):
        copy_fixture(skeleton_dir, action, nested)
    for name in (*MISSING_NAMES, *OUTSIDE_NTU60):
        copy_fixture(skeleton_dir, 1, raw, name)
    broken = raw / "broken"
    broken.mkdir()
    for number, (text, _) in enumerate(bad_files(skeleton_dir).values()):
        (broken / broken_name(number)).write_text(text)
    (raw / "notes.skeleton").write_text("1\n0\n")
    return raw


@pytest.fixture(scope="module")
def store(raw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SkeletonStore:
    with loss_policy(LossPolicy(accept=True)):  # an eighth of the folder is broken on purpose
        return prepare_ntu(tmp_path_factory.mktemp("stores") / "ntu60", raw_dir=raw_dir, edition=60,
                           num_workers=2)


def test_prepared_store_meta_and_records(store: SkeletonStore) -> None:
    meta = store.meta
    assert (meta.dataset, meta.layout, meta.num_person, meta.num_joints, meta.channels) == (
        "ntu60", "ntu25", 2, 25, 3)
    assert meta.class_names == ntu_class_names(60)
    assert sorted(map(str, store.index["name"])) == [fixture_name(a) for a in range(1, 61)]
    for i in range(len(store)):
        record = store.record(i)
        action = int(record.name[-3:])
        assert (record.label, record.subject, record.camera, record.setup, record.replication) == (
            action - 1, 1, 1, 1, 1)
        assert record.bodies == (2 if action in TWO_PERSON else 1), record


def test_skipped_files_are_recorded_with_the_reason(store: SkeletonStore, raw_dir: Path,
                                                    skeleton_dir: Path) -> None:
    skipped = {Path(item["file"]).name: item["reason"] for item in store.meta.skipped}
    for name in MISSING_NAMES:
        assert skipped.pop(f"{name}.skeleton") == MISSING_REASON
    assert "not an NTU sample name" in skipped.pop("notes.skeleton")
    for number, (_, problem) in enumerate(bad_files(skeleton_dir).values()):
        assert problem in skipped.pop(broken_name(number))
    assert not skipped  # and the NTU-120-only samples are left out without being "skipped"
    log = (store.root / SKIPPED_FILE).read_text().splitlines()
    assert [line.split("\t") for line in log] == [[i["file"], i["reason"]] for i in store.meta.skipped]
    assert sum(reason == MISSING_REASON for _, reason in (line.split("\t") for line in log)) == 2


def test_store_reads_back_the_selected_actors(store: SkeletonStore,
                                              parsed: dict[int, NtuSkeletonFile]) -> None:
    for i in range(len(store)):
        expected, _ = actor_sequence(parsed[int(store.record(i).name[-3:])])
        np.testing.assert_array_equal(store.sequence(i), expected)


def test_prepare_ntu120_with_a_class_subset(skeleton_dir: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for action in (1, 23, 55):
        copy_fixture(skeleton_dir, action, raw)
    copy_fixture(skeleton_dir, 1, raw, "S020C001P050R002A061")
    store = prepare_ntu(tmp_path / "ntu120", raw_dir=raw, edition=120, num_workers=1,
                        classes=[61, "hand waving", 55])
    assert store.meta.dataset == "ntu120" and len(store.meta.class_names) == 120
    assert sorted(store.index["label"].tolist()) == [22, 54, 60]  # labels stay action - 1
    assert store.record(int(np.flatnonzero(store.index["label"] == 60)[0])).setup == 20


def test_prepare_reports_unusable_input(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="raw_dir is not set"):
        prepare_ntu(tmp_path / "s", raw_dir=None)
    with pytest.raises(UserError, match="not found"):
        prepare_ntu(tmp_path / "s", raw_dir=tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"no \.skeleton files"):
        prepare_ntu(tmp_path / "s", raw_dir=tmp_path)
    with pytest.raises(UserError, match="choose 60 or 120"):
        prepare_ntu(tmp_path / "s", raw_dir=tmp_path, edition=90)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("num_workers", [1, 2])
def test_failed_preparation_leaves_the_previous_store(skeleton_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      num_workers: int) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for action in range(1, 9):
        copy_fixture(skeleton_dir, action, raw)
    before = prepare_ntu(tmp_path / "old" / "ntu60", raw_dir=raw, num_workers=num_workers)
    meta_before = (before.root / "meta.json").read_text()

    add = StoreWriter.add
    calls = []

    def add_then_fail(self: StoreWriter, record: object, frames: np.ndarray) -> None:
        calls.append(record)
        if len(calls) > 3:
            raise RuntimeError("disk full")
        add(self, record, frames)

    monkeypatch.setattr(StoreWriter, "add", add_then_fail)
    for target in (before.root, tmp_path / "new" / "ntu60"):
        calls.clear()
        with pytest.raises(RuntimeError, match="disk full"):
            prepare_ntu(target, raw_dir=raw, num_workers=num_workers)
        assert [p.name for p in target.parent.iterdir() if p.name != target.name] == []  # no temporaries
    assert not (tmp_path / "new" / "ntu60").exists()
    assert (before.root / "meta.json").read_text() == meta_before
    assert len(SkeletonStore(before.root)) == 8


def test_parse_and_loading_benchmark_prints_its_figures_as_json(fixtures_dir: Path) -> None:
    """``make bench``'s NTU part: files/s of parsing and preparing, samples/s of the ntu60 training loader."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "bench.ntu_parse", "--copies", "2", "--fixtures", str(fixtures_dir)],
                          cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["files"] == 120
    assert min(result["parse_files_per_s"], result["prepare_files_per_s"], result["prepare_1_worker_files_per_s"]) > 0
    loader = result["loader"]
    assert loader["samples"] == 54 and loader["batch"] == 32  # one performer each side of xsub, a tenth validates
    assert loader["samples_per_s"] == loader[f"samples_per_s_{loader['num_workers']}_workers"] > 0
