"""Metrics against brute-force definitions and scikit-learn, on random and constructed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from recog import metrics as M


def _random_scores(seed=0, n_gen=400, n_imp=3000, ties=False):
    rng = np.random.default_rng(seed)
    s = np.r_[rng.normal(1.0, 1.0, n_gen), rng.normal(-1.0, 1.0, n_imp)]
    if ties:
        s = np.round(s, 1)
    y = np.r_[np.ones(n_gen, int), np.zeros(n_imp, int)]
    perm = rng.permutation(len(s))
    return s[perm], y[perm]


@pytest.mark.parametrize("ties", [False, True])
def test_roc_and_auc_match_sklearn(ties):
    s, y = _random_scores(ties=ties)
    roc = M.roc_curve(s, y)
    fpr, tpr, thr = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(roc.far, fpr)
    np.testing.assert_allclose(roc.tar, tpr)
    np.testing.assert_allclose(roc.thresholds[1:], thr[1:])
    assert M.auc(roc) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("far", [0.1, 0.01, 0.001])
def test_tar_at_far_brute_force(far):
    s, y = _random_scores(seed=1)
    r = M.tar_at_far(s, y, far)
    imp = s[y == 0]
    k = round(far * imp.size)
    t = sorted(imp, reverse=True)[k - 1]
    assert r.threshold == t and r.k == k
    assert r.tar == pytest.approx(np.mean(s[y == 1] >= t))
    assert r.far == pytest.approx(np.mean(imp >= t)) == pytest.approx(k / imp.size)


def test_tar_at_far_refuses_unmeasurable_far_and_reports_ties():
    s, y = _random_scores(n_imp=500)
    for far in (0.0009, 0.0015):  # 0.45 and 0.75 impostors: round() alone let the second through
        with pytest.raises(ValueError, match="below 1 / impostors"):
            M.tar_at_far(s, y, far)
    assert M.tar_at_far(s, y, 0.002).k == 1  # exactly 1 / impostors
    tied = np.r_[[0.9] * 3, [0.5] * 10]  # 3 genuines, 10 impostors all tied at 0.5
    labels = np.r_[[1] * 3, [0] * 10]
    r = M.tar_at_far(tied, labels, 0.1)
    assert r.threshold == 0.5 and r.far == 1.0 and r.tar == 1.0  # achieved FAR says what ties did


def test_eer_constructed_and_random():
    # genuines 0.6..0.9, impostors 0.1..0.4 except one at 0.7: crossing at one error each side
    s = np.array([0.6, 0.7, 0.8, 0.9, 0.1, 0.2, 0.3, 0.75])
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    e, _ = M.eer(s, y)
    assert e == pytest.approx(0.25)
    s, y = _random_scores(seed=2)
    e, t = M.eer(s, y)
    far = np.mean(s[y == 0] >= t)
    frr = np.mean(s[y == 1] < t)
    assert abs(far - frr) < 0.01 and abs(e - (far + frr) / 2) < 0.01


def test_best_accuracy_brute_force():
    s, y = _random_scores(seed=3, n_gen=200, n_imp=300)
    acc, t = M.best_accuracy(s, y)
    brute = max(np.mean((s >= c) == y) for c in np.r_[s, np.inf])
    assert acc == pytest.approx(brute)
    assert np.mean((s >= t) == y) == pytest.approx(acc)


def test_best_accuracy_takes_the_highest_of_equally_best_thresholds_on_tied_scores():
    """Correct pairs were counted as rate x count in floats: 15.000000000000002 beat 15.0, and a lower
    threshold than the highest equally best one was taken (2 in 3,000 such cases; k-fold means moved)."""
    rng = np.random.default_rng(1)
    for _ in range(3000):
        n = int(rng.integers(3, 60))
        s = rng.integers(0, 8, n).astype(float) / 4
        y = rng.random(n) < rng.uniform(0.2, 0.8)
        if y.all() or not y.any():
            continue
        counts = {t: int(((s >= t) == y).sum()) for t in np.r_[np.inf, np.unique(s)]}
        best = max(counts.values())
        assert M.best_accuracy(s, y) == (best / n, max(t for t, c in counts.items() if c == best))


def test_kfold_picks_thresholds_on_the_other_folds():
    s, y = _random_scores(seed=4, n_gen=300, n_imp=300)
    k = M.kfold_accuracy(s, y, 10)
    fold = np.arange(s.size) * 10 // s.size
    for f in range(10):
        train = fold != f
        _, t = M.best_accuracy(s[train], y[train])
        t = (t + s[train][s[train] < t].max()) / 2  # midway to the next lower score of the other folds
        assert k.thresholds[f] == pytest.approx(t)
        assert k.accuracies[f] == pytest.approx(np.mean((s[~train] >= t) == y[~train]))
    assert k.mean == pytest.approx(np.mean(k.accuracies)) and k.std == pytest.approx(np.std(k.accuracies))
    assert M.kfold_accuracy(s, y, fold).accuracies == k.accuracies
    # two folds, each cleanly parted, the other's lowest genuine score above this one's genuine pairs: a
    # threshold on that score judged them wrong (83.3 %, a review's LFW-style file)
    s = np.array([0.42, 0.48, 0.11, 0.05, 0.52, 0.60, 0.08, 0.02])
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    assert M.kfold_accuracy(s, y, np.repeat([0, 1], 4)).accuracies == (1.0, 1.0)


def test_input_validation():
    with pytest.raises(ValueError, match="both genuine"):
        M.roc_curve([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        M.roc_curve([0.1, np.nan], [1, 0])
    with pytest.raises(ValueError, match="labels must be"):
        M.roc_curve([0.1, 0.2], [1, 2])
    with pytest.raises(ValueError, match="differ in length"):
        M.roc_curve([0.1, 0.2, 0.3], [1, 0])


def test_counts_ranks_and_rates_are_validated_everywhere():
    """Found by a new user: the seed's FPIR reading gave a "rate" of 1.0 at FPIR 0 and 2, and an
    IndexError for a one-entry gallery; ranks 0 and -1 gave rates; 2.7 folds ran as 2; block=0 failed
    in range()."""
    probes, gallery, pid, gid = _ident_case(seed=7)
    for f in (0.0, 2.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"FPIR must be in \(0, 1\]"):
            M.seed_identification(probes, gallery, pid, gid, fpirs=(f,))
    one = gid == gid[0]
    with pytest.raises(ValueError, match="a gallery of one entry has none"):
        M.seed_identification(probes[pid == gid[0]], gallery[one], pid[pid == gid[0]], gid[one])
    stats = M.identification_stats(probes, gallery, pid, gid)
    for ranks in ((0,), (1, -1), (1.5,), (True,), ()):
        with pytest.raises(ValueError, match="ranks are whole numbers of at least 1"):
            M.cmc(stats, ranks)
        with pytest.raises(ValueError, match="ranks are whole numbers of at least 1"):
            M.seed_identification(probes, gallery, pid, gid, ranks=ranks)
    assert M.cmc(stats, (np.int64(1),)) == M.cmc(stats, (1,))
    for block in (0, -3, 2.5):
        with pytest.raises(ValueError, match="block is a whole number"):
            M.identification_stats(probes, gallery, pid, gid, block=block)
    with pytest.raises(ValueError, match="keep_nonmated"):
        M.identification_stats(probes, gallery, pid, gid, keep_nonmated=-1)
    s, y = _random_scores(seed=3)
    with pytest.raises(ValueError, match="folds is a count"):
        M.kfold_accuracy(s, y, 2.7)
    # a fold whose other folds hold one class: said so, naming the fold
    ordered = np.r_[np.ones(10), np.zeros(10)]
    with pytest.raises(ValueError, match="fold 0: the pairs of the other folds are all impostor.*interleave"):
        M.kfold_accuracy(np.linspace(0, 1, 20), ordered, 2)
    with pytest.raises(ValueError, match="are all impostor, so no threshold can be chosen for it$"):  # ids: no hint
        M.kfold_accuracy(np.linspace(0, 1, 20), ordered, np.r_[np.zeros(10), np.ones(10)])
    for far in (0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"FAR must be in \(0, 1\]"):
            M.tar_at_far(s, y, far)


def _ident_case(seed=0, n_ids=30, probes_per=4, unmated=25, dim=16):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids + unmated, dim))
    gallery = centres[:n_ids] + 0.3 * rng.normal(size=(n_ids, dim))
    gallery_ids = np.array([f"id{i}" for i in range(n_ids)])
    probe_ids = np.array([f"id{i}" for i in range(n_ids) for _ in range(probes_per)]
                         + [f"id{n_ids + i}" for i in range(unmated)])
    idx = np.array([int(p[2:]) for p in probe_ids])
    probes = centres[idx] + 0.9 * rng.normal(size=(len(idx), dim))
    return probes, gallery, probe_ids, gallery_ids


def _brute_ident(sim, probe_ids, gallery_ids):
    ranks, mated_scores, tops = [], [], []
    for i, p in enumerate(probe_ids):
        mate = gallery_ids == p
        non = sim[i][~mate]
        tops.append(non.max())
        if mate.any():
            best = sim[i][mate].max()
            mated_scores.append(best)
            ranks.append(1 + int((non >= best).sum()))
        else:
            mated_scores.append(np.nan)
            ranks.append(0)
    return np.array(ranks), np.array(mated_scores), np.array(tops)


@pytest.mark.parametrize("block", [7, 256])
def test_identification_stats_blocked_equals_brute_force(block):
    probes, gallery, pid, gid = _ident_case()
    stats = M.identification_stats(probes, gallery, pid, gid, block=block, keep_nonmated=50)
    sim = M.similarity_matrix(probes, gallery)
    ranks, mated, tops = _brute_ident(sim, pid, gid)
    np.testing.assert_array_equal(stats.rank, ranks)
    np.testing.assert_allclose(stats.mated_score, mated, atol=1e-6)
    np.testing.assert_allclose(stats.top_nonmated, tops, atol=1e-6)
    mated_rows = np.isin(pid, gid)
    nonmated_scores = np.sort(np.concatenate([sim[i][gid != pid[i]] for i in np.nonzero(mated_rows)[0]]))[::-1]
    np.testing.assert_allclose(stats.nonmated_top, nonmated_scores[:50], atol=1e-6)
    from_matrix = M.identification_stats(sim, None, pid, gid)
    np.testing.assert_array_equal(from_matrix.rank, ranks)


def test_cmc_and_tpir_definitions():
    probes, gallery, pid, gid = _ident_case(seed=5)
    stats = M.identification_stats(probes, gallery, pid, gid)
    sim = M.similarity_matrix(probes, gallery)
    ranks, mated, tops = _brute_ident(sim, pid, gid)
    m = ranks > 0
    for k, rate in M.cmc(stats, (1, 5)).items():
        assert rate == pytest.approx(np.mean(ranks[m] <= k))
    r = M.tpir_at_fpir(stats, 0.2)
    non_tops = np.sort(tops[~m])[::-1]
    k = round(0.2 * non_tops.size)
    t = non_tops[k - 1]
    assert r.threshold == pytest.approx(t) and r.k == k
    assert r.tpir == pytest.approx(np.mean((ranks[m] == 1) & (mated[m] >= t)))
    for fpir in (0.01, 0.75 / non_tops.size):
        with pytest.raises(ValueError, match="below 1 / non-mated"):
            M.tpir_at_fpir(stats, fpir)
    closed = M.identification_stats(probes[m], gallery, pid[m], gid)
    with pytest.raises(ValueError, match="non-mated probes"):
        M.tpir_at_fpir(closed, 0.1)


def test_constructed_identification():
    # 2 gallery identities; probe a ranks its mate first, probe b second, probe c is unmated
    sim = np.array([[0.9, 0.1], [0.5, 0.4], [0.3, 0.2]], np.float32)
    stats = M.identification_stats(sim, None, ["a", "b", "c"], ["a", "b"])
    assert stats.rank.tolist() == [1, 2, 0]
    assert M.cmc(stats, (1, 2)) == {1: 0.5, 2: 1.0}
    r = M.tpir_at_fpir(stats, 1.0)  # threshold = probe c's top score 0.3
    assert r.threshold == pytest.approx(0.3) and r.tpir == 0.5


def test_ranks_count_identities_not_gallery_images():
    """A candidate list ranks identities: an impostor with three images above the mate puts it second,
    not fourth (counting images, rank-3 read 0 here where the true identity is second for every probe)."""
    # gallery: b, b, b, a, c, c in a shuffled column order; probe "a" scores b's three images above its mate
    g_ids = ["b", "c", "a", "b", "c", "b"]
    sim = np.array([[0.8, 0.1, 0.6, 0.7, 0.2, 0.9],     # a: b above (three images), c below -> rank 2
                    [0.8, 0.7, 0.6, 0.1, 0.9, 0.2],     # c: its best 0.9; none above -> rank 1
                    [0.1, 0.2, 0.6, 0.3, 0.6, 0.5]],    # b: a's 0.6 and c's 0.6 at or above 0.5 -> rank 3
                   np.float32)
    stats = M.identification_stats(sim, None, ["a", "c", "b"], g_ids)
    assert stats.rank.tolist() == [2, 1, 3]
    assert stats.gallery_size == 6 and stats.gallery_identities == 3 and stats.most_rank == 3
    assert M.cmc(stats, (1, 2, 3)) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: 1.0}
    # the same from embeddings, in blocks of one probe and of all: brute force over identities
    probes, gallery, pid, _ = _ident_case(seed=8, n_ids=12, unmated=6)
    gid = np.repeat([f"id{i}" for i in range(12)], 3)
    rng = np.random.default_rng(8)
    gallery = np.repeat(gallery, 3, axis=0) + 0.4 * rng.normal(size=(36, gallery.shape[1]))
    shuffle = rng.permutation(36)
    gallery, gid = gallery[shuffle], gid[shuffle]
    sim = M.similarity_matrix(probes, gallery)
    want = []
    for i, p in enumerate(pid):
        if p not in gid:
            want.append(0)
            continue
        best = sim[i][gid == p].max()
        want.append(1 + len({g for g, v in zip(gid, sim[i]) if g != p and v >= best}))
    for block in (1, 256):
        assert M.identification_stats(probes, gallery, pid, gid, block=block).rank.tolist() == want
    assert max(want) > 1 and any(w > 1 for w, p in zip(want, pid) if p in gid)
    with pytest.raises(ValueError, match="identity order"):
        M.identity_runs([0, 1, 0])
    assert M.identity_runs([0, 1, 2]) is None and M.identity_runs([0, 0, 1, 2, 2]).tolist() == [0, 2, 3]


def test_failures_to_enrol_are_rejected_comparisons_and_mated_searches_never_identified():
    """A gallery entry without a face has no template: every probe's comparison with it is rejected, and
    a probe whose identity has no other entry is a mated search that misses at every rank (it was a
    non-mated search, which also made it count towards FPIR)."""
    sim = np.array([[0.9, 0.2], [0.4, 0.3], [0.1, 0.8]], np.float32)  # probes a, b, c; gallery a, c
    stats = M.identification_stats(sim, None, ["a", "b", "c"], ["a", "c"])
    scores = np.array([0.9, 0.2, 0.4, 0.3, 0.1, 0.8])
    labels = np.array([1, 0, 0, 0, 0, 1])
    # entries that failed to enrol: one of b's, one of d's (an identity without probes)
    got_s, got_l, got = M.with_failures_to_enrol(scores, labels, stats, [0, 1, 0], 2)
    floor = M.rejected_score(scores)
    assert floor == pytest.approx(0.1 - 1.0)
    assert got_l[6:].tolist() == [1, 0, 0, 0, 0, 0] and np.all(got_s[6:] == floor)  # b-b; a-b, a-d, b-d, c-b, c-d
    assert got.mated.tolist() == [True, True, True]
    assert got.rank.tolist() == [1, M.NEVER_IDENTIFIED, 1] and got.mated_score[1] == -np.inf
    assert M.cmc(got, (1,)) == {1: pytest.approx(2 / 3)}
    # impostors sampled per probe: the empty entries add genuine pairs only
    _, sampled_l, _ = M.with_failures_to_enrol(scores, labels, stats, [0, 1, 0], 2, impostors_per_probe=1)
    assert sampled_l[6:].tolist() == [1]
    # then failures to acquire, with the empty entries among the gallery's: a failed probe of b is mated
    s2, l2, st2 = M.with_failures_to_acquire(got_s, got_l, got, ["b"], ["a", "c", "b", "d"], floor=floor)
    assert st2.rank.tolist()[-1] == M.NEVER_IDENTIFIED and st2.mated.tolist()[-1]
    assert l2[12:].tolist() == [1, 0, 0, 0] and np.all(s2[12:] == floor)
    for bad in (([0, 1], 2), ([0, 3, 0], 2), ([0, -1, 0], 2), ([0, 0, 0], 1.5)):
        with pytest.raises(ValueError):
            M.with_failures_to_enrol(scores, labels, stats, *bad)
    same = M.with_failures_to_enrol(scores, labels, stats, [0, 0, 0], 0)
    assert same[2] is stats and np.array_equal(same[0], scores)


def test_failures_to_acquire_count_as_rejected_and_never_identified():
    # probes a, b, c, d, e against gallery identities a, b: b and d (unmated) had no face
    sim = np.array([[0.9, 0.1], [0.0, 0.0], [0.3, 0.6], [0.0, 0.0], [0.7, 0.2]], np.float32)
    acquired = np.array([True, False, True, False, True])
    ids = ["a", "b", "b", "d", "e"]
    stats = M.identification_stats(sim, None, ids, ["a", "b"], acquired=acquired)
    assert stats.mated.tolist() == [True, True, True, False, False]
    assert stats.rank.tolist() == [1, M.NEVER_IDENTIFIED, 1, 0, 0]  # b misses at every rank
    # ranks beyond the gallery's size too: a rank of gallery size + 1 counted b identified at rank 5
    assert M.cmc(stats, (1, 2, 5)) == {1: pytest.approx(2 / 3), 2: pytest.approx(2 / 3), 5: pytest.approx(2 / 3)}
    assert stats.top_nonmated[3] == -np.inf      # d is never falsely identified
    r = M.tpir_at_fpir(stats, 0.5)  # threshold: e's top score 0.7; d, no face, is not above it
    assert r.threshold == pytest.approx(0.7) and r.fpir == 0.5 and r.tpir == pytest.approx(1 / 3)
    # FPIR 1.0 wants d's top score, -inf: the threshold accepted everything and counted d as a false
    # identification (achieved FPIR 1.0); half the non-mated probes are all this data can reach
    with pytest.raises(ValueError, match=r"FPIR 1.0 needs the 2-th highest top score of the 2 non-mated probes, "
                                         r"and a face was found in only 1 of them \(share 0.5\)"):
        M.tpir_at_fpir(stats, 1.0)
    matrix = M.unacquired_rejected(sim, acquired)
    np.testing.assert_allclose(matrix[1], [-0.9, -0.9], atol=1e-6)
    assert matrix[3].max() < sim[acquired].min()
    labels = np.array([[1, 0], [0, 1], [0, 1], [0, 0], [0, 0]])
    # at the threshold of any real score, the unacquired genuine pair (b) is rejected
    t = M.tar_at_far(matrix.ravel(), labels.ravel(), 1 / 7)  # 7 impostor pairs: threshold 0.7
    assert t.tar == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="one acquired flag"):
        M.unacquired_rejected(sim, acquired[:2])
    with pytest.raises(ValueError, match="no probe was acquired"):
        M.identification_stats(sim, None, ids, ["a", "b"], acquired=np.zeros(5, bool))


def test_tpir_is_measured_while_its_k_lies_among_the_probes_with_a_face():
    # 25 non-mated probes, a face found in 2 (share 0.08): FPIR 0.1 takes k = round(2.5) = 2, the second
    # found one's top score, and achieves 0.08, as it would with every face found; 0.14 (k = 4) cannot be read
    tops = np.linspace(0.9, 0.1, 25)
    sim = np.c_[np.r_[0.95, 0.5, tops], np.r_[0.0, 0.0, np.zeros(25)]].astype(np.float32)
    ids = ["a", "a"] + [f"x{i}" for i in range(25)]
    acquired = np.r_[True, True, True, True, np.zeros(23, bool)]
    stats = M.identification_stats(sim, None, ids, ["a", "b"], acquired=acquired)
    r = M.tpir_at_fpir(stats, 0.1)
    assert (r.k, r.fpir, r.tpir) == (2, pytest.approx(0.08), pytest.approx(0.5))
    assert r.threshold == pytest.approx(tops[1])
    with pytest.raises(ValueError, match=r"needs the 4-th highest top score of the 25 non-mated probes, and a face "
                                         r"was found in only 2 of them"):
        M.tpir_at_fpir(stats, 0.14)


def test_templates_are_normalised_means():
    x = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    t, ids = M.identity_templates(x, ["p", "p", "q"])
    assert ids.tolist() == ["p", "q"]
    np.testing.assert_allclose(t[0], [1 / math.sqrt(2), 1 / math.sqrt(2)])
    np.testing.assert_allclose(t[1], [1.0, 0.0])


def test_seed_readings():
    s, y = _random_scores(seed=6)
    fpr, tpr, _ = skm.roc_curve(y, s)
    for far in (0.1, 0.01, 0.001):
        i = int(np.argmin(np.abs(fpr - far)[::-1]))  # reversed scan: ties go to the higher FPR
        assert M.seed_tar_at_far(s, y, far) == pytest.approx(tpr[::-1][i])
    probes, gallery, pid, gid = _ident_case(seed=7)
    out = M.seed_identification(probes, gallery, pid, gid)
    keep = np.isin(pid, gid)
    sim = M.similarity_matrix(probes[keep], gallery).astype(np.float64)
    mate = np.array([list(gid).index(p) for p in pid[keep]])
    assert out["probes"] == keep.sum()
    assert out["rank"][1] == pytest.approx(np.mean(sim.argmax(1) == mate))
    pos = sim[np.arange(len(mate)), mate]
    neg = np.sort(np.concatenate([np.delete(row, j) for row, j in zip(sim, mate)]))[::-1]
    k = math.ceil(len(mate) * 0.1)
    assert out["fpir"]["0.1"] == pytest.approx(np.mean(pos > neg[k - 1]))
    stats = M.identification_stats(probes, gallery, pid, gid, keep_nonmated=k)
    np.testing.assert_allclose(stats.nonmated_top[k - 1], neg[k - 1], atol=1e-6)


def test_euclidean_similarity_and_pair_scores():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(7, 3))
    s = M.similarity_matrix(a, b, "euclidean")
    np.testing.assert_allclose(s, -np.linalg.norm(a[:, None] - b[None], axis=2), atol=1e-5)
    np.testing.assert_allclose(M.pair_scores(a, b[:5], "cosine"),
                               (a / np.linalg.norm(a, axis=1, keepdims=True) * (b[:5] / np.linalg.norm(b[:5], axis=1, keepdims=True))).sum(1),
                               atol=1e-6)
    with pytest.raises(ValueError):
        M.similarity_matrix(a, b, "manhattan")


def test_euclidean_scores_are_exact_enough_that_ranks_do_not_depend_on_the_block():
    """In float32, |a|^2 + |b|^2 - 2ab put a face at -0.0012 from itself at dlib's norms (about 1.6),
    far past the tie tolerance, so a near copy in the gallery outranked its mate in one block size
    and not in another."""
    rng = np.random.default_rng(16)
    gallery = rng.normal(size=(6, 128)).astype(np.float32)
    gallery *= 1.6 / np.linalg.norm(gallery, axis=1, keepdims=True)
    probes = gallery + rng.normal(scale=1e-4, size=gallery.shape).astype(np.float32)  # near copies
    s = M.similarity_matrix(probes, gallery, "euclidean")
    assert np.abs(np.diag(M.similarity_matrix(gallery, gallery, "euclidean"))).max() < 1e-6
    np.testing.assert_allclose(np.diag(s), M.pair_scores(probes, gallery, "euclidean"), atol=1e-6)
    ids = np.arange(6)
    ranks = {b: M.identification_stats(probes, gallery, ids, ids, "euclidean", block=b).rank.tolist() for b in (1, 6)}
    assert ranks == {1: [1] * 6, 6: [1] * 6}


def test_functions_called_directly_refuse_what_they_would_get_wrong():
    """Found using the metrics as a library: each of these gave a figure, or another error than its own."""
    probes, gallery, pid, gid = _ident_case(seed=7)
    twice = np.r_[gallery, gallery + 0.01]
    with pytest.raises(ValueError, match="one gallery entry per identity"):  # rank-1 read 0.40 for 0.78
        M.seed_identification(probes, twice, pid, np.r_[gid, gid])
    with pytest.raises(ValueError, match="one identity per probe"):
        M.seed_identification(probes, gallery, pid[:-1], gid)
    with pytest.raises(ValueError, match="NaN"):
        M.seed_identification(np.where(np.arange(len(probes))[:, None] == 0, np.nan, probes), gallery, pid, gid)
    with pytest.raises(ValueError, match="same d"):
        M.identification_stats(probes, gallery[:, :2], pid, gid)
    s, y = _random_scores(seed=3, n_gen=30, n_imp=30)
    for fars in ((0.1, 0.0), (0.1, 1.5), (0.1, float("nan")), (0.1, True)):  # each read None, like 0.0001
        with pytest.raises(ValueError, match=r"FAR must be in \(0, 1\]"):
            M.verification_summary(s, y, fars)
    assert M.verification_summary(s, y, (0.1, 0.0001))["tar_at_far"]["0.0001"] is None  # unmeasurable: None
    with pytest.raises(ValueError, match="same shape"):  # flattened against each other: AUC of shuffled pairs
        M.roc_curve(s[:6].reshape(2, 3), y[:6].reshape(3, 2))
    with pytest.raises(ValueError, match="block is a whole number"):
        M.pair_scores(gallery, gallery, block=0)
    with pytest.raises(ValueError, match="at least 2 folds"):
        M.kfold_accuracy(s, y, np.zeros(len(s), int))
    assert M.cmc(M.identification_stats(probes, gallery, pid, gid), 5) == \
        M.cmc(M.identification_stats(probes, gallery, pid, gid), (5,))


def test_embeddings_with_nan_are_refused_where_scores_are_made():
    """similarity_matrix and pair_scores returned NaN scores for a NaN embedding (every threshold rejects
    NaN, so it read as a confident non-match); the identification functions already refused them."""
    good = np.eye(3, dtype=np.float32)
    bad = good.copy()
    bad[1, 2] = np.nan
    for call in (lambda: M.similarity_matrix(bad, good), lambda: M.similarity_matrix(good, bad, "euclidean"),
                 lambda: M.pair_scores(good, bad), lambda: M.pair_scores(np.where(bad == 1, np.inf, good), good)):
        with pytest.raises(ValueError, match="embeddings contain NaN or infinity"):
            call()
    assert M.similarity_matrix(good, good).tolist() == np.eye(3).tolist()


def test_library_summaries_leave_a_far_among_faceless_comparisons_unmeasured():
    """probe_gallery_summary with 28 of 30 probes without a face read TAR 100 % at FAR 0.1 (the
    threshold was their own score), as did verification_summary over with_failures_to_acquire's scores:
    only the jobs' reports knew the rule. The floor now says which comparisons have no score."""
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(10, 16))
    ids = np.arange(30) % 10
    probes = gallery[ids] + 3.0 * rng.normal(size=(30, 16))
    acquired = np.arange(30) < 2
    out = M.probe_gallery_summary(probes, gallery, ids, np.arange(10), acquired=acquired, fars=(0.1, 0.5))
    assert out["tar@0.1"] is None and out["tar@0.5"] is None  # k = 27 and 135 of 270 impostors; 18 are real
    alone = M.probe_gallery_summary(probes[:2], gallery, ids[:2], np.arange(10), fars=(0.1, 0.01))
    assert alone["tar@0.1"] == 0.0 and alone["tar@0.01"] is None  # FAR 0.01 is below 1 / 18 impostors

    sims = M.similarity_matrix(probes[:2], gallery)
    same = ids[:2, None] == np.arange(10)[None, :]
    scores, labels = sims.ravel(), same.ravel().astype(int)
    stats = M.identification_stats(probes[:2], gallery, ids[:2], np.arange(10))
    floor = M.rejected_score(scores)
    s2, l2, _ = M.with_failures_to_acquire(scores, labels, stats, ids[2:], np.arange(10), floor=floor)
    assert M.verification_summary(s2, l2, fars=(0.1,))["tar_at_far"]["0.1"]["tar"] == 1.0  # unaware: the old reading
    assert M.verification_summary(s2, l2, fars=(0.1,), floor=floor)["tar_at_far"]["0.1"] is None
    with pytest.raises(ValueError, match="only 18 of the 270 impostor pairs have one"):
        M.tar_at_far(s2, l2, 0.1, floor=floor)
    with pytest.raises(ValueError, match="18 of 270"):
        M.seed_tar_at_far(s2, l2, 0.1, floor=floor)
    # FAR 0.05: k = round(13.5) = 14 <= 18 real impostors, a measurement with or without the floor
    assert M.tar_at_far(s2, l2, 0.05, floor=floor) == M.tar_at_far(s2, l2, 0.05)
    assert M.seed_tar_at_far(s2, l2, 0.05, floor=floor) == M.seed_tar_at_far(s2, l2, 0.05)


