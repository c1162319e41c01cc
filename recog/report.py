"""Evaluation reports: every figure as JSON, the seed's tables as Markdown, ROC and CMC plots as PNG.

    result = evaluate("sface", scores=s, labels=y, stats=identification_stats(...))
    paths = write_report([result, other], Path("out/report"), title="Masked probes vs unmasked gallery")

Tables follow the seed's layout (`verification.JPG`, `identification.JPG`), in percent: TAR at FAR
0.1 / 0.01 / 0.001 and AUC; TPIR at FPIR 0.01 / 0.1 and rank-1 / rank-5. Cells the data cannot
measure (a FAR below 1 / impostors, FPIR without non-mated probes) read "n/a".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recog import metrics as M

TABLE_FARS = (0.1, 0.01, 0.001)
TABLE_FPIRS = (0.01, 0.1)
CMC_RANKS = (1, 5, 10, 20)
CONFIDENCE = M.INTERVAL_CONFIDENCE  # of the intervals reports give (`ci95`: recog.metrics)


@dataclass
class ProbeOutcomes:
    """Each probe sample of a method's headline identification (every sample counted), for comparing
    methods probe by probe (`paired_comparisons`): its image (a 64-bit hash of its key), its face (the
    face's index; -1 where none was found), whether its identity is in the gallery, and its rank
    (recog.metrics.IdentificationStats; never identified where no face was found)."""

    image: np.ndarray
    face: np.ndarray
    mated: np.ndarray
    rank: np.ndarray


@dataclass
class MethodResult:
    name: str
    verification: dict | None = None
    identification: dict | None = None
    roc: M.Roc | None = None
    cmc_curve: list[tuple[int, float]] = field(default_factory=list)
    # every probe counted: how many had a face, and the figures over those alone (labelled as such)
    acquisition: dict | None = None
    acquired_only: "MethodResult | None" = None
    # how the figures were computed (the distributed reducer: tasks, parts, nodes, devices); not a figure
    scored_by: dict | None = field(default=None, compare=False)
    # what a score (and so every threshold) is: `SCORE_UNITS` of the model's similarity, or of fusion
    score: str | None = None
    # per probe, for paired comparisons with the report's other methods; not a figure, not in report.json
    outcomes: ProbeOutcomes | None = field(default=None, compare=False, repr=False)
    # the score of comparisons a failure left without one (`evaluate`'s floor): not drawn in scores.png
    floor: float | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        out = {"name": self.name, "verification": self.verification, "identification": self.identification,
               "cmc_curve": [[int(r), float(v)] for r, v in self.cmc_curve]}
        if self.score is not None:
            out["score"] = self.score
        if self.acquisition is not None:
            out["acquisition"] = self.acquisition
        if self.acquired_only is not None:
            only = self.acquired_only
            out["acquired_only"] = {"verification": only.verification, "identification": only.identification}
        return out


# Scores are "larger = more alike" (recog.metrics): a Euclidean model's score is minus its distance, so
# its thresholds read as negative distances (dlib's "same person below 0.6" is a threshold of -0.6).
SCORE_UNITS = {"cosine": "cosine similarity",
               "euclidean": "minus the Euclidean distance (a threshold of -0.6 is a distance of 0.6)",
               "fused": "z-score: each model's score z-normalised on its impostor scores, then averaged"}


def acquisition_counts(probes: int, probes_failed: int, gallery: int | None = None,
                       gallery_failed: int | None = None) -> dict:
    """Per side: samples (faces with an embedding plus images in which no face was found), faces
    acquired, and failures to acquire (count and rate)."""
    out = {}
    for side, acquired, failed in (("probe", probes, probes_failed), ("gallery", gallery, gallery_failed)):
        if acquired is None:
            continue
        total = acquired + failed
        out[side] = {"samples": int(total), "acquired": int(acquired), "failed_to_acquire": int(failed),
                     "failure_to_acquire_rate": float(failed / total) if total else 0.0}
    return out


def interval(rate: float | None, n: int) -> list[float] | None:
    """The `CONFIDENCE` Wilson interval of a rate measured over n trials at no threshold of its own, as
    rank-k (None where the rate is)."""
    return None if rate is None or not n else list(M.proportion_interval(int(round(rate * n)), int(n), CONFIDENCE))


def evaluate(name: str, scores=None, labels=None, folds=None, stats: M.IdentificationStats | None = None,
             fars=TABLE_FARS, fpirs=TABLE_FPIRS, ranks=CMC_RANKS, floor: float | None = None) -> MethodResult:
    """All figures for one method: verification from pair scores, identification from stats. `floor`:
    the score of comparisons a failure to acquire or enrol left without one (recog.metrics.tar_at_far):
    a TAR@FAR among them reads None."""
    result = MethodResult(name, floor=floor)
    fpirs = M.check_rates("FPIR", fpirs)  # as FARs are (an FPIR of 0 or 2 read n/a, its reason kept apart)
    if scores is not None:
        v = M.verification_summary(scores, labels, fars, floor)  # each TAR with its interval, tar_ci95
        v["seed_tar_at_far"] = {}
        for f in fars:
            try:
                v["seed_tar_at_far"][str(f)] = M.seed_tar_at_far(scores, labels, f, floor)
            except ValueError:
                v["seed_tar_at_far"][str(f)] = None
        if folds is not None:
            try:
                k = M.kfold_accuracy(scores, labels, folds)
                v["kfold_accuracy"] = {"mean": k.mean, "std": k.std, "folds": list(k.accuracies)}
            except ValueError as exc:  # one fold left, or a fold's others one-sided: n/a, not the whole report
                v["kfold_accuracy"], v["kfold_unmeasured"] = None, str(exc)
        result.verification = v
        result.roc = M.roc_curve(scores, labels)
    if stats is not None:
        ident = {"probes": int(stats.mated.size), "mated_probes": int(stats.mated.sum()),
                 "gallery": int(stats.gallery_size)}
        if stats.gallery_identities is not None:
            ident["gallery_identities"] = int(stats.gallery_identities)
        if stats.mated.any():
            # a rank at or above the gallery's identities counts every mated probe with a face (its rank is at
            # most their number): not a measurement; rank-1 too on a gallery of one identity
            ident["rank"] = {str(k): (v if k < stats.most_rank else None) for k, v in M.cmc(stats, ranks).items()}
            ident["rank_ci95"] = {k: interval(v, ident["mated_probes"]) for k, v in ident["rank"].items()}
            max_rank = int(min(stats.most_rank, 50))
            if max_rank > 1:
                result.cmc_curve = sorted(M.cmc(stats, range(1, max_rank + 1)).items())
        ident["tpir_at_fpir"] = {}
        for f in fpirs:
            try:
                r = M.tpir_at_fpir(stats, f)
                ident["tpir_at_fpir"][str(f)] = {"tpir": r.tpir, "fpir_achieved": r.fpir, "threshold": r.threshold,
                                                 "tpir_ci95": list(M.tpir_interval(stats, f, CONFIDENCE))}
            except ValueError as exc:  # why the cell reads n/a, for report.md (it said so only with none)
                ident["tpir_at_fpir"][str(f)] = None
                ident.setdefault("tpir_unmeasured", {})[str(f)] = str(exc)
        several = stats.gallery_identities is not None and stats.gallery_identities < stats.gallery_size
        if several:  # the seed's scripts count an identity's second entry against its own probes
            ident["seed_fpir_unmeasured"] = (f"its scripts take one gallery entry per identity, and the gallery "
                                             f"has {stats.gallery_size} entries of {stats.gallery_identities}")
        elif stats.nonmated_top.size and stats.mated.any():
            ident["seed_fpir"] = {}
            n = int(stats.mated.sum())
            for f in fpirs:
                k = int(np.ceil(n * f))
                if k <= stats.nonmated_top.size:
                    t = stats.nonmated_top[k - 1]
                    ident["seed_fpir"][str(f)] = float((stats.mated_score[stats.mated] > t).mean())
        result.identification = ident
    return result


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _acquired_only_cells(only) -> list[str]:
    """TAR at FAR 0.1 and 0.01 and AUC of a result's `acquired_only` figures, as table cells."""
    tars = (only.verification or {}).get("tar_at_far", {}) if only else {}
    cells = [_pct((tars.get(str(f)) or {}).get("tar")) for f in (0.1, 0.01)]
    cells.append(_pct((only.verification or {}).get("auc")) if only else "n/a")
    return cells


def unmeasured_lines(figures: list[tuple[str, dict]], key: str, label: str) -> list[str]:
    """Why each n/a cell of a table reads so, once per reason (naming the methods where not all share it):
    `figures` are (method name, its verification or identification dict), `key` where the reasons are."""
    said = {}
    for name, found in figures:
        for f, why in (found.get(key) or {}).items():
            said.setdefault((f, why), []).append(name)
    return [f"{label}={f} reads n/a" + (f" ({', '.join(names)})" if 1 < len(figures) > len(names) else "")
            + f": {why}." for (f, why), names in said.items()]


ACHIEVED_OFF = 0.01
"""How far (relative) the FAR or FPIR a threshold achieves may be from its column's before report.md says it."""


def achieved_lines(figures: list[tuple[str, dict]], key: str, table: str, label: str, setters: str) -> list[str]:
    """The cells measured at a FAR (FPIR) more than `ACHIEVED_OFF` from their column's, with the one the
    threshold achieved (report.json's `far_achieved` / `fpir_achieved`): the threshold is the k-th
    highest of the scores that set it, k = round(f x n), so few of them, or scores tied there, move it
    ("TPIR@FPIR=0.1" over 19 non-mated searches is measured at 2 of 19). `figures`: (method name, its
    verification or identification dict); `key`: "tar_at_far" or "tpir_at_fpir"; `table`: "TAR@FAR";
    `label`: "FAR"; `setters`: what sets the threshold, "impostor scores"."""
    said: dict = {}
    for name, found in figures:
        for f, v in (found.get(key) or {}).items():
            got = (v or {}).get(label.lower() + "_achieved")
            if got is not None and abs(got - float(f)) > ACHIEVED_OFF * float(f):
                said.setdefault(f"{label}={f} at {got:.3g}", []).append(name)
    if not said:
        return []
    cells = "; ".join(cell + (f" ({', '.join(names)})" if len(names) < len(figures) else "")
                      for cell, names in said.items())
    return [f"{table} was measured at another {label} than its column's where few {setters}, or scores tied at "
            f"the threshold (the k-th highest of them, k = round(f x n)), set it: {cells}."]


def _dig(found, *keys):
    """found[k0][k1]..., None where any level is missing or None."""
    for key in keys:
        found = found.get(key) if isinstance(found, dict) else None
    return found


def interval_table(results: list[MethodResult]) -> list[str]:
    """report.md's 95 % intervals of the tables' rates (`ci95` in report.json), where any is measured."""
    columns = []
    if any(r.verification for r in results):
        columns += [(f"TAR(%)@FAR={f}", "verification", ("tar_at_far", str(f), "tar_ci95")) for f in TABLE_FARS]
    if any(r.identification for r in results):
        columns += [(f"TPIR(%)@FPIR={f}", "identification", ("tpir_at_fpir", str(f), "tpir_ci95")) for f in TABLE_FPIRS]
        columns += [(f"Rank-{k} (%)", "identification", ("rank_ci95", str(k))) for k in CMC_RANKS[:2]]
    found = [[_dig(getattr(r, section), *keys) for _, section, keys in columns] for r in results]
    if not any(ci is not None for cells in found for ci in cells):
        return []
    def shown(ci) -> str:
        return "n/a" if ci is None else f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}"

    rows = [f"| {r.name} | " + " | ".join(shown(ci) for ci in cells) + " |" for r, cells in zip(results, found)]
    return (["## 95 % intervals", "", "| Model | " + " | ".join(title for title, _, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)] + rows
            + ["", "Each comparison and search taken as independent (those that share a person are not, quite): "
                   "rank-k, Wilson score intervals out of the mated searches; TAR@FAR and TPIR@FPIR, a bootstrap of "
                   "both the trials and the impostor comparisons or non-mated searches that set the threshold "
                   "(recog.metrics.threshold_rate_interval), so a threshold set by few of them gives a wide "
                   "interval.", ""])


