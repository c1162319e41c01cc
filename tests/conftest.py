"""Shared fixtures: where the real face data lives, and one detector per test session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SHARED_DATA = Path(os.environ.get("MFR_SHARED_DATA", ROOT.parent / "shared" / "data"))


def require_shared(*parts: str) -> Path:
    """A path inside ../shared/data; missing data fails under CI=true and skips elsewhere."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = (f"real face data not found at {path}: tests read ../shared/data in place "
                   "(set MFR_SHARED_DATA to point elsewhere)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared()


@pytest.fixture(scope="session")
def detector():
    from maskgen.detect import MTCNN

    return MTCNN()


def read_rgb(path: Path) -> np.ndarray:
    from maskgen.decode import decode_image

    return decode_image(path.read_bytes())


@pytest.fixture(scope="session")
def face_photos(shared_data) -> list[Path]:
    paths = sorted((shared_data / "faces").rglob("*.jpg"))
    assert len(paths) >= 50, f"expected the 55 photos of shared/data/faces, found {len(paths)}"
    return paths


@pytest.fixture(scope="session")
def predictor():
    from maskgen.landmarks import LandmarkPredictor

    return LandmarkPredictor()


@pytest.fixture(scope="session")
def shared_faces_68(detector, predictor, face_photos):
    """(path, image, faces, landmarks68) for every photo of shared/data/faces with a face."""
    out = []
    for path in face_photos:
        image = read_rgb(path)
        faces = detector.detect(image)
        if faces:
            lm = predictor.predict(image, np.array([f.box for f in faces]))
            out.append((path, image, faces, lm))
    return out


def seed_rows():
    """The seed's landmark CSV rows: (image name, face type, (68, 2) landmarks)."""
    from maskgen.seed import read_landmark_csv

    return read_landmark_csv(require_shared("seed", "landmark", "test.csv"))
