"""Synthetic face masks drawn from 68 landmarks: the seed's black polygon, and realistic styles.

Each style is a small seeded object, like an albumentations transform:

    style = SurgicalMask()                      # or SeedMask(), ClothMask(), RespiratorMask(), OneOf([...])
    rng = mask_rng(run_seed=0, key="person_01/img1.jpg", face_index=0)
    params = style.sample(rng, face_type)       # every random choice, JSON-able, for the manifest
    out, coverage = style.render(image, landmarks68, params, face_type)

`style(image, landmarks68, rng, face_type)` does both (`rng` may be a seed: `style(image, lm, 7)` draws
with `np.random.default_rng(7)`, the same mask each time). `render` takes the face type again (default
frontal and sharp): a profile's mask is drawn on its own side, a blurred face's softened. The same
inputs and params always give the same bytes. `render` returns the image with the mask drawn and a
boolean `coverage` map of where the mask is opaque (at least half), which the quality tests and
later stages use.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import cv2
import numpy as np

from maskgen.checks import check_colour, is_whole
from maskgen.decode import check_rgb
from maskgen.facetype import FaceType, face_landmarks, given_type

FRONTAL = FaceType(False, False, 0.0, 0.0)

# ------------------------------------------------------------------------------------------------
# Monochrome photos: grey, or grey toned (sepia, a tinted black-and-white scan)

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as OpenCV's RGB2GRAY


def photo_tint(image: np.ndarray, boxes=(), spread: float = 12.0) -> np.ndarray | None:
    """The tint of a monochrome photo, as the RGB offset from its luma that its pixels share: zero for
    a grey photo, a small colour for a toned one; None for a colour photo. Monochrome: 99.9 % of the
    pixels (every second one, each way) and 99 % of those in the face `boxes` lie within `spread`
    levels of the one tint, so JPEG's chroma noise on a black-and-white scan stays monochrome, and a
    colour face in a grey room does not. A colour photo is told from every eighth pixel first (0.1 ms
    for an LFW-size photo; the whole test took 1.5 ms)."""
    def chroma(pixels: np.ndarray) -> np.ndarray:
        pixels = pixels.reshape(-1, 3).astype(np.float32)
        return pixels - (pixels @ _LUMA)[:, None]

    def off_tint(chromas: np.ndarray, tint: np.ndarray) -> float:
        """The share of pixels (their `chroma`) further than `spread` from `tint`."""
        return float((np.abs(chromas - tint).max(axis=1) > spread).mean())

    coarse = chroma(image[::8, ::8])
    tint = np.median(coarse, axis=0)
    # (the coarse look only turns away what is plainly colour: over 2 % of its pixels off the tint)
    if off_tint(coarse, tint) > 0.02 or off_tint(chroma(image[::2, ::2]), tint) > 0.001:
        return None
    h, w = image.shape[:2]
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        face = image[max(0, int(y1)):min(h, int(np.ceil(y2))), max(0, int(x1)):min(w, int(np.ceil(x2)))]
        if face.size and off_tint(chroma(face), tint) > 0.01:
            return None
    return tint


def in_photo_tone(image: np.ndarray, out: np.ndarray, tint: np.ndarray) -> np.ndarray:
    """`out` (`image` with masks drawn) with every pixel the masks changed set to its luma plus the
    photo's `tint` (`photo_tint`): a blue mask on a black-and-white photo is seen as its camera would
    have seen it, grey, or in the photo's tone; the pixels the masks left keep their values."""
    changed = np.any(out != image, axis=2)
    if not changed.any():
        return out
    pixels = out[changed].astype(np.float32)
    toned = out.copy()
    toned[changed] = np.clip((pixels @ _LUMA)[:, None] + tint + 0.5, 0, 255).astype(np.uint8)
    return toned


# ------------------------------------------------------------------------------------------------
# Seeding


MAX_SEED = 2**63 - 1  # the manifests' int64 `seed` column


