"""Videos → OpenPose-format skeleton JSON with the built-in BlazePose backend.

``python -m asgcn_lightning.data.video_poses <video or folder> --out <dir> [--clip-seconds 5
--overlap 0 --size 340x256]`` writes, for every video (a folder is searched recursively and its
sub-folders mirrored), one folder per clip holding ``<clip>_<frame:012d>_keypoints.json`` — what
OpenPose itself would write for each clip, so everything that reads OpenPose output reads these.
Pixel coordinates are those of the resized frames the backend saw.

Pose estimation is the slow part (some 30-40 frames per second on two CPU cores), so every video's
output is recorded in a hidden ``.<video>.poses-done`` marker with its settings, and a rerun on the
same file with the same settings skips it: an interrupted MADS preparation resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from asgcn_lightning.atomic import write_atomically
from asgcn_lightning.data.pose_backend import SHIPPED_COMPLEXITY, BlazePoseBody25
from asgcn_lightning.data.video import (
    VIDEO_SUFFIXES,
    VideoInfo,
    clip_ranges,
    find_videos,
    output_size,
    parse_size,
    probe_video,
    read_frames,
    split_video,
)
from asgcn_lightning.errors import UserError, describe_error, exit_on_user_error
from asgcn_lightning.progress import progress_bar

MARKER_SUFFIX = ".poses-done"  # not *.json, so OpenPose folder readers never mistake it for a frame
EMPTY_PART_KEYS = ("face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d", "pose_keypoints_3d",
                   "face_keypoints_3d", "hand_left_keypoints_3d", "hand_right_keypoints_3d")


@dataclass(frozen=True)
class PoseSettings:
    """Everything that changes the JSON written for a video; a marker with other settings is redone."""

    clip_seconds: float | None = None
    overlap_seconds: float = 0.0
    size: tuple[int, int] | None = None
    model_complexity: int = SHIPPED_COMPLEXITY
    folder_per_clip: bool = True


@dataclass(frozen=True)
class VideoPoses:
    """What one video gave: its frames, how many had a person, and the OpenPose video names written."""

    info: VideoInfo
    frames: int
    detected: int
    clips: tuple[str, ...]
    reused: bool = False


def openpose_frame(people: np.ndarray) -> dict[str, Any]:
    """One frame's ``(P, 25, 3)`` people as OpenPose 1.3 writes them (body only; face and hands empty)."""
    return {"version": 1.3, "people": [
        {"person_id": [-1], "pose_keypoints_2d": [round(float(v), 3) for v in person.reshape(-1)],
         **{key: [] for key in EMPTY_PART_KEYS}}
        for person in people]}


def estimate_video(info: VideoInfo, settings: PoseSettings, progress: Progress) -> list[np.ndarray]:
    """Per-frame ``(P, 25, 3)`` people of a probed video, BlazePose tracking through the frames."""
    task = progress.add_task(f"poses: {info.path.name}", total=info.frame_count)
    frames = []
    with BlazePoseBody25(model_complexity=settings.model_complexity) as backend:
        for frame in read_frames(info, settings.size):
            frames.append(backend(frame))
            progress.advance(task)
    progress.remove_task(task)
    return frames


def video_to_openpose(video: str | Path, out_dir: str | Path, settings: PoseSettings = PoseSettings(),
                      progress: Progress | None = None) -> VideoPoses:
    """Pose-estimate one video into OpenPose JSON under ``out_dir``, one OpenPose video per clip.

    Clips are named ``<stem>_clip<k:03d>`` (just ``<stem>`` when the video stays whole) with frames
    numbered from 0 in each, and get a folder each unless ``settings.folder_per_clip`` is off.
    """
    info = probe_video(video)
    out_dir = Path(out_dir)
    marker = out_dir / f".{info.path.stem}{MARKER_SUFFIX}"
    previous = _read_marker(marker)
    stat = info.path.stat()
    source = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}  # a replaced video is redone too
    if previous.get("settings") == _jsonable(settings) and previous.get("source") == source:
        return VideoPoses(info, previous["frames"], previous["detected"], tuple(previous["clips"]), reused=True)
    for name in previous.get("outputs", []):
        stale = out_dir / name
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink(missing_ok=True)
    marker.unlink(missing_ok=True)
    with nullcontext(progress) if progress is not None else progress_bar() as bar:
        people = estimate_video(info, settings, bar)
    ranges = clip_ranges(len(people), info.fps, settings.clip_seconds, settings.overlap_seconds)
    clips = [info.path.stem if settings.clip_seconds is None else f"{info.path.stem}_clip{k:03d}"
             for k in range(len(ranges))]
    outputs: list[str] = []
    for clip, (start, end) in zip(clips, ranges, strict=True):
        folder = out_dir / clip if settings.folder_per_clip else out_dir
        folder.mkdir(parents=True, exist_ok=True)
        for frame, frame_people in enumerate(people[start:end]):
            path = folder / f"{clip}_{frame:012d}_keypoints.json"
            path.write_text(json.dumps(openpose_frame(frame_people)))
            if not settings.folder_per_clip:
                outputs.append(path.name)
        if settings.folder_per_clip:
            outputs.append(clip)
    detected = sum(len(p) > 0 for p in people)
    width, height = output_size(info, settings.size)
    write_atomically(marker, json.dumps({
        "settings": _jsonable(settings), "source": source, "video": str(info.path), "fps": info.fps, "width": width,
        "height": height, "frames": len(people), "detected": detected, "clips": clips, "outputs": outputs}))
    return VideoPoses(info, len(people), detected, tuple(clips))


