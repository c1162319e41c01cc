"""Mask-aware matching without retraining: the modes, and score fusion across models.

A mode says how faces are embedded before probes (masked) meet the gallery (unmasked):

    plain           every face as it is
    masked-gallery  the gallery face gets the synthetic mask the probes wear (drawn on the unmasked
                    photo, aligned with the unmasked detection), so both sides show the same region
    flip            each face and its mirror image embedded and averaged (both sides)
    upper-face      everything below the mask line of the model's aligned crop is filled with grey
                    (both sides), so the model sees only the eyes, brows and forehead region

`fuse_matrices` averages several models' probe x gallery score matrices after z-normalising each on
its own impostor (non-mated) scores, so models with different score scales (cosine similarity,
negated Euclidean distance) weigh the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskgen.checks import check_flag, is_whole

UPPER_FILL = 128  # mid-grey: no edge, no colour, the same for every model and face


@dataclass(frozen=True)
class MatchingMode:
    name: str
    masked_gallery: bool = False
    flip: bool = False
    region: str = "full"  # or "upper"

    def __post_init__(self):
        for flag in ("masked_gallery", "flip"):  # ("no" was a true flip)
            check_flag(flag, getattr(self, flag))
        if self.region not in ("full", "upper"):
            raise ValueError(f"region must be 'full' or 'upper', got {self.region!r}")


MODES = {
    "plain": MatchingMode("plain"),
    "masked-gallery": MatchingMode("masked-gallery", masked_gallery=True),
    "flip": MatchingMode("flip", flip=True),
    "upper-face": MatchingMode("upper-face", region="upper"),
}


def mode_from_name(name: str) -> MatchingMode:
    try:
        return MODES[name]
    except (KeyError, TypeError):  # (a list was "unhashable type")
        raise ValueError(f"unknown matching mode {name!r}; modes: {', '.join(MODES)}") from None


def mask_line(template_points, height: int) -> int:
    """Row of an aligned crop where a mask's top edge runs: 40 % of the way from the eye line down to
    the nose tip, i.e. over the nose bridge, where the seed's polygon starts (landmark 28)."""
    if not is_whole(height) or height < 1:  # (0 gave row 0, outside the [1, height] it clips to)
        raise ValueError(f"height is the crop's height in whole pixels, at least 1, got {height!r}")
    pts = np.asarray(template_points, dtype=np.float64).reshape(5, 2)
    eyes_y, nose_y = pts[:2, 1].mean(), pts[2, 1]
    return int(np.clip(round(eyes_y + 0.4 * (nose_y - eyes_y)), 1, height))


def keep_upper_face(crops: np.ndarray, template_points) -> np.ndarray:
    """Aligned crops (N, h, w, 3) with every row from the mask line down filled with grey."""
    crops = np.asarray(crops)
    if crops.ndim != 4:
        raise ValueError(f"expected crops of shape (N, h, w, 3), got {crops.shape}")
    out = crops.copy()
    out[:, mask_line(template_points, crops.shape[1]):] = UPPER_FILL
    return out


class ZNormUnmeasurable(ValueError):
    """Too few impostor scores, or none apart, to z-normalise by: a fusion has no scores to average."""


ZNORM_NEEDS = "z-normalisation needs at least two impostor scores with some spread"


def znorm_on_impostors(matrix: np.ndarray, mated: np.ndarray) -> np.ndarray:
    """Scores minus the mean of the impostor (non-mated) scores, over their standard deviation.
    Scores must be finite and flags True/False (or 1/0): a NaN impostor score was refused as too few
    impostors, a NaN mated one came back NaN, and a flag of 2 was read as mated."""
    from recog.metrics import check_flags

    matrix = np.asarray(matrix, dtype=np.float64)
    if np.shape(mated) != matrix.shape:
        raise ValueError(f"scores {matrix.shape} and mated flags {np.shape(mated)} differ in shape")
    mated = check_flags(mated, "mated").reshape(matrix.shape)
    if not np.isfinite(matrix).all():
        raise ValueError("scores contain NaN or infinity")
    impostors = matrix[~mated]
    std = impostors.std() if impostors.size >= 2 else 0.0
    if not np.isfinite(std) or std == 0:
        raise ZNormUnmeasurable(f"{ZNORM_NEEDS} (there are {impostors.size})")
    return (matrix - impostors.mean()) / std


def fuse_matrices(matrices: list[np.ndarray], mated: np.ndarray) -> np.ndarray:
    """The mean of several models' z-normalised score matrices, each of scores that are higher for
    faces more alike (a Euclidean model's distances negated). `matrices`: a list of (P, G) arrays,
    or one (k, P, G) array."""
    if isinstance(matrices, np.ndarray):  # (was numpy's "truth value of an array is ambiguous")
        if matrices.ndim != 3:
            raise ValueError(f"matrices are a list of (probes, gallery) score matrices or one (k, probes, gallery) "
                             f"array, got an array of shape {matrices.shape}")
    matrices = list(matrices)  # (a generator too)
    if not matrices:
        raise ValueError("nothing to fuse")
    return np.mean([znorm_on_impostors(m, mated) for m in matrices], axis=0).astype(np.float32)