def test_metric_inputs_that_were_taken_silently_or_refused_cryptically():
    rng = np.random.default_rng(1)
    scores, labels = rng.normal(size=20), np.r_[np.ones(10), np.zeros(10)]
    with pytest.raises(ValueError, match="real numbers, got complex"):  # the imaginary part was dropped
        M.roc_curve(scores + 1j, labels)
    with pytest.raises(ValueError, match="scores must be numbers, got '0.5'"):  # read as 0.5, where text labels fail
        M.roc_curve(["0.5", *scores[1:].astype(str)], labels)
    assert M.roc_curve(scores.astype(object), labels).tar.tolist() == M.roc_curve(scores, labels).tar.tolist()
    with pytest.raises(ValueError, match="scores must be numbers, got None"):  # (an AttributeError)
        M.roc_curve([None, *scores[1:]], labels)
    from decimal import Decimal

    as_decimals = [Decimal(str(v)) for v in scores]
    assert M.roc_curve(as_decimals, labels).tar.tolist() == M.roc_curve(scores, labels).tar.tolist()
    assert M.verification_summary(scores, labels, fars=0.1)["tar_at_far"].keys() == {"0.1"}  # was a TypeError
    with pytest.raises(ValueError, match="numbers in"):
        M.verification_summary(scores, labels, fars="0.1")
    emb = rng.normal(size=(4, 3))
    emb[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):  # its identity's template was all NaN
        M.identity_templates(emb, [0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"one row per sample, \(N, D\), got shape \(3,\)"):  # an AxisError
        M.identity_templates(np.ones(3), [0, 0, 1])
    # identities checked as every other function checks them: 1 and "1" were one identity, None a TypeError
    for ids, kinds in (([1, "a", "b", "b", "c", "c"], r"\['int', 'str'\]"),
                       ([b"a", "a", "b", "b", "c", "c"], r"\['bytes', 'str'\]"),
                       ([None, "a", "b", "b", "c", "c"], "NoneType")):
        with pytest.raises(ValueError, match=f"identities are names or whole numbers, not both.*{kinds}"):
            M.identity_templates(rng.normal(size=(6, 3)), ids)
    with pytest.raises(ValueError, match="probe identities are names or whole numbers, not both"):
        M.identification_stats(rng.normal(size=(2, 3)), rng.normal(size=(2, 3)), [1, "a"], ["1", "a"])
    # a floor (the score of comparisons without one) that is not a finite number: NaN was ignored
    s, y = rng.normal(size=40), np.arange(40) % 2
    for floor in (float("nan"), "x", True, float("-inf")):
        for measure in (lambda: M.tar_at_far(s, y, 0.1, floor=floor), lambda: M.seed_tar_at_far(s, y, 0.1, floor),
                        lambda: M.verification_summary(s, y, floor=floor)):
            with pytest.raises(ValueError, match="floor is a finite score"):
                measure()
    assert M.tar_at_far(s, y, 0.1, floor=np.float32(-10)) == M.tar_at_far(s, y, 0.1)
    with pytest.raises(ValueError, match="one identity per probe"):  # "scores and labels differ in length"
        M.probe_gallery_summary(rng.normal(size=(5, 3)), rng.normal(size=(3, 3)), [0, 1], [0, 1, 2])


def test_the_seeds_identification_scores_in_float64_as_its_scripts_do():
    """In float32 a mated score 1e-9 above another identity's was a tie: rank-1 0.5 and "FPIR" 0
    where the seed's scripts read 1.0."""
    t, e = 0.6, 1e-9
    g0, g1 = np.array([t + e, np.sqrt(1 - (t + e) ** 2)]), np.array([t, -np.sqrt(1 - t ** 2)])
    probes = np.stack([[1.0, 0.0], (g0 + g1) / 2])
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    got = M.seed_identification(probes, np.stack([g0, g1]), ["a", "b"], ["a", "b"], fpirs=(0.5,), ranks=(1,))
    assert got["rank"][1] == 1.0 and got["fpir"]["0.5"] == 1.0
    assert M.similarity_matrix(probes, np.stack([g0, g1])).dtype == np.float32  # the jobs' scores stay float32


def test_direct_calls_refuse_rates_fold_ids_identities_and_flags_they_misread():
    """Found calling the metrics as a library: seed_tar_at_far read FAR NaN, 0 or 5 as the nearest ROC
    point (TAR 1.0); a NaN fold id was a fold of no pairs (mean accuracy NaN); NaN acquired flags
    counted as faces found; a None identity stopped in a sort; a score beyond float32 was called NaN."""
    s, y = np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 1, 0, 0])
    for far in (float("nan"), 0.0, 5.0, -1.0):
        with pytest.raises(ValueError, match=r"FAR must be in \(0, 1\]"):
            M.seed_tar_at_far(s, y, far)
    scores, labels = _random_scores(seed=2, n_gen=20, n_imp=20)
    for ids in (np.r_[np.zeros(20), np.ones(18), [np.nan, np.nan]], np.array([0] * 20 + [1] * 19 + [None], object)):
        with pytest.raises(ValueError, match=r"fold ids .*none missing"):
            M.kfold_accuracy(scores, labels, ids)
    import pandas as pd

    names = ["a"] * 20 + ["b"] * 20  # names as numpy, pandas object column and Categorical hold them: all taken
    named = [M.kfold_accuracy(scores, labels, folds) for folds in (np.array(names), pd.Series(names),
                                                                     pd.Categorical(names))]
    assert named == [M.kfold_accuracy(scores, labels, np.r_[np.zeros(20, int), np.ones(20, int)])] * 3

    matrix = np.array([[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.5, 0.4, 0.6]])
    for acquired, bad in (([1, np.nan, 1], "nan"), ([1, 0, 2], "2")):
        with pytest.raises(ValueError, match=rf"acquired flags are True/False \(or 1/0\), got {bad}$"):
            M.identification_stats(matrix, None, [0, 1, 7], [0, 1, 2], acquired=acquired)
    assert M.identification_stats(matrix, None, [0, 1, 7], [0, 1, 2], acquired=[1, 0, 1]).rank.tolist() == \
        M.identification_stats(matrix, None, [0, 1, 7], [0, 1, 2], acquired=[True, False, True]).rank.tolist()
    with pytest.raises(ValueError, match=r"acquired flags are True/False \(or 1/0\), got 'x', None$"):
        M.identification_stats(matrix, None, [0, 1, 7], [0, 1, 2], acquired=[True, None, "x"])
    with pytest.raises(ValueError, match="names or whole numbers, not both and none missing"):
        M.identification_stats(matrix, None, [0, None, 7], [0, 1, 2])
    ranks = M.identification_stats(matrix, None, ["a", "b", "z"], ["a", "b", "c"]).rank.tolist()
    for probe_ids, gallery_ids in ((pd.Series(["a", "b", "z"]), pd.Series(["a", "b", "c"])),
                                   (pd.Series([b"a", b"b", b"z"]), pd.Series([b"a", b"b", b"c"])),
                                   (pd.Categorical(["a", "b", "z"]), ["a", "b", "c"])):
        assert M.identification_stats(matrix, None, probe_ids, gallery_ids).rank.tolist() == ranks
    with pytest.raises(ValueError, match="identities include NaN"):
        M.identification_stats(matrix, None, [0.0, np.nan, 7.0], [0, 1, 2])
    with pytest.raises(ValueError, match=r"a \(P, G\) score matrix, got shape \(3,\)"):
        M.identification_stats(np.zeros(3), None, [0], [0, 1, 2])
    with pytest.raises(ValueError, match="beyond float32's range"):
        M.identification_stats(np.array([[1e300, 1.0]]), None, [0], [0, 1])
    assert M.identification_stats(matrix, None, ["a", "b", "z"], ["a", "b", "c"]).rank.tolist() == [1, 1, 0]
    # numbers against names matched nothing ("need both genuine and impostor pairs"); the seed's reading
    # left a None probe out as not in the gallery
    rng = np.random.default_rng(0)
    probes, gallery = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
    for call in (M.probe_gallery_summary, M.seed_identification):
        with pytest.raises(ValueError, match="probe identities are numbers and gallery identities names: none could"):
            call(probes, gallery, [0, 1, 2], ["0", "1", "2"])
        with pytest.raises(ValueError, match="names or whole numbers, not both and none missing"):
            call(probes, gallery, ["a", None, "c"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="probe identities are names and gallery identities numbers"):
        M.identification_stats(matrix, None, ["0", "1", "2"], [0, 1, 2])
    for call in (M.probe_gallery_summary, M.seed_identification):  # b"a" matched "a" in one function only
        with pytest.raises(ValueError, match="probe identities are bytes and gallery identities names"):
            call(probes, gallery, [b"a", b"b", b"c"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="probe identities are bytes and gallery identities names"):
        M.identification_stats(matrix, None, [b"a", b"b", b"z"], ["a", "b", "c"])


def test_more_direct_calls_refused_in_words(tmp_path):
    """From a review of the library as a researcher uses it: embeddings of two widths were numpy's
    matmul error, `fars=None` a TypeError, `far='0.1'` was refused as if it were the number 0.1, and
    `report.evaluate(fpirs=(0, 2))` was accepted (its cells n/a) where `fars=(0,)` is refused."""
    from recog.report import evaluate

    rng = np.random.default_rng(0)
    probes, gallery = rng.normal(size=(6, 8)), rng.normal(size=(4, 8))
    with pytest.raises(ValueError, match=r"the same d, got \(6, 8\) and \(4, 4\)"):
        M.probe_gallery_summary(probes, gallery[:, :4], list("abcdee"), list("abcd"))
    s, y = _random_scores(seed=4, n_gen=10, n_imp=10)
    with pytest.raises(ValueError, match="FARs are numbers in"):
        M.verification_summary(s, y, fars=None)
    with pytest.raises(ValueError, match=r"FAR must be in \(0, 1\], got '0\.1'"):
        M.tar_at_far(s, y, "0.1")
    stats = M.identification_stats(probes, gallery, list("abcdee"), list("abcd"))
    with pytest.raises(ValueError, match=r"FPIR must be in \(0, 1\], got 0"):
        evaluate("m", stats=stats, fpirs=(0, 2))


def test_eer_interpolates_where_the_false_accept_and_reject_rates_cross():
    """Worked by hand. Genuine .9 .5 .45 .2, impostors .6 .3 .1: between the thresholds .5 (FAR 1/3,
    FRR 1/2) and .45 (FAR 1/3, FRR 1/4) the rates cross two thirds of the way, at 1/3 and threshold
    .5 - 2/3 * .05. Genuine .9 .5 .5 against impostors .5 .1 .1 .1: from (FAR 0, FRR 2/3) at .9 to
    (1/4, 0) at .5 they cross 8/11 of the way, at 2/11 and threshold .9 - 8/11 * .4."""
    rate, threshold = M.eer([.9, .5, .45, .2, .6, .3, .1], [1, 1, 1, 1, 0, 0, 0])
    assert rate == pytest.approx(1 / 3) and threshold == pytest.approx(.5 - 2 / 3 * .05)
    rate, threshold = M.eer([.9, .5, .5, .5, .1, .1, .1], [1, 1, 1, 0, 0, 0, 0])
    assert rate == pytest.approx(2 / 11) and threshold == pytest.approx(.9 - 8 / 11 * .4)


def test_proportion_interval_is_wilsons():
    """The Wilson score interval, against SciPy's (`binomtest(...).proportion_ci(method="wilson")`), at
    the ends (0 and n successes start at 0 and end at 1), and its inputs checked."""
    from scipy.stats import binomtest

    for k, n, confidence in ((81, 263, 0.95), (5, 10, 0.95), (0, 10, 0.95), (10, 10, 0.95), (1, 1, 0.9),
                             (412, 425, 0.99)):
        want = binomtest(k, n).proportion_ci(confidence, method="wilson")
        assert M.proportion_interval(k, n, confidence) == pytest.approx((want.low, want.high), abs=1e-12)
    assert M.proportion_interval(0, 10)[0] == 0.0 and M.proportion_interval(10, 10)[1] == 1.0
    low, high = M.proportion_interval(30, 100)
    assert low < 0.3 < high and M.proportion_interval(300, 1000)[1] - M.proportion_interval(300, 1000)[0] < high - low
    for bad in ((5, 4), (-1, 4), (1, 0), (0.5, 4), (True, 4)):
        with pytest.raises(ValueError, match="whole numbers"):
            M.proportion_interval(*bad)
    for confidence in (0, 1, float("nan"), "0.95", True):
        with pytest.raises(ValueError, match="confidence"):
            M.proportion_interval(3, 4, confidence)


def test_threshold_rate_interval_holds_the_thresholds_uncertainty():
    """TAR at FAR 0.1 of genuine ~ N(1, 1) against impostors ~ N(0, 1) (true TAR 0.389): the interval
    holds the rate measured, is the same each time, is wide where 20 impostors set the threshold and
    narrows to about the Wilson interval's width as they grow (the threshold then hardly moves); trials
    no threshold accepts (failures to acquire) count against the rate; inputs are checked."""
    rng = np.random.default_rng(3)
    genuine = rng.normal(1, 1, 300)
    widths = []
    for m in (20, 200, 30000):
        impostors = rng.normal(0, 1, m)
        measured = M.tar_at_far(np.r_[genuine, impostors], np.r_[np.ones(300), np.zeros(m)], 0.1).tar
        low, high = M.threshold_rate_interval(genuine, 300, impostors, 0.1)
        assert low < measured < high and (low, high) == M.threshold_rate_interval(genuine, 300, impostors, 0.1)
        widths.append(high - low)
    wilson = np.subtract(*M.proportion_interval(117, 300)[::-1])
    assert widths[0] > 2 * widths[1] > 2 * wilson and widths[2] == pytest.approx(wilson, rel=0.15)
    # 300 more trials that no threshold accepts halve the rate, and its interval
    low, high = M.threshold_rate_interval(genuine, 600, impostors, 0.1)
    assert high < 0.25 and low > 0.15
    # every genuine pair accepted: the rate is not known to be 1 (a binomial bootstrap said [1, 1]); none: nor 0
    low, high = M.threshold_rate_interval(genuine + 10, 300, impostors, 0.1)
    assert high == 1.0 and 0.98 < low < 1.0
    low, high = M.threshold_rate_interval(genuine - 10, 300, impostors, 0.1)
    assert low == 0.0 and 0.0 < high < 0.02
    # several targets at once (a report's FARs: the impostors sorted once) give what each gives alone
    together = M.threshold_rate_intervals(genuine, 300, impostors, (0.1, 0.01, 0.001))
    assert together == [M.threshold_rate_interval(genuine, 300, impostors, f) for f in (0.1, 0.01, 0.001)]
    # refused as tar_at_far refuses it: 0.06 of 10 setters is below 1 / 10 (round(0.6) = 1 took the highest)
    with pytest.raises(ValueError, match="below 1 / setters"):
        M.threshold_rate_interval(genuine, 300, impostors[:10], 0.06)
    for bad, match in (({"trials": 299}, "trials"), ({"target": 0.0}, "target"), ({"target": 1e-6}, "no threshold"),
                       ({"confidence": 1}, "confidence"), ({"draws": 10}, "draws"), ({"seed": -1}, "seed"),
                       ({"seed": 1.5}, "seed")):
        kwargs = {"accepted": genuine, "trials": 300, "setters": impostors, "target": 0.1, **bad}
        with pytest.raises(ValueError, match=match):
            M.threshold_rate_interval(**kwargs)


def test_score_distributions_are_read_back_exactly_from_the_roc():
    """report.md's score table and scores.png come from the ROC: the same means, spreads and histograms
    as the raw scores give, whatever order the comparisons came in (two reducers order them differently),
    with the comparisons a failure left at the floor left out."""
    rng = np.random.default_rng(3)
    genuine = rng.normal(0.6, 0.12, 400).astype(np.float32)
    impostor = np.round(rng.normal(0.1, 0.09, 9000), 3).astype(np.float32)  # rounded: many tied scores
    scores = np.r_[genuine, impostor]
    labels = np.r_[np.ones(400, int), np.zeros(9000, int)]
    m = M.verification_summary(scores, labels)["scores"]
    g, i = genuine.astype(np.float64), impostor.astype(np.float64)
    assert m["genuine"]["count"] == 400 and m["impostor"]["count"] == 9000
    for side, raw in (("genuine", g), ("impostor", i)):
        assert m[side]["mean"] == pytest.approx(raw.mean(), abs=1e-12), side
        assert m[side]["std"] == pytest.approx(raw.std(), abs=1e-12), side
    d = (g.mean() - i.mean()) / np.sqrt((g.var() + i.var()) / 2)
    assert m["d_prime"] == pytest.approx(d, rel=1e-10) and 4.6 < m["d_prime"] < 4.9
    order = rng.permutation(scores.size)
    assert M.verification_summary(scores[order], labels[order])["scores"] == m  # to the last bit
    values, g_counts, i_counts = M.score_counts(M.roc_curve(scores, labels), 400, 9000)
    # counts the ROC was not made of read back other distributions (200 genuine: half the counts, as
    # if every step held half a comparison); refused, as a count that is not a whole number
    for genuine_count, why in ((200, "the ROC was not made of 200 genuine comparisons"),
                               (401, "the ROC was not made of 401 genuine"), (400.0, "a whole number, got 400.0")):
        with pytest.raises(ValueError, match=why):
            M.score_moments(M.roc_curve(scores, labels), genuine_count, 9000)
    edges = np.histogram_bin_edges(scores, bins=40)
    assert np.array_equal(np.histogram(values, edges, weights=g_counts)[0], np.histogram(genuine, edges)[0])
    assert np.array_equal(np.histogram(values, edges, weights=i_counts)[0], np.histogram(impostor, edges)[0])
    # 30 genuine and 500 impostor comparisons of samples without a face, at the floor: not scores
    floor = M.rejected_score(scores)
    with_failures = np.r_[scores, np.full(530, floor)]
    failed_labels = np.r_[labels, np.ones(30, int), np.zeros(500, int)]
    assert M.verification_summary(with_failures, failed_labels, floor=floor)["scores"] == m
    assert M.verification_summary(with_failures, failed_labels)["scores"] != m  # taken as scores, they count
    # a side without a spread: d' is a distance over no spread at all, not a number
    flat = M.verification_summary([1.0, 1.0, 0.0, 0.0], [1, 1, 0, 0])["scores"]
    assert flat["d_prime"] is None and flat["genuine"] == {"count": 2, "mean": 1.0, "std": 0.0}
    assert M.verification_summary([0.9, 0.5, 0.1, 0.0], [1, 1, 0, 0])["scores"]["d_prime"] == pytest.approx(
        0.65 / np.sqrt((0.2 ** 2 + 0.05 ** 2) / 2))  # means 0.7 and 0.05, spreads 0.2 and 0.05


def test_mcnemar_test_counts_the_discordant_trials_and_checks_its_inputs():
    from scipy.stats import binomtest

    first = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0], bool)
    second = np.array([1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 0], bool)
    t = M.mcnemar_test(first, second)
    assert (t.trials, t.both, t.first_only, t.second_only, t.neither) == (12, 3, 6, 1, 2)
    assert t.p_value == binomtest(6, 7, 0.5).pvalue == pytest.approx(0.125)  # 2 x (7 + 1) / 2^7
    assert M.mcnemar_test(second, first).p_value == t.p_value  # two-sided: the order does not matter
    assert M.mcnemar_test(first, first).p_value == 1.0  # no discordant trial: no evidence either way
    assert M.mcnemar_test(np.ones(30, bool), np.r_[np.zeros(10, bool), np.ones(20, bool)]).p_value == pytest.approx(
        2 / 2 ** 10)
    with pytest.raises(ValueError, match="one length"):
        M.mcnemar_test(first, second[:-1])
    with pytest.raises(ValueError, match="True/False"):
        M.mcnemar_test([0.3, 1], [1, 0])


