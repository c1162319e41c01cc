"""The seed's face type, estimated: frontal or profile (from the 68 landmarks), clear or blurred (from pixels).

The seed labels each face `A_B`: A = 0 frontal / 1 profile, B = 0 clear / 1 blurred, and picks its mask
polygon and edge smoothing from it. Without its hand labels we estimate both:

- **yaw** from where the nose tip (30) sits between the jaw ends (0 and 16), after undoing the
  in-plane roll along the eye line: ratio r = (x30 - x0) / (x16 - x0) is 0.5 for a frontal face and
  leaves [0, 1] when the nose passes the jaw's outline; yaw = asin(clip(2r - 1, -1, 1)) in degrees,
  negative when the face turns towards the image's left. `|yaw| >= profile_yaw` (default 45) is profile.
- **blur** on the face aligned to 112x112 (so every face is judged at the same scale), its central
  88x80 grey region: for each axis, the share of the gradient along that axis that survives a 9-px
  smoothing across it (a variant of Crete-Roffet et al. 2007, "The blur effect"); the larger of the
  two, in [0, 1]. Sharp faces score about 0.45-0.70, faces blurred by a Gaussian of sigma 1.5 px
  about 0.81 (measured on ../shared/data/faces). `blur >= blur_threshold` (default 0.75) is blurred.

These reproduce the seed's three labelled samples (0_0, 1_0, 0_1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from maskgen.align import ARCFACE_112, align_face
from maskgen.checks import is_number


@dataclass(frozen=True)
class FaceTypeOptions:
    profile_yaw: float = 45.0
    blur_threshold: float = 0.75

    def __post_init__(self):
        for name in ("profile_yaw", "blur_threshold"):  # (True was 1 degree, "45" a TypeError)
            if not is_number(getattr(self, name)):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}")
        if not 0 < self.profile_yaw <= 90:
            raise ValueError(f"profile_yaw must be in (0, 90] degrees, got {self.profile_yaw}")
        if not 0 < self.blur_threshold < 1:
            raise ValueError(f"blur_threshold must be in (0, 1), got {self.blur_threshold}")


@dataclass(frozen=True)
class FaceType:
    profile: bool
    blurred: bool
    yaw: float    # degrees, negative = turned towards the image's left
    blur: float   # 0 sharp .. 1 flat

    @property
    def code(self) -> str:
        """The seed's `face_type` string."""
        return f"{int(self.profile)}_{int(self.blurred)}"

    @classmethod
    def from_code(cls, code: str, yaw: float = float("nan"), blur: float = float("nan")) -> "FaceType":
        try:
            a, b = (int(v) for v in str(code).strip().split("_"))
        except ValueError:
            raise ValueError(f"face_type must look like '0_1', got {code!r}") from None
        if a not in (0, 1) or b not in (0, 1):
            raise ValueError(f"face_type must look like '0_1', got {code!r}")
        return cls(bool(a), bool(b), yaw, blur)


def face_landmarks(landmarks68, use: str = "a mask is drawn") -> np.ndarray:
    """A face's 68 landmarks as (68, 2) float64, refused (ValueError) unless they are 68 finite
    points: a NaN or infinite one painted a band to the image's corner in 30 s (seed) or nothing at
    all (realistic styles), and either way the face was counted masked. `use`: what needs them, for
    the message ("a mask is drawn", "a face type is read")."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    if lm.shape != (68, 2):
        if lm.size != 136:
            raise ValueError(f"{use} from a face's 68 landmarks, (68, 2) (maskgen.landmarks."
                             f"LandmarkPredictor); got shape {lm.shape}"
                             + (": the detector's 5 points are not enough" if lm.size == 10 else ""))
        lm = lm.reshape(68, 2)
    if not np.isfinite(lm).all():  # one reduction: the check is per face, on every face of a job
        bad = np.flatnonzero(~np.isfinite(lm).all(axis=1))
        raise ValueError(f"landmark(s) {bad.tolist()} are NaN or infinite: {use} from finite points only")
    return lm


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """The 5 alignment points (eye centres, nose tip, mouth corners) from 68 landmarks."""
    lm = np.asarray(landmarks68, dtype=np.float64).reshape(68, 2)
    return np.stack([lm[36:42].mean(axis=0), lm[42:48].mean(axis=0), lm[30], lm[48], lm[54]])


def yaw_degrees(landmarks68: np.ndarray) -> float:
    lm = np.asarray(landmarks68, dtype=np.float64).reshape(68, 2)
    eye_vec = lm[42:48].mean(axis=0) - lm[36:42].mean(axis=0)
    angle = np.arctan2(eye_vec[1], eye_vec[0])
    c, s = np.cos(-angle), np.sin(-angle)
    x = lm[:, 0] * c - lm[:, 1] * s  # x after undoing the roll
    span = x[16] - x[0]
    if abs(span) < 1e-6:
        return 0.0
    ratio = (x[30] - x[0]) / span
    return float(np.degrees(np.arcsin(np.clip(2 * ratio - 1, -1, 1))))


def given_type(face_type: FaceType | str, landmarks68: np.ndarray) -> FaceType:
    """A face type given by its seed code (a manifest's or the seed CSV's `face_type`: "1_0", or
    `FaceType.from_code` of it), with the yaw its code does not say estimated from the landmarks:
    which way a profile is turned decides its mask's side (`maskgen.masks`), and a NaN yaw had every
    given profile masked as turned to the image's right."""
    if isinstance(face_type, str):  # a record's code passed on as it is (was: "'str' object has no attribute")
        face_type = FaceType.from_code(face_type)
    elif not isinstance(face_type, FaceType):
        raise ValueError(f"face_type is a FaceType or its seed code ('0_1'), got {face_type!r}")
    if face_type.yaw is not None and math.isfinite(face_type.yaw):  # None: a record's NaN yaw read back
        return face_type
    return replace(face_type, yaw=yaw_degrees(landmarks68))


def blur_score(gray: np.ndarray, smoothing: int = 9) -> float:
    """Share of gradient that survives smoothing across its direction (see module docstring)."""
    g = np.asarray(gray, dtype=np.float32)
    scores = []
    for axis in (0, 1):
        across = cv2.blur(g, (smoothing, 1) if axis == 0 else (1, smoothing))
        d = np.abs(np.diff(g, axis=axis))
        d_smooth = np.abs(np.diff(across, axis=axis))
        total = d.sum()
        if total <= 0:
            return 1.0
        lost = np.maximum(0.0, d - d_smooth).sum()
        scores.append((total - lost) / total)
    return float(max(scores))


def face_blur(image: np.ndarray, landmarks68: np.ndarray) -> float:
    crop = align_face(image, five_points(landmarks68), ARCFACE_112)
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return blur_score(gray[16:104, 16:96])


def classify_face(image: np.ndarray, landmarks68: np.ndarray,
                  options: FaceTypeOptions = FaceTypeOptions()) -> FaceType:
    from maskgen.decode import check_rgb

    check_rgb(image)  # a grey image failed inside OpenCV ("Bad number of channels"), a float one passed
    if not isinstance(options, FaceTypeOptions):  # a dict failed on its first attribute
        raise ValueError(f"options are a FaceTypeOptions, got {type(options).__name__}")
    landmarks68 = face_landmarks(landmarks68, "a face type is read")  # 5 points were numpy's reshape error
    yaw = yaw_degrees(landmarks68)
    blur = face_blur(image, landmarks68)
    return FaceType(abs(yaw) >= options.profile_yaw, blur >= options.blur_threshold, yaw, blur)
