"""The streaming pipeline at scale: framework overhead, driver memory, `mfr run` against its stages,
and rerun planning over a million finished inputs.

    .venv/bin/python bench/bench_pipeline.py [--only overhead,run,rerun,manifest] [--repeats 3] [--work /tmp/mfr-bench-pipe]

overhead  N tiny images (16x16 grey JPEGs: smaller than the smallest face masked, so no detector
          runs and what is left is the framework: listing, reading, decoding, writing the image and the
          manifest) through `run_augment` with the defaults: images/s, and the driver's peak RSS at
          2,000, 20,000 and 200,000 inputs (`--sizes`). The driver holds no per-image data, so its
          memory must not grow with N. Each size runs with the output on the disk and on a tmpfs
          (`--memory-dir`, default /dev/shm), alternating: creating files is the part of the work that
          depends most on the machine's file system.
run       2,000 LFW-size photos (bench/lfw_like.py, from ../shared/data/faces): `run_pipeline`
          (`mfr run` on Ray: one Dataset, then the reducer; and on the local process pool) against its
          stages alone, each as a job of its own on Ray: augment (the CPU pool's work) and embed from
          the augment output (the recognition work, plus decoding the masked images it needs alone).
rerun     a finished output of 1,000,000 inputs (1,000 folders x 1,000 empty files, with manifest
          shards of synthetic rows): the time and driver peak RSS of a rerun that finds it all done.
manifest  an input manifest (CSV) of the same 1,000,000 images: listing it as a job's read task does
          (`jobs.inputs.ManifestLister`, in a process of its own, with nothing done): seconds until its
          first rows, seconds to the end, and the process's peak RSS; then a rerun of `mfr mask` over
          that manifest and the finished output above (time and driver peak RSS).

Every figure comes from a fresh process (`ray.init()` in-process with this machine's CPUs; its start
is not counted; the local-pool run starts no Ray). Medians over `--repeats` runs. Generated data
lives under --work and is deleted after unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from lfw_like import shared_data  # noqa: E402


# ---------------------------------------------------------------- data

def tiny_images(out: Path, count: int, folders: int = 100) -> Path:
    import cv2
    import numpy as np

    if out.exists() and sum(1 for _ in out.rglob("*.jpg")) == count:
        return out
    shutil.rmtree(out, ignore_errors=True)
    data = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes()
    for i in range(count):
        path = out / f"p{i % folders:04d}" / f"{i:07d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return out


def finished_output(images: Path, output: Path, folders: int, per_folder: int) -> None:
    """`folders` x `per_folder` empty input files, and an output whose manifest already has a row
    for every one of them (the rows the augment job writes for an image, mostly empty columns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.augment import manifest_schema
    from jobs.source import group_id

    from jobs.settings import SETTINGS_KEY

    record = output / SETTINGS_KEY
    if (output / "manifest").exists() and record.exists() and \
            sum(1 for _ in images.rglob("*.jpg")) == folders * per_folder:
        return
    shutil.rmtree(images, ignore_errors=True)
    shutil.rmtree(output, ignore_errors=True)
    # the record a job leaves, not binding (as one interrupted before its first shard leaves it): the
    # rerun records its own settings; without one the output is refused as files mfr did not write
    output.mkdir(parents=True)
    record.write_text(json.dumps({"command": "mfr mask", "settings": {}, "binding": False}))
    schema = manifest_schema()
    for f in range(folders):
        folder = images / f"id{f:05d}"
        folder.mkdir(parents=True)
        keys = []
        for n in range(per_folder):
            name = f"{n:06d}.jpg"
            os.close(os.open(folder / name, os.O_CREAT | os.O_WRONLY))
            keys.append(f"{folder.name}/{name}")
        rows = {"source_key": keys, "identity": [folder.name] * per_folder, "status": ["no_face"] * per_folder,
                "message": ["no face found"] * per_folder, "face_index": [-1] * per_folder, "input_row": keys,
                "seed": [0] * per_folder}
        table = pa.table({field.name: rows.get(field.name, [None] * per_folder) for field in schema}, schema=schema)
        target = output / "manifest" / group_id(folder.name) / "part-synthetic.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target)


def input_manifest(path: Path, folders: int, per_folder: int) -> Path:
    """A CSV input manifest naming the images of `finished_output`, an identity column beside."""
    if not path.exists():
        with path.open("w") as f:
            f.write("path,identity\n")
            for folder in range(folders):
                f.writelines(f"id{folder:05d}/{n:06d}.jpg,id{folder:05d}\n" for n in range(per_folder))
    return path


# ---------------------------------------------------------------- one measurement, in a child process

class OwnPeak:
    """This process's peak RSS, sampled on a thread (ru_maxrss would include the import peak)."""

    def __init__(self):
        import psutil

        self.proc, self.peak, self.stop = psutil.Process(), 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self.stop.wait(0.1)

    def done(self) -> int:
        self.stop.set()
        self.thread.join()
        return max(self.peak, self.proc.memory_info().rss)


def list_manifest(args) -> None:
    """What a read task does with an input manifest: list it, nothing being done yet."""
    from jobs.inputs import ManifestLister

    baseline = OwnPeak()
    started = time.perf_counter()
    first, rows = None, 0
    for table in ManifestLister(args.images, args.output, "manifest").rows(Path(args.images).name):
        first = time.perf_counter() - started if first is None else first
        rows += table.num_rows
    seconds = time.perf_counter() - started
    print("RESULT " + json.dumps({"seconds": seconds, "first_rows_s": first, "processed": rows, "skipped": 0,
                                  "inputs": rows, "statuses": {}, "driver_peak_mib": baseline.done() / 2**20}))


def child(args) -> None:
    import ray

    from jobs.augment import run_augment
    from jobs.embed import run_embed
    from jobs.run import run_pipeline
    from maskgen.augment import AugmentOptions

    if args.job != "run-local":
        from jobs.pool import own_ray_options

        # the Ray a job starts for itself (jobs.pool.ensure_ray), started here so that its start is not counted
        ray.init(num_cpus=os.cpu_count(), log_to_driver=False, logging_level="ERROR", **own_ray_options())
        # imports Ray Data; counting a range runs nothing, so Ray Data's stats actor and autoscaling
        # coordinator start with the job (about 1.5 s of CPU each here), as for a user's first job
        ray.data.range(1).count()
    baseline = OwnPeak()
    started = time.perf_counter()
    if args.job == "augment":
        summary = run_augment(args.images, args.output, AugmentOptions(style=args.style, largest_only=args.largest))
    elif args.job == "embed":
        summary = run_embed(args.images, args.output, "sface", masked=True, from_augment=True)
    else:  # run: on the Ray started above; run-local: the local process pool, no Ray
        summary = run_pipeline(args.images, args.output, style=args.style,
                               executor="local" if args.job == "run-local" else "ray")["run"]
    seconds = time.perf_counter() - started
    peak = baseline.done()
    print("RESULT " + json.dumps({"seconds": seconds, "processed": summary.processed, "skipped": summary.skipped,
                                  "inputs": summary.inputs, "statuses": summary.statuses,
                                  "driver_peak_mib": peak / 2**20}), flush=True)


def measure(job: str, images: Path, output: Path, fresh: bool = True, style: str = "random",
            largest: bool = False) -> dict:
    if fresh:
        shutil.rmtree(output, ignore_errors=True)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, __file__, "--child", "--job", job, "--images-dir", str(images), "--output", str(output),
           "--style", style] + (["--largest"] if largest else [])
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{job} on {images} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["rate"] = result["processed"] / result["seconds"] if result["seconds"] else 0.0
    print(f"  {job:<8} {images.name:<14} {result['seconds']:8.1f} s  {result['rate']:8.1f} img/s  "
          f"driver peak {result['driver_peak_mib']:6.0f} MiB  {result['statuses']}", flush=True)
    return result


