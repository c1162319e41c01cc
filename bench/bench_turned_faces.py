"""Faces turned a quarter or half turn: `FinderOptions(turned=True)` beside the default, on real photos.

    .venv/bin/python bench/bench_turned_faces.py

Every photo of ../shared/data/faces and faces_mit is turned 0, 90, 180 and 270 degrees (np.rot90:
lossless). The reference faces are those the default finder finds in the upright photo, carried into
each turned copy. A reference face counts as found where a face of the turned copy overlaps it (IoU
>= 0.5), and its points as right where their mean distance to the reference points is under a
quarter of the eye distance (MTCNN gives a face turned round the points of an upright one: the eyes
on the mouth). Upright photos also say whether `turned` changed any face (it must not), and the
time per photo of both finders, with and without faces (the no-face images are the photos' corners
of 160 px, where the default finder finds nothing).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the project
sys.path.insert(0, str(HERE))
from lfw_like import shared_data  # noqa: E402


def iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def main() -> None:
    import argparse

    from maskgen.decode import decode_image
    from maskgen.finder import FaceFinder, FinderOptions, turn_box, turn_points

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    data = shared_data(parser.parse_args().data)
    photos = sorted((data / "faces").rglob("*.jpg")) + sorted(p for p in (data / "faces_mit").rglob("*") if p.is_file())
    plain, turned = FaceFinder(FinderOptions()), FaceFinder(FinderOptions(turned=True))
    counts = {k: {"faces": 0, "off found": 0, "off right": 0, "on found": 0, "on right": 0} for k in range(4)}
    changed, timing, empties = 0, {"off": [], "on": []}, []
    for path in photos:
        image = decode_image(path.read_bytes())
        h, w = image.shape[:2]
        reference = plain.find(image)
        for k in range(4):
            rotated = np.ascontiguousarray(np.rot90(image, k))
            found = {}
            for name, finder in (("off", plain), ("on", turned)):
                started = time.perf_counter()
                found[name] = finder.find(rotated)
                if k == 0:
                    timing[name].append(time.perf_counter() - started)
            if k == 0:
                changed += found["on"] != reference
            for face in reference:
                box = turn_box(face.box, k, w, h)
                points = turn_points(face.points, k, w, h)
                eyes = float(np.hypot(*(points[1] - points[0])))
                counts[k]["faces"] += 1
                for name in ("off", "on"):
                    match = [f for f in found[name] if iou(f.box, box) >= 0.5]
                    if match:
                        counts[k][f"{name} found"] += 1
                        best = min(float(np.mean(np.hypot(*(f.points - points).T))) for f in match)
                        counts[k][f"{name} right"] += best < 0.25 * eyes
        if min(h, w) >= 320:  # a corner without a face: what the extra looks cost where nothing is found
            corner = np.ascontiguousarray(image[:160, :160])
            if not plain.find(corner):
                empties.append(corner)
    print(f"{len(photos)} photos; reference: the default finder's faces in the upright photo\n")
    print("| turned (degrees, counter-clockwise) | faces | found, default | points right, default | found, "
          "turned=True | points right, turned=True |")
    print("|---|---|---|---|---|---|")
    for k in range(4):
        c = counts[k]
        print(f"| {90 * k} | {c['faces']} | {c['off found']} | {c['off right']} | {c['on found']} | {c['on right']} |")
    print(f"\nupright photos whose faces turned=True changed: {changed} of {len(photos)}")
    for name in ("off", "on"):
        print(f"time per upright photo, turned={'True' if name == 'on' else 'False'}: "
              f"median {1000 * np.median(timing[name]):.1f} ms")
    for name, finder in (("False", plain), ("True", turned)):
        started = time.perf_counter()
        for corner in empties:
            finder.find(corner)
        print(f"time per 160 px corner without a face ({len(empties)}), turned={name}: "
              f"{1000 * (time.perf_counter() - started) / max(1, len(empties)):.1f} ms")


if __name__ == "__main__":
    main()
