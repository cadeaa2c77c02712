"""pyskl / mmaction2 annotation pickles → a store holding the pickle's train and test splits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from asgcn_lightning.data.formats.pyskl_pickle import PysklAnnotation, load_pyskl_pickle
from asgcn_lightning.data.sources.people import count_bodies
from asgcn_lightning.data.sources.writer import TEST_SETUP, TRAIN_SETUP, Item, Sample, Skipped, StoreSpec, write_store
from asgcn_lightning.data.store import SampleRecord
from asgcn_lightning.data.tracking import normalise_by_image_size, select_main_people
from asgcn_lightning.errors import DataFormatError, UserError
from asgcn_lightning.progress import track
from asgcn_lightning.skeleton.layouts import COCO17, COCO18, NTU25, OPENPOSE25, Layout, make_layout


def pyskl_layout(layout: dict[str, Any] | None, num_joints: int, dimensions: int) -> Layout:
    """The given layout, else the usual one for the joint count (COCO-17, COCO-18, NTU for 3D, BODY_25)."""
    if layout is None:
        defaults = {17: COCO17, 18: COCO18, 25: NTU25 if dimensions == 3 else OPENPOSE25}
        if num_joints not in defaults:
            raise UserError(f"pyskl data with {num_joints} joints: give its layout "
                            "(name, joints, edges, centre)")
        return defaults[num_joints]
    built = make_layout(**layout)
    if built.num_joints != num_joints:
        raise UserError(f"layout {built.name!r} has {built.num_joints} joints, the pyskl data {num_joints}")
    return built


def _annotation_items(path: Path, annotations: Sequence[PysklAnnotation], setups: dict[str, int], spec: StoreSpec,
                      *, has_score: bool, normalise: bool) -> Iterator[Item]:
    num_joints, dimensions = spec.layout.num_joints, spec.channels - has_score
    for annotation in track(annotations, "pyskl: annotations"):
        source = f"{path}:{annotation.frame_dir}"
        if annotation.frame_dir not in setups:
            continue
        shape = annotation.keypoint.shape
        if shape[2:] != (num_joints, dimensions) or has_score != (annotation.score is not None):
            scores = "with" if annotation.score is not None else "without"
            yield Skipped(source, f"keypoint shape {shape} {scores} scores differs from the first annotation's")
            continue
        if not 0 <= annotation.label < len(spec.class_names):
            yield Skipped(source, f"label {annotation.label} is outside the {len(spec.class_names)} classes")
            continue
        sample = select_main_people(annotation.frames(), spec.num_person, has_confidence=has_score)
        bodies = count_bodies(sample, has_score)
        if bodies == 0:
            yield Skipped(source, "no keypoints")
            continue
        if dimensions == 2 and normalise and annotation.img_shape is not None:
            height, width = annotation.img_shape
            sample = normalise_by_image_size(sample, (width, height), has_confidence=has_score)
        yield Sample(SampleRecord(name=annotation.frame_dir, label=annotation.label,
                                  setup=setups[annotation.frame_dir], bodies=bodies), sample)


def prepare_pyskl(
    store_dir: str | Path,
    *,
    path: str | Path | None,
    split_train: str,
    split_test: str,
    num_person: int = 2,
    layout: dict[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    normalise: bool = True,
) -> Path:
    """A pyskl / mmaction2 annotation pickle → a store holding both splits.

    Training samples (``split[split_train]``) get ``setup = 1`` and test samples
    (``split[split_test]``) ``setup = 2``: the ``predefined`` split, which trains on setup 1,
    then reproduces the pickle's own partition. Samples in neither split are left out.

    2D keypoints get the ``keypoint_score`` as third channel and, with ``normalise`` and an
    ``img_shape``, are centred by the image size; 3D keypoints are stored as they are. The layout
    defaults by joint count (17 COCO-17, 18 COCO-18, 25 NTU for 3D). The pickle is trusted input
    (unpickling can run code): it is loaded only from the ``path`` the user gives.
    """
    if path is None:
        raise UserError("prepare_pyskl needs the annotation pickle (dataset.path=...)")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such pyskl annotation file")
    splits, annotations = load_pyskl_pickle(path)
    for wanted in (split_train, split_test):
        if wanted not in splits:
            raise UserError(f"{path}: no split {wanted!r}; the file has {sorted(splits)}")
    if not annotations:
        raise DataFormatError(path, "no annotations")
    setups = {name: TEST_SETUP for name in splits[split_test]}
    setups.update({name: TRAIN_SETUP for name in splits[split_train]})
    first = annotations[0]
    num_joints, dimensions = first.keypoint.shape[2], first.keypoint.shape[3]
    has_score = dimensions == 2 and first.score is not None
    count = max(a.label for a in annotations) + 1
    spec = StoreSpec(dataset="pyskl", layout=pyskl_layout(layout, num_joints, dimensions), num_person=num_person,
                     channels=dimensions + has_score, source=str(path),
                     class_names=list(class_names) if class_names else [f"class_{i}" for i in range(count)])
    return write_store(store_dir, spec, _annotation_items(path, annotations, setups, spec, has_score=has_score,
                                                          normalise=normalise))
