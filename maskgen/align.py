"""Five-point face alignment: a similarity transform from detected landmarks onto a template.

    crop = align_face(rgb, face.points)                          # ArcFace 112x112
    crop = align_face(rgb, face.points, ARCFACE_112.resized(96, 112))
    tmpl = FaceTemplate.from_points(my_points, 128, 128)         # any model's own template

Points are in `maskgen.detect.LANDMARK_NAMES` order: left eye, right eye, nose, left and right
mouth corners, left/right as seen in the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from maskgen.checks import check_five_points, is_number, is_whole


@dataclass(frozen=True)
class FaceTemplate:
    """Where the 5 landmarks should land in a `width` x `height` crop."""

    points: tuple[tuple[float, float], ...]
    width: int
    height: int

    @classmethod
    def from_points(cls, points, width: int, height: int) -> "FaceTemplate":
        arr = check_five_points(points, "a face template's points")
        if not (is_whole(width) and is_whole(height) and width > 0 and height > 0):  # 112.5 was cut to 112
            raise ValueError(f"template size must be whole numbers of pixels above 0, got {width!r}x{height!r}")
        return cls(tuple((float(x), float(y)) for x, y in arr), int(width), int(height))

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.points, dtype=np.float64)

    def resized(self, width: int, height: int | None = None, padding: float = 0.0) -> "FaceTemplate":
        """The same template for another crop size, with optional extra margin.

        The height sets the scale and the face stays centred horizontally, which is the insightface
        convention: ArcFace 112x112 -> 96x112 moves every point 8 px left, -> 224x224 doubles them.
        `padding` adds that fraction of the face's size as margin on every side (0.25 shrinks the
        face to 1 / 1.5 of the crop), as dlib's `get_face_chip(..., padding)` does.
        """
        height = width if height is None else height
        if not (is_whole(width) and is_whole(height) and width > 0 and height > 0):
            raise ValueError(f"template size must be whole numbers of pixels above 0, got {width!r}x{height!r}")
        if not (is_number(padding) and 0 <= padding < float("inf")):  # NaN too; True was 1, "0.1" a TypeError
            raise ValueError(f"padding must be a finite number >= 0, got {padding}")
        scale = height / self.height / (1.0 + 2.0 * padding)
        centre_src = np.array([self.width / 2.0, self.height / 2.0])
        centre_dst = np.array([width / 2.0, height / 2.0])
        pts = (self.array - centre_src) * scale + centre_dst
        return FaceTemplate.from_points(pts, width, height)


ARCFACE_112 = FaceTemplate.from_points(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    112, 112,
)
"""The standard ArcFace / insightface template (`arcface_dst`), used by most 112x112 recognisers."""


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 least-squares similarity (rotation, uniform scale, translation) taking `src` onto `dst`.

    Umeyama's closed form (IEEE PAMI 1991), the estimator insightface and scikit-image use; no
    reflection is ever produced.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("landmarks contain NaN or infinity")
    mu_src, mu_dst = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    var_src = (src_c ** 2).sum() / len(src)
    if var_src <= 1e-12:
        raise ValueError("landmarks are all at one point; cannot align")
    cov = dst_c.T @ src_c / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = (sigma * d).sum() / var_src
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_dst - scale * rot @ mu_src
    return matrix


def alignment_matrix(landmarks: np.ndarray, template: FaceTemplate = ARCFACE_112) -> np.ndarray:
    """2x3 matrix mapping image pixels to crop pixels for one face's 5 landmarks."""
    return similarity_transform(np.asarray(landmarks).reshape(5, 2), template.array)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def align_face(image: np.ndarray, landmarks: np.ndarray, template: FaceTemplate = ARCFACE_112,
               border_value: int = 0) -> np.ndarray:
    """The aligned `template.height` x `template.width` crop of one face (bilinear, black outside the
    image). The image is RGB uint8 (`check_rgb`: a grey, RGBA or float one gave a crop of its own kind,
    an empty one OpenCV's error), the landmarks 5 finite (x, y) points, `border_value` 0 to 255."""
    from maskgen.decode import check_rgb

    check_rgb(image)
    if not isinstance(template, FaceTemplate):
        raise ValueError(f"template is a FaceTemplate (e.g. ARCFACE_112, or ARCFACE_112.resized(w, h)), got "
                         f"{template!r}")
    points = check_five_points(landmarks, "a face's landmarks here")
    if not (is_whole(border_value) and 0 <= border_value <= 255):
        raise ValueError(f"border_value is a whole number from 0 to 255, got {border_value!r}")
    matrix = alignment_matrix(points, template)
    return cv2.warpAffine(image, matrix, (template.width, template.height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(border_value,) * 3)


def align_faces(image: np.ndarray, landmarks: list[np.ndarray] | np.ndarray,
                template: FaceTemplate = ARCFACE_112) -> np.ndarray:
    """Aligned crops of several faces of one image, stacked as (N, H, W, C)."""
    from maskgen.decode import check_rgb

    check_rgb(image)  # with no face as with several
    crops = [align_face(image, lm, template) for lm in landmarks]
    if not crops:
        return np.zeros((0, template.height, template.width, *image.shape[2:3]), dtype=image.dtype)
    return np.stack(crops)
