"""Which face of an LFW-style crop is the labelled person: the `center` and `largest` policies
(maskgen.finder.select_faces) side by side.

    .venv/bin/python bench/bench_face_policy.py

Centred datasets are made by cropping a square around the labelled face and resizing it (LFW: 250 px,
the face about 40 % of the side), so people next to the subject end up cut off at the border, and
sometimes larger than the subject. This benchmark makes such crops from the shared photos: for every
face of at least 30 px in a photo of ../shared/data/faces, faces_mit and masked_wild that has other
faces, a square of `--context` x the face's box side centred on it (the border replicated where it
leaves the photo), resized to 250 px; the faces found in it (MTCNN, the `photos` preset), and which
one each policy picks. A pick is right when it overlaps the subject's box (IoU >= 0.5).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the project
sys.path.insert(0, str(HERE))  # lfw_like (a script run by runpy has no own folder on the path)
from lfw_like import SHARED_DATA as DATA  # noqa: E402
from lfw_like import shared_data  # noqa: E402


def centred_crop(image: np.ndarray, box, context: float, size: int = 250):
    """(crop, the box mapped into it): a square of `context` x the box's longer side around the box's
    centre, border replicated outside the image, resized to `size`."""
    x1, y1, x2, y2 = box
    side = context * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = int(round(side))
    h, w = image.shape[:2]
    pad = max(0, -left, -top, left + s - w, top + s - h)
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    crop = padded[top + pad:top + pad + s, left + pad:left + pad + s]
    scale = size / s
    mapped = ((x1 - left) * scale, (y1 - top) * scale, (x2 - left) * scale, (y2 - top) * scale)
    return np.ascontiguousarray(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)), mapped


def crops(context: float, detector):
    from maskgen.decode import decode_image

    for folder in ("faces", "faces_mit", "masked_wild"):
        for path in sorted((DATA / folder).rglob("*.jpg")):
            image = decode_image(path.read_bytes())
            faces = detector.detect(image)
            if len(faces) < 2:
                continue
            for face in faces:
                if max(face.width, face.height) >= 30:
                    crop, box = centred_crop(image, face.box, context)
                    yield folder, crop, box


def main() -> None:
    from maskgen.boxes import iou_matrix
    from maskgen.detect import MTCNN
    from maskgen.finder import FaceFinder, FinderOptions, select_faces

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", default="2.5,2.0,3.0", help="crop side / face side, one row each")
    args = parser.parse_args()
    shared_data(DATA)
    detector = MTCNN()
    finder = FaceFinder(FinderOptions.for_inputs("photos"), mtcnn=detector)
    print("| crop side / face side | crops | with another face in the crop | center right | largest right | "
          "largest wrong, center right | center wrong, largest right | no face found |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for context in (float(c) for c in args.contexts.split(",")):
        n = crowded = none = 0
        right = {"center": 0, "largest": 0}
        only = {"center": 0, "largest": 0}
        for _, crop, subject in crops(context, detector):
            n += 1
            found = finder.find(crop)
            if not found:
                none += 1
                continue
            crowded += len(found) > 1
            ok = {}
            for policy in right:
                pick = found[select_faces(found, crop.shape, policy)[0]]
                ok[policy] = iou_matrix(np.array([pick.box]), np.array([subject]))[0, 0] >= 0.5
                right[policy] += ok[policy]
            only["center"] += ok["center"] and not ok["largest"]
            only["largest"] += ok["largest"] and not ok["center"]
        print(f"| {context:g} | {n} | {crowded} | {right['center']} ({right['center'] / n:.1%}) | "
              f"{right['largest']} ({right['largest'] / n:.1%}) | {only['center']} | {only['largest']} | {none} |")


if __name__ == "__main__":
    main()
