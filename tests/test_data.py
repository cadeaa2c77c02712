"""Prepared store, synthetic generator, transforms, splits and the data module."""

import functools
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from asgcn_lightning.atomic import atomic_file, write_atomically
from asgcn_lightning.data import transforms as T
from asgcn_lightning.data.datamodule import SkeletonDataModule, resolve_classes
from asgcn_lightning.data.sources.synthetic import SyntheticSkeletons, prepare_synthetic
from asgcn_lightning.data.splits import MetadataSplit, RandomSplit
from asgcn_lightning.data.store import SampleRecord, SkeletonStore, StoreWriter
from asgcn_lightning.errors import UserError
from asgcn_lightning.skeleton.layouts import NTU25

RNG = np.random.default_rng(0)


def _writer(root, **kw):
    return StoreWriter(root, dataset="toy", layout="ntu25", num_person=2, num_joints=25, channels=3,
                       class_names=["a", "b"], **kw)


def test_store_round_trip_keeps_arrays_metadata_and_skipped_files(tmp_path):
    sequences = [RNG.normal(size=(n, 2, 25, 3)).astype(np.float32) for n in (5, 9, 1)]
    with _writer(tmp_path / "store") as writer:
        for i, seq in enumerate(sequences):
            writer.add(SampleRecord(f"s{i}", label=i % 2, subject=i + 1, camera=2), seq)
        writer.skip("bad.skeleton", "truncated")
        writer.commit()
    store = SkeletonStore(tmp_path / "store")
    assert len(store) == 3 and store.meta.total_frames == 15
    for i, seq in enumerate(sequences):
        np.testing.assert_array_equal(store.sequence(i), seq)
        assert store.record(i) == SampleRecord(f"s{i}", label=i % 2, subject=i + 1, camera=2)
    assert store.meta.skipped == [{"file": "bad.skeleton", "reason": "truncated", "kind": "problem"}]
    assert (tmp_path / "store" / "skipped.tsv").read_text() == "bad.skeleton\ttruncated\n"


def test_failed_preparation_leaves_previous_store_untouched_and_no_half_store(tmp_path):
    root = tmp_path / "store"
    with _writer(root) as writer:
        writer.add(SampleRecord("old", 0), np.ones((3, 2, 25, 3)))
        writer.commit()
    with pytest.raises(RuntimeError), _writer(root) as writer:
        writer.add(SampleRecord("new", 1), np.zeros((4, 2, 25, 3)))
        raise RuntimeError("killed mid-way")
    store = SkeletonStore(root)
    assert [store.record(0).name] == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


