"""Verification and identification metrics: pure functions with validated inputs and exact definitions.

Conventions. A *score* is a similarity: larger means more alike. A comparison is *accepted* at
threshold t when score >= t. Labels are 1 for genuine (same identity) pairs, 0 for impostor pairs.

Verification
- ROC: for every distinct score t (descending), FAR(t) = impostors with score >= t / impostors and
  TAR(t) = genuines with score >= t / genuines; the curve starts at (0, 0).
- AUC: trapezoidal area under TAR against FAR.
- EER: where FAR equals FRR = 1 - TAR, linearly interpolated between the two ROC points around it.
- TAR at FAR f: threshold = the k-th highest impostor score with k = round(f * impostors); TAR and
  the FAR actually achieved (ties can admit more than k impostors) are measured at that threshold.
  f < 1 / impostors (k = 0) is refused: the data cannot measure it.
- Score distributions (`score_moments`): per side, the mean and population standard deviation of
  the comparisons with a score, and Daugman's decidability d' = |mean_g - mean_i| /
  sqrt((std_g^2 + std_i^2) / 2): how far apart the genuine and impostor scores lie, in their spread.
- Best accuracy: the highest (accepted genuines + rejected impostors) / pairs over all thresholds.
- K-fold accuracy (LFW View 2 protocol, 10 folds): for each fold, the best-accuracy threshold of the
  other folds, moved midway to their next lower score, is applied to it; mean and (population)
  standard deviation of the fold accuracies.

Identification (probes against a gallery, `ids` name identities)
- A probe is *mated* when its identity is in the gallery. Its mated score is the best score among
  gallery entries of its identity; its rank is 1 + the number of other gallery *identities* with an
  entry scoring at least as high (ties count against it): a gallery of several images per identity
  ranks identities, as a candidate list does, so an impostor with three images above the mate pushes
  it down one place, not three. A tie is a score within float32 rounding of the mated
  score: at least `tie_floor(mated)`, the mated score less `TIE_TOLERANCE` (2^-16) x max(1, |mated|).
  Two matrix products of the same embeddings can differ in their last bits (BLAS sums in an order
  that depends on the shapes), so exact equality would make the rank of a probe whose gallery holds
  a copy of its mate under another identity depend on how the gallery was cut into blocks or parts.
- CMC rank-k (closed set): share of mated probes with rank <= k.
- TPIR at FPIR f (open set): threshold = the k-th highest *top* score of the non-mated probes, with
  k = round(f * non-mated probes); a mated probe is identified when its rank is 1 and its mated score
  is >= threshold. f < 1 / non-mated probes is refused, as is an f whose k is more than the non-mated
  probes in which a face was found (failures to acquire, below): round(f * n) is the rule, so with 2
  of 25 found, f = 0.1 (k = round(2.5) = 2) is measured, at an achieved FPIR of 0.08.
- Templates: one gallery entry per identity, the mean of its L2-normalised embeddings, normalised.

Failures to acquire (ISO/IEC 19795-1: every sample counts). A probe in which no face was found
has no scores; `unacquired_rejected` gives each of its comparisons a score below every real one
(rejected at every threshold that accepts any real comparison), and `identification_stats(...,
acquired=...)` counts it as never identified: a mated one misses at every rank and at every FPIR
threshold, a non-mated one is never falsely identified. A gallery entry in which no face was found
(a failure to enrol) is an entry without a template: its comparisons are rejected the same way, and
the probes of an identity with no other entry are mated searches never identified
(`with_failures_to_enrol`), not searches for someone absent.

Seed readings (to compare with the seed project's tables; not the defaults)
- `seed_tar_at_far`: scikit-learn's `roc_curve` (default thinning), the point whose FPR is nearest
  the target (ties: the one with the higher FPR, as the seed's reversed scan does).
- `seed_identification`: one gallery entry per identity, probes without a gallery identity dropped;
  rank-k from sorting each probe's scores; "TPIR at FPIR f": threshold = the k-th highest non-mated
  score over all probe x gallery pairs with k = ceil(probes * f), rate = probes whose mated score is
  strictly above it (rank not required).

Uncertainty (each trial taken as independent; comparisons that share a person are not, quite)
- `proportion_interval(successes, n, confidence)`: the Wilson score interval of a rate measured as
  successes out of n independent trials (Wilson 1927; Brown, Cai and DasGupta 2001 recommend it
  over the normal approximation, which leaves [0, 1] and collapses to a point at 0 or n). Reports
  give it for rank-k, out of the mated searches.
- `threshold_rate_interval`: a rate measured at a threshold the same data set, TAR at FAR f (set by
  the impostor comparisons) or TPIR at FPIR f (set by the non-mated searches). The threshold is
  uncertain too, and a Wilson interval at the threshold as measured held the true rate in as few as
  a quarter of simulated runs where tens of comparisons set it (bench/bench_interval_coverage.py). A
  bootstrap of both samples: in each draw the threshold is the k-th highest of m setters drawn
  again, found without drawing them (counted from the top, the k-th of m uniform draws lies at a
  Beta(k, m - k + 1) distributed share of the way down: that far down the setters' scores sorted
  from the highest), and the rate is drawn from Jeffreys'
  Beta(x + 1/2, n - x + 1/2) of the x trials accepted at it; the interval is the draws' percentiles
  (from 0 where none is accepted at the threshold as measured, to 1 where all are, as Jeffreys'
  interval). Seeded: a report is the same each time it is made.

Comparing two methods on the same probes (`mcnemar_test`): McNemar's exact test of the probes one
method identifies at rank 1 and the other does not (the discordant ones), paired by probe; each
probe taken as independent, as above. A report comparing many methods makes many such tests, and
some small p among them is likely by chance alone (12 methods make 66 pairs): `holm_adjust` gives
each test's p adjusted for the others by Holm's step-down method, so that "every adjusted p below
a" errs somewhere with chance at most a whatever the tests' dependence.

Scoring at scale: `identification_stats` works through the probes in blocks, so a 10,000 x 100,000
comparison never holds more than `block x gallery` scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from maskgen.checks import is_whole

# ------------------------------------------------------------------------------------------------
# validation


def _check_scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores)
    if np.iscomplexobj(s):  # float64 kept the real part with a warning only
        raise ValueError("scores must be real numbers, got complex ones")
    if s.dtype.kind in "USO":  # text was read as numbers ("0.1"), where labels given as text are refused
        bad = [v for v in s.reshape(-1).tolist() if isinstance(v, (str, bytes)) or v is None]
        if bad:
            raise ValueError(f"scores must be numbers, got {bad[0]!r}")
    s = s.astype(np.float64)
    y = np.asarray(labels)
    if s.shape != y.shape and not (s.ndim <= 1 and y.ndim <= 1):
        raise ValueError(f"scores and labels must have the same shape, got {s.shape} and {y.shape}")
    s, y = s.reshape(-1), y.reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {y.size}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    if not np.isin(y, (0, 1, True, False)).all():
        raise ValueError("labels must be 0 (impostor) or 1 (genuine)")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError("need both genuine (1) and impostor (0) pairs")
    return s, y


# ------------------------------------------------------------------------------------------------
# verification


@dataclass(frozen=True)
class Roc:
    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray  # thresholds[i] gives (far[i], tar[i]); thresholds[0] = +inf


TIE_TOLERANCE = 2.0 ** -16


def tie_floor(mated) -> np.ndarray:
    """Per mated score, the lowest non-mated score that ties it (module doc: identification): the
    score less `TIE_TOLERANCE` x max(1, |score|), in float32; -inf stays -inf."""
    m = np.asarray(mated, np.float32)
    return (m - np.float32(TIE_TOLERANCE) * np.maximum(np.float32(1), np.abs(m))).astype(np.float32)


def _check_ranks(ranks) -> tuple[int, ...]:
    ranks = (ranks,) if np.isscalar(ranks) else tuple(ranks)
    if not ranks or not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1 for k in ranks):
        raise ValueError(f"ranks are whole numbers of at least 1, got {ranks}")
    return tuple(int(k) for k in ranks)


def _check_rate(name: str, rate: float) -> float:
    if isinstance(rate, (bool, np.bool_)) or not (isinstance(rate, (int, float, np.number)) and 0 < rate <= 1):
        raise ValueError(f"{name} must be in (0, 1], got {rate!r}")  # (repr: '0.1', a string, read as 0.1)
    return float(rate)


def check_rates(name: str, rates) -> tuple:
    """One rate or several, each in (0, 1], kept as given (the summaries' keys are str(rate))."""
    if isinstance(rates, str) or rates is None:
        raise ValueError(f"{name}s are numbers in (0, 1], got {rates!r}")
    rates = (rates,) if isinstance(rates, (int, float, np.number)) else tuple(rates)
    for rate in rates:
        _check_rate(name, rate)
    return rates


def roc_curve(scores, labels) -> Roc:
    s, y = _check_scores_labels(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # index of the last pair at each distinct score
    tp = np.cumsum(y)[last_of_run]
    fp = (last_of_run + 1) - tp
    far = np.r_[0.0, fp / (~y).sum()]
    tar = np.r_[0.0, tp / y.sum()]
    return Roc(far, tar, np.r_[np.inf, s[last_of_run]])


def auc(roc: Roc) -> float:
    return float(np.trapezoid(roc.tar, roc.far)) if hasattr(np, "trapezoid") else float(np.trapz(roc.tar, roc.far))


def eer(scores, labels) -> tuple[float, float]:
    """(equal error rate, threshold) by linear interpolation on the ROC."""
    roc = roc_curve(scores, labels)
    frr = 1.0 - roc.tar
    diff = roc.far - frr  # rises from -1 to +1 along the curve
    i = int(np.argmax(diff >= 0))
    if i == 0:
        return 0.0, float(roc.thresholds[1])
    d0, d1 = diff[i - 1], diff[i]
    w = d0 / (d0 - d1) if d1 != d0 else 0.0
    rate = roc.far[i - 1] + w * (roc.far[i] - roc.far[i - 1])
    t0 = roc.thresholds[i - 1] if np.isfinite(roc.thresholds[i - 1]) else roc.thresholds[i]
    return float(rate), float(t0 + w * (roc.thresholds[i] - t0))


@dataclass(frozen=True)
class TarAtFar:
    target_far: float
    tar: float
    far: float        # achieved
    threshold: float
    k: int


def _check_floor(floor) -> float | None:
    """A floor (the score of comparisons left without one) as a float, or None: NaN was ignored without
    a word (every comparison scored), and text failed inside NumPy."""
    if floor is None:
        return None
    if isinstance(floor, (bool, np.bool_)) or not isinstance(floor, (int, float, np.number)) \
            or not np.isfinite(floor):
        raise ValueError(f"floor is a finite score (the score of comparisons left without one), or None; got {floor!r}")
    return float(floor)


def tar_at_far(scores, labels, far: float, floor: float | None = None) -> TarAtFar:
    """TAR at the threshold of the k-th highest impostor score, k = round(far x impostors) (see the
    module doc). `floor`: scores at or below it stand for comparisons that a failure to acquire or
    enrol left without a score (`with_failures_to_acquire`'s floor); a FAR whose threshold falls among
    them is refused, since at their own score every pair is accepted (28 of 30 probes without a face
    read TAR 100 % at FAR 0.1)."""
    floor = _check_floor(floor)
    s, y = _check_scores_labels(scores, labels)
    impostors = np.sort(s[~y])[::-1]
    n = impostors.size
    _check_rate("FAR", far)
    # refused below 1 / n, as documented: with k = round(f n) alone, f down to 0.5 / n would get k = 1
    # and a FAR achieved up to twice the target (6 impostors: "TAR@FAR=0.1" at FAR 0.167)
    if n == 0:
        raise ValueError("FAR needs impostor pairs; there are none")
    if far * n < 1 - 1e-9:
        raise ValueError(f"FAR {far} is below 1 / impostors = {1 / n:.3g}: {n} impostor pairs cannot measure it")
    k = int(round(far * n))
    threshold = impostors[k - 1]
    if floor is not None and threshold <= floor:
        scored = int((impostors > floor).sum())
        raise ValueError(f"FAR {far} needs the {k}-th highest impostor score, and only {scored} of the {n} impostor "
                         f"pairs have one (the others are comparisons of samples without a face)")
    return TarAtFar(far, float((s[y] >= threshold).mean()), float((impostors >= threshold).mean()),
                    float(threshold), k)


def _check_confidence(confidence) -> float:
    if isinstance(confidence, (bool, np.bool_)) or not isinstance(confidence, (int, float, np.number)) \
            or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    return float(confidence)


def proportion_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """(low, high): the Wilson score interval of the rate `successes` / `n` at `confidence` (two-sided),
    for n independent trials: centre (p + z^2 / 2n) / (1 + z^2 / n), half-width
    z / (1 + z^2 / n) x sqrt(p (1 - p) / n + z^2 / 4n^2), z the normal quantile at 1 - (1 - confidence) / 2.
    Within [0, 1]; at 0 successes it starts at 0, at n it ends at 1."""
    from statistics import NormalDist

    if not (is_whole(successes) and is_whole(n)) or not 0 <= successes <= n or n < 1:
        raise ValueError(f"successes and n are whole numbers with 0 <= successes <= n and n >= 1, got "
                         f"{successes!r} of {n!r}")
    z = NormalDist().inv_cdf(1 - (1 - _check_confidence(confidence)) / 2)
    p, n = int(successes) / int(n), int(n)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at 0 or n successes the formula's end is 0 or 1 up to rounding (1e-17): said exactly
    return (0.0 if successes == 0 else max(0.0, centre - half)), (1.0 if successes == n else min(1.0, centre + half))


INTERVAL_DRAWS = 4000
INTERVAL_CONFIDENCE = 0.95  # of the intervals the summaries give (`tar_ci95`; reports: `recog.report`)


@dataclass(frozen=True)
class PairedTest:
    """Two methods' outcomes on the same trials, and McNemar's exact test of their difference."""

    trials: int
    both: int            # trials both methods got right
    first_only: int      # the first right, the second wrong (discordant)
    second_only: int     # the second right, the first wrong (discordant)
    neither: int
    p_value: float       # two-sided; 1.0 with no discordant trial


def mcnemar_test(first, second) -> PairedTest:
    """McNemar's exact test of two methods' success (bool per trial) on the same trials: were they equally
    good, the trials one got right and the other wrong would fall to either side as a fair coin does, so
    p is the two-sided binomial test of `first_only` out of the discordant trials at 1/2 (SciPy's
    `binomtest`). Paired: a difference two overlapping intervals hide can be clear here, as each method
    meets the same hard and easy trials."""
    from scipy.stats import binomtest

    a, b = (np.asarray(x) for x in (first, second))
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired outcomes must be two 1-D arrays of one length, got {a.shape} and {b.shape}")
    if not (np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all()):
        raise ValueError("paired outcomes must be True/False (or 1/0) per trial")
    a, b = a.astype(bool), b.astype(bool)
    first_only, second_only = int((a & ~b).sum()), int((~a & b).sum())
    discordant = first_only + second_only
    p = float(binomtest(first_only, discordant, 0.5).pvalue) if discordant else 1.0
    return PairedTest(int(a.size), int((a & b).sum()), first_only, second_only, int((~a & ~b).sum()), p)


def holm_adjust(p_values) -> np.ndarray:
    """Holm's step-down adjusted p of each of m tests (in their order): with the p sorted ascending,
    p_(1) <= ... <= p_(m), the i-th adjusted is max over j <= i of min(1, (m - j + 1) p_(j)). Rejecting
    every test whose adjusted p is below a keeps the chance of any false rejection among the m at most
    a (the family-wise error), under any dependence between the tests; uniformly more powerful than
    Bonferroni's m p. Equal to statsmodels' `multipletests(p, method="holm")[1]` (one sort and a
    running maximum, written out here rather than adding statsmodels and patsy for it). p values are
    finite numbers in [0, 1]; none gives an empty array."""
    try:
        p = np.asarray(p_values, dtype=float) if not isinstance(p_values, (str, bytes)) else None
    except (TypeError, ValueError):  # text, None among them
        p = None
    if p is None or p.ndim != 1 or not (np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()):
        raise ValueError(f"p values are a 1-D list of numbers in [0, 1], got {p_values!r}")
    order = np.argsort(p, kind="stable")
    steps = np.minimum(1.0, (p.size - np.arange(p.size)) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(steps)
    return adjusted


def threshold_rate_interval(accepted, trials: int, setters, target: float, confidence: float = 0.95,
                            draws: int = INTERVAL_DRAWS, seed: int = 0) -> tuple[float, float]:
    """(low, high) of a rate measured at the threshold of the k-th highest of the `setters`' scores,
    k = round(target x setters), as `tar_at_far` (setters: the impostor comparisons' scores; accepted:
    the genuine comparisons' scores) and `tpir_at_fpir` (setters: the non-mated searches' top scores;
    accepted: the mated scores of the mated searches whose mate ranks first) set it. `accepted`: the
    scores of the trials a threshold at or below them accepts (a trial that no threshold accepts, a
    failure to acquire or a mate not ranked first, is left out of them and counted in `trials`, all of
    them). The bootstrap of the module's text, `draws` draws seeded with `seed`. A target below
    1 / setters is refused, as `tar_at_far` refuses it."""
    return threshold_rate_intervals(accepted, trials, setters, (target,), confidence, draws, seed)[0]


def threshold_rate_intervals(accepted, trials: int, setters, targets, confidence: float = 0.95,
                             draws: int = INTERVAL_DRAWS, seed: int = 0) -> list[tuple[float, float]]:
    """`threshold_rate_interval` at each of several targets (a report's FARs), sorting the scores once:
    an evaluation's millions of impostor comparisons were sorted again for each."""
    accepted = np.sort(np.asarray(accepted, dtype=np.float64).reshape(-1))
    setters = np.sort(np.asarray(setters, dtype=np.float64).reshape(-1))[::-1]
    if not is_whole(trials) or trials < max(1, accepted.size):
        raise ValueError(f"trials must be a whole number, at least 1 and at least the accepted scores "
                         f"({accepted.size}), got {trials!r}")
    if np.isnan(accepted).any() or np.isnan(setters).any():
        raise ValueError("scores must not be NaN")
    confidence = _check_confidence(confidence)
    if not is_whole(draws) or draws < 100:
        raise ValueError(f"draws must be a whole number of at least 100, got {draws!r}")
    if not is_whole(seed) or seed < 0:
        raise ValueError(f"seed must be a whole number of at least 0, got {seed!r}")
    m, out = setters.size, []
    for target in targets:
        _check_rate("target", target)
        if m == 0 or target * m < 1 - 1e-9:  # as tar_at_far: k = round(f m) would reach 1 from f = 0.5 / m
            raise ValueError(f"the target {target} is below 1 / setters ({m}): it sets no threshold")
        k = int(round(target * m))
        rng = np.random.default_rng(seed)  # each target's draws as if it were alone
        rank = np.clip(np.ceil(rng.beta(k, m - k + 1, draws) * m).astype(np.int64), 1, m)
        counts = accepted.size - np.searchsorted(accepted, setters[rank - 1], side="left")  # accepted at each
        # the rate at each drawn threshold: Jeffreys' Beta(x + 1/2, n - x + 1/2), not Binomial(n, x / n), which
        # at x = n (every genuine pair accepted) is n every time and made the interval a point
        rates = rng.beta(counts + 0.5, trials - counts + 0.5)
        tail = (1 - confidence) / 2
        low, high = np.quantile(rates, [tail, 1 - tail])
        measured = accepted.size - np.searchsorted(accepted, setters[k - 1], side="left")
        # as Brown, Cai and DasGupta's Jeffreys interval: from 0 where none was accepted, to 1 where all were
        out.append(((0.0 if measured == 0 else float(low)), (1.0 if measured == trials else float(high))))
    return out


def score_counts(roc: Roc, genuine: int, impostor: int, floor: float | None = None):
    """(scores, genuine count, impostor count) at each distinct score of the comparisons `roc` was made
    of (`genuine` and `impostor` of them), highest first: the two score distributions, read back from
    the ROC's steps (which hold them exactly). With `floor` (tar_at_far), the comparisons a failure
    left at it, without a score, are left out. A count the ROC was not made of is refused (ValueError)
    where its rates times it are not whole numbers of comparisons (the figures read back were those of
    other distributions); a multiple of the right count is not detectable, and scales the counts."""
    values = roc.thresholds[1:]
    g, i = (np.diff(_roc_counts(rates, n, name)) for rates, n, name in
            ((roc.tar, genuine, "genuine"), (roc.far, impostor, "impostor")))
    floor = _check_floor(floor)
    keep = values > floor if floor is not None else np.ones(values.size, bool)
    return values[keep], g[keep], i[keep]


def _roc_counts(rates: np.ndarray, n, name: str) -> np.ndarray:
    """A ROC's cumulative comparison counts on one side, from its rates and the side's count `n`."""
    if not is_whole(n) or n < 0:
        raise ValueError(f"{name} is the number of {name} comparisons the ROC was made of, a whole number, got {n!r}")
    exact = np.asarray(rates, np.float64) * int(n)
    counts = np.rint(exact)
    # rates are counts over n: back to whole numbers within float rounding (far under 1e-6 below 10^9)
    if counts.size and np.abs(exact - counts).max() > 1e-6 + 1e-12 * int(n):
        raise ValueError(f"the ROC was not made of {n} {name} comparisons: its rates times {n} are not whole "
                         "numbers of comparisons")
    return counts.astype(np.int64)


def score_moments(roc: Roc, genuine: int, impostor: int, floor: float | None = None) -> dict:
    """The genuine and impostor score distributions in numbers: per side the comparisons with a score
    (`count`), their `mean` and (population) standard deviation `std`; and `d_prime`, Daugman's
    decidability |mean_g - mean_i| / sqrt((std_g^2 + std_i^2) / 2), None where a side has no score or
    both spreads are 0. Read from the ROC (`score_counts`), in score order: the same figures however
    the comparisons were ordered (two reducers' sums in different orders differed in the last bit)."""
    values, g, i = score_counts(roc, genuine, impostor, floor)
    out = {}
    for side, counts in (("genuine", g), ("impostor", i)):
        n = int(counts.sum())
        if not n:
            out[side] = {"count": 0, "mean": None, "std": None}
            continue
        # NumPy's pairwise sum, not a BLAS dot, whose result can depend on the arrays' alignment
        mean = float((counts * values).sum() / n)
        out[side] = {"count": n, "mean": mean, "std": float(np.sqrt((counts * (values - mean) ** 2).sum() / n))}
    sides = out["genuine"], out["impostor"]
    spread = math.sqrt((sides[0]["std"] ** 2 + sides[1]["std"] ** 2) / 2) if all(s["count"] for s in sides) else 0.0
    out["d_prime"] = abs(sides[0]["mean"] - sides[1]["mean"]) / spread if spread > 0 else None
    return out


def best_accuracy(scores, labels) -> tuple[float, float]:
    """(accuracy, threshold): the threshold is a score of the data (accept >= it), or +inf when
    rejecting every pair is best (report.json writes it as null)."""
    s, y = _check_scores_labels(scores, labels)
    roc = roc_curve(s, y)
    n_gen, n_imp = int(y.sum()), int((~y).sum())
    # counted as whole pairs: rates times counts tied thresholds by float rounding (15.000000000000002
    # beat 15.0), so "the highest of the thresholds equally best" was not always the one taken
    correct = np.rint(roc.tar * n_gen).astype(np.int64) + n_imp - np.rint(roc.far * n_imp).astype(np.int64)
    i = int(np.argmax(correct))
    return float(correct[i] / s.size), float(roc.thresholds[i])


@dataclass(frozen=True)
class KFold:
    mean: float
    std: float
    accuracies: tuple[float, ...]
    thresholds: tuple[float, ...]


def kfold_accuracy(scores, labels, folds: int | np.ndarray = 10) -> KFold:
    """LFW's protocol: `folds` is a count (contiguous equal folds, in pair order) or a fold id per pair."""
    s, y = _check_scores_labels(scores, labels)
    if np.isscalar(folds):
        if not is_whole(folds):
            raise ValueError(f"folds is a count (a whole number) or one fold id per pair, got {folds!r}")
        n_folds = int(folds)
        if n_folds < 2 or n_folds > s.size:
            raise ValueError(f"folds must be between 2 and the number of pairs, got {folds}")
        fold_id = np.arange(s.size) * n_folds // s.size
    else:
        fold_id = np.asarray(folds).reshape(-1)
        if fold_id.shape != s.shape:
            raise ValueError("one fold id per pair is needed")
        # a NaN id was a fold of no pairs (accuracy NaN, the mean NaN); None a TypeError from sorting
        fold_id = _check_ids(fold_id, "fold ids")
    if np.unique(fold_id).size < 2:
        raise ValueError("k-fold accuracy needs at least 2 folds; every pair is in one")
    accs, thresholds = [], []
    for f in np.unique(fold_id):
        test = fold_id == f
        if y[~test].all() or not y[~test].any():
            one = "genuine" if y[~test].all() else "impostor"
            hint = "; the folds of a count are contiguous runs of the pairs in order: interleave genuine and " \
                "impostor pairs (as LFW's files do) or give a fold id per pair" if np.isscalar(folds) else ""
            raise ValueError(f"fold {f}: the pairs of the other folds are all {one}, so no threshold can be chosen "
                             f"for it{hint}")
        _, t = best_accuracy(s[~test], y[~test])
        # midway to the next lower score of the other folds: the best-accuracy threshold is a score of
        # theirs (accept >= it), the tightest of the thresholds that are best there, and judged a fold
        # whose genuine pairs fall just below it as wrong (two folds parted by 0.3 read 83.3 %)
        below = s[~test][s[~test] < t]
        if np.isfinite(t) and below.size:
            t = float((t + below.max()) / 2)
        accs.append(float(((s[test] >= t) == y[test]).mean()))
        thresholds.append(t)
    return KFold(float(np.mean(accs)), float(np.std(accs)), tuple(accs), tuple(thresholds))


def verification_summary(scores, labels, fars=(0.1, 0.01, 0.001), floor: float | None = None) -> dict:
    """Every verification figure as plain numbers (FARs the data cannot measure are reported as None,
    `floor` as in tar_at_far; a FAR outside (0, 1] is refused, as tar_at_far refuses it). Each TAR
    measured has its `INTERVAL_CONFIDENCE` interval, `tar_ci95` (`threshold_rate_interval`: the
    genuine comparisons with a score, out of them all, at the threshold the impostors set)."""
    fars = check_rates("FAR", fars)
    floor = _check_floor(floor)
    roc = roc_curve(scores, labels)
    s, y = _check_scores_labels(scores, labels)
    e, e_t = eer(s, y)
    acc, acc_t = best_accuracy(s, y)
    tars, unmeasured = {}, {}
    for f in fars:
        try:
            r = tar_at_far(s, y, f, floor)
            tars[str(f)] = {"tar": r.tar, "far_achieved": r.far, "threshold": r.threshold}
        except ValueError as exc:  # why, for a report's n/a
            tars[str(f)], unmeasured[str(f)] = None, str(exc)
    # the FARs as given, as tar_at_far took them (a key, str(f), read back could round to another k); the
    # impostors sorted once for all of them
    measured = [f for f in fars if tars[str(f)] is not None]
    if measured:
        genuine = s[y] if floor is None else s[y & (s > floor)]  # a comparison left without a score: never accepted
        for f, ci in zip(measured, threshold_rate_intervals(genuine, int(y.sum()), s[~y], measured,
                                                            INTERVAL_CONFIDENCE)):
            tars[str(f)]["tar_ci95"] = list(ci)
    return {"pairs": int(s.size), "genuine": int(y.sum()), "impostor": int((~y).sum()), "auc": auc(roc),
            "eer": e, "eer_threshold": e_t, "best_accuracy": acc, "best_accuracy_threshold": acc_t,
            "tar_at_far": tars, **({"tar_unmeasured": unmeasured} if unmeasured else {}),
            "scores": score_moments(roc, int(y.sum()), int((~y).sum()), floor)}


def seed_tar_at_far(scores, labels, far: float, floor: float | None = None) -> float:
    """The seed's reading: the sklearn ROC point whose FPR is nearest `far` (see module docstring).
    `floor` as in tar_at_far: a FAR above the share of impostor pairs scored above it is refused."""
    from sklearn.metrics import roc_curve as sk_roc_curve

    far = _check_rate("FAR", far)  # NaN, 0 or 5 read the ROC point nearest it: TAR 1.0
    floor = _check_floor(floor)
    s, y = _check_scores_labels(scores, labels)
    if floor is not None and far > (s[~y] > floor).sum() / max((~y).sum(), 1):
        raise ValueError(f"FAR {far} is above the share of impostor pairs with a score "
                         f"({int((s[~y] > floor).sum())} of {int((~y).sum())}; the others are comparisons of samples "
                         "without a face)")
    fpr, tpr, _ = sk_roc_curve(y.astype(int), s)
    fpr, tpr = fpr[::-1], tpr[::-1]
    _, i = min(zip(np.abs(fpr - far), range(len(fpr))))
    return float(tpr[i])


# ------------------------------------------------------------------------------------------------
# scores at scale


def normalize_rows(x: np.ndarray, dtype=np.float32) -> np.ndarray:
    x = np.asarray(x, dtype=dtype)
    if x.ndim != 2:
        raise ValueError(f"embeddings are one row per sample, (N, D), got shape {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _check_finite(*embeddings) -> None:
    """NaN scored NaN against everything, which every threshold rejects and every rank skipped: refused,
    as the identification functions refuse NaN scores."""
    if not all(np.isfinite(e).all() for e in embeddings):
        raise ValueError("embeddings contain NaN or infinity")


def similarity_matrix(a: np.ndarray, b: np.ndarray, similarity: str = "cosine", dtype=np.float32) -> np.ndarray:
    """Scores of every row of `a` against every row of `b`: cosine, or minus the Euclidean distance, as
    `dtype` (float32; the seed's readings score in float64, as its scripts do)."""
    a = np.asarray(a, dtype=dtype)
    b = np.asarray(b, dtype=dtype)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"embeddings must be (n, d) with the same d, got {a.shape} and {b.shape}")
    _check_finite(a, b)
    if similarity == "cosine":
        return normalize_rows(a, dtype) @ normalize_rows(b, dtype).T
    if similarity == "euclidean":
        # |a|^2 + |b|^2 - 2ab in float64: in float32 its rounding (about 1e-3 at dlib's norms of 1.6)
        # gave a face against itself -0.0012, far past the tie tolerance, and ranks that changed with
        # the block size; pair_scores gives the same distances from a - b
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        sq = (a64 * a64).sum(1)[:, None] + (b64 * b64).sum(1)[None, :] - 2.0 * (a64 @ b64.T)
        return (-np.sqrt(np.maximum(sq, 0.0))).astype(dtype)
    raise ValueError(f"similarity must be 'cosine' or 'euclidean', got {similarity!r}")


def pair_scores(a: np.ndarray, b: np.ndarray, similarity: str = "cosine", block: int = 65536) -> np.ndarray:
    """Score of a[i] against b[i] for every i."""
    if not is_whole(block) or block < 1:
        raise ValueError(f"block is a whole number of pairs, at least 1, got {block!r}")
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"pair embeddings must have the same (n, d) shape, got {a.shape} and {b.shape}")
    _check_finite(a, b)
    out = np.empty(len(a), np.float32)
    for i in range(0, len(a), block):
        x, y = a[i:i + block], b[i:i + block]
        if similarity == "cosine":
            out[i:i + block] = (normalize_rows(x) * normalize_rows(y)).sum(1)
        elif similarity == "euclidean":
            out[i:i + block] = -np.linalg.norm(x - y, axis=1)
        else:
            raise ValueError(f"similarity must be 'cosine' or 'euclidean', got {similarity!r}")
    return out


# the rank of a mated probe in which no face was found: beyond every rank, so it misses at each k (a
# rank of gallery size + 1 counted it as identified at every k above the gallery's size)
NEVER_IDENTIFIED = np.iinfo(np.int64).max


@dataclass(frozen=True)
class IdentificationStats:
    """Per-probe facts from which every identification figure follows."""

    mated: np.ndarray           # bool (P,): identity in the gallery
    mated_score: np.ndarray     # (P,) best mated score (nan if unmated)
    rank: np.ndarray            # (P,) 1 + non-mated identities scoring >= mated score (0 if unmated;
                                # NEVER_IDENTIFIED for a mated probe without a face)
    top_nonmated: np.ndarray    # (P,) best non-mated score (-inf if the gallery has only the mate)
    nonmated_top: np.ndarray    # largest non-mated scores of mated probes, descending (seed reading)
    gallery_size: int           # gallery entries
    gallery_identities: int | None = None  # identities among them (None: not counted; the most a rank can be)

    @property
    def most_rank(self) -> int:
        """The largest rank a mated probe with a face can have: the gallery's identities."""
        return self.gallery_size if self.gallery_identities is None else self.gallery_identities


def identity_runs(sorted_codes) -> np.ndarray | None:
    """Where each identity's run starts in gallery columns ordered by identity code (`sorted_codes`
    non-decreasing); None when every entry is an identity of its own, where entries and identities
    count alike."""
    codes = np.asarray(sorted_codes).reshape(-1)
    if codes.size and (np.diff(codes) < 0).any():
        raise ValueError("gallery columns must be in identity order to count identities")
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if codes.size else np.empty(0, np.intp)
    return None if len(starts) == len(codes) else starts


def identities_at_or_above(nonmated, floor, runs=None, order=None) -> np.ndarray:
    """Per row of non-mated scores (mates at -inf), how many identities have an entry >= the row's
    `floor`; `runs` (identity_runs) groups the columns, taken in `order` (None: as they are), by
    identity; None counts each column as one."""
    hit = np.asarray(nonmated) >= np.asarray(floor)[:, None]
    if runs is None:
        return hit.sum(axis=1)
    if order is not None:  # the booleans regrouped, a quarter of the bytes of the scores
        hit = hit[:, order]
    return np.logical_or.reduceat(hit, runs, axis=1).sum(axis=1)


def _check_ids(ids, what: str) -> np.ndarray:
    """Identities (or fold ids) as an array: names (str, or bytes) or numbers, of one kind; a missing one
    (None, NaN) or a mix refused: NaN matched nothing, not even itself, and None stopped the sort with
    a TypeError. A pandas object column or Categorical of names is an object array of str."""
    if not isinstance(ids, np.ndarray):  # a list [1, "a"] became the text array ["1", "a"] (1 and "1" one identity)
        raw = np.asarray(ids, dtype=object).reshape(-1)
        if len({str if isinstance(i, str) else bytes if isinstance(i, bytes) else None for i in raw}) > 1:
            raise ValueError(f"{what} are names or whole numbers, not both and none missing (None), "
                             f"got {sorted({type(i).__name__ for i in raw})}")
    ids = np.asarray(ids).reshape(-1)
    if ids.dtype.kind == "f" and not np.isfinite(ids).all():
        raise ValueError(f"{what} include NaN or infinity: each is a name or a number, none missing")
    if ids.dtype.kind == "O" and not any(all(isinstance(i, kind) for i in ids)
                                         for kind in (str, bytes, (int, np.integer))):
        raise ValueError(f"{what} are names or whole numbers, not both and none missing (None), "
                         f"got {sorted({type(i).__name__ for i in ids})}")
    return ids


def check_flags(flags, name: str) -> np.ndarray:
    """Booleans (or 0/1) as a bool array: NaN or 2 were read as True."""
    flags = np.asarray(flags).reshape(-1)
    if flags.dtype != bool and not np.isin(flags, (0, 1)).all():
        raise ValueError(f"{name} flags are True/False (or 1/0), got "
                         f"{', '.join(sorted(map(repr, set(flags.tolist()) - {0, 1}))[:5])}")
    return flags.astype(bool)


def _id_kind(ids: np.ndarray) -> str:
    if ids.dtype.kind == "U" or (ids.dtype.kind == "O" and all(isinstance(i, str) for i in ids)):
        return "names"
    if ids.dtype.kind == "S" or (ids.dtype.kind == "O" and all(isinstance(i, bytes) for i in ids)):
        return "bytes"  # b"a" matched "a" in one function and nothing in the others
    return "numbers"


def _check_id_pair(probe_ids, gallery_ids) -> tuple[np.ndarray, np.ndarray]:
    """Probe and gallery identities (`_check_ids`), of one kind (names, bytes or numbers): numbers
    against names matched nothing, and the failure read "need both genuine and impostor pairs", or
    every probe as not in the gallery."""
    probe_ids = _check_ids(probe_ids, "probe identities")
    gallery_ids = _check_ids(gallery_ids, "gallery identities")
    if probe_ids.size and gallery_ids.size and _id_kind(probe_ids) != _id_kind(gallery_ids):
        raise ValueError(f"probe identities are {_id_kind(probe_ids)} and gallery identities "
                         f"{_id_kind(gallery_ids)}: none could match; give both of one kind")
    return probe_ids, gallery_ids


def _codes(probe_ids, gallery_ids):
    probe_ids, gallery_ids = _check_id_pair(probe_ids, gallery_ids)
    uniques, inverse = np.unique(np.concatenate([gallery_ids, probe_ids]), return_inverse=True)
    return inverse[len(gallery_ids):], inverse[:len(gallery_ids)]


def _as_float32(values, what: str) -> np.ndarray:
    """`values` in float32, the precision scores are ranked in; finite values beyond its range
    (about 3.4e38) refused as such, not as "NaN or infinity" after the cast."""
    values = np.asarray(values)
    if values.dtype.kind == "f" and values.dtype.itemsize > 4 and np.isfinite(values).all() \
            and values.size and np.abs(values).max() > np.finfo(np.float32).max:
        raise ValueError(f"{what} include values beyond float32's range (|x| > 3.4e38), which are compared in float32")
    return values.astype(np.float32)


def unacquired_rejected(matrix, acquired) -> np.ndarray:
    """A copy of the probe x gallery score `matrix` whose rows of probes without a face (`acquired`
    False; their values are ignored) lie strictly below every real score."""
    m = np.array(matrix, dtype=np.float64)
    acquired = check_flags(acquired, "acquired")
    if m.ndim != 2 or len(acquired) != len(m):
        raise ValueError(f"one acquired flag per row of a (P, G) matrix is needed, got {m.shape} and {acquired.shape}")
    real = m[acquired]
    if not np.isfinite(real).all():
        raise ValueError("scores contain NaN or infinity")
    m[~acquired] = rejected_score(real)
    return m


def mates_per_probe(probe_ids, gallery_ids) -> np.ndarray:
    """Per probe, how many gallery entries are of its identity (`gallery_ids`: each entry's identity)."""
    probe_ids, gallery_ids = _check_id_pair(probe_ids, gallery_ids)
    uniques, counts = np.unique(gallery_ids, return_counts=True)
    per_identity = dict(zip(uniques.tolist(), counts.tolist()))
    return np.array([per_identity.get(i, 0) for i in probe_ids.tolist()], dtype=np.int64)


def rejected_score(scores) -> float:
    """The score given to comparisons a failure to acquire or enrol leaves without one: below every real
    score (`scores`), so they are rejected at every threshold that accepts any real comparison."""
    scores = np.asarray(scores, dtype=np.float64)
    return (float(scores.min()) if scores.size else 0.0) - 1.0


def with_failures_to_enrol(scores, labels, stats: IdentificationStats, empty_mates, empty_entries: int,
                           impostors_per_probe: int | None = None, floor: float | None = None):
    """(scores, labels, stats) of the probes with the gallery entries that failed to enrol added (a
    gallery sample in which no face was found: an entry without a template). `empty_mates`: per probe
    of `stats`, how many of the `empty_entries` are of its identity. Each probe adds one comparison per
    empty entry (genuine with its own, impostor with the others; no impostors when `impostors_per_probe`
    says the impostors are a sample), scored `floor` (default `rejected_score(scores)`); a probe whose
    identity has only empty entries is a mated search that is never identified (ISO/IEC 19795-1, as
    NIST's FRVT counts a failed enrolment)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    empty_mates = np.asarray(empty_mates, dtype=np.int64).reshape(-1)
    if len(empty_mates) != len(stats.mated):
        raise ValueError(f"one count of empty mated entries per probe is needed, got {len(empty_mates)} for "
                         f"{len(stats.mated)} probes")
    if not is_whole(empty_entries) or empty_entries < 0 or (empty_mates < 0).any() or \
            (empty_mates > empty_entries).any():
        raise ValueError(f"empty entries are a whole number at least each probe's empty mates, got {empty_entries!r}")
    if empty_entries == 0:
        return scores, labels, stats
    floor = rejected_score(scores) if floor is None else _check_floor(floor)
    n_gen = int(empty_mates.sum())
    n_imp = 0 if impostors_per_probe is not None else int((empty_entries - empty_mates).sum())
    scores = np.concatenate([scores, np.full(n_gen + n_imp, floor)])
    dtype = labels.dtype if labels.size else np.int8
    labels = np.concatenate([labels, np.ones(n_gen, dtype), np.zeros(n_imp, dtype)])
    unenrolled = (empty_mates > 0) & ~stats.mated  # a mate of its identity enrolled: its rank stands
    stats = replace(stats, mated=stats.mated | unenrolled,
                    mated_score=np.where(unenrolled, -np.inf, stats.mated_score).astype(np.float32),
                    rank=np.where(unenrolled, NEVER_IDENTIFIED, stats.rank))
    return scores, labels, stats


def with_failures_to_acquire(scores, labels, stats: IdentificationStats, failed_ids, gallery_ids,
                             impostors_per_probe: int | None = None, floor: float | None = None):
    """(scores, labels, stats) of the acquired probes with the probes that had no face added, as the
    module doc counts them: each failed probe adds its comparisons (one genuine pair per gallery entry
    of its identity, one impostor pair per other entry, or `impostors_per_probe` of them when the
    impostors are sampled) scored `floor` (default `rejected_score(scores)`), and a probe never
    identified. `gallery_ids` may include entries that failed to enrol (with_failures_to_enrol). Pass
    the floor to `verification_summary(..., floor=)`: a TAR@FAR among these comparisons is no measurement."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    failed_ids, gallery_ids = _check_id_pair(failed_ids, gallery_ids)
    if len(failed_ids) == 0:
        return scores, labels, stats
    floor = rejected_score(scores) if floor is None else _check_floor(floor)
    genuine = mates_per_probe(failed_ids, gallery_ids)
    impostor = len(gallery_ids) - genuine
    if impostors_per_probe is not None:
        impostor = np.minimum(impostor, impostors_per_probe)
    n_gen, n_imp = int(genuine.sum()), int(impostor.sum())
    scores = np.concatenate([scores, np.full(n_gen + n_imp, floor)])
    labels = np.concatenate([labels, np.ones(n_gen, labels.dtype if labels.size else np.int8),
                             np.zeros(n_imp, labels.dtype if labels.size else np.int8)])
    mated = genuine > 0
    stats = IdentificationStats(
        np.concatenate([stats.mated, mated]),
        np.concatenate([stats.mated_score, np.where(mated, -np.inf, np.nan).astype(np.float32)]),
        np.concatenate([stats.rank, np.where(mated, NEVER_IDENTIFIED, 0)]),
        np.concatenate([stats.top_nonmated, np.full(len(failed_ids), -np.inf, np.float32)]),
        stats.nonmated_top, stats.gallery_size, stats.gallery_identities)
    return scores, labels, stats


def identification_stats(probes, gallery, probe_ids, gallery_ids, similarity: str = "cosine",
                         block: int = 256, keep_nonmated: int = 0, acquired=None) -> IdentificationStats:
    """Compare every probe embedding with every gallery embedding, `block` probes at a time.

    `probes` and `gallery` are embeddings (n, d), or `gallery=None` with `probes` a ready (P, G)
    score matrix. `keep_nonmated` keeps that many of the largest non-mated scores of mated probes
    (the seed's FPIR reading). `acquired` (bool per probe; default all) marks probes in which a face
    was found: the others' rows are ignored and they count as never identified (module doc).
    Memory: about 2 x block x gallery scores at a time (and as many booleans, twice where a gallery's
    entries of one identity are not side by side).
    """
    if not is_whole(block) or block < 1:
        raise ValueError(f"block is a whole number of probes, at least 1, got {block!r}")
    if not is_whole(keep_nonmated) or keep_nonmated < 0:
        raise ValueError(f"keep_nonmated is a whole number, at least 0, got {keep_nonmated!r}")
    if acquired is not None:
        acquired = check_flags(acquired, "acquired")
        probe_ids = np.asarray(probe_ids).reshape(-1)
        if len(acquired) != len(probe_ids) or len(probes) != len(probe_ids):
            raise ValueError("one acquired flag, identity and row per probe is needed")
        if not acquired.any():
            raise ValueError("no probe was acquired")
        sub = identification_stats(np.asarray(probes)[acquired], gallery, probe_ids[acquired], gallery_ids,
                                   similarity, block, keep_nonmated)
        mated = np.isin(probe_ids, np.asarray(gallery_ids).reshape(-1))
        mated_score = np.where(mated, -np.inf, np.nan).astype(np.float32)
        rank = np.where(mated, NEVER_IDENTIFIED, 0)
        top_nonmated = np.full(len(probe_ids), -np.inf, np.float32)
        mated_score[acquired], rank[acquired], top_nonmated[acquired] = sub.mated_score, sub.rank, sub.top_nonmated
        return IdentificationStats(mated, mated_score, rank, top_nonmated, sub.nonmated_top, sub.gallery_size,
                                   sub.gallery_identities)
    if gallery is None:
        matrix = _as_float32(probes, "scores")
        if matrix.ndim != 2:
            raise ValueError(f"with gallery=None, probes is a (P, G) score matrix, got shape {matrix.shape}")
        n_probes, n_gallery = matrix.shape

        def scores_of(i0, i1):
            return np.array(matrix[i0:i1], dtype=np.float32)  # a copy: mates are masked in place
    else:
        p, g = _as_float32(probes, "embeddings"), _as_float32(gallery, "embeddings")
        if p.ndim != 2 or g.ndim != 2 or p.shape[1] != g.shape[1]:
            raise ValueError(f"embeddings must be (n, d) with the same d, got {p.shape} and {g.shape}")
        if similarity == "cosine":
            p, g = normalize_rows(p), normalize_rows(g)
        elif similarity != "euclidean":
            raise ValueError(f"similarity must be 'cosine' or 'euclidean', got {similarity!r}")
        n_probes, n_gallery = len(p), len(g)
        g_t = np.ascontiguousarray(g.T)

        def scores_of(i0, i1):
            if similarity == "cosine":
                return p[i0:i1] @ g_t
            return similarity_matrix(p[i0:i1], g, "euclidean")
    if len(probe_ids) != n_probes or len(gallery_ids) != n_gallery:
        raise ValueError("one identity per probe and per gallery entry is needed")
    if n_gallery == 0 or n_probes == 0:
        raise ValueError("need at least one probe and one gallery entry")
    p_codes, g_codes = _codes(probe_ids, gallery_ids)
    # gallery entries of each identity code (CSR), so mates are gathered instead of compared densely
    order = np.argsort(g_codes, kind="stable")
    starts = np.searchsorted(g_codes[order], np.arange(p_codes.max(initial=0) + 2))
    mated = np.isin(p_codes, g_codes)
    runs = identity_runs(g_codes[order])
    # columns regrouped by identity only where an identity has several entries not side by side
    by_identity = None if runs is None or (np.diff(g_codes) >= 0).all() else order
    mated_score = np.full(n_probes, np.nan, np.float32)
    rank = np.zeros(n_probes, np.int64)
    top_nonmated = np.full(n_probes, -np.inf, np.float32)
    kept = np.empty(0, np.float32)
    for i0 in range(0, n_probes, block):
        i1 = min(n_probes, i0 + block)
        s = np.asarray(scores_of(i0, i1), dtype=np.float32)
        if not np.isfinite(s).all():
            raise ValueError("scores contain NaN or infinity")
        rows, cols = [], []
        for r, code in enumerate(p_codes[i0:i1]):
            mates = order[starts[code]:starts[code + 1]]
            rows.append(np.full(len(mates), r))
            cols.append(mates)
        rows = np.concatenate(rows) if rows else np.empty(0, np.intp)
        cols = np.concatenate(cols) if cols else np.empty(0, np.intp)
        best_mate = np.full(i1 - i0, -np.inf, np.float32)
        np.maximum.at(best_mate, rows, s[rows, cols])
        s[rows, cols] = -np.inf  # from here on `s` holds non-mated scores only
        top_nonmated[i0:i1] = s.max(axis=1)
        m = mated[i0:i1]
        mated_score[i0:i1] = np.where(m, best_mate, np.nan)
        rank[i0:i1] = np.where(m, 1 + identities_at_or_above(s, tie_floor(best_mate), runs, by_identity), 0)
        if keep_nonmated:  # the seed's reading pools the non-mated scores of mated probes
            floor = kept.min() if kept.size >= keep_nonmated else -np.inf
            candidates = s[m]
            candidates = candidates[(candidates >= floor) & np.isfinite(candidates)]
            pool = np.concatenate([kept, candidates])
            if pool.size > keep_nonmated:
                pool = np.partition(pool, pool.size - keep_nonmated)[-keep_nonmated:]
            kept = pool
    return IdentificationStats(mated, mated_score, rank, top_nonmated, np.sort(kept)[::-1], n_gallery,
                               len(np.unique(g_codes)))


def cmc(stats: IdentificationStats, ranks=(1, 5, 10)) -> dict[int, float]:
    """Closed-set identification rate at each rank, over mated probes."""
    if not stats.mated.any():
        raise ValueError("no probe has its identity in the gallery: closed-set rates are undefined")
    ranks = _check_ranks(ranks)
    r = stats.rank[stats.mated]
    return {k: float((r <= k).mean()) for k in ranks}


@dataclass(frozen=True)
class TpirAtFpir:
    target_fpir: float
    tpir: float
    fpir: float       # achieved
    threshold: float
    k: int


def tpir_at_fpir(stats: IdentificationStats, fpir: float) -> TpirAtFpir:
    _check_rate("FPIR", fpir)
    nonmated_tops = np.sort(stats.top_nonmated[~stats.mated])[::-1]
    n = nonmated_tops.size
    if n == 0:
        raise ValueError("open-set rates need non-mated probes (identities absent from the gallery)")
    if fpir * n < 1 - 1e-9:  # as tar_at_far: below 1 / n the data cannot measure it
        raise ValueError(f"FPIR {fpir} is below 1 / non-mated probes = {1 / n:.3g}")
    k = int(round(fpir * n))
    if not stats.mated.any():
        raise ValueError("open-set rates need mated probes too")
    t = nonmated_tops[k - 1]
    if not np.isfinite(t):  # past the probes with a face: one without is never falsely identified
        found = int(np.isfinite(nonmated_tops).sum())
        raise ValueError(f"FPIR {fpir} needs the {k}-th highest top score of the {n} non-mated probes, and a "
                         f"face was found in only {found} of them (share {found / n:.3g}): the others are never "
                         "falsely identified")
    hits = (stats.rank[stats.mated] == 1) & (stats.mated_score[stats.mated] >= t)
    return TpirAtFpir(fpir, float(hits.mean()), float((nonmated_tops >= t).mean()), float(t), k)


def tpir_interval(stats: IdentificationStats, fpir: float,
                  confidence: float = INTERVAL_CONFIDENCE) -> tuple[float, float]:
    """The interval of `tpir_at_fpir(stats, fpir)` (`threshold_rate_interval`): the mated searches
    whose mate ranks first, by their mated score, out of every mated search, at the threshold the
    non-mated searches' top scores set."""
    first = stats.mated & (stats.rank == 1)
    return threshold_rate_interval(stats.mated_score[first], int(stats.mated.sum()), stats.top_nonmated[~stats.mated],
                                   fpir, confidence)


def identity_templates(embeddings, ids) -> tuple[np.ndarray, np.ndarray]:
    """(templates, identities): per identity the normalised mean of its L2-normalised embeddings."""
    x = normalize_rows(embeddings)
    _check_finite(x)  # one NaN made its identity's whole template NaN
    ids = _check_ids(ids, "identities")  # 1 and "1" were one identity; None stopped the sort
    if len(ids) != len(x):
        raise ValueError("one identity per embedding is needed")
    uniques, inverse = np.unique(ids, return_inverse=True)
    sums = np.zeros((len(uniques), x.shape[1]), np.float64)
    np.add.at(sums, inverse, x)
    return normalize_rows(sums), uniques


def seed_identification(probes, gallery, probe_ids, gallery_ids, fpirs=(0.01, 0.1),
                        ranks=(1, 5, 10), similarity: str = "cosine") -> dict:
    """The seed's identification readings (see module docstring). Returns rank-k and 'FPIR' rates."""
    ranks = _check_ranks(ranks)
    fpirs = tuple(float(f) for f in check_rates("FPIR", fpirs))
    # float64, as the seed's scripts score: float32 made scores 1e-9 apart a tie, which flipped rank-1
    probes, gallery = np.asarray(probes, dtype=np.float64), np.asarray(gallery, dtype=np.float64)
    probe_ids, gallery_ids = _check_id_pair(probe_ids, gallery_ids)  # a None probe was left out as unknown
    gallery_ids = list(gallery_ids)
    if len(probe_ids) != len(probes) or len(gallery_ids) != len(gallery):
        raise ValueError("one identity per probe and per gallery entry is needed")
    if not (np.isfinite(probes).all() and np.isfinite(gallery).all()):
        raise ValueError("embeddings contain NaN or infinity")
    if len(set(gallery_ids)) < len(gallery_ids):
        # the seed's reading: a second entry of an identity would count against its probes as another's
        raise ValueError("the seed's identification takes one gallery entry per identity; make one per identity "
                         "(recog.metrics.identity_templates, or each identity's first image)")
    first = {g: j for j, g in enumerate(gallery_ids)}
    keep = [i for i, p in enumerate(probe_ids) if p in first]
    if not keep:
        raise ValueError("no probe identity is in the gallery")
    probe_ids = probe_ids[keep]
    mate = np.array([first[p] for p in probe_ids])
    sim = similarity_matrix(probes[keep], gallery, similarity, dtype=np.float64)
    order = np.argsort(-sim, axis=1)
    out = {"probes": len(keep), "rank": {}, "fpir": {}}
    for k in ranks:
        out["rank"][k] = float((order[:, :k] == mate[:, None]).any(axis=1).mean())
    pos = sim[np.arange(len(keep)), mate].copy()
    sim[np.arange(len(keep)), mate] = -np.inf
    neg = np.sort(sim[np.isfinite(sim)])[::-1]
    for f in fpirs:
        k = math.ceil(len(keep) * f)
        if k > neg.size:
            raise ValueError(f"FPIR {f} needs the {k}-th highest non-mated score; there are {neg.size} "
                             "(a gallery of one entry has none)")
        out["fpir"][str(f)] = float((pos > neg[k - 1]).mean())
    return out


def probe_gallery_summary(probes, gallery, probe_ids, gallery_ids, acquired=None, fars=(0.1, 0.01),
                          ranks=(1, 5)) -> dict:
    """Verification and identification of every probe against every gallery entry (cosine), every
    probe counted (`acquired` False: no face; see the module doc): `probes`, `acquired`, AUC,
    `tar@<far>`, `rank<k>` against single gallery images (an identity's best image) and
    `rank<k> template` against mean identity templates. Rates are fractions; `tar@<far>` is None
    where the data cannot measure that FAR (as in verification_summary: below 1 / impostors, or
    among the comparisons of probes without a face)."""
    probes, gallery = normalize_rows(probes), normalize_rows(gallery)
    if probes.shape[1] != gallery.shape[1]:  # (numpy's matmul "core dimension" error)
        raise ValueError(f"embeddings must be (n, d) with the same d, got {probes.shape} and {gallery.shape}")
    probe_ids, gallery_ids = _check_id_pair(probe_ids, gallery_ids)
    if len(probe_ids) != len(probes) or len(gallery_ids) != len(gallery):
        raise ValueError(f"one identity per probe and per gallery entry is needed, got {len(probe_ids)} for "
                         f"{len(probes)} probes and {len(gallery_ids)} for {len(gallery)} gallery entries")
    acquired = np.ones(len(probes), bool) if acquired is None else check_flags(acquired, "acquired")
    matrix = unacquired_rejected(probes @ gallery.T, acquired)
    scores, labels = matrix.ravel(), (probe_ids[:, None] == gallery_ids[None, :]).ravel()
    floor = None if acquired.all() else rejected_score(matrix[acquired])  # the score unacquired_rejected gave
    out = {"probes": len(probes), "acquired": int(acquired.sum()), "auc": auc(roc_curve(scores, labels))}
    for far, tar in verification_summary(scores, labels, fars, floor)["tar_at_far"].items():
        out[f"tar@{float(far):g}"] = None if tar is None else tar["tar"]
    templates, template_ids = identity_templates(gallery, gallery_ids)
    for suffix, g, ids in (("", gallery, gallery_ids), (" template", templates, template_ids)):
        stats = identification_stats(probes, g, probe_ids, ids, acquired=acquired)
        for k, rate in cmc(stats, ranks).items():
            out[f"rank{k}{suffix}"] = rate
    return out

