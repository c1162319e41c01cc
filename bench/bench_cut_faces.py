"""Faces the image's edge cuts (people at the side of a group photo): their 68 landmarks as dlib finds
them from the detector's clipped box (the reference, dlib called directly) and as
`maskgen.landmarks.LandmarkPredictor` finds them from the detector's whole box with the edge
continued (ours), side by side.

    .venv/bin/python bench/bench_cut_faces.py [--data DIR] [--fractions 0.15,0.25,0.35]

For the largest face of every photo of DIR/faces and DIR/faces_mit (at least 60 px wide, inside the
photo, not a profile), the photo is cut through the face from the left, the right, the top and the
bottom, a fraction of the face's box width or height off; MTCNN finds the face again in the cut photo, and each method's 68
points are compared with ours on the whole photo (the truth here): the mean point distance over the
eye distance, the yaw's change, and the share of cut faces read as profiles (|yaw| >= 45 degrees,
`maskgen.facetype`), whose masks follow the far side and leave the mouth bare.

Then the same faces as tight crops, shaped like ../shared/data/masked_crops (the jaw's width with a
seeded margin of up to 4 % a side, from above the brows to the chin with up to 6 % more or less,
squashed to 160 x 160) and found as `--input-kind crops` finds them: a crop's edges frame its face
and are not continued (`maskgen.finder.framed`), so both rows should read the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the project
sys.path.insert(0, str(HERE))  # lfw_like (a script run by runpy has no own folder on the path)
from lfw_like import shared_data  # noqa: E402


def dlib_on_clipped_box(predictor, image: np.ndarray, box) -> np.ndarray:
    """dlib's predictor called directly with the detector's box (clipped to the image) mapped to its
    square: pixels past the edge read as black."""
    import dlib

    x1, y1, x2, y2 = predictor.mapping.apply(np.asarray([box]))[0]
    rect = dlib.rectangle(int(round(x1)), int(round(y1)), int(round(x2)) - 1, int(round(y2)) - 1)
    return np.array([(p.x, p.y) for p in predictor._predictor(np.ascontiguousarray(image), rect).parts()],
                    dtype=np.float32)


def tight_crop(image: np.ndarray, truth: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray] | None:
    """(a 160 x 160 crop shaped like masked_crops', the truth's points in it), None where it would
    leave the photo."""
    import cv2

    h, w = image.shape[:2]
    jaw = truth[0:17]
    x1, x2, chin = jaw[:, 0].min(), jaw[:, 0].max(), truth[8, 1]
    side, below = rng.uniform(-0.04, 0.04) * (x2 - x1), rng.uniform(-0.06, 0.06) * (x2 - x1)
    eyes_y = truth[36:48, 1].mean()
    left, right, bottom = x1 - side, x2 + side, chin + below
    top = eyes_y - (0.375 / 0.6) * (chin - eyes_y)
    if left < 0 or top < 0 or right > w or bottom > h:
        return None
    sx, sy = 160 / (right - left), 160 / (bottom - top)
    warp = np.array([[sx, 0, -left * sx], [0, sy, -top * sy]])
    crop = cv2.warpAffine(image, warp, (160, 160), flags=cv2.INTER_AREA)
    return np.ascontiguousarray(crop), (truth - [left, top]) * [sx, sy]


def cut_through(image: np.ndarray, box, side: str, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(the photo cut through the face `fraction` of its box's width or height off on `side`, the
    offset to add to the cut photo's points)."""
    x1, y1, x2, y2 = box
    if side in ("left", "right"):
        x = int(x1 + fraction * (x2 - x1)) if side == "left" else int(np.ceil(x2 - fraction * (x2 - x1)))
        cut, shift = (image[:, x:], [x, 0]) if side == "left" else (image[:, :x], [0, 0])
    else:
        y = int(y1 + fraction * (y2 - y1)) if side == "top" else int(np.ceil(y2 - fraction * (y2 - y1)))
        cut, shift = (image[y:], [0, y]) if side == "top" else (image[:y], [0, 0])
    return np.ascontiguousarray(cut), np.array(shift, dtype=np.float32)


