"""MADS motion-capture ground truth: the ``GTpose2`` cell array of the release's ``*_GT.mat`` files.

One cell per frame holds a joints x 3 array in millimetres (15 joints in the multi-view release,
19 in the depth release); an empty cell is a frame whose capture was lost, a NaN a lost joint.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from scipy.io import loadmat
from scipy.io.matlab import MatReadError

from asgcn_lightning.errors import DataFormatError

MADS_GT_VARIABLE = "GTpose2"


def is_mads_gt(path: Path) -> bool:
    """A release's ground-truth file: ``<Category>_<seq>_GT.mat``."""
    return path.suffix.lower() == ".mat" and path.stem.lower().endswith("_gt")


def read_mads_gt(path: Path) -> np.ndarray:
    """``GTpose2`` of a MADS ``*_GT.mat``: one joints x 3 cell per frame (mm) → ``(T, V, 3)`` metres, lost (NaN) → 0.

    An empty cell is a frame whose capture was lost entirely, kept as an all-missing frame.
    """
    try:
        content = loadmat(path, variable_names=[MADS_GT_VARIABLE])
    except NotImplementedError:  # scipy's answer to the HDF5-based format
        raise DataFormatError(path, "a MATLAB v7.3 (HDF5) file, which scipy cannot read; re-save it in MATLAB "
                                    "with save(..., '-v7')") from None
    except (MatReadError, OSError, ValueError, TypeError, EOFError, zlib.error) as error:
        raise DataFormatError(path, f"not a readable MATLAB file ({error})") from None
    if MADS_GT_VARIABLE not in content:
        raise DataFormatError(path, f"no {MADS_GT_VARIABLE} variable (the MADS ground truth)")
    cells = content[MADS_GT_VARIABLE]
    if cells.dtype != object:
        raise DataFormatError(path, f"{MADS_GT_VARIABLE} is a {cells.shape} {cells.dtype} array, expected a cell "
                                    "array of one joints x 3 array per frame")
    frames: list[np.ndarray | None] = []
    shape: tuple[int, ...] | None = None
    for number, cell in enumerate(cells.flat, start=1):
        try:
            joints = np.asarray(cell, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataFormatError(path, f"frame {number} of {MADS_GT_VARIABLE} is not numeric") from None
        if joints.size == 0:
            frames.append(None)
            continue
        if joints.ndim != 2 or joints.shape[1] != 3:
            raise DataFormatError(path, f"frame {number} of {MADS_GT_VARIABLE} is a {joints.shape} array, "
                                        "expected joints x 3")
        shape = shape or joints.shape
        if joints.shape != shape:
            raise DataFormatError(path, f"frame {number} of {MADS_GT_VARIABLE} has {joints.shape[0]} joints, "
                                        f"the frames before it {shape[0]}")
        frames.append(joints)
    if shape is None:
        raise DataFormatError(path, f"{MADS_GT_VARIABLE} holds no captured frame")
    empty = np.full(shape, np.nan)
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32 is inf, which the store writer skips
        sequence = (np.stack([empty if f is None else f for f in frames]) / 1000.0).astype(np.float32)
    sequence[np.isnan(sequence)] = 0.0
    return sequence
