"""Mask synthesis cost per face on one core: 68 landmarks + mask drawing + JPEG encode.

    .venv/bin/python bench/bench_masks.py [--images 64] [--repeats 5]

LFW-size (250x250) photos made in memory from ../shared/data/faces (bench/lfw_like.py); detection
runs once beforehand and is not timed. One thread (OMP/OpenCV threads = 1), median of the repeats.
Prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"

import cv2  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from lfw_like import lfw_like_images, shared_data  # noqa: E402

STYLES = ("seed", "surgical", "cloth", "n95", "kn95")


def main() -> None:
    from maskgen.detect import MTCNN
    from maskgen.facetype import classify_face
    from maskgen.landmarks import LandmarkPredictor
    from maskgen.masks import mask_rng, style_from_name

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", type=Path, help="the real face data (default: MFR_SHARED_DATA, else ../shared/data)")
    args = parser.parse_args()
    args.data = shared_data(args.data)
    cv2.setNumThreads(1)

    images = lfw_like_images(args.data, args.images, seed=0)
    detector, predictor = MTCNN(threads=1), LandmarkPredictor()
    faces = [(img, np.array([f.box for f in detector.detect(img)[:1]])) for img in images]
    faces = [(img, boxes) for img, boxes in faces if len(boxes)]

    def run(style):
        """Per-face stage times (ms) over all repeats: landmarks, face type, mask, JPEG."""
        times = []
        for _ in range(args.repeats):
            for k, (img, boxes) in enumerate(faces):
                t0 = time.perf_counter()
                lm = predictor.predict(img, boxes)[0]
                t1 = time.perf_counter()
                ftype = classify_face(img, lm)
                t2 = time.perf_counter()
                out, _, _ = style(img, lm, mask_rng(0, str(k), 0), ftype)
                t3 = time.perf_counter()
                cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
                t4 = time.perf_counter()
                times.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))
        return np.array(times) * 1000

    for img, boxes in faces:  # warm-up: page in dlib's 95 MB model
        predictor.predict(img, boxes)
    print(f"{len(faces)} faces in 250x250 photos, one thread, {args.repeats} repeats; "
          "medians over faces x repeats (ms per face)")
    print()
    print("| style | landmarks | face type | mask | JPEG encode | landmarks + mask + JPEG | all four |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in STYLES:
        t = run(style_from_name(name))
        med = np.median(t, axis=0)
        core = np.median(t[:, 0] + t[:, 2] + t[:, 3])
        total = np.median(t.sum(axis=1))
        print(f"| {name} | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.2f} | {med[3]:.2f} | {core:.2f} | {total:.2f} |")


if __name__ == "__main__":
    main()
