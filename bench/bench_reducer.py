"""The reducer at scale: 10^6 masked probes x 10^5 gallery entries x 512-d, scored by Ray tasks.

    .venv/bin/python bench/bench_reducer.py [--probes 1000000] [--gallery 100000] [--dim 512]
        [--compare-probes 100000] [--part-rows 262144] [--work DIR]

Writes synthetic embedding shards (Parquet, the embed job's columns) once under `--work`: gallery
entries are random unit vectors, one per identity; 90 % of the probes are a gallery entry plus
noise (mated), 10 % are strangers. Then, each in a fresh process:

1. `jobs.reduce.score_distributed` over all the probes on a local Ray with every CPU: wall time,
   peak RSS of the driver, and the largest peak RSS of any Ray worker process (which includes the
   gallery part it maps from the object store).
2. The same and today's single-process `jobs.score` (load_split + score) side by side on
   `--compare-probes` probes (a subset of the shards), the largest size worth running beside it.

Reports a Markdown table. Peak RSS is each process's VmHWM (shared pages it touched counted in full).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARD_ROWS = 10_000


def write_shards(folder: Path, keys, identities, emb, masked: bool) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = folder / "shards" / "g=bench"
    out.mkdir(parents=True, exist_ok=True)
    for n, i in enumerate(range(0, len(keys), SHARD_ROWS)):
        rows = slice(i, i + SHARD_ROWS)
        count = len(keys[rows])
        flat = pa.array(np.ascontiguousarray(emb[rows]).reshape(-1), pa.float32())
        table = pa.table({
            "key": pa.array(keys[rows], pa.string()), "identity": pa.array(identities[rows], pa.string()),
            "masked": pa.array([masked] * count), "face_index": pa.array(np.zeros(count, np.int64)),
            "model_id": pa.array(["bench@1"] * count), "mode": pa.array(["plain"] * count),
            "similarity": pa.array(["cosine"] * count), "status": pa.array(["ok"] * count),
            "message": pa.array([""] * count),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, emb.shape[1])})
        pq.write_table(table, out / f"part-{n:05d}.parquet")


def make_data(work: Path, probes: int, gallery: int, dim: int) -> None:
    marker = work / f"data-{probes}-{gallery}-{dim}.done"
    if marker.exists():
        return
    for old in ("gallery", "probes"):  # another size's shards: a smaller run read the larger's leftovers
        shutil.rmtree(work / old, ignore_errors=True)
    for old in work.glob("data-*.done"):
        old.unlink()
    rng = np.random.default_rng(0)
    g = rng.standard_normal((gallery, dim), dtype=np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    g_ids = np.array([f"id{i:07d}" for i in range(gallery)])
    write_shards(work / "gallery", np.array([f"{i}/g.jpg" for i in g_ids]), g_ids, g, masked=False)
    n_mated = int(probes * 0.9)
    mates = rng.integers(0, gallery, n_mated)
    p_ids = np.concatenate([g_ids[mates], [f"stranger{i:07d}" for i in range(probes - n_mated)]])
    order = rng.permutation(probes)  # mated and unmated probes mixed through the shards
    p_ids = p_ids[order]
    keys = np.array([f"{p}/p{i:07d}.jpg" for i, p in enumerate(p_ids)])
    emb = np.empty((probes, dim), np.float32)
    for i in range(0, probes, 100_000):  # in chunks: the noise of 10^6 x 512 at once is 2 GB more
        sel = order[i:i + 100_000]
        base = np.where((sel < n_mated)[:, None], g[mates[np.minimum(sel, n_mated - 1)]], 0)
        emb[i:i + 100_000] = base + rng.standard_normal((len(sel), dim), dtype=np.float32) * 0.045
    write_shards(work / "probes", keys, p_ids, emb, masked=True)
    marker.touch()


def make_subset(work: Path, probes: int) -> None:
    """`work/probes-subset`: links to the first shards of `work/probes`, `probes` rows in all (a whole
    number of shards: `check_compare`)."""
    shards = work / "probes" / "shards" / "g=bench"
    subset = work / "probes-subset" / "shards" / "g=bench"
    subset.mkdir(parents=True, exist_ok=True)
    for old in subset.iterdir():
        old.unlink()
    for n in range(probes // SHARD_ROWS):
        (subset / f"part-{n:05d}.parquet").symlink_to(shards / f"part-{n:05d}.parquet")


def check_compare(parser, probes: int, compare: int, skip_full: bool) -> None:
    """Refuse, before any data is made, a comparison that is not a whole number of the data's shards,
    or all of them while the full run is timed too: rounded up, a smaller count took every shard, and
    the full run's rows were printed again as the comparison."""
    shards = -(-probes // SHARD_ROWS)
    if compare % SHARD_ROWS or compare > probes or not 0 < compare // SHARD_ROWS <= shards or (
            compare // SHARD_ROWS == shards and not skip_full):
        parser.error(f"--compare-probes is a whole number of {SHARD_ROWS:,}-row shards, at most --probes' "
                     f"{shards} shard(s), and fewer unless --skip-full; got {compare:,}")


def own_peak_kib() -> int:
    """This process's VmHWM. Not ru_maxrss: Linux carries that over fork and exec, so a child would
    report its parent's peak (the data generation's) as its own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def worker_peak_kib() -> int:
    """Largest VmHWM of this process's Ray worker processes (children of its in-process Ray's raylet;
    they outlive their tasks). Other Ray processes on the machine are not this run's."""
    import psutil

    best = 0
    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
            text = Path(f"/proc/{proc.pid}/status").read_text()
        except (psutil.Error, OSError):
            continue
        if "default_worker.py" in cmd or "ray::" in cmd:
            for line in text.splitlines():
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]))
    return best


