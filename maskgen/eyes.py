"""Where the eyes are when the lower face is hidden: the eye positions behind `alignment="eyes"`.

    locator = EyeLocator(mtcnn, predictor)
    left, right = locator.locate(rgb, face.box, face.points)

Under a mask every single estimate of the eyes moves: MTCNN's O-Net and dlib's shape predictor see
the whole face, and a mask changes what they see. Measured on ../shared/data/faces with the seed's
black polygon, which reaches up to the nose bridge, aligning by MTCNN's eyes moves the face by a
median 3.0 px in the 112x112 frame and by dlib's eye contours 3.6 px; their errors are largely
independent, so `EyeLocator` averages six of them, which moves it 1.59 px (0.89 px under the
realistic styles; bench/bench_masked_detection.py):

- MTCNN's eyes, and O-Net's eyes on the mirror image of the same box;
- the eyes implied by dlib's brow and eye points (17..26, 36..47) and by its brow points alone,
  each fitted to `UPPER_FACE_TEMPLATE` by a similarity, on the image and on its mirror image.

The brows sit furthest from the mask and dlib places them more steadily than the eyes under it;
mirroring gives each model a second, differently biased look at the same face. The combination was
chosen among 14 candidates on ../shared/data/faces and faces_mit (small sets: 55 and 18 photos); on
faces_mit the seed polygon still moves it 3.65 px (against 7.09 px for MTCNN's eyes).
"""

from __future__ import annotations

import cv2
import numpy as np

from maskgen.align import similarity_transform, transform_points
from maskgen.decode import check_rgb
from maskgen.landmarks import checked_boxes, mirror_landmarks

BROWS = tuple(range(17, 27))
UPPER_FACE_POINTS = BROWS + tuple(range(36, 48))

# tools/fit_upper_face_template.py: dlib's points 17..26 and 36..47 in the ArcFace 112x112 frame
# (faces aligned by MTCNN's 5 points), mean of the 8 faces in the demo's PyPI photos.
UPPER_FACE_TEMPLATE = np.array([
    [29.687, 43.927], [34.471, 40.918], [40.409, 41.220], [46.393, 43.006],
    [52.046, 45.993], [66.097, 46.654], [72.955, 44.091], [80.108, 43.269],
    [87.406, 43.737], [93.465, 47.556], [35.732, 53.400], [39.619, 52.106],
    [44.519, 52.442], [49.000, 54.953], [44.046, 55.875], [39.127, 55.797],
    [70.129, 56.115], [74.275, 53.991], [79.375, 54.243], [84.059, 55.813],
    [79.660, 57.583], [74.545, 57.536],
])
_TEMPLATE_EYES = np.array([UPPER_FACE_TEMPLATE[10:16].mean(axis=0), UPPER_FACE_TEMPLATE[16:22].mean(axis=0)])


def eyes_from_upper_face(landmarks68, points=UPPER_FACE_POINTS) -> np.ndarray:
    """(2, 2) eye centres implied by some of a face's 68 points: the similarity that fits them to
    `UPPER_FACE_TEMPLATE` places the template's eye-contour centres back in the image. (The contour
    centres, not ArcFace's eyes: the template's faces need not share MTCNN's idea of the eyes.)"""
    lm = np.asarray(landmarks68, dtype=np.float64).reshape(68, 2)
    rows = [UPPER_FACE_POINTS.index(i) for i in points]
    to_template = similarity_transform(lm[list(points)], UPPER_FACE_TEMPLATE[rows])
    return transform_points(_TEMPLATE_EYES, cv2.invertAffineTransform(to_template))


def mirror_box(box, width: int) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.array([width - 1 - x2, y1, width - 1 - x1, y2], dtype=np.float64)


class EyeLocator:
    """Eye positions of detected faces from six estimates (see the module's doc). `mtcnn` is a
    maskgen.detect.MTCNN, `predictor` a maskgen.landmarks.LandmarkPredictor."""

    def __init__(self, mtcnn, predictor):
        self.mtcnn, self.predictor = mtcnn, predictor

    def locate(self, image: np.ndarray, box, points5) -> np.ndarray:
        """(2, 2): image-left eye, image-right eye, for the face with this box and MTCNN-style 5 points.
        The box and points are checked as the predictor checks them (`checked_boxes`: NaN points gave
        NaN eyes; a box off the photo or inverted was refused in the words of an inner region's check)."""
        check_rgb(image)
        points = np.asarray(points5, dtype=np.float64)
        boxes, points = checked_boxes([box], points.reshape(1, 5, 2) if points.size == 10 else points[None],
                                      image.shape)
        box, points = boxes[0], points[0]
        h, w = image.shape[:2]
        # Work on the face's neighbourhood only: mirroring and normalising a whole photo per face
        # costs more than the models.
        margin = 0.25 * max(box[2] - box[0], box[3] - box[1])  # holds the square and dlib boxes
        x0, y0 = int(max(0, box[0] - margin)), int(max(0, box[1] - margin))
        x1, y1 = int(min(w, box[2] + margin + 1)), int(min(h, box[3] + margin + 1))
        region = np.ascontiguousarray(image[y0:y1, x0:x1])
        offset = np.array([x0, y0], dtype=np.float64)
        box = box - np.tile(offset, 2)
        width = region.shape[1]
        mirrored = np.ascontiguousarray(region[:, ::-1])
        flipped_box = mirror_box(box, width)
        estimates = [points[:2] - offset]
        onet = self.mtcnn.onet_points(mirrored, flipped_box)[:2]
        # the mirror image's left eye is the face's right one
        estimates.append(np.array([[width - 1 - onet[1, 0], onet[1, 1]], [width - 1 - onet[0, 0], onet[0, 1]]]))
        plain = self.predictor.predict(region, box[None])[0]
        back = mirror_landmarks(self.predictor.predict(mirrored, flipped_box[None])[0], width)
        for lm in (plain, back):
            estimates.append(eyes_from_upper_face(lm))
            estimates.append(eyes_from_upper_face(lm, BROWS))
        return np.mean(estimates, axis=0) + offset
