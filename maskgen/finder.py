"""Finding faces where plain detection fails: tight crops and masked faces.

    finder = FaceFinder(FinderOptions(crop_mode="auto"))
    faces = finder.find(rgb)        # each Face says which path found it in `face.source`

Crop mode (for datasets of tight face crops, such as the seed's c-RMFRD at 100-160 px): the image is
padded on every side (`pad` x its size, border replicated or reflected) so the face no longer fills
it, detected again, and coordinates are mapped back. If that still finds nothing, O-Net alone is run
on the whole image as the face box (`onet-whole-image`), and if that is unsure too, the second look
(input kinds `masked` and `crops`): YuNet at a low score threshold over several borders and MTCNN
over a wide one, keeping the best face that fills a good part of the crop and has a face's 5-point
geometry (`source` ends in `+second-look`, so users can filter them). `auto` takes the crop path when a face
would fill the image: when the plain pass finds a face covering at least `auto_fill` of the image, or
finds nothing in an image whose short side is at most `auto_max_side` px.

Masked faces: MTCNN's nose and mouth points are guesses under a mask. `plausible_five_points`
checks the 5-point geometry; `alignment_points` replaces implausible points by ones derived from
the eyes alone (a similarity fixed by the two eyes places the template's nose and mouth), with the
eyes located by maskgen.eyes.EyeLocator.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from maskgen.align import ARCFACE_112, similarity_transform, transform_points
from maskgen.checks import check_five_points, check_flag, check_unit, is_number, is_whole
from maskgen.detect import Face, clipped_face

DETECTORS = ("mtcnn", "yunet", "both")
CROP_MODES = ("auto", "on", "off")
ALIGNMENTS = ("five-point", "eyes", "auto")
PAD_BORDERS = {"replicate": cv2.BORDER_REPLICATE, "reflect": cv2.BORDER_REFLECT_101, "black": cv2.BORDER_CONSTANT}


@dataclass(frozen=True)
class FinderOptions:
    """Defaults follow bench/bench_masked_detection.py: MTCNN re-finds more masked faces in whole
    photos (91-95 % against YuNet's 88 %), YuNet more tight crops of real masked faces (105 of 108
    plainly, 104 padded with a black border, against MTCNN's 97 and 102).

    detector: the plain pass (`mtcnn`, `yunet`, or `both` merged); crop_detector: the detector of the padded pass;
    crop_mode: `auto`, `on` (always the crop path) or `off`; pad: border added on each side as a
    fraction of the image's longer side; pad_border: `replicate`, `reflect` or `black`;
    auto_fill / auto_max_side: when `auto` takes the crop path; onet_fallback: O-Net on the whole
    image when the padded pass finds nothing, kept when its face probability is at least
    onet_min_score; second_look: when the crop path still finds nothing, look again more
    permissively (see `FaceFinder._second_look`), keeping a face whose score is at least
    second_look_min_score, whose box covers at least second_look_min_cover of the crop and whose
    5 points are plausible (`plausible_five_points`); turned: faces may be turned a quarter or a half
    turn (scans, photos whose camera recorded no orientation): see `FaceFinder.find_batch`."""

    detector: str = "mtcnn"
    crop_detector: str = "yunet"
    crop_mode: str = "auto"
    pad: float = 0.35
    pad_border: str = "black"
    auto_fill: float = 0.45
    auto_max_side: int = 320
    onet_fallback: bool = True
    onet_min_score: float = 0.8
    second_look: bool = False
    second_look_min_score: float = 0.3
    second_look_min_cover: float = 0.3
    turned: bool = False

    @classmethod
    def for_inputs(cls, kind: str, **overrides) -> "FinderOptions":
        """Presets by what the images are: `photos` (the defaults), `masked` (photos of people in
        masks: both detectors, merged; re-finds 96-98 % of synthetically masked faces against MTCNN's
        91-95 %), `crops` (tight face crops: always the crop path). `masked` and `crops` take the
        second look, since a face is expected in every image (on ../shared/data/masked_crops it
        raises the real masked crops found from 93.9 % to 98.8 %); `photos` does not (on 204 face-free
        80-200 px patches of shared photos it made 2 false faces, none without). Overrides given as
        None keep the preset's value (an option left unset on the command line)."""
        presets = {"photos": {}, "masked": {"detector": "both", "second_look": True},
                   "crops": {"crop_mode": "on", "second_look": True}}
        if kind not in presets:
            raise ValueError(f"input kind must be one of {tuple(presets)}, got {kind!r}")
        return cls(**{**presets[kind], **{k: v for k, v in overrides.items() if v is not None}})

    def __post_init__(self):
        for name, allowed in (("detector", DETECTORS), ("crop_detector", DETECTORS[:2])):
            if not isinstance(getattr(self, name), str) or getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {self.crop_mode!r}")
        if not isinstance(self.pad_border, str) or self.pad_border not in PAD_BORDERS:  # (a list: unhashable)
            raise ValueError(f"pad_border must be one of {tuple(PAD_BORDERS)}")
        if not (is_number(self.pad) and 0 < self.pad <= 2):  # True was a pad of 1, "0.3" a TypeError
            raise ValueError(f"pad must be a number in (0, 2], got {self.pad!r}")
        if not (is_number(self.auto_fill) and 0 < self.auto_fill <= 1):  # NaN or 5: the crop path never ran
            raise ValueError(f"auto_fill must be a number in (0, 1], got {self.auto_fill!r}")
        if not is_whole(self.auto_max_side) or self.auto_max_side < 1:
            raise ValueError(f"auto_max_side must be a whole number of pixels, at least 1, got {self.auto_max_side!r}")
        for name in ("onet_min_score", "second_look_min_score", "second_look_min_cover"):
            check_unit(name, getattr(self, name))
        for name in ("onet_fallback", "second_look", "turned"):
            check_flag(name, getattr(self, name))


class FaceFinder:
    def __init__(self, options: FinderOptions | None = None, mtcnn=None, yunet=None, device: str = "auto"):
        if options is not None and not isinstance(options, FinderOptions):  # a dict failed at the first image
            raise ValueError(f"options are a FinderOptions (e.g. FinderOptions.for_inputs('photos')), got "
                             f"{type(options).__name__}")
        self.options = options or FinderOptions()
        self.device = device
        # Detectors are made on first use: the crop path's YuNet costs nothing until a crop shows up.
        self._made = {name: d for name, d in (("mtcnn", mtcnn), ("yunet", yunet)) if d is not None}

    def detector(self, name: str):
        """The finder's own `mtcnn` or `yunet` detector, made on first use and shared."""
        return self._detector(name)

    def _detector(self, name: str):
        if name not in self._made:
            if name == "mtcnn":
                from maskgen.detect import MTCNN

                self._made[name] = MTCNN(device=self.device)
            else:
                from maskgen.yunet import YuNet

                self._made[name] = YuNet()
        return self._made[name]

    @property
    def version(self) -> str:
        o = self.options
        names = {"mtcnn", "yunet"} if o.detector == "both" else {o.detector}
        if o.crop_mode != "off":
            names |= {o.crop_detector} | ({"mtcnn"} if o.onet_fallback else set())
        # YuNet is named without being fetched: asking for versions (every job actor does) must not
        # undo its lazy creation.
        from maskgen.yunet import YUNET_VERSION

        return ",".join(YUNET_VERSION if n == "yunet" else self._detector(n).version for n in sorted(names))

    def find(self, image: np.ndarray) -> list[Face]:
        return self.find_batch([image])[0]

    def find_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Each image's faces. With `turned`, faces may be turned a quarter or half turn: each face
        found is read by O-Net turned each way, and where a turn reads as a face more surely than the
        face as found, by `TURN_LOGIT_MARGIN` in O-Net's logit, the face is taken as so turned
        (MTCNN gives a face upside down the points of an upright one: the eyes on the mouth, and the
        mask was drawn over the eyes); the image is then detected again turned so (once a turn), and
        every face found there that O-Net also reads so turned is one of the image's, upright faces
        kept as found. An image in which none is found is looked at turned a half turn and a quarter
        turn each way, and the turn that finds the most faces is taken. `source` then ends in `+turned90`,
        `+turned180` or `+turned270`: how far the face is turned clockwise from upright."""
        from maskgen.decode import check_rgb

        for image in images:  # before the crop path pads it (an empty one was OpenCV's error there)
            check_rgb(image)
        found = self._find_upright(images)
        if not self.options.turned:
            return found
        return [self._settled(image, [(f, 0) for f in faces]) if faces else self._turned_faces(image)
                for image, faces in zip(images, found)]

    # O-Net's logit of a face's box turned another way must beat its logit as found by this much
    # before the face is taken as so turned: on the shared photos (bench/bench_turned_faces.py) at 3.0
    # none of 75 upright faces was turned (at 2.0, 2 were) and 77 of 104 faces found in turned
    # photos were turned upright, none the wrong way
    TURN_LOGIT_MARGIN = 3.0
    TURNS = (2, 1, 3)  # quarter turns counter-clockwise (np.rot90) that make a face upright; ties of faces and
    # of their scores' sum (rare: those of one photo turned differ) go to the first

    def _turned_faces(self, image: np.ndarray) -> list[Face]:
        """The faces of an image in which none was found upright, from the turn that finds the most
        (the surer, by the sum of their scores, where two find as many). The first turn that found any
        was taken: a group photo turned a quarter turn counter-clockwise, looked at upside down first,
        gave one face there (upright points, a mask over its eyes) and its five others were lost."""
        detected = {k: self._find_upright([np.ascontiguousarray(np.rot90(image, k))])[0] for k in self.TURNS}
        best = max(self.TURNS, key=lambda k: (len(detected[k]), sum(f.score for f in detected[k])))
        if not detected[best]:
            return []
        return self._settled(image, [(turned_back(f, best, image.shape), best) for f in detected[best]], detected)

    def _settled(self, image: np.ndarray, candidates: list, detected: dict | None = None) -> list[Face]:
        """The faces of `image` from `candidates` ((face, the quarter turns counter-clockwise of the image
        it was found upright in)), each read by O-Net turned each way (`_turn_of`): a face whose turn
        is as found stays; for each other turn, the image is detected turned so (`detected`: turn ->
        faces found in the image so turned, reused) and its faces that O-Net reads so turned, and that
        overlap no face kept, join (a face none of them overlaps keeps O-Net's points of its box
        turned so). Each face is one face: two detections of one face turned round came out as the
        same face twice."""
        from maskgen import boxes as B

        detected = dict(detected or {})
        kept: list[Face] = []
        moved: dict = {}  # turn -> [(face as found, its turn as found, O-Net's look at its box turned so)]

        def turned_as(face: Face, turn: int) -> Face:  # its source says how it is turned
            return face if not turn else replace(face, source=f"{face.source}+turned{90 * turn}")

        for face, found in candidates:
            turn, look = self._turn_of(image, face, found)
            if turn == found:
                kept.append(turned_as(face, found))
            else:
                moved.setdefault(turn, []).append((face, found, look))

        def overlaps(face: Face, faces: list[Face], at: float) -> bool:
            return bool(faces) and float(B.iou_matrix(np.array([face.box], dtype=np.float64),
                                                      np.array([f.box for f in faces], dtype=np.float64)).max()) >= at

        for turn, faces in moved.items():
            if turn not in detected:
                detected[turn] = self._find_upright([np.ascontiguousarray(np.rot90(image, turn))])[0]
            again = [turned_back(f, turn, image.shape) for f in detected[turn]]
            again = [f for f in again if self._turn_of(image, f, turn)[0] == turn and not overlaps(f, kept, 0.3)]
            again = [turned_as(f, turn) for f in again]
            # a face none of them overlaps: found by the plain pass (its points an upright face's), its
            # points are O-Net's of its box turned so; found upright in a turned image, its detection
            # stands (O-Net alone read a small upside-down face there as upright)
            again += [turned_as(look, turn) if not found else turned_as(face, found)
                      for face, found, look in faces if not overlaps(face, again, 0.3)]
            for f in again:
                if not overlaps(f, kept, 0.5):
                    kept.append(f)
        return kept

    def _turn_of(self, image: np.ndarray, face: Face, found: int = 0) -> tuple[int, Face | None]:
        """(the quarter turns counter-clockwise that make `face` upright as O-Net reads its box: `found`
        unless another beats it by `TURN_LOGIT_MARGIN`; for another, the face with O-Net's points of
        the box so turned, mapped back)."""
        from maskgen import boxes as B

        x1, y1, x2, y2 = B.square(np.asarray(face.landmark_box, dtype=np.float64).reshape(1, 4))[0]
        left, top, side = int(round(x1)), int(round(y1)), max(2, int(round(x2 - x1 + 1)))
        h, w = image.shape[:2]
        pad = max(0, -left, -top, left + side - w, top + side - h)
        patch = image if not pad else cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        patch = patch[top + pad:top + pad + side, left + pad:left + pad + side]
        mtcnn = self._detector("mtcnn")
        looks = [mtcnn.onet_whole_image(np.ascontiguousarray(np.rot90(patch, k))) for k in range(4)]
        logits = [np.log(p / (1 - p)) for p in (min(max(look.score, 1e-7), 1 - 1e-7) for look in looks)]
        k = max((i for i in range(4) if i != found), key=lambda i: logits[i])
        if logits[k] - logits[found] < self.TURN_LOGIT_MARGIN:
            return found, None
        back = turn_points_back(looks[k].landmarks, k, side, side) + (left, top)
        return k, replace(face, score=float(looks[k].score), landmarks=tuple((float(x), float(y)) for x, y in back))

    def _find_upright(self, images: list[np.ndarray]) -> list[list[Face]]:
        opts = self.options
        if opts.crop_mode == "on":
            return [framed(self._crop_path(img)) for img in images]
        plain = self._plain(images)
        if opts.crop_mode == "off":
            return plain
        out = []
        for image, faces in zip(images, plain):
            # a face the plain pass found stays when the crop path finds none: `auto` dropped it (9 of
            # masked_crops' 425 masked crops, found with crop_mode off, were failures to acquire)
            out.append(framed(self._crop_path(image) or faces) if self._looks_like_a_crop(image, faces) else faces)
        return out

    def _plain(self, images: list[np.ndarray]) -> list[list[Face]]:
        if self.options.detector != "both":
            return self._detector(self.options.detector).detect_batch(images)
        merged = []
        for ours, theirs in zip(self._detector("mtcnn").detect_batch(images),
                                self._detector("yunet").detect_batch(images)):
            merged.append(merge_detections(ours, theirs))
        return merged

    def _looks_like_a_crop(self, image: np.ndarray, faces: list[Face]) -> bool:
        h, w = image.shape[:2]
        if not faces:
            return min(h, w) <= self.options.auto_max_side
        largest = max(f.width * f.height for f in faces)
        return largest >= self.options.auto_fill * h * w

    def _crop_path(self, image: np.ndarray) -> list[Face]:
        opts = self.options
        h, w = image.shape[:2]
        p = max(1, int(round(opts.pad * max(h, w))))
        padded = cv2.copyMakeBorder(image, p, p, p, p, PAD_BORDERS[opts.pad_border], value=(0, 0, 0))
        found = self._detector(opts.crop_detector).detect(padded)
        faces = [_shift(f, p, h, w, f"{opts.crop_detector}+pad") for f in found]
        faces = [f for f in faces if f.width > 1 and f.height > 1]
        if faces or not (opts.onet_fallback or opts.second_look):
            return faces
        whole = self._detector("mtcnn").onet_whole_image(image)
        if opts.onet_fallback and whole.score >= opts.onet_min_score:
            return [whole]
        return self._second_look(image, whole) if opts.second_look else []

    # (detector, pad) views of the second look, cheapest and most often right first; YuNet at a
    # low score threshold re-finds most real masked crops the first look missed, MTCNN on a wider
    # black border finds some of the rest (bench/bench_masked_detection.py, masked_crops rows)
    SECOND_LOOK_VIEWS = (("yunet", 0.15), ("yunet", 0.35), ("yunet", 0.6), ("yunet", 1.0), ("mtcnn", 0.6))

    def _second_look(self, image: np.ndarray, whole: Face) -> list[Face]:
        """The best plausible face of several more permissive looks at a crop that is known to be a
        face crop (input kind `crops`, or `auto` deciding so): the face must cover a good part of the
        crop and have the 5-point geometry of a face, which keeps texture and partial boxes out."""
        opts = self.options
        h, w = image.shape[:2]
        candidates = [replace(whole, source="onet-whole-image+second-look")]
        for name, pad in self.SECOND_LOOK_VIEWS:
            p = max(1, int(round(pad * max(h, w))))
            padded = cv2.copyMakeBorder(image, p, p, p, p, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            found = self._detector(name).detect(padded, opts.second_look_min_score) if name == "yunet" \
                else self._detector(name).detect(padded)
            candidates += [_shift(f, p, h, w, f"{name}+pad+second-look") for f in found]
        fit = [f for f in candidates if f.score >= opts.second_look_min_score
               and f.width * f.height >= opts.second_look_min_cover * h * w and plausible_five_points(f.points)[0]]
        return [max(fit, key=lambda f: f.score)] if fit else []


FACE_POLICIES = ("center", "largest", "all")


def select_faces(faces: list[Face], image_shape, policy: str = "center") -> list[int]:
    """Indices (into `faces`) of the faces a policy keeps: `all`; `largest` (largest box area); or
    `center`, the face a centred dataset is about (LFW-style crops: the labelled person centred,
    bystanders cut off at the border and often larger): the best of detection score x box side (as a
    fraction of the image's short side) x exp(-(d / 0.25)^2), d the distance from the box centre to
    the image centre in short sides (bench/bench_face_policy.py measures it against `largest`)."""
    if policy not in FACE_POLICIES:
        raise ValueError(f"face policy must be one of {FACE_POLICIES}, got {policy!r}")
    if not faces or policy == "all":
        return list(range(len(faces)))
    if policy == "largest":
        return [max(range(len(faces)), key=lambda i: faces[i].width * faces[i].height)]
    h, w = image_shape[:2]
    short = float(max(1, min(h, w)))

    def weight(face: Face) -> float:
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        d = np.hypot(cx - w / 2, cy - h / 2) / short
        side = np.sqrt(max(face.width, 0.0) * max(face.height, 0.0)) / short
        return float(face.score) * side * float(np.exp(-(d / 0.25) ** 2))

    return [max(range(len(faces)), key=lambda i: weight(faces[i]))]


def merge_detections(first: list[Face], second: list[Face], iou: float = 0.4) -> list[Face]:
    """`first` plus the faces of `second` that overlap none of them (IoU <= `iou`), best score first."""
    from maskgen.boxes import iou_matrix

    if not first or not second:
        return sorted(first + second, key=lambda f: -f.score)
    overlap = iou_matrix(np.array([f.box for f in second]), np.array([f.box for f in first])).max(axis=1)
    return sorted(first + [f for f, o in zip(second, overlap) if o <= iou], key=lambda f: -f.score)


def _shift(face: Face, p: int, h: int, w: int, source: str) -> Face:
    """A face found in a crop padded by `p` on every side, in the crop's own coordinates (its box
    clipped to the crop)."""
    x1, y1, x2, y2 = face.landmark_box
    points = tuple((x - p, y - p) for x, y in face.landmarks)
    return clipped_face((x1 - p, y1 - p, x2 - p, y2 - p), h, w, score=face.score, landmarks=points, source=source)


def turn_points(points, k: int, w: int, h: int) -> np.ndarray:
    """(N, 2) float64: where pixels (x, y) of a `w` x `h` image lie in the image turned `k` quarter
    turns counter-clockwise (`np.rot90(image, k)`)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x, y = pts[:, 0], pts[:, 1]
    for _ in range(k % 4):
        x, y, w, h = y, w - 1 - x, h, w
    return np.stack([x, y], axis=1)


def turn_points_back(points, k: int, w: int, h: int) -> np.ndarray:
    """The inverse of `turn_points`: points of a `w` x `h` image turned `k` quarter turns counter-clockwise
    (`np.rot90(image, k)`), where they lie in the image itself."""
    return turn_points(points, (4 - k) % 4, *turned_size(k, w, h))


def turned_size(k: int, w: int, h: int) -> tuple[int, int]:
    """(width, height) of a `w` x `h` image turned `k` quarter turns."""
    return (w, h) if k % 2 == 0 else (h, w)


def turn_box(box, k: int, w: int, h: int) -> tuple[float, float, float, float]:
    """A box (x1, y1, x2, y2) of a `w` x `h` image, in the image turned as `turn_points` turns it."""
    corners = turn_points([box[:2], box[2:4]], k, w, h)
    return (*(float(v) for v in corners.min(axis=0)), *(float(v) for v in corners.max(axis=0)))


def turned_back(face: Face, k: int, shape) -> Face:
    """A face found in an image turned `k` quarter turns counter-clockwise, in the coordinates of the
    image itself (`shape`: its shape)."""
    h, w = shape[:2]
    tw, th = turned_size(k, w, h)
    back = (4 - k) % 4
    points = tuple((float(x), float(y)) for x, y in turn_points_back(face.landmarks, k, w, h))
    full = None if face.full_box is None else turn_box(face.full_box, back, tw, th)
    return Face(box=turn_box(face.box, back, tw, th), score=face.score, landmarks=points, source=face.source,
                full_box=full)


def framed(faces: list[Face]) -> list[Face]:
    """The faces of a crop, without `full_box`: a crop's edges frame the face it was made around, they
    do not cut it, so its landmarks are dlib's own from the box inside it. (Found from the box past
    them, with the edges continued, the landmarks of real masked crops read the mask's fabric as a
    longer face: the chin fell below the crop in 41 of 45 of masked_crops' masked crops, against 6.)"""
    return [replace(f, full_box=None) for f in faces]


# ------------------------------------------------------------------------------------------------
# 5-point plausibility and eye-based alignment


def plausible_five_points(points) -> tuple[bool, str]:
    """Is this the geometry of a face? In the frame where the eyes are level and 1 apart: the nose
    lies between the eyes' x and 0.25..1.4 below them, each mouth corner 0.5..2.0 below the eyes and
    below the nose, the mouth 0.35..1.6 eyes wide and not tilted more than 0.3 against the eyes."""
    pts = np.asarray(points, dtype=np.float64).reshape(5, 2)
    eye_vec = pts[1] - pts[0]
    d = float(np.linalg.norm(eye_vec))
    if d < 1e-6 or eye_vec[0] <= 0:
        return False, "eyes coincide or are swapped"
    c, s = eye_vec / d
    local = (pts - pts[0]) @ np.array([[c, -s], [s, c]]) / d  # eyes at (0, 0) and (1, 0)
    nose, ml, mr = local[2], local[3], local[4]
    if not (-0.1 <= nose[0] <= 1.1 and 0.25 <= nose[1] <= 1.4):
        return False, f"nose at ({nose[0]:.2f}, {nose[1]:.2f}) eye distances from the left eye"
    for name, m in (("left", ml), ("right", mr)):
        if not (0.5 <= m[1] <= 2.0) or m[1] <= nose[1]:
            return False, f"{name} mouth corner at height {m[1]:.2f}, nose at {nose[1]:.2f}"
    width = mr[0] - ml[0]
    if not 0.35 <= width <= 1.6:
        return False, f"mouth {width:.2f} eye distances wide"
    if abs(mr[1] - ml[1]) > 0.3 * max(width, 1e-6) + 0.1:
        return False, "mouth tilted against the eyes"
    return True, ""


def eyes_only_points(left_eye, right_eye, template=ARCFACE_112) -> np.ndarray:
    """5 points whose eyes are the given ones and whose nose and mouth sit where the template puts
    them relative to its eyes: aligning with them is aligning by the eyes alone."""
    t = template.array
    matrix = similarity_transform(t[:2], np.array([left_eye, right_eye], dtype=np.float64))
    return transform_points(t, matrix)


def alignment_points(points5, landmarks68=None, mode: str = "auto", locate_eyes=None) -> tuple[np.ndarray, str]:
    """(points to align with, how they were chosen): `five-point` (as detected), or `eyes` when `mode`
    is `eyes`, or `auto` and the detected geometry is implausible. The eyes come from
    `locate_eyes()` when given (a maskgen.eyes.EyeLocator's estimate, steadiest under a mask; only
    called when the eyes are used), else from the 68-point eye contours, else from the detector."""
    pts = np.asarray(points5, dtype=np.float64).reshape(5, 2)
    if mode not in ALIGNMENTS:
        raise ValueError(f"alignment mode must be one of {ALIGNMENTS}, got {mode!r}")
    if mode == "five-point" or (mode == "auto" and plausible_five_points(pts)[0]):
        # (NaN was passed on; the eyes' modes take the eyes from elsewhere, so theirs may be anything)
        return check_five_points(pts, "a face's 5 points"), "five-point"
    if locate_eyes is not None:
        left, right = np.asarray(locate_eyes(), dtype=np.float64).reshape(2, 2)
    elif landmarks68 is not None:
        lm = np.asarray(landmarks68, dtype=np.float64).reshape(68, 2)
        left, right = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    else:
        left, right = pts[0], pts[1]
    return eyes_only_points(left, right), "eyes"
