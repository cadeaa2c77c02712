"""Reader for the raw Kinect v2 ``.skeleton`` text files of NTU RGB+D 60/120.

A file holds the frame count, then per frame the number of bodies and per body an info line of 10
values (bodyID, clipedEdges, hand states and confidences, isResticted, leanX, leanY,
trackingState), the joint count and one line of 12 values per joint (x y z, depthX depthY,
colorX colorY, orientation W X Y Z, trackingState).

Preparing 114 k files must take minutes, not hours, so the per-line Python work is limited to the
header lines (frame and body counts, info lines); all joint lines of a file are converted in one
call of numpy's C parser, reading only the columns used (x, y, z). Cheap checks guard that fast
path (only numeric characters in the file, 12 single-space separated values on every joint line);
only a file that fails them is walked line by line, to say exactly what is wrong. The nine unused
columns are checked for their count and characters, not parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asgcn_lightning.errors import DataFormatError

NUM_JOINTS = 25
INFO_VALUES = 10
JOINT_VALUES = 12
_XYZ_COLUMNS = (0, 1, 2)
_NUMERIC_BYTES = b"0123456789eE+-. \t\r\n"
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass
class BodyTrack:
    """One Kinect body (one bodyID) over the frames where it appears."""

    body_id: int
    frames: np.ndarray  # (n,) int, increasing frame indices
    xyz: np.ndarray  # (n, 25, 3) float64, camera space in metres, exactly as written in the file

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class NtuSkeletonFile:
    """A parsed ``.skeleton`` file: its frame count and its body tracks in order of appearance."""

    path: Path
    num_frames: int
    bodies: list[BodyTrack]


def read_ntu_skeleton(path: str | Path) -> NtuSkeletonFile:
    """Parse one ``.skeleton`` file (LF or CRLF); a malformed file raises :class:`DataFormatError`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataFormatError(path, f"unreadable ({error.strerror})") from None
    data = data.removeprefix(_UTF8_BOM)
    if not data.strip():
        raise DataFormatError(path, "empty file")
    lines = data.splitlines()
    while not lines[-1].strip():
        lines.pop()
    starts, frame_of, body_ids, num_frames = _walk_headers(path, lines)
    joint_lines = [line for start in starts for line in lines[start:start + NUM_JOINTS]]
    if (data.translate(None, _NUMERIC_BYTES)
            or data.count(b" ") != len(starts) * (INFO_VALUES - 1 + NUM_JOINTS * (JOINT_VALUES - 1))
            or any(line.count(b" ") != JOINT_VALUES - 1 for line in joint_lines)):
        # unexpected characters, or spacing that is not the usual single spaces: check every line
        _find_problem(path, lines, starts, frame_of, num_frames)
    if not starts:
        return NtuSkeletonFile(path, num_frames, [])
    try:
        values = np.loadtxt(joint_lines, usecols=_XYZ_COLUMNS, dtype=np.float64, ndmin=2)
    except ValueError as error:
        _find_problem(path, lines, starts, frame_of, num_frames)
        raise DataFormatError(path, f"unreadable joint values ({error})") from None
    values = values.reshape(len(starts), NUM_JOINTS, 3)
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values).all(axis=(1, 2)))[0])
        raise DataFormatError(path, f"frame {frame_of[row] + 1}: non-finite joint coordinate")
    return NtuSkeletonFile(path, num_frames, _group_tracks(path, values, frame_of, body_ids))


