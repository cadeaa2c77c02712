"""Video reading, downscaling and splitting into clips: the ffmpeg step of MADS-style pipelines, in Python.

OpenCV (``opencv-contrib-python``, through the ``[video]`` extra) does the work: mediapipe needs it
anyway, and its wheel bundles FFmpeg, so one dependency decodes mp4/avi/mkv, resizes and writes
clips, with no ffmpeg binary to install. Clip windows follow the preparers' convention
(:func:`~asgcn_lightning.data.windows.window_starts`): equal-length clips, the last one flush
with the end so no tail is lost, and a video shorter than one clip is a single clip. Clips keep
the source frame rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asgcn_lightning.data.pose_backend import import_video_dependency
from asgcn_lightning.data.windows import window_starts
from asgcn_lightning.errors import DataFormatError, UserError
from asgcn_lightning.progress import progress_bar

OPENCV_LOG_ERROR = 2  # cv2.setLogLevel: 0 silent, 1 fatal, 2 error, 3 warning
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv")


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds; ``frame_count`` is the container's figure, None when it does not say."""

    path: Path
    fps: float
    frame_count: int | None
    width: int
    height: int

    @property
    def duration(self) -> float | None:
        return None if self.frame_count is None else self.frame_count / self.fps


def parse_size(text: str) -> tuple[int, int]:
    """``'340x256'`` → ``(340, 256)``; ``-1`` for one side keeps the aspect ratio (as ffmpeg's scale)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UserError(f"size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 340x256 (or 340x-1)") from None
    if width == height == -1 or min(width, height) < -1 or 0 in (width, height):
        raise UserError(f"size {text!r}: both sides must be positive, or one of them -1 to keep the aspect ratio")
    return width, height


def output_size(info: VideoInfo, size: tuple[int, int] | None) -> tuple[int, int]:
    """The ``(width, height)`` frames of ``info`` get when resized to ``size``."""
    if size is None:
        return info.width, info.height
    width, height = size
    if width == -1:
        width = max(1, round(info.width * height / info.height))
    elif height == -1:
        height = max(1, round(info.height * width / info.width))
    return width, height


def _open(path: Path) -> Any:
    """An opened ``cv2.VideoCapture`` of ``path``, with the file named in every failure."""
    cv2 = import_video_dependency("cv2")
    if not path.is_file():
        raise DataFormatError(path, "no such video file")
    if path.stat().st_size == 0:
        raise DataFormatError(path, "empty file, expected a video")
    level = cv2.getLogLevel()
    cv2.setLogLevel(OPENCV_LOG_ERROR)  # the error below says it better than OpenCV's warning
    try:
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    finally:
        cv2.setLogLevel(level)
    if not capture.isOpened():
        raise DataFormatError(path, "not a video FFmpeg (through OpenCV) can decode")
    return capture


def probe_video(path: str | Path) -> VideoInfo:
    """Frame rate, size and frame count of a video; :class:`DataFormatError` for anything else.

    A file must decode at least two frames: FFmpeg also opens still images, which are no video.
    """
    path = Path(path)
    capture = _open(path)
    cv2 = import_video_dependency("cv2")
    try:
        decoded = sum(capture.grab() for _ in range(2))
        fps = capture.get(cv2.CAP_PROP_FPS)
        reported = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        capture.release()
    if decoded == 0:
        raise DataFormatError(path, "no decodable frames (truncated or corrupt video)")
    if decoded == 1:
        raise DataFormatError(path, "a single still image, not a video")
    if not math.isfinite(fps) or fps <= 0:
        raise DataFormatError(path, f"the video reports no usable frame rate ({fps})")
    frame_count = int(reported) if math.isfinite(reported) and reported >= 2 else None
    return VideoInfo(path, fps, frame_count, width, height)


def read_frames(info: VideoInfo, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """The frames of a probed video as BGR ``uint8`` arrays, resized to ``size`` (see :func:`output_size`).

    Shrinking uses area interpolation, which averages instead of aliasing, like ffmpeg's default.
    """
    cv2 = import_video_dependency("cv2")
    target = output_size(info, size)
    capture = _open(info.path)
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            if (frame.shape[1], frame.shape[0]) != target:
                shrinking = target[0] < frame.shape[1]
                frame = cv2.resize(frame, target, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
            yield frame
    finally:
        capture.release()


def clip_ranges(frame_count: int, fps: float, clip_seconds: float | None,
                overlap_seconds: float = 0.0) -> list[tuple[int, int]]:
    """``[start, end)`` frame ranges of the clips cut from ``frame_count`` frames at ``fps``.

    ``clip_seconds=None`` keeps the video whole. Consecutive clips share ``overlap_seconds``.
    """
    if clip_seconds is None:
        return [(0, frame_count)]
    window = round(clip_seconds * fps)
    stride = window - round(overlap_seconds * fps)
    if window < 1 or overlap_seconds < 0 or stride < 1:
        raise UserError(f"clip length {clip_seconds} s and overlap {overlap_seconds} s at {fps:.3g} fps: a clip "
                        "needs at least one frame and the overlap must be shorter than the clip")
    return [(start, min(start + window, frame_count)) for start in window_starts(frame_count, window, stride)]


def find_videos(root: Path) -> list[Path]:
    """The video files below ``root`` (by suffix), sorted; hidden folders are left out."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def split_video(path: str | Path, out_dir: str | Path, *, clip_seconds: float | None, overlap_seconds: float = 0.0,
                size: tuple[int, int] | None = None) -> list[Path]:
    """Cut a video into ``<stem>_clip<k:03d>.mp4`` clips, resized to ``size``, at the source frame rate.

    Frames are decoded once and written to every clip that holds them, so overlapping clips cost
    no second decoding pass. Returns the clip files in order.
    """
    cv2 = import_video_dependency("cv2")
    info = probe_video(path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ranges = clip_ranges(_count_frames(info), info.fps, clip_seconds, overlap_seconds)
    paths = [out_dir / f"{info.path.stem}_clip{k:03d}.mp4" for k in range(len(ranges))]
    starting: dict[int, list[int]] = {}
    for k, (start, _) in enumerate(ranges):
        starting.setdefault(start, []).append(k)
    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
    writers: dict[int, Any] = {}
    try:
        with progress_bar() as progress:
            task = progress.add_task(f"splitting {info.path.name}", total=ranges[-1][1])
            for index, frame in enumerate(read_frames(info, size)):
                for k in starting.get(index, []):
                    writers[k] = cv2.VideoWriter(str(paths[k]), fourcc, info.fps, (frame.shape[1], frame.shape[0]))
                for writer in writers.values():
                    writer.write(frame)
                for k in [k for k in writers if ranges[k][1] == index + 1]:
                    writers.pop(k).release()
                progress.advance(task)
    finally:
        for writer in writers.values():
            writer.release()
    return paths


def _count_frames(info: VideoInfo) -> int:
    """The exact frame count: containers' figures are estimates, so decode when clips depend on it."""
    capture = _open(info.path)
    try:
        count = 0
        while capture.grab():
            count += 1
    finally:
        capture.release()
    return count
