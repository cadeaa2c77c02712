"""docs/bad_input.md, row by row: what a preparation does with inputs that are broken, absurd or hostile.

One test per row of the table, on generated inputs or on copies of the real fixtures with one
value broken. Nothing a single file holds may stop a preparation, lose data without a word, or
leave processes behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT
from pose_helpers import skipped_reasons

from asgcn_lightning.data.sources.kinetics import prepare_kinetics_skeleton
from asgcn_lightning.data.sources.losses import loss_policy
from asgcn_lightning.data.sources.natops import prepare_natops
from asgcn_lightning.data.sources.ntu import prepare_ntu
from asgcn_lightning.data.sources.openpose import prepare_openpose_folder
from asgcn_lightning.data.sources.writer import Sample, Skipped, StoreSpec, read_or_skip, write_store
from asgcn_lightning.data.store import SKIPPED_FILE, SampleRecord, SkeletonStore
from asgcn_lightning.errors import UserError
from asgcn_lightning.prepare import prepare
from asgcn_lightning.schemas import LossPolicy
from asgcn_lightning.skeleton.layouts import NTU25

ACCEPT = LossPolicy(accept=True)
NTU_NAME = "S001C001P001R001A{:03d}"
KICK_FRAMES = 12  # frames of each real kick copied: enough to track, few enough to stay fast


def _ntu_folder(fixtures_dir: Path, folder: Path, actions: range) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for action in actions:
        name = NTU_NAME.format(action)
        shutil.copyfile(fixtures_dir / "ntu" / "skeletons" / f"{name}.skeleton", folder / f"{name}.skeleton")
    return folder


def _set_first_x(path: Path, value: str) -> None:
    """Replace x of the first joint of the first body (line 5 of a ``.skeleton``) by ``value``."""
    lines = path.read_text().splitlines(keepends=True)
    lines[4] = f"{value} {lines[4].split(' ', 1)[1]}"
    path.write_text("".join(lines))


def _kick(kicks: Path, number: int, folder: Path, *, coco: bool = False, name: str | None = None) -> None:
    """The first frames with people of a real kick, as BODY_25 or, with ``coco``, converted to COCO-18."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = [json.loads(path.read_text()) for path in sorted(kicks.glob(f"Kick_{number}_*_keypoints.json"))]
    for frame, content in enumerate([content for content in frames if content["people"]][:KICK_FRAMES]):
        if coco:
            for person in content["people"]:
                joints = np.asarray(person["pose_keypoints_2d"]).reshape(25, 3)
                person["pose_keypoints_2d"] = joints[[*range(8), *range(9, 19)]].reshape(-1).tolist()
        (folder / f"{name or f'Kick_{number}'}_{frame:012d}_keypoints.json").write_text(json.dumps(content))


