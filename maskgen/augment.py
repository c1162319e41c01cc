"""Mask every face of an image: detect, find 68 landmarks, type the face, draw the mask, align crops.

    augmenter = Augmenter(AugmentOptions(style="surgical", seed=7))
    result = augmenter.augment(rgb, key="person_01/img1.jpg")
    result.status          # "ok" or "no_face"
    result.image           # the whole image, every mask drawn (outputs "image" or "both")
    result.crops           # one aligned crop per masked face (outputs "crops" or "both")
    result.faces           # maskgen.record.FaceRecord per detected face: box, points, face type, mask

The mask of face i of image `key` is drawn with `mask_rng(seed, key, i)`, so reruns are
byte-identical and any single face can be re-rendered from its record.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from maskgen.align import ARCFACE_112, align_face
from maskgen.checks import is_whole
from maskgen.decode import check_rgb
from maskgen.detect import DetectorOptions, Face, landmark_boxes
from maskgen.eyes import EyeLocator
from maskgen.finder import (ALIGNMENTS, FACE_POLICIES, FaceFinder, FinderOptions, alignment_points, select_faces,
                            turn_box, turn_points, turn_points_back)
from maskgen.facetype import FaceType, FaceTypeOptions, classify_face, five_points, given_type
from maskgen.masks import (STYLE_NAMES, MaskStyle, check_seed, face_landmarks, in_photo_tone, mask_rng, photo_tint,
                           style_from_name)
from maskgen.record import FaceRecord, as_recorded
from maskgen.worn import WornMask, WornMaskCheck

OUTPUTS = ("image", "crops", "both")


MAX_CROP_SIZE = 1024
"""Larger aligned crops than any recognition model takes (112 to 224 px) only cost memory."""


@dataclass(frozen=True)
class AugmentOptions:
    """What augment does with each image.

    - style: `seed` (default), `surgical`, `cloth`, `n95`, `kn95` or `random`, or a MaskStyle object.
    - seed: run seed; with the image key and face index it fixes every random choice.
    - outputs: `image` (the whole image with every mask), `crops` (aligned crops), or `both`.
    - face: which faces of an image are masked (`maskgen.finder.select_faces`): `all` (default),
      `center` (the face a centred dataset is about) or `largest`; the others are reported, unmasked.
    - largest_only: the same as face="largest" (kept for older callers).
    - min_face_size: faces whose box is smaller (longer side, px) are reported but not masked.
    - crop_size: side of the aligned crops (ArcFace template scaled to it).
    - face_types: thresholds for frontal/profile and clear/blurred.
    - detector: MTCNN options.
    - finder: crop mode and detector choice (`maskgen.finder.FinderOptions`); default: MTCNN, crop
      mode `auto`.
    - alignment: points the crops are aligned with: `five-point` (default; the unmasked detection,
      which masking never changes), `eyes` (the eyes alone, located by `maskgen.eyes.EyeLocator`
      on the unmasked image), or `auto` (eyes when the 5 points are implausible).
    - worn_masks: None (default: every face is masked), or a `maskgen.worn.WornMaskCheck`: a face it
      reads as wearing a mask already is left as it is (its record says so, `masked` False, no crop),
      and an image every face of which wears one is `already_masked` (the jobs give it one row).
    """

    style: str | MaskStyle = "seed"
    seed: int = 0
    outputs: str = "both"
    largest_only: bool = False
    face: str = "all"
    min_face_size: float = 20.0
    crop_size: int = 112
    face_types: FaceTypeOptions = field(default_factory=FaceTypeOptions)
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    finder: FinderOptions = field(default_factory=FinderOptions)
    alignment: str = "five-point"
    worn_masks: WornMaskCheck | None = None

    def __post_init__(self):
        if self.face not in FACE_POLICIES:
            raise ValueError(f"face must be one of {FACE_POLICIES}, got {self.face!r}")
        if self.largest_only and self.face not in ("all", "largest"):  # "all" is the default: not a choice
            raise ValueError(f"largest_only=True is face='largest'; it contradicts face={self.face!r}")
        if self.largest_only and self.face == "all":
            object.__setattr__(self, "face", "largest")
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {self.alignment!r}")
        if self.outputs not in OUTPUTS:
            raise ValueError(f"outputs must be one of {OUTPUTS}, got {self.outputs!r}")
        object.__setattr__(self, "seed", check_seed(self.seed))
        if isinstance(self.style, str) and self.style not in STYLE_NAMES:
            raise ValueError(f"unknown mask style {self.style!r}; choose from {STYLE_NAMES}")
        if not isinstance(self.style, (str, MaskStyle)):
            raise ValueError(f"style is a name from {STYLE_NAMES} or a MaskStyle object, got {self.style!r}")
        if not is_whole(self.crop_size) or not 16 <= self.crop_size <= MAX_CROP_SIZE:
            raise ValueError(f"crop_size must be a whole number of pixels from 16 to {MAX_CROP_SIZE}, "
                             f"got {self.crop_size!r}")
        if isinstance(self.min_face_size, bool) or not isinstance(self.min_face_size, (int, float, np.number)) \
                or not 0 <= self.min_face_size < float("inf"):  # NaN fails this too: it turned the filter off
            raise ValueError(f"min_face_size must be a number of pixels >= 0, got {self.min_face_size!r}")
        if self.worn_masks is not None and not isinstance(self.worn_masks, WornMaskCheck):
            raise ValueError(f"worn_masks is None or a maskgen.worn.WornMaskCheck, got {self.worn_masks!r}")
        for name, kind in (("face_types", FaceTypeOptions), ("detector", DetectorOptions),
                           ("finder", FinderOptions)):
            if not isinstance(getattr(self, name), kind):  # was an AttributeError on the first image
                raise ValueError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")


@dataclass
class AugmentResult:
    key: str
    status: str                      # ok | no_face | already_masked (`AugmentOptions.worn_masks`)
    message: str
    width: int
    height: int
    faces: list[FaceRecord]
    image: np.ndarray | None = None  # whole image with masks
    crops: list[np.ndarray] = field(default_factory=list)  # aligned, one per masked face, in face order


class Augmenter:
    """Holds the models (loaded once, e.g. per Ray actor) and applies `AugmentOptions` to images."""

    def __init__(self, options: AugmentOptions | None = None, detector=None, predictor=None, device: str = "auto"):
        from maskgen.detect import MTCNN
        from maskgen.landmarks import LandmarkPredictor

        self.options = options or AugmentOptions()
        self.style = self.options.style if isinstance(self.options.style, MaskStyle) \
            else style_from_name(self.options.style)
        self.detector = detector or MTCNN(self.options.detector, device=device)
        self.finder = FaceFinder(self.options.finder, mtcnn=self.detector, device=device)
        self.predictor = predictor or LandmarkPredictor()
        self.template = ARCFACE_112.resized(self.options.crop_size)
        self.eye_locator = EyeLocator(self.detector, self.predictor)

    @property
    def versions(self) -> dict:
        return {"detector": self.finder.version, "landmarks": self.predictor.version}

    def augment(self, image: np.ndarray, key: str) -> AugmentResult:
        return self.augment_batch([image], [key])[0]

    def augment_batch(self, images: list[np.ndarray], keys: list[str]) -> list[AugmentResult]:
        if len(images) != len(keys):
            raise ValueError("one key per image is needed")
        for key in keys:  # the masks' seed and the records' source_key: a Path seeded as its text, then
            if not isinstance(key, str) or not key:  # failed in records_table; None seeded as "None"
                raise ValueError(f"an image's key is its name as text (e.g. 'person/1.jpg'), got {key!r}")
        for image in images:  # before the tiny-image shortcut, which took a 10x10 float image for RGB
            check_rgb(image)
        # an image smaller than the smallest face that is masked cannot give a masked face: no detector
        # runs on it (tiny thumbnails and icons in bulk datasets cost nothing)
        small = [min(image.shape[:2]) < self.options.min_face_size for image in images]
        wanted = [im for im, s in zip(images, small) if not s]
        found = iter(self.finder.find_batch(wanted) if wanted else [])
        results = []
        for image, key, tiny in zip(images, keys, small):
            if tiny:
                h, w = image.shape[:2]
                results.append(AugmentResult(
                    key, "no_face", f"no face: the image ({w}x{h} px) is smaller than the smallest face masked "
                    f"(min_face_size {self.options.min_face_size:g} px)", w, h, [],
                    image.copy() if self.options.outputs != "crops" else None))
                continue
            faces = next(found)
            boxes = np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4)
            points5 = np.array([f.points for f in faces], dtype=np.float64).reshape(-1, 5, 2)
            scores = [f.score for f in faces]
            found_from = landmark_boxes(faces)  # a cut face's whole box (the record keeps `boxes`)
            landmarks68 = self.predictor.predict(image, found_from, points5, [face_turns(f.source) for f in faces]) \
                if len(faces) else np.zeros((0, 68, 2))
            results.append(self.mask_faces(image, key, boxes, scores, points5, landmarks68,
                                           sources=[f.source for f in faces], eye_boxes=found_from))
        return results

    def mask_faces(self, image: np.ndarray, key: str, boxes, scores, points5, landmarks68,
                   face_types: list[FaceType | None] | None = None,
                   sources: list[str] | None = None, eye_boxes=None) -> AugmentResult:
        """Mask given faces (no detection): the path for landmarks that come from a manifest or CSV. A
        face whose type is not given (None) is classified. `eye_boxes`: the boxes eyes are located from
        (`--alignment eyes`), a cut face's whole box past the image's edge (`Face.landmark_box`);
        default `boxes`."""
        opts = self.options
        h, w = image.shape[:2]
        n = len(boxes)
        eye_boxes = boxes if eye_boxes is None else eye_boxes
        # a type given by its seed code ("1_0", as a manifest holds it) is read as one
        face_types = [FaceType.from_code(t) if isinstance(t, str) else t for t in face_types] if face_types else None
        if n == 0:
            return AugmentResult(key, "no_face", "no face found", w, h, [],
                                 image.copy() if opts.outputs != "crops" else None)
        sizes = [max(b[2] - b[0], b[3] - b[1]) for b in boxes]
        # faces whose landmarks cannot make a mask are not among those `face` chooses from: a NaN box
        # (from NaN landmarks) or one wholly off the image was chosen, and the usable face left unmasked
        lms = [as_recorded(landmarks68[i]) for i in range(n)]  # as the manifest keeps them (re-rendering)
        reasons = [unusable_landmarks(lm, w, h) for lm in lms]  # before the face type and 5 points read them
        usable = [i for i in range(n) if not reasons[i]]
        chosen = {usable[j] for j in select_faces([Face(tuple(float(v) for v in boxes[i]), float(scores[i]))
                                                   for i in usable], image.shape, opts.face)}
        out = np.ascontiguousarray(image.copy())
        records, crop_points, worn = [], [], []
        for i in range(n):
            lm, unusable = lms[i], reasons[i]
            ftype, note, params, masked = None, "", None, False
            if unusable:
                note = f"mask not drawn: {unusable}"
            else:
                ftype = given_type(face_types[i], lm) if face_types and face_types[i] else \
                    classify_face(image, lm, opts.face_types)
                # drawn with the yaw and blur as the record keeps them: a turned face's far side follows
                # its yaw, and a re-rendering from the record gives these pixels
                ftype = replace(ftype, yaw=round(float(ftype.yaw), 2), blur=round(float(ftype.blur), 4))
            if unusable:
                pass
            elif i not in chosen:
                note = "not the largest face" if opts.face == "largest" else "not the face nearest the centre"
            elif sizes[i] < opts.min_face_size:
                note = f"smaller than min_face_size ({sizes[i]:.1f} < {opts.min_face_size:g} px)"  # 19.6 read "20 < 20"
            elif opts.worn_masks is not None and (verdict := opts.worn_masks(image, points5[i])).worn:
                note = worn_note(verdict)
                worn.append(f"{verdict.lower:.0%}")
            else:
                try:
                    drawn, coverage, params = upright_drawn(
                        lambda img, pts: self.style(img, pts, mask_rng(opts.seed, key, i), ftype), out, lm,
                        face_turns(sources[i] if sources else None))
                    masked = bool(np.any(coverage))
                    if masked:
                        out = drawn
                    else:  # nothing of it on the image: no mask, no crop of one, and the pixels as they were
                        # (a style of a user's that drew where its coverage says nothing is drawn)
                        params, note = None, "mask not drawn: none of it falls on the image"
                except ValueError as exc:  # degenerate landmarks
                    note = f"mask not drawn: {exc}"
            align_pts, how = None, None
            if not unusable:  # eyes located on the unmasked image: the mask must not move the alignment
                align_pts, how = upright_alignment(image, points5[i], lm, opts.alignment, self.eye_locator.locate,
                                                   eye_boxes[i], face_turns(sources[i] if sources else None))
                align_pts = as_recorded(align_pts)  # the crop is made again from the record's aligned5
            given = face_types[i].code if face_types and face_types[i] else None
            records.append(FaceRecord(
                source_key=key, face_index=i, box=boxes[i], score=scores[i], landmarks5=points5[i],
                landmarks68=lm, face_type=ftype.code if ftype else given, yaw=ftype.yaw if ftype else None,
                blur=ftype.blur if ftype else None, masked=masked, mask=params, message=note,
                source=sources[i] if sources else "given", alignment=how, aligned5=align_pts, seed=opts.seed,
                image_size=[int(w), int(h)],
            ))
            if masked:
                crop_points.append(align_pts)
        if crop_points:  # a monochrome photo's masks are in its tone (a grey photo's grey), its crops too
            tint = photo_tint(image, [boxes[i] for i in sorted(chosen)])
            if tint is not None:
                out = in_photo_tone(image, out, tint)
        crops = []
        if opts.outputs in ("crops", "both"):
            crops = [align_face(out, pts, self.template) for pts in crop_points]
        masked_count = sum(r.masked for r in records)
        # an image every face of which wears a mask is left as it is, as an input manifest's `masked` row
        # is (not a failure, and not `ok`: the summary counts it apart); one whose other faces were not
        # masked for other reasons (too small, not chosen) keeps a row per face, each saying why
        status, message = ("already_masked", f"left as it is: every face found ({n}) wears a mask already "
                                             f"(skin on the mouth and chin: {', '.join(worn)})") \
            if len(worn) == n else ("ok", f"{masked_count} of {n} face(s) masked")
        for record in records:  # a face without a note of its own carries the image's
            record.message = record.message or message
        return AugmentResult(key, status, message, w, h, records,
                             out if opts.outputs in ("image", "both") else None, crops)


NOT_DRAWN = "mask not drawn: "
WORN_NOTE = NOT_DRAWN + "wears a mask already"


def worn_note(verdict: WornMask) -> str:
    """A face's note where `WornMaskCheck` reads it as wearing a mask already."""
    return f"{WORN_NOTE} (skin on {verdict.lower:.0%} of the mouth and chin, {verdict.upper:.0%} of the upper face)"


