"""Shared fixtures. Real-data tests read the data root (MASKEDGE_DATA_ROOT); a missing
data root is an error with the fix, never a silent skip."""

from __future__ import annotations

import tarfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from edge.paths import data_root as _data_root

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    return _data_root()


@lru_cache(maxsize=1)
def _lfw_tar(root: str) -> tarfile.TarFile:
    return tarfile.open(Path(root) / "lfw" / "lfw-a-gray.tgz")


def lfw_bytes(root: Path, name: str, number: int) -> bytes:
    """JPEG bytes of one LFW image, read from the tgz as it is."""
    member = f"lfw/{name}/{name}_{number:04d}.jpg"
    return _lfw_tar(str(root)).extractfile(member).read()


@pytest.fixture(scope="session")
def lfw_photo(data_root, tmp_path_factory):
    """Write an LFW image to a temporary .jpg and return its path."""
    folder = tmp_path_factory.mktemp("lfw")

    def _photo(name: str, number: int) -> Path:
        path = folder / f"{name}_{number:04d}.jpg"
        if not path.exists():
            path.write_bytes(lfw_bytes(data_root, name, number))
        return path

    return _photo


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for the module (use with ``pytest.mark.usefixtures``).

    Two OpenMP threads on a busy 2-core runner spin against each other: a tiny-model
    forward measured 0.75 s with 2 threads vs 0.026 s with 1.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def calibration(data_root):
    """A small real calibration split (64 faces, 8 held back), built once and cached on disk."""
    from quantize.calibration import CalibrationConfig, load_calibration

    return load_calibration(CalibrationConfig(size=64, check=8), progress=False)


@pytest.fixture(scope="module")
def tiny(calibration):
    """A tiny random MobileFaceNet (PReLU) student, BatchNorm statistics measured on real faces:
    the quantization and QAT tests' model (one per test module)."""
    from quantize.student import random_student

    return random_student("mobilefacenet_tiny", calibration.calibration_faces(), name="tiny")
