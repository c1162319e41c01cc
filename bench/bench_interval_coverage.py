"""How often the reports' 95 % intervals hold the true rate: a simulation, no faces.

    .venv/bin/python bench/bench_interval_coverage.py [--runs 2000]

Scores are drawn from known distributions, so every true rate is known: genuine comparisons and mated
searches' scores ~ N(1, 1), impostor comparisons and non-mated searches' top scores ~ N(0, 1). Each
run measures a rate as the reports do (`recog.metrics`) and builds its interval, and the table gives
the share of runs whose interval holds the true rate, and the intervals' median width:

- a rate at a fixed threshold (a rank-k, or a TAR at a threshold set beforehand): the Wilson interval
  the reports give it (`recog.report.interval`);
- TAR at FAR f and TPIR at FPIR f, whose threshold each run sets from its own impostor comparisons or
  non-mated searches (k = round(f x n)), against the true rate at the target f: the reports' interval
  (`recog.metrics.threshold_rate_interval`, the threshold's uncertainty included) beside a Wilson
  interval at the threshold as measured, which leaves it out. The TPIR lines are drawn as the TAR
  lines are: every mated search ranks its mate first and has a face (a search that does not only
  lowers the rate, as a genuine comparison below the threshold does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project


def main() -> None:
    from statistics import NormalDist

    from recog.metrics import threshold_rate_interval
    from recog.report import interval

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="simulated evaluations per line (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    normal = NormalDist()

    def true_rate(f: float, mean: float = 1.0) -> float:  # the share of N(mean, 1) above N(0, 1)'s upper f quantile
        return 1 - normal.cdf(normal.inv_cdf(1 - f) - mean)

    print(f"{args.runs} runs a line; 95 % intervals; scores N(1, 1) against N(0, 1)\n")
    print(f"{'rate':30s} {'trials':>6s} {'threshold set by':>17s} {'true':>6s} {'reports: held':>13s} {'width':>6s} "
          f"{'Wilson at threshold: held':>25s} {'width':>6s}")
    for n in (50, 425, 5000):  # a fixed threshold: the threshold of FAR 0.1 in the population
        t, true, held, widths = normal.inv_cdf(0.9), true_rate(0.1), 0, []
        for _ in range(args.runs):
            low, high = interval(float((rng.normal(1, 1, n) >= t).mean()), n)
            held, widths = held + (low <= true <= high), widths + [high - low]
        print(f"{'rate at a fixed threshold':30s} {n:6d} {'(fixed)':>17s} {true:6.3f} {held / args.runs:13.1%} "
              f"{np.median(widths):6.3f}")
    for name, f, trials, setters, mean in (("TAR@FAR 0.1", 0.1, 300, (20, 200, 3000), 1.0),
                                           ("TAR@FAR 0.01", 0.01, 300, (300, 3000), 1.0),
                                           ("TPIR@FPIR 0.1", 0.1, 400, (20, 100, 1000), 1.0),
                                           ("TPIR@FPIR 0.01", 0.01, 1000, (100, 200, 1000), 1.0),
                                           ("TAR@FAR 0.1, genuine N(4, 1)", 0.1, 40, (400,), 4.0)):
        true = true_rate(f, mean)  # the last: nearly every genuine pair accepted, the rate at its bound
        for m in setters:
            k, held, widths = int(round(f * m)), [0, 0], [[], []]
            for run in range(args.runs):
                others, scores = rng.normal(0, 1, m), rng.normal(mean, 1, trials)
                t = np.partition(others, m - k)[m - k]  # the k-th highest: the threshold, as recog.metrics sets it
                for i, (low, high) in enumerate((threshold_rate_interval(scores, trials, others, f, seed=run),
                                                 interval(float((scores >= t).mean()), trials))):
                    held[i] += low <= true <= high
                    widths[i].append(high - low)
            print(f"{name:30s} {trials:6d} {m:10d} others {true:6.3f} {held[0] / args.runs:13.1%} "
                  f"{np.median(widths[0]):6.3f} {held[1] / args.runs:25.1%} {np.median(widths[1]):6.3f}")

if __name__ == "__main__":
    main()