def check_seed(seed) -> int:
    """A run seed: a whole number from 0 to 2**63 - 1. Anything else is refused rather than folded
    onto another seed (two runs that record different seeds must not draw the same masks)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"a run seed is a whole number, got {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"a run seed is from 0 to 2**63 - 1, got {seed}")
    return int(seed)


def mask_rng(run_seed: int, key: str, face_index: int) -> np.random.Generator:
    """The generator for one face: a pure function of (run seed, image key, face index)."""
    if not isinstance(key, str):  # None drew the masks of the key "None", as `Augmenter` refuses it
        raise ValueError(f"an image's key is its name as text (e.g. 'person/1.jpg'), got {key!r}")
    if not is_whole(face_index) or face_index < 0:
        raise ValueError(f"a face index is a whole number >= 0, got {face_index!r}")  # 1.7 drew face 1's mask
    digest = hashlib.sha256(str(key).encode("utf-8")).digest()
    words = np.frombuffer(digest[:16], dtype="<u4").tolist()
    return np.random.default_rng(np.random.SeedSequence([check_seed(run_seed), *words, int(face_index)]))


def as_generator(rng) -> np.random.Generator:
    """A style's randomness: a NumPy Generator as given (`mask_rng(run_seed, key, face_index)`, a job's
    draws), or a seed from 0 to 2**63 - 1 made one (`np.random.default_rng(seed)`), as albumentations
    takes a seed: the same seed draws the same mask. Anything else is refused (an int failed deep in
    a draw, "'int' object has no attribute 'integers'"; None was taken by the seed style)."""
    if isinstance(rng, np.random.Generator):
        return rng
    try:
        return np.random.default_rng(check_seed(rng))
    except ValueError:
        raise ValueError(f"a mask is drawn with a numpy Generator (mask_rng(run_seed, key, face_index), or "
                         f"np.random.default_rng(seed)) or a seed from 0 to 2**63 - 1, got {rng!r}") from None


def face_and_type(landmarks68, face_type: FaceType) -> tuple[np.ndarray, FaceType]:
    """(`face_landmarks`, the face type with its yaw estimated from them when it has none: a type made
    from its seed code, `FaceType.from_code("1_0")`, has a NaN yaw, which put a profile's mask on the
    side it is not turned to)."""
    lm = face_landmarks(landmarks68)
    return lm, given_type(face_type, lm)


# ------------------------------------------------------------------------------------------------
# The seed's geometry (exact)

SEED_FRONTAL_ROWS = (*range(1, 16), 28)
SEED_PROFILE_ROWS = (*range(7, 16), 28, 29, 30)
# The seed only has the polygon for faces turned towards the image's left; its mirror image
# (jaw rows i -> 16 - i) serves faces turned the other way.
SEED_PROFILE_MIRRORED_ROWS = (*range(9, 0, -1), 28, 29, 30)


def seed_polygon_rows(face_type: FaceType, mirror_profiles: bool = True) -> tuple[int, ...]:
    if not face_type.profile:
        return SEED_FRONTAL_ROWS
    if mirror_profiles and face_type.yaw > 0:
        return SEED_PROFILE_MIRRORED_ROWS
    return SEED_PROFILE_ROWS


def smooth_outline(image: np.ndarray, outline: np.ndarray) -> np.ndarray:
    """The seed's blurred-face treatment (its `make_mask.py`): for each outline pixel in turn, row by
    row and left to right, its 3x3 neighbourhood is replaced by that neighbourhood's own 3x3 Gaussian
    (sigma 0.5) smoothing, in place, so each patch smooths pixels the patches before it already
    smoothed. (Once for all outline pixels from the unsmoothed image, as this did before, the edge
    was much harder: 8.55 levels from the seed's own masked sample 3 in its `result/result.png` along
    the outline, against 1.4 now; a polygon not smoothed at all is 11.6.) Patches at the image's edges
    are cut by it (the seed's loop failed on a first row or column)."""
    out = check_rgb(image).copy()
    _smooth_outline_into(out, outline)
    return out


def _smooth_outline_into(out: np.ndarray, outline: np.ndarray) -> None:
    """`smooth_outline` in place (the image a mask was just drawn on is already a copy)."""
    # within the outline's box: np.nonzero over a whole 12 MP image took 33 ms a face
    bx, by, bw, bh = cv2.boundingRect(np.asarray(outline).astype(np.uint8, copy=False))
    ys, xs = np.nonzero(outline[by:by + bh, bx:bx + bw])  # row by row, left to right: the seed's loop order
    for y, x in zip((ys + by).tolist(), (xs + bx).tolist()):
        y0, x0 = max(y - 1, 0), max(x - 1, 0)
        out[y0:y + 2, x0:x + 2] = cv2.GaussianBlur(out[y0:y + 2, x0:x + 2], (3, 3), 0.5)


def draw_seed_mask(image: np.ndarray, landmarks68: np.ndarray, face_type: FaceType,
                   mirror_profiles: bool = True, colour=(0, 0, 0), rows=None) -> tuple[np.ndarray, np.ndarray]:
    """The seed's mask: a filled polygon over landmark rows 1..15, 28 (frontal) or 7..15, 28, 29, 30
    (profile; `rows` when given, as a record keeps them), then outline smoothing if the face is blurred.
    Returns (image, coverage)."""
    check_rgb(image)
    lm, face_type = face_and_type(landmarks68, face_type)
    if rows is None:
        rows = seed_polygon_rows(face_type, mirror_profiles)
    elif not (len(rows) >= 3 and all(is_whole(r) and 0 <= r < 68 for r in rows)):
        raise ValueError(f"a seed polygon is at least 3 landmark rows from 0 to 67, got {rows!r}")
    pts = np.round(lm[list(rows)]).astype(np.int32)
    out = np.ascontiguousarray(image.copy())
    cv2.fillPoly(out, [pts], colour)
    coverage = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(coverage, [pts], 1)
    if face_type.blurred:
        outline = np.zeros(image.shape[:2], np.uint8)
        cv2.polylines(outline, [pts], True, 1)
        _smooth_outline_into(out, outline)
    return out, coverage.astype(bool)


# ------------------------------------------------------------------------------------------------
# Geometry of realistic masks (pure)


@dataclass(frozen=True)
class FaceFrame:
    """A face-aligned frame: origin at the nose bridge (28), x along the jaw line, y towards the chin."""

    origin: np.ndarray
    x_axis: np.ndarray
    y_axis: np.ndarray
    width: float    # jaw 1 to jaw 15
    height: float   # nose bridge to chin

    @classmethod
    def from_landmarks(cls, lm: np.ndarray) -> "FaceFrame":
        x_axis = lm[15] - lm[1]
        width = float(np.linalg.norm(x_axis))
        if width < 1e-6:
            raise ValueError("degenerate landmarks: jaw points 1 and 15 coincide")
        x_axis = x_axis / width
        y_axis = np.array([-x_axis[1], x_axis[0]])
        if np.dot(lm[8] - lm[28], y_axis) < 0:
            y_axis = -y_axis
        height = float(max(np.dot(lm[8] - lm[28], y_axis), 1.0))
        return cls(lm[28].astype(np.float64), x_axis, y_axis, width, height)

    def to_local(self, pts: np.ndarray) -> np.ndarray:
        d = np.asarray(pts, dtype=np.float64) - self.origin
        return np.stack([d @ self.x_axis, d @ self.y_axis], axis=-1)

    def to_image(self, local: np.ndarray) -> np.ndarray:
        local = np.asarray(local, dtype=np.float64)
        return self.origin + local[..., :1] * self.x_axis + local[..., 1:2] * self.y_axis


def _bezier(p0, p1, p2, n=12):
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


EYE_CLEARANCE = 0.05  # x face height: the mask's top edge passes at least this far below each lower eyelid


def _eye_guard(shape_hw: tuple, offset: tuple, lm: np.ndarray, reach: float) -> np.ndarray:
    """How much of the mask may show at each pixel of a drawing window (`offset`: its top-left in the
    image): 0 on each eye (landmarks 36-41 and 42-47, filled) and the pixel round it, rising to 1
    `reach` px further out. A
    blurred or small face's soft edge (up to 4 % of its width, twice the clearance) tinted the lower
    eyelids and inner corners by up to 55 levels; the eyes are what a masked face is still recognised by."""
    guard = np.ones(shape_hw, np.float32)
    eyes = [lm[36:42] - np.asarray(offset, np.float64), lm[42:48] - np.asarray(offset, np.float64)]
    reach = max(float(reach), 1.0)
    corner = np.floor(np.min([e.min(axis=0) for e in eyes], axis=0) - reach - 1).astype(int)
    far = np.ceil(np.max([e.max(axis=0) for e in eyes], axis=0) + reach + 2).astype(int)
    x1, y1 = np.maximum(corner, 0)
    x2, y2 = np.minimum(far, (shape_hw[1], shape_hw[0]))
    if x2 <= x1 or y2 <= y1:
        return guard
    outside = np.full((y2 - y1, x2 - x1), 255, np.uint8)
    for eye in eyes:  # 2 fractional bits: the eye where its landmarks say, not moved to whole pixels
        cv2.fillPoly(outside, [np.round((eye - (x1, y1)) * 4).astype(np.int32)], 0, cv2.LINE_8, shift=2)
    distance = cv2.distanceTransform(outside, cv2.DIST_L2, 5)
    # from a pixel past the outline: an eye corner's own pixel (its landmark rounded) lies up to 0.7 px
    # outside the filled polygon
    guard[y1:y2, x1:x2] = np.clip((distance - 1.0) / reach, 0, 1)
    return guard


def _below_eyes(top: np.ndarray, local: np.ndarray, h: float, clearance: float = EYE_CLEARANCE) -> np.ndarray:
    """Keep the top edge `clearance` x face height below each lower eyelid where it passes under the eye,
    easing back over the eye's half-width so the edge stays smooth."""
    top = top.copy()
    for rows in ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47)):
        eye = local[list(rows)]
        cx = eye[:, 0].mean()
        half = (eye[:, 0].max() - eye[:, 0].min()) / 2 + 0.05 * h
        floor = eye[:, 1].max() + clearance * h
        weight = np.clip(1.5 - np.abs(top[:, 0] - cx) / half, 0, 1)  # 1 under the eye, 0 well beside it
        top[:, 1] = np.maximum(top[:, 1], top[:, 1] + weight * np.maximum(floor - top[:, 1], 0))
    return top


def _falling_from(top: np.ndarray, peak: int) -> np.ndarray:
    """The top edge with no point above its neighbour nearer the `peak` (the nose bridge): the curve
    lifted over the cheeks climbed back beside each eye after `_below_eyes` took it under the eye,
    a mushroom-shaped edge with a bite under each eye that no mask has."""
    top = top.copy()
    for i in range(peak - 1, -1, -1):
        top[i, 1] = max(top[i, 1], top[i + 1, 1])
    for i in range(peak + 1, len(top)):
        top[i, 1] = max(top[i, 1], top[i - 1, 1])
    return top


