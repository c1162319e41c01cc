"""Pure box geometry for the MTCNN cascade: pyramid scales, NMS, regression, squaring, patch sampling.

Boxes are float arrays of shape (N, 4) holding x1, y1, x2, y2 in pixels. Conventions follow the
`mtcnn` package (1.0.0) that our detector is checked against, noted where they are unusual.
"""

from __future__ import annotations

import cv2
import numpy as np

PNET_STRIDE = 2
_REMAP_LIMIT = 32767  # OpenCV's remap takes images and maps under SHRT_MAX per side
PNET_CELL = 12


MIN_FACE_SIZE_FLOOR = 4.0  # the first level then holds at most (12 / 4)^2 = 9 times the image's pixels
MAX_SCALE_FACTOR = 0.99  # about 460 levels for a 4000x3000 photo at min_face_size 20


def pyramid_scales(height: int, width: int, min_face_size: float = 20.0, scale_factor: float = 0.709,
                   min_size: int = 12) -> list[float]:
    """Scales at which P-Net (a 12x12 window) sees faces from `min_face_size` px up to the whole image.

    The first scale maps a `min_face_size` face onto P-Net's 12 px window; each next one shrinks by
    `scale_factor`, while the scaled image's short side stays at least 12 px.
    """
    # NaN failed no comparison (no scale, no face); below 12 px the image is enlarged by 12 / min_face_size,
    # and 0.01 asked for a 20 TB first level; 0.999999 made 3.9 million levels
    if isinstance(min_face_size, (bool, np.bool_)) or not min_face_size >= MIN_FACE_SIZE_FLOOR \
            or not np.isfinite(min_face_size):
        raise ValueError(f"min_face_size must be a number of pixels >= {MIN_FACE_SIZE_FLOOR} (below 12 the image "
                         f"is enlarged by 12 / min_face_size), got {min_face_size!r}")
    if isinstance(scale_factor, (bool, np.bool_)) or not 0.0 < scale_factor <= MAX_SCALE_FACTOR:
        raise ValueError(f"scale_factor must be in (0, {MAX_SCALE_FACTOR}], got {scale_factor!r}")
    scale = min_size / float(min_face_size)
    short = min(height, width)
    scales = []
    while short * scale >= min_size:
        scales.append(scale)
        scale *= scale_factor
    return scales


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Pyramid level size; truncation, as TensorFlow does when given a float size."""
    return int(height * scale), int(width * scale)


def pair_iou(a: np.ndarray, b: np.ndarray, method: str = "union") -> np.ndarray:
    """Overlap of boxes `a` and `b` pair by pair (their leading axes broadcast): intersection over
    union, or over the smaller area; 0 where the denominator is 0."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    if method == "union":
        denom = area_a + area_b - inter
    elif method == "min":
        denom = np.minimum(area_a, area_b)
    else:
        raise ValueError(f"method must be 'union' or 'min', got {method!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, inter / np.where(denom > 0, denom, 1), 0.0)


def iou_matrix(a: np.ndarray, b: np.ndarray, method: str = "union") -> np.ndarray:
    """Overlap of every box in `a` with every box in `b`: intersection over union, or over the smaller area."""
    return pair_iou(a[:, None, :], b[None, :, :], method)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union",
        groups: np.ndarray | None = None, block: int = 1024) -> np.ndarray:
    """Non-maximum suppression as the `mtcnn` package does it; indices of kept boxes, best score first.

    A box is dropped when *any* better-scoring box overlaps it by more than `threshold`, even one
    that was itself dropped. This suppresses a little more than classic greedy NMS, and keeping it
    is what makes our detections match the reference's one for one. `groups` (e.g. the image index
    of each box) keeps boxes of different groups apart, so one call serves a whole batch: each box
    is compared with the better boxes of its own group only (for a batch of 8 images, an eighth of
    the pairs of comparing all). Memory is bounded by `block` x N pairs at a time.
    """
    n = len(boxes)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    groups = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups)[order]
    by_group = np.argsort(groups, kind="stable")  # group by group, best score first within each
    boxes = boxes[order[by_group]]
    g = groups[by_group]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, n]))  # where each box's group starts
    better = np.arange(n) - first  # how many better boxes of its group each box has
    keep = np.ones(n, dtype=bool)
    for start in range(1, n, block):
        stop = min(n, start + block)
        counts = better[start:stop]
        total = int(counts.sum())
        if total == 0:
            continue
        # every (box, better box of its group) pair of this block, as two index arrays
        rows = np.repeat(np.arange(start, stop), counts)
        cols = np.repeat(first[start:stop] - np.cumsum(counts) + counts, counts) + np.arange(total)
        keep[rows[pair_iou(boxes[rows], boxes[cols], method) > threshold]] = False
    kept = np.zeros(n, dtype=bool)
    kept[by_group] = keep
    return order[kept]


