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
3. Real masked face crops (../shared/data/masked_crops, 425 masked and 665 unmasked 160 px crops of
   133 people; its development half): faces found by the defaults of `--input-kind crops` and of
   `--masked`, with and without the second look, where the faces came from, and recognition of the
   masked crops (probes) against every unmasked crop (gallery) with sface, every probe counted
   (`recog.metrics.probe_gallery_summary`).

    .venv/bin/python bench/bench_masked_detection.py [--only masked_crops]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from lfw_like import SHARED_DATA as DATA  # noqa: E402
from lfw_like import percent, shared_data, tight_masked_crops  # noqa: E402


def masked_crops_rows() -> None:
    import csv

    from maskgen.decode import decode_image
    from maskgen.detect import MTCNN
    from maskgen.finder import FaceFinder, FinderOptions
    from recog.embed import Embedder
    from recog.metrics import probe_gallery_summary

    folder = DATA / "masked_crops"
    rows = list(csv.DictReader((folder / "manifest.csv").open(encoding="utf-8")))
    images = [decode_image((folder / r["path"]).read_bytes()) for r in rows]
    is_probe = np.array([r["masked"] == "1" for r in rows])
    ids = np.array([r["identity"] for r in rows])
    mtcnn, embedder = MTCNN(), Embedder("sface")
    print(f"Real masked crops (masked_crops: {is_probe.sum()} masked, {(~is_probe).sum()} unmasked, "
          f"{len(set(ids))} people), sface, masked probes against every unmasked crop, every probe counted:")
    print()
    print("| finder | masked found | unmasked found | ms per crop | found by | AUC | TAR@FAR=0.1 | TAR@FAR=0.01 "
          "| rank-1 | rank-1, mean templates |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for kind in ("crops", "masked"):
        for second in (False, True):
            finder = FaceFinder(FinderOptions.for_inputs(kind, second_look=second), mtcnn=mtcnn)
            started = time.perf_counter()
            found = [finder.find(image) for image in images]
            ms = 1000 * (time.perf_counter() - started) / len(images)
            aligned = [embedder.align(image, [max(f, key=lambda x: x.width * x.height).points])[0] if f else None
                       for image, f in zip(images, found)]
            vectors = iter(embedder.embed_crops(np.stack([a for a in aligned if a is not None])))
            emb = np.stack([next(vectors) if a is not None else np.ones(embedder.dim, np.float32) for a in aligned])
            acquired = np.array([bool(f) for f in found])
            sources: dict = {}
            for f in found:
                if f:
                    sources[f[0].source] = sources.get(f[0].source, 0) + 1
            fig = probe_gallery_summary(emb[is_probe], emb[~is_probe], ids[is_probe], ids[~is_probe],
                                        acquired=acquired[is_probe])
            print(f"| {kind}, second look {'on' if second else 'off'} | {acquired[is_probe].sum()}/{is_probe.sum()} "
                  f"({acquired[is_probe].mean():.1%}) | {acquired[~is_probe].sum()}/{(~is_probe).sum()} | {ms:.1f} | "
                  f"{', '.join(f'{k} {v}' for k, v in sorted(sources.items(), key=lambda kv: -kv[1]))} | "
                  f"{percent(fig['auc'])} | {percent(fig['tar@0.1'])} | {percent(fig['tar@0.01'])} | "
                  f"{percent(fig['rank1'])} | {percent(fig['rank1 template'])} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("masked_crops", "synthetic"),
                        help="only the real masked crops' table, or only the synthetic masks' (which alone depends "
                             "on how masks are drawn)")
    only = parser.parse_args().only
    shared_data(DATA)
    if only == "masked_crops":
        return masked_crops_rows()
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
    if only == "synthetic":
        return None
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
    print()
    masked_crops_rows()


if __name__ == "__main__":
    sys.exit(main())
