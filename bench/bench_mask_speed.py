"""Bulk masking speed beside MaskTheFace, on the same LFW-size photos, each tool a whole process.

    tools/setup_maskthe_face.sh                      # once: MaskTheFace in a virtual environment of its own
    .venv/bin/python bench/bench_mask_speed.py [--small 500] [--bulk 2000] [--repeats 3] [--stages 128]

Photos: LFW-size (250x250) crops made from ../shared/data/faces (bench/lfw_like.py), written as JPEG
under --work (outside the repository). Surgical masks on both sides. Each configuration runs once as a
warm-up (model caches, page cache), then --repeats times in turn, and the table gives medians:

  small   `mfr mask DIR OUT --style surgical --quiet` on --small photos, wall time of the whole command
          (interpreter start, models, job, summary), with the default executor (no cluster running:
          a local process pool) and with `--executor ray` (a Ray of its own, started by the job);
          MaskTheFace (`mask_the_face.py --path DIR --mask_type surgical`) on the same photos, wall time
          of its process, and how many photos it wrote (it drops those where it finds no face)
  bulk    the same `mfr mask` command on --bulk photos: images per second of the whole command and of
          the job (the summary's own figure: listing to last shard written, models included)
  stages  the `Augmenter` and the job's own I/O in one process, one thread, no pool: milliseconds per
          photo of each stage (median over the repeats), where the time goes

The photos are the same for every tool and repeat; outputs are deleted after each run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from lfw_like import shared_data  # noqa: E402


def run_mfr(images: Path, output: Path, executor: str = "auto") -> dict:
    shutil.rmtree(output, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [str(ROOT / ".venv" / "bin" / "mfr"), "mask", str(images), str(output), "--style", "surgical", "--quiet",
           "--executor", executor]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"mfr mask failed ({done.returncode}):\n{done.stderr[-3000:]}")
    fields = dict(line.split(None, 1) if " " in line.strip() else (line.strip(), "")
                  for line in (raw.strip() for raw in done.stdout.splitlines()) if line)
    processed = int(fields.get("processed", "0").split()[-1])
    job_rate = float(fields.get("images/s", "0").split()[-1])
    masked = sum(1 for _ in (output / "images").rglob("*.jpg"))
    shutil.rmtree(output, ignore_errors=True)
    return {"wall": wall, "processed": processed, "job_rate": job_rate, "written": masked}


def run_maskthe_face(peer: Path, images: Path, work: Path) -> dict:
    """MaskTheFace writes `<path>_masked/` beside its input: a fresh copy of the photos each run."""
    copy = work / "mtf-input"
    out = work / "mtf-input_masked"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(images, copy)
    cmd = [str(peer / "mtf-venv" / "bin" / "python"), "mask_the_face.py", "--path", str(copy),
           "--mask_type", "surgical"]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=peer)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"MaskTheFace failed ({done.returncode}):\n{done.stderr[-3000:]}")
    written = sum(1 for p in out.rglob("*") if p.is_file()) if out.exists() else 0
    shutil.rmtree(copy, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return {"wall": wall, "written": written}


def stage_times(images: Path, count: int) -> dict:
    """Milliseconds per photo of each stage of the job's worker, one process, one thread."""
    code = f"""
import json, os, shutil, sys, tempfile, time
os.environ["MFR_NUM_THREADS"] = "1"
import cv2; cv2.setNumThreads(1)
import pyarrow as pa
sys.path.insert(0, {str(ROOT)!r})
import jobs.augment as JA, maskgen.augment as MA, maskgen.decode as D
from jobs.augment import AugmentWorker
from jobs.inputs import Tally, input_listing
from jobs.storage import open_store
from maskgen.augment import AugmentOptions
tmp = tempfile.mkdtemp(prefix="mfr-stages-")
out = open_store(tmp)
images, groups, lister, notes = input_listing({str(images)!r}, out, "manifest", progress=Tally())
rows = pa.concat_tables([t for g in groups for t in lister.rows(g)]).slice(0, {count} + 32)
worker = AugmentWorker(images.uri, out.uri, AugmentOptions(style="surgical"), 40_000_000, None, threads=1)
worker(rows.slice(0, 32))  # warm-up
spent = {{}}
def timed(owner, name, label):
    inner = getattr(owner, name)
    def call(*a, **k):
        t = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - t
    setattr(owner, name, call)
aug = worker.augmenter
timed(D, "decode_with_source", "decode (Pillow)")  # what the worker calls (decode_image was never timed)
timed(aug.finder, "find_batch", "detect (MTCNN)")
timed(MA, "classify_face", "face type")
timed(aug, "style", "mask drawing")
timed(MA, "align_face", "aligned crop")
timed(D, "encode_image", "encode (JPEG)")
timed(worker.output, "write", "write")
faces = [0]
predict = aug.predictor.predict
def counted(image, boxes, *a, **k):
    faces[0] += len(boxes)
    return predict(image, boxes, *a, **k)
aug.predictor.predict = counted
timed(aug.predictor, "predict", "68 landmarks (dlib)")
started = time.perf_counter()
for s in range(32, 32 + {count}, 32):
    worker(rows.slice(s, 32))
total = time.perf_counter() - started
shutil.rmtree(tmp, ignore_errors=True)
n = {count}
stages = ["decode (Pillow)", "detect (MTCNN)", "68 landmarks (dlib)", "face type", "mask drawing", "aligned crop",
          "encode (JPEG)", "write"]
never = [k for k in stages if k not in spent]
if never:  # a stage the worker no longer calls this way would drop out of the table without a word
    sys.exit(f"never called, so not timed: {{never}}")
result = {{k: spent[k] / n * 1000 for k in stages}}
result["total"] = total / n * 1000
result["faces per photo"] = faces[0] / n
print("RESULT " + json.dumps(result))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"stage timing failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    from bench_jobs import make_dataset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--bulk", type=int, default=2000, help="photos of the throughput run (0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stages", type=int, default=128, help="photos of the per-stage timing (0: skip)")
    parser.add_argument("--data", type=Path, help="the real face data (default: MFR_SHARED_DATA, else ../shared/data)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mfr-bench-mask-speed"))
    parser.add_argument("--maskthe-face", type=Path, default=ROOT / ".peers" / "MaskTheFace",
                        help="MaskTheFace set up by tools/setup_maskthe_face.sh (missing: its column is skipped)")
    parser.add_argument("--no-ray", action="store_true", help="skip the `--executor ray` row")
    args = parser.parse_args()
    args.data = shared_data(args.data)

    if args.stages and args.small < args.stages + 32:  # 32 warm the worker up; the rest are timed
        parser.error(f"--stages {args.stages} times photos 33 to {args.stages + 32} of the --small set: give --small "
                     f"at least {args.stages + 32}")
    args.work.mkdir(parents=True, exist_ok=True)
    small = make_dataset(args.data, args.work / f"lfw-{args.small}", args.small)
    peer = args.maskthe_face if (args.maskthe_face / "mtf-venv" / "bin" / "python").exists() else None
    if peer is None:
        print(f"note: no MaskTheFace at {args.maskthe_face} (run tools/setup_maskthe_face.sh); its rows are skipped")
    out = args.work / "out"

    configs = [("mfr mask (default: local pool)", lambda: run_mfr(small, out, "auto"))]
    if not args.no_ray:
        configs.append(("mfr mask --executor ray", lambda: run_mfr(small, out, "ray")))
    if peer is not None:
        configs.append(("MaskTheFace", lambda: run_maskthe_face(peer, small, args.work)))
    results: dict[str, list] = {name: [] for name, _ in configs}
    for name, fn in configs:  # warm-up
        print(f"warm-up: {name}: {fn()}", flush=True)
    for repeat in range(args.repeats):
        for name, fn in configs:
            r = fn()
            results[name].append(r)
            print(f"run {repeat + 1}: {name}: {r['wall']:.2f} s wall, {r['written']} written", flush=True)

    def med(name, key):
        return statistics.median(r[key] for r in results[name])

    lines = [f"### {args.small} LFW-size photos, surgical masks, whole command (median of {args.repeats})", "",
             "| tool | wall time (s) | photos/s | written | vs MaskTheFace |", "|---|---:|---:|---:|---:|"]
    reference = med("MaskTheFace", "wall") if peer is not None else None
    for name, _ in configs:
        wall = med(name, "wall")
        ratio = f"{wall / reference:.2f}x" if reference else "-"
        lines.append(f"| {name} | {wall:.2f} | {args.small / wall:.1f} | {int(med(name, 'written'))}/{args.small} "
                     f"| {ratio} |")

    if args.bulk:
        bulk = make_dataset(args.data, args.work / f"lfw-{args.bulk}", args.bulk, seed=1)
        bulk_runs = []
        print(f"bulk warm-up: {run_mfr(bulk, out)}", flush=True)
        for repeat in range(args.repeats):
            r = run_mfr(bulk, out)
            bulk_runs.append(r)
            print(f"bulk run {repeat + 1}: {r['wall']:.2f} s wall, job {r['job_rate']:.1f} img/s", flush=True)
        lines += ["", f"### {args.bulk} photos, `mfr mask` default executor (median of {args.repeats})", "",
                  "| figure | value |", "|---|---:|",
                  f"| whole command, photos/s | {args.bulk / statistics.median(r['wall'] for r in bulk_runs):.1f} |",
                  f"| the job (summary), photos/s | {statistics.median(r['job_rate'] for r in bulk_runs):.1f} |"]

    if args.stages:
        runs = [stage_times(small, args.stages) for _ in range(args.repeats)]
        keys = [k for k in runs[0] if k not in ("total", "faces per photo")]
        lines += ["", f"### Where one photo's time goes (one process, one thread, {args.stages} photos, "
                      f"median of {args.repeats})", "", "| stage | ms per photo |", "|---|---:|"]
        for key in keys:
            lines.append(f"| {key} | {statistics.median(r[key] for r in runs):.2f} |")
        lines.append(f"| **total, worker call** | {statistics.median(r['total'] for r in runs):.2f} |")
        lines.append(f"\n{runs[0]['faces per photo']:.2f} faces per photo (landmarks found for each).")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
