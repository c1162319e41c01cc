"""Time the `mtcnn` package's own detector (TensorFlow) on images saved by bench_detect.py.

Run by bench_detect.py with an interpreter that has TensorFlow and mtcnn; prints one JSON line.
"""

import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def main(images_path: str, batch_sizes: str, repeats: str) -> None:
    import mtcnn

    images = list(np.load(images_path))
    detector = mtcnn.MTCNN()
    detector.detect_faces(images[:2])  # warm-up: graph tracing
    out = {}
    for bs in (int(b) for b in batch_sizes.split(",")):
        rates = []
        for _ in range(int(repeats)):
            started = time.perf_counter()
            for i in range(0, len(images), bs):
                chunk = images[i:i + bs]
                detector.detect_faces(chunk if len(chunk) > 1 else chunk[0])
            rates.append(len(images) / (time.perf_counter() - started))
        out[bs] = statistics.median(rates)
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:4])
