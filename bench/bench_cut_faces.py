"""Faces the image's edge cuts (people at the side of a group photo): their 68 landmarks as dlib finds
them from the detector's clipped box (the reference, dlib called directly) and as
`maskgen.landmarks.LandmarkPredictor` finds them from the detector's whole box with the edge
continued (ours), side by side.

    .venv/bin/python bench/bench_cut_faces.py [--data DIR] [--fractions 0.15,0.25,0.35]

For the largest face of every photo of DIR/faces and DIR/faces_mit (at least 60 px wide, inside the
photo, not a profile), the photo is cut through the face from the left and from the right, a fraction
of the face's box width off; MTCNN finds the face again in the cut photo, and each method's 68
points are compared with ours on the whole photo (the truth here): the mean point distance over the
eye distance, the yaw's change, and the share of cut faces read as profiles (|yaw| >= 45 degrees,
`maskgen.facetype`), whose masks follow the far side and leave the mouth bare.
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


def main() -> None:
    from maskgen.decode import decode_image
    from maskgen.detect import MTCNN, landmark_boxes
    from maskgen.facetype import FaceTypeOptions, yaw_degrees
    from maskgen.landmarks import LandmarkPredictor

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="folder holding faces/ and faces_mit/ (default ../shared/data)")
    parser.add_argument("--fractions", default="0.15,0.25,0.35", help="share of the face's width cut off, a row each")
    args = parser.parse_args()
    data = shared_data(args.data)
    fractions = [float(f) for f in args.fractions.split(",")]
    detector, predictor = MTCNN(), LandmarkPredictor()
    profile = FaceTypeOptions().profile_yaw
    rows = {f: {"reference": [], "ours": []} for f in fractions}
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
        eyes = np.linalg.norm(truth[42:48].mean(0) - truth[36:42].mean(0))
        x1, _, x2, _ = face.box
        for fraction in fractions:
            for side in ("left", "right"):
                x = int(x1 + fraction * (x2 - x1)) if side == "left" else int(np.ceil(x2 - fraction * (x2 - x1)))
                cut = np.ascontiguousarray(whole[:, x:] if side == "left" else whole[:, :x])
                shift = np.array([x, 0] if side == "left" else [0, 0], dtype=np.float32)
                found = [f for f in detector.detect(cut)
                         if np.linalg.norm(f.points[2] + shift - truth[30]) < 0.5 * eyes]
                if not found:
                    continue  # not found again: neither method gets points
                again = found[0]
                points = {"reference": dlib_on_clipped_box(predictor, cut, again.box),
                          "ours": predictor.predict(cut, landmark_boxes([again]), np.array([again.points]))[0]}
                for method, lm in points.items():
                    lm = lm + shift
                    rows[fraction][method].append((np.linalg.norm(lm - truth, axis=1).mean() / eyes,
                                                   abs(yaw_degrees(lm) - yaw_degrees(truth)),
                                                   abs(yaw_degrees(lm)) >= profile))
    print(f"{photos} photos (their largest face); each cut from the left and from the right")
    print("| width cut off | cut faces found again | method | median error / eye distance | p90 | "
          "median yaw change (deg) | read as profiles |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for fraction in fractions:
        for method, label in (("reference", "dlib, clipped box"), ("ours", "whole box, edge continued")):
            r = np.array(rows[fraction][method], dtype=np.float64).reshape(-1, 3)
            if not len(r):
                print(f"| {fraction:.0%} | 0 | {label} | - | - | - | - |")
                continue
            print(f"| {fraction:.0%} | {len(r)} | {label} | {np.median(r[:, 0]):.3f} | {np.percentile(r[:, 0], 90):.3f} | "
                  f"{np.median(r[:, 1]):.1f} | {int(r[:, 2].sum())} ({r[:, 2].mean():.0%}) |")


if __name__ == "__main__":
    main()
