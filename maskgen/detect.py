"""MTCNN face detection on ONNX Runtime, batched.

    detector = MTCNN()                      # builds/caches the ONNX graphs on first use
    faces = detector.detect(rgb)            # one image: list[Face], best score first
    batch = detector.detect_batch([a, b])   # many images: R-Net and O-Net see every candidate at once

Images are RGB uint8 arrays (H, W, 3), as `maskgen.decode.decode_image` returns them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from maskgen import boxes as B
from maskgen.checks import check_unit, is_number, is_whole
from maskgen.decode import check_rgb
from maskgen.runtime import MadeAgainWhereUnpickled

IMAGES_PER_CALL = 8
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
"""Order of the 5 points; left/right as seen in the image (the subject's right eye is `left_eye`)."""


@dataclass(frozen=True)
class DetectorOptions:
    """Everything that changes what MTCNN finds. Defaults are the MTCNN paper's and the `mtcnn` package's.

    - min_face_size: smallest face side, in pixels, that the image pyramid is built for (box
      regression can still return a face a little smaller; filter on `Face.width` for a hard cut);
      below 12 the image is enlarged by 12 / min_face_size; at least 4.
    - scale_factor: ratio between pyramid levels, in (0, 0.99]; closer to 1 finds more faces, more slowly.
    - thresholds: face-probability cut-offs of P-Net, R-Net and O-Net.
    - nms_thresholds: overlap cut-offs for P-Net within a scale, P-Net across scales, R-Net
      (intersection over union) and O-Net (intersection over the smaller box).
    - max_candidates: at most this many R-Net candidates per image (best P-Net scores kept), a
      bound on work for crowds and textures; 0 means no bound.
    """

    min_face_size: float = 20.0
    scale_factor: float = 0.709
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8)
    nms_thresholds: tuple[float, float, float, float] = (0.5, 0.7, 0.7, 0.7)
    max_candidates: int = 0

    def __post_init__(self):
        for name, n, low_open in (("thresholds", 3, False), ("nms_thresholds", 4, True)):
            values = getattr(self, name)
            if not isinstance(values, (tuple, list, np.ndarray)) or len(values) != n:  # (0.5: len()'s TypeError)
                raise ValueError(f"{name} must be {n} numbers in {'(0, 1]' if low_open else '[0, 1]'}, got {values!r}")
            for t in values:
                check_unit(name, t, low_open)
            object.__setattr__(self, name, tuple(float(t) for t in values))  # a list: hashable, equal to the tuple
        for name in ("min_face_size", "scale_factor"):  # ("20" or None was a TypeError in the pyramid)
            if not is_number(getattr(self, name)):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}")
        if not is_whole(self.max_candidates) or self.max_candidates < 0:
            raise ValueError(f"max_candidates must be a whole number >= 0, got {self.max_candidates!r}")
        B.pyramid_scales(100, 100, self.min_face_size, self.scale_factor)  # validates both


@dataclass(frozen=True)
class Face:
    """One detected face. Coordinates are pixels of the image given to the detector."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2, inside the image
    score: float
    landmarks: tuple[tuple[float, float], ...] = field(default=())  # 5 (x, y) in LANDMARK_NAMES order
    source: str = "mtcnn"  # which path found it: mtcnn, yunet, mtcnn+pad, yunet+pad, onet-whole-image
    # the box as detected where the image's edge cut it (None: `box`): the whole face's extent, which
    # its 68 landmarks are found from (`landmark_box`)
    full_box: tuple[float, float, float, float] | None = None

    @property
    def landmark_box(self) -> tuple[float, float, float, float]:
        """The box the 68 landmarks are found from: the face's whole extent, past the image's edge
        where it is cut (from the clipped box, a face cut by a third of its width had its points pressed
        inside the image and was read as a profile, its mouth left bare)."""
        return self.full_box if self.full_box is not None else self.box

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def points(self) -> np.ndarray:
        """The 5 landmarks as a (5, 2) float32 array, ready for `maskgen.align`."""
        return np.asarray(self.landmarks, dtype=np.float32).reshape(-1, 2)

    def to_dict(self) -> dict:
        return asdict(self)


def landmark_boxes(faces) -> np.ndarray:
    """(N, 4) float64: the boxes the faces' 68 landmarks are found from (`Face.landmark_box`)."""
    return np.array([f.landmark_box for f in faces], dtype=np.float64).reshape(-1, 4)


