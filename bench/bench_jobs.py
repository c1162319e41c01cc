"""The jobs end to end: augment and embed on Ray (in-process and on a local cluster) beside the same
stages in one process without Ray, 1 vs 2 workers, and peak memory at 1,000 vs 10,000 images.

    .venv/bin/python bench/bench_jobs.py [--images 2000] [--memory 1000,10000] [--work /tmp/mfr-bench-jobs]

Images: LFW-size (250x250) photos made from ../shared/data/faces by seeded crops, flips and scale
changes (bench/lfw_like.py), written as JPEG under --work (outside the repository) and deleted after.
Every figure comes from a fresh Python process, so no run inherits another's warm caches or Ray
state. Throughput is end to end: from the job's call to its last shard written, models loaded and
actors started included (`ray.init` / `ray start` excluded: a cluster is started once, not per job).
Peak memory is the largest sum of resident memory over the job's process and its children (an
in-process Ray's processes are among them), plus the benchmark's own local cluster for `cluster`;
other processes on the machine are not counted (sampled every 0.25 s).

Configurations:
  single   the job's own worker class called in a loop in one process, no Ray (all cores to ONNX
           Runtime's threads), shards written as the job writes them
  ray      run_augment / run_embed on `ray.init()` in-process, the default autoscaling pool
  ray-1    the same with workers=1
  cluster  the same jobs on a local cluster (`ray start --head`, ports and temp folder of its own:
           jobs.local_cluster), the driver connected to it; stopped by its own processes, never
           `ray stop`, which would end every Ray process on the machine
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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

def make_dataset(data_root: Path, out: Path, count: int, seed: int = 0) -> Path:
    """`count` LFW-size JPEGs under out/<person>/<n>.jpg, made one at a time."""
    import cv2

    from lfw_like import iter_lfw_like_images, largest_reference_faces

    if out.exists() and sum(1 for _ in out.rglob("*.jpg")) == count:
        return out
    shutil.rmtree(out, ignore_errors=True)
    names = sorted(largest_reference_faces("faces"))
    images = iter_lfw_like_images(data_root, count, seed=seed)
    for i, image in enumerate(images):
        path = out / names[i % len(names)].split("/")[1] / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return out


# ---------------------------------------------------------------- one run (in a child process)

def single_rows(images: str, keys: list[str]):
    """The job's input rows for `keys`, as its read tasks make them."""
    import pyarrow as pa

    from jobs.inputs import InputItem, folder_identity, input_schema
    from jobs.source import group_id, group_of

    return pa.Table.from_pylist([InputItem(k, folder_identity(k)).to_row(group_id(group_of(k))) for k in keys],
                                schema=input_schema())


def run_single(job: str, images: str, output: str, batch_size: int):
    """The job's own worker class called in a loop in one process, shards written as the job's write
    tasks write them (a shard per 2,000 rows)."""
    import pyarrow as pa

    from jobs.augment import AugmentWorker
    from jobs.embed import EmbedWorker
    from jobs.sink import ROWS_PER_SHARD, JobSummary, write_shards
    from jobs.storage import open_store
    from maskgen.augment import AugmentOptions
    from maskgen.finder import FinderOptions

    started = time.perf_counter()
    keys = open_store(images).list()
    if job == "augment":
        worker, directory, faces = AugmentWorker(images, output, AugmentOptions(style="random"), 40_000_000), \
            "manifest", "masked"
    else:
        # run_embed's defaults for unmasked photos, by name: a positional call broke silently once
        worker = EmbedWorker(images, "sface", accept_licence=False, masked=False, from_augment=False, face="center",
                             finder_options=FinderOptions.for_inputs("photos"), alignment="five-point",
                             max_pixels=40_000_000)
        directory, faces = "shards", "status"
    summary = JobSummary(inputs=len(keys))
    pending = []

    def flush():
        if pending:
            counts = write_shards(pa.concat_tables(pending), output_uri=output, directory=directory,
                                  faces_column=faces)
            summary.add({k: v[0] for k, v in counts.items()})
            pending.clear()

    for i in range(0, len(keys), batch_size):
        pending.append(worker(single_rows(images, keys[i:i + batch_size])))
        if sum(t.num_rows for t in pending) >= ROWS_PER_SHARD:
            flush()
    flush()
    summary.seconds = time.perf_counter() - started
    return summary


def child(args) -> None:
    """Run one configuration and print its JSON result line."""
    import ray

    from jobs.augment import run_augment
    from jobs.embed import run_embed
    from maskgen.augment import AugmentOptions

    if args.config == "single":
        summary = run_single(args.job, args.images, args.output, args.batch)
    else:
        if args.config == "cluster":
            ray.init(address="auto", log_to_driver=False)
        else:
            from jobs.pool import own_ray_options

            ray.init(num_cpus=os.cpu_count(), log_to_driver=False, **own_ray_options())
        workers = 1 if args.config == "ray-1" else None
        if args.job == "augment":
            summary = run_augment(args.images, args.output, AugmentOptions(style="random"), workers=workers,
                                  batch_size=args.batch)
        else:
            summary = run_embed(args.images, args.output, "sface", masked=False, workers=workers,
                                batch_size=args.batch)
        ray.shutdown()
    print("RESULT " + json.dumps({"processed": summary.processed, "faces": summary.faces,
                                  "statuses": summary.statuses, "seconds": summary.seconds}))


# ---------------------------------------------------------------- the parent: runs, memory, table

