"""Does a face wear a mask already? `WornMaskCheck` reads how much of the lower face is skin.

A real mask covers the mouth and chin with cloth or paper, whose colour is rarely skin's, while the
forehead and the bridge of the nose above it stay bare. The check aligns the face by its 5 points
onto the ArcFace template and counts the pixels the skin-colour rule of Chai and Ngan (1999: Cr in
[133, 173] and Cb in [77, 127], ITU-R BT.601 as OpenCV and JPEG give it) takes for skin, among
those bright enough to carry colour (Y at least 50: in the shadows of a black mask the chroma is
noise and often falls in the box), in two regions of the aligned face:

- lower: the mouth and chin (template rows 80-108, columns 30-82), and
- upper: the better of the forehead (rows 20-40, columns 36-76) and the band between the eyes
  (rows 38-56, columns 46-66): a fringe or a cap hides one of them, rarely both.

A face wears a mask when its lower face is at most `lower_skin_max` skin while its upper face is at
least `upper_skin_min`. Where the upper face is not skin either (a black-and-white photo, a strong
colour cast, a face in deep shadow) nothing is known from colour and the check says None: the
masking job masks such a face as before. Only pixels inside the image count, and a region less than
half of which lies inside it is not read (NaN): a face cut by the image's edge below the nose is
not taken for one in a mask (its mouth is not there to be bare), and the check says None.

Measured with `bench/bench_worn_masks.py` (README, Benchmarks): the thresholds were chosen there
on one set of real masked and unmasked crops, so a set unlike it (other skin tones under other
light, skin-coloured masks, heavy make-up) may fare worse. A skin-coloured mask is not told apart.

    check = WornMaskCheck()
    verdict = check(rgb, face.points)   # WornMask(worn=True, lower=0.04, upper=0.81)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from maskgen.align import ARCFACE_112, align_face, alignment_matrix
from maskgen.checks import check_five_points, check_unit
from maskgen.decode import check_rgb

LOWER = (slice(80, 108), slice(30, 82))
UPPER = ((slice(20, 40), slice(36, 76)), (slice(38, 56), slice(46, 66)))
MIN_LUMA = 50
MIN_SEEN = 0.5  # of a region inside the image, for its share to be read


@dataclass(frozen=True)
class WornMask:
    """A face's verdict. `worn` is None where colour tells nothing: the upper face is not skin by
    colour either, or the mouth and chin (or both upper regions) lie mostly outside the image.
    `lower`: the share of the mouth and chin that is skin; `upper`: the same of the forehead or the
    band between the eyes, the larger of those mostly inside the image (NaN: neither is)."""

    worn: bool | None
    lower: float
    upper: float


@dataclass(frozen=True)
class WornMaskCheck:
    """Reads a face as wearing a mask where at most `lower_skin_max` of its mouth and chin, and at
    least `upper_skin_min` of its upper face, is skin (see the module's text)."""

    lower_skin_max: float = 0.3
    upper_skin_min: float = 0.3

    def __post_init__(self):
        check_unit("lower_skin_max", self.lower_skin_max)
        check_unit("upper_skin_min", self.upper_skin_min)

    def __call__(self, image: np.ndarray, points5) -> WornMask:
        return self.verdict(*skin_shares(image, points5))

    def verdict(self, lower: float, upper: float) -> WornMask:
        """The verdict on a face whose `skin_shares` are (lower, upper)."""
        if not upper >= self.upper_skin_min or np.isnan(lower):  # NaN: a region not in the image
            return WornMask(None, lower, upper)
        return WornMask(bool(lower <= self.lower_skin_max), lower, upper)


def skin_shares(image: np.ndarray, points5) -> tuple[float, float]:
    """(lower, upper): the share of skin-coloured pixels in the face's mouth and chin, and in its
    forehead or the band between its eyes (the larger), among the pixels of each that lie inside the
    image; NaN for a region less than half of which does (`MIN_SEEN`). `points5`: the face's 5
    points (`Face.points`)."""
    check_rgb(image)
    points = check_five_points(points5, "points5")
    crop = align_face(np.ascontiguousarray(image), points)
    inside = cv2.warpAffine(np.full(image.shape[:2], 255, np.uint8), alignment_matrix(points),
                            (ARCFACE_112.width, ARCFACE_112.height), flags=cv2.INTER_NEAREST) > 0
    ycc = cv2.cvtColor(crop, cv2.COLOR_RGB2YCrCb)
    y, cr, cb = (ycc[..., c].astype(np.int16) for c in range(3))
    skin = (cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127) & (y >= MIN_LUMA)

    def share(region) -> float:
        seen = inside[region]
        return float((skin[region] & seen).sum() / seen.sum()) if seen.mean() >= MIN_SEEN else float("nan")

    upper = [share(region) for region in UPPER]
    return share(LOWER), max((u for u in upper if not np.isnan(u)), default=float("nan"))