KILLED_WRITER = """
import os, signal, sys
import numpy as np
from asgcn_lightning.data.store import SampleRecord, StoreWriter

writer = StoreWriter(sys.argv[1], dataset="toy", layout="ntu25", num_person=2, num_joints=25, channels=3,
                     class_names=["a", "b"])
writer.add(SampleRecord("new", 1), np.zeros((4, 2, 25, 3)))
if sys.argv[2] == "mid-swap":  # killed after moving the old store aside, before moving the new one in
    replace = os.replace
    def replace_then_die(source, target):
        replace(source, target)
        if ".old-" in str(target):
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace_then_die
    writer.commit()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_next_preparation_cleans_up_after_killed_ones_and_restores_a_store_caught_mid_swap(tmp_path):
    root = tmp_path / "store"
    with _writer(root) as writer:
        writer.add(SampleRecord("old", 0), np.ones((3, 2, 25, 3)))
        writer.commit()
    def kill_a_writer(moment: str) -> list[str]:
        done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(root), moment], check=False)
        assert done.returncode == -signal.SIGKILL
        return sorted(p.name.split("-")[0] for p in tmp_path.iterdir())

    assert kill_a_writer("mid-write") == [".store.tmp", "store"]
    # the next writer removed that leftover; killed mid-swap it leaves the old store aside and no store
    assert kill_a_writer("mid-swap") == [".store.old", ".store.tmp"]
    with _writer(root) as writer:  # the next preparation: the previous store is back, the rest removed
        assert [SkeletonStore(root).record(0).name] == ["old"]
        assert sorted(p.name for p in tmp_path.iterdir()) == [f".store.tmp-{os.getpid()}", "store"]
        writer.add(SampleRecord("newer", 1), np.zeros((2, 2, 25, 3)))
        writer.commit()
    assert [SkeletonStore(root).record(0).name] == ["newer"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_a_preparation_without_usable_samples_keeps_the_reasons(tmp_path):
    root = tmp_path / "store"
    with pytest.raises(UserError, match=r"no usable samples .*2 source files skipped, all listed in .*"
                                        r"store\.skipped\.tsv; first: a\.skeleton: truncated; b\.skeleton: empty"), \
            _writer(root) as writer:
        writer.skip("/raw/a.skeleton", "truncated")
        writer.skip("/raw/b.skeleton", "empty")
        writer.commit()
    assert not root.exists()
    assert (tmp_path / "store.skipped.tsv").read_text() == "/raw/a.skeleton\ttruncated\n/raw/b.skeleton\tempty\n"


def test_summary_names_every_broken_file_and_counts_the_listed_ones(tmp_path):
    """On a real download hundreds of files are on the missing-skeleton list; the few broken ones must show."""
    from rich.console import Console

    from asgcn_lightning.data.store import print_prepare_summary

    with _writer(tmp_path / "store") as writer:
        writer.add(SampleRecord("ok", 0), np.ones((3, 2, 25, 3)))
        for i in range(300):
            writer.skip(f"/raw/S001C001P001R001A{i:03d}.skeleton", "on the official missing-skeleton list", listed=True)
        writer.skip("/raw/S017C003P020R002A060.skeleton", "truncated: frame 4 of 103")
        writer.commit()
    console = Console(record=True, width=200)
    print_prepare_summary(SkeletonStore(tmp_path / "store"), console)
    text = console.export_text()
    assert "301 source files skipped" in text
    assert "300 files on the official missing-skeleton list" in text
    assert "1 file unusable:" in text and "S017C003P020R002A060.skeleton: truncated: frame 4 of 103" in text
    assert "A000" not in text  # listed files are counted, not named


def test_damaged_store_is_a_clear_error(tmp_path):
    root = tmp_path / "store"
    with _writer(root) as writer:
        writer.add(SampleRecord("x", 0), np.ones((3, 2, 25, 3)))
        writer.commit()
    with open(root / "frames.f32", "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(UserError, match="damaged"):
        SkeletonStore(root)
    with pytest.raises(UserError, match="no prepared data set"):
        SkeletonStore(tmp_path / "nowhere")


def test_writer_rejects_wrong_shapes_and_nan(tmp_path):
    with _writer(tmp_path / "s") as writer:
        with pytest.raises(ValueError, match="expected"):
            writer.add(SampleRecord("x", 0), np.ones((3, 2, 18, 3)))
        with pytest.raises(ValueError, match="NaN"):
            writer.add(SampleRecord("x", 0), np.full((3, 2, 25, 3), np.nan))


def test_every_store_records_its_full_layout(tmp_path):
    with _writer(tmp_path / "store") as writer:
        writer.add(SampleRecord("x", 0), np.ones((3, 2, 25, 3)))
        writer.commit()
    assert SkeletonStore(tmp_path / "store").meta.layout_spec == NTU25.to_spec()
    with pytest.raises(ValueError, match="layout ntu25 has 25 joints, the store is declared as ntu25 with 18"):
        StoreWriter(tmp_path / "other", dataset="toy", layout="ntu25", num_person=1, num_joints=18, channels=3,
                    class_names=["a"])
    with pytest.raises(UserError, match="unknown layout 'mine'"):
        StoreWriter(tmp_path / "other", dataset="toy", layout="mine", num_person=1, num_joints=3, channels=3,
                    class_names=["a"])


def test_atomic_write_keeps_the_old_content_on_failure_and_removes_dead_writers_leftovers(tmp_path):
    target = tmp_path / "table.csv"
    write_atomically(target, "old\n")
    with pytest.raises(RuntimeError), atomic_file(target) as partial:
        partial.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f".table.csv.tmp-{int(dead.stdout)}"  # what a writer killed mid-write leaves
    leftover.write_text("torn")
    write_atomically(target, b"new\n")
    assert target.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_synthetic_set_is_deterministic_with_full_metadata(tmp_path):
    a, b = SyntheticSkeletons(seed=3), SyntheticSkeletons(seed=3)
    record = a.records()[17]
    np.testing.assert_array_equal(a.sample(record), b.sample(record))
    store = prepare_synthetic(tmp_path / "syn", num_subjects=4, num_cameras=3, num_setups=2)
    index = store.index
    assert len(store) == 4 * 3 * 2 * 10
    assert set(index["subject"]) == {1, 2, 3, 4} and set(index["camera"]) == {1, 2, 3}
    assert set(index["setup"]) == {1, 2} and np.bincount(index["label"]).tolist() == [24] * 10
    sample = store.sequence(0)
    assert np.abs(sample[:, 0]).sum() > 0 and np.abs(sample[:, 1]).sum() == 0  # second actor absent


def test_synthetic_classes_differ_in_which_limbs_move():
    generator = SyntheticSkeletons()
    records = {r.label: r for r in generator.records() if r.camera == 1 and r.subject == 1}
    names = generator.class_names

    def motion(label, joint):
        seq = generator.sample(records[label])[:, 0]
        seq = seq - seq[:, NTU25.index("spine_base"):NTU25.index("spine_base") + 1]
        return seq[:, NTU25.index(joint)].std(axis=0).sum()  # spread over time, well above sensor noise

    wave_right, kick = names.index("wave right hand"), names.index("kick right leg")
    assert motion(wave_right, "right_hand") > 3 * motion(wave_right, "right_foot")
    assert motion(kick, "right_foot") > 3 * motion(kick, "right_hand")


def _body(length=10):
    seq = np.zeros((length, 2, 25, 3), dtype=np.float32)
    seq[:, 0] = RNG.normal(size=(length, 25, 3))
    return seq


def test_centre_and_align_put_spine_up_and_shoulders_on_x_keeping_absent_body_zero():
    seq = _body()
    out = T.AlignSpineShoulders()(T.CentreOnJoint("spine_mid")(seq, NTU25, RNG), NTU25, RNG)
    np.testing.assert_allclose(out[:, 0, NTU25.index("spine_mid")], 0, atol=1e-5)
    spine = out[0, 0, NTU25.index("spine_shoulder")] - out[0, 0, NTU25.index("spine_base")]
    np.testing.assert_allclose(spine / np.linalg.norm(spine), [0, 1, 0], atol=1e-5)
    shoulders = out[0, 0, NTU25.index("left_shoulder")] - out[0, 0, NTU25.index("right_shoulder")]
    assert abs(shoulders[2]) < 1e-5 and shoulders[0] > 0
    assert np.abs(out[:, 1]).sum() == 0


def test_windowing_transforms_give_fixed_length_and_eval_is_deterministic():
    seq = _body(37)
    assert T.PadRepeat(300)(seq, NTU25, RNG).shape[0] == 300
    np.testing.assert_array_equal(T.PadRepeat(300)(seq, NTU25, RNG)[37], seq[0])
    uniform = T.UniformSample(16)
    np.testing.assert_array_equal(uniform(seq, NTU25, RNG), uniform(seq, NTU25, RNG))
    assert T.RandomCropResize(16)(seq, NTU25, RNG).shape == (16, 2, 25, 3)
    assert T.UniformSample(64)(seq[:5], NTU25, RNG).shape[0] == 64  # shorter than the window


def test_streams_bone_and_motion():
    seq = _body(4)
    bone = T.Stream("bone")(seq, NTU25, RNG)
    elbow, shoulder = NTU25.index("left_elbow"), NTU25.index("left_shoulder")
    np.testing.assert_allclose(bone[:, 0, elbow], seq[:, 0, elbow] - seq[:, 0, shoulder])
    assert np.abs(bone[:, 0, NTU25.centre]).sum() == 0
    motion = T.Stream("joint_motion")(seq, NTU25, RNG)
    np.testing.assert_allclose(motion[0], seq[1] - seq[0])
    entering = seq.copy()
    entering[2:, 1] = RNG.normal(size=(2, 25, 3))  # the second person appears in frame 2: no motion from nowhere
    motion = T.Stream("joint_motion")(entering, NTU25, RNG)
    assert np.abs(motion[:2, 1]).sum() == 0
    np.testing.assert_allclose(motion[2, 1], entering[3, 1] - entering[2, 1])
    np.testing.assert_allclose(motion[:, 0], T.Stream("joint_motion")(seq, NTU25, RNG)[:, 0])
    with pytest.raises(UserError, match="unknown stream"):
        T.Stream("velocity")


def test_rotation_augmentation_preserves_bone_lengths():
    seq = _body(3)
    rotated = T.RandomRotate((30, 30, 30))(seq, NTU25, RNG)
    length = np.linalg.norm(T.Stream("bone")(seq, NTU25, RNG), axis=-1)
    np.testing.assert_allclose(np.linalg.norm(T.Stream("bone")(rotated, NTU25, RNG), axis=-1), length, rtol=1e-4)


def test_splits_partition_by_metadata_and_random_is_stratified():
    index = {"subject": np.array([1, 2, 3, 1, 2, 3]), "label": np.array([0, 0, 0, 1, 1, 1]),
             "camera": np.full(6, -1)}
    train, test = MetadataSplit("xsub", "subject", [1, 3]).sides(index)
    assert train.tolist() == [0, 2, 3, 5] and test.tolist() == [1, 4]
    with pytest.raises(UserError, match="no camera metadata"):
        MetadataSplit("xview", "camera", [2])(index)
    with pytest.raises(UserError, match="defines no xset"):
        MetadataSplit("xset", "setup", None)
    train, test = RandomSplit(test_fraction=0.34, seed=1).sides(index)
    assert sorted(index["label"][test].tolist()) == [0, 1] and len(train) == 4


def test_class_subset_by_number_or_name_remaps_labels(tmp_path):
    store = prepare_synthetic(tmp_path / "syn", num_subjects=4)
    names = store.meta.class_names
    assert resolve_classes([5, "wave left hand"], names) == [1, 4]
    with pytest.raises(UserError, match="unknown class"):
        resolve_classes(["fly"], names)
    module = SkeletonDataModule(tmp_path / "syn", MetadataSplit("xsub", "subject", [1, 2]), classes=[5, 2],
                                eval_transforms=[T.UniformSample(8)], batch_size=4)
    module.setup()
    assert module.num_class == 2 and module.class_names == ["wave left hand", "kick right leg"]
    x, _ = next(iter(module.val_dataloader()))
    assert x.shape == (4, 3, 8, 25, 2) and x.dtype == torch.float32
    assert set(module.test_set.labels.tolist()) == {0, 1}


def test_evaluation_samples_are_fixed_and_draw_nothing_from_the_training_random_stream(tmp_path):
    prepare_synthetic(tmp_path / "syn", num_subjects=4)
    crop = [T.RandomCropResize(8)]  # random in both sets, to see where the randomness comes from
    module = SkeletonDataModule(tmp_path / "syn", MetadataSplit("xsub", "subject", [1, 2]),
                                train_transforms=crop, eval_transforms=crop)
    module.setup()
    torch.manual_seed(3)
    first = module.test_set[0][0]
    after_evaluation = torch.get_rng_state()
    torch.manual_seed(4)
    np.testing.assert_array_equal(module.test_set[0][0], first)  # the same in every evaluation
    torch.manual_seed(3)
    assert torch.equal(torch.get_rng_state(), after_evaluation)  # evaluating consumed nothing
    # training: drawn from the seed the sampler hands out with the sample, not from any global stream
    assert torch.equal(module.train_set[(0, 11)][0], module.train_set[(0, 11)][0])
    assert not torch.equal(module.train_set[(0, 11)][0], module.train_set[(0, 12)][0])


@pytest.mark.parametrize(("size", "batch", "processes"), [(25, 16, 4), (11, 4, 3), (64, 8, 2), (9, 4, 4), (7, 3, 1)])
def test_global_batches_are_one_process_batches_split_over_the_processes(size, batch, processes):
    """N processes × batch b see, step by step, the samples one process sees with batch N·b: no sample repeated,
    the same number of batches everywhere (no collective waits for a process that ran out)."""
    from asgcn_lightning.data.sampling import GlobalBatchSampler

    def batches(sampler, per_batch):
        items = list(sampler)
        return [items[i:i + per_batch] for i in range(0, len(items), per_batch)]

    data = list(range(size))
    one = GlobalBatchSampler(data, batch * processes, seed=5)
    one.set_epoch(3)
    shards = []
    for rank in range(processes):
        sampler = GlobalBatchSampler(data, batch, seed=5, num_replicas=processes, rank=rank)
        sampler.set_epoch(3)
        shards.append(batches(sampler, batch))
    assert len({len(shard) for shard in shards}) == 1
    reference = batches(one, batch * processes)
    dropped = size % (batch * processes) if 0 < size % (batch * processes) < processes else 0
    if dropped:
        reference = reference[:-1]
    for step, whole in enumerate(reference):
        assert sorted(item for shard in shards for item in shard[step]) == sorted(whole)
    assert one.dropped == 0 and GlobalBatchSampler(data, batch).dropped == 0
    epoch_four = GlobalBatchSampler(data, batch * processes, seed=5)
    epoch_four.set_epoch(4)
    assert [i for i, _ in epoch_four] != [i for i, _ in one] or size < 3


def test_missing_real_store_says_which_command_prepares_it(tmp_path):
    module = SkeletonDataModule(tmp_path / "ntu60", MetadataSplit("xsub", "subject", [1]), name="ntu60")
    with pytest.raises(UserError, match=r"`python -m asgcn_lightning.prepare dataset=ntu60`"):
        module.prepare_data()


def test_store_meta_is_plain_json(tmp_path):
    store = prepare_synthetic(tmp_path / "syn", num_subjects=2)
    meta = json.loads((store.root / "meta.json").read_text())
    assert meta["layout"] == "ntu25" and len(meta["class_names"]) == 10


def test_store_prepared_with_other_settings_is_rebuilt_or_refused(tmp_path):
    """A store is named by its data set, not its settings: changed settings must not reuse it silently."""
    split = MetadataSplit("xsub", "subject", [1])
    store_dir = tmp_path / "syn"
    two_subjects = functools.partial(prepare_synthetic, num_subjects=2, num_cameras=1, num_setups=1)
    module = SkeletonDataModule(store_dir, split, prepare=two_subjects, auto_prepare=True)
    module.prepare_data()
    recorded = json.loads((store_dir / "prepared_with.json").read_text())
    assert recorded["preparer"].endswith("prepare_synthetic") and recorded["arguments"]["num_subjects"] == 2
    created = SkeletonStore(store_dir).meta.created
    module.prepare_data()  # same settings: the store is used as it is
    assert SkeletonStore(store_dir).meta.created == created and len(SkeletonStore(store_dir)) == 20

    three_subjects = functools.partial(prepare_synthetic, num_subjects=3, num_cameras=1, num_setups=1)
    SkeletonDataModule(store_dir, split, prepare=three_subjects, auto_prepare=True).prepare_data()
    assert len(SkeletonStore(store_dir)) == 30, "an automatic store is rebuilt for the new settings"

    refused = SkeletonDataModule(store_dir, split, prepare=two_subjects, name="syn",
                                 prepare_command="python -m asgcn_lightning.prepare dataset=syn")
    with pytest.raises(UserError, match=r"prepared with other settings \(num_subjects 3 there, 2 now\): "
                                        r"add `dataset.prepare.num_subjects=3` to use it as it is, or prepare it "
                                        r"again with `python -m asgcn_lightning.prepare dataset=syn "
                                        r"dataset.prepare.num_subjects=2`"):
        refused.prepare_data()
    (store_dir / "prepared_with.json").unlink()
    refused.prepare_data()  # unknown provenance (hand-made or older store): used as it is
