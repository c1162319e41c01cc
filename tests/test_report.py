"""Reports: JSON with every figure, the seed's table layout, ROC and CMC plots."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from recog import metrics as M
from recog.report import evaluate, markdown_tables, write_report


def _case(seed):
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.normal(1, 1, 300), rng.normal(-1, 1, 3000)]
    labels = np.r_[np.ones(300, int), np.zeros(3000, int)]
    gallery = rng.normal(size=(40, 8))
    probe_ids = [f"g{i % 40}" for i in range(200)] + [f"x{i}" for i in range(50)]
    probes = np.r_[gallery[np.arange(200) % 40] + rng.normal(0, 0.8, (200, 8)), rng.normal(size=(50, 8))]
    stats = M.identification_stats(probes, gallery, probe_ids, [f"g{i}" for i in range(40)], keep_nonmated=20)
    return scores, labels, stats


def test_report_files_and_seed_layout(tmp_path):
    results = [evaluate(f"model {k}", *(_case(k)[:2]), stats=_case(k)[2]) for k in (1, 2)]
    paths = write_report(results, tmp_path, title="Masked probes vs unmasked gallery")
    body = json.loads(paths["json"].read_text())
    v = body["results"][0]["verification"]
    scores, labels, stats = _case(1)
    assert v["auc"] == M.auc(M.roc_curve(scores, labels))
    assert v["tar_at_far"]["0.01"]["tar"] == M.tar_at_far(scores, labels, 0.01).tar
    assert v["seed_tar_at_far"]["0.1"] == M.seed_tar_at_far(scores, labels, 0.1)
    ident = body["results"][0]["identification"]
    assert ident["rank"]["1"] == M.cmc(stats, (1,))[1]
    assert ident["tpir_at_fpir"]["0.1"]["tpir"] == M.tpir_at_fpir(stats, 0.1).tpir
    md = paths["markdown"].read_text()
    assert "| Model | TAR(%)@FAR=0.1 | TAR(%)@FAR=0.01 | TAR(%)@FAR=0.001 | AUC (%) |" in md
    assert "| Model | TPIR(%)@FPIR=0.01 | TPIR(%)@FPIR=0.1 | Rank-1 (%) | Rank-5 (%) |" in md
    row = next(line for line in md.splitlines() if line.startswith("| model 1 |") and "TAR" not in line)
    assert f"{100 * v['tar_at_far']['0.1']['tar']:.1f}" in row and f"{100 * v['auc']:.1f}" in row
    for key in ("roc", "scores", "cmc"):
        picture = cv2.imread(str(paths[key]))
        assert picture is not None and picture.shape[0] > 300 and picture.std() > 10
    # the score distributions: genuine N(1, 1) against impostor N(-1, 1), d' near 2
    m = v["scores"]
    assert m == M.score_moments(M.roc_curve(scores, labels), 300, 3000) and 1.8 < m["d_prime"] < 2.2
    assert "![Score distributions](scores.png)" in md
    row = next(line for line in md.split("## Score distributions", 1)[1].splitlines() if line.startswith("| model 1 |"))
    assert row == (f"| model 1 | {m['genuine']['mean']:.3f} ({m['genuine']['std']:.3f}) | {m['impostor']['mean']:.3f} "
                   f"({m['impostor']['std']:.3f}) | {m['d_prime']:.2f} | {100 * v['eer']:.1f} |")
    # 95 % intervals of each rate, out of the genuine comparisons (TAR) or the mated searches (TPIR, rank)
    genuine, mated = int(labels.sum()), int(stats.mated.sum())
    tar = v["tar_at_far"]["0.1"]
    assert tar["tar_ci95"] == list(M.threshold_rate_interval(scores[labels == 1], genuine, scores[labels == 0], 0.1))
    assert tar["tar_ci95"][0] < tar["tar"] < tar["tar_ci95"][1]
    assert ident["rank_ci95"]["1"] == list(M.proportion_interval(round(ident["rank"]["1"] * mated), mated))
    tpir = ident["tpir_at_fpir"]["0.1"]
    assert tpir["tpir_ci95"][0] < tpir["tpir"] < tpir["tpir_ci95"][1]
    first = stats.mated & (stats.rank == 1)
    assert tpir["tpir_ci95"] == list(M.threshold_rate_interval(stats.mated_score[first], mated,
                                                               stats.top_nonmated[~stats.mated], 0.1))
    interval_rows = md.split("## 95 % intervals", 1)[1].split("## ", 1)[0].splitlines()
    assert interval_rows[2] == ("| Model | TAR(%)@FAR=0.1 | TAR(%)@FAR=0.01 | TAR(%)@FAR=0.001 | TPIR(%)@FPIR=0.01 | "
                                "TPIR(%)@FPIR=0.1 | Rank-1 (%) | Rank-5 (%) |")
    row = next(line for line in interval_rows if line.startswith("| model 1 |")).split(" | ")
    low, high = tar["tar_ci95"]
    assert row[1] == f"{100 * low:.1f}–{100 * high:.1f}"
    # the seed's readings, to set beside its published tables (they were in report.json only)
    seed_rows = md.split("## The seed's readings", 1)[1].splitlines()
    assert '| Model | TAR(%)@FAR=0.1 | TAR(%)@FAR=0.01 | TAR(%)@FAR=0.001 | "FPIR"=0.01 (%) | "FPIR"=0.1 (%) |' in seed_rows
    row = next(line for line in seed_rows if line.startswith("| model 1 |")).split(" | ")
    assert row[1] == f"{100 * v['seed_tar_at_far']['0.1']:.1f}"
    assert row[4] == f"{100 * ident['seed_fpir']['0.01']:.1f}" and row[5] == f"{100 * ident['seed_fpir']['0.1']:.1f} |"


def test_report_json_is_strict_json(tmp_path):
    """A model whose genuine pairs all score below its impostors is most accurate rejecting every
    pair: its best-accuracy threshold is +inf, which report.json held as the bare word Infinity,
    refused by strict JSON readers (JavaScript's JSON.parse, Go, jq, ...)."""
    scores = np.r_[np.full(10, -0.5), np.linspace(0.0, 1.0, 40)]
    labels = np.r_[np.ones(10, int), np.zeros(40, int)]
    result = evaluate("upside down", scores, labels)
    assert result.verification["best_accuracy_threshold"] == np.inf
    text = write_report([result], tmp_path)["json"].read_text()
    body = json.loads(text, parse_constant=lambda name: pytest.fail(f"report.json holds {name}"))
    v = body["results"][0]["verification"]
    assert v["best_accuracy_threshold"] is None and v["best_accuracy"] == 0.8
    # the software that made it: two reports of one dataset that differ can be told apart
    from importlib import metadata

    assert body["software"]["mfr"] == metadata.version("mfr") and body["software"]["ray"] == metadata.version("ray")
    assert {"python", "numpy", "onnxruntime", "opencv-python-headless"} <= set(body["software"])
    # from Python: no results wrote an empty report, one result twice two rows of one name
    for results, why in (([], "at least one method's results"), ([result, result], "two results are named "
                                                                                   "'upside down'")):
        with pytest.raises(ValueError, match=why):
            write_report(results, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_unmeasurable_cells_read_na():
    rng = np.random.default_rng(3)
    scores = np.r_[rng.normal(1, 1, 20), rng.normal(-1, 1, 50)]  # 50 impostors: FAR 0.001 unmeasurable
    labels = np.r_[np.ones(20, int), np.zeros(50, int)]
    md = markdown_tables([evaluate("small", scores, labels)])
    row = next(line for line in md.splitlines() if line.startswith("| small |"))
    assert row.split("|")[4].strip() == "n/a"


def test_a_gallery_of_one_identity_keeps_its_verification_section_saying_why_it_is_empty():
    """One identity: no impostor pair, so no verification; the section vanished from report.md."""
    from jobs.score import counted_result

    rng = np.random.default_rng(4)
    gallery, probes = rng.normal(size=(1, 8)), rng.normal(size=(3, 8))
    stats = M.identification_stats(probes, gallery, ["a"] * 3, ["a"])
    result = counted_result("one", np.array([0.3, 0.5, 0.7]), np.ones(3, bool), stats, ["a"])
    assert result.verification is None and result.identification["rank"]["1"] is None
    md = markdown_tables([result])
    assert "## Verification\n\nn/a: the comparisons are all genuine or all impostor (a gallery of one identity " \
           "has no impostor pair)" in md
    assert "every probe is ranked first" in md and "## Identification" in md
    # ranks at or above the gallery's identities are not figures: n/a, not a trivial 100 %; rank-1 too here
    assert result.identification["rank"] == {"1": None, "5": None, "10": None, "20": None}
    row = next(line for line in md.splitlines() if line.startswith("| one |") and "n/a" in line)
    assert row.split("|")[-2].strip() == row.split("|")[-3].strip() == "n/a"  # Rank-5, Rank-1
    assert "Rank-k reads n/a for k at or above the gallery's 1 identity" in md
    assert "TPIR@FPIR reads n/a: it needs probes whose identity is not in the gallery" in md
    # with searches for people absent from it too: verification has impostors, rank-1 is still trivial (it read
    # 100 % without a word)
    stats = M.identification_stats(probes, gallery, ["a", "b", "b"], ["a"])
    result = counted_result("one", np.array([0.3, 0.5, 0.7]), np.array([1, 0, 0]), stats, ["a"])
    assert result.verification is not None and result.identification["rank"]["1"] is None
    md = markdown_tables([result])
    assert "Rank-k reads n/a for k at or above the gallery's 1 identity" in md and "TPIR@FPIR reads n/a" not in md
    # no probe mated, a gallery of two identities: the reasons were those of one identity ("every probe is
    # ranked first", "k at or above the gallery's 2 identities", though k=1 is below)
    gallery2 = rng.normal(size=(2, 8))
    stats = M.identification_stats(probes[:2], gallery2, ["x", "y"], ["a", "b"])
    result = counted_result("none", np.zeros(4), np.zeros(4, bool), stats, ["a", "b"])
    md = markdown_tables([result])
    assert "n/a: the comparisons are all impostor (no probe's identity is in the gallery)" in md
    assert "Rank-k reads n/a: no probe's identity is in the gallery" in md
    assert "every probe is ranked first" not in md and "at or above the gallery's" not in md


def test_rank_k_at_the_gallerys_size_is_not_a_figure():
    """A mated probe's rank is at most the gallery's size: Rank-5 over a gallery of 5 identities was
    100 % whatever the model (here rank-1 is 0 %: every probe's mate scores last)."""
    gallery = np.eye(5)
    probes = -np.eye(5) + 0.1  # each probe farthest from its own identity
    ids = list("abcde")
    stats = M.identification_stats(probes, gallery, ids, ids)
    assert M.cmc(stats, (1, 4, 5)) == {1: 0.0, 4: 0.0, 5: 1.0}
    ranks = evaluate("five", stats=stats).identification["rank"]
    assert ranks["1"] == 0.0 and ranks["5"] is None and ranks["10"] is None
    six = M.identification_stats(np.vstack([probes, probes[:1]]), np.vstack([gallery, -gallery[:1]]),
                                 ids + ["a"], ids + ["f"])
    assert evaluate("six", stats=six).identification["rank"]["5"] is not None


def test_rank_k_is_capped_by_the_gallerys_identities_not_its_images(tmp_path):
    """Three images each of two identities: a rank is at most 2, so Rank-5 would count every mated probe
    (it read 100 % against a gallery of 6 images); the report says entries and identities."""
    g_ids = ["a"] * 3 + ["b"] * 3
    sim = np.array([[0.1, 0.2, 0.3, 0.5, 0.6, 0.7],   # each probe's own identity below the other's
                    [0.7, 0.6, 0.5, 0.3, 0.2, 0.1]], np.float32)
    stats = M.identification_stats(sim, None, ["a", "b"], g_ids)
    assert stats.rank.tolist() == [2, 2]
    result = evaluate("two", stats=stats)
    assert result.identification["rank"] == {"1": 0.0, "5": None, "10": None, "20": None}
    assert result.identification["gallery"] == 6 and result.identification["gallery_identities"] == 2
    assert result.cmc_curve == [(1, 0.0), (2, 1.0)]
    md = markdown_tables([result])
    assert "2 probes (2 with their identity in the gallery), 6 gallery entries of 2 identities." in md


def test_the_roc_plot_spans_the_fars_measured(tmp_path):
    """The FAR axis stopped at 10^-4 whatever the impostors: 200,000 measure 5 x 10^-6; and it started
    there too, so 500 impostors (2 x 10^-3 at the least) left most of the plot empty."""
    from recog.report import plot_roc, roc_far_floor

    rng = np.random.default_rng(6)
    small = evaluate("small", np.r_[rng.normal(2, 1, 50), rng.normal(0, 1, 500)], np.r_[np.ones(50), np.zeros(500)])
    large = evaluate("large", np.r_[rng.normal(2, 1, 50), rng.normal(0, 1, 200_000)],
                     np.r_[np.ones(50), np.zeros(200_000)])
    assert roc_far_floor([small]) == pytest.approx(1e-3)
    assert roc_far_floor([small, large]) == pytest.approx(1e-6)
    assert roc_far_floor([]) == 1e-4
    one = evaluate("one", np.array([2.0, 1.0, 0.0]), np.array([1, 1, 0]))  # one impostor: FAR 1 only
    assert roc_far_floor([one]) == pytest.approx(0.1)
    plot_roc([small, large], tmp_path / "roc.png")
    assert (tmp_path / "roc.png").stat().st_size > 0


def test_a_long_title_stays_within_the_plot():
    """`mfr evaluate`'s titles (a sentence naming the protocol) ran off both sides of roc.png and cmc.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recog.report import set_title

    title = ("Evaluation: masked images (the manifest's masked column) against the unmasked images of each "
             "identity, sface, every sample counted")
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)  # the plots' size
    set_title(ax, title)
    fig.tight_layout()
    fig.canvas.draw()
    box, frame = ax.title.get_window_extent(), fig.bbox
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and box.y1 <= frame.y1
    assert ax.get_title().replace("\n", " ") == title
    plt.close(fig)


def test_a_dollar_in_a_title_or_a_name_is_written_as_it_is(tmp_path):
    """matplotlib reads text between two `$` as math: a masked rule `^\\d+\\.jpg$|^mask_\\w+$` in
    `mfr evaluate`'s title failed the report (ParseSyntaxException) after every image was embedded, and
    `price$1$.csv` lost its dollars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recog.report import plot_cmc, plot_roc, set_title

    rng = np.random.default_rng(2)
    result = evaluate("m$1$ plain", np.r_[rng.normal(2, 1, 20), rng.normal(0, 1, 50)],
                      np.r_[np.ones(20), np.zeros(50)])
    title = r"Evaluation: rule '^\d+_\d+\.jpg$|^mask_\w+$', pairs of price$1$.csv"
    plot_roc([result], tmp_path / "roc.png", title)
    plot_cmc([evaluate("m$1$ plain", stats=M.identification_stats(
        np.eye(3, dtype=np.float32), None, ["a", "b", "c"], ["a", "b", "c"]))], tmp_path / "cmc.png", title)
    assert (tmp_path / "roc.png").stat().st_size > 0 and (tmp_path / "cmc.png").stat().st_size > 0
    fig, ax = plt.subplots()
    set_title(ax, title, width=200)
    ax.plot([0, 1], label="m$1$ plain")
    from recog.report import add_legend

    add_legend(ax)
    fig.canvas.draw()
    # drawn as written: the title's and the legend's text keep their dollars, not rendered as math
    assert not ax.title.get_parse_math() and ax.get_title() == title
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["m$1$ plain"]
    assert not ax.get_legend().get_texts()[0].get_parse_math()
    plt.close(fig)


def test_each_tpir_cell_that_reads_na_says_why_when_some_searches_are_open_set():
    """With some non-mated probes but too few for a rate, TPIR@FPIR read n/a with no reason: the report
    said why only when there were none."""
    rng = np.random.default_rng(4)
    gallery = [f"id{i}" for i in range(8)]
    probes = gallery + [f"stranger{i}" for i in range(12)]  # 12 open-set searches: FPIR 0.01 is under 1 of them
    sim = rng.normal(size=(len(probes), len(gallery))).astype(np.float32)
    sim[np.arange(8), np.arange(8)] += 4  # each mated probe's mate scores highest
    result = evaluate("m", stats=M.identification_stats(sim, None, probes, gallery))
    assert result.identification["tpir_at_fpir"]["0.01"] is None
    assert result.identification["tpir_at_fpir"]["0.1"] is not None
    md = markdown_tables([result])
    assert "TPIR@FPIR=0.01 reads n/a: FPIR 0.01 is below 1 / non-mated probes = 0.0833." in md
    assert "TPIR@FPIR=0.1 reads n/a" not in md
    # what each rate is out of, and the FPIR the threshold achieves (the 1st highest of 12 non-mated
    # searches: 1/12, not 0.1), which report.json alone said
    assert ("20 probes (8 with their identity in the gallery, which rank-k and TPIR count; 12 non-mated, which "
            "FPIR counts), 8 gallery entries.") in md
    assert ("TPIR@FPIR was measured at another FPIR than its column's where few non-mated searches, or scores "
            "tied at the threshold (the k-th highest of them, k = round(f x n)), set it: FPIR=0.1 at 0.0833.") in md
    # so for a FAR over few impostors (k = round(0.1 x 25) = 2: 0.08), or over many tied at the threshold
    # (150 of 1,000 impostors at 0.9: every FAR measured at 0.15); one met within 1 % is not said
    scores = np.r_[np.linspace(0, 1, 25), np.ones(5)]
    labels = np.r_[np.zeros(25, int), np.ones(5, int)]
    assert ("TAR@FAR was measured at another FAR than its column's where few impostor scores, or scores tied at the "
            "threshold (the k-th highest of them, k = round(f x n)), set it: FAR=0.1 at 0.08.") in \
        markdown_tables([evaluate("v", scores, labels)])
    tied = np.r_[np.full(150, 0.9), np.linspace(0, 0.5, 850), np.linspace(0.6, 1, 200)]
    two = [evaluate(name, tied, np.r_[np.zeros(1000, int), np.ones(200, int)]) for name in ("a", "b")]
    assert "set it: FAR=0.1 at 0.15; FAR=0.01 at 0.15; FAR=0.001 at 0.15." in markdown_tables(two)  # once for both
    assert "another FAR" not in markdown_tables([evaluate("v", np.r_[np.linspace(0, 1, 30), np.ones(5)],
                                                          np.r_[np.zeros(30, int), np.ones(5, int)])])
    # no mated search: nothing counts for rank-k or TPIR
    none = evaluate("m", stats=M.identification_stats(sim[8:], None, probes[8:], gallery))
    assert "12 probes (none with their identity in the gallery; 12 non-mated, which FPIR counts)" in \
        markdown_tables([none])


def test_tar_at_a_far_only_the_faceless_comparisons_reach_is_not_a_figure():
    """28 of 30 probes without a face: the 15th highest of 150 impostors is a faceless probe's
    comparison, where every pair is accepted, and TAR@FAR 0.1 read 100 %."""
    from jobs.score import counted_result
    from recog.report import acquisition_counts

    rng = np.random.default_rng(7)
    gallery = rng.normal(size=(6, 8))
    g_ids = [f"id{i}" for i in range(6)]
    probes = gallery[:2] + 0.3 * rng.normal(size=(2, 8))  # the two probes with a face: id0 and id1
    sims = M.similarity_matrix(probes, gallery)
    same = np.array(g_ids[:2])[:, None] == np.array(g_ids)[None, :]
    scores, labels = np.r_[sims[same], sims[~same]], np.r_[np.ones(2, int), np.zeros(10, int)]
    stats = M.identification_stats(probes, gallery, g_ids[:2], g_ids)
    failed = [g_ids[i % 6] for i in range(28)]
    result = counted_result("m", scores, labels, stats, g_ids, failed, acquisition=acquisition_counts(2, 28))
    v = result.verification
    assert (v["genuine"], v["impostor"]) == (30, 150)
    assert v["tar_at_far"]["0.1"] is None and v["seed_tar_at_far"]["0.1"] is None  # 15 > the 10 real impostors
    assert v["tar_at_far"]["0.01"]["threshold"] > scores.min() - 1  # k = 2: a real impostor's score
    assert result.acquired_only.verification["tar_at_far"]["0.1"] is not None


def test_methods_of_other_counts_each_say_theirs():
    """report.md gave the first method's pairs, probes and gallery entries for every method (a fusion
    over fewer common probes said the first model's counts)."""
    rng = np.random.default_rng(8)
    gallery = rng.normal(size=(4, 8))
    ids = list("abcd")
    results = []
    for name, n in (("one", 4), ("fused", 3)):
        probes = gallery[:n] + 0.2 * rng.normal(size=(n, 8))
        sims = M.similarity_matrix(probes, gallery)
        same = np.array(ids[:n])[:, None] == np.array(ids)[None, :]
        results.append(evaluate(name, np.r_[sims[same], sims[~same]], np.r_[np.ones(n), np.zeros(same.size - n)],
                                stats=M.identification_stats(probes, gallery, ids[:n], ids)))
    md = markdown_tables(results)
    assert "one: 4 genuine and 12 impostor pairs; fused: 3 genuine and 9 impostor pairs." in md
    assert ("- one: 4 probes (4 with their identity in the gallery), 4 gallery entries.\n- fused: 3 probes (3 with "
            "their identity in the gallery), 4 gallery entries.\n") in md
    assert "\n4 genuine and 12 impostor pairs." in markdown_tables(results[:1])
    results[0].acquisition = {"not_in_dataset": 2614}  # `mfr evaluate --lists ... --missing skip`
    assert "2614 image(s) the lists name were left out: they are not in the dataset (`--missing skip`)." \
        in markdown_tables(results)


def test_a_pairs_protocols_folds_and_left_out_pairs_are_in_the_markdown():
    """LFW's headline figure (k-fold accuracy) and the pairs `--missing skip` left out were in
    report.json only: report.md gave "N pairs of pairs.txt" in its title and nothing of either."""
    rng = np.random.default_rng(5)
    scores = np.r_[rng.normal(1, 1, 300), rng.normal(-1, 1, 300)]
    labels = np.r_[np.ones(300, int), np.zeros(300, int)]
    folds = np.arange(600) % 10
    result = evaluate("lfw-like", scores, labels, folds=folds)
    result.verification["pairs_skipped"] = 42
    md = markdown_tables([result])
    k = result.verification["kfold_accuracy"]
    assert f"| lfw-like | {100 * k['mean']:.1f} ± {100 * k['std']:.1f} | 10 |" in md
    assert "42 pair(s) of the protocol were left out" in md
    assert "k-fold" not in markdown_tables([evaluate("no folds", scores, labels)])
    # a pairs file of one fold (a legal header "1 10"), or one whose other folds are all one kind once
    # faceless pairs are set aside: the whole evaluation stopped after embedding, no report; the other
    # figures are there, k-fold reads n/a with its reason
    one = evaluate("one fold", scores, labels, folds=np.zeros(600, int))
    assert one.verification["kfold_accuracy"] is None and one.verification["auc"] > 0.8
    assert "k-fold accuracy of one fold: n/a (k-fold accuracy needs at least 2 folds" in markdown_tables([one])


def test_the_seeds_fpir_is_not_read_off_a_gallery_of_several_entries_per_identity():
    """The seed's scripts count an identity's second gallery entry against its own probes; the report
    read its "FPIR" from the project's statistics (each probe's best mate, its own identity left out of
    the non-mated) and printed 50 % "as the seed's scripts read them" where they read 6.7 %."""
    rng = np.random.default_rng(9)
    gallery = rng.normal(size=(12, 8))
    g_ids = [f"id{i // 2}" for i in range(12)]
    probes = gallery[::2] + 0.5 * rng.normal(size=(6, 8))
    p_ids = [f"id{i}" for i in range(6)]
    result = evaluate("m", stats=M.identification_stats(probes, gallery, p_ids, g_ids, keep_nonmated=60))
    assert "seed_fpir" not in result.identification
    md = markdown_tables([result])
    assert "The seed's \"FPIR\" reads n/a for m: its scripts take one gallery entry per identity, and the " \
           "gallery has 12 entries of 6." in md
    one = evaluate("m", stats=M.identification_stats(probes, gallery[::2], p_ids, g_ids[::2], keep_nonmated=30))
    assert set(one.identification["seed_fpir"]) == {"0.01", "0.1"}


def test_a_far_too_small_for_the_impostors_says_why_it_reads_n_a():
    """TAR@FAR=0.001 read n/a on every row of a 450-impostor report with no word why (TPIR's n/a said it)."""
    rng = np.random.default_rng(10)
    scores, labels = rng.normal(size=480), np.r_[np.ones(30), np.zeros(450)]
    result = evaluate("m", scores, labels)
    assert result.verification["tar_at_far"]["0.001"] is None
    assert "FAR 0.001 is below 1 / impostors = 0.00222" in result.verification["tar_unmeasured"]["0.001"]
    md = markdown_tables([result])
    assert "TAR@FAR=0.001 reads n/a: FAR 0.001 is below 1 / impostors = 0.00222: 450 impostor pairs cannot " \
           "measure it." in md


def test_a_tar_lies_in_its_interval_however_its_far_was_given():
    """95 impostors at 0.95 ... 0.01 and every genuine pair at 0.675, between the 28th and 29th highest:
    FAR 0.3 given as float32 sets k = round(0.3 x 95) = 29 (TAR 1.0), as a float k = 28 (TAR 0). The
    interval took the FAR from its key, "0.3", read back as a float: k = 28, and TAR 1.0 lay outside it."""
    scores = np.r_[np.full(50, 0.675), np.arange(95, 0, -1) / 100.0]
    labels = np.r_[np.ones(50, int), np.zeros(95, int)]
    for far, tar in ((0.3, 0.0), (np.float32(0.3), 1.0)):
        found = evaluate("x", scores, labels, fars=(far,)).verification["tar_at_far"]["0.3"]
        assert found["tar"] == tar and found["tar_ci95"][0] <= tar <= found["tar_ci95"][1]


def test_the_terminal_summary_gives_each_methods_headline_figures():
    from recog.report import summary_lines

    results = [evaluate(f"model {k}", *(_case(k)[:2]), stats=_case(k)[2]) for k in (1, 2)]
    results.append(evaluate("pairs only", *(_case(3)[:2])))  # a pairs protocol: no identification
    lines = summary_lines(results)
    v, i = results[0].verification, results[0].identification
    assert lines[1] == (f"  model 1     TAR@FAR=0.01 {100 * v['tar_at_far']['0.01']['tar']:>5.1f} %   "
                        f"AUC {100 * v['auc']:>5.1f} %   rank-1 {100 * i['rank']['1']:>5.1f} %")
    assert lines[3].startswith("  pairs only  TAR@FAR=0.01 ") and "rank-1" not in lines[3]
    assert len(lines) == 4  # results without per-probe outcomes are not compared
    assert summary_lines([]) == [] and summary_lines([evaluate("nothing")]) == []
    # a TAR that reads n/a says why under the figures, once for the methods that share the reason
    # (it read "n/a %" with no word, report.md alone gave the reason)
    rng = np.random.default_rng(0)
    scores, labels = np.r_[rng.normal(0.7, 0.1, 20), rng.normal(0.1, 0.1, 30)], np.r_[np.ones(20), np.zeros(30)]
    few = summary_lines([evaluate("a", scores, labels), evaluate("b", scores + 0.01, labels),
                         evaluate("c", *(_case(3)[:2]))])
    assert few[1].startswith("  a  TAR@FAR=0.01   n/a %") and few[3].startswith("  c  TAR@FAR=0.01 ") and \
        "n/a" not in few[3]
    assert few[4:] == ["  TAR@FAR=0.01 reads n/a (a, b): FAR 0.01 is below 1 / impostors = 0.0333: 30 impostor "
                       "pairs cannot measure it."]


def test_the_terminal_summary_shows_the_clearest_paired_comparisons_of_many():
    from recog.report import SUMMARY_PAIRS, summary_lines

    paired = [{"methods": [f"m{i}", f"n{i}"], "rates": [0.5, 0.4], "probes": 100, "first_only": 20 + i,
               "second_only": 10, "p_value": 1 / (i + 1)} for i in range(SUMMARY_PAIRS + 3)]
    lines = summary_lines([evaluate("m", *(_case(1)[:2]))], paired)
    shown = [line for line in lines if " vs " in line]
    assert [line.split(" vs ")[0].strip() for line in shown] == [f"m{i}" for i in range(SUMMARY_PAIRS + 2, 2, -1)]
    assert lines[-1] == "  ... the 3 other paired comparisons (larger p) are in report.md"
    assert len(summary_lines([evaluate("m", *(_case(1)[:2]))], paired[:SUMMARY_PAIRS])) == 2 + SUMMARY_PAIRS
    # a report.json written before the Holm column: its comparisons print, Holm n/a
    assert shown[0].endswith(f"p {1 / (SUMMARY_PAIRS + 3):.3g} (Holm n/a)")