def far_side_push(yaw: float) -> float:
    """The share of the usual push out from the jaw that the far side of a face turned by `yaw` degrees
    gets: 1 facing the camera (or with no yaw known), 0 from 30 degrees, where its jaw landmarks lie on
    the silhouette."""
    return max(1.0 - abs(yaw) / 30.0, 0.0) if np.isfinite(yaw) else 1.0


def mask_outline(landmarks68: np.ndarray, shape: str = "surgical", face_type: FaceType = FRONTAL,
                 margin: float = 0.05) -> np.ndarray:
    """Closed outline (K, 2) of a worn mask, in image pixels.

    It rises from the cheeks to the nose bridge, runs along the jaw `margin` x face width outside the
    landmarks and passes below the chin. `shape`: `surgical` (rounded top), `cloth` (higher on the
    nose), `n95` (dome), `kn95` (pointed at bridge and chin). Profile faces: the far side follows the
    nose line and passes in front of the mouth.
    """
    lm, face_type = face_and_type(landmarks68, face_type)
    frame = FaceFrame.from_landmarks(lm)
    w, h = frame.width, frame.height
    local = frame.to_local(lm)
    centre = local[[1, 15, 8, 28]].mean(axis=0)

    def push(points, amount):  # away from the face centre (`amount`: one, or one per point)
        d = points - centre
        n = np.linalg.norm(d, axis=1, keepdims=True)
        return points + d / np.maximum(n, 1e-6) * amount

    top_lift = {"surgical": 0.02, "cloth": 0.05, "n95": 0.04, "kn95": 0.04}.get(shape, 0.02) * h
    chin_drop = {"surgical": 0.06, "cloth": 0.08, "n95": 0.10, "kn95": 0.14}.get(shape, 0.06) * h
    bridge = local[28] - np.array([0.0, top_lift])

    # out from the jaw by `margin`, less on the far side of a turned face, none from 30 degrees: there
    # the landmarks lie on the silhouette, and the full push hung the mask in the background (a fifth
    # of the face's width past the far cheek at 30 degrees)
    amounts = np.full((13, 1), margin * w)
    far = slice(0, 6) if face_type.yaw < 0 else slice(7, 13)  # landmarks 2-7 (image left) or 9-14
    amounts[far] *= far_side_push(face_type.yaw)
    jaw = push(local[list(range(2, 15))], amounts)
    jaw[4:9] += np.array([0.0, 1.0]) * chin_drop * np.array([0.4, 0.8, 1.0, 0.8, 0.4])[:, None]
    if shape == "kn95":  # pointed chin: pull the chin neighbours towards the middle line
        jaw[5:8, 0] = local[8, 0] + (jaw[5:8, 0] - local[8, 0]) * 0.6

    left_start, right_end = jaw[0], jaw[-1]
    if shape == "kn95":
        top_left = np.linspace(right_end, bridge, 8)
        top_right = np.linspace(bridge, left_start, 8)
        top = np.concatenate([top_left, top_right[1:]])
    else:
        ctrl_lift = {"n95": 0.10, "cloth": 0.08}.get(shape, 0.06) * h
        ctrl_r = np.array([(right_end[0] + bridge[0]) / 2, bridge[1] - ctrl_lift * 0.5])
        ctrl_l = np.array([(left_start[0] + bridge[0]) / 2, bridge[1] - ctrl_lift * 0.5])
        top = np.concatenate([_bezier(right_end, ctrl_r, bridge), _bezier(bridge, ctrl_l, left_start)[1:]])

    top = _below_eyes(top, local, h)
    if shape != "kn95":  # (a kn95's top edge is two straight lines from the bridge)
        top = _falling_from(top, len(top) // 2)

    if face_type.profile:
        # The far side is hidden; follow the nose line (28 -> 30) and pass in front of the mouth.
        turned_left = face_type.yaw <= 0
        nose_side = 48 if turned_left else 54
        out_dir = np.array([-1.0 if turned_left else 1.0, 0.0])
        front = np.stack([
            local[28] + out_dir * 0.05 * w,
            local[30] + out_dir * 0.12 * w,
            local[nose_side] + out_dir * 0.10 * w,
            local[8] + np.array([0.0, chin_drop]) + out_dir * 0.05 * w,
        ])
        if turned_left:   # visible jaw is 8..14, on the image's right; nose line on its left
            side = jaw[6:]                                  # chin .. right cheek
            top_side = _bezier(right_end, np.array([(right_end[0] + bridge[0]) / 2, bridge[1] - 0.04 * h]), bridge)
            top_side = _below_eyes(top_side, local, h)
            # bridge -> down the nose line -> chin -> along the jaw -> back up over the cheek
            outline = np.concatenate([front, side, top_side[1:-1]])
        else:             # the mirror image
            side = jaw[:7]                                  # left cheek .. chin
            top_side = _bezier(bridge, np.array([(left_start[0] + bridge[0]) / 2, bridge[1] - 0.04 * h]), left_start)
            top_side = _below_eyes(top_side, local, h)
            outline = np.concatenate([top_side[1:], side[1:], front[::-1]])
    else:
        outline = np.concatenate([jaw, top[1:-1]])
    return frame.to_image(outline)


# ------------------------------------------------------------------------------------------------
# Rendering


def _fill(shape_hw, polygon, offset) -> np.ndarray:
    """Anti-aliased coverage (float 0..1) of a polygon, at 1/16 px precision."""
    canvas = np.zeros(shape_hw, np.uint8)
    pts = np.round((polygon - offset) * 16).astype(np.int32)
    cv2.fillPoly(canvas, [pts], 255, lineType=cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255.0


def _face_light(image: np.ndarray, lm: np.ndarray) -> float:
    """Mean brightness (0..1) of the skin between the eyes and nose, so masks are lit like the face."""
    pts = lm[[36, 39, 42, 45, 35, 31]]
    x1, y1 = (max(int(v), 0) for v in pts.min(axis=0))
    x2, y2 = (max(int(v) + 1, 0) for v in pts.max(axis=0))  # (a negative end would count from the far side)
    patch = image[y1:y2, x1:x2]
    if patch.size == 0:
        return 0.6
    return min(max(sum(cv2.mean(patch)[:3]) / 3 / 255.0, 0.08), 1.0)


SHARP_PHOTO_SIGMA = 1.0  # px: the blur `face_blur_sigma` reads on the sharp faces of press photos (0.8-1.6)


def face_blur_sigma(image: np.ndarray, lm: np.ndarray) -> float:
    """The Gaussian sigma (px) of the face's own blur, so that a mask can be drawn as sharp as the face
    it is on: by re-blurring (Zhuo & Sim, "Defocus map estimation from a single image", 2011): at an
    edge blurred by sigma, blurring again by s lowers the gradient by sqrt(sigma^2 + s^2) / sigma, read
    as the median ratio over the strongest 5 % of the face's gradients. A face wider than 256 px is
    measured at 256 px and scaled back. On press photos blurred by 1, 3 and 5 px it read 1.4, 3.4 and
    4.8-5.6 px (1.0 untouched)."""
    sigma, scale = _blur_as_measured(image, lm)
    return sigma * scale


def mask_blur(image: np.ndarray, lm: np.ndarray) -> float:
    """The blur (px) a mask drawn sharp needs to be as blurred as its face: what `face_blur_sigma`
    reads beyond a sharp photo's (`SHARP_PHOTO_SIGMA`), taken at the scale it was measured at (a face
    of 600 px, measured at 256, read a sharp photo's floor as 2.4 px and got masks softer than it)."""
    sigma, scale = _blur_as_measured(image, lm)
    return float(np.sqrt(max(sigma ** 2 - SHARP_PHOTO_SIGMA ** 2, 0.0)) * scale)


def _blur_as_measured(image: np.ndarray, lm: np.ndarray) -> tuple[float, float]:
    """(the face's blur in px of the image it was measured on, that image's scale: 1 up to 256 px wide)."""
    h, w = image.shape[:2]
    x1, y1 = (max(int(v), 0) for v in np.floor(lm.min(axis=0)))
    x2, y2 = (min(int(v), m) for v, m in zip(np.ceil(lm.max(axis=0)), (w, h)))
    if x2 - x1 < 8 or y2 - y1 < 8:
        return 0.0, 1.0
    grey = cv2.cvtColor(np.ascontiguousarray(image[y1:y2, x1:x2]), cv2.COLOR_RGB2GRAY).astype(np.float32)
    scale = max(1.0, (x2 - x1) / 256.0)
    if scale > 1:
        grey = cv2.resize(grey, (max(8, round((x2 - x1) / scale)), max(8, round((y2 - y1) / scale))),
                          interpolation=cv2.INTER_AREA)

    def gradient(a):
        return np.hypot(cv2.Sobel(a, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(a, cv2.CV_32F, 0, 1, ksize=3))

    sharp, again = gradient(grey), gradient(cv2.GaussianBlur(grey, (0, 0), 2.0))
    strong = sharp >= np.percentile(sharp, 95)
    if not sharp[strong].max(initial=0) > 0:
        return 0.0, scale  # a flat patch: nothing to measure
    ratio = float(np.median(sharp[strong] / np.maximum(again[strong], 1e-3)))
    sigma = 2.0 / np.sqrt(ratio ** 2 - 1) if ratio > 1.01 else 14.0
    return float(min(sigma, 14.0)), scale


@dataclass(frozen=True)
class RenderContext:
    """What a texture function gets: local coordinates of every ROI pixel, in face units."""

    u: np.ndarray   # across the mask: -0.5 (image left jaw) .. 0.5
    v: np.ndarray   # down the face: 0 at the nose bridge, 1 at the chin
    face_width: float
    face_height: float
    rng: np.random.Generator
    drawn: np.ndarray | None = None  # the pixels the mask covers (bool), before its edge is softened

    @property
    def v_in_widths(self) -> np.ndarray:
        """`v` in the same unit as `u`, for patterns that must stay square."""
        return self.v * (self.face_height / self.face_width)

    def edge_px(self) -> np.ndarray:
        """Per pixel, its distance in pixels inside the mask's drawn edge (0 outside), for what runs
        along the edge (a KN95's welded seam) wherever the outline goes."""
        if self.drawn is None:
            raise ValueError("this RenderContext has no drawn mask to measure from")
        return cv2.distanceTransform(self.drawn.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def _render(image: np.ndarray, landmarks68: np.ndarray, outline: np.ndarray, texture_fn, params: dict,
            face_type: FaceType, loops: list[tuple[np.ndarray, np.ndarray]] = ()) -> tuple[np.ndarray, np.ndarray]:
    lm = landmarks68  # checked by the style's render (face_landmarks), which passes them on
    frame = FaceFrame.from_landmarks(lm)
    h_img, w_img = image.shape[:2]
    pad = int(np.ceil(0.1 * frame.width)) + 3
    # The mask is drawn over its whole window, then the part inside the image is kept: the same face
    # and seed give the same pixels however far the image extends past the face (drawn over the window
    # cut at the image's edge, the fabric noise, sized and normalised to it, moved by up to 38 levels).
    out = np.ascontiguousarray(image.copy())
    coverage = np.zeros((h_img, w_img), bool)
    cut = _window(np.floor(outline.min(axis=0)).astype(int) - pad, np.ceil(outline.max(axis=0)).astype(int) + pad,
                  (w_img, h_img))
    if cut is None:
        return out, coverage
    (wx1, wy1, wx2, wy2), (x1, y1, x2, y2), inner = cut
    alpha = _fill((wy2 - wy1, wx2 - wx1), outline, np.array([wx1, wy1], dtype=np.float64))
    guard = _eye_guard(alpha.shape, (wx1, wy1), lm, EYE_CLEARANCE * frame.height)
    alpha *= guard
    drawn = alpha >= 0.5
    coverage[y1:y2, x1:x2] = drawn[inner]

    # as sharp as the face: the blur a sharp mask needs to match the face's own (a mask drawn crisp on a
    # defocused face looked pasted on: 4x the face's sharpness), at most 4 % of the face's width
    blur = mask_blur(image, lm)
    if face_type.blurred:  # typed blurred (the face type's own reading): never crisper than before
        blur = max(blur, 1.0, 0.01 * frame.width)
    blur = min(blur, 0.04 * frame.width)
    soft = max(0.5, 0.006 * frame.width, blur)  # edge softening grows with the face
    alpha = cv2.GaussianBlur(alpha, (0, 0), soft) * guard

    # Face-frame coordinates of every window pixel, by broadcasting one row and one column (float32).
    dx = (np.arange(wx1, wx2, dtype=np.float32) - np.float32(frame.origin[0]))[None, :]
    dy = (np.arange(wy1, wy2, dtype=np.float32) - np.float32(frame.origin[1]))[:, None]
    ax, ay = frame.x_axis.astype(np.float32), frame.y_axis.astype(np.float32)
    ctx = RenderContext(
        u=(dx * ax[0] + dy * ax[1]) * np.float32(1.0 / frame.width),
        v=(dx * ay[0] + dy * ay[1]) * np.float32(1.0 / frame.height),
        face_width=frame.width,
        face_height=frame.height,
        rng=np.random.default_rng(params["texture_seed"]),
        drawn=drawn,
    )
    colour = texture_fn(ctx, params)  # (h, w, 3) float 0..1, shaded
    light = float(np.clip(_face_light(image, lm) / 0.6, 0.35, 1.0))
    if blur >= 0.5:  # the fabric's pattern and folds as blurred as the face
        colour = cv2.GaussianBlur(colour, (0, 0), blur)

    # Contact shadow on the skin just outside the lower edge and the sides.
    shift = max(1, int(round(0.02 * frame.width)))
    shadow = cv2.GaussianBlur(alpha, (0, 0), max(1.0, 0.025 * frame.width))
    # cast towards the chin along the face's own axis (straight down the image put it between the mask
    # and the eyes of a face upside down), nothing wrapping round
    towards_chin = frame.y_axis * shift
    shadow = cv2.warpAffine(shadow, np.float32([[1, 0, towards_chin[0]], [0, 1, towards_chin[1]]]),
                            (shadow.shape[1], shadow.shape[0]), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    shadow = np.clip(shadow - alpha, 0, 1) * 0.35 * guard
    alpha, shadow, colour = alpha[inner], shadow[inner], colour[inner]

    # out = image * (1 - alpha) * (1 - shadow) + colour * light * alpha, in 0..255
    region = out[y1:y2, x1:x2].astype(np.float32)
    region *= ((1.0 - alpha) * (1.0 - shadow))[..., None]
    region += colour * (alpha * np.float32(255.0 * light))[..., None]
    region += 0.5
    out[y1:y2, x1:x2] = np.clip(region, 0, 255, out=region).astype(np.uint8)

    loop_colour = tuple(int(c) for c in np.clip(np.array(params["colour"]) * 0.85 * light, 0, 255))
    thickness = max(1, int(round(0.012 * frame.width)))
    _draw_loops(out, loops, loop_colour, thickness, under=(alpha, (x1, y1)), blur=blur)
    return out, coverage


def _window(low, high, size):
    """A drawing window from `low` (x, y) to `high` (exclusive), kept within the image's size past each
    edge (wild landmarks cost no more than that), as (window (x1, y1, x2, y2), the part inside the
    image (x1, y1, x2, y2), that part's slices in the window); None when nothing of it is inside."""
    w, h = (int(v) for v in size)
    wx1, wy1 = (int(v) for v in np.maximum(low, (-w, -h)))
    wx2, wy2 = (int(v) for v in np.minimum(high, (2 * w, 2 * h)))
    x1, y1, x2, y2 = max(wx1, 0), max(wy1, 0), min(wx2, w), min(wy2, h)
    if x2 <= x1 or y2 <= y1:
        return None
    return (wx1, wy1, wx2, wy2), (x1, y1, x2, y2), (slice(y1 - wy1, y2 - wy1), slice(x1 - wx1, x2 - wx1))


def _draw_loops(out: np.ndarray, loops, colour, thickness: int, under: tuple | None = None,
                blur: float = 0.0) -> None:
    """Ear loops, anti-aliased, drawn as a coverage on a canvas that holds them whole and then laid
    over the image where it is: OpenCV clips a line at the image's edge, which shaded its last column
    otherwise. `under` (the mask's alpha over a part of the image, and that part's top-left (x, y)):
    the mask stays on top, a loop leaves from the mask's soft edge (cut by the mask's hard coverage,
    a blurred loop ended in a jagged seam), it is not drawn across the fabric. `blur` (px): the loops
    blurred as the face is (a coverage, not the image's pixels, is blurred: the same loops however far
    the image extends)."""
    if not len(loops):
        return
    ends = np.round(np.array([p for loop in loops for p in loop], dtype=np.float64) * 16).astype(np.int64)
    reach = thickness + 2 + int(np.ceil(3 * blur))
    cut = _window(ends.min(axis=0) // 16 - reach, ends.max(axis=0) // 16 + reach + 1, out.shape[1::-1])
    if cut is None:
        return
    (x1, y1, x2, y2), (cx1, cy1, cx2, cy2), inner = cut
    canvas = np.zeros((y2 - y1, x2 - x1), np.uint8)
    origin = np.array([x1, y1], np.int64) * 16
    for a, b in zip(ends[0::2] - origin, ends[1::2] - origin):
        cv2.line(canvas, tuple(int(v) for v in a), tuple(int(v) for v in b), 255, thickness, cv2.LINE_AA, shift=4)
    alpha = canvas.astype(np.float32) * np.float32(1 / 255)
    if blur >= 0.5:
        alpha = cv2.GaussianBlur(alpha, (0, 0), blur)
    alpha = alpha[inner]
    if under is not None:
        mask_alpha, (mx1, my1) = under
        ox1, oy1 = max(cx1, mx1), max(cy1, my1)
        ox2, oy2 = min(cx2, mx1 + mask_alpha.shape[1]), min(cy2, my1 + mask_alpha.shape[0])
        if ox2 > ox1 and oy2 > oy1:
            alpha[oy1 - cy1:oy2 - cy1, ox1 - cx1:ox2 - cx1] *= 1 - mask_alpha[oy1 - my1:oy2 - my1, ox1 - mx1:ox2 - mx1]
    region = out[cy1:cy2, cx1:cx2].astype(np.float32)
    region += (np.asarray(colour, np.float32) - region) * alpha[..., None]
    out[cy1:cy2, cx1:cx2] = np.clip(region + 0.5, 0, 255).astype(np.uint8)


def _band(phase: np.ndarray, px) -> np.ndarray:
    """The share of each pixel inside the first half of every period of `phase` (in periods; `px`:
    one pixel in periods), its two edges ramped over one pixel."""
    f = phase % 1.0
    inside = np.where(f < 0.5, np.minimum(f, 0.5 - f), -np.minimum(f - 0.5, 1.0 - f))
    return np.clip(inside / px + 0.5, 0, 1).astype(np.float32)


def _cylinder(ctx: RenderContext, light_side: float) -> np.ndarray:
    """Shading of a cloth wrapped around a face: darker towards the sides and under the chin."""
    u = ctx.u
    s = np.float32(0.72) + np.float32(0.28) * np.cos(np.clip(u, -0.75, 0.75) * np.float32(np.pi * 0.95))
    s += np.float32(light_side * 0.25) * u
    below = np.clip(ctx.v - np.float32(0.75), 0, None)
    s -= np.float32(0.48) * below * below
    return s


def _fabric_noise(ctx: RenderContext, amount: float, scale_px: float = 1.2) -> np.ndarray:
    noise = ctx.rng.standard_normal(ctx.u.shape, dtype=np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), scale_px)
    return np.float32(1.0) + np.float32(amount / (noise.std() + 1e-6)) * noise


def _ear_loops(lm: np.ndarray, outline: np.ndarray, face_type: FaceType) -> list:
    """Two loops per side from the mask's corners to the ear; none on profiles, whose far ear is hidden
    and whose near loop runs along the image plane where landmarks cannot place it."""
    if face_type.profile:
        return []
    frame = FaceFrame.from_landmarks(lm)
    local_outline = frame.to_local(outline)
    local = frame.to_local(lm)
    loops = []
    yaw = face_type.yaw
    for top, side, lobe, sign in ((16, 15, 14, 1), (0, 1, 2, -1)):
        # the ear sits just outside the jaw's upper end: its root at the jaw's top point (row 0 / 16, at
        # about the eyes' height), its lobe beside row 1 / 15 at the height of row 2 / 14. The upper loop
        # runs from the mask's upper corner to the root, the lower one from the lower corner up to the
        # lobe; the mask's own edge hides where they leave it (`_draw_loops`). (A root raised above the
        # eyes and a lobe point above the lower corner's reach drew a stick in front of the ear and a
        # loop across the fabric.)
        # on the far side of a turned face, as close to the jaw as its outline (`far_side_push`): a loop
        # ending 4 % outside it ran beside the mask's pulled-in edge, or out into the background
        out_by = np.array([0.04 * sign * frame.width * (far_side_push(yaw) if sign * yaw > 0 else 1.0), 0.0])
        root = local[top] + out_by
        lobe_pt = np.array([local[side][0], local[lobe][1]]) + out_by
        upper = np.argmax(sign * local_outline[:, 0] - 0.3 * local_outline[:, 1])
        lower = np.argmax(sign * local_outline[:, 0] + 0.6 * local_outline[:, 1])
        loops.append((outline[upper], frame.to_image(root)))
        loops.append((outline[lower], frame.to_image(lobe_pt)))
    return loops


# ------------------------------------------------------------------------------------------------
# Styles


class MaskStyle:
    """Base class: `sample` draws every random choice, `render` draws the mask from them. A style
    of your own subclasses it: `sample` returns JSON-able params whose `style` is its `name`, and
    `render` returns a new image and the coverage of what it drew, leaving the image it is given as
    it was (the augmenter keeps the photo's pixels where a style says it drew nothing)."""

    name = "base"

    def sample(self, rng: np.random.Generator, face_type: FaceType = FRONTAL) -> dict:
        raise NotImplementedError

    def render(self, image: np.ndarray, landmarks68: np.ndarray, params: dict,
               face_type: FaceType = FRONTAL) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def draws(self, params: dict) -> bool:
        """Whether `params` are this style's (`OneOf.render` finds the style that drew them)."""
        return params.get("style") == self.name

    def _drawable(self, params, styles: tuple, needs: tuple = ()) -> dict:
        """`params` as a built-in `render` takes them: a dict with the keys it reads, and not of another
        built-in style than `styles` (a style of the user's own may draw through a built-in renderer
        under its own name). A cloth mask's params given to the surgical renderer, or to the seed's,
        drew another mask without a word, or failed with KeyError."""
        if not isinstance(params, dict):
            raise ValueError(f"params are a dict (what the style's sample() returned: a face record's mask), "
                             f"got {type(params).__name__}")
        style = params.get("style")
        if isinstance(style, str) and style in STYLES and style not in styles and not self.draws(params):
            raise ValueError(f"params of style {style!r} are not drawn by {type(self).__name__} ({', '.join(styles)}): "
                             f"render them with maskgen.masks.STYLES[{style!r}] or the style that sampled them")
        missing = [key for key in ("style", *needs) if key not in params] if needs else []
        if missing:
            raise ValueError(f"{type(self).__name__} params lack {', '.join(missing)}: give the params its sample() "
                             "returned (a face record's mask)")
        return params

    def __call__(self, image, landmarks68, rng: np.random.Generator | int, face_type: FaceType = FRONTAL):
        check_rgb(image)  # before a random choice is drawn
        lm, face_type = face_and_type(landmarks68, face_type)
        params = self.sample(as_generator(rng), face_type)
        out, coverage = self.render(image, lm, params, face_type)
        return out, coverage, params

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _choice(rng, options):
    return options[int(rng.integers(len(options)))]


def _choices(what: str, given, known) -> tuple:
    """A style's options (colours, patterns, kinds): at least one, each a known name."""
    given = (given,) if isinstance(given, str) else tuple(given)
    if not given:
        raise ValueError(f"no {what} given; choose from {sorted(known)}")
    unknown = set(given) - set(known)
    if unknown:
        raise ValueError(f"unknown {what} {sorted(unknown)}; choose from {sorted(known)}")
    return given


class SeedMask(MaskStyle):
    """The seed project's black polygon, exactly; the default style."""

    name = "seed"

    def __init__(self, colour=(0, 0, 0), mirror_profiles: bool = True):
        self.colour = check_colour(colour)
        if not isinstance(mirror_profiles, (bool, np.bool_)):  # "no" was taken as True
            raise ValueError(f"mirror_profiles is True or False, got {mirror_profiles!r}")
        self.mirror_profiles = bool(mirror_profiles)

    def sample(self, rng, face_type=FRONTAL):
        rng = as_generator(rng)
        # a profile's polygon follows its yaw; a type without one (FaceType.from_code) leaves it to the
        # landmarks at render time (it recorded the unmirrored rows, and render drew the mirrored ones)
        undecided = face_type.profile and self.mirror_profiles and not np.isfinite(face_type.yaw)
        return {"style": "seed", "colour": list(self.colour), "mirror_profiles": self.mirror_profiles,
                "polygon": None if undecided else list(seed_polygon_rows(face_type, self.mirror_profiles))}

    def render(self, image, landmarks68, params, face_type=FRONTAL):
        self._drawable(params, ("seed",))  # every key has its default
        return draw_seed_mask(image, landmarks68, face_type, params.get("mirror_profiles", True),
                              tuple(params.get("colour", (0, 0, 0))), params.get("polygon"))


SURGICAL_COLOURS = {"light_blue": (150, 196, 226), "blue": (112, 170, 214), "light_green": (168, 214, 190),
                    "white": (236, 238, 240), "pink": (236, 190, 200), "black": (40, 42, 46)}


class SurgicalMask(MaskStyle):
    """Pleated disposable mask: two or three horizontal pleats, bound edges, nose wire, ear loops."""

    name = "surgical"

    def __init__(self, colours=("light_blue", "blue", "light_green", "white")):
        self.colours = _choices("surgical colours", colours, SURGICAL_COLOURS)

    def sample(self, rng, face_type=FRONTAL):
        rng = as_generator(rng)
        name = _choice(rng, self.colours)
        return {"style": "surgical", "colour_name": name, "colour": list(SURGICAL_COLOURS[name]),
                "pleats": int(rng.integers(2, 4)), "light_side": round(float(rng.uniform(-1, 1)), 3),
                "ear_loops": True, "texture_seed": int(rng.integers(2**31))}

    def render(self, image, landmarks68, params, face_type=FRONTAL):
        check_rgb(image)
        self._drawable(params, ("surgical",), ("colour", "pleats", "light_side", "texture_seed"))
        lm, face_type = face_and_type(landmarks68, face_type)
        outline = mask_outline(lm, "surgical", face_type)
        base = np.array(params["colour"], np.float32) / 255.0

        def texture(ctx, p):
            v = ctx.v
            shade = _cylinder(ctx, p["light_side"])
            shade = shade * pleat_shade(v, p["pleats"], 0.6 * ctx.face_height / p["pleats"])
            shade = shade * np.where(v < 0.07, 1.05, 1.0)  # nose wire channel
            shade = shade * _fabric_noise(ctx, 0.015)
            return np.clip(base[None, None, :] * shade[..., None], 0, 1)

        loops = _ear_loops(lm, outline, face_type) if params.get("ear_loops") else []
        return _render(image, lm, outline, texture, params, face_type, loops)


def pleat_shade(v: np.ndarray, pleats: int, pleat_px: float) -> np.ndarray:
    """A surgical mask's pleats between v = 0.25 and 0.85 (v: 0 at the top edge, 1 at the bottom) as
    a brightness factor: each a lit face and a shadowed fold line, `pleat_px` pixels high. Continuous
    in v but for the fold line's edges, which ramp over one pixel: hard cuts (a fold line's, and the
    lit face's 10 % jump back at each pleat's start) stepped in 1-px stairs on a tilted face and
    broke into dashes on a small one."""
    t = np.clip((v - 0.25) / 0.6, 0, 1) * pleats
    frac = t - np.floor(t)
    edge = np.float32(max(pleat_px, 1.0))
    # the pleated band's own top and bottom edges ramp over one pixel too
    inside = np.clip(np.minimum(v - 0.25, 0.85 - v) * (edge * pleats / 0.6) + 0.5, 0, 1)
    # brighter up each pleat's face, and back down across its fold band to meet the next one's start
    lit = 0.93 + 0.10 * np.minimum(frac / 0.9, (1.0 - frac) / 0.1)
    # signed distance to the fold band frac in [0.9, 1) (it ends where the next pleat begins, at the
    # wrap to 0), in pixels: both of its edges ramp over one pixel
    into = np.where(frac >= 0.9, np.minimum(frac - 0.9, 1.0 - frac), -np.minimum(0.9 - frac, frac))
    fold = np.clip(into * edge + 0.5, 0, 1)
    return 1.0 + inside * (lit * (1.0 - 0.20 * fold) - 1.0)


CLOTH_COLOURS = {"black": (30, 30, 34), "navy": (34, 48, 88), "grey": (128, 130, 134), "denim": (70, 100, 140),
                 "red": (170, 36, 44), "maroon": (110, 30, 40), "olive": (100, 110, 60), "beige": (214, 196, 160),
                 "pink": (226, 150, 170), "teal": (30, 128, 128), "white": (232, 232, 228), "mustard": (210, 170, 50)}
CLOTH_PATTERNS = ("solid", "stripes", "checks", "dots")


class ClothMask(MaskStyle):
    """Fabric mask: solid colour or a pattern (stripes, checks, dots), centre seam, woven texture."""

    name = "cloth"

    def __init__(self, patterns=CLOTH_PATTERNS, colours=tuple(CLOTH_COLOURS), pattern_colours=None):
        """`colours`: the fabric's; `pattern_colours`: the stripes', checks' and dots' (default: any of the
        12 other than the fabric's)."""
        self.patterns = _choices("cloth patterns", patterns, CLOTH_PATTERNS)
        self.colours = _choices("cloth colours", colours, CLOTH_COLOURS)
        self.pattern_colours = None if pattern_colours is None else \
            _choices("cloth pattern colours", pattern_colours, CLOTH_COLOURS)

    def sample(self, rng, face_type=FRONTAL):
        rng = as_generator(rng)
        name = _choice(rng, self.colours)
        pool = self.pattern_colours or tuple(CLOTH_COLOURS)
        second = _choice(rng, tuple(c for c in pool if c != name) or pool)
        return {"style": "cloth", "pattern": _choice(rng, self.patterns), "colour_name": name,
                "colour": list(CLOTH_COLOURS[name]), "pattern_colour_name": second,
                "pattern_colour": list(CLOTH_COLOURS[second]),
                "pattern_scale": round(float(rng.uniform(0.06, 0.14)), 4),
                "pattern_angle": float(_choice(rng, (0.0, 45.0, 90.0, -45.0))),
                "centre_seam": bool(rng.integers(2)), "light_side": round(float(rng.uniform(-1, 1)), 3),
                "ear_loops": True, "texture_seed": int(rng.integers(2**31))}

    def render(self, image, landmarks68, params, face_type=FRONTAL):
        check_rgb(image)
        self._drawable(params, ("cloth",), ("colour", "pattern", "pattern_colour", "pattern_scale", "pattern_angle",
                                            "centre_seam", "light_side", "texture_seed"))
        lm, face_type = face_and_type(landmarks68, face_type)
        outline = mask_outline(lm, "cloth", face_type)
        base = np.array(params["colour"], np.float32) / 255.0
        second = np.array(params["pattern_colour"], np.float32) / 255.0

        def texture(ctx, p):
            # pattern coordinates in face-width units, so patterns scale with the face
            a = np.radians(p["pattern_angle"])
            vw = ctx.v_in_widths
            s = ctx.u * np.cos(a) + vw * np.sin(a)
            period = p["pattern_scale"]
            pattern = p["pattern"]
            # each pattern as the share of a pixel its second colour covers, edges ramped over one
            # pixel (hard thresholds stepped in 1-px stairs and broke dots into blocks on faces of
            # 100 px); `px`: one pixel in pattern periods
            px = np.float32(1.0 / max(period * ctx.face_width, 1e-6))
            if pattern == "stripes":
                m, mean = _band(s / period, px), 0.5
            elif pattern == "checks":
                a, b = _band(ctx.u / period, px), _band(vw / period, px)
                m, mean = a + b - 2 * a * b, 0.5  # one or the other: an exclusive or of shares
            elif pattern == "dots":
                gu = (ctx.u / period) % 1.0 - 0.5
                gv = (vw / period) % 1.0 - 0.5
                m, mean = np.clip((0.3 - np.sqrt(gu ** 2 + gv ** 2)) / px + 0.5, 0, 1), np.pi * 0.09
            else:
                m, mean = np.zeros(ctx.u.shape, np.float32), 0.0
            # a period under 4 px aliases however its edges are drawn (45-degree stripes became
            # vertical bands on 35 px faces): seen from that far, the fabric is its mean colour
            fade = np.float32(np.clip((period * ctx.face_width - 2.0) / 2.0, 0.0, 1.0))
            m = (m * fade + np.float32(mean) * (1 - fade)).astype(np.float32)
            rgb = base[None, None, :] + (second - base)[None, None, :] * m[..., None]
            shade = _cylinder(ctx, p["light_side"]) * _fabric_noise(ctx, 0.04, 0.8)
            if p["centre_seam"]:
                shade = shade * (1 - 0.18 * np.exp(-((ctx.u * ctx.face_width) / 1.5) ** 2))
            return np.clip(rgb * shade[..., None], 0, 1)

        loops = _ear_loops(lm, outline, face_type) if params.get("ear_loops") else []
        return _render(image, lm, outline, texture, params, face_type, loops)


RESPIRATOR_COLOURS = {"white": (238, 238, 234), "off_white": (226, 222, 210), "grey": (176, 178, 180)}


class RespiratorMask(MaskStyle):
    """N95 (moulded dome, optional exhalation valve) or KN95 (folded flat, vertical centre fold)."""

    name = "respirator"

    def __init__(self, kinds=("n95", "kn95"), colours=tuple(RESPIRATOR_COLOURS)):
        self.kinds = _choices("respirator kinds", kinds, ("n95", "kn95"))
        self.colours = _choices("respirator colours", colours, RESPIRATOR_COLOURS)

    def draws(self, params: dict) -> bool:
        return params.get("style") in self.kinds

    def sample(self, rng, face_type=FRONTAL):
        rng = as_generator(rng)
        name = _choice(rng, self.colours)
        kind = _choice(rng, self.kinds)
        return {"style": kind, "colour_name": name, "colour": list(RESPIRATOR_COLOURS[name]),
                "valve": bool(kind == "n95" and rng.random() < 0.4),
                "valve_side": float(_choice(rng, (-1.0, 1.0))),
                "light_side": round(float(rng.uniform(-1, 1)), 3), "ear_loops": True,
                "texture_seed": int(rng.integers(2**31))}

    def render(self, image, landmarks68, params, face_type=FRONTAL):
        check_rgb(image)
        self._drawable(params, self.kinds, ("colour", "light_side", "texture_seed"))
        if params["style"] == "n95":  # its valve, where it has one
            self._drawable(params, self.kinds, ("valve",) + (("valve_side",) if params.get("valve") else ()))
        lm, face_type = face_and_type(landmarks68, face_type)
        kind = params["style"]
        outline = mask_outline(lm, kind, face_type)
        base = np.array(params["colour"], np.float32) / 255.0

        def texture(ctx, p):
            # the lit side at most the colour itself: 1.12 x white clipped a panel to flat 255
            if kind == "n95":  # dome: brightest at the centre, falling off radially
                r2 = (ctx.u / 0.55) ** 2 + ((ctx.v - 0.5) / 0.7) ** 2
                shade = (1.0 - 0.32 * np.clip(r2, 0, 1.5) + p["light_side"] * ctx.u * 0.2) \
                    / (1.0 + 0.11 * abs(p["light_side"]))
                if p["valve"]:
                    # a round valve (distances in face widths: v in heights made it an ellipse), its
                    # disc and rim ramped over a pixel (hard thresholds drew a stepped octagon)
                    px = 1.0 / ctx.face_width
                    d = np.sqrt((ctx.u - p["valve_side"] * 0.2) ** 2
                                + ((ctx.v - 0.55) * (ctx.face_height / ctx.face_width)) ** 2)
                    disc = np.clip((0.085 - d) / px + 0.5, 0, 1)
                    rim = np.clip((max(0.01, 0.75 * px) - np.abs(d - 0.085)) / px + 0.5, 0, 1)
                    shade = shade * (1 - disc) + disc * (0.78 + 0.6 * np.clip(0.085 - d, 0, None))
                    shade = shade * (1 - rim) + 0.6 * rim
            else:  # kn95: two flat panels meeting at a vertical fold, lit from one side
                left = ctx.u < 0
                panel = np.where(left, 1.0 - 0.12 * p["light_side"], 1.0 + 0.12 * p["light_side"]) \
                    / (1.0 + 0.12 * abs(p["light_side"]))
                shade = panel * (0.93 + 0.07 * np.cos(np.clip(ctx.u, -0.7, 0.7) * np.pi * 0.7))
                fold = np.exp(-((ctx.u * ctx.face_width) / 1.2) ** 2)
                shade = shade * (1 - 0.22 * fold)
                # the welded seam that runs round a KN95 a little inside its edge, its sides ramped over
                # a pixel: a straight band across the top (v 0.04 to 0.08), cut off by the pointed edge
                # and stepped in whole pixels, read as a grey bar over the nose
                edge = ctx.edge_px()
                near, far = np.float32(0.02 * ctx.face_height), np.float32(0.035 * ctx.face_height)
                # (on the mask only: on a face of a few px `near` is under half a pixel, and the ramp
                # reached the pixels outside it)
                seam = np.clip(np.minimum(edge - near, far - edge) + np.float32(0.5), 0, 1) * ctx.drawn
                shade = shade * (1 - np.float32(0.1) * seam)
            shade = shade * _fabric_noise(ctx, 0.012, 1.0)
            return np.clip(base[None, None, :] * shade[..., None], 0, 1)

        loops = _ear_loops(lm, outline, face_type) if params.get("ear_loops") else []
        return _render(image, lm, outline, texture, params, face_type, loops)


class OneOf(MaskStyle):
    """Pick one of several styles per face (weights optional), like albumentations' OneOf."""

    name = "one_of"

    def __init__(self, styles, weights=None):
        self.styles = list(styles)
        if not self.styles:
            raise ValueError("OneOf needs at least one style")
        not_styles = [s for s in self.styles if not isinstance(s, MaskStyle)]
        if not_styles:
            raise ValueError(f"OneOf takes MaskStyle objects, got {not_styles[0]!r}")
        w = np.ones(len(self.styles)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (len(self.styles),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be finite and non-negative, one per style, not all zero; got {weights!r}")
        self.weights = w / w.sum()

    def _pick(self, rng) -> MaskStyle:
        return self.styles[int(rng.choice(len(self.styles), p=self.weights))]

    def sample(self, rng, face_type=FRONTAL):
        rng = as_generator(rng)
        return self._pick(rng).sample(rng, face_type)

    def draws(self, params: dict) -> bool:
        return any(style.draws(params) for style in self.styles)

    def render(self, image, landmarks68, params, face_type=FRONTAL):
        for style in self.styles:
            if style.draws(params):
                return style.render(image, landmarks68, params, face_type)
        raise ValueError(f"no style of this OneOf draws params of style {params.get('style')!r}")

    def __call__(self, image, landmarks68, rng, face_type=FRONTAL):
        # the chosen style itself, so a style of the user's own is rendered by its own code
        rng = as_generator(rng)
        return self._pick(rng)(image, landmarks68, rng, face_type)


# Renderers by the `style` value that params carry (n95 and kn95 share one class).
STYLES: dict[str, MaskStyle] = {"seed": SeedMask(), "surgical": SurgicalMask(), "cloth": ClothMask(),
                                "n95": RespiratorMask(kinds=("n95",)), "kn95": RespiratorMask(kinds=("kn95",))}
STYLE_NAMES = ("seed", "surgical", "cloth", "n95", "kn95", "random")


def style_from_name(name: str) -> MaskStyle:
    """`seed`, `surgical`, `cloth`, `n95`, `kn95`, or `random` (one of the four realistic styles per face)."""
    if name == "random":
        return OneOf([SurgicalMask(), ClothMask(), RespiratorMask(kinds=("n95",)), RespiratorMask(kinds=("kn95",))])
    try:
        return STYLES[name]
    except KeyError:
        raise ValueError(f"unknown mask style {name!r}; choose from {STYLE_NAMES}") from None


def style_options(style: "str | MaskStyle"):
    """What a style draws, as JSON values: its class and the options it was made with (a name: the
    built-in style it names), nested for `OneOf` and for a style's own helper objects. Two styles of
    one `name` with other options (a `OneOf` of other styles, other colours) differ here; the jobs
    record it, so that a rerun with another does not mix two kinds of masks in one output. Nothing in
    it depends on the process: a function is its qualified name, a set is sorted, an object without
    attributes of its own is its class, a large array its content's hash (never a repr's address)."""
    def plain(value, path: tuple = ()):
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray) and value.size <= 64:
            return plain(value.tolist())
        if isinstance(value, np.ndarray):  # a style's texture or lookup table: by its content's hash
            return f"array {value.dtype}{list(value.shape)} sha256:{hashlib.sha256(value.tobytes()).hexdigest()[:16]}"
        if id(value) in path:  # a style that refers back to one holding it
            return "<cycle>"
        inner = (*path, id(value))
        if isinstance(value, (list, tuple)):
            return [plain(v, inner) for v in value]
        if isinstance(value, (set, frozenset)):
            return sorted((plain(v, inner) for v in value), key=lambda v: json.dumps(v, sort_keys=True, default=str))
        if isinstance(value, dict):
            return {str(k): plain(v, inner) for k, v in sorted(value.items(), key=lambda item: str(item[0]))}
        if callable(value) and hasattr(value, "__qualname__"):  # a function, a method, a class
            return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
        kind = type(value)
        name = f"{kind.__module__}.{kind.__qualname__}"
        attrs = getattr(value, "__dict__", None)
        if not isinstance(attrs, dict):  # (a Generator, a lock: its class, not its address)
            return f"<{name}>"
        return {"class": name, **{k: plain(v, inner) for k, v in sorted(attrs.items()) if not k.startswith("_")}}

    return plain(style_from_name(style) if isinstance(style, str) else style)


def coverage_report(coverage: np.ndarray, landmarks68: np.ndarray) -> dict[str, bool]:
    """Does a mask do its job? Nose tip (30), every mouth point (48..67) and the chin (8) under the
    mask; every eye point (36..47) visible. Points outside the image count as not covered.
    `coverage`: the (H, W) boolean array a style's `render` returned with its image (0/1 integers
    too). A float array, or landmarks with NaN, read every point as uncovered: the eyes "visible"."""
    coverage = np.asarray(coverage)
    if coverage.ndim != 2 or not (coverage.dtype == bool or np.issubdtype(coverage.dtype, np.integer)):
        raise ValueError(f"coverage is the (H, W) boolean array a style's render returned, got {coverage.dtype} "
                         f"of shape {coverage.shape}")
    lm = np.round(face_landmarks(landmarks68, "a mask's coverage is read")).astype(int)
    h, w = coverage.shape

    def covered(rows):
        pts = lm[list(rows)]
        inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
        hit = np.zeros(len(pts), bool)
        hit[inside] = coverage[pts[inside, 1], pts[inside, 0]]
        return hit

    return {"nose_tip": bool(covered([30]).all()), "mouth": bool(covered(range(48, 68)).all()),
            "chin": bool(covered([8]).all()), "eyes_visible": bool(not covered(range(36, 48)).any())}