PAIRED_RANK = 1  # the rank whose hits paired comparisons count


def pair_probes(first: ProbeOutcomes, second: ProbeOutcomes) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the probes two methods share, in each: by image where each image is one probe in
    both (a face one method found and the other did not is still one sample of both), else faces by
    image and face, and an image in which one method found no face with each of the other's probes of
    that image (its miss of every one of them; paired by face alone, such a probe dropped out of the
    comparison wherever one image of the dataset held two faces)."""
    import pandas as pd

    frames = [pd.DataFrame({"image": o.image, "face": o.face, "at": np.arange(len(o.image))}) for o in (first, second)]
    if all(f.image.is_unique for f in frames):
        joined = [frames[0].merge(frames[1], on="image", suffixes=("_1", "_2"))]
    else:
        faces, none = ([f[(f.face >= 0) == found] for f in frames] for found in (True, False))
        joined = [faces[0].merge(faces[1], on=["image", "face"], suffixes=("_1", "_2")),
                  none[0].merge(frames[1], on="image", suffixes=("_1", "_2")),  # no face in the first
                  faces[0].merge(none[1], on="image", suffixes=("_1", "_2"))]  # in the second only
    return (np.concatenate([j["at_1"].to_numpy() for j in joined]),
            np.concatenate([j["at_2"].to_numpy() for j in joined]))


def paired_comparisons(results: list[MethodResult], rank: int = PAIRED_RANK) -> list[dict]:
    """Every two methods with per-probe outcomes, on the mated probes both have: how many each identifies
    within `rank` alone, McNemar's exact p (recog.metrics.mcnemar_test) and, as `p_holm`, that p adjusted
    for every comparison of the list (recog.metrics.holm_adjust)."""
    import itertools

    out = []
    for a, b in itertools.combinations([r for r in results if r.outcomes is not None], 2):
        at_a, at_b = pair_probes(a.outcomes, b.outcomes)
        mated = a.outcomes.mated[at_a] & b.outcomes.mated[at_b]
        if not mated.any():
            continue
        hits = [(o.rank[at][mated] >= 1) & (o.rank[at][mated] <= rank) for o, at in ((a.outcomes, at_a),
                                                                                      (b.outcomes, at_b))]
        t = M.mcnemar_test(*hits)
        out.append({"methods": [a.name, b.name], "rank": rank, "probes": t.trials,
                    "rates": [(t.both + t.first_only) / t.trials, (t.both + t.second_only) / t.trials],
                    "both": t.both, "first_only": t.first_only, "second_only": t.second_only, "neither": t.neither,
                    "p_value": t.p_value,
                    "unpaired": sum(int(np.delete(o.mated, at).sum()) for o, at in ((a.outcomes, at_a),
                                                                                   (b.outcomes, at_b)))})
    for c, adjusted in zip(out, M.holm_adjust([c["p_value"] for c in out])):
        c["p_holm"] = float(adjusted)
    return out


def _holm(c: dict) -> str:
    """A comparison's Holm-adjusted p as shown; n/a in a report.json written before reports had it."""
    return "n/a" if c.get("p_holm") is None else f"{c['p_holm']:.3g}"


