"""Detection throughput on LFW-size (250x250) photos: ours vs the `mtcnn` package, same run, same images.

    .venv/bin/python bench/bench_detect.py [--images 64] [--repeats 5] [--reference-python /tmp/refenv/bin/python]

Images are made in memory from ../shared/data/faces (bench/lfw_like.py). Each figure is the median
images/s over the repeats; "plain graphs" is our same code on the networks laid out op for op
(maskgen.mtcnn_graphs, layout="plain"), timed in turn with the default blocked layout in the same
runs; the reference runs in its own interpreter (it needs TensorFlow) on the same images right after
ours. Prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from lfw_like import lfw_like_images, shared_data  # noqa: E402

BATCH_SIZES = (1, 8, 32)


def time_ours(images, repeats):
    """images/s per batch size of our MTCNN with its blocked-layout graphs and, in the same runs
    (alternating), with the plain graphs (maskgen.mtcnn_graphs LAYOUTS): what the layout buys."""
    from maskgen.detect import MTCNN

    detectors = {layout: MTCNN(layout=layout) for layout in ("blocked", "plain")}
    for detector in detectors.values():
        detector.detect_batch(images[:2])
    rates = {layout: {} for layout in detectors}
    for bs in BATCH_SIZES:
        runs = {layout: [] for layout in detectors}
        for _ in range(repeats):
            for layout, detector in detectors.items():
                started = time.perf_counter()
                for i in range(0, len(images), bs):
                    detector.detect_batch(images[i:i + bs])
                runs[layout].append(len(images) / (time.perf_counter() - started))
        for layout in detectors:
            rates[layout][bs] = statistics.median(runs[layout])
    return rates, detectors["blocked"]


def time_reference(python, images, repeats):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"
        np.save(path, np.stack(images))
        proc = subprocess.run(
            [python, str(HERE / "reference_mtcnn.py"), str(path), ",".join(map(str, BATCH_SIZES)), str(repeats)],
            capture_output=True, text=True, check=True,
        )
    return {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def check_reference(parser, python: str) -> None:
    """Refuse, with its own error, a reference interpreter that cannot import the `mtcnn` package."""
    try:
        proc = subprocess.run([python, "-c", "import mtcnn, tensorflow"], capture_output=True, text=True, timeout=300)
    except OSError as exc:
        parser.error(f"--reference-python {python}: {exc.strerror or exc} (tools/mtcnn_reference.py sets one up)")
    if proc.returncode != 0:
        said = (proc.stderr.strip().splitlines() or ["(nothing)"])[-1]
        parser.error(f"--reference-python {python} cannot import mtcnn and tensorflow: {said} "
                     "(tools/mtcnn_reference.py sets one up)")


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference-python", help="interpreter with tensorflow + mtcnn for the side-by-side column")
    parser.add_argument("--data", type=Path, help="the real face data (default: MFR_SHARED_DATA, else ../shared/data)")
    args = parser.parse_args()
    args.data = shared_data(args.data)

    if args.reference_python:  # checked first: a broken one failed after our timings, hiding its reason
        check_reference(parser, args.reference_python)
    images = lfw_like_images(args.data, args.images, seed=0)
    ours, detector = time_ours(images, args.repeats)
    reference = time_reference(args.reference_python, images, args.repeats) if args.reference_python else {}

    import onnxruntime

    print(f"{len(images)} images 250x250, median of {args.repeats} runs; {os.cpu_count()} CPUs ({cpu_name()}); "
          f"onnxruntime {onnxruntime.__version__} {detector.providers[0]}")
    print()
    print("| batch | ours (images/s) | ours, plain graphs (images/s) | mtcnn package (images/s) | speed-up |")
    print("|---:|---:|---:|---:|---:|")
    for bs in BATCH_SIZES:
        ref = reference.get(bs)
        ref_cell = f"{ref:.1f}" if ref else "not run"
        ratio = f"{ours['blocked'][bs] / ref:.1f}x" if ref else "-"
        print(f"| {bs} | {ours['blocked'][bs]:.1f} | {ours['plain'][bs]:.1f} | {ref_cell} | {ratio} |")


if __name__ == "__main__":
    main()
