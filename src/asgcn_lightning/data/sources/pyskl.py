"""pyskl / mmaction2 annotation pickles → a store holding the pickle's train and test splits.

What a new pickle needs is read from the pickle itself: its layout (the joint count most of its
annotations share), the coordinate kind (3D camera coordinates are centred and turned upright, 2D
pixels are scaled by the image size), the persons present, the train/test split names and the class
names. Whole-file problems (labels that are not 0..N-1 whole numbers, a sample in both splits, a
duplicate name, a split naming samples the file lacks) are refused in one line naming them; a single
annotation that cannot be stored faithfully is skipped and listed.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asgcn_lightning.data.formats.pyskl_pickle import (
    PysklAnnotation,
    PysklContent,
    UnusableAnnotation,
    load_pyskl_pickle,
)
from asgcn_lightning.data.sources.people import count_bodies
from asgcn_lightning.data.sources.pyskl_checks import check_labels, check_names, check_split_members, choose_splits
from asgcn_lightning.data.sources.writer import TEST_SETUP, TRAIN_SETUP, Item, Sample, Skipped, StoreSpec, write_store
from asgcn_lightning.data.store import SampleRecord
from asgcn_lightning.data.tracking import select_main_people
from asgcn_lightning.data.transforms import AlignSpineShoulders, CentreOnJoint
from asgcn_lightning.errors import DataFormatError, UserError
from asgcn_lightning.progress import track
from asgcn_lightning.skeleton.layouts import COCO17, COCO18, KINECT20, NTU25, OPENPOSE25, Layout, make_layout

log = logging.getLogger(__name__)

MAX_DERIVED_PERSONS = 2  # persons kept when the data hold more and dataset.num_person is not given


def pyskl_layout(layout: dict[str, Any] | None, num_joints: int, dimensions: int) -> Layout:
    """The given layout, else the usual one for the joint count (COCO-17/18, Kinect 20 or 25 for 3D, BODY_25)."""
    if layout is not None:
        return make_layout(**layout)
    defaults = {17: COCO17, 18: COCO18, 20: KINECT20 if dimensions == 3 else None,
                25: NTU25 if dimensions == 3 else OPENPOSE25}
    if defaults.get(num_joints) is None:
        raise UserError(f"pyskl data with {num_joints} joints ({dimensions}D): give its layout, "
                        "dataset.layout={name: ..., joints: [...], edges: [[a, b], ...], centre: ...}")
    return defaults[num_joints]


def _shape_text(joints: int, dimensions: int, scores: bool) -> str:
    return f"{joints} joints × {dimensions}D{' with scores' if scores else ''}"


def _persons_present(annotations: Sequence[PysklAnnotation]) -> int:
    """The most persons with any non-zero joint in one annotation (at least 1)."""
    return max([1, *(int((np.abs(a.keypoint).reshape(len(a.keypoint), -1).max(axis=1, initial=0) > 0).sum())
                     for a in annotations)])


def _normalised(sample: np.ndarray, annotation: PysklAnnotation, layout: Layout) -> np.ndarray:
    """3D: centred on the first frame's centre joint and turned upright; 2D: pixels over the longer image side."""
    if annotation.keypoint.shape[-1] == 3:
        sample = CentreOnJoint(per_frame=False)(sample, layout, np.random.default_rng(0))
        if layout.spine is not None and layout.shoulders is not None:
            sample = AlignSpineShoulders()(sample, layout, np.random.default_rng(0))
        return sample
    if annotation.img_shape is None:
        return sample
    height, width = annotation.img_shape
    present = np.abs(sample).sum(axis=-1, keepdims=True) > 0
    out = sample.copy()
    out[..., :2] = (sample[..., :2] - [width / 2, height / 2]) / max(width, height)  # keeps the aspect ratio
    return out * present