def paired_table(paired: list[dict]) -> list[str]:
    """report.md's "Paired comparisons" (`paired_comparisons`)."""
    if not paired:
        return []
    k = paired[0]["rank"]
    lines = [f"## Paired comparisons (rank-{k})", "",
             f"| Methods | mated probes of both | rank-{k} over them (%) | identified by the first only | "
             f"by the second only | p (McNemar, exact) | p, Holm ({len(paired)} comparison"
             f"{'s' if len(paired) > 1 else ''}) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for c in paired:
        first, second = c["methods"]
        lines.append(f"| {first} vs {second} | {c['probes']} | {_pct(c['rates'][0])} vs {_pct(c['rates'][1])} | "
                     f"{c['first_only']} | {c['second_only']} | {c['p_value']:.3g} | {_holm(c)} |")
    unpaired = [c for c in paired if c["unpaired"]]
    lines += ["", "The same probes searched by two methods: the ones that tell them apart are those one identifies "
              f"at rank {k} and the other does not. p: the chance of a split at least this uneven between them "
              "were the methods equally good (McNemar's exact test, each probe taken as independent; one p per "
              "row). With many rows some small p is likely by chance alone: p, Holm is each row's p adjusted "
              "for all the rows (Holm's step-down method), so that calling every row with p, Holm below 0.05 a "
              "real difference errs somewhere with chance at most 0.05. Probes are paired by image (by image and face where an "
              "image holds several; an image in which a method found no face is its miss of each face the other "
              "found there)" + (": " + "; ".join(f"{c['methods'][0]} vs {c['methods'][1]}, {c['unpaired']} "
                                                       "mated probe(s) not in both" for c in unpaired)
                                        if unpaired else "") + ".", ""]
    return lines


SUMMARY_PAIRS = 6  # paired comparisons a terminal summary shows (12 methods make 66 of them)


def summary_lines(results: list[MethodResult], paired: list[dict] | None = None) -> list[str]:
    """A report's headline figures in a few lines, for a terminal: per method TAR at FAR 0.01, AUC and
    rank-1 (those it has), then the paired comparisons (`paired_comparisons` unless given), the
    `SUMMARY_PAIRS` with the smallest p where there are more."""
    shown = [r for r in results if r.verification or r.identification]
    if not shown:
        return []
    width = max(len(r.name) for r in shown)
    lines = ["figures (report.md has their 95 % intervals and the rest):"]
    for r in shown:
        cells = []
        if r.verification:
            tar = (r.verification["tar_at_far"].get("0.01") or {}).get("tar")
            cells += [f"TAR@FAR=0.01 {_pct(tar):>5} %", f"AUC {_pct(r.verification['auc']):>5} %"]
        if r.identification:
            cells.append(f"rank-1 {_pct((r.identification.get('rank') or {}).get('1')):>5} %")
        lines.append(f"  {r.name:<{width}}  " + "   ".join(cells))
    # why a TAR reads n/a (too few impostors for FAR 0.01, say): said here too, not in report.md alone
    at_001 = [(r.name, {"tar_unmeasured": {"0.01": why} if (why := (r.verification.get("tar_unmeasured") or {})
                                                                  .get("0.01")) else {}})
              for r in shown if r.verification]
    lines += [f"  {line}" for line in unmeasured_lines(at_001, "tar_unmeasured", "TAR@FAR")]
    paired = paired_comparisons(results) if paired is None else paired
    for c in sorted(paired, key=lambda c: c["p_value"])[:SUMMARY_PAIRS] if len(paired) > SUMMARY_PAIRS else paired:
        first, second = c["methods"]
        lines.append(f"  {first} vs {second} (rank-1 {_pct(c['rates'][0])} % vs {_pct(c['rates'][1])} %, "
                     f"{c['probes']} probes): {c['first_only']} vs {c['second_only']} identified by one alone, "
                     f"p {c['p_value']:.3g}" + (f" (Holm {_holm(c)})" if len(paired) > 1 else ""))
    if len(paired) > SUMMARY_PAIRS:
        lines.append(f"  ... the {len(paired) - SUMMARY_PAIRS} other paired comparisons (larger p) are in report.md")
    return lines


def score_table(results: list[MethodResult]) -> list[str]:
    """report.md's "Score distributions": per method, the genuine and impostor scores' mean and spread,
    d' and the EER (recog.metrics.score_moments), over the comparisons with a score."""
    ver = [r for r in results if r.verification and r.verification.get("scores")]
    if not ver:
        return []

    def side(d) -> str:
        return "n/a" if d["mean"] is None else f"{d['mean']:.3f} ({d['std']:.3f})"

    lines = ["## Score distributions", "", "| Model | genuine: mean (sd) | impostor: mean (sd) | d' | EER (%) |",
             "|---|---:|---:|---:|---:|"]
    for r in ver:
        m = r.verification["scores"]
        d = "n/a" if m["d_prime"] is None else f"{m['d_prime']:.2f}"
        lines.append(f"| {r.name} | {side(m['genuine'])} | {side(m['impostor'])} | {d} | "
                     f"{_pct(r.verification['eer'])} |")
    lines += ["", "Means and spreads over the comparisons with a score (a sample without a face has none); sd: the "
              "population standard deviation; d' = |genuine mean - impostor mean| / sqrt((sd_genuine^2 + "
              "sd_impostor^2) / 2), how many spreads apart the two lie (a mask that lowers the genuine scores lowers "
              "it; n/a where neither side has a spread). The EER counts every sample, as the verification table "
              "does. scores.png draws the scores, with the thresholds of the verification table's FARs.", ""]
    return lines


def seed_readings_table(results: list[MethodResult]) -> list[str]:
    """The seed's own readings, to set beside its published tables (they were in report.json only,
    and the seed's "FPIR" columns have no counterpart above when every probe is in the gallery):
    TAR at the ROC point whose FAR is nearest f, and its closed-set "FPIR" reading."""
    rows, reasons = [], []
    for r in results:
        tars = (r.verification or {}).get("seed_tar_at_far") or {}
        fpirs = (r.identification or {}).get("seed_fpir") or {}
        why = (r.identification or {}).get("seed_fpir_unmeasured")
        if why:
            reasons.append(f"{r.name}: {why}")
        if tars or fpirs or why:
            cells = [_pct(tars.get(str(f))) for f in TABLE_FARS] + [_pct(fpirs.get(str(f))) for f in TABLE_FPIRS]
            rows.append(f"| {r.name} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    why_na = [f"The seed's \"FPIR\" reads n/a for {'; '.join(dict.fromkeys(reasons))}.", ""] if reasons else []
    return ["## The seed's readings", "",
            "| Model | TAR(%)@FAR=0.1 | TAR(%)@FAR=0.01 | TAR(%)@FAR=0.001 | \"FPIR\"=0.01 (%) | \"FPIR\"=0.1 (%) |",
            "|---|---:|---:|---:|---:|---:|", *rows, "",
            "As the seed's scripts read them, to compare with its published tables: TAR at the ROC point whose "
            "FAR is nearest f (scikit-learn's `roc_curve`); \"FPIR\" f: the share of mated probes whose mated "
            "score is above the k-th highest non-mated score of all their comparisons, k = ceil(f x mated "
            "probes), a closed-set reading (TPIR@FPIR above needs probes not in the gallery).", "", *why_na]


def _searches(probes: int, mated: int, unenrolled: int) -> str:
    """The identification table's probes, with the count each rate is out of: rank-k and TPIR the mated
    searches (those of an identity that failed to enrol among them), FPIR the non-mated ones."""
    held = f"{mated - unenrolled or 'none'} with their identity in the gallery"
    if unenrolled:
        held += f", {unenrolled} of an identity that failed to enrol: {mated} mated searches"
    if probes == mated:
        return f"{probes} probes ({held}" + (", which rank-k counts)" if unenrolled else ")")
    counted = ", which rank-k and TPIR count" if mated else ""
    return f"{probes} probes ({held}{counted}; {probes - mated} non-mated, which FPIR counts)"


def markdown_tables(results: list[MethodResult], title: str = "", notes=(), protocol: str | None = None,
                    paired: list[dict] | None = None) -> str:
    lines = [f"# {title}", ""] if title else []
    lines += [f"Protocol: {protocol}.", ""] if protocol else []
    lines += [line for note in notes for line in (f"> **Note:** {note}", "")]  # under the title, where it is read
    ver = [r for r in results if r.verification]
    if ver:
        lines += ["## Verification", "",
                  "| Model | TAR(%)@FAR=0.1 | TAR(%)@FAR=0.01 | TAR(%)@FAR=0.001 | AUC (%) |",
                  "|---|---:|---:|---:|---:|"]
        for r in ver:
            tars = r.verification["tar_at_far"]
            cells = [_pct((tars.get(str(f)) or {}).get("tar")) for f in TABLE_FARS]
            lines.append(f"| {r.name} | " + " | ".join(cells) + f" | {_pct(r.verification['auc'])} |")
        lines.append("")
        v0 = ver[0].verification
        counts = [(r.name, r.verification["genuine"], r.verification["impostor"]) for r in ver]
        pairs = (f"{v0['genuine']} genuine and {v0['impostor']} impostor pairs" if len({c[1:] for c in counts}) == 1
                 else "; ".join(f"{n}: {g} genuine and {i} impostor pairs" for n, g, i in counts))
        lines.append(f"{pairs}. TAR at FAR f: threshold = the k-th highest impostor score, k = round(f x impostors), "
                     "accept score >= threshold.")
        lines += achieved_lines([(r.name, r.verification) for r in ver], "tar_at_far", "TAR@FAR", "FAR",
                                "impostor scores")
        if v0.get("impostors_sampled_per_probe"):
            lines.append(f"Impostor pairs are a seeded sample of {v0['impostors_sampled_per_probe']} per probe: all "
                         "probe x gallery comparisons are more than the reducer's max_pairs (`mfr score --max-pairs`, "
                         "2,000,000 by default); "
                         "every genuine pair is kept.")
        lines += unmeasured_lines([(r.name, r.verification) for r in ver], "tar_unmeasured", "TAR@FAR")
        if v0.get("pairs_skipped"):
            lines.append(f"{v0['pairs_skipped']} pair(s) of the protocol were left out: an image they name is not "
                         "in the dataset (`--missing skip`).")
        lines.append("")
        folded = [r for r in ver if r.verification.get("kfold_accuracy")]
        if folded:  # LFW's own headline figure, for a pairs file with folds
            lines += ["| Model | k-fold accuracy (%) | folds |", "|---|---:|---:|"]
            for r in folded:
                k = r.verification["kfold_accuracy"]
                lines.append(f"| {r.name} | {_pct(k['mean'])} ± {_pct(k['std'])} | {len(k['folds'])} |")
            lines += ["", "k-fold accuracy: each fold scored at the best-accuracy threshold of the other folds "
                      "(midway to their next lower score); mean ± standard deviation over the folds.", ""]
        unfolded = [f"k-fold accuracy of {r.name}: n/a ({r.verification['kfold_unmeasured']})." for r in ver
                    if r.verification.get("kfold_unmeasured")]
        lines += unfolded + [""] * bool(unfolded)
    ident = [r for r in results if r.identification]
    none_mated = not any(r.identification["mated_probes"] for r in ident)
    if not ver and ident:  # the section stays, saying why it is empty (it vanished without a word)
        if none_mated:
            why = ("n/a: the comparisons are all impostor (no probe's identity is in the gallery), and ROC, "
                   "TAR@FAR and AUC need genuine ones too.")
        else:
            why = ("n/a: the comparisons are all genuine or all impostor (a gallery of one identity has no impostor "
                   "pair), and ROC, TAR@FAR and AUC need both. With one identity, identification is trivial too: "
                   "every probe is ranked first.")
        lines += ["## Verification", "", why, ""]
    if ident:
        lines += ["## Identification", "",
                  "| Model | TPIR(%)@FPIR=0.01 | TPIR(%)@FPIR=0.1 | Rank-1 (%) | Rank-5 (%) |",
                  "|---|---:|---:|---:|---:|"]
        for r in ident:
            i = r.identification
            tp = i.get("tpir_at_fpir", {})
            cells = [_pct((tp.get(str(f)) or {}).get("tpir")) for f in TABLE_FPIRS]
            ranks = i.get("rank", {})
            cells += [_pct(ranks.get("1")), _pct(ranks.get("5"))]
            lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
        lines.append("")
        facts = [(r.name, r.identification["probes"], r.identification["mated_probes"], r.identification["gallery"],
                  r.identification.get("gallery_identities"), r.identification.get("unenrolled_probes", 0),
                  _dig(r.acquisition, "gallery", "failed_to_acquire") or 0) for r in ident]
        # ranks count identities: say how many there are where entries are more; an identity that failed to
        # enrol has no entry, so its probes (mated searches, never identified) are not "in the gallery". The
        # denominators are said: rank-k and TPIR count the mated searches, FPIR the others
        described = [_searches(*f[1:3], f[5]) + f", {f[3]} gallery entries"
                     + (f" of {f[4]} identities" if f[4] is not None and f[4] != f[3] else "")
                     + (f"; {f[6]} gallery image{'s' if f[6] > 1 else ''} had no face (Every sample counted, below, "
                        "says how they count)" if f[6] else "") for f in facts]
        # methods whose counts differ: one line each (their descriptions hold semicolons of their own)
        lines += [f"{described[0]}."] if len(set(described)) == 1 else \
            [f"- {f[0]}: {d}." for f, d in zip(facts, described)] + [""]
        identities = {r.identification.get("gallery_identities", r.identification["gallery"]) for r in ident}
        capped = [k for k in CMC_RANKS[:2] if any(k >= n for n in identities)]
        if none_mated:
            lines.append("Rank-k reads n/a: no probe's identity is in the gallery, so none can be ranked.")
        elif capped:  # the n/a cells say why
            n = min(identities)
            lines.append(f"Rank-k reads n/a for k at or above the gallery's {n} identit{'y' if n == 1 else 'ies'}: "
                         "every mated probe ranks within them, so it measures nothing.")
        if all(r.identification["probes"] == r.identification["mated_probes"] for r in ident):
            unenrolled = any(r.identification.get("unenrolled_probes", 0) for r in ident)
            lines.append("TPIR@FPIR reads n/a: it needs probes whose identity is not in the gallery (open-set "
                         "searches), and every probe here has its identity in the gallery"
                         + (" or is of an identity that failed to enrol (a mated search)." if unenrolled else "."))
        else:  # some open-set searches, too few (or too few with a face) for a rate: each n/a cell says why
            lines += unmeasured_lines([(r.name, r.identification) for r in ident], "tpir_unmeasured", "TPIR@FPIR")
            lines += achieved_lines([(r.name, r.identification) for r in ident], "tpir_at_fpir", "TPIR@FPIR", "FPIR",
                                    "non-mated searches")
        absent = (ident[0].acquisition or {}).get("not_in_dataset")
        if absent:  # said for pairs (pairs_skipped); the lists' count was in report.json only
            lines.append(f"{absent} image(s) the lists name were left out: they are not in the dataset "
                         "(`--missing skip`).")
        lines.append("")
    lines += interval_table(results)
    lines += paired_table(paired_comparisons(results) if paired is None else paired)
    lines += score_table(results)
    lines += seed_readings_table(results)
    if any(r.score not in (None, SCORE_UNITS["cosine"]) for r in results):
        lines += ["Scores (and thresholds in report.json): " + "; ".join(f"{r.name}: {r.score}" for r in results
                                                                        if r.score) + ".", ""]
    counted = [r for r in results if r.acquisition and "probe" in r.acquisition]
    if counted:
        lines += ["## Every sample counted", "",
                  "A probe in which no face was found (a failure to acquire) counts in the verification and "
                  "identification tables: its comparisons are rejected and it is never identified. So does a "
                  "gallery entry without a face (a failure to enrol): its comparisons are rejected, and the "
                  "probes of an identity with no other entry are never identified. Beside them, the same figures "
                  "over the samples that had a face only (there, an identity none of whose gallery entries had a "
                  "face is not in the gallery, so its probes are searches for someone absent from it: report.json's "
                  "acquired_only counts them as non-mated searches). A sample is a face, or an image in which "
                  "none was found: an image whose every face is embedded (`--face all`) is a sample per face:", "",
                  "| Model | probe samples | acquired | failed to acquire (%) | gallery samples without a face | "
                  "acquired only: TAR(%)@FAR=0.1 | TAR(%)@FAR=0.01 | AUC (%) | Rank-1 (%) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in counted:
            p, g = r.acquisition["probe"], r.acquisition.get("gallery")
            only = r.acquired_only
            cells = _acquired_only_cells(only)
            cells.append(_pct(((only.identification or {}).get("rank") or {}).get("1"))
                         if only and only.identification else "n/a")
            lines.append(f"| {r.name} | {p['samples']} | {p['acquired']} | {p['failed_to_acquire']} "
                         f"({_pct(p['failure_to_acquire_rate'])}) | "
                         f"{g['failed_to_acquire'] if g else 'n/a'} of {g['samples'] if g else 'n/a'} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    paired = [r for r in results if r.acquisition and "pairs" in r.acquisition]
    if paired:  # a pairs protocol: images and pairs, no probes or gallery
        lines += ["## Every pair counted", "",
                  "A pair with an image in which no face was found is rejected in the verification table. Beside "
                  "it, the same figures over the pairs with a face on both sides:", "",
                  "| Model | images | without a face (%) | pairs | with a face on both sides | "
                  "acquired only: TAR(%)@FAR=0.1 | TAR(%)@FAR=0.01 | AUC (%) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in paired:
            images, pairs = r.acquisition["images"], r.acquisition["pairs"]
            lines.append(f"| {r.name} | {images['samples']} | {images['failed_to_acquire']} "
                         f"({_pct(images['failure_to_acquire_rate'])}) | {pairs['pairs']} | "
                         f"{pairs['with_a_face_on_both_sides']} | " + " | ".join(_acquired_only_cells(r.acquired_only))
                         + " |")
        lines.append("")
    return "\n".join(lines)


def roc_far_floor(results: list[MethodResult]) -> float:
    """The FAR axis' left end: the decade of the smallest FAR a curve measures (millions of impostors
    measure 10^-6, where an axis fixed at 10^-4 cut their curves off; 19 impostors measure 0.053 at
    the least, and an axis from 10^-4 left three quarters of the plot empty), at most 10^-1; 10^-4
    with no curve."""
    fars = [r.roc.far[r.roc.far > 0].min() for r in results if r.roc is not None and (r.roc.far > 0).any()]
    # at most 10^-1: one impostor measures FAR 1 alone, and an axis from 1 to 1 is no axis
    return float(min([0.1] + [10.0 ** np.floor(np.log10(f)) for f in fars])) if fars else 1e-4


def set_title(ax, title: str, width: int = 64) -> None:
    """A plot's title, wrapped to lines of at most `width` characters (about the 6-inch figure's width at
    its font size): `mfr evaluate`'s titles ran off both sides of the figure."""
    import textwrap

    lines = textwrap.wrap(title, width) or [""]
    # as written: matplotlib reads text between two `$` as math, and a masked rule's `...$|...$`
    # failed the report after every image was embedded
    ax.set_title("\n".join(lines), fontsize=10 if len(lines) > 1 else None, parse_math=False)


def add_legend(ax) -> None:
    """The methods' names, as written (`set_title`)."""
    for text in ax.legend(loc="lower right", fontsize=8).get_texts():
        text.set_parse_math(False)


def plot_roc(results: list[MethodResult], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    for r in results:
        if r.roc is None:
            continue
        far, tar = r.roc.far, r.roc.tar
        keep = far > 0
        ax.plot(far[keep], tar[keep], lw=1.4, label=f"{r.name} (AUC {100 * r.verification['auc']:.1f}%)")
    ax.set_xscale("log")
    ax.set_xlim(roc_far_floor(results), 1.0)
    ax.set_ylim(0, 1.02)  # a curve at TAR 1.0 lay on the frame, out of sight
    ax.set_xlabel("False accept rate")
    ax.set_ylabel("True accept rate")
    ax.grid(True, which="both", ls="--", lw=0.5)
    add_legend(ax)
    set_title(ax, title or "ROC")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_cmc(results: list[MethodResult], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    for r in results:
        if not r.cmc_curve:
            continue
        ranks, rates = zip(*r.cmc_curve)
        ax.plot(ranks, rates, marker=".", lw=1.4, label=r.name)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # ranks are whole numbers
    ax.set_xlabel("Rank")
    ax.set_ylabel("Identification rate")
    ax.set_ylim(0, 1.02)
    ax.grid(True, ls="--", lw=0.5)
    add_legend(ax)
    set_title(ax, title or "CMC")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_scores(results: list[MethodResult], path: Path, title: str = "", bins: int = 60) -> None:
    """scores.png: per method a panel of its genuine and impostor score histograms (each side's density,
    the comparisons with a score: `recog.metrics.score_counts`), and the thresholds of the verification
    table's FARs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [r for r in results if r.roc is not None]
    cols = 1 if len(drawn) == 1 else 2
    rows = -(-len(drawn) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 0.6 + 2.6 * rows), dpi=110, squeeze=False)
    for ax in axes.flat[len(drawn):]:
        ax.set_visible(False)
    for ax, r in zip(axes.flat, drawn):
        v = r.verification
        # the failures' comparisons, at a floor below every score, are no scores
        values, genuine, impostor = M.score_counts(r.roc, v["genuine"], v["impostor"], r.floor)
        edges = np.histogram_bin_edges(values, bins=bins)
        for counts, label, colour in ((impostor, "impostor", "tab:red"), (genuine, "genuine", "tab:blue")):
            if counts.sum():
                mass = np.histogram(values, edges, weights=counts)[0]
                ax.stairs(mass / (mass.sum() * np.diff(edges)), edges, fill=True, alpha=0.35, color=colour,
                          label=label)
        for far, style in zip(TABLE_FARS, (":", "--", "-.")):
            cell = v["tar_at_far"].get(str(far))
            if cell and np.isfinite(cell["threshold"]):
                ax.axvline(cell["threshold"], color="0.3", ls=style, lw=1, label=f"FAR {far}")
        unit = (r.score or "").split(" (")[0].split(":")[0]  # SCORE_UNITS' name, without its explanation
        ax.set_xlabel(f"score ({unit})" if unit else "score", fontsize=8)
        ax.set_ylabel("density", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(r.name, fontsize=9, parse_math=False)
        for text in ax.legend(fontsize=7, loc="upper left").get_texts():
            text.set_parse_math(False)
    if title:  # wrapped and as written, as set_title does
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title, 64 * cols)), fontsize=10, parse_math=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def repeated_name(names: list[str]) -> str | None:
    """The first name given more than once, or None."""
    return next((n for n in names if names.count(n) > 1), None)


def write_report(results: list[MethodResult], out_dir: Path, title: str = "Evaluation",
                 extra: dict | None = None, protocol: str | None = None,
                 paired: list[dict] | None = None) -> dict[str, Path]:
    """report.json, report.md, roc.png, scores.png, cmc.png (plots only when there is something to plot).
    `protocol`: one sentence under report.md's title saying how probes and gallery were formed. `paired`:
    the results' `paired_comparisons`, where the caller has them already (for its terminal summary).
    No results, or two of one name (rows and comparisons that cannot be told apart), are refused
    before anything is written."""
    results = list(results)
    if not results:
        raise ValueError("a report needs at least one method's results (MethodResult), got none")
    repeated = repeated_name([r.name for r in results])
    if repeated is not None:
        raise ValueError(f"two results are named {repeated!r}: each method of a report has a name of its own")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md"}
    paired = paired_comparisons(results) if paired is None else paired
    from recog.versions import software_versions

    body = {"title": title, "results": [r.to_dict() for r in results], **({"paired": paired} if paired else {}),
            **(extra or {}), "software": software_versions()}
    # strict JSON (RFC 8259 has no Infinity or NaN, which many readers refuse): a threshold that
    # accepts nothing (+inf) or everything (-inf), or a figure the data cannot give, is null
    paths["json"].write_text(json.dumps(_finite(body), indent=1, default=_json_default, allow_nan=False) + "\n")
    md = markdown_tables(results, title, (extra or {}).get("notes", ()), protocol, paired)
    if any(r.roc is not None for r in results):
        paths["roc"] = out_dir / "roc.png"
        plot_roc(results, paths["roc"], title)
        md += "\n![ROC](roc.png)\n"
        paths["scores"] = out_dir / "scores.png"
        plot_scores(results, paths["scores"], title)
        md += "\n![Score distributions](scores.png)\n"
    if any(r.cmc_curve for r in results):
        paths["cmc"] = out_dir / "cmc.png"
        plot_cmc(results, paths["cmc"], title)
        md += "\n![CMC](cmc.png)\n"
    paths["markdown"].write_text(md)
    return paths


def _finite(value):
    """`value` with every non-finite float (Python or NumPy) inside dicts, lists and tuples made None."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    return value


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
