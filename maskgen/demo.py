"""The one-photo detection demo (`python -m maskgen.demo`): detect, align and mask the faces of a real photo.

The photo is the NASA astronaut portrait (public domain) that scikit-image ships in its wheel, so the
demo needs no network beyond the package install. Its SHA-256 is checked before use.

    python -m maskgen.demo --out out/astronaut
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np

from maskgen.align import ARCFACE_112, align_face
from maskgen.augment import AugmentOptions, Augmenter
from maskgen.decode import decode_image
from maskgen.detect import LANDMARK_NAMES, MTCNN
from maskgen.draw import annotate_faces, contact_sheet
from maskgen.masks import STYLE_NAMES
from maskgen.runtime import sha256_bytes

ASTRONAUT = ("scikit-image", "skimage/data/astronaut.png",
             "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5")


def packaged_photo(spec=ASTRONAUT) -> bytes:
    """Bytes of a photo shipped inside an installed package, checked against its known hash."""
    dist_name, rel_path, sha = spec
    try:
        path = Path(metadata.distribution(dist_name).locate_file(rel_path))
    except metadata.PackageNotFoundError:
        raise RuntimeError(f"the demo photo comes with {dist_name}; install the project with the [demo] extra") from None
    data = path.read_bytes()
    if sha256_bytes(data) != sha:
        raise RuntimeError(f"{path} does not have the expected SHA-256 {sha}; refusing to use it")
    return data


def run(out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    image = decode_image(packaged_photo())
    detector = MTCNN()
    started = time.perf_counter()
    faces = detector.detect(image)
    seconds = time.perf_counter() - started

    annotated = out_dir / "astronaut_detections.jpg"
    cv2.imwrite(str(annotated), cv2.cvtColor(annotate_faces(image, faces), cv2.COLOR_RGB2BGR))
    crops = []
    for i, face in enumerate(faces):
        crop_path = out_dir / f"astronaut_face{i}_aligned112.png"
        cv2.imwrite(str(crop_path), cv2.cvtColor(align_face(image, face.points, ARCFACE_112), cv2.COLOR_RGB2BGR))
        crops.append(str(crop_path))

    # Every mask style on the same faces, and a before/after contact sheet of the aligned crops.
    from maskgen.landmarks import LandmarkPredictor

    predictor = LandmarkPredictor()
    originals, masked, masked_files = [], [], {}
    for style in (s for s in STYLE_NAMES if s != "random"):
        augmenter = Augmenter(AugmentOptions(style=style, seed=0), detector=detector, predictor=predictor)
        result = augmenter.augment(image, "astronaut.png")
        path = out_dir / f"astronaut_masked_{style}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(result.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        masked_files[style] = str(path)
        originals += [align_face(image, np.asarray(f.landmarks5), ARCFACE_112) for f in result.faces if f.masked]
        masked += result.crops
    sheet_path = out_dir / "contact_sheet.png"
    cv2.imwrite(str(sheet_path), cv2.cvtColor(contact_sheet(originals, masked, columns=5), cv2.COLOR_RGB2BGR))

    summary = {
        "image": "scikit-image astronaut.png",
        "size": [int(image.shape[1]), int(image.shape[0])],
        "detector": detector.version,
        "providers": detector.providers,
        "seconds": round(seconds, 4),
        "faces": [
            {"box": [round(v, 1) for v in f.box], "score": round(f.score, 4),
             "landmarks": {n: [round(x, 1), round(y, 1)] for n, (x, y) in zip(LANDMARK_NAMES, f.landmarks)}}
            for f in faces
        ],
        "outputs": {"annotated": str(annotated), "aligned_crops": crops, "masked": masked_files,
                    "contact_sheet": str(sheet_path)},
    }
    (out_dir / "detections.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/astronaut"),
                        help="output folder (default: out/astronaut; `mfr demo` writes out/demo)")
    args = parser.parse_args(argv)
    summary = run(args.out)
    print(f"{len(summary['faces'])} face(s) in {summary['image']} {summary['size'][0]}x{summary['size'][1]} "
          f"in {summary['seconds'] * 1000:.0f} ms on {summary['providers'][0]}")
    for face in summary["faces"]:
        print(f"  box {face['box']} score {face['score']}")
    print(f"annotated image: {summary['outputs']['annotated']}")
    for crop in summary["outputs"]["aligned_crops"]:
        print(f"aligned 112x112 crop: {crop}")
    for style, path in summary["outputs"]["masked"].items():
        print(f"masked ({style}): {path}")
    print(f"before/after contact sheet: {summary['outputs']['contact_sheet']}")
    print(f"details: {args.out / 'detections.json'}")
    return 0 if summary["faces"] else 1


if __name__ == "__main__":
    sys.exit(main())
