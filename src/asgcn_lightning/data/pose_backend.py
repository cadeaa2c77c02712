"""A built-in pose estimator so videos become skeletons without installing OpenPose.

MediaPipe BlazePose (``mediapipe==0.10.21``, the optional ``[video]`` extra) finds one person per
frame as 33 landmarks. They are mapped to OpenPose BODY_25 (:data:`OPENPOSE25`), the layout the
OpenPose readers and preparers already handle, so BlazePose output and real OpenPose output are
interchangeable downstream:

* Neck and MidHip, which BlazePose lacks, are the midpoints of the shoulders and of the hips, as
  sure as the less visible of the two;
* the big and small toes are both BlazePose's foot index (it has one toe point per foot);
* the confidence is the landmark's visibility.

OpenPose never reports a joint outside the frame, whereas BlazePose extrapolates the whole body
(the legs of a head-and-shoulders shot); such joints, and those below ``min_confidence``, become
OpenPose's missing joint ``0, 0, 0``.
"""

from __future__ import annotations

import importlib
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from asgcn_lightning.errors import UserError
from asgcn_lightning.runtime import native_stderr_hidden
from asgcn_lightning.skeleton.layouts import OPENPOSE25

# BlazePose landmark indices (mediapipe.solutions.pose.PoseLandmark) per BODY_25 joint; a pair is a midpoint
BLAZEPOSE_FOR_BODY25: dict[str, int | tuple[int, int]] = {
    "nose": 0, "neck": (11, 12), "right_shoulder": 12, "right_elbow": 14, "right_wrist": 16,
    "left_shoulder": 11, "left_elbow": 13, "left_wrist": 15, "mid_hip": (23, 24), "right_hip": 24,
    "right_knee": 26, "right_ankle": 28, "left_hip": 23, "left_knee": 25, "left_ankle": 27,
    "right_eye": 5, "left_eye": 2, "right_ear": 8, "left_ear": 7, "left_big_toe": 31, "left_small_toe": 31,
    "left_heel": 29, "right_big_toe": 32, "right_small_toe": 32, "right_heel": 30,
}
BLAZEPOSE_LANDMARKS = 33
# the only BlazePose landmark model inside the mediapipe wheel; the others are downloaded on first use
SHIPPED_COMPLEXITY = 1
VIDEO_EXTRA_HINT = "install the optional video extra: pip install -e '.[video]' (or make setup)"


def import_video_dependency(name: str) -> ModuleType:
    """Import a module of the ``[video]`` extra, or say how to install it instead of a bare ImportError."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise UserError(f"video input needs {name.split('.')[0]} ({error}); {VIDEO_EXTRA_HINT}") from None


def blazepose_to_body25(landmarks: np.ndarray, width: int, height: int, min_confidence: float = 0.05) -> np.ndarray:
    """BlazePose ``(33, 3)`` normalised (x, y, visibility) → BODY_25 ``(25, 3)`` pixels (x, y, confidence).

    Joints outside the ``width`` x ``height`` frame or below ``min_confidence`` are ``0, 0, 0``.
    """
    if landmarks.shape != (BLAZEPOSE_LANDMARKS, 3):
        raise ValueError(f"expected BlazePose landmarks of shape (33, 3), got {landmarks.shape}")
    points = landmarks.astype(np.float32) * np.array([width, height, 1], np.float32)
    inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
    points[~inside | (points[:, 2] < min_confidence)] = 0
    body = np.zeros((OPENPOSE25.num_joints, 3), np.float32)
    for joint, source in BLAZEPOSE_FOR_BODY25.items():
        pair = points[list(source)] if isinstance(source, tuple) else points[[source]]
        if (pair[:, 2] > 0).all():
            body[OPENPOSE25.index(joint)] = (*pair[:, :2].mean(axis=0), pair[:, 2].min())
    return body


class BlazePoseBody25:
    """Per-frame BODY_25 skeletons of the one person BlazePose tracks; use as a context manager.

    ``model_complexity`` 1 is the model shipped in the wheel and runs offline; 0 (lite) and 2
    (heavy) are downloaded by mediapipe on first use. ``static_image=True`` detects the person
    anew in every frame (photos); otherwise the detector runs only when tracking is lost, which is
    about twice as fast on video. One instance per video: tracking carries over between calls.
    """

    def __init__(self, *, model_complexity: int = SHIPPED_COMPLEXITY, static_image: bool = False,
                 min_detection_confidence: float = 0.5, min_confidence: float = 0.05) -> None:
        if model_complexity not in (0, 1, 2):
            raise UserError(f"model_complexity must be 0, 1 or 2, got {model_complexity}")
        self.cv2 = import_video_dependency("cv2")
        solutions = import_video_dependency("mediapipe.python.solutions.pose")
        self.min_confidence = min_confidence
        self._started = False
        try:
            with native_stderr_hidden():  # TFLite/absl start-up lines, written by C++ straight to stderr
                self._pose: Any = solutions.Pose(static_image_mode=static_image, model_complexity=model_complexity,
                                                 min_detection_confidence=min_detection_confidence)
        except OSError as error:
            raise UserError(f"BlazePose model_complexity={model_complexity} is not in the mediapipe wheel and "
                            f"could not be downloaded ({error}); use model_complexity={SHIPPED_COMPLEXITY}, "
                            "which runs offline") from None

    def __call__(self, frame_bgr: np.ndarray) -> np.ndarray:
        """One BGR ``uint8`` frame (as OpenCV reads it) → ``(P, 25, 3)`` people, ``P`` 0 or 1."""
        height, width = frame_bgr.shape[:2]
        with native_stderr_hidden(hide=not self._started):  # the first frame starts the graph: more such lines
            result = self._pose.process(self.cv2.cvtColor(frame_bgr, self.cv2.COLOR_BGR2RGB))
        self._started = True
        if result.pose_landmarks is None:
            return np.zeros((0, OPENPOSE25.num_joints, 3), np.float32)
        landmarks = np.array([(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark], np.float32)
        return blazepose_to_body25(landmarks, width, height, self.min_confidence)[None]

    def close(self) -> None:
        self._pose.close()

    def __enter__(self) -> BlazePoseBody25:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
