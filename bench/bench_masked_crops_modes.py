"""Every matching mode on real masked faces: ../shared/data/masked_crops, every probe counted.

    .venv/bin/python bench/bench_masked_crops_modes.py [--models sface,dlib-resnet] [--style seed]

The masked crops (425, real masks) are the probes, every unmasked crop (665) the gallery, 133 people.
Faces are found as `--input-kind crops` finds them (padding, the second look), one face per crop
(`center`), aligned by their five points. For each model and matching mode (recog.matching: plain,
masked-gallery with the `--style` mask drawn on the gallery faces, flip, upper-face): faces acquired,
the failure-to-acquire rate, AUC, TAR at FAR 0.1 / 0.01 / 0.001 over every probe x gallery pair, and
rank-1 against single gallery images and against mean identity templates; a probe without a face is a
rejected comparison and a miss (recog.metrics.probe_gallery_summary). This is the development half of
the set: nothing in the modes was tuned on it.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the project
sys.path.insert(0, str(HERE))  # lfw_like (a script run by runpy has no own folder on the path)
from lfw_like import SHARED_DATA as DATA  # noqa: E402
from lfw_like import percent, shared_data  # noqa: E402


def main() -> None:
    from maskgen.augment import AugmentOptions, Augmenter
    from maskgen.decode import decode_image
    from maskgen.detect import MTCNN
    from maskgen.finder import FaceFinder, FinderOptions, select_faces
    from maskgen.landmarks import LandmarkPredictor
    from recog.embed import Embedder
    from recog.matching import MODES
    from recog.metrics import probe_gallery_summary

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="sface,dlib-resnet")
    parser.add_argument("--style", default="seed", help="the mask masked-gallery draws on the gallery")
    args = parser.parse_args()
    shared_data(DATA)

    folder = DATA / "masked_crops"
    rows = list(csv.DictReader((folder / "manifest.csv").open(encoding="utf-8")))
    images = [decode_image((folder / r["path"]).read_bytes()) for r in rows]
    is_probe = np.array([r["masked"] == "1" for r in rows])
    ids = np.array([r["identity"] for r in rows])
    mtcnn, predictor = MTCNN(), LandmarkPredictor()
    finder = FaceFinder(FinderOptions.for_inputs("crops"), mtcnn=mtcnn)
    faces = []
    for image in images:
        found = finder.find(image)
        faces.append(found[select_faces(found, image.shape)[0]] if found else None)
    acquired = np.array([f is not None for f in faces])
    masker = Augmenter(AugmentOptions(style=args.style, outputs="image"), detector=mtcnn, predictor=predictor)
    masked_gallery = {}
    for k in np.nonzero(acquired & ~is_probe)[0]:
        f = faces[k]
        box = np.array([f.box])
        lm = predictor.predict(images[k], box)
        masked_gallery[k] = masker.mask_faces(images[k], rows[k]["path"], box, [f.score], f.points[None], lm).image
    print(f"masked_crops: {is_probe.sum()} masked probes ({acquired[is_probe].sum()} with a face), "
          f"{(~is_probe).sum()} unmasked gallery crops ({acquired[~is_probe].sum()} with a face), {len(set(ids))} "
          f"people; mask drawn for masked-gallery: {args.style}")
    print()
    print("| model | mode | acquired | FTA rate | AUC | TAR@FAR=0.1 | TAR@FAR=0.01 | TAR@FAR=0.001 | rank-1, images "
          "| rank-1, mean templates |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model in args.models.split(","):
        for name, mode in MODES.items():
            embedder = Embedder(model, flip=mode.flip, region=mode.region)
            crops = []
            for k in range(len(images)):
                if not acquired[k]:
                    continue
                picture = masked_gallery[k] if mode.masked_gallery and not is_probe[k] else images[k]
                crops.append(embedder.align(picture, [faces[k].points])[0])
            vectors = iter(embedder.embed_crops(np.stack(crops)))
            emb = np.stack([next(vectors) if ok else np.ones(embedder.dim, np.float32) for ok in acquired])
            fig = probe_gallery_summary(emb[is_probe], emb[~is_probe], ids[is_probe], ids[~is_probe],
                                        acquired=acquired[is_probe], fars=(0.1, 0.01, 0.001))
            fta = 1 - fig["acquired"] / fig["probes"]
            print(f"| {model} | {name} | {fig['acquired']}/{fig['probes']} | {100 * fta:.1f} % | "
                  f"{percent(fig['auc'])} | {percent(fig['tar@0.1'])} | {percent(fig['tar@0.01'])} | "
                  f"{percent(fig['tar@0.001'])} | {percent(fig['rank1'])} | {percent(fig['rank1 template'])} |",
                  flush=True)


if __name__ == "__main__":
    main()