def median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


# ---------------------------------------------------------------- the benchmarks

def memory_dir() -> Path | None:
    """/dev/shm where it is a tmpfs (memory-backed, no disk behind it), else None."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    return Path("/dev/shm") if any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in mounts) else None


def bench_overhead(work: Path, sizes: list[int], repeats: int, memory: Path | None) -> list[str]:
    """Each size with the output on the disk (under --work) and, where there is one, on a tmpfs: the
    same job, the runs alternating which goes first, so that the file system's share of the time is
    seen beside the framework's. The inputs stay on the disk."""
    places = [("disk", work / "out-tiny")] + ([("tmpfs", memory / "mfr-bench-out-tiny")] if memory else [])
    lines = ["| inputs | output on | images/s (median) | images/s, each run | driver peak RSS, MiB (median) |",
             "|---:|---|---:|---|---:|"]
    peaks = {}
    for n in sizes:
        images = tiny_images(work / f"tiny-{n}", n)
        runs = {name: [] for name, _ in places}
        for repeat in range(repeats if n <= 20_000 else 1):
            for name, output in places if repeat % 2 == 0 else places[::-1]:
                runs[name].append(measure("augment", images, output))
                shutil.rmtree(output, ignore_errors=True)
        for name, _ in places:
            lines.append(f"| {n:,} | {name} | {median(runs[name], 'rate'):.0f} | "
                         f"{', '.join(format(r['rate'], '.0f') for r in runs[name])} | "
                         f"{median(runs[name], 'driver_peak_mib'):.0f} |")
        peaks[n] = median([r for name, _ in places for r in runs[name]], "driver_peak_mib")
    base = sizes[0]
    for n in sizes[1:]:
        lines.append(f"\ndriver peak RSS at {n:,} inputs vs {base:,}: {100 * (peaks[n] / peaks[base] - 1):+.1f} % "
                     "(goal: within 10 %)")
    return lines