def _jsonable(settings: PoseSettings) -> dict[str, Any]:
    # a JSON round trip turns tuples into lists; compare and store the same form
    return json.loads(json.dumps(asdict(settings)))


def _read_marker(marker: Path) -> dict[str, Any]:
    """A finished video's record; an unreadable marker (a killed write) means the video is redone."""
    try:
        content = json.loads(marker.read_text())
    except (OSError, ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return {}
    return content if isinstance(content, dict) else {}


def videos_to_openpose(source: str | Path, out_dir: str | Path, settings: PoseSettings = PoseSettings(), *,
                       save_clips: bool = False) -> tuple[list[VideoPoses], list[tuple[Path, str]]]:
    """One video, or every video below a folder (sub-folders mirrored), → OpenPose JSON under ``out_dir``.

    In a folder a file that turns out not to be a decodable video is reported and left out, so one
    broken file does not stop the rest; a single video given directly raises instead.
    ``save_clips`` also writes the resized clips as ``<stem>_clip<k:03d>.mp4`` next to their JSON.
    Returns what each video gave and the ``(file, problem)`` of those left out.
    """
    source, out_dir = Path(source), Path(out_dir)
    if source.is_dir():
        videos = [(path, out_dir / path.parent.relative_to(source)) for path in find_videos(source)]
        if not videos:
            raise UserError(f"{source}: no video files ({', '.join(VIDEO_SUFFIXES)}) below this folder")
        _check_unique_stems([path for path, _ in videos])
        # every folder, even one without videos, so class and category folders keep their order
        for folder in (p for p in source.rglob("*") if p.is_dir()):
            relative = folder.relative_to(source)
            if not any(part.startswith(".") for part in relative.parts):
                (out_dir / relative).mkdir(parents=True, exist_ok=True)
    else:
        videos = [(source, out_dir)]
    results: list[VideoPoses] = []
    failed: list[tuple[Path, str]] = []
    with progress_bar() as progress:
        overall = progress.add_task("videos", total=len(videos))
        for path, parent in videos:
            try:
                results.append(video_to_openpose(path, parent, settings, progress))
                if save_clips:
                    split_video(path, parent, clip_seconds=settings.clip_seconds,
                                overlap_seconds=settings.overlap_seconds, size=settings.size)
            except Exception as error:  # in a folder, whatever goes wrong with one video is that video's problem
                if not source.is_dir():
                    raise
                failed.append((path, describe_error(error)))
                progress.console.print(f"[yellow]skipped[/] {path}: {describe_error(error)}")
            progress.advance(overall)
    return results, failed


def _check_unique_stems(paths: Sequence[Path]) -> None:
    """Two videos differing only in suffix in one folder would write the same JSON names."""
    seen: dict[tuple[Path, str], Path] = {}
    for path in paths:
        other = seen.setdefault((path.parent, path.stem), path)
        if other != path:
            raise UserError(f"{other} and {path.name}: same name in one folder, so their skeleton files would "
                            "collide; rename one")


def openpose_tree_from_videos(root: str | Path, store_dir: str | Path, *, size: Sequence[int] | None = None,
                              model_complexity: int = SHIPPED_COMPLEXITY) -> tuple[Path, list[tuple[Path, str]]]:
    """Pose-estimate every video below ``root`` into a mirrored tree of OpenPose JSON; returns its root.

    Each video's frames go, flat, into the mirror of its own folder, named after it, exactly where
    the OpenPose preparers expect OpenPose output. The tree lies next to the store, as
    ``<store_dir>_openpose``, and is kept as a cache: a rerun only processes videos that are new,
    replaced or asked for with other settings. ``size`` (width, height) resizes the frames first.
    Returns the tree's root and the ``(video, problem)`` of the videos left out.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder of videos")
    store_dir = Path(store_dir)
    json_root = store_dir.with_name(f"{store_dir.name}_openpose")
    settings = PoseSettings(size=None if size is None else (int(size[0]), int(size[1])),
                            model_complexity=model_complexity, folder_per_clip=False)
    _, failed = videos_to_openpose(root, json_root, settings)
    return json_root, failed


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a video file, or a folder searched recursively for videos")
    parser.add_argument("--out", type=Path, required=True, help="folder for the OpenPose-format JSON")
    parser.add_argument("--clip-seconds", type=float, default=None, help="cut each video into clips this long")
    parser.add_argument("--overlap", type=float, default=0.0, help="seconds shared by consecutive clips")
    parser.add_argument("--size", type=parse_size, default=None,
                        help="resize frames to WIDTHxHEIGHT first, e.g. 340x256 (-1 keeps the aspect ratio)")
    parser.add_argument("--model-complexity", type=int, default=SHIPPED_COMPLEXITY, choices=(0, 1, 2),
                        help="BlazePose model: 1 ships with mediapipe; 0 (faster) and 2 are downloaded on first use")
    parser.add_argument("--save-clips", action="store_true", help="also write the resized clips as .mp4")
    args = parser.parse_args(argv)
    settings = PoseSettings(clip_seconds=args.clip_seconds, overlap_seconds=args.overlap, size=args.size,
                            model_complexity=args.model_complexity)
    results, failed = videos_to_openpose(args.source, args.out, settings, save_clips=args.save_clips)
    for result in results:
        info = result.info
        width, height = output_size(info, settings.size)
        print(f"{info.path}: {result.frames} frames at {info.fps:.3f} fps, {width}x{height}, a person in "
              f"{result.detected}; {len(result.clips)} clip(s){' (already done)' if result.reused else ''}")
    print(f"{len(results)} video(s) → {args.out}" + (f"; {len(failed)} skipped" if failed else ""))


if __name__ == "__main__":
    main()
