"""Block scoring on a GPU beside the CPU: the reducer's ONNX graph on ONNX Runtime's CUDA provider.

    .venv/bin/python bench/bench_gpu_scoring.py [--probes 1000000] [--gallery 100000] [--dim 512]
        [--compare-probes 100000] [--work DIR] [--json FILE]

Needs a GPU and the [gpu] extra (onnxruntime-gpu); without CUDA it says why and exits 3.

1. **The block scorer alone** (recog.block_scoring): one gallery part of `--gallery` random unit
   vectors; blocks of b random probes with 2 mates and 64 impostor pairs each. Every fact of the
   CUDA graph is compared with NumPy's on the same block, then the median time per block of each
   (NumPy with every CPU's BLAS threads) for several b.
2. **The distributed reducer** (jobs.reduce.score_distributed) on bench_reducer.py's synthetic shards,
   one local Ray with every CPU and the GPU: `device="gpu"` (1 and 4 tasks per GPU), `device="cpu"`
   and the single-process jobs.score on `--compare-probes` probes, every figure of the reports
   compared (over `max_pairs` the single-process scorer samples impostors from another generator, so
   its thresholds differ from the reducer's: see README); then `device="gpu"` and `device="cpu"` over
   all `--probes`.

Prints one JSON line per measurement; `--json` also appends each to a file as it is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

BLOCK_ROWS = (128, 256, 671, 2048)
JSON_PATH: list[Path] = []  # --json: each line is appended as it is measured


def say(record: dict, log: list) -> None:
    log.append(record)
    print(json.dumps(record), flush=True)
    for path in JSON_PATH:
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def random_block(rng, b: int, n: int, dim: int):
    probes = rng.standard_normal((b, dim), dtype=np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    mates = np.stack([np.repeat(np.arange(b), 2), rng.integers(0, n, 2 * b)], axis=1)
    mates = np.unique(mates, axis=0)
    impostors = np.stack([np.repeat(np.arange(b), 64), rng.integers(0, n, 64 * b)], axis=1)
    best_in = np.full(b, -np.inf, np.float32)
    pool = np.zeros(b, bool)
    pool[::4] = True
    return probes, mates, impostors, best_in, np.float32(0.1), pool


def scorer_part(args, log: list) -> None:
    from recog.block_scoring import NumpyBlockScorer, OnnxBlockScorer

    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((args.gallery, args.dim), dtype=np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    cuda, cpu = OnnxBlockScorer(args.device), NumpyBlockScorer()
    say({"check": "session", "providers": cuda.session.get_providers(),
         "rows_per_block_cuda": cuda.rows_per_block(args.gallery), "rows_per_block_numpy": cpu.rows_per_block(args.gallery)},
        log)
    cuda.set_gallery(gallery)
    cpu.set_gallery(gallery)
    for b in BLOCK_ROWS:
        block = random_block(rng, b, args.gallery, args.dim)
        got, want = cuda.block(*block), cpu.block(*block)
        diffs = {k: float(np.max(np.abs(getattr(got, k) - getattr(want, k)))) if len(getattr(want, k)) else 0.0
                 for k in ("genuine", "impostor", "best", "top")}
        counts_equal = float(np.mean(got.count == want.count))
        times = {}
        for name, scorer in (("cuda", cuda), ("numpy", cpu)):
            scorer.block(*block)  # warm
            runs = []
            for _ in range(7 if name == "cuda" else 3):
                t = time.perf_counter()
                scorer.block(*block)
                runs.append(time.perf_counter() - t)
            times[name] = statistics.median(runs)
        say({"check": "block", "rows": b, "gallery": args.gallery, "max_abs_diff": diffs,
             "counts_equal": counts_equal, "candidates": [len(got.candidates), len(want.candidates)],
             "cuda_ms": times["cuda"] * 1e3, "numpy_ms": times["numpy"] * 1e3,
             "cuda_pairs_per_s": b * args.gallery / times["cuda"], "numpy_pairs_per_s": b * args.gallery / times["numpy"]},
            log)


def figures(result) -> dict:
    """Every number of a report's verification and identification sections, by path."""
    out = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            out[prefix] = float(value)

    walk("verification", result.verification)
    walk("identification", result.identification)
    return out


