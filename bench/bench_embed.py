"""Embedding throughput per built-in model on this machine, beside dlib's own code, in one run.

    .venv/bin/python bench/bench_embed.py [--faces 128] [--repeats 3]

Aligned crops are made once from LFW-size photos (bench/lfw_like.py) and not timed. Each figure is
the median faces/s over the repeats; dlib's `compute_face_descriptor` runs on 150x150 chips, one
call per batch of chips (its batch API), with all CPUs. A model whose PReLUs the embedder runs as
blocked convolutions on CPUs (recog.embed.prepared_graph) is also timed with the graph as published.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from lfw_like import lfw_like_images, shared_data  # noqa: E402

BATCHES = (1, 32)


def rate(fn, crops, batch, repeats):
    fn(crops[:batch])  # warm-up
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(0, len(crops), batch):
            fn(crops[i:i + batch])
        runs.append(len(crops) / (time.perf_counter() - started))
    return statistics.median(runs)


def main() -> None:
    import dlib

    from maskgen.detect import MTCNN
    from maskgen.landmarks import model_path
    from maskgen.runtime import create_session
    from recog.embed import Embedder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, help="the real face data (default: MFR_SHARED_DATA, else ../shared/data)")
    args = parser.parse_args()
    args.data = shared_data(args.data)

    images = lfw_like_images(args.data, args.faces, seed=0)
    detector = MTCNN()
    points = [detector.detect(img)[0].points for img in images]
    rows = []
    for name in ("sface", "dlib-resnet", "insightface-mbf"):
        embedder = Embedder(name, accept_licence=True)
        crops = np.concatenate([embedder.align(img, [p]) for img, p in zip(images, points)])
        rows.append((name, embedder.providers[0], *[rate(embedder.embed_crops, crops, b, args.repeats) for b in BATCHES]))
        if embedder.blocked_prelus:  # the same model with its PReLUs as the file has them (recog.embed.prepared_graph)
            published = copy.copy(embedder)
            published.session = create_session(embedder.path.read_bytes())
            rows.append((f"{name}, {embedder.blocked_prelus} PRelu nodes as published", published.providers[0],
                         *[rate(published.embed_crops, crops, b, args.repeats) for b in BATCHES]))
        if name == "dlib-resnet":
            facerec = dlib.face_recognition_model_v1(str(model_path("dlib_face_recognition_resnet_model_v1.dat")))
            chips = list(crops)
            dlib_rates = [rate(lambda c: facerec.compute_face_descriptor(list(c)), chips, b, args.repeats)
                          for b in BATCHES]
            rows.append(("dlib's compute_face_descriptor", "dlib (C++)", *dlib_rates))
    print(f"{len(images)} faces, median of {args.repeats} runs, {os.cpu_count()} CPUs")
    print()
    print("| model | runtime | batch 1 (faces/s) | batch 32 (faces/s) |")
    print("|---|---|---:|---:|")
    for name, runtime, r1, r32 in rows:
        print(f"| {name} | {runtime} | {r1:.1f} | {r32:.1f} |")
    ours = {r[0]: r for r in rows}
    ref = ours["dlib's compute_face_descriptor"]
    for i, b in enumerate(BATCHES):
        print(f"\ndlib-resnet on ONNX Runtime vs dlib's code, batch {b}: {ours['dlib-resnet'][2 + i] / ref[2 + i]:.1f}x")


if __name__ == "__main__":
    main()
