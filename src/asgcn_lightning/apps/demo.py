"""Action recognition on video: ``python demo.py ckpt_path=<ckpt> input=<video | camera index | stream URL>``.

Every frame's people come from the built-in BlazePose backend (on frames resized to ``pose.size``)
or, for a video file, from given OpenPose JSON (``poses=<folder>``). The last ``window`` frames
are kept; every ``every`` frames they are tracked, normalised and classified as in
:mod:`asgcn_lightning.apps.predict`. Each frame is drawn with its skeletons, the current label
and confidence and a small bar chart of the most probable classes.

*Offline* (a video file, the default there) classifies in the frame loop, so the annotated video
is the same on every run. *Real time* (``realtime=true``, the default for a camera or a stream)
classifies on a thread of its own: the frame loop hands over the newest window when the
classifier is free and draws the latest result, so pose estimation never waits for the network.
Both report the frames per second measured end to end (decoding, pose, classification, drawing,
writing), also when stopped early with ``q`` or Ctrl+C.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from asgcn_lightning.apps.components import apply_process_settings
from asgcn_lightning.apps.predict import load_recogniser, top_k
from asgcn_lightning.config import config_dir, typed
from asgcn_lightning.data.formats.openpose_json import (
    FRAME_NAME,
    group_frame_files,
    layout_of_frame,
    read_openpose_sequence,
)
from asgcn_lightning.data.pose_backend import import_video_dependency
from asgcn_lightning.data.tracking import select_main_people, track_people
from asgcn_lightning.data.video import output_size, probe_video
from asgcn_lightning.errors import UserError, exit_on_user_error
from asgcn_lightning.inference import LoadedModel
from asgcn_lightning.inference.inputs import Normaliser, PoseSettings, pose_normaliser, require_layout, video_size
from asgcn_lightning.skeleton.layouts import Layout

PERSON_COLOURS = ((0, 200, 255), (255, 160, 0), (80, 220, 80), (200, 80, 255))  # BGR
DEFAULT_CAMERA_FPS = 30.0  # cameras that do not report a frame rate


@dataclass
class Classification:
    """One classification of the window that ended at ``frame``."""

    frame: int
    top_k: list[dict[str, Any]]

    @property
    def label(self) -> str:
        return self.top_k[0]["class"]

    @property
    def confidence(self) -> float:
        return self.top_k[0]["probability"]


@dataclass
class DemoReport:
    """What a demo run did and how fast: ``fps`` counts every frame from decoding to writing."""

    input: str
    mode: str
    frames: int
    seconds: float
    fps: float
    classifications: list[Classification] = field(default_factory=list)
    output: str | None = None
    interrupted: bool = False  # stopped with Ctrl+C (a camera has no end): the figures cover the frames seen


# -- frames and poses -----------------------------------------------------------------------------------
def open_capture(source: str | int) -> tuple[Any, float, bool]:
    """An OpenCV capture of a camera index, stream URL or video file, its frame rate and whether it is live."""
    cv2 = import_video_dependency("cv2")
    text = str(source)
    live = text.isdigit() or "://" in text
    if live:
        capture = cv2.VideoCapture(int(text) if text.isdigit() else text)
        if not capture.isOpened():
            raise UserError(f"input={text}: cannot open this camera or stream")
        fps = capture.get(cv2.CAP_PROP_FPS)
        return capture, fps if fps and fps > 0 else DEFAULT_CAMERA_FPS, True
    info = probe_video(text)  # names the file in every failure
    return cv2.VideoCapture(str(info.path), cv2.CAP_FFMPEG), info.fps, False


def frames_of(capture: Any, max_frames: int | None) -> Iterator[np.ndarray]:
    """BGR frames until the capture ends (or ``max_frames``); releases the capture."""
    count = 0
    try:
        while max_frames is None or count < max_frames:
            ok, frame = capture.read()
            if not ok:
                return
            count += 1
            yield frame
    finally:
        capture.release()


class BackendPoses:
    """People ``(P, 25, 3)`` of a frame, in the frame's pixels, from BlazePose on a resized copy."""

    def __init__(self, size: tuple[int, int], model_complexity: int) -> None:
        from asgcn_lightning.data.pose_backend import BlazePoseBody25  # imports mediapipe

        self.cv2 = import_video_dependency("cv2")
        self.size = size
        self.backend = BlazePoseBody25(model_complexity=model_complexity)

    def __call__(self, index: int, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        target = self._target(width, height)
        small = frame
        if target != (width, height):
            small = self.cv2.resize(frame, target, interpolation=self.cv2.INTER_AREA)
        people = self.backend(small)
        people[..., 0] *= width / target[0]
        people[..., 1] *= height / target[1]
        return people

    def _target(self, width: int, height: int) -> tuple[int, int]:
        w, h = self.size
        if w == -1:
            return max(1, round(width * h / height)), h
        if h == -1:
            return w, max(1, round(height * w / width))
        return w, h

    def close(self) -> None:
        self.backend.close()


class JsonPoses:
    """People of each video frame from a folder of OpenPose JSON for the video (pixels of its frames).

    A file belongs to the video frame its name numbers (``<video>_<frame:012d>_keypoints.json``,
    counted from 0 as OpenPose does), not to its position in the folder: a frame without a file,
    from a gap or numbering that starts later, has nobody in it, and the later skeletons stay on
    the frames they were estimated on.
    """

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        grouped, _ = group_frame_files(folder.glob("*_keypoints.json")) if folder.is_dir() else ({}, [])
        if len(grouped) != 1:
            found = f"{len(grouped)} videos ({', '.join(list(grouped)[:5])})" if grouped else "no OpenPose files"
            raise UserError(f"poses={folder}: expected the OpenPose JSON of one video, found {found}")
        files = next(iter(grouped.values()))
        people = read_openpose_sequence(files)
        first = next((f for f in people if len(f)), None)
        if first is None:
            raise UserError(f"poses={folder}: nobody detected in any frame")
        self.layout = layout_of_frame(first)
        self.nobody = np.zeros((0, first.shape[1], 3), np.float32)
        self.frames = {_frame_number(path): found for path, found in zip(files, people, strict=True) if len(found)}

    def __call__(self, index: int, frame: np.ndarray) -> np.ndarray:
        return self.frames.get(index, self.nobody)

    def close(self) -> None:
        """Nothing to release; the same interface as :class:`BackendPoses`."""


def _frame_number(path: Path) -> int:
    match = FRAME_NAME.match(path.name)
    assert match is not None, path  # group_frame_files keeps only names that match
    return int(match["frame"])


# -- classification -------------------------------------------------------------------------------------
class WindowClassifier:
    """Tracks, normalises and classifies a window of per-frame detections (in the caller's thread)."""

    def __init__(self, recogniser: LoadedModel, normalise: Normaliser, k: int) -> None:
        self.recogniser, self.normalise, self.k = recogniser, normalise, k
        self.latest: Classification | None = None
        self.history: list[Classification] = []

    def classify(self, frames: Sequence[np.ndarray], frame: int) -> None:
        tracks = track_people(frames)
        if tracks.shape[1] == 0:
            return  # nobody in the window: keep showing the last result
        people = select_main_people(tracks, self.recogniser.num_person)
        probabilities = self.recogniser.probabilities([self.normalise(people)])[0]
        result = Classification(frame, top_k(probabilities, self.recogniser.class_names, self.k))
        self.history.append(result)
        self.latest = result

    def submit(self, frames: Sequence[np.ndarray], frame: int) -> None:
        self.classify(frames, frame)

    def finish(self) -> None:
        """Nothing is pending when classification runs in the frame loop."""


class ThreadedClassifier(WindowClassifier):
    """Classification on a worker thread: :meth:`submit` never blocks, a busy worker skips the window."""

    def __init__(self, recogniser: LoadedModel, normalise: Normaliser, k: int) -> None:
        super().__init__(recogniser, normalise, k)
        self._job: tuple[list[np.ndarray], int] | None = None
        self._ready = threading.Condition()
        self._stopped = False
        self._busy = False
        self._thread = threading.Thread(target=self._work, name="classifier", daemon=True)
        self._thread.start()

    def submit(self, frames: Sequence[np.ndarray], frame: int) -> None:
        with self._ready:
            if self._busy or self._job is not None:
                return
            self._job = (list(frames), frame)
            self._ready.notify()

    def _work(self) -> None:
        while True:
            with self._ready:
                while self._job is None and not self._stopped:
                    self._ready.wait()
                if self._job is None:
                    return
                job, self._job, self._busy = self._job, None, True
            try:
                self.classify(*job)
            finally:
                with self._ready:
                    self._busy = False

    def finish(self) -> None:
        """Let a pending window finish, then stop the worker."""
        with self._ready:
            self._stopped = True
            self._ready.notify()
        self._thread.join()


# -- drawing --------------------------------------------------------------------------------------------
class Annotator:
    """Skeletons, label, confidence and a probability bar chart drawn onto BGR frames with OpenCV."""

    def __init__(self, layout: Layout, k: int) -> None:
        self.cv2 = import_video_dependency("cv2")
        self.layout, self.k = layout, k

    def __call__(self, frame: np.ndarray, people: np.ndarray, result: Classification | None,
                 fps: float | None = None) -> np.ndarray:
        cv2 = self.cv2
        out = frame.copy()
        height, width = out.shape[:2]
        scale = max(height, width) / 640
        thickness = max(1, round(2 * scale))
        for person, pose in enumerate(people):
            colour = PERSON_COLOURS[person % len(PERSON_COLOURS)]
            present = pose[:, 2] > 0
            points = pose[:, :2].round().astype(int)
            for a, b in self.layout.edges:
                if present[a] and present[b]:
                    cv2.line(out, tuple(points[a]), tuple(points[b]), colour, thickness, cv2.LINE_AA)
            for joint in np.flatnonzero(present):
                cv2.circle(out, tuple(points[joint]), thickness + 1, (255, 255, 255), -1, cv2.LINE_AA)
        font, text_scale = cv2.FONT_HERSHEY_SIMPLEX, 0.55 * scale
        line = max(12, round(22 * scale))
        heading = f"{result.label}  {result.confidence:.2f}" if result else "collecting frames..."
        self._box(out, (0, 0), (width, line + 8))
        cv2.putText(out, heading, (6, line), font, text_scale * 1.1, (255, 255, 255), thickness, cv2.LINE_AA)
        if fps is not None:
            text = f"{fps:.1f} fps"
            (text_width, _), _ = cv2.getTextSize(text, font, text_scale, 1)
            cv2.putText(out, text, (width - text_width - 6, line), font, text_scale, (180, 255, 180), 1, cv2.LINE_AA)
        if result:
            rows = result.top_k[: self.k]
            bar_width, top = width // 3, height - len(rows) * line - 6
            self._box(out, (0, top - 4), (bar_width + width // 4, height))
            for i, row in enumerate(rows):
                y = top + i * line
                filled = round(bar_width * row["probability"])
                cv2.rectangle(out, (4, y + 2), (4 + filled, y + line - 4), (0, 170, 255), -1)
                cv2.rectangle(out, (4, y + 2), (4 + bar_width, y + line - 4), (200, 200, 200), 1)
                cv2.putText(out, f"{row['class'][:18]} {row['probability']:.2f}", (bar_width + 10, y + line - 6),
                            font, text_scale * 0.8, (255, 255, 255), 1, cv2.LINE_AA)
        return out

    def _box(self, frame: np.ndarray, corner: tuple[int, int], opposite: tuple[int, int]) -> None:
        """Darken a rectangle so white text stays readable on any picture."""
        (x0, y0), (x1, y1) = corner, opposite
        region = frame[max(0, y0):y1, max(0, x0):x1]
        region[:] = (region * 0.45).astype(frame.dtype)


# -- the loop -------------------------------------------------------------------------------------------
def output_path(cfg: DictConfig, source: str, live: bool) -> Path | None:
    """Where the annotated video goes; ``output=auto`` writes one for a file only (a camera never ends)."""
    choice = str(cfg.get("output", "auto"))
    if choice == "none" or (choice == "auto" and live):
        return None
    if choice == "auto":
        return Path(cfg.paths.output_dir) / f"{Path(source).stem}_demo.mp4"
    return Path(choice)


def run_demo(cfg: DictConfig, console: Console | None = None) -> DemoReport:
    """Run the demo described by ``cfg`` (see ``configs/demo.yaml``) and return what it measured."""
    console = console or Console()
    if OmegaConf.is_missing(cfg, "input") or cfg.input in (None, ""):
        raise UserError("give the video: input=<video file> | <camera index> | <stream URL>")
    window, every = int(cfg.window), int(cfg.every)
    if window < 2 or every < 1:
        raise UserError(f"window ({window}) must be at least 2 and every ({every}) at least 1")
    apply_process_settings(cfg)
    pose = typed(PoseSettings, cfg.get("pose"), "pose")
    recogniser = load_recogniser(cfg, cfg.get("backend", "torch"), cfg.get("onnx_path"))
    prepare = recogniser.card.data.get("prepare")
    poses: JsonPoses | BackendPoses
    if cfg.get("poses"):
        poses = JsonPoses(cfg.poses)
        require_layout(poses.layout, recogniser, cfg.poses)
    else:
        require_layout("openpose25", recogniser, f"{cfg.input} (poses from the built-in BlazePose backend)")
    capture, fps, live = open_capture(cfg.input)
    realtime = live if str(cfg.get("realtime", "auto")) == "auto" else bool(cfg.realtime)
    if cfg.get("poses") and live:
        raise UserError("poses=<OpenPose JSON> belongs to a video file, not to a camera or stream")
    cv2 = import_video_dependency("cv2")
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if not cfg.get("poses"):
        poses = BackendPoses(video_size(pose, prepare), pose.model_complexity)
    normalise = pose_normaliser(pose, prepare, (width, height))
    k = int(cfg.top_k)
    classifier = (ThreadedClassifier if realtime else WindowClassifier)(recogniser, normalise, k)
    annotate = Annotator(recogniser.layout, k)
    target = output_path(cfg, str(cfg.input), live)
    writer = None
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    buffer: deque[np.ndarray] = deque(maxlen=window)
    min_frames = min(window, int(cfg.get("min_frames", window // 2)))
    count, start, shown_fps, interrupted = 0, time.perf_counter(), None, False
    frames = frames_of(capture, cfg.get("max_frames"))
    try:
        for frame in frames:
            people = poses(count, frame)
            buffer.append(people)
            if len(buffer) >= min_frames and (count + 1 - min_frames) % every == 0:
                classifier.submit(list(buffer), count)
            count += 1
            if realtime:
                shown_fps = count / max(time.perf_counter() - start, 1e-9)
            annotated = annotate(frame, people, classifier.latest, shown_fps)
            if writer is not None:
                writer.write(annotated)
            if cfg.get("display"):
                cv2.imshow("asgcn-lightning demo (q quits)", annotated)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
    except KeyboardInterrupt:  # Ctrl+C is how a camera run ends without a window: stop, still report
        interrupted = True
    finally:
        frames.close()  # releases the capture now, also after an interruption
        classifier.finish()
        poses.close()
        if writer is not None:
            writer.release()
        if cfg.get("display"):
            cv2.destroyAllWindows()
    seconds = time.perf_counter() - start
    if count == 0:
        raise UserError(f"input={cfg.input}: " + ("stopped before the first frame" if interrupted
                                                  else "no frames could be read"))
    report = DemoReport(str(cfg.input), "real time" if realtime else "offline", count, seconds, count / seconds,
                        classifier.history, str(target) if target else None, interrupted)
    saved = _save_report(cfg, report)
    last = f", last: {classifier.latest.label} ({classifier.latest.confidence:.2f})" if classifier.latest else ""
    stopped = "stopped by Ctrl+C after " if interrupted else ""
    console.print(f"{report.mode}: {stopped}{count} frames in {seconds:.1f} s = {report.fps:.1f} fps end to end, "
                  f"{len(report.classifications)} classifications{last}"
                  + (f"\nannotated video → {target}" if target else "") + f"\nreport → {saved}", soft_wrap=True)
    return report


def _save_report(cfg: DictConfig, report: DemoReport) -> Path:
    path = Path(cfg.paths.output_dir) / "demo.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(report), indent=1))
    return path


def video_frames(path: str | Path) -> tuple[int, float, tuple[int, int]]:
    """Frames actually decodable in a written video, its frame rate and size: a playability check."""
    info = probe_video(path)
    cv2 = import_video_dependency("cv2")
    capture = cv2.VideoCapture(str(info.path), cv2.CAP_FFMPEG)
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count, info.fps, output_size(info, None)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="demo")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    run_demo(cfg)


if __name__ == "__main__":
    main()