def bench_run(work: Path, data: Path, count: int, repeats: int) -> list[str]:
    from bench_jobs import make_dataset

    images = make_dataset(data, work / f"lfw-{count}", count)
    augment, embed, run, local = [], [], [], []
    for _ in range(repeats):
        augment.append(measure("augment", images, work / "out-augment", style="seed", largest=True))
        embed.append(measure("embed", work / "out-augment", work / "out-embed"))
        run.append(measure("run", images, work / "out-run", style="seed"))
        local.append(measure("run-local", images, work / "out-run", style="seed"))
    a, e, r, lo = (median(x, "seconds") for x in (augment, embed, run, local))
    return ["| job | seconds (median) | images/s |", "|---|---:|---:|",
            f"| augment alone (CPU pool's work) | {a:.1f} | {count / a:.1f} |",
            f"| embed alone, from the augment output (recognition) | {e:.1f} | {count / e:.1f} |",
            f"| `mfr run` on Ray: one Dataset, then the reducer | {r:.1f} | {count / r:.1f} |",
            f"| `mfr run` on the local process pool (no Ray), then scoring in-process | {lo:.1f} | {count / lo:.1f} |",
            f"\n`mfr run` on Ray / slowest stage alone: {r / max(a, e):.2f}x (goal at most 1.2x; the sum of the "
            f"stages would be {(a + e) / max(a, e):.2f}x); on the local pool {lo / max(a, e):.2f}x"]


def bench_rerun(work: Path, folders: int, per_folder: int, repeats: int) -> list[str]:
    images, output = work / "million", work / "million-out"
    started = time.perf_counter()
    finished_output(images, output, folders, per_folder)
    print(f"  made {folders * per_folder:,} inputs and their manifest in {time.perf_counter() - started:.0f} s",
          flush=True)
    runs = [measure("augment", images, output, fresh=False) for _ in range(repeats)]
    assert all(r["skipped"] == folders * per_folder and r["processed"] == 0 for r in runs), runs
    return ["| finished inputs | rerun wall time, s (median) | driver peak RSS, MiB (median) |", "|---:|---:|---:|",
            f"| {folders * per_folder:,} | {median(runs, 'seconds'):.1f} | {median(runs, 'driver_peak_mib'):.0f} |",
            "\n(goal: at most 60 s and 1 GiB of driver memory)"]


def bench_manifest(work: Path, folders: int, per_folder: int, repeats: int) -> list[str]:
    images, output = work / "million", work / "million-out"
    finished_output(images, output, folders, per_folder)
    manifest = input_manifest(images / "list.csv", folders, per_folder)
    rows = folders * per_folder
    listed = [measure("list-manifest", manifest, work / "nothing-done") for _ in range(repeats)]
    assert all(r["processed"] == rows for r in listed), listed
    reruns = [measure("augment", manifest, output, fresh=False) for _ in range(repeats)]
    assert all(r["skipped"] == rows and r["processed"] == 0 for r in reruns), reruns
    return ["| manifest rows | listing: first rows after, s | listing: all rows, s | listing process peak RSS, MiB "
            "| rerun over the finished output, s | rerun driver peak RSS, MiB |", "|---:|---:|---:|---:|---:|---:|",
            f"| {rows:,} | {median(listed, 'first_rows_s'):.1f} | {median(listed, 'seconds'):.1f} "
            f"| {median(listed, 'driver_peak_mib'):.0f} | {median(reruns, 'seconds'):.1f} "
            f"| {median(reruns, 'driver_peak_mib'):.0f} |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="overhead,run,rerun,manifest")
    parser.add_argument("--sizes", default="2000,20000,200000", help="tiny-image counts for the overhead runs")
    parser.add_argument("--photos", type=int, default=2000, help="LFW-size photos for the run comparison")
    parser.add_argument("--million", default="1000x1000", help="folders x files of the rerun benchmark")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, help="the real face data (default: MFR_SHARED_DATA, else ../shared/data)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mfr-bench-pipe"))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--memory-dir", type=Path, default=memory_dir(),
                        help="a tmpfs for the overhead runs' second output (default /dev/shm where it is one; "
                             "'' for none)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--images-dir", dest="images", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--style", default="random", help=argparse.SUPPRESS)
    parser.add_argument("--largest", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data = shared_data(args.data)
    if args.child:
        list_manifest(args) if args.job == "list-manifest" else child(args)
        return
    print(f"{os.cpu_count()} CPUs; medians of {args.repeats} run(s)", flush=True)
    tables = []
    try:
        only = args.only.split(",")
        if "overhead" in only:
            tables += ["\nframework overhead (tiny images, no face):"] + \
                bench_overhead(args.work, [int(n) for n in args.sizes.split(",")], args.repeats,
                               args.memory_dir if str(args.memory_dir or "") not in ("", ".") else None)
        if "run" in only:
            tables += [f"\n`mfr run` on {args.photos} LFW-size photos against its stages:"] + \
                bench_run(args.work, args.data, args.photos, args.repeats)
        if "rerun" in only:
            folders, per_folder = (int(v) for v in args.million.split("x"))
            tables += ["\nrerun planning over a finished output:"] + bench_rerun(args.work, folders, per_folder, 1)
        if "manifest" in only:
            folders, per_folder = (int(v) for v in args.million.split("x"))
            tables += ["\nan input manifest of the same images:"] + \
                bench_manifest(args.work, folders, per_folder, args.repeats)
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    print("\n".join(tables))


if __name__ == "__main__":
    main()
