"""LFW-size (250x250) face photos made from the real photos in ../shared/data/faces.

LFW centred each face by expanding its detected box 2.2 times and scaling to 250x250; we do the same
around the largest face of each photo (boxes from tests/fixtures/mtcnn_reference.json, so nothing is
detected here), and make more images per photo with seeded jitter of scale and position and mirror
flips. Nothing is written to disk: callers get arrays, so no pixel-derived file is ever committed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "fixtures" / "mtcnn_reference.json"
# the real face data the benchmarks read, where the tests read it (MFR_SHARED_DATA, else ../shared/data)
SHARED_DATA = Path(os.environ.get("MFR_SHARED_DATA", ROOT.parent / "shared" / "data"))


def percent(rate) -> str:
    """A summary's rate as the tables print it; None (a FAR the data cannot measure) as n/a."""
    return "n/a" if rate is None else f"{100 * rate:.2f}"


def shared_data(path: Path | None = None) -> Path:
    """`path` (a benchmark's --data), else SHARED_DATA, once it is there: a clear exit, not a
    FileNotFoundError on the first photo, where it is missing."""
    path = Path(path) if path is not None else SHARED_DATA
    if not path.is_dir():
        sys.exit(f"real face data not found at {path}: the benchmarks read ../shared/data in place (README, Test "
                 "data); give it with --data where a benchmark takes it, or set MFR_SHARED_DATA")
    return path


def largest_reference_faces(subset: str = "faces") -> dict[str, list[float]]:
    """Relative image path -> box of its largest face, for photos of `subset`."""
    records = json.loads(REFERENCE.read_text())["images"]
    out = {}
    for rec in records:
        if rec["image"].startswith(subset + "/") and rec["faces"]:
            box = max(rec["faces"], key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))["box"]
            out[rec["image"]] = box
    return out


def lfw_crop(image: np.ndarray, box, size: int = 250, expand: float = 2.2, shift=(0.0, 0.0),
             flip: bool = False, border: int = cv2.BORDER_REFLECT_101) -> np.ndarray:
    """The `size` x `size` crop centred on `box` (x1, y1, x2, y2) grown `expand` times (reflected
    border by default); `expand` near 1 gives the tight crops of pre-cropped datasets."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * expand
    cx = (x1 + x2) / 2 + shift[0] * (x2 - x1)
    cy = (y1 + y2) / 2 + shift[1] * (y2 - y1)
    s = size / side
    matrix = np.float32([[s, 0, size / 2 - cx * s], [0, s, size / 2 - cy * s]])
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=border)
    return crop[:, ::-1].copy() if flip else crop


def lfw_like_images(data_root: Path, count: int, seed: int = 0, size: int = 250) -> list[np.ndarray]:
    """`count` LFW-like images cycling over the photos of `data_root/faces`, with seeded variation."""
    return list(iter_lfw_like_images(data_root, count, seed, size))


def iter_lfw_like_images(data_root: Path, count: int, seed: int = 0, size: int = 250):
    """The images of `lfw_like_images`, one at a time (10,000 of them need not sit in memory)."""
    from maskgen.decode import decode_image

    boxes = largest_reference_faces("faces")
    photos = {rel: decode_image((data_root / rel).read_bytes()) for rel in sorted(boxes)}
    if not photos:
        raise RuntimeError(f"no reference faces for {data_root / 'faces'}")
    rng = np.random.default_rng(seed)
    names = sorted(photos)
    for i in range(count):
        rel = names[i % len(names)]
        first_pass = i < len(names)
        expand = 2.2 if first_pass else float(rng.uniform(1.9, 2.6))
        shift = (0.0, 0.0) if first_pass else tuple(rng.uniform(-0.08, 0.08, size=2))
        flip = (not first_pass) and bool(rng.integers(2))
        yield lfw_crop(photos[rel], boxes[rel], size=size, expand=expand, shift=shift, flip=flip)


def tight_masked_crops(data_root: Path, detector, min_size: float = 40, size: int = 128,
                       limit: int | None = None) -> list[np.ndarray]:
    """Tight `size` px crops (box grown 1.05x, border replicated) of every face of at least `min_size`
    px that `detector` finds in data_root/masked_wild: real masked faces as pre-cropped datasets hold them."""
    from maskgen.decode import decode_image

    crops = []
    for path in sorted((data_root / "masked_wild").glob("*.jpg")):
        image = decode_image(path.read_bytes())
        for face in detector.detect(image):
            if face.width >= min_size:
                crops.append(lfw_crop(image, face.box, size=size, expand=1.05, border=cv2.BORDER_REPLICATE))
        if limit is not None and len(crops) >= limit:
            break
    return crops
