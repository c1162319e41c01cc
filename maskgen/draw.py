"""Drawing helpers for people looking at results (annotated detections). Pure: arrays in, arrays out."""

from __future__ import annotations

import cv2
import numpy as np

# One colour per landmark, in LANDMARK_NAMES order (RGB).
_POINT_COLOURS = ((255, 64, 64), (64, 160, 255), (255, 220, 0), (255, 64, 255), (0, 230, 230))


def annotate_faces(image: np.ndarray, faces, box_colour=(0, 255, 0)) -> np.ndarray:
    """A copy of an RGB image with each face's box, score and 5 landmarks drawn."""
    out = np.ascontiguousarray(image.copy())
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for face in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), box_colour, thickness, cv2.LINE_AA)
        label = f"{face.score:.3f}"
        scale = 0.4 * thickness
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = max(th + base, y1)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw, ty), box_colour, -1)
        cv2.putText(out, label, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
        radius = max(2, int(round(face.width / 40)))
        for (px, py), colour in zip(face.landmarks, _POINT_COLOURS):
            cv2.circle(out, (int(round(px)), int(round(py))), radius, colour, -1, cv2.LINE_AA)
    return out
