"""Fit the MTCNN -> dlib box mapping used by maskgen.landmarks (prints it; paste into MTCNN_TO_DLIB).

    .venv/bin/python tools/fit_dlib_box.py ../shared/data/faces

Pairs each MTCNN face with dlib's HOG detection of the same face (IoU > 0.4, mutual best), fits
`fit_box_mapping`, and reports the median IoU with dlib's box before and after mapping.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def match_to_hog(image: np.ndarray, detector_boxes: np.ndarray, hog) -> list[tuple[int, np.ndarray]]:
    """(index of detector box, dlib's box as x1, y1, x2, y2) for faces both found (IoU > 0.4, mutual best)."""
    from maskgen.boxes import iou_matrix

    theirs = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in hog(image, 1)], float)
    if len(detector_boxes) == 0 or len(theirs) == 0:
        return []
    iou = iou_matrix(np.asarray(detector_boxes).reshape(-1, 4), theirs.reshape(-1, 4))
    pairs = []
    for i in range(iou.shape[0]):
        j = int(iou[i].argmax())
        if iou[i, j] > 0.4 and int(iou[:, j].argmax()) == i:
            pairs.append((i, theirs[j]))
    return pairs


def matched_boxes(folder: Path):
    import dlib

    from maskgen.decode import decode_image
    from maskgen.detect import MTCNN

    detector, hog = MTCNN(), dlib.get_frontal_face_detector()
    ours_all, theirs_all = [], []
    for path in sorted(folder.rglob("*.jpg")):
        image = decode_image(path.read_bytes())
        ours = np.array([f.box for f in detector.detect(image)]).reshape(-1, 4)
        for i, box in match_to_hog(image, ours, hog):
            ours_all.append(ours[i])
            theirs_all.append(box)
    return np.array(ours_all), np.array(theirs_all)


def main(folder: str) -> None:
    from maskgen.boxes import iou_matrix
    from maskgen.landmarks import fit_box_mapping

    ours, theirs = matched_boxes(Path(folder))
    mapping = fit_box_mapping(ours, theirs)
    before = np.diag(iou_matrix(ours, theirs))
    after = np.diag(iou_matrix(mapping.apply(ours), theirs))
    print(f"{len(ours)} matched faces; {mapping}")
    print(f"median IoU with dlib's box: {np.median(before):.3f} raw, {np.median(after):.3f} mapped")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('folder', help='a folder of face photos (e.g. ../shared/data/faces)')
    args = parser.parse_args()
    main(args.folder)
