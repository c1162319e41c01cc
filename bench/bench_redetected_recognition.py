"""Recognition of masked faces found again by detection: which alignment keeps them recognisable?

    .venv/bin/python bench/bench_redetected_recognition.py

The photos of ../shared/data/faces and ../shared/data/faces_mit (one folder per person): the first
photo of each person, unmasked, is the gallery; every other photo gets a synthetic mask (`seed`, or
one realistic style per face) and is a probe. A masked dataset in the wild has no unmasked photo to
align with, so each probe's face is found again on the masked photo (MTCNN + YuNet merged) and
aligned three ways, the gallery the same way:

- `unmasked detection`: the probe aligned with its unmasked photo's 5 points (what augment does;
  the upper bound, not available for real masked photos);
- `re-detected, 5 points`: the detector's 5 points on the masked photo (gallery: 5 points);
- `re-detected, located eyes`: eyes from maskgen.eyes.EyeLocator on the masked photo (gallery: the
  same rule on its unmasked photo), i.e. `--alignment eyes` on both sides.

Probes whose face is not found again count as misses (rank-1 wrong, lowest score in verification).
Reports rank-1 identification and verification (every probe against every gallery face) AUC and
TAR at FAR = 0.1 for `sface` and `dlib-resnet`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # lfw_like (a script run by runpy has no own folder on the path)
from lfw_like import SHARED_DATA as DATA  # noqa: E402
from lfw_like import shared_data  # noqa: E402


def main() -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    shared_data(DATA)
    from maskgen.boxes import iou_matrix
    from maskgen.decode import decode_image
    from maskgen.detect import MTCNN
    from maskgen.eyes import EyeLocator
    from maskgen.facetype import classify_face
    from maskgen.finder import FaceFinder, FinderOptions, eyes_only_points
    from maskgen.landmarks import LandmarkPredictor
    from maskgen.masks import mask_rng, style_from_name
    from recog.embed import Embedder
    from recog.metrics import auc, rejected_score, roc_curve, similarity_matrix, verification_summary

    mtcnn, predictor = MTCNN(), LandmarkPredictor()
    finder = FaceFinder(FinderOptions.for_inputs("masked", crop_mode="off"), mtcnn=mtcnn)
    locator = EyeLocator(mtcnn, predictor)
    models = {name: Embedder(name) for name in ("sface", "dlib-resnet")}
    rules = ("unmasked detection", "re-detected, 5 points", "re-detected, located eyes")

    people = sorted(d for folder in ("faces", "faces_mit") for d in (DATA / folder).iterdir() if d.is_dir())
    gallery = {m: {r: [] for r in rules} for m in models}
    probes = {(m, s): {r: [] for r in rules} for m in models for s in ("seed", "random")}
    probe_ids = {s: [] for s in ("seed", "random")}
    for pid, person in enumerate(people):
        photos = sorted(person.glob("*.jpg"))
        for n, path in enumerate(photos):
            image = decode_image(path.read_bytes())
            faces = mtcnn.detect(image)
            if not faces:
                continue
            face = max(faces, key=lambda f: f.width * f.height)
            eyes = eyes_only_points(*locator.locate(image, face.box, face.points))
            if n == 0:
                for m, embedder in models.items():
                    five, located = embedder.embed_faces(image, [face.points, eyes])
                    gallery[m]["unmasked detection"].append(five)
                    gallery[m]["re-detected, 5 points"].append(five)
                    gallery[m]["re-detected, located eyes"].append(located)
                continue
            lm = predictor.predict(image, np.array([f.box for f in faces]))
            for style in ("seed", "random"):
                masked = image
                for k, pts in enumerate(lm):
                    masked, _, _ = style_from_name(style)(masked, pts, mask_rng(0, path.name, k),
                                                          classify_face(image, pts))
                again = finder.find(masked)
                iou = iou_matrix(np.array([face.box]), np.array([g.box for g in again]).reshape(-1, 4))[0]
                found = again[int(iou.argmax())] if len(iou) and iou.max() >= 0.5 else None
                probe_ids[style].append(pid)
                for m, embedder in models.items():
                    cell = probes[(m, style)]
                    cell["unmasked detection"].append(embedder.embed_faces(masked, [face.points])[0])
                    if found is None:
                        cell["re-detected, 5 points"].append(None)
                        cell["re-detected, located eyes"].append(None)
                        continue
                    located = eyes_only_points(*locator.locate(masked, found.box, found.points))
                    five, by_eyes = embedder.embed_faces(masked, [found.points, located])
                    cell["re-detected, 5 points"].append(five)
                    cell["re-detected, located eyes"].append(by_eyes)

    n_people = len(people)
    print(f"{n_people} people, {n_people} gallery photos, {len(probe_ids['seed'])} masked probes per style")
    print()
    print("| model | mask | alignment | found again | rank-1 | AUC | TAR@FAR=0.1 |")
    print("|---|---|---|---:|---:|---:|---:|")
    for (m, style), cells in probes.items():
        ids = np.array(probe_ids[style])
        for rule in rules:
            g = np.stack(gallery[m][rule]).reshape(n_people, -1)
            found = np.array([v is not None for v in cells[rule]])
            p = np.stack([v if v is not None else np.zeros(g.shape[1], np.float32) for v in cells[rule]])
            scores = similarity_matrix(p, g, models[m].spec.similarity)
            floor = rejected_score(scores[found])  # the faces not found again: rejected at every real threshold
            scores[~found] = floor
            rank1 = float(np.mean((scores.argmax(axis=1) == ids) & found))
            labels = ids[:, None] == np.arange(n_people)[None, :]
            roc = roc_curve(scores.ravel(), labels.ravel())
            tar = verification_summary(scores.ravel(), labels.ravel(), (0.1,), floor)["tar_at_far"]["0.1"]
            print(f"| {m} | {style} | {rule} | {found.sum()}/{len(found)} | {rank1:.1%} | {auc(roc):.3f} | "
                  f"{'n/a' if tar is None else format(tar['tar'], '.1%')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
