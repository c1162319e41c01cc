"""Pictures for people: annotated detections and before/after contact sheets. Pure: arrays in, arrays out."""

from __future__ import annotations

import cv2
import numpy as np

from maskgen.checks import check_colour, is_whole

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


def contact_sheet(originals, masked, columns: int = 5, cell: int = 112, gap: int = 2,
                  background=(255, 255, 255)) -> np.ndarray:
    """Originals over their masked versions in a grid, like the seed's `result/result.png`.

    Pairs fill `columns` per band; each band is a row of originals with the masked row beneath.
    Every picture is resized to `cell` x `cell` (aspect kept, centred). Returns an RGB array.
    """
    # one image given alone is one pair (its rows were taken for images: "100 originals but 50 masked")
    originals, masked = ([x] if isinstance(x, np.ndarray) and (x.ndim == 2 or (x.ndim == 3 and x.shape[2] in (3, 4)))
                         else list(x) for x in (originals, masked))
    if len(originals) != len(masked):
        raise ValueError(f"{len(originals)} originals but {len(masked)} masked images")
    if not originals:
        raise ValueError("nothing to put on a contact sheet")
    for name, value, least in (("columns", columns, 1), ("cell", cell, 8), ("gap", gap, 0)):
        if not is_whole(value) or value < least:  # (2.5 and -5 were TypeErrors and numpy's broadcast errors)
            raise ValueError(f"{name} is a whole number of at least {least}, got {value!r}")
    # a grey level (0 to 255) or an (R, G, B) colour
    background = check_colour((background,) * 3 if is_whole(background) else background, "background")
    columns = min(columns, len(originals))
    bands = -(-len(originals) // columns)
    width = columns * cell + (columns + 1) * gap
    height = bands * (2 * cell + gap) + (bands + 1) * gap
    sheet = np.empty((height, width, 3), np.uint8)
    sheet[:] = background
    for i, (orig, mask) in enumerate(zip(originals, masked)):
        band, col = divmod(i, columns)
        x = gap + col * (cell + gap)
        y = gap + band * (2 * cell + 2 * gap)
        sheet[y:y + cell, x:x + cell] = _fit(orig, cell, background)
        sheet[y + cell + gap:y + 2 * cell + gap, x:x + cell] = _fit(mask, cell, background)
    return sheet


def _fit(image: np.ndarray, cell: int, background) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:  # grey: shown as grey
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(f"contact_sheet takes RGB (or grey) uint8 images, got {image.dtype} {image.shape}")
    image = image[:, :, :3]  # RGBA: its colour (the sheet is opaque)
    h, w = image.shape[:2]
    if not h or not w:  # (a ZeroDivisionError)
        raise ValueError(f"contact_sheet was given an image with no pixels: shape {image.shape}")
    scale = cell / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp) if (nh, nw) != (h, w) else image
    out = np.empty((cell, cell, 3), np.uint8)
    out[:] = background
    y, x = (cell - nh) // 2, (cell - nw) // 2
    out[y:y + nh, x:x + nw] = resized
    return out