def _prepare(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asgcn_lightning.prepare", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


# -- values that cannot be stored ----------------------------------------------------------------------
@pytest.mark.parametrize("value", ["1e300", "5e38", "-4e38"])
def test_ntu_value_beyond_float32_is_skipped_not_fatal(tmp_path: Path, fixtures_dir: Path, value: str) -> None:
    raw = _ntu_folder(fixtures_dir, tmp_path / "raw", range(1, 4))
    _set_first_x(raw / f"{NTU_NAME.format(2)}.skeleton", value)
    with loss_policy(ACCEPT):
        store = prepare_ntu(tmp_path / "store", raw_dir=raw, num_workers=1)
    assert [store.record(i).name for i in range(len(store))] == [NTU_NAME.format(1), NTU_NAME.format(3)]
    assert skipped_reasons(store) == {str(raw / f"{NTU_NAME.format(2)}.skeleton"):
                                      "frame 1: a value is NaN or beyond the float32 range"}
    assert all(np.isfinite(store.sequence(i)).all() for i in range(len(store)))


def test_ntu_all_zero_sequence_is_skipped(tmp_path: Path, fixtures_dir: Path) -> None:
    raw = _ntu_folder(fixtures_dir, tmp_path / "raw", range(1, 3))
    path = raw / f"{NTU_NAME.format(1)}.skeleton"
    lines = path.read_text().splitlines(keepends=True)
    zero = " ".join(["0"] * 3) + " "
    path.write_text("".join(zero + line.split(" ", 3)[3] if len(line.split()) == 12 else line for line in lines))
    with loss_policy(ACCEPT):
        store = prepare_ntu(tmp_path / "store", raw_dir=raw, num_workers=1)
    assert len(store) == 1 and store.record(0).name == NTU_NAME.format(2)
    assert "every joint is 0 0 0 in every frame" in skipped_reasons(store)[str(path)]


# -- reader failures on one file ----------------------------------------------------------------------
def test_deeply_nested_openpose_frame_is_one_skipped_frame(tmp_path: Path, kicks: Path) -> None:
    for cls, number in (("curl", 1), ("laces", 2)):
        _kick(kicks, number, tmp_path / "raw" / cls)
    nested = tmp_path / "raw" / "laces" / f"Kick_2_{5:012d}_keypoints.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    store = SkeletonStore(prepare_openpose_folder(tmp_path / "store", root=tmp_path / "raw"))
    assert len(store) == 2 and [len(store.sequence(i)) for i in range(2)] == [KICK_FRAMES, KICK_FRAMES]
    assert skipped_reasons(store) == {str(nested): "JSON nested too deeply to be OpenPose output; frame left empty"}


def test_undecodable_openpose_frame_is_one_skipped_frame(tmp_path: Path, kicks: Path) -> None:
    _kick(kicks, 1, tmp_path / "raw" / "curl")
    broken = tmp_path / "raw" / "curl" / f"Kick_1_{3:012d}_keypoints.json"
    broken.write_bytes(b'{"people": [\xff\xfe]}')
    store = SkeletonStore(prepare_openpose_folder(tmp_path / "store", root=tmp_path / "raw"))
    assert len(store) == 1 and "cannot read the file" in skipped_reasons(store)[str(broken)]


@pytest.mark.parametrize(("error", "reason"), [
    (MemoryError(), "too large to read into memory (MemoryError)"),
    (RecursionError("maximum recursion depth exceeded"), "nested too deeply to read (RecursionError)"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
     "cannot be read (UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte)"),
    (KeyError("pose"), "cannot be read (KeyError: 'pose')"),
])
def test_any_reader_exception_becomes_a_skip(error: Exception, reason: str) -> None:
    """What every adapter wraps its per-file reading in: the file's failure, never the preparation's."""
    def read() -> None:
        raise error

    skipped = read_or_skip("clip.json", read, label=3)
    assert skipped == Skipped("clip.json", reason, label=3)


def test_ctrl_c_while_reading_still_stops_the_preparation() -> None:
    def read() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        read_or_skip("clip.json", read)


# -- layouts ------------------------------------------------------------------------------------------
def test_openpose_layout_is_the_majority_not_the_first_video(tmp_path: Path, kicks: Path) -> None:
    raw = tmp_path / "raw"
    _kick(kicks, 1, raw / "curl", coco=True, name="A_coco")  # alphabetically first, COCO-18
    _kick(kicks, 2, raw / "curl")
    _kick(kicks, 3, raw / "laces")
    _kick(kicks, 4, raw / "laces")
    with pytest.raises(UserError, match=r"lost 1 of 4 inputs \(25\.0%.*1 × coco18 keypoints, the store holds "
                                        r"openpose25 .*curl/A_coco"):
        prepare_openpose_folder(tmp_path / "store", root=raw)
    assert not (tmp_path / "store").exists() and (tmp_path / f"store.{SKIPPED_FILE}").is_file()
    with loss_policy(ACCEPT):
        store = SkeletonStore(prepare_openpose_folder(tmp_path / "store", root=raw))
    assert store.meta.layout == "openpose25" and store.meta.class_names == ["curl", "laces"]
    assert [store.record(i).name for i in range(len(store))] == ["curl/Kick_2", "laces/Kick_3", "laces/Kick_4"]
    assert "coco18 keypoints" in skipped_reasons(store)["curl/A_coco"]


def test_openpose_layout_tie_names_the_option(tmp_path: Path, kicks: Path) -> None:
    _kick(kicks, 1, tmp_path / "raw" / "curl", coco=True)
    _kick(kicks, 2, tmp_path / "raw" / "laces")
    with pytest.raises(UserError, match=r"as many videos are .* \(1 each\); say which to keep with "
                                        r"dataset\.prepare\.layout=coco18 or dataset\.prepare\.layout=openpose25"):
        prepare_openpose_folder(tmp_path / "store", root=tmp_path / "raw")
    with loss_policy(ACCEPT):  # the BODY_25 video, and with it the class 'laces', is left out
        store = SkeletonStore(prepare_openpose_folder(tmp_path / "store", root=tmp_path / "raw", layout="coco18"))
    assert store.meta.layout == "coco18" and len(store) == 1 and "openpose25 keypoints" in skipped_reasons(store)[
        "laces/Kick_2"]


# -- losses -------------------------------------------------------------------------------------------
def test_losing_a_whole_class_fails_the_command_and_accepting_keeps_the_rest(tmp_path: Path, kicks: Path) -> None:
    raw = tmp_path / "raw"
    _kick(kicks, 1, raw / "curl")
    (raw / "laces").mkdir()
    for frame in range(3):
        (raw / "laces" / f"Kick_2_{frame:012d}_keypoints.json").write_text("")
    common = ["dataset=openpose_folder", f"dataset.root={raw}", f"dataset.store_dir={tmp_path}/store",
              f"hydra.run.dir={tmp_path}/run"]
    refused = _prepare(*common)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    message = refused.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: {tmp_path}/store: the preparation lost 1 of 2 inputs (50.0%")
    assert "lost every input of the class 'laces'" in message and "losses.accept=true" in message
    assert "1 × nobody detected in any frame (laces/Kick_2)" in message
    assert not (tmp_path / "store").exists()
    accepted = _prepare(*common, "losses.accept=true")
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert len(SkeletonStore(tmp_path / "store")) == 1
    assert "4 source files skipped" in accepted.stdout + accepted.stderr


def test_a_few_percent_of_losses_pass_and_the_share_is_configurable(tmp_path: Path, fixtures_dir: Path) -> None:
    raw = _ntu_folder(fixtures_dir, tmp_path / "raw", range(1, 21))
    truncated = raw / "S001C001P002R001A001.skeleton"  # another take of A001: 1 input of 21 lost, 4.8 %, no class
    truncated.write_text("103\n1\n")
    store = prepare_ntu(tmp_path / "store", raw_dir=raw, num_workers=1)
    assert len(store) == 20 and "truncated" in skipped_reasons(store)[str(truncated)]
    with loss_policy(LossPolicy(max_skipped_share=0.01)), pytest.raises(UserError, match=r"at most 1% may be"):
        prepare_ntu(tmp_path / "strict", raw_dir=raw, num_workers=1)


# -- classes, names and splits ------------------------------------------------------------------------
def test_class_folder_without_json_is_refused(tmp_path: Path, kicks: Path) -> None:
    _kick(kicks, 1, tmp_path / "raw" / "curl")
    (tmp_path / "raw" / "laces").mkdir()
    (tmp_path / "raw" / "spin").mkdir()
    with pytest.raises(UserError, match=r"class folders 'laces', 'spin' hold no OpenPose JSON"):
        prepare_openpose_folder(tmp_path / "store", root=tmp_path / "raw")


@pytest.mark.parametrize(("labels", "problem"), [
    ("0\n1\n3", r"no video has the label 2; number the classes without gaps"),
    ("0\n1\n100000000", r"label 100000000 is not a plausible 0-based class index"),
])
def test_integer_labels_with_gaps_or_absurd_values_are_refused(tmp_path: Path, kicks: Path, labels: str,
                                                               problem: str) -> None:
    rows = labels.split("\n")
    for number in range(1, len(rows) + 1):
        _kick(kicks, number, tmp_path / "raw")
    (tmp_path / "labels.csv").write_text("".join(f"Kick_{i + 1},{label}\n" for i, label in enumerate(rows)))
    with pytest.raises(UserError, match=problem):
        prepare_openpose_folder(tmp_path / "store", root=tmp_path / "raw", labels=tmp_path / "labels.csv")


def test_a_video_labelled_twice_in_the_csv_is_refused(tmp_path: Path, kicks: Path) -> None:
    _kick(kicks, 1, tmp_path / "raw")
    (tmp_path / "labels.csv").write_text("Kick_1,curl\nKick_1,laces\n")
    with pytest.raises(UserError, match=r"row 2: video 'Kick_1' is labelled 'curl' and 'laces'"):
        prepare_openpose_folder(tmp_path / "store", root=tmp_path / "raw", labels=tmp_path / "labels.csv")


def _short_clips(fixtures_dir: Path) -> list[tuple[str, dict]]:
    """The real Kinetics-skeleton clips, cut to their first frames: ``(file name, content)``."""
    clips = []
    for path in sorted((fixtures_dir / "kinetics_skeleton").glob("*.json")):
        content = json.loads(path.read_text())
        content["data"] = [entry for entry in content["data"] if entry["frame_index"] <= KICK_FRAMES]
        clips.append((path.name, content))
    return clips


def _release(tmp_path: Path, fixtures_dir: Path) -> tuple[Path, list[Path]]:
    paths = []
    for i, (name, content) in enumerate(_short_clips(fixtures_dir)):
        path = tmp_path / f"kinetics_{'train' if i < 4 else 'val'}" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(content))
        paths.append(path)
    return tmp_path, paths


def test_a_clip_in_both_splits_is_refused(tmp_path: Path, fixtures_dir: Path) -> None:
    root, clips = _release(tmp_path, fixtures_dir)
    shutil.copy(clips[0], root / "kinetics_val" / clips[0].name)  # the same clip in both parts
    with pytest.raises(UserError, match=rf"sample '{clips[0].stem}' is in two splits \(setup 1 from .*kinetics_train"):
        prepare_kinetics_skeleton(tmp_path / "store", root=root)
    assert not (tmp_path / "store").exists()


def test_a_split_that_keeps_no_sample_is_refused(tmp_path: Path, fixtures_dir: Path) -> None:
    root, clips = _release(tmp_path, fixtures_dir)
    for clip in clips[4:]:
        (root / "kinetics_val" / clip.name).write_text('{"data": [], "label_index": 2.7}')
    with pytest.raises(UserError, match=r"kept no sample of the split 'kinetics_val/'.*label_index 2\.7 is not an "
                                        r"integer"):
        prepare_kinetics_skeleton(tmp_path / "store", root=root)


def test_absurd_kinetics_labels_are_skipped_without_building_classes(tmp_path: Path, fixtures_dir: Path) -> None:
    root = tmp_path / "clips"
    root.mkdir()
    clips = _short_clips(fixtures_dir)
    for i, (name, content) in enumerate(clips):
        content["label_index"] = 10**8 if i == 0 else i % 2
        (root / name).write_text(json.dumps(content))
    with loss_policy(ACCEPT):
        store = SkeletonStore(prepare_kinetics_skeleton(tmp_path / "store", root=root, num_classes=None))
    assert len(store.meta.class_names) == 2 and set(store.index["label"].tolist()) == {0, 1}
    assert "label_index 100000000 is outside the 100001 classes" in skipped_reasons(store)[str(root / clips[0][0])]


def test_kinetics_frame_index_of_a_billion_is_one_skipped_clip(tmp_path: Path, fixtures_dir: Path) -> None:
    """Gaps become empty frames, so an unbounded frame_index would build a billion-frame clip."""
    root = tmp_path / "clips"
    root.mkdir()
    clips = _short_clips(fixtures_dir)
    for name, content in clips:
        (root / name).write_text(json.dumps(content))
    name, content = clips[1]
    content["data"][-1]["frame_index"] = 10**9
    (root / name).write_text(json.dumps(content))
    with loss_policy(ACCEPT):
        store = SkeletonStore(prepare_kinetics_skeleton(tmp_path / "store", root=root))
    assert "frame_index 1000000000 is outside 1..100000" in skipped_reasons(store)[str(root / name)]
    assert name.removesuffix(".json") not in store.index["name"].tolist()


def test_duplicate_sample_names_are_refused(tmp_path: Path) -> None:
    spec = StoreSpec(dataset="toy", layout=NTU25, num_person=1, channels=3, source="toy", class_names=["a"])
    frames = np.ones((2, 1, 25, 3), np.float32)
    samples = [Sample(SampleRecord("same", 0), frames, source=f"file{i}") for i in range(2)]
    with pytest.raises(UserError, match=r"two samples are named 'same' \(file0 and file1\)"):
        write_store(tmp_path / "store", spec, samples)


def test_natops_without_its_test_file_is_refused(tmp_path: Path, fixtures_dir: Path) -> None:
    shutil.copy(fixtures_dir / "natops" / "NATOPS_TRAIN.ts", tmp_path)
    (tmp_path / "NATOPS_TEST.ts").write_bytes(b"\xff\xfe not a ts file")
    with pytest.raises(UserError, match=r"kept no sample of the split 'NATOPS_TEST\.ts'.*text before @data"):
        prepare_natops(tmp_path / "store", root=tmp_path)


# -- the command ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("store_dir", ["/proc/asgcn_store", "{tmp}/file/store"])
def test_a_store_dir_that_cannot_be_made_is_one_line(compose, tmp_path: Path, store_dir: str) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    store_dir = store_dir.format(tmp=tmp_path)
    cause = "cannot write in /proc" if store_dir.startswith("/proc") else f"{tmp_path}/file is a file, not a folder"
    with pytest.raises(UserError, match=f"^dataset.store_dir={store_dir}: {cause}"):
        prepare(compose([f"dataset.store_dir={store_dir}"], config_name="prepare"))


@pytest.mark.parametrize("command", [
    "train.py hydra.run.dir={file}/run",
    "train.py paths.log_dir={file}/logs",
    "train.py -m model=tiny,stgcn paths.log_dir={file}/logs",
    "-m asgcn_lightning.prepare paths.log_dir={file}/logs",
    "eval.py ckpt_path={file} paths.log_dir={file}/logs",
], ids=["train-run-dir", "train-log-dir", "sweep", "prepare", "eval"])
def test_an_output_folder_below_a_file_is_one_line(tmp_path: Path, command: str) -> None:
    """Hydra makes the run (or sweep) folder before any code of ours runs: its traceback becomes one line."""
    file = tmp_path / "file"
    file.write_text("a file, not a folder")
    done = subprocess.run([sys.executable, *command.format(file=file).split()], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    key = "hydra.sweep.dir" if " -m " in f" {command} " and "prepare" not in command else "hydra.run.dir"
    assert done.returncode == 2, done.stderr[-2000:]
    below = re.escape(f"{file}/")
    assert re.fullmatch(rf"error: {key}={below}\S+: {re.escape(str(file))} is a file, not a folder",
                        done.stderr.strip()), done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr


def test_a_layout_given_to_a_source_that_decides_its_own_is_checked_not_ignored(compose, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with pytest.raises(UserError, match=r"^dataset.layout=coco18 \(18 joints\) is not the layout of the prepared "
                                        rf"store {store_dir}: ntu25 \(25 joints\); the synthetic source gives"):
        prepare(compose([f"dataset.store_dir={store_dir}", "dataset.layout={name: coco18}"], config_name="prepare"))
    variant = prepare(compose([f"dataset.store_dir={store_dir}", "dataset.layout={name: ntu25_asgcn}"],
                              config_name="prepare"))
    assert variant.meta.layout == "ntu25"  # stored as the source gives it; training picks the variant


def _children(pid: int) -> set[int]:
    """Every process below ``pid`` (children, grandchildren...), from /proc."""
    found: set[int] = set()
    parents = {pid}
    for _ in range(4):
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid in parents:
                    found.add(int(entry.name))
        parents |= found
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _parsing(tmp_path: Path, fixtures_dir: Path) -> tuple[subprocess.Popen, set[int]]:
    """A real NTU preparation with two parse workers, and its child processes once they run."""
    raw = tmp_path / "raw"
    raw.mkdir()
    source = fixtures_dir / "ntu" / "skeletons" / f"{NTU_NAME.format(1)}.skeleton"
    for sample in range(1000):  # long enough to be caught while its workers parse
        (raw / f"S001C001P{sample // 100 + 1:03d}R{sample % 100 + 1:03d}A001.skeleton").symlink_to(source)
    process = subprocess.Popen([sys.executable, "-m", "asgcn_lightning.prepare", "dataset=ntu60",
                                f"dataset.raw_dir={raw}", "dataset.prepare.num_workers=2",
                                f"dataset.store_dir={tmp_path}/store", f"hydra.run.dir={tmp_path}/run"],
                               cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    workers: set[int] = set()
    deadline = time.monotonic() + 240
    while len(workers) < 2 and process.poll() is None and time.monotonic() < deadline:
        workers = _children(process.pid)
        time.sleep(0.05)
    assert len(workers) >= 2, "the preparation ended before its parse workers could be seen"
    return process, workers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_kill_9_of_a_preparation_leaves_no_worker_behind(tmp_path: Path, fixtures_dir: Path) -> None:
    process, workers = _parsing(tmp_path, fixtures_dir)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in workers if _alive(pid)]
    for pid in survivors:  # leave the machine clean even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not survivors


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")
def test_a_killed_parse_worker_is_one_line_and_keeps_no_half_store(tmp_path: Path, fixtures_dir: Path) -> None:
    process, workers = _parsing(tmp_path, fixtures_dir)
    worker = next(pid for pid in sorted(workers)
                  if b"resource_tracker" not in (Path("/proc") / str(pid) / "cmdline").read_bytes())
    os.kill(worker, signal.SIGKILL)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == ("error: a parse worker process was killed from outside (out of "
                                               "memory?), so the preparation stopped; the previous store is unchanged")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "run"]
