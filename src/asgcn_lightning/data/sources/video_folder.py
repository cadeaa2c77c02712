"""A folder of videos, one sub-folder per class → a BODY_25 store, through the built-in BlazePose backend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from asgcn_lightning.data.pose_backend import SHIPPED_COMPLEXITY
from asgcn_lightning.data.sources.openpose import prepare_openpose_folder
from asgcn_lightning.data.video_poses import openpose_tree_from_videos
from asgcn_lightning.errors import UserError


def prepare_video_folder(
    store_dir: str | Path,
    *,
    root: str | Path | None,
    size: Sequence[int] | None = None,
    model_complexity: int = SHIPPED_COMPLEXITY,
    num_person: int = 1,
    window: int | None = None,
    stride: int | None = None,
    class_names: Sequence[str] | None = None,
    dataset: str = "video_folder",
) -> Path:
    """A class-per-sub-folder tree of videos (``root/<class>/**/<video>.mp4``) → a BODY_25 store.

    The videos are pose-estimated by BlazePose
    (:func:`~asgcn_lightning.data.video_poses.openpose_tree_from_videos`) and the JSON is prepared
    as OpenPose output by :func:`~asgcn_lightning.data.sources.openpose.prepare_openpose_folder`,
    with ``window``/``stride`` cutting long videos into samples. With a ``size`` (width, height) the
    frames are resized to it and samples are centred by the frame; without one each sample is
    centred on its person. BlazePose finds one person per frame, hence ``num_person=1``. Files that
    are no decodable video are skipped and listed with the store's other skipped sources.
    """
    if root is None:
        raise UserError("prepare_video_folder needs the folder of videos (dataset.root=...)")
    json_root, failed = openpose_tree_from_videos(root, store_dir, size=size, model_complexity=model_complexity)
    image_size = None if size is None or min(size) < 1 else size
    return prepare_openpose_folder(store_dir, root=json_root, image_size=image_size, num_person=num_person,
                                   window=window, stride=stride, class_names=class_names, layout="openpose25",
                                   dataset=dataset, left_out=failed)