def _items(path: Path, content: PysklContent, setups: dict[str, int], spec: StoreSpec, *,
           has_score: bool, normalise: bool, decided_by: str) -> Iterator[Item]:
    wanted = (spec.layout.num_joints, spec.channels - has_score, has_score)
    for item in track(content.annotations, "pyskl: annotations"):
        name = item.name if isinstance(item, UnusableAnnotation) else item.frame_dir
        if name not in setups and not (isinstance(item, UnusableAnnotation) and not item.named):
            continue  # in neither split: left out, as the pickle's own partition leaves it out
        source = f"{path}:{name}"
        if isinstance(item, UnusableAnnotation):
            yield Skipped(source, item.reason)
            continue
        if item.shape_key != wanted:
            yield Skipped(source, f"{_shape_text(*item.shape_key)}, the pickle's layout {spec.layout.name} has "
                                  f"{_shape_text(*wanted)} ({decided_by})")
            continue
        sample = select_main_people(item.frames(), spec.num_person, has_confidence=has_score)
        bodies = count_bodies(sample, has_score)
        if bodies == 0:
            yield Skipped(source, "no keypoints")
            continue
        if normalise:
            sample = _normalised(sample, item, spec.layout)
        yield Sample(SampleRecord(name=item.frame_dir, label=int(item.label), setup=setups[item.frame_dir],
                                  bodies=bodies), sample)


def prepare_pyskl(
    store_dir: str | Path,
    *,
    path: str | Path | None,
    split_train: str | None = None,
    split_test: str | None = None,
    num_person: int | None = None,
    layout: dict[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    normalise: bool = True,
    trust_pickle: bool | None = None,
) -> Path:
    """A pyskl / mmaction2 annotation pickle → a store holding both splits.

    Training samples (``split[split_train]``) get ``setup = 1`` and test samples ``setup = 2``: the
    ``predefined`` split reproduces the pickle's own partition; samples in neither split are left out.
    ``None`` arguments come from the data: the split pair (``<x>train`` with ``<x>val`` or ``<x>test``,
    the first such pair of the file), the persons present (at most 2), the layout (by the joint count
    of most annotations), the class names (``class_names``/``label_names`` in the pickle, else
    ``class_<i>``). With ``normalise``, 3D camera coordinates are centred on the centre joint of the
    first frame and turned spine-up/shoulders-along-x where the layout names ``spine`` and
    ``shoulders``; 2D pixel coordinates are centred on the image and divided by its longer side.
    The pickle is read without running code unless ``trust_pickle``.
    """
    if path is None:
        raise UserError("the pyskl data set needs the annotation pickle: dataset.path=<file.pkl>")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such pyskl annotation file (dataset.path)")
    content = load_pyskl_pickle(path, trust=bool(trust_pickle))
    usable = [a for a in content.annotations if isinstance(a, PysklAnnotation)]
    if not usable:
        raise DataFormatError(path, "no usable annotations" + "".join(
            f"; first: {a.name}: {a.reason}" for a in content.annotations[:1]))
    check_names(path, content)
    split_train, split_test = choose_splits(path, content.splits, split_train, split_test)
    check_split_members(path, content, split_train, split_test)
    setups = {name: TEST_SETUP for name in content.splits[split_test]}
    setups.update({name: TRAIN_SETUP for name in content.splits[split_train]})
    chosen = [a for a in usable if a.frame_dir in setups]
    names = check_labels(path, chosen, list(class_names) if class_names else content.class_names)
    shapes = collections.Counter(a.shape_key for a in chosen)
    if layout is not None:
        built = make_layout(**layout)
        candidates = [key for key, _ in shapes.most_common() if key[0] == built.num_joints]
        if not candidates:
            raise UserError(f"dataset.layout {built.name!r} has {built.num_joints} joints; no annotation of {path} "
                            f"has that many ({', '.join(_shape_text(*k) for k in shapes)})")
        shape, decided_by = candidates[0], "dataset.layout"
    else:
        (shape, count), = shapes.most_common(1)
        decided_by = f"that of {count} of {len(chosen)} annotations"
    num_joints, dimensions, has_score = shape
    persons = num_person or min(MAX_DERIVED_PERSONS, _persons_present([a for a in chosen if a.shape_key == shape]))
    spec = StoreSpec(dataset="pyskl", layout=pyskl_layout(layout, num_joints, dimensions), num_person=persons,
                     channels=dimensions + has_score, source=str(path), class_names=names,
                     spatial_channels=dimensions)
    log.info("pyskl %s: splits %s/%s, layout %s (%s), %d person(s), %d classes", path.name, split_train, split_test,
             spec.layout.name, decided_by, spec.num_person, len(names))
    return write_store(store_dir, spec, _items(path, content, setups, spec, has_score=has_score,
                                               normalise=normalise, decided_by=decided_by))