def test_holm_adjust_steps_down_through_the_sorted_p_and_keeps_their_order():
    # sorted 0.005, 0.01, 0.03, 0.04 of 4 tests: x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04; the running
    # maximum lifts the last to 0.06 (a larger p never gets a smaller adjusted p)
    assert M.holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert M.holm_adjust([0.3, 0.6]).tolist() == [0.6, 0.6] and M.holm_adjust([0.7, 0.9]).tolist() == [1.0, 1.0]
    assert M.holm_adjust([0.02]).tolist() == [0.02] and M.holm_adjust([]).size == 0  # one test: nothing to adjust
    # ties keep their places; never below the p it adjusts, never above Bonferroni's m x p (nor 1)
    rng = np.random.default_rng(0)
    p = np.r_[rng.uniform(0, 0.05, 20), rng.uniform(0, 1, 46), 0.01, 0.01]
    adjusted = M.holm_adjust(p)
    assert (adjusted >= p).all() and (adjusted <= np.minimum(1, p.size * p) + 1e-15).all()
    assert (np.diff(adjusted[np.argsort(p, kind="stable")]) >= 0).all()
    assert adjusted[-1] == adjusted[-2]
    # statsmodels' multipletests(p, method="holm")[1] for this vector (run once outside the project,
    # statsmodels 0.15): 0.0004 x 8; 0.012 x 7; 0.021 x 6; 0.04 x 5 twice (ties); 0.3 x 3; 0.5 x 2 -> 1
    assert M.holm_adjust([0.012, 0.3, 0.0004, 0.04, 0.04, 0.9, 0.021, 0.5]) == pytest.approx(
        [0.084, 0.9, 0.0032, 0.2, 0.2, 1.0, 0.126, 1.0], abs=1e-12)
    for bad in ([0.5, 1.2], [-0.1], [np.nan], "0.5", [[0.1, 0.2]], ["a"], None):
        with pytest.raises(ValueError, match=r"p values are a 1-D list of numbers in \[0, 1\]"):
            M.holm_adjust(bad)