def face_turns(source: str | None) -> int:
    """The quarter turns counter-clockwise that make a face upright, read from its `source` (a face
    `FaceFinder` found turned ends in `+turned90`, `+turned180` or `+turned270`); 0 for any other."""
    for k in (1, 2, 3):
        if source and source.endswith(f"+turned{90 * k}"):
            return k
    return 0


def upright_drawn(draw, image: np.ndarray, landmarks68, turns: int):
    """`draw(image, landmarks68)` (a style's call: (image, coverage, params)) on the image turned
    `turns` quarter turns counter-clockwise, where the face is upright, turned back: every style
    draws a face upright (the seed's polygon across a face upside down covered an eye). Quarter
    turns move pixels without resampling, so the rest of the image is unchanged. Re-render a turned
    face's record so too."""
    if not turns:
        return draw(image, landmarks68)
    h, w = image.shape[:2]
    drawn, coverage, *rest = draw(np.ascontiguousarray(np.rot90(image, turns)), turn_points(landmarks68, turns, w, h))
    if isinstance(coverage, np.ndarray) and coverage.ndim >= 2:
        coverage = np.ascontiguousarray(np.rot90(coverage, -turns))
    return (np.ascontiguousarray(np.rot90(drawn, -turns)), coverage, *rest)


def upright_alignment(image: np.ndarray, points5, landmarks68, alignment: str, locate_eyes, box, turns: int):
    """`maskgen.finder.alignment_points` of one face (`locate_eyes(image, box, points5)`: e.g. an
    `EyeLocator`'s `locate`), for a face turned `turns` quarter turns counter-clockwise from upright
    worked out in the image turned upright and mapped back: the plausibility check and the eye
    locator know upright faces only (an upside-down face read as "eyes swapped", and its eyes were
    located 1.07 to 1.35 eye distances off: crops upside down)."""
    if not turns:
        return alignment_points(points5, landmarks68, alignment, lambda: locate_eyes(image, box, points5))
    h, w = image.shape[:2]
    up5 = turn_points(points5, turns, w, h)
    up68 = None if landmarks68 is None else turn_points(landmarks68, turns, w, h)
    points, how = alignment_points(up5, up68, alignment, lambda: locate_eyes(
        np.ascontiguousarray(np.rot90(image, turns)), turn_box(box, turns, w, h), up5))
    if how == "five-point":
        return np.asarray(points5, dtype=np.float64).reshape(5, 2), how
    return turn_points_back(points, turns, w, h), how


def unusable_landmarks(landmarks68, width: int, height: int) -> str:
    """Why a face's 68 landmarks cannot make a mask ("" when they can): NaN or infinite points (named
    by `face_landmarks`; a NaN nose or eye point stopped the whole image in its face type or 5 points,
    where one at the jaw was recorded per face), or every point off the image (such a face was
    recorded masked with nothing drawn, its crop all black)."""
    try:
        lm = face_landmarks(landmarks68)
    except ValueError as exc:
        return str(exc)
    inside = (lm[:, 0] >= 0) & (lm[:, 0] < width) & (lm[:, 1] >= 0) & (lm[:, 1] < height)
    if not inside.any():
        return f"every landmark lies outside the {width}x{height} image"
    return ""


def landmarks_to_face(landmarks68: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(box, 5 points) for a face known only by its 68 landmarks."""
    lm = np.asarray(landmarks68, dtype=np.float64).reshape(68, 2)
    box = np.array([*lm.min(axis=0), *lm.max(axis=0)])
    return box, five_points(lm)
