"""Detection and alignment of masked and tightly cropped faces: MTCNN and YuNet side by side.

    .venv/bin/python bench/bench_masked_detection.py

1. Synthetic masks on ../shared/data/faces (faces >= 40 px): each photo is masked (the `seed` style,
   and one realistic style per face), then detected again. Reports faces found again (IoU >= 0.5
   with the unmasked detection) and the median displacement, in the 112x112 ArcFace frame, of the
   5 landmarks between aligning the masked image and aligning the unmasked one, for three alignment
   rules: the detector's 5 points, its two eyes only, and the 68-point eye centres only; and the
   cosine between `sface` embeddings of the masked image aligned from its re-detection and from the
   unmasked detection (mean and 5th percentile). Detectors: MTCNN, YuNet, and both merged
   (`FinderOptions.for_inputs("masked")`).
2. Tight crops of real masked faces: every face of >= 40 px that MTCNN finds in
   ../shared/data/masked_wild, cropped square at 1.05x its box to 128 px; found by each detector
   plainly, after padding (replicated, reflected or black border), and with the O-Net fallback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
sys.path.insert(0, str(HERE))
from lfw_like import tight_masked_crops  # noqa: E402


def main() -> None:
    from maskgen.align import alignment_matrix, transform_points
    from maskgen.boxes import iou_matrix
    from maskgen.decode import decode_image
    from maskgen.detect import MTCNN
    from maskgen.facetype import classify_face
    from maskgen.finder import FaceFinder, FinderOptions, eyes_only_points
    from maskgen.landmarks import LandmarkPredictor
    from maskgen.masks import mask_rng, style_from_name
    from recog.embed import Embedder

    mtcnn, predictor = MTCNN(), LandmarkPredictor()
    from maskgen.yunet import YuNet
    yunet = YuNet()
    both = FaceFinder(FinderOptions.for_inputs("masked", crop_mode="off"), mtcnn=mtcnn, yunet=yunet)
    detectors = {"mtcnn": mtcnn.detect, "yunet": yunet.detect, "both": both.find}
    embedder = Embedder("sface")
    rows = {}
    for path in sorted((DATA / "faces").rglob("*.jpg")):
        image = decode_image(path.read_bytes())
        faces = mtcnn.detect(image)
        if not faces:
            continue
        lm = predictor.predict(image, np.array([f.box for f in faces]))
        for style in ("seed", "random"):
            masked = image
            for k, (face, pts) in enumerate(zip(faces, lm)):
                masked, _, _ = style_from_name(style)(masked, pts, mask_rng(0, path.name, k), classify_face(image, pts))
            for name, det in detectors.items():
                again = det(masked)
                lm_again = predictor.predict(masked, np.array([g.box for g in again])) if again else []
                for face, pts in zip(faces, lm):
                    if face.width < 40:
                        continue
                    key = (name, style)
                    rows.setdefault(key, [])
                    iou = iou_matrix(np.array([face.box]), np.array([g.box for g in again]).reshape(-1, 4))[0]
                    if not len(iou) or iou.max() < 0.5:
                        rows[key].append(None)
                        continue
                    j = int(iou.argmax())
                    pu, pm = face.points, again[j].points

                    def shift(a, b):
                        return float(np.median(np.linalg.norm(transform_points(pu, alignment_matrix(a))
                                                              - transform_points(pu, alignment_matrix(b)), axis=1)))

                    eyes68 = lambda p68: eyes_only_points(p68[36:42].mean(0), p68[42:48].mean(0))  # noqa: E731
                    e_re = embedder.embed_faces(masked, [pm])[0]
                    e_un = embedder.embed_faces(masked, [pu])[0]
                    rows[key].append((shift(pm, pu), shift(eyes_only_points(pm[0], pm[1]), eyes_only_points(pu[0], pu[1])),
                                      shift(eyes68(lm_again[j]), eyes68(pts)), float(e_re @ e_un)))
    print("Synthetic masks on shared/data/faces, faces >= 40 px:")
    print()
    print("| detector | mask | found again | shift, 5 points (px) | shift, eyes (px) | shift, 68-pt eyes (px) "
          "| cosine re-detected vs unmasked alignment: mean / 5th pct |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (name, style), values in rows.items():
        found = np.array([v for v in values if v is not None])
        print(f"| {name} | {style} | {len(found)}/{len(values)} ({len(found) / len(values):.1%}) | "
              f"{np.median(found[:, 0]):.2f} | {np.median(found[:, 1]):.2f} | {np.median(found[:, 2]):.2f} | "
              f"{found[:, 3].mean():.3f} / {np.percentile(found[:, 3], 5):.3f} |")

    crops = tight_masked_crops(DATA, mtcnn)
    print()
    print(f"Tight 128 px crops of {len(crops)} real masked faces (masked_wild):")
    print()
    print("| path | MTCNN | YuNet |")
    print("|---|---:|---:|")
    print(f"| plain | {sum(bool(mtcnn.detect(c)) for c in crops)} | {sum(bool(yunet.detect(c)) for c in crops)} |")
    for border in ("replicate", "reflect", "black"):
        cells = []
        for det in ("mtcnn", "yunet"):
            finder = FaceFinder(FinderOptions(crop_mode="on", crop_detector=det, pad_border=border,
                                              onet_fallback=False), mtcnn=mtcnn, yunet=yunet)
            cells.append(sum(bool(finder.find(c)) for c in crops))
        print(f"| padded 0.35, {border} border | {cells[0]} | {cells[1]} |")
    cells = []
    for det in ("mtcnn", "yunet"):
        finder = FaceFinder(FinderOptions(crop_mode="on", crop_detector=det, pad_border="black"), mtcnn=mtcnn, yunet=yunet)
        cells.append(sum(bool(finder.find(c)) for c in crops))
    print(f"| padded, black border, then O-Net on the whole crop | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    sys.exit(main())
