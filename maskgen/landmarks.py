"""68-point landmarks with dlib's shape predictor, started from MTCNN boxes.

dlib's `shape_predictor_68_face_landmarks.dat` (in the `face-recognition-models` wheel) was trained on
boxes from dlib's own HOG detector, which are square and sit lower and tighter than MTCNN's. Giving it
MTCNN boxes as they are shifts every point, so `dlib_box_from_mtcnn` first maps a box into dlib's
convention with a linear fit (`fit_box_mapping`), made once on ../shared/data/faces:

    side = 0.7331 * w + 0.2642 * h,   centre = (cx, cy + 0.0949 * h)

where w, h, (cx, cy) are the MTCNN box's size and centre (55 faces found by both detectors; median
IoU with dlib's own box 0.688 before the mapping, 0.825 after). `tools/fit_dlib_box.py` re-runs the fit.

Point numbering is the iBUG 300-W one, 0-based: jaw 0..16, brows 17..26, nose bridge 27..30,
nostrils 31..35, eyes 36..47, mouth 48..67.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from maskgen.checks import is_number
from maskgen.decode import check_rgb
from maskgen.runtime import MadeAgainWhereUnpickled

JAW = range(0, 17)
NOSE_BRIDGE = range(27, 31)
NOSE_TIP = 30
CHIN = 8
LEFT_EYE = range(36, 42)   # image-left eye (the subject's right)
RIGHT_EYE = range(42, 48)
EYES = range(36, 48)
MOUTH = range(48, 68)


def _mirror_permutation() -> tuple[int, ...]:
    pairs = [(i, 16 - i) for i in range(17)]
    pairs += [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22), (27, 27), (28, 28), (29, 29), (30, 30),
              (31, 35), (32, 34), (33, 33), (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
              (48, 54), (49, 53), (50, 52), (51, 51), (55, 59), (56, 58), (57, 57),
              (60, 64), (61, 63), (62, 62), (65, 67), (66, 66)]
    perm = [0] * 68
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


MIRROR_68 = _mirror_permutation()
"""Row order of the 68 points of a horizontally mirrored face: `mirrored[i] = flipped[MIRROR_68[i]]`."""


def mirror_landmarks(landmarks68: np.ndarray, width: int) -> np.ndarray:
    """The 68 points of the same face in the image flipped left-right (`image[:, ::-1]`), `width`
    that image's width in pixels (a width of 0, or NaN points, gave numbers all the same)."""
    from maskgen.checks import is_whole
    from maskgen.facetype import face_landmarks

    if not is_whole(width) or width < 1:
        raise ValueError(f"width is the image's width in whole pixels, at least 1, got {width!r}")
    lm = face_landmarks(landmarks68, "a face is mirrored")
    flipped = np.stack([width - 1 - lm[:, 0], lm[:, 1]], axis=1)
    return flipped[list(MIRROR_68)]