def child(args) -> None:
    """One measurement in this process: print a JSON line."""
    probe_uri = str(args.work / ("probes-subset" if args.subset else "probes"))
    gallery_uri = str(args.work / "gallery")
    started = time.perf_counter()
    if args.child == "distributed":
        import ray

        from jobs.reduce import score_distributed

        from jobs.pool import own_ray_options

        ray.init(num_cpus=os.cpu_count(), log_to_driver=False, **own_ray_options())
        result, _ = score_distributed(probe_uri, gallery_uri, "bench", shards_per_task=args.shards_per_task,
                                      part_rows=args.part_rows)
        workers = worker_peak_kib()
    else:
        from jobs.score import load_split, score

        split = load_split(probe_uri, gallery_uri)
        result = score(split.probe_rows, split.probe_emb, split.gallery_rows, split.gallery_emb, "bench",
                       split.similarity)
        workers = 0
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "driver_kib": own_peak_kib(),
                      "worker_kib": workers, "rank1": result.identification["rank"]["1"],
                      "auc": result.verification["auc"], "probes": result.identification["probes"],
                      "gallery": result.identification["gallery"]}))


def run_child(args, kind: str, subset: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--work", str(args.work), "--part-rows", str(args.part_rows),
           "--shards-per-task", str(args.shards_per_task)] + (["--subset"] if subset else [])
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probes", type=int, default=1_000_000)
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--compare-probes", type=int, default=100_000)
    parser.add_argument("--part-rows", type=int, default=262_144)
    parser.add_argument("--shards-per-task", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mfr-bench-reducer"))
    parser.add_argument("--child", choices=("distributed", "single"))
    parser.add_argument("--subset", action="store_true")
    parser.add_argument("--skip-full", action="store_true", help="only the side-by-side comparison")
    args = parser.parse_args()
    if args.child:
        return child(args)
    check_compare(parser, args.probes, args.compare_probes, args.skip_full)

    t0 = time.perf_counter()
    make_data(args.work, args.probes, args.gallery, args.dim)
    make_subset(args.work, args.compare_probes)
    print(f"data ready in {time.perf_counter() - t0:.0f} s; {os.cpu_count()} CPUs; gallery {args.gallery:,} x "
          f"{args.dim}-d, parts of {args.part_rows:,}", flush=True)
    rows = []
    for kind in ("single", "distributed"):
        got = run_child(args, kind, subset=True)
        rows.append((kind, args.compare_probes, got))
        print(kind, args.compare_probes, got, flush=True)
    if not args.skip_full:
        got = run_child(args, "distributed", subset=False)
        rows.append(("distributed", args.probes, got))
        print("distributed", args.probes, got, flush=True)
    print("\n| reducer | probes x gallery | wall | pairs/s | driver peak RSS | largest worker peak RSS | rank-1 | AUC |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for kind, n, got in rows:
        pairs = got["probes"] * got["gallery"]
        worker = f"{got['worker_kib'] / 1024:,.0f} MiB" if got["worker_kib"] else "(one process)"
        label = {"single": "single process"}.get(kind, kind)  # as the README's table names it
        print(f"| {label} | {got['probes']:,} x {got['gallery']:,} | {got['seconds']:.1f} s | {pairs / got['seconds']:.3g}"
              f" | {got['driver_kib'] / 1024:,.0f} MiB | {worker} | {got['rank1']:.4f} | {got['auc']:.4f} |")


if __name__ == "__main__":
    main()
