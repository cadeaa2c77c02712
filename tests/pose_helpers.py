"""Helpers shared by the tests of the pose-data adapters (OpenPose, MADS, Kinetics...)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asgcn_lightning.data.store import SkeletonStore
from asgcn_lightning.data.windows import window_starts


def kicks_folder(fixtures_dir: Path) -> Path:
    """The real OpenPose output of 20 recorded soccer kicks."""
    return fixtures_dir / "openpose" / "soccer_kicks" / "json"


def expected_windows(frames: list[np.ndarray], window: int, stride: int) -> int:
    """Windows with at least one confidently detected joint: the ones a preparer keeps."""
    seen = [any((p[:, 2] >= 0.05).any() for p in people) for people in frames]
    return sum(any(seen[s:s + window]) for s in window_starts(len(frames), window, stride))


def skipped_reasons(store: SkeletonStore) -> dict[str, str]:
    return {item["file"]: item["reason"] for item in store.meta.skipped}
