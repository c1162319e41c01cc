"""Identification scoring at scale: 10,000 probes x 100,000 gallery entries (10^9 scores, 128-d).

    .venv/bin/python bench/bench_scoring.py [--probes 10000] [--gallery 100000] [--dim 128]

Random unit vectors with planted mates (every probe's identity has one gallery entry, plus 10 %
non-mated probes). Runs `recog.metrics.identification_stats` in blocks and reports wall time,
scores per second and the process's peak resident memory (ru_maxrss), with the goal of 2 GiB.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np


def main() -> None:
    from recog import metrics as M

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probes", type=int, default=10_000)
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--block", type=int, default=256)
    args = parser.parse_args()
    # a tenth of the probes are non-mated, and TPIR@FPIR=0.01 needs at least 100 of them; the mated
    # ones each take a gallery entry of their own
    if args.probes < 1000:
        parser.error(f"--probes is at least 1,000 (TPIR@FPIR=0.01 needs 100 non-mated probes, a tenth of "
                     f"them); got {args.probes:,}")
    if args.gallery < int(args.probes * 0.9):
        parser.error(f"--gallery is at least nine tenths of --probes ({int(args.probes * 0.9):,}: each mated probe "
                     f"has a gallery entry of its own); got {args.gallery:,}")

    rng = np.random.default_rng(0)
    gallery = M.normalize_rows(rng.standard_normal((args.gallery, args.dim), dtype=np.float32))
    gallery_ids = np.arange(args.gallery)
    n_mated = int(args.probes * 0.9)
    mates = rng.choice(args.gallery, n_mated, replace=False)
    probes = np.concatenate([
        gallery[mates] + 0.08 * rng.standard_normal((n_mated, args.dim), dtype=np.float32),
        rng.standard_normal((args.probes - n_mated, args.dim), dtype=np.float32),
    ])
    probe_ids = np.concatenate([mates, args.gallery + np.arange(args.probes - n_mated)])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    stats = M.identification_stats(probes, gallery, probe_ids, gallery_ids, block=args.block,
                                   keep_nonmated=int(np.ceil(n_mated * 0.1)))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    rank1 = M.cmc(stats, (1,))[1]
    tpir = M.tpir_at_fpir(stats, 0.01).tpir
    scores = args.probes * args.gallery
    print(f"{args.probes:,} probes x {args.gallery:,} gallery x {args.dim}-d = {scores:,} scores, "
          f"{os.cpu_count()} CPUs, block {args.block}")
    print("| wall time | scores/s | peak RSS (whole process) | inputs | rank-1 | TPIR@FPIR=0.01 |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {seconds:.1f} s | {scores / seconds:.3g} | {peak / 1024:.0f} MiB | {before / 1024:.0f} MiB before scoring "
          f"| {rank1:.3f} | {tpir:.3f} |")


if __name__ == "__main__":
    main()
