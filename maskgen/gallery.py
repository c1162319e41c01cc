"""A picture of every mask style on one face, for the README and for people choosing a style.

    python -m maskgen.gallery --out docs/mask_styles.jpg

Uses the public-domain astronaut portrait shipped inside scikit-image (`maskgen.demo.packaged_photo`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from maskgen.masks import ClothMask, RespiratorMask, SeedMask, SurgicalMask, mask_rng

# (label, style) pairs: one tile each; narrowed options make every variant visible.
GALLERY = (
    ("seed", SeedMask()),
    ("surgical (light blue)", SurgicalMask(colours=("light_blue",))),
    ("surgical (white)", SurgicalMask(colours=("white",))),
    ("cloth (solid)", ClothMask(patterns=("solid",), colours=("navy",))),
    ("cloth (stripes)", ClothMask(patterns=("stripes",))),
    ("cloth (checks)", ClothMask(patterns=("checks",))),
    ("cloth (dots)", ClothMask(patterns=("dots",))),
    ("n95", RespiratorMask(kinds=("n95",))),
    ("kn95", RespiratorMask(kinds=("kn95",))),
)


def face_tile(image: np.ndarray, box, size: int = 200, expand: float = 1.6) -> np.ndarray:
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * expand
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + 0.08 * (y2 - y1)
    s = size / side
    matrix = np.float32([[s, 0, size / 2 - cx * s], [0, s, size / 2 - cy * s]])
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def render_gallery(image: np.ndarray, seed: int = 0, tile: int = 200, columns: int = 5):
    """(gallery picture, list of (label, params)) for the largest face of `image`."""
    from maskgen.detect import MTCNN, landmark_boxes
    from maskgen.facetype import classify_face
    from maskgen.landmarks import LandmarkPredictor

    faces = MTCNN().detect(image)
    if not faces:
        raise ValueError("no face in the gallery image")
    face = max(faces, key=lambda f: f.width)
    lm = LandmarkPredictor().predict(image, landmark_boxes([face]))[0]
    ftype = classify_face(image, lm)
    tiles, chosen = [("original", face_tile(image, face.box, tile))], []
    for k, (label, style) in enumerate(GALLERY):
        out, _, params = style(image, lm, mask_rng(seed, label, 0), ftype)
        tiles.append((label, face_tile(out, face.box, tile)))
        chosen.append((label, params))
    rows = -(-len(tiles) // columns)
    label_h = 24
    sheet = np.full((rows * (tile + label_h), columns * tile, 3), 255, np.uint8)
    for i, (label, picture) in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = r * (tile + label_h), c * tile
        sheet[y:y + tile, x:x + tile] = picture
        cv2.putText(sheet, label, (x + 6, y + tile + 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet, chosen


def main(argv: list[str] | None = None) -> int:
    from maskgen.decode import decode_image
    from maskgen.demo import packaged_photo

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/mask_styles.jpg"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sheet, chosen = render_gallery(decode_image(packaged_photo()), seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88]):
        raise OSError(f"could not write {args.out}")
    for label, params in chosen:
        print(f"{label:22s} {params}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
