"""Shared test fixtures: the real data files in ../shared/fixtures and tiny configs."""

from __future__ import annotations

from pathlib import Path

import pytest

import asgcn_lightning  # noqa: F401  -- first, before any test module loads torch: OpenMP threads that sleep (runtime.py)

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = REPO_ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The real recorded data; tests that need it skip in a user's clone, where it is absent."""
    if not FIXTURES_DIR.is_dir():
        pytest.skip(f"real data fixtures not found at {FIXTURES_DIR} (present in CI and dev sessions)")
    return FIXTURES_DIR


CONFIG_DIR = REPO_ROOT / "configs"


def compose_config(config_name: str, overrides: list[str], output_dir: Path, data_dir: Path):
    """Compose a config as the entry points do, with outputs and data in temporary folders."""
    from asgcn_lightning.config import compose_config as compose_as_a_command

    return compose_as_a_command(config_name, [f"paths.data_dir={data_dir}", *overrides], output_dir, REPO_ROOT)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder per test session, so the synthetic set is generated once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def compose(tmp_path: Path, data_dir: Path):
    def _compose(overrides: list[str] = (), config_name: str = "train"):
        return compose_config(config_name, list(overrides), tmp_path / "run", data_dir)
    return _compose


@pytest.fixture
def one_thread():
    """Tiny tensors gain nothing from a second thread, and OpenMP spin-waits badly on shared cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def kicks(fixtures_dir: Path) -> Path:
    """The real OpenPose JSON of the 20 soccer kicks, as a folder of videos."""
    from pose_helpers import kicks_folder

    return kicks_folder(fixtures_dir)


@pytest.fixture(scope="session")
def kick_videos(kicks: Path) -> dict:
    """Every kick's frames, read once for the session."""
    from asgcn_lightning.data.formats.openpose_json import read_openpose_folder

    return read_openpose_folder(kicks)