def main() -> None:
    from maskgen.decode import decode_image
    from maskgen.detect import MTCNN, landmark_boxes
    from maskgen.facetype import FaceTypeOptions, yaw_degrees
    from maskgen.finder import FaceFinder, FinderOptions
    from maskgen.landmarks import LandmarkPredictor

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="folder holding faces/ and faces_mit/ (default ../shared/data)")
    parser.add_argument("--fractions", default="0.15,0.25,0.35",
                        help="share of the face's width or height cut off, a row each")
    args = parser.parse_args()
    data = shared_data(args.data)
    fractions = [float(f) for f in args.fractions.split(",")]
    detector, predictor = MTCNN(), LandmarkPredictor()
    profile = FaceTypeOptions().profile_yaw
    rows = {(f, across): {"reference": [], "ours": []} for f in fractions for across in (True, False)}
    crops = {"reference": [], "ours": []}
    crop_finder = FaceFinder(FinderOptions.for_inputs("crops"), mtcnn=detector)
    rng = np.random.default_rng(0)
    photos = 0
    for path in sorted((data / "faces").rglob("*.jpg")) + sorted((data / "faces_mit").rglob("*.jpg")):
        whole = decode_image(path.read_bytes())
        faces = detector.detect(whole)
        if not faces:
            continue
        face = max(faces, key=lambda f: f.width)
        if face.width < 60 or face.full_box is not None:
            continue
        truth = predictor.predict(whole, landmark_boxes([face]), np.array([face.points]))[0]
        if abs(yaw_degrees(truth)) >= profile:
            continue
        photos += 1
        cropped = tight_crop(whole, truth, rng)
        found = crop_finder.find(cropped[0]) if cropped is not None else []
        if found:
            crop, in_crop = cropped
            crop_eyes = np.linalg.norm(in_crop[42:48].mean(0) - in_crop[36:42].mean(0))
            for method, lm in (("reference", dlib_on_clipped_box(predictor, crop, found[0].box)),
                               ("ours", predictor.predict(crop, landmark_boxes(found[:1]), np.array([found[0].points]))[0])):
                crops[method].append((np.linalg.norm(lm - in_crop, axis=1).mean() / crop_eyes,
                                      np.linalg.norm(lm[8] - in_crop[8]) / crop_eyes,
                                      np.linalg.norm(lm[48:68] - in_crop[48:68], axis=1).mean() / crop_eyes,
                                      abs(yaw_degrees(lm)) >= profile))
        eyes = np.linalg.norm(truth[42:48].mean(0) - truth[36:42].mean(0))
        for fraction in fractions:
            for side in ("left", "right", "top", "bottom"):
                cut, shift = cut_through(whole, face.box, side, fraction)
                found = [f for f in detector.detect(cut)
                         if np.linalg.norm(f.points[2] + shift - truth[30]) < 0.5 * eyes]
                if not found:
                    continue  # not found again: neither method gets points
                again = found[0]
                points = {"reference": dlib_on_clipped_box(predictor, cut, again.box),
                          "ours": predictor.predict(cut, landmark_boxes([again]), np.array([again.points]))[0]}
                for method, lm in points.items():
                    lm = lm + shift
                    rows[fraction, side in ("left", "right")][method].append((np.linalg.norm(lm - truth, axis=1).mean() / eyes,
                                                   abs(yaw_degrees(lm) - yaw_degrees(truth)),
                                                   abs(yaw_degrees(lm)) >= profile))
    print(f"{photos} photos (their largest face); each cut from the left, right, top and bottom")
    print("| cut off | cut faces found again | method | median error / eye distance | p90 | "
          "median yaw change (deg) | read as profiles |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for across in (True, False):
        for fraction in fractions:
            what = f"{fraction:.0%} of the width, left or right" if across else f"{fraction:.0%} of the height, top or bottom"
            for method, label in (("reference", "dlib, clipped box"), ("ours", "whole box, edge continued")):
                r = np.array(rows[fraction, across][method], dtype=np.float64).reshape(-1, 3)
                if not len(r):
                    print(f"| {what} | 0 | {label} | - | - | - | - |")
                    continue
                print(f"| {what} | {len(r)} | {label} | {np.median(r[:, 0]):.3f} | {np.percentile(r[:, 0], 90):.3f} | "
                      f"{np.median(r[:, 1]):.1f} | {int(r[:, 2].sum())} ({r[:, 2].mean():.0%}) |")
    print()
    print("| tight 160 px crops | method | median error / eye distance | p90 | median chin error | "
          "median mouth error | read as profiles |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for method, label in (("reference", "dlib, clipped box"), ("ours", "as the jobs find them")):
        r = np.array(crops[method], dtype=np.float64).reshape(-1, 4)
        print(f"| {len(r)} | {label} | {np.median(r[:, 0]):.3f} | {np.percentile(r[:, 0], 90):.3f} | "
              f"{np.median(r[:, 1]):.3f} | {np.median(r[:, 2]):.3f} | {int(r[:, 3].sum())} |")


if __name__ == "__main__":
    main()
