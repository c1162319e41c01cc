"""Faces that wear a mask already: how often `maskgen.worn.WornMaskCheck` says so, on real faces.

    .venv/bin/python bench/bench_worn_masks.py

- masked_crops: the 1,090 labelled crops of ../shared/data/masked_crops (425 wearing real masks, 665
  not), found with the `crops` input kind. Every crop counts: one where no face is found is neither
  caught nor flagged, so it counts against the caught share.
- masked_wild: the largest face of each of the 204 real-world photos (most wear masks; they are not
  labelled, so this share is a floor of what a labelled set would show).
- photos: every face of ../shared/data/faces and faces_mit (unmasked): the share wrongly flagged,
  and the same photos made grey (undecided by colour: the check must abstain, not flag).
- synthetic: the same photos masked by `Augmenter` with each built-in style (seed 0): the share of
  our own masks read as worn (a masked output given to `mfr mask` again).

Each line also gives the share undecided (the upper face not skin by colour either), and the check's
time per face. `--lower` runs the thresholds of a small sweep beside the default.
"""

from __future__ import annotations

import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the project
sys.path.insert(0, str(HERE))
from lfw_like import shared_data  # noqa: E402


def largest_points(faces):
    """The 5 points of the largest face, None where there is none."""
    return max(faces, key=lambda f: f.width * f.height).points if faces else None


def main() -> None:
    import argparse

    import cv2

    from maskgen.augment import AugmentOptions, Augmenter
    from maskgen.decode import decode_image
    from maskgen.finder import FaceFinder, FinderOptions
    from maskgen.masks import STYLE_NAMES
    from maskgen.worn import WornMaskCheck, skin_shares

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    parser.add_argument("--lower", default="0.2,0.3,0.4", help="lower_skin_max values to sweep (comma-separated)")
    args = parser.parse_args()
    data = shared_data(args.data)
    default = WornMaskCheck()
    checks = [WornMaskCheck(lower_skin_max=float(v)) for v in args.lower.split(",")]
    if default not in checks:
        checks.insert(0, default)
    timing = []

    def shares(image, points):  # None: no face found
        if points is None:
            return None
        started = time.perf_counter()
        found = skin_shares(image, points)
        timing.append(time.perf_counter() - started)
        return found

    sets = {}  # name -> list of (lower, upper) or None (no face), and what a right answer is
    rows = list(csv.DictReader(open(data / "masked_crops" / "manifest.csv", encoding="utf-8")))
    crops = FaceFinder(FinderOptions.for_inputs("crops"))
    found = []
    for row in rows:
        image = decode_image((data / "masked_crops" / row["path"]).read_bytes())
        found.append((int(row["masked"]), shares(image, largest_points(crops.find(image)))))
    sets["masked_crops, wearing masks"] = ([s for m, s in found if m], True)
    sets["masked_crops, without"] = ([s for m, s in found if not m], False)

    wild = FaceFinder(FinderOptions.for_inputs("masked"))
    wild_found = []
    for path in sorted(p for p in (data / "masked_wild").iterdir() if p.is_file()):
        image = decode_image(path.read_bytes())
        wild_found.append(shares(image, largest_points(wild.find(image))))
    sets["masked_wild, largest face"] = (wild_found, True)

    plain = FaceFinder(FinderOptions())
    photos = sorted((data / "faces").rglob("*.jpg")) + sorted(p for p in (data / "faces_mit").rglob("*") if p.is_file())
    bare, grey, synthetic = [], [], {name: [] for name in STYLE_NAMES if name != "random"}
    augmenters = {name: Augmenter(AugmentOptions(style=name, outputs="image"), detector=plain.detector("mtcnn"))
                  for name in synthetic}
    for path in photos:
        image = decode_image(path.read_bytes())
        faces = plain.find(image)
        bare += [shares(image, f.points) for f in faces]
        grey_image = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        grey += [shares(grey_image, f.points) for f in faces]
        for name, augmenter in augmenters.items():
            result = augmenter.augment(image, path.name)
            synthetic[name] += [shares(result.image, np.asarray(f.landmarks5)) for f in result.faces if f.masked]
    sets["photos, without masks"] = (bare, False)
    sets["photos made grey, without masks"] = (grey, False)
    for name, found_here in synthetic.items():
        sets[f"photos masked by style {name}"] = (found_here, True)

    print(f"check time per face: median {statistics.median(timing) * 1000:.2f} ms over {len(timing)} faces")
    for check in checks:
        mark = " (default)" if check == default else ""
        print(f"\nlower_skin_max {check.lower_skin_max:g}, upper_skin_min {check.upper_skin_min:g}{mark}")
        print(f"{'set':38s} {'faces':>6s} {'worn':>7s} {'not':>7s} {'undecided':>9s} {'no face':>7s}")
        for name, (items, _) in sets.items():
            said = [check.verdict(*s).worn for s in items if s is not None]
            n = len(items)
            print(f"{name:38s} {n:6d} {said.count(True) / n:7.1%} {said.count(False) / n:7.1%} "
                  f"{said.count(None) / n:9.1%} {(n - len(said)) / n:7.1%}")


if __name__ == "__main__":
    main()
