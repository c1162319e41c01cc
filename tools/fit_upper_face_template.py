"""Fit the upper-face template used by maskgen.eyes (prints it; paste into UPPER_FACE_TEMPLATE).

    .venv/bin/python tools/fit_upper_face_template.py

The template is where dlib's brow and eye points (17..26, 36..47) land in the ArcFace 112x112 frame
when a face is aligned by MTCNN's 5 points: the mean over every face of at least 40 px in the demo's
photos, which come from PyPI packages (insightface 2.1's sdist, scikit-image), so anyone can re-run
the fit offline and nothing is derived from the test data.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    from jobs.demo import PHOTOS
    from maskgen.align import alignment_matrix, transform_points
    from maskgen.decode import decode_image
    from maskgen.detect import MTCNN
    from maskgen.eyes import UPPER_FACE_POINTS
    from maskgen.landmarks import LandmarkPredictor

    mtcnn, predictor = MTCNN(), LandmarkPredictor()
    aligned = []
    for photo in PHOTOS:
        image = decode_image(photo.read())
        faces = [f for f in mtcnn.detect(image) if f.width >= 40]
        for face, lm in zip(faces, predictor.predict(image, np.array([f.box for f in faces]).reshape(-1, 4))):
            aligned.append(transform_points(lm, alignment_matrix(face.points))[list(UPPER_FACE_POINTS)])
    mean = np.mean(aligned, axis=0)
    print(f"# mean of {len(aligned)} faces")
    print("UPPER_FACE_TEMPLATE = np.array([")
    for row in range(0, len(mean), 4):
        print("    " + " ".join(f"[{x:.3f}, {y:.3f}]," for x, y in mean[row:row + 4]))
    print("])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