def _walk_headers(path: Path, lines: list[bytes]) -> tuple[list[int], list[int], list[int], int]:
    """Follow the frame/body/joint counts; returns each body's first joint line, frame and bodyID."""
    end = len(lines)

    def count(i: int, what: str) -> int:
        try:
            value = int(lines[i])
        except ValueError:
            raise DataFormatError(path, f"line {i + 1}: expected {what}, found {_show(lines[i])}") from None
        if value < 0:
            raise DataFormatError(path, f"line {i + 1}: {what} is negative ({value})")
        return value

    num_frames = count(0, "the frame count")
    starts: list[int] = []
    frame_of: list[int] = []
    body_ids: list[int] = []
    i = 1
    for frame in range(num_frames):
        if i >= end:
            raise DataFormatError(path, f"truncated: the file ends after frame {frame} of {num_frames}")
        num_bodies = count(i, f"the body count of frame {frame + 1}")
        i += 1
        for body in range(num_bodies):
            if i + 2 + NUM_JOINTS > end:
                raise DataFormatError(path, f"truncated: frame {frame + 1} of {num_frames} stops in "
                                            f"body {body + 1} of {num_bodies}")
            info = lines[i].split()
            if len(info) != INFO_VALUES:
                raise DataFormatError(path, f"line {i + 1}: frame {frame + 1} body {body + 1} info line has "
                                            f"{len(info)} values, expected {INFO_VALUES}")
            try:
                body_ids.append(int(info[0]))
            except ValueError:
                raise DataFormatError(path, f"line {i + 1}: bodyID {_show(info[0])} is not an integer") \
                    from None
            joints = count(i + 1, f"the joint count of frame {frame + 1} body {body + 1}")
            if joints != NUM_JOINTS:
                raise DataFormatError(path, f"line {i + 2}: frame {frame + 1} body {body + 1} has {joints} "
                                            f"joints, expected {NUM_JOINTS}")
            last = lines[i + 1 + NUM_JOINTS]  # wrong when the body has fewer joint lines than announced
            if len(last.split()) != JOINT_VALUES:
                cut = "truncated: " if i + 2 + NUM_JOINTS == end and len(last.split()) < JOINT_VALUES else ""
                raise DataFormatError(path, f"{cut}line {i + 2 + NUM_JOINTS}: expected joint {NUM_JOINTS} of "
                                            f"frame {frame + 1} body {body + 1}, found {_show(last)}")
            starts.append(i + 2)
            frame_of.append(frame)
            i += 2 + NUM_JOINTS
    if i != end:
        raise DataFormatError(path, f"line {i + 1}: {end - i} unexpected lines after the last of "
                                    f"{num_frames} frames")
    return starts, frame_of, body_ids, num_frames


def _find_problem(path: Path, lines: list[bytes], starts: list[int], frame_of: list[int],
                  num_frames: int) -> None:
    """The slow, exact check: raise for the first line that is not the expected numbers."""
    joint_lines = {line for start in starts for line in range(start, start + NUM_JOINTS)}
    for i, line in enumerate(lines):
        tokens = line.split()
        if i in joint_lines:
            where = f"line {i + 1} (frame {_frame_at(i, starts, frame_of) + 1} of {num_frames})"
            if len(tokens) != JOINT_VALUES:
                raise DataFormatError(path, f"{where}: {len(tokens)} values, expected {JOINT_VALUES}")
        else:
            where = f"line {i + 1}"
        for token in tokens:
            try:
                float(token)
            except ValueError:
                raise DataFormatError(path, f"{where}: non-numeric value {_show(token)}") from None


def _frame_at(line: int, starts: list[int], frame_of: list[int]) -> int:
    return frame_of[int(np.searchsorted(starts, line, side="right")) - 1]


def _group_tracks(path: Path, values: np.ndarray, frame_of: list[int],
                  body_ids: list[int]) -> list[BodyTrack]:
    """Split the per-(frame, body) rows into one track per bodyID, in order of first appearance."""
    frames = np.asarray(frame_of, dtype=np.int64)
    rows_of: dict[int, list[int]] = {}
    for row, body_id in enumerate(body_ids):
        rows_of.setdefault(body_id, []).append(row)
    tracks = []
    for body_id, rows in rows_of.items():
        steps = np.diff(frames[rows])
        if (steps == 0).any():
            frame = int(frames[rows][np.flatnonzero(steps == 0)[0]]) + 1
            raise DataFormatError(path, f"frame {frame}: bodyID {body_id} appears twice")
        tracks.append(BodyTrack(body_id=body_id, frames=frames[rows], xyz=values[rows]))
    return tracks


def _show(token: bytes) -> str:
    text = token.decode("latin-1").strip()
    return repr(text if len(text) <= 40 else text[:40] + "…")
