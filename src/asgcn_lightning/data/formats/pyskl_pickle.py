"""pyskl / mmaction2 skeleton annotation pickles.

One pickle holds ``{'split': {split_name: [frame_dir, ...]}, 'annotations': [...]}`` where each
annotation has ``frame_dir`` (its name), ``label`` (0-based), ``keypoint`` of shape
``(M, T, V, C)`` (C = 2 pixel coordinates for 2D, 3 for 3D), for 2D usually ``keypoint_score``
``(M, T, V)``, and ``total_frames`` and ``img_shape`` ``(height, width)``.

Unpickling runs code chosen by whoever wrote the file, so a pickle is trusted input: it is only
ever loaded from the path the user names, never from a download or a search.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asgcn_lightning.errors import DataFormatError


@dataclass
class PysklAnnotation:
    """One sample; ``keypoint`` is ``(M, T, V, C)`` float32 and ``score`` ``(M, T, V)`` or None."""

    frame_dir: str
    label: int
    keypoint: np.ndarray
    score: np.ndarray | None
    img_shape: tuple[int, int] | None

    def frames(self) -> np.ndarray:
        """``(T, M, V, C')``: the coordinates, with the score appended as a last channel if given."""
        data = self.keypoint
        if self.score is not None:
            data = np.concatenate([data, self.score[..., None]], axis=-1)
        return np.ascontiguousarray(data.transpose(1, 0, 2, 3))


def load_pyskl_pickle(path: str | Path) -> tuple[dict[str, list[str]], list[PysklAnnotation]]:
    """The splits and validated annotations of a pyskl pickle (trusted input, see module doc)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            content = pickle.load(handle)  # trusted input: a path the user named
    except OSError as error:
        raise DataFormatError(path, f"cannot read the file ({error})") from None
    except Exception as error:  # a corrupt pickle can fail in almost any way while unpickling
        raise DataFormatError(path, f"not a readable pickle ({type(error).__name__}: {error})") from None
    if not isinstance(content, dict) or not isinstance(content.get("annotations"), list):
        raise DataFormatError(path, "not a pyskl annotation file: expected a dict with an 'annotations' list")
    splits = content.get("split", {})
    if not isinstance(splits, dict):
        raise DataFormatError(path, "'split' is not a dict of split name → frame_dir list")
    annotations = [_annotation(path, i, raw) for i, raw in enumerate(content["annotations"])]
    return {str(k): [str(n) for n in v] for k, v in splits.items()}, annotations


def _annotation(path: Path, index: int, raw: Any) -> PysklAnnotation:
    if not isinstance(raw, dict) or "keypoint" not in raw or "frame_dir" not in raw or "label" not in raw:
        raise DataFormatError(path, f"annotation {index} lacks 'frame_dir', 'label' or 'keypoint'")
    name = str(raw["frame_dir"])
    try:
        keypoint = np.asarray(raw["keypoint"], dtype=np.float32)
        score = None if raw.get("keypoint_score") is None else np.asarray(raw["keypoint_score"], np.float32)
        label = int(raw["label"])
        shape = raw.get("img_shape")
        img_shape = None if shape is None else (int(shape[0]), int(shape[1]))
    except (TypeError, ValueError, IndexError) as error:
        raise DataFormatError(path, f"annotation {name!r}: unreadable keypoints, label or img_shape "
                                    f"({error})") from None
    if keypoint.ndim != 4 or keypoint.shape[-1] not in (2, 3) or keypoint.shape[1] == 0:
        raise DataFormatError(path, f"annotation {name!r}: keypoint has shape {keypoint.shape}, "
                                    "expected (M, T>=1, V, 2 or 3)")
    if score is not None and score.shape != keypoint.shape[:3]:
        raise DataFormatError(path, f"annotation {name!r}: keypoint_score has shape {score.shape}, "
                                    f"expected {keypoint.shape[:3]}")
    return PysklAnnotation(
        frame_dir=name,
        label=label,
        keypoint=keypoint,
        score=score,
        img_shape=img_shape,
    )
