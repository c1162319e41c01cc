"""Record the `mtcnn` package's own detections as a test fixture.

The reference implementation needs TensorFlow, which the project never depends on, so this script
runs in a throwaway environment:

    python3 -m venv /tmp/refenv
    /tmp/refenv/bin/pip install tensorflow-cpu mtcnn==1.0.0 pillow
    /tmp/refenv/bin/python tools/mtcnn_reference.py ../shared/data tests/fixtures/mtcnn_reference.json

Images are decoded with Pillow (EXIF orientation applied, RGB), exactly as `maskgen.decode` does,
and handed to the reference one at a time, so the fixture compares detectors rather than decoders
or the reference's batch padding.  Coordinates are stored unrounded (the package's `numpy` output).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SUBSETS = ("faces", "masked_wild")


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"))


def needs_tensorflow() -> None:
    """Stop with the set-up to use where TensorFlow is missing (the project's own environment has the
    mtcnn package for its weights, not TensorFlow: `import mtcnn` ended in a traceback there)."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise SystemExit("this tool runs the reference Keras MTCNN, which needs TensorFlow: run it with a throwaway "
                         "environment's python (/tmp/refenv/bin/python; see this file's docstring), not the "
                         "project's") from None


def main(data_root: str, out_path: str) -> None:
    needs_tensorflow()
    import mtcnn
    import tensorflow as tf
    from importlib.metadata import version

    detector = mtcnn.MTCNN()
    root = Path(data_root)
    records = []
    started = time.time()
    for subset in SUBSETS:
        for path in sorted((root / subset).rglob("*.jpg")):
            rgb = load_rgb(path)
            rows = detector.detect_faces([rgb], box_format="xyxy", output_type="numpy")
            faces = []
            for row in np.asarray(rows).reshape(-1, 16):
                faces.append({
                    "box": [round(float(v), 3) for v in row[1:5]],
                    "score": round(float(row[5]), 6),
                    # columns 6..10 are x of the 5 points, 11..15 their y
                    "landmarks": [[round(float(row[6 + i]), 3), round(float(row[11 + i]), 3)] for i in range(5)],
                })
            records.append({
                "image": str(path.relative_to(root)),
                "width": int(rgb.shape[1]),
                "height": int(rgb.shape[0]),
                "faces": faces,
            })
    out = {
        "reference": f"mtcnn=={version('mtcnn')} on tensorflow=={tf.__version__}",
        "options": {"min_face_size": 20, "scale_factor": 0.709, "thresholds": [0.6, 0.7, 0.8]},
        "box_format": "x1,y1,x2,y2 in pixels; landmarks: left_eye, right_eye, nose, mouth_left, mouth_right",
        "seconds": round(time.time() - started, 1),
        "images": records,
    }
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(json.dumps(out, indent=1) + "\n")
    print(f"{len(records)} images, {sum(len(r['faces']) for r in records)} faces -> {out_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('data_root', help='the shared data folder (../shared/data)')
    parser.add_argument('out_path', help='the JSON fixture to write')
    args = parser.parse_args()
    main(args.data_root, args.out_path)