@dataclass(frozen=True)
class BoxMapping:
    """Square box from a detector box: side = side_w*w + side_h*h, centre = (cx + dx*w, cy + dy*h)."""

    side_w: float
    side_h: float
    dx: float
    dy: float

    def apply(self, boxes: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        side = self.side_w * w + self.side_h * h
        cx = (boxes[:, 0] + boxes[:, 2]) / 2 + self.dx * w
        cy = (boxes[:, 1] + boxes[:, 3]) / 2 + self.dy * h
        return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


MTCNN_TO_DLIB = BoxMapping(side_w=0.7331, side_h=0.2642, dx=0.0, dy=0.0949)


def fit_box_mapping(detector_boxes: np.ndarray, dlib_boxes: np.ndarray) -> BoxMapping:
    """Least-squares side from (w, h), median vertical offset; no horizontal offset (faces are symmetric)."""
    a = np.asarray(detector_boxes, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(dlib_boxes, dtype=np.float64).reshape(-1, 4)
    if len(a) != len(b) or len(a) < 3:
        raise ValueError("need at least 3 matched pairs of boxes")
    w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    side = (b[:, 2] - b[:, 0] + b[:, 3] - b[:, 1]) / 2
    side_w, side_h = np.linalg.lstsq(np.stack([w, h], axis=1), side, rcond=None)[0]
    dy = np.median(((b[:, 1] + b[:, 3]) - (a[:, 1] + a[:, 3])) / 2 / h)
    return BoxMapping(float(side_w), float(side_h), 0.0, float(dy))


def dlib_box_from_mtcnn(boxes: np.ndarray, mapping: BoxMapping = MTCNN_TO_DLIB) -> np.ndarray:
    return mapping.apply(boxes)


def model_path(name: str = "shape_predictor_68_face_landmarks.dat") -> Path:
    """A model file of the `face-recognition-models` wheel (found without importing anything)."""
    try:
        dist = metadata.distribution("face-recognition-models")
    except metadata.PackageNotFoundError:
        raise RuntimeError("the `face-recognition-models` package (dlib's model files) is not installed") from None
    path = Path(dist.locate_file(f"face_recognition_models/models/{name}"))
    if not path.is_file():
        raise RuntimeError(f"face-recognition-models {dist.version} has no {name} at {path}")
    return path


_SHAPE_PREDICTORS: dict = {}  # path -> dlib.shape_predictor, read once per process


def load_shape_predictor(path: Path):
    """dlib's shape predictor from `path`, read once per process and shared by every LandmarkPredictor
    of it: the 68-point model is 100 MB and takes about a second to read, which every job's workers,
    every Augmenter and every FaceFinder paid again. Shared read-only: predicting does not change it.
    The local pool's forkserver reads it once (maskgen.preload), and its forked workers share the pages."""
    import dlib

    key = str(Path(path).resolve())
    if key not in _SHAPE_PREDICTORS:
        _SHAPE_PREDICTORS[key] = dlib.shape_predictor(key)
    return _SHAPE_PREDICTORS[key]


LEVEL_ABOVE_DEGREES = 20.0
"""Faces whose eye line is tilted this much or more are turned upright for the landmark predictor."""
PAST_EDGE_MAX_SIDE = 2048
"""px: the widest neighbourhood a face reaching past the image's edge is predicted in (wider: scaled down)."""
CUT_FACE_SHARE = 0.1
"""A face whose detector box reaches past an image edge by more than this share of its width (left,
right) or height (top, bottom) is cut there: the landmark predictor sees that edge continued."""


def cut_edges(box, shape) -> tuple[bool, bool, bool, bool]:
    """(top, bottom, left, right): the image edges that cut the face of this detector box (x1, y1, x2,
    y2; the whole box, `Face.landmark_box`) by more than `CUT_FACE_SHARE` of its side. Only those are
    continued for the predictor: where dlib's square (lower than the box) merely passes the bottom
    edge below a chin the image holds, the bottom rows continued would read as a longer face."""
    x1, y1, x2, y2 = (float(v) for v in box)
    h, w = shape[:2]
    width, height = x2 - x1, y2 - y1
    return (-y1 > CUT_FACE_SHARE * height, y2 - (h - 1) > CUT_FACE_SHARE * height,
            -x1 > CUT_FACE_SHARE * width, x2 - (w - 1) > CUT_FACE_SHARE * width)


def eye_roll_degrees(points5) -> float:
    """The angle of the line from the first eye point to the second (image coordinates, y down):
    0 for level eyes, positive when the second eye is lower."""
    pts = np.asarray(points5, dtype=np.float64).reshape(5, 2)
    dx, dy = pts[1] - pts[0]
    return float(np.degrees(np.arctan2(dy, dx)))


def faces_as_boxes(faces, points5=None) -> tuple:
    """(boxes, points5) for `LandmarkPredictor.predict` given the detector's `Face`s (one or a list;
    passing one failed with "float() argument must be ... not 'Face'"): their `landmark_box`es (a cut
    face's whole box) and their 5 points where `points5` is None. Anything else passes as it is."""
    from maskgen.detect import Face, landmark_boxes

    if isinstance(faces, Face):
        faces = [faces]
    elif isinstance(faces, types.GeneratorType) or (isinstance(faces, np.ndarray) and faces.dtype == object):
        faces = list(faces)  # (anything else, a DataFrame or None among them, reaches checked_boxes as it is)
    if not isinstance(faces, (list, tuple)) or not faces or not all(isinstance(f, Face) for f in faces):
        return faces, points5
    if points5 is None:
        with_points = [len(f.landmarks) == 5 for f in faces]
        if any(with_points) and not all(with_points):  # dropped for all, a tilted face was not levelled
            raise ValueError(f"face(s) {[i for i, w in enumerate(with_points) if not w]} have no 5 points and the "
                             "others do: give every face its points, or points5 (N, 5, 2)")
        if all(with_points):
            points5 = np.stack([f.points for f in faces]).astype(np.float64)
    return landmark_boxes(faces), points5


def checked_boxes(boxes, points5, shape) -> tuple[np.ndarray, np.ndarray | None]:
    """(boxes (N, 4), points5 (N, 5, 2) or None) as float64, refused (ValueError, naming the faces) where
    dlib would answer nonsense without a word: a NaN box ("cannot convert float NaN to integer"), an
    empty or inverted one or one wholly off the image (68 points piled on one pixel, or 7e10 px away),
    5 points that are not one set per box or not finite (the levelling skipped)."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes are (N, 4): x1, y1, x2, y2 per face; got shape {arr.shape}")
    h, w = shape[:2]
    for what, bad in (("NaN or infinite", ~np.isfinite(arr).all(axis=1)),
                      ("empty or inverted (x2 <= x1 or y2 <= y1)", (arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1])),
                      (f"wholly outside the {w}x{h} image",
                       (arr[:, 2] <= 0) | (arr[:, 3] <= 0) | (arr[:, 0] >= w) | (arr[:, 1] >= h))):
        if bad.any():
            raise ValueError(f"box(es) {np.flatnonzero(bad).tolist()} are {what}: no landmarks can be found in them")
    if points5 is not None:
        pts = np.asarray(points5, dtype=np.float64)
        if pts.shape != (len(arr), 5, 2):
            raise ValueError(f"points5 are one set of 5 (x, y) points per box, ({len(arr)}, 5, 2); got shape {pts.shape}")
        if not np.isfinite(pts).all():
            raise ValueError(f"points5 of face(s) {np.flatnonzero(~np.isfinite(pts).all(axis=(1, 2))).tolist()} are "
                             "NaN or infinite")
        points5 = pts
    return arr, points5


class LandmarkPredictor(MadeAgainWhereUnpickled):
    """dlib's 68-point shape predictor, fed with detector boxes mapped into dlib's convention."""

    _carried = ("mapping",)  # settable after it is made: pickled as it is

    def __init__(self, path: Path | None = None, mapping: BoxMapping = MTCNN_TO_DLIB):
        import dlib

        self._dlib = dlib
        self.path = Path(path) if path else model_path()
        self._predictor = load_shape_predictor(self.path)
        self.mapping = mapping

    @property
    def version(self) -> str:
        return f"dlib-{self._dlib.__version__}:{self.path.name}"

    def predict(self, image: np.ndarray, boxes, points5: np.ndarray | None = None, turns=None) -> np.ndarray:
        """(N, 68, 2) float32 points for N detector boxes (x1, y1, x2, y2) in an RGB uint8 image, or
        for the detector's `Face`s (one, or a list): their `landmark_box`es and, unless `points5` is
        given, their 5 points, what the augment job gives it.

        `points5` (N, 5, 2), the detector's points (eyes first): a face whose eye line is tilted by
        `LEVEL_ABOVE_DEGREES` or more is turned upright around its box's centre before the predictor
        sees it, and its points turned back. dlib's predictor only knows upright faces: at 40 to 60
        degrees its points fell on the cheek and neck (mean error 0.84 to 0.95 of the eye distance),
        so masks were drawn there.

        `turns` (one per box, default none): the quarter turns counter-clockwise that make a face
        upright (`maskgen.augment.face_turns` of a face `FaceFinder` found turned): such a face is
        predicted in the image so turned, its box and points with it, and its points turned back.
        (The box-to-square mapping is dlib's for upright faces: a face upside down had its square
        pushed over its forehead, and the mask drawn across an eye.)"""
        check_rgb(image)
        boxes, points5 = checked_boxes(*faces_as_boxes(boxes, points5), image.shape)
        if turns is not None and (np.ndim(turns) != 1 or not all(
                is_number(k) and float(k).is_integer() and -3 <= k <= 3 for k in turns)):
            # (90, degrees as `source` names them, was a half turn; 1.5 one turn; a lone 0 not iterable)
            raise ValueError(f"turns are quarter turns, one whole number from -3 to 3 per box, got {turns!r}")
        turns = [0] * len(boxes) if turns is None else [int(k) % 4 for k in turns]
        if len(turns) != len(boxes):
            raise ValueError(f"turns: one per box, got {len(turns)} for {len(boxes)} boxes")
        squares = self.mapping.apply(boxes)
        image = np.ascontiguousarray(image)
        out = np.empty((len(squares), 68, 2), dtype=np.float32)
        for k in sorted(set(turns) - {0}):  # the image turned once for all the faces turned alike
            ours = [i for i, t in enumerate(turns) if t == k]
            out[ours] = self._predict_turned(image, boxes[ours], None if points5 is None else points5[ours], k)
        for i, square in enumerate(squares):
            if turns[i]:
                continue
            roll = eye_roll_degrees(points5[i]) if points5 is not None else 0.0
            if abs(roll) >= LEVEL_ABOVE_DEGREES:
                out[i] = self._predict_levelled(image, square, roll)
            else:
                out[i] = self._predict_square(image, square, cut_edges(boxes[i], image.shape))
        return out

    def _predict_turned(self, image: np.ndarray, boxes: np.ndarray, points5, turns: int) -> np.ndarray:
        """(N, 68, 2): the points of faces (`boxes` (N, 4), `points5` (N, 5, 2) or None) predicted in the
        image turned `turns` quarter turns counter-clockwise (where they are upright), turned back."""
        from maskgen.finder import turn_box, turn_points, turn_points_back

        h, w = image.shape[:2]
        upright = np.ascontiguousarray(np.rot90(image, turns))
        pts = None if points5 is None else np.stack([turn_points(p, turns, w, h) for p in points5])
        found = self.predict(upright, np.array([turn_box(b, turns, w, h) for b in boxes]), pts)
        return turn_points_back(found.reshape(-1, 2), turns, w, h).reshape(-1, 68, 2).astype(np.float32)

    def _predict_square(self, image: np.ndarray, square, cut=(False, False, False, False)) -> np.ndarray:
        """dlib's points in the square (x1, y1, x2, y2); where the face is `cut` (`cut_edges`) and the
        square passes that edge, predicted with the edge continued (`_predict_past_edge`)."""
        x1, y1, x2, y2 = (float(v) for v in square)
        # dlib rectangles are inclusive integer corners
        rect = (int(round(x1)), int(round(y1)), int(round(x2)) - 1, int(round(y2)) - 1)
        h, w = image.shape[:2]
        past = (rect[1] < 0, rect[3] >= h, rect[0] < 0, rect[2] >= w)  # top, bottom, left, right
        if any(p and c for p, c in zip(past, cut)):
            return self._predict_past_edge(image, rect, cut)
        return self._points(image, rect)

    def _points(self, image: np.ndarray, rect) -> np.ndarray:
        """dlib's 68 points in `rect` (left, top, right, bottom, inclusive whole pixels)."""
        return np.array([(p.x, p.y) for p in self._predictor(image, self._dlib.rectangle(*rect)).parts()],
                        dtype=np.float32)

    def _predict_past_edge(self, image: np.ndarray, rect, cut) -> np.ndarray:
        """The points of a face the image's edge cuts: predicted in its neighbourhood with the pixels of
        the edges that cut it (`cut`: top, bottom, left, right) continued outwards, black past the
        others (as dlib reads any pixel off the image). dlib reads pixels off the image as
        black, which (with the detector's clipped box) pressed the points of a face cut by the edge
        inside it: a quarter or 35 % of its width cut, median error 0.10 or 0.20 of the eye
        distance, 3 or 17 % read as profiles; from the whole box with the edge continued, 0.05 or
        0.07, 1 % (bench/bench_cut_faces.py). A neighbourhood wider than `PAST_EDGE_MAX_SIDE` is
        predicted scaled down (dlib's points follow the rectangle's scale): a regressed box far past
        a large crop would otherwise make a padded copy of gigabytes."""
        import cv2

        h, w = image.shape[:2]
        left, top, right, bottom = rect
        margin = (max(right - left, bottom - top) + 1) // 2
        ox, oy, ex, ey = left - margin, top - margin, right + 1 + margin, bottom + 1 + margin  # [ox, ex) x [oy, ey)
        inside = image[max(oy, 0):min(ey, h), max(ox, 0):min(ex, w)]
        if inside.size == 0:  # nothing of the image near it: nothing to continue
            return self._points(image, rect)
        pad = [max(0, -oy), max(0, ey - h), max(0, -ox), max(0, ex - w)]  # top, bottom, left, right
        scale = min(1.0, PAST_EDGE_MAX_SIDE / max(ex - ox, ey - oy))
        if scale < 1.0:
            size = (max(1, round(inside.shape[1] * scale)), max(1, round(inside.shape[0] * scale)))
            inside = cv2.resize(inside, size, interpolation=cv2.INTER_AREA)
            pad = [round(p * scale) for p in pad]
        continued = cv2.copyMakeBorder(inside, *[p if c else 0 for p, c in zip(pad, cut)], cv2.BORDER_REPLICATE)
        around = np.ascontiguousarray(cv2.copyMakeBorder(continued, *[0 if c else p for p, c in zip(pad, cut)],
                                                         cv2.BORDER_CONSTANT, value=(0, 0, 0)))
        # whole-pixel moves at full scale: dlib's rectangle is the same one; scaled, pixel centres map
        # as (v + 0.5) * scale - 0.5 (INTER_AREA's)
        shifted = [round((v - o + 0.5) * scale - 0.5) for v, o in zip(rect, (ox, oy, ox, oy))]
        back = (self._points(around, shifted) + np.float32(0.5)) / np.float32(scale) - np.float32(0.5)
        return back + np.array([ox, oy], dtype=np.float32)

    def _predict_levelled(self, image: np.ndarray, square, roll: float) -> np.ndarray:
        """The points of a face tilted by `roll` degrees: its neighbourhood (twice the box) turned so
        that the eyes are level, predicted there, and mapped back."""
        import cv2

        x1, y1, x2, y2 = (float(v) for v in square)
        side = max(x2 - x1, y2 - y1)
        centre = ((x1 + x2) / 2, (y1 + y2) / 2)
        to_level = cv2.getRotationMatrix2D(centre, roll, 1.0)
        to_level[:, 2] += np.array([side, side]) - np.asarray(centre)  # the centre lands at (side, side)
        size = int(np.ceil(2 * side))
        levelled = cv2.warpAffine(image, to_level, (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
        half = (x2 - x1) / 2, (y2 - y1) / 2
        pts = self._predict_square(levelled, (side - half[0], side - half[1], side + half[0], side + half[1]))
        back = cv2.invertAffineTransform(to_level)
        return (pts @ back[:, :2].T + back[:, 2]).astype(np.float32)