def pnet_boxes(reg: np.ndarray, prob: np.ndarray, scale: float, threshold: float) -> tuple[np.ndarray, ...]:
    """Candidate boxes from one P-Net output map (reg: (N, 4, h, w), prob: (N, h, w) face probability).

    Returns (image index, boxes in original-image pixels, scores). As in the original MTCNN code
    and the `mtcnn` package, the cell at output (x, y) spans 2x + 1 .. 2x + 12 (so its regression
    unit is 11 px), and the regression is applied before the cell is scaled back.
    """
    n, ys, xs = np.nonzero(prob > threshold)
    scores = prob[n, ys, xs]
    offsets = reg[n, :, ys, xs]  # (K, 4)
    x1 = xs * PNET_STRIDE + 1
    y1 = ys * PNET_STRIDE + 1
    x2 = xs * PNET_STRIDE + PNET_CELL
    y2 = ys * PNET_STRIDE + PNET_CELL
    cell = np.stack([x1, y1, x2, y2], axis=1).astype(np.float64)
    boxes = (cell + offsets * (PNET_CELL - 1)) / scale
    return n, boxes, scores


def square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre (side = the longer side)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply R-/O-Net box regression; sizes count both end pixels (w = x2 - x1 + 1)."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    return boxes + offsets * np.stack([w, h, w, h], axis=1)


def landmarks_from_offsets(boxes: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """O-Net's 5 points (rel: (N, 10), xs then ys, relative to the box) in image pixels, shape (N, 5, 2)."""
    w = boxes[:, 2:3] - boxes[:, 0:1] + 1
    h = boxes[:, 3:4] - boxes[:, 1:2] + 1
    xs = w * rel[:, 0:5] + boxes[:, 0:1] - 1
    ys = h * rel[:, 5:10] + boxes[:, 1:2] - 1
    return np.stack([xs, ys], axis=2)


def clip_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Keep box corners inside the image (0 .. size - 1)."""
    out = boxes.copy()
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width - 1)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height - 1)
    return out


def crop_and_resize(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Bilinear `size` x `size` patches of `boxes` from an (H, W, C) float32 image, as (N, C, size, size).

    Same sampling as TensorFlow's `crop_and_resize` with boxes normalised by the image size, which
    the reference uses: `size` samples from corner to corner of the box, coordinates scaled by
    (dim - 1) / dim, and samples outside the image read 0 (mid-grey after normalisation). One
    `cv2.remap` call samples every patch (its interpolation weights are exact to 1/32 pixel).
    """
    h, w = image.shape[:2]
    n = len(boxes)
    if n == 0:
        return np.zeros((0, image.shape[2], size, size), dtype=np.float32)
    steps = np.arange(size, dtype=np.float64) / (size - 1)
    y1 = boxes[:, 1:2] * (h - 1) / h
    y2 = boxes[:, 3:4] * (h - 1) / h
    x1 = boxes[:, 0:1] * (w - 1) / w
    x2 = boxes[:, 2:3] * (w - 1) / w
    ys = y1 + steps * (y2 - y1)  # (N, S)
    xs = x1 + steps * (x2 - x1)
    if max(h, w) >= _REMAP_LIMIT:
        raise ValueError(f"image of {w}x{h} px: sides of {_REMAP_LIMIT} px or more are not supported")
    map_y = np.broadcast_to(ys[:, :, None], (n, size, size)).reshape(n * size, size).astype(np.float32)
    map_x = np.broadcast_to(xs[:, None, :], (n, size, size)).reshape(n * size, size).astype(np.float32)
    rows = (_REMAP_LIMIT - 1) // size * size  # remap's output must also stay under the limit
    patches = np.concatenate([
        cv2.remap(image, map_x[r:r + rows], map_y[r:r + rows], interpolation=cv2.INTER_LINEAR,
                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        for r in range(0, n * size, rows)
    ]).reshape(n, size, size, -1)
    inside = ((ys >= 0) & (ys <= h - 1))[:, :, None] & ((xs >= 0) & (xs <= w - 1))[:, None, :]
    patches *= inside[..., None]
    return np.ascontiguousarray(patches.transpose(0, 3, 1, 2))