def clipped_face(box, height: int, width: int, **fields) -> Face:
    """A Face whose `box` is `box` (x1, y1, x2, y2) kept inside a `width` x `height` image, and whose
    `full_box` is `box` where that changed it."""
    full = tuple(float(v) for v in box)
    clipped = tuple(float(v) for v in B.clip_boxes(np.asarray([full], dtype=np.float64), height, width)[0])
    return Face(box=clipped, full_box=full if full != clipped else None, **fields)


def _normalise(image: np.ndarray) -> np.ndarray:
    check_rgb(image)
    return (image.astype(np.float32) - 127.5) * (1.0 / 128.0)


class MTCNN(MadeAgainWhereUnpickled):
    """The three-stage cascade; `device` is `auto` (CUDA when present), `cpu` or `cuda`."""

    _carried = ("options", "max_patches_per_call")  # settable after it is made: pickled as they are

    def __init__(self, options: DetectorOptions | None = None, device: str = "auto",
                 threads: int | None = None, max_patches_per_call: int = 2048, layout: str = "blocked"):
        from maskgen.mtcnn_graphs import build_bytes, cached_models
        from maskgen.runtime import create_session

        if options is not None and not isinstance(options, DetectorOptions):  # a dict failed at the first image
            raise ValueError(f"options are a DetectorOptions, got {type(options).__name__}")
        self.options = options or DetectorOptions()
        if threads is not None and (not is_whole(threads) or threads < 0):
            raise ValueError(f"threads must be a whole number >= 0 (0 or None: one per CPU), got {threads!r}")
        if not is_whole(max_patches_per_call) or max_patches_per_call < 1:  # failed at the first image
            raise ValueError(f"max_patches_per_call must be a whole number >= 1, got {max_patches_per_call!r}")
        self.max_patches_per_call = max_patches_per_call
        paths = cached_models()
        self.model_files = {name: path.name for name, path in paths.items()}
        # layout "plain" (maskgen.mtcnn_graphs: the networks op for op, built in memory) is for comparisons
        models = paths if layout == "blocked" else {name: build_bytes(name, layout) for name in paths}
        self._sessions = {name: create_session(m, device=device, threads=threads) for name, m in models.items()}
        self.providers = self._sessions["pnet"].get_providers()

    @property
    def version(self) -> str:
        """Identifies the weights and build, for manifests."""
        return "mtcnn-onnx:" + ",".join(self.model_files[n] for n in ("pnet", "rnet", "onet"))

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Faces of every image, each list sorted by score (best first). Batches run `IMAGES_PER_CALL`
        images at a time: one image per call pays ONNX Runtime's per-call cost for every pyramid level,
        while 32 at a time no longer fit the CPU's caches (1.2x and 1.3x the time of 8 on LFW-size photos)."""
        if len(images) > IMAGES_PER_CALL:
            return [faces for s in range(0, len(images), IMAGES_PER_CALL)
                    for faces in self.detect_batch(images[s:s + IMAGES_PER_CALL])]
        opts = self.options
        normed = [_normalise(img) for img in images]
        idx, cand = self._propose(normed)
        if opts.max_candidates:
            idx, cand = _cap_per_image(idx, cand, opts.max_candidates)

        # R-Net: refine all candidates of the batch in one pass.
        reg, prob = self._run_patches("rnet", normed, idx, cand[:, :4], 24)
        scores = prob[:, 1]
        ok = scores > opts.thresholds[1]
        idx, boxes, scores = idx[ok], B.regress(cand[ok, :4], reg[ok]), scores[ok]
        keep = B.nms(boxes, scores, opts.nms_thresholds[2], "union", groups=idx)
        idx, boxes = idx[keep], B.square(boxes[keep])

        # O-Net: final boxes, scores and landmarks.
        reg, rel, prob = self._run_patches("onet", normed, idx, boxes, 48)
        points = B.landmarks_from_offsets(boxes, rel)
        scores = prob[:, 1]
        ok = scores > opts.thresholds[2]
        idx, boxes, scores, points = idx[ok], B.regress(boxes[ok], reg[ok]), scores[ok], points[ok]
        keep = B.nms(boxes, scores, opts.nms_thresholds[3], "min", groups=idx)

        results: list[list[Face]] = [[] for _ in images]
        for k in keep:  # nms returns best first
            i = int(idx[k])
            h, w = images[i].shape[:2]
            results[i].append(clipped_face(boxes[k], h, w, score=float(scores[k]),
                                           landmarks=tuple((float(x), float(y)) for x, y in points[k])))
        return results

    def onet_whole_image(self, image: np.ndarray) -> Face:
        """O-Net alone on the whole image taken as the face box: for tight crops where the cascade finds
        nothing. Score and landmarks are O-Net's; the box is the image, regressed and clipped."""
        h, w = image.shape[:2]
        side = float(max(h, w))
        box = np.array([[(w - side) / 2, (h - side) / 2, (w + side) / 2 - 1, (h + side) / 2 - 1]])
        reg, rel, prob = self._run_patches("onet", [_normalise(image)], np.zeros(1, np.int64), box, 48)
        points = B.landmarks_from_offsets(box, rel)[0]
        return clipped_face(B.regress(box, reg)[0], h, w, score=float(prob[0, 1]),
                            landmarks=tuple((float(x), float(y)) for x, y in points), source="onet-whole-image")

    def onet_points(self, image: np.ndarray, box) -> np.ndarray:
        """O-Net's 5 points, (5, 2), for one face box (made square) without the rest of the cascade:
        a second look at a face already found, e.g. in its mirror image (maskgen.eyes)."""
        square = B.square(np.asarray(box, dtype=np.float64).reshape(1, 4))
        _, rel, _ = self._run_patches("onet", [_normalise(image)], np.zeros(1, np.int64), square, 48)
        return B.landmarks_from_offsets(square, rel)[0].astype(np.float64)

    def _propose(self, normed: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """P-Net over each image's pyramid; images of one size share each P-Net call."""
        opts = self.options
        by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, img in enumerate(normed):
            by_shape[img.shape[:2]].append(i)
        all_idx, all_boxes, all_scores = [], [], []
        for (h, w), members in by_shape.items():
            for scale in B.pyramid_scales(h, w, opts.min_face_size, opts.scale_factor):
                sh, sw = B.scaled_size(h, w, scale)
                stack = np.stack([cv2.resize(normed[i], (sw, sh), interpolation=cv2.INTER_AREA) for i in members])
                reg, prob = self._sessions["pnet"].run(None, {"image": stack.transpose(0, 3, 1, 2)})
                n, boxes, scores = B.pnet_boxes(reg, prob[:, 1], scale, opts.thresholds[0])
                keep = B.nms(boxes, scores, opts.nms_thresholds[0], "union", groups=n)
                all_idx.append(np.asarray(members)[n[keep]])
                all_boxes.append(boxes[keep])
                all_scores.append(scores[keep])
        if not all_idx:
            return np.empty(0, dtype=np.int64), np.empty((0, 5))
        idx = np.concatenate(all_idx)
        boxes = np.concatenate(all_boxes)
        scores = np.concatenate(all_scores)
        keep = B.nms(boxes, scores, opts.nms_thresholds[1], "union", groups=idx)
        cand = np.concatenate([B.square(boxes[keep]), scores[keep, None]], axis=1)
        return idx[keep], cand

    def _run_patches(self, net: str, normed: list[np.ndarray], idx: np.ndarray, boxes: np.ndarray,
                     size: int) -> list[np.ndarray]:
        session = self._sessions[net]
        n_out = len(session.get_outputs())
        if len(boxes) == 0:
            widths = {"rnet": (4, 2), "onet": (4, 10, 2)}[net]
            return [np.zeros((0, k), dtype=np.float32) for k in widths]
        patches = np.empty((len(boxes), 3, size, size), dtype=np.float32)
        for i in np.unique(idx):
            sel = np.nonzero(idx == i)[0]
            patches[sel] = B.crop_and_resize(normed[i], boxes[sel], size)
        chunks = [session.run(None, {"image": patches[s:s + self.max_patches_per_call]})
                  for s in range(0, len(patches), self.max_patches_per_call)]
        return [np.concatenate([c[j] for c in chunks]) for j in range(n_out)]


def _cap_per_image(idx: np.ndarray, cand: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((-cand[:, 4], idx))
    idx, cand = idx[order], cand[order]
    rank = np.arange(len(idx)) - np.searchsorted(idx, idx)
    keep = rank < cap
    return idx[keep], cand[keep]
