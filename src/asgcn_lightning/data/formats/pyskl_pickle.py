"""pyskl / mmaction2 skeleton annotation pickles, read without running code.

One pickle holds ``{'split': {split_name: [frame_dir, ...]}, 'annotations': [...]}`` where each
annotation has ``frame_dir`` (its name), ``label`` (0-based), ``keypoint`` of shape
``(M, T, V, C)`` (C = 2 pixel coordinates for 2D, 3 for 3D), for 2D usually ``keypoint_score``
``(M, T, V)``, and ``total_frames`` and ``img_shape`` ``(height, width)``. A ``class_names`` (or
``label_names``) list, where a file carries one, names the labels.

Unpickling can call any function the file names, so by default only the globals that rebuild
plain containers, numbers, strings and numpy arrays are allowed; anything else is refused before
it runs. ``trust=True`` (``dataset.trust_pickle=true``) loads a file the user vouches for as is.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asgcn_lightning.errors import DataFormatError

TRUST_OPTION = "dataset.trust_pickle=true"
CLASS_NAME_KEYS = ("class_names", "label_names")

# what rebuilds containers and numpy arrays/scalars (numpy 1 and 2 spell the module differently);
# _codecs.encode turns the text of old-protocol byte strings back into bytes
_ALLOWED_GLOBALS = frozenset({
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"),
    ("__builtin__", "set"), ("__builtin__", "frozenset"), ("__builtin__", "bytearray"),
    ("collections", "OrderedDict"), ("_codecs", "encode"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    *((f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
})


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the data-only allow-list."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified = f"{module}.{name}"


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise RefusedGlobal(module, name)
        try:
            return super().find_class(module, name)
        except ModuleNotFoundError:  # written by the other numpy major version
            swapped = module.replace("numpy._core", "numpy.core") if "._core" in module else \
                module.replace("numpy.core", "numpy._core")
            return super().find_class(swapped, name)


@dataclass
class PysklAnnotation:
    """One sample; ``keypoint`` is ``(M, T, V, C)`` float32 and ``score`` ``(M, T, V)`` or None.

    ``label`` is None when the file's label is not a whole number (``label_text`` shows it).
    """

    frame_dir: str
    label: int | None
    label_text: str
    keypoint: np.ndarray
    score: np.ndarray | None
    img_shape: tuple[int, int] | None

    @property
    def shape_key(self) -> tuple[int, int, bool]:
        """Joints, coordinate channels and whether scores come with them: what decides the layout."""
        return self.keypoint.shape[2], self.keypoint.shape[3], self.score is not None

    def frames(self) -> np.ndarray:
        """``(T, M, V, C')``: the coordinates, with the score appended as a last channel if given."""
        data = self.keypoint
        if self.score is not None:
            data = np.concatenate([data, self.score[..., None]], axis=-1)
        return np.ascontiguousarray(data.transpose(1, 0, 2, 3))


@dataclass
class UnusableAnnotation:
    """An annotation that gives no sample, and why; ``named``: ``name`` is its ``frame_dir`` (else its position)."""

    name: str
    reason: str
    named: bool = True


@dataclass
class PysklContent:
    """A pickle's splits, its annotations (usable or not, in file order) and its class names if it has them."""

    splits: dict[str, list[str]]
    annotations: list[PysklAnnotation | UnusableAnnotation] = field(default_factory=list)
    class_names: list[str] | None = None


def read_pickle(path: Path, trust: bool = False) -> Any:
    """The unpickled content of ``path``: data only, unless the user trusts the file."""
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle) if trust else _DataOnlyUnpickler(handle).load()
    except RefusedGlobal as refused:
        raise DataFormatError(path, f"refused: the pickle calls {refused.qualified}, which can run code (only "
                                    f"containers, numbers, strings and numpy arrays are read); if you trust this "
                                    f"file, give {TRUST_OPTION}") from None
    except OSError as error:
        raise DataFormatError(path, f"cannot read the file ({error})") from None
    except Exception as error:  # a corrupt pickle can fail in almost any way while unpickling
        raise DataFormatError(path, f"not a readable pickle ({type(error).__name__}: {error})") from None


def load_pyskl_pickle(path: str | Path, trust: bool = False) -> PysklContent:
    """The splits, annotations and class names of a pyskl pickle (see the module doc for ``trust``)."""
    path = Path(path)
    content = read_pickle(path, trust)
    if not isinstance(content, dict) or not isinstance(content.get("annotations"), list):
        raise DataFormatError(path, "not a pyskl annotation file: expected a dict with an 'annotations' list")
    splits = content.get("split", {})
    if not isinstance(splits, dict) or not all(isinstance(v, list | tuple) for v in splits.values()):
        raise DataFormatError(path, "'split' is not a dict of split name → frame_dir list")
    names = next((content[key] for key in CLASS_NAME_KEYS if content.get(key) is not None), None)
    if names is not None and (not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names)):
        raise DataFormatError(path, f"'{next(k for k in CLASS_NAME_KEYS if content.get(k) is not None)}' is not "
                                    "a list of names")
    return PysklContent(splits={str(k): [str(n) for n in v] for k, v in splits.items()},
                        annotations=[annotation(i, raw) for i, raw in enumerate(content["annotations"])],
                        class_names=list(names) if names is not None else None)


def whole_number(value: Any) -> int | None:
    """``value`` as an int when it is a whole number (2, np.int64(2), 2.0), else None (2.7, '2', True)."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return None


def annotation(index: int, raw: Any) -> PysklAnnotation | UnusableAnnotation:
    """One raw annotation, checked; whatever makes it unusable is the reason it is skipped."""
    if not isinstance(raw, dict) or "frame_dir" not in raw:
        return UnusableAnnotation(f"annotation {index}", "no 'frame_dir'", named=False)
    name = str(raw["frame_dir"])
    missing = [key for key in ("label", "keypoint") if key not in raw]
    if missing:
        return UnusableAnnotation(name, f"no {' or '.join(repr(k) for k in missing)}")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is found just below
            keypoint = np.asarray(raw["keypoint"], dtype=np.float32)
            score = None if raw.get("keypoint_score") is None else np.asarray(raw["keypoint_score"], np.float32)
        shape = raw.get("img_shape")
        img_shape = None if shape is None else (int(shape[0]), int(shape[1]))
    except (TypeError, ValueError, IndexError, OverflowError) as error:
        return UnusableAnnotation(name, f"unreadable keypoints or img_shape ({error})")
    if keypoint.ndim != 4 or keypoint.shape[-1] not in (2, 3) or 0 in keypoint.shape:
        return UnusableAnnotation(name, f"keypoint has shape {keypoint.shape}, expected (M>=1, T>=1, V>=1, 2 or 3)")
    if score is not None and score.shape != keypoint.shape[:3]:
        return UnusableAnnotation(name, f"keypoint_score has shape {score.shape}, expected {keypoint.shape[:3]}")
    if not np.isfinite(keypoint).all() or (score is not None and not np.isfinite(score).all()):
        return UnusableAnnotation(name, "keypoints hold NaN or infinity (as float32)")
    if img_shape is not None and min(img_shape) <= 0:
        return UnusableAnnotation(name, f"img_shape {img_shape} is not an image size")
    return PysklAnnotation(frame_dir=name, label=whole_number(raw["label"]), label_text=repr(raw["label"]),
                           keypoint=keypoint, score=score, img_shape=img_shape)