def compare(a: dict, b: dict) -> dict:
    keys = sorted(set(a) | set(b))
    shared = [k for k in keys if k in a and k in b]
    finite = [k for k in shared if np.isfinite(a[k]) and np.isfinite(b[k])]
    diff = {k: abs(a[k] - b[k]) for k in finite}
    rates = [d for k, d in diff.items() if "threshold" not in k]
    return {"figures": len(keys), "missing": [k for k in keys if k not in shared][:5],
            "max_abs_diff": max(diff.values(), default=0.0), "max_abs_diff_but_thresholds": max(rates, default=0.0),
            "worst": max(diff, key=diff.get, default=None),
            "finite_mismatch": [k for k in shared if np.isfinite(a[k]) != np.isfinite(b[k])][:5]}


def reducer_part(args, log: list) -> None:
    import ray

    from bench_reducer import make_data, make_subset
    from jobs.reduce import score_distributed
    from jobs.score import load_split, score

    t = time.perf_counter()
    make_data(args.work, args.probes, args.gallery, args.dim)
    make_subset(args.work, args.compare_probes)
    say({"check": "data", "seconds": time.perf_counter() - t, "cpus": os.cpu_count()}, log)
    ray.init(num_cpus=os.cpu_count(), num_gpus=1, include_dashboard=False, log_to_driver=False,
             object_store_memory=8 << 30)
    gallery_uri = str(args.work / "gallery")
    runs = {}

    def timed(label, probes_uri, **kw):
        t = time.perf_counter()
        result, _ = score_distributed(probes_uri, gallery_uri, "bench", shards_per_task=4, **kw)
        seconds = time.perf_counter() - t
        runs[label] = figures(result)
        say({"check": "reducer", "run": label, "seconds": seconds, "probes": result.identification["probes"],
             "gallery": result.identification["gallery"], "scored_by": result.scored_by,
             "pairs_per_s": result.identification["probes"] * result.identification["gallery"] / seconds,
             "rank1": result.identification["rank"]["1"], "auc": result.verification["auc"]}, log)

    sub = str(args.work / "probes-subset")
    # untimed: Ray's workers, CUDA and the shards' first read are paid here, not by the first run timed
    score_distributed(sub, gallery_uri, "bench", shards_per_task=4, device="gpu", tasks_per_gpu=4)
    timed("gpu-subset", sub, device="gpu", tasks_per_gpu=1)
    timed("gpu4-subset", sub, device="gpu", tasks_per_gpu=4)
    timed("cpu-subset", sub, device="cpu")
    t = time.perf_counter()
    split = load_split(sub, gallery_uri)
    single = score(split.probe_rows, split.probe_emb, split.gallery_rows, split.gallery_emb, "bench", split.similarity)
    runs["single-subset"] = figures(single)
    say({"check": "reducer", "run": "single-subset", "seconds": time.perf_counter() - t,
         "probes": single.identification["probes"], "gallery": single.identification["gallery"]}, log)
    for a, b in (("gpu-subset", "single-subset"), ("gpu-subset", "cpu-subset"), ("gpu4-subset", "gpu-subset"),
                 ("cpu-subset", "single-subset")):
        say({"check": "figures", "runs": [a, b], **compare(runs[a], runs[b])}, log)
    if not args.skip_full:
        full = str(args.work / "probes")
        timed("gpu4-full", full, device="gpu", tasks_per_gpu=4)
        timed("cpu-full", full, device="cpu")
        say({"check": "figures", "runs": ["gpu4-full", "cpu-full"], **compare(runs["gpu4-full"], runs["cpu-full"])}, log)
    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probes", type=int, default=1_000_000)
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--compare-probes", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mfr-bench-gpu"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-full", action="store_true", help="only the scorer and the side-by-side comparison")
    parser.add_argument("--only", choices=("scorer", "reducer"))
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: a rehearsal of this script on a machine without a GPU (the graph on the CPU "
                             "provider; 'GPU' tasks on a GPU that Ray is told exists, scoring with NumPy)")
    args = parser.parse_args()
    if args.only != "scorer":
        from bench_reducer import check_compare

        check_compare(parser, args.probes, args.compare_probes, args.skip_full)
    log: list = []
    if args.json:
        args.json.write_text("")
        JSON_PATH.append(args.json)
    try:
        import onnxruntime as ort

        say({"check": "onnxruntime", "version": ort.__version__, "providers": ort.get_available_providers()}, log)
        if args.only != "reducer":
            scorer_part(args, log)
    except RuntimeError as e:
        say({"check": "no-cuda", "error": str(e)}, log)
        raise SystemExit(3)
    if args.only != "scorer":
        reducer_part(args, log)


if __name__ == "__main__":
    main()
