"""Where MTCNN's 5 points land in dlib's 150x150 face chip (the recognition ResNet's own alignment).

    .venv/bin/python tools/fit_dlib_chip_template.py ../shared/data/faces

dlib aligns with its 5-point shape predictor (eye corners, nose base) and
`get_face_chip(img, shape, size=150, padding=0.25)`. Our pipeline aligns with MTCNN's points, so the
`dlib-resnet` spec needs the positions of *those* points in dlib's chip: for every face we rebuild
dlib's chip mapping (the chip rectangle, rotated about its centre, onto the chip corners; checked
against dlib's own chip pixels) and average the MTCNN points mapped into it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def chip_matrix(details) -> np.ndarray:
    """2x3 affine matrix from image to chip pixels for a dlib chip_details."""
    r = details.rect
    cx, cy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
    c, s = np.cos(details.angle), np.sin(details.angle)

    def rotate(x, y):
        dx, dy = x - cx, y - cy
        return cx + c * dx - s * dy, cy + s * dx + c * dy

    src = np.float32([rotate(r.left(), r.top()), rotate(r.right(), r.top()), rotate(r.right(), r.bottom())])
    dst = np.float32([[0, 0], [details.cols - 1, 0], [details.cols - 1, details.rows - 1]])
    return cv2.getAffineTransform(src, dst)


def mtcnn_points_in_dlib_chips(folder: Path, size: int = 150, padding: float = 0.25):
    import dlib

    from maskgen.align import transform_points
    from maskgen.decode import decode_image
    from maskgen.detect import MTCNN
    from maskgen.landmarks import MTCNN_TO_DLIB, model_path

    detector = MTCNN()
    sp5 = dlib.shape_predictor(str(model_path("shape_predictor_5_face_landmarks.dat")))
    points, pixel_errors = [], []
    for path in sorted(folder.rglob("*.jpg")):
        image = decode_image(path.read_bytes())
        for face in detector.detect(image):
            if face.width < 60:
                continue
            x1, y1, x2, y2 = MTCNN_TO_DLIB.apply(np.array([face.box]))[0]
            shape = sp5(image, dlib.rectangle(int(x1), int(y1), int(x2), int(y2)))
            details = dlib.get_face_chip_details(shape, size, padding)
            matrix = chip_matrix(details)
            ours = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR)
            theirs = dlib.get_face_chip(image, shape, size, padding)
            pixel_errors.append(np.abs(ours.astype(int) - theirs.astype(int)).mean())
            points.append(transform_points(face.points, matrix))
    return np.array(points), np.array(pixel_errors)


def main(folder: str) -> None:
    points, errors = mtcnn_points_in_dlib_chips(Path(folder))
    mean = points.mean(axis=0)
    spread = np.linalg.norm(points - mean, axis=2).mean(axis=0)
    print(f"{len(points)} faces; mean |our chip - dlib's chip| {np.median(errors):.2f} grey levels (median)")
    print("template (x, y) for left_eye, right_eye, nose, mouth_left, mouth_right:")
    print(np.round(mean, 2).tolist())
    print("mean distance of a face's point from the template (px):", np.round(spread, 2).tolist())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('folder', help='a folder of face photos (e.g. ../shared/data/faces)')
    args = parser.parse_args()
    main(args.folder)
