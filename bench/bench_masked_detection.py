"""Detection and alignment of masked and tightly cropped faces: MTCNN and YuNet side by side.

    .venv/bin/python bench/bench_masked_detection.py

1. Synthetic masks on ../shared/data/faces (faces >= 40 px): each photo is masked (the `seed` style,
   and one realistic style per face), then detected again. Reports faces found again (IoU >= 0.5
   with the unmasked detection) and the median displacement, in the 112x112 ArcFace frame, of the
   5 landmarks between aligning the masked image and aligning the unmasked one, for three alignment
   rules applied to both: the detector's 5 points, its two eyes only, and the eyes located by
   maskgen.eyes.EyeLocator; and the cosine between `sface` embeddings of the masked image aligned
   from its re-detection and from the unmasked photo, by 5 points and by located eyes (mean and 5th
   percentile). Detectors: MTCNN, YuNet, and both merged (`FinderOptions.for_inputs("masked")`).
   ../shared/data/faces_mit is measured the same way with both detectors merged.
2. Tight crops of real masked faces: every face of >= 40 px that MTCNN finds in
   ../shared/data/masked_wild, cropped square at 1.05x its box to 128 px; found by each detector
   plainly, after padding (replicated, reflected or black border), and with the O-Net fallback.
"""

from __future__ import annotations

import sys
import time
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
    from maskgen.eyes import EyeLocator
    from maskgen.finder import FaceFinder, FinderOptions, eyes_only_points
    from maskgen.landmarks import LandmarkPredictor
    from maskgen.masks import mask_rng, style_from_name
    from recog.embed import Embedder

    mtcnn, predictor = MTCNN(), LandmarkPredictor()
    from maskgen.yunet import YuNet
    yunet = YuNet()
    both = FaceFinder(FinderOptions.for_inputs("masked", crop_mode="off"), mtcnn=mtcnn, yunet=yunet)
    detectors = {"mtcnn": mtcnn.detect, "yunet": yunet.detect, "both": both.find}
    locator = EyeLocator(mtcnn, predictor)
    embedder = Embedder("sface")
    rows, locate_ms = {}, []
    for folder in ("faces", "faces_mit"):
        for path in sorted((DATA / folder).rglob("*.jpg")):
            image = decode_image(path.read_bytes())
            faces = mtcnn.detect(image)
            if not faces:
                continue
            lm = predictor.predict(image, np.array([f.box for f in faces]))
            located = []
            for f in faces:
                t0 = time.perf_counter()
                located.append(locator.locate(image, f.box, f.points))
                locate_ms.append((time.perf_counter() - t0) * 1000)
            for style in ("seed", "random"):
                masked = image
                for k, (face, pts) in enumerate(zip(faces, lm)):
                    masked, _, _ = style_from_name(style)(masked, pts, mask_rng(0, path.name, k),
                                                          classify_face(image, pts))
                for name, det in detectors.items():
                    if folder != "faces" and name != "both":
                        continue
                    again = det(masked)
                    for face, eyes in zip(faces, located):
                        if face.width < 40:
                            continue
                        key = (folder, name, style)
                        rows.setdefault(key, [])
                        iou = iou_matrix(np.array([face.box]), np.array([g.box for g in again]).reshape(-1, 4))[0]
                        if not len(iou) or iou.max() < 0.5:
                            rows[key].append(None)
                            continue
                        j = int(iou.argmax())
                        pu, pm = face.points, again[j].points
                        eyes_again = locator.locate(masked, again[j].box, pm)

                        def shift(a, b):
                            return float(np.median(np.linalg.norm(transform_points(pu, alignment_matrix(a))
                                                                  - transform_points(pu, alignment_matrix(b)), axis=1)))

                        e_re, e_un, l_re, l_un = embedder.embed_faces(
                            masked, [pm, pu, eyes_only_points(*eyes_again), eyes_only_points(*eyes)])
                        rows[key].append((shift(pm, pu), shift(eyes_only_points(*pm[:2]), eyes_only_points(*pu[:2])),
                                          shift(eyes_only_points(*eyes_again), eyes_only_points(*eyes)),
                                          float(e_re @ e_un), float(l_re @ l_un)))
    print("Synthetic masks on shared/data/faces and faces_mit, faces >= 40 px:")
    print()
    print("| photos | detector | mask | found again | shift, 5 points (px) | shift, detector's eyes (px) "
          "| shift, located eyes (px) | cosine, 5 points: mean / 5th pct | cosine, located eyes: mean / 5th pct |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for (folder, name, style), values in rows.items():
        found = np.array([v for v in values if v is not None])
        print(f"| {folder} | {name} | {style} | {len(found)}/{len(values)} ({len(found) / len(values):.1%}) | "
              f"{np.median(found[:, 0]):.2f} | {np.median(found[:, 1]):.2f} | {np.median(found[:, 2]):.2f} | "
              f"{found[:, 3].mean():.3f} / {np.percentile(found[:, 3], 5):.3f} | "
              f"{found[:, 4].mean():.3f} / {np.percentile(found[:, 4], 5):.3f} |")
    print()
    print(f"EyeLocator.locate on the unmasked photos: median {np.median(locate_ms):.1f} ms per face "
          f"({len(locate_ms)} faces of faces and faces_mit, every size)")

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