class PeakMemory:
    """Largest summed RSS of a process tree plus the `cluster`'s processes (a RayNodes), sampled on
    a thread."""

    def __init__(self, pid: int, cluster=None, interval: float = 0.25):
        self.pid, self.cluster, self.interval, self.peak, self._stop = pid, cluster, interval, 0, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        import psutil

        while not self._stop.is_set():
            procs = {}
            try:
                root = psutil.Process(self.pid)
                procs = {p.pid: p for p in [root, *root.children(recursive=True)]}
            except psutil.NoSuchProcess:
                pass
            if self.cluster is not None:
                procs.update({p.pid: p for p in self.cluster.processes()})
            total = 0
            for proc in procs.values():
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self.thread.join()
        return self.peak


def measure(job: str, config: str, images: Path, work: Path, batch: int, cluster=None) -> dict:
    output = work / "out" / f"{job}-{config}-{images.name}"
    shutil.rmtree(output, ignore_errors=True)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    if cluster is not None:
        env["RAY_ADDRESS"] = cluster.address
    cmd = [sys.executable, __file__, "--child", "--job", job, "--config", config, "--images-dir", str(images),
           "--output", str(output), "--batch", str(batch)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    memory = PeakMemory(proc.pid, cluster)
    out, err = proc.communicate()
    peak = memory.stop()
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{job} {config} failed ({proc.returncode}):\n{err[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    if "error" in result["statuses"]:  # a run whose images all failed would time the failure
        raise RuntimeError(f"{job} {config}: {result['statuses']['error']} image(s) failed: {result['statuses']}")
    result.update(job=job, config=config, images=images.name, peak_mib=peak / 2**20,
                  rate=result["processed"] / result["seconds"])
    shutil.rmtree(output, ignore_errors=True)
    print(f"  {job:<8} {config:<8} {images.name:<10} {result['rate']:6.1f} img/s  {result['seconds']:7.1f} s  "
          f"peak {result['peak_mib']:7.0f} MiB  {result['statuses']}", flush=True)
    return result


def local_cluster():
    """A one-node cluster of this machine's CPUs under a temp folder of its own (`ray start --head`)."""
    import secrets

    from jobs.local_cluster import RayNodes

    nodes = RayNodes(Path("/tmp") / f"mfr-bench-ray-{secrets.token_hex(3)}")  # short: Ray's socket paths
    nodes.start_head(num_cpus=os.cpu_count(), dashboard=False)  # as before: the job prints its own progress
    return nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="images for the throughput runs")
    parser.add_argument("--memory", default="1000,10000", help="image counts for the peak-memory runs")
    parser.add_argument("--jobs", default="augment,embed")
    parser.add_argument("--configs", default="single,ray,ray-1,cluster")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--data", type=Path, help="the real face data (default: MFR_SHARED_DATA, else ../shared/data)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mfr-bench-jobs"))
    parser.add_argument("--keep", action="store_true", help="keep the generated images under --work")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--images-dir", dest="images_dir", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data = shared_data(args.data)
    if args.child:
        args.images = args.images_dir
        child(args)
        return

    jobs = args.jobs.split(",")
    configs = args.configs.split(",")
    memory_counts = [int(n) for n in args.memory.split(",") if n]
    print(f"{os.cpu_count()} CPUs; {args.images} images for throughput; memory at {memory_counts}", flush=True)
    results = []
    try:
        images = make_dataset(args.data, args.work / f"lfw-{args.images}", args.images)
        for job in jobs:
            for config in configs:
                cluster = local_cluster() if config == "cluster" else None
                try:
                    results.append(measure(job, config, images, args.work, args.batch, cluster))
                finally:
                    if cluster is not None:
                        cluster.stop()
                        shutil.rmtree(cluster.temp_dir, ignore_errors=True)
        for count in memory_counts:
            images = make_dataset(args.data, args.work / f"lfw-{count}", count)
            results.append(measure("augment", "ray", images, args.work, args.batch))
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    report(results, args.images, memory_counts)


def report(results: list[dict], count: int, memory_counts: list[int]) -> None:
    def find(job, config, images=f"lfw-{count}"):
        return next((r for r in results if (r["job"], r["config"], r["images"]) == (job, config, images)), None)

    print("\n| job | configuration | images/s | vs single process | peak memory (MiB) |")
    print("|---|---|---:|---:|---:|")
    for r in results[:len(results) - len(memory_counts)]:
        single = find(r["job"], "single")
        ratio = f"{r['rate'] / single['rate']:.2f}x" if single else "-"
        print(f"| {r['job']} | {r['config']} | {r['rate']:.1f} | {ratio} | {r['peak_mib']:.0f} |")
    for job in sorted({r["job"] for r in results}):
        single, ray2, ray1, cluster = (find(job, c) for c in ("single", "ray", "ray-1", "cluster"))
        if single and ray2:
            print(f"\n{job}: Ray in-process runs at {ray2['rate'] / single['rate']:.2f}x the single-process rate "
                  "(goal: Ray costs at most 30 %, i.e. at least 0.70x)")
        if single and cluster:
            print(f"{job}: the local cluster runs at {cluster['rate'] / single['rate']:.2f}x the single-process rate")
        if ray1 and ray2:
            print(f"{job}: 1 -> 2 workers: {ray2['rate'] / ray1['rate']:.2f}x (goal at least 1.7x)")
    mem = [find("augment", "ray", f"lfw-{n}") for n in memory_counts]
    if len(mem) == 2 and all(mem):
        growth = 100 * (mem[1]["peak_mib"] / mem[0]["peak_mib"] - 1)
        print(f"\naugment peak memory: {mem[0]['peak_mib']:.0f} MiB at {memory_counts[0]} images, "
              f"{mem[1]['peak_mib']:.0f} MiB at {memory_counts[1]}: {growth:+.1f} % (goal at most +15 %)")


if __name__ == "__main__":
    main()
