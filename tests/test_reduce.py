"""The reducer's pieces without Ray: per-probe facts of blocks merge into the single-process figures."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs.reduce import (GalleryPart, Scoring, _probe_task, _sample_impostors, merge_blocks, part_bounds,
                         score_block)
from jobs.score import score
from maskgen.record import FaceRecord, records_table
from recog import metrics as M
from test_jobs_pipeline import assert_same_figures


def faces(n_ids=6, per_id=4, dim=16, seed=0):
    """Embeddings that cluster by identity, as a recogniser's do (a real model is not needed to
    check that blocks add up to the whole)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, dim))
    ids = np.repeat([f"id{i}" for i in range(n_ids)], per_id)
    emb = centres[np.repeat(np.arange(n_ids), per_id)] + 0.8 * rng.normal(size=(len(ids), dim))
    return emb.astype(np.float32), ids


def parts_of(gallery, g_ids, rows_per_part, similarity="cosine"):
    """The gallery cut into parts of at most `rows_per_part` as the reducer cuts it (each identity whole),
    with its identity codes."""
    identities = np.unique(g_ids)
    codes = np.searchsorted(identities, g_ids)
    prepared = Scoring((similarity,)).prepare((gallery,))[0]
    return identities, [GalleryPart.of((prepared[a:b],), codes[a:b], a, len(identities))
                        for a, b in part_bounds(codes, rows_per_part)]


def codes_of(p_ids, identities):
    return np.array([list(identities).index(i) if i in identities else -1 for i in p_ids])


def test_blocks_merge_into_the_single_process_figures():
    import pandas as pd

    probes, p_ids = faces(seed=1)
    gallery, g_ids = faces(n_ids=5, per_id=1, seed=2)  # id5 has no gallery entry: open-set probes
    one = score(pd.DataFrame({"identity": p_ids}), probes, pd.DataFrame({"identity": g_ids}), gallery, "one")
    n_mated = int(np.isin(p_ids, g_ids).sum())
    keep = max(1, int(np.ceil(n_mated * 0.1)))
    keys = [(f"k{i}", 0) for i in range(len(p_ids))]
    identities, parts = parts_of(gallery, g_ids, len(g_ids))
    codes = codes_of(p_ids, identities)
    blocks = [score_block(probes[i:i + 7], codes[i:i + 7], parts, Scoring(("cosine",)), None, keep, 0, keys[i:i + 7],
                          block=3) for i in range(0, len(p_ids), 7)]
    scores, labels, stats = merge_blocks(blocks, len(g_ids), keep, len(identities))
    from recog.report import evaluate

    many = evaluate("many", scores, labels, stats=stats)
    # blocks of 7 probes, scored 3 at a time, give exactly the figures of one process
    assert_same_figures(one, many)
    assert one.identification["mated_probes"] == 20 and one.verification["genuine"] == 20


@pytest.mark.parametrize("similarity", ["cosine", "euclidean"])
def test_a_gallery_in_parts_scores_as_one_part(similarity):
    """Mates spread over parts (an identity cut between two parts too), sampled and unsampled
    impostors: every per-probe fact and every score equal to one part's, and identification equal to
    recog.metrics on the whole matrix."""
    probes, p_ids = faces(n_ids=9, per_id=5, dim=24, seed=11)
    gallery, g_ids = faces(n_ids=8, per_id=3, dim=24, seed=12)  # id8's probes are unmated
    keys = [(f"id/{i:03d}.jpg", i % 2) for i in range(len(p_ids))]
    scoring = Scoring((similarity,))
    identities, whole = parts_of(gallery, g_ids, len(g_ids), similarity)
    codes = codes_of(p_ids, identities)
    for per_probe in (None, 5):
        one = score_block(probes, codes, whole, scoring, per_probe, 10, 3, keys)
        for rows in (1, 4, 7, 23):
            _, parts = parts_of(gallery, g_ids, rows, similarity)
            cut = score_block(probes, codes, parts, scoring, per_probe, 10, 3, keys, block=4)
            for k in ("mated", "rank"):
                assert np.array_equal(one[k], cut[k]), (k, rows, per_probe)
            for k in ("mated_score", "top_nonmated", "nonmated_top", "genuine", "impostor"):
                # the same pairs; BLAS may sum a product with one row or column in another order
                assert np.allclose(one[k], cut[k], rtol=0, atol=1e-5, equal_nan=True), (k, rows, per_probe)
    ref = M.identification_stats(probes, gallery, p_ids, g_ids, similarity, keep_nonmated=10)
    assert np.array_equal(one["rank"], ref.rank) and np.array_equal(one["mated"], ref.mated)
    for mine, theirs in ((one["mated_score"], ref.mated_score), (one["top_nonmated"], ref.top_nonmated),
                         (one["nonmated_top"], ref.nonmated_top)):
        assert np.allclose(mine, theirs, rtol=0, atol=1e-5, equal_nan=True)
    assert len(one["impostor"]) == 5 * len(p_ids)


def test_a_copy_of_the_mate_under_another_identity_ties_however_the_gallery_is_cut():
    """Every gallery entry has an exact copy under another identity (a photo filed twice), so every
    mated probe ties with a non-mated entry: rank 2 everywhere. With the gallery in several parts the
    mated score came from a product over the mates alone, a few ulps away from the counting
    product's, and some ties were lost (here rank-1 was 0.0 in one process, 0.15 from parts of 64)."""
    from recog.block_scoring import block_scorer

    rng = np.random.default_rng(5)
    base = rng.normal(size=(60, 512)).astype(np.float32)
    gallery = np.repeat(base, 2, axis=0)  # entries 2i and 2i+1: one vector, two identities
    g_ids = np.array([f"id{i:03d}" for i in range(len(gallery))])
    pick = rng.integers(0, len(base), 80) * 2
    probes = (gallery[pick] + 0.3 * rng.normal(size=(80, 512))).astype(np.float32)
    p_ids = g_ids[pick]
    keys = [(f"p/{i:03d}.jpg", 0) for i in range(len(p_ids))]
    ref = M.identification_stats(probes, gallery, p_ids, g_ids)
    assert (ref.rank == 2).all()
    scoring = Scoring(("cosine",))
    for rows in (len(g_ids), 64, 7):
        identities, parts = parts_of(gallery, g_ids, rows)
        codes = codes_of(p_ids, identities)
        for scorer in (None, block_scorer("onnxruntime", scoring)):
            cut = score_block(probes, codes, parts, scoring, None, 1, 0, keys, scorer=scorer)
            assert np.array_equal(cut["rank"], ref.rank), (rows, scorer)
    # a non-mated score below the mated one by more than float32 rounding is not a tie
    scores = np.array([[0.5, 0.5 - 1e-7, 0.5 - 1e-3]], np.float32)
    stats = M.identification_stats(scores, None, ["a"], ["a", "b", "c"])
    assert stats.rank.tolist() == [2]
    assert M.tie_floor(np.float32(0.5)) == np.float32(0.5 - 2.0 ** -16) and M.tie_floor(-np.inf) == -np.inf


def test_gallery_parts_hold_each_identity_whole():
    """A rank counts an identity once, which a part can do only for identities it holds whole: parts end
    where an identity ends, and parts that cut one are refused rather than counting it twice."""
    codes = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, 3, 3, 4])
    assert part_bounds(codes, 4) == [(0, 4), (4, 6), (6, 11), (11, 12)]  # 3's five entries: a part of its own
    assert part_bounds(codes, 100) == [(0, 12)] and part_bounds(np.arange(5), 2) == [(0, 2), (2, 4), (4, 5)]
    emb = np.eye(12, dtype=np.float32)
    cut = [GalleryPart.of((emb[:2],), codes[:2], 0, 5), GalleryPart.of((emb[2:],), codes[2:], 2, 5)]
    with pytest.raises(ValueError, match="identity code 0 is cut at entry 2"):
        score_block(emb[:1], [0], cut, Scoring(("cosine",)), None, 0, 0, [("k", 0)])
    shuffled = [GalleryPart.of((emb,), codes[::-1], 0, 5)]
    with pytest.raises(ValueError, match="identity order"):
        score_block(emb[:1], [0], shuffled, Scoring(("cosine",)), None, 0, 0, [("k", 0)])


def test_impostor_sample_is_the_seeded_choice_over_non_mated_entries():
    """The sampler skips mates arithmetically; it must draw exactly what choosing from the list of
    non-mated positions draws, and depend only on the seed and the probe's key."""
    rng = np.random.default_rng(5)
    for _ in range(50):
        size = int(rng.integers(2, 400))
        mates = np.sort(rng.choice(size, int(rng.integers(0, min(size - 1, 6) + 1)), replace=False))
        k = int(rng.integers(1, size - len(mates) + 1))
        key = ("a/" + str(rng.integers(1000)), int(rng.integers(3)))
        got = _sample_impostors([mates], size, k, 7, [key])[0]
        draw = np.random.default_rng([7, key[1] + 1, *key[0].encode()])
        expected = np.sort(draw.choice(np.setdiff1d(np.arange(size), mates), k, replace=False)) \
            if size - len(mates) > k else np.setdiff1d(np.arange(size), mates)
        assert np.array_equal(got, expected)


def test_a_shard_with_a_failed_face_is_read_without_shifting_embeddings(tmp_path):
    """A failed face keeps its row with a null embedding; the reducer must not pair the next face's
    vector with it (flatten() drops nulls)."""
    probes, p_ids = faces(n_ids=3, per_id=3, seed=3)
    vectors = [None] + list(probes[1:])
    status = ["no_face"] + ["ok"] * (len(p_ids) - 1)
    records = [FaceRecord(source_key=f"{p}/{i}.jpg", identity=p, input_row=f"{p}/{i}.jpg", masked=True, face_index=0,
                          model_id="m", mode="plain", similarity="cosine", status=st, embedding=v)
               for i, (p, st, v) in enumerate(zip(p_ids, status, vectors))]
    rows = {"key": [r.source_key for r in records]}
    out = tmp_path / "p" / "shards" / "g=x"
    out.mkdir(parents=True)
    pq.write_table(records_table(records, "shard", probes.shape[1]), out / "part-1.parquet")
    gallery, g_ids = faces(n_ids=3, per_id=1, seed=4)
    identities, parts = parts_of(gallery, g_ids, 3)
    got = _probe_task([str(tmp_path / "p")], [["shards/g=x/part-1.parquet"]], set(), identities, parts,
                      [None] * len(parts), Scoring(("cosine",)), None, 1, 0)
    assert got["first_key"] == (sorted(rows["key"][1:])[0], 0) and list(got["failed"]) == ["id0"]
    expected = M.normalize_rows(probes[1:]) @ M.normalize_rows(gallery).T
    order = np.argsort(rows["key"][1:])
    mates = np.array([list(g_ids).index(p) for p in np.asarray(p_ids[1:])[order]])
    assert np.allclose(got["mated_score"], expected[order][np.arange(8), mates], atol=1e-6)


def write_shard(folder, records, dim):
    import pyarrow.parquet as pq

    out = folder / "shards" / "g=x"
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(records_table(records, "shard", dim), out / f"part-{len(list(out.iterdir()))}.parquet")


def image_records(emb, ids, per_id: int, masked: bool, faceless=()) -> list:
    """One face record per image `<identity>/<n>.jpg` (model m, plain mode); the images at the
    positions in `faceless` have no face."""
    return [FaceRecord(source_key=f"{ids[i]}/{i % per_id}.jpg", identity=ids[i], input_row=f"{ids[i]}/{i % per_id}.jpg",
                       face_index=0, masked=masked, status="no_face" if i in faceless else "ok",
                       embedding=None if i in faceless else emb[i], model_id="m", mode="plain", similarity="cosine")
            for i in range(len(ids))]


def test_the_probes_of_an_identity_whose_gallery_had_no_face_are_mated_but_open_set_when_acquired_only(tmp_path):
    """Over the samples with a face, an identity none of whose gallery entries had one is not in the
    gallery, so its probes search for someone absent (the counts are the reducer's as before); report.md's
    "Every sample counted" now says so (it read "the same figures", which a review's recount took
    for an error)."""
    from jobs.score import run_score

    probes, p_ids = faces(n_ids=6, per_id=3, seed=5)  # id5's 3 probes: its one gallery image has no face
    gallery, g_ids = faces(n_ids=5, per_id=1, seed=6)
    common = {"model_id": "m", "mode": "plain", "similarity": "cosine"}
    write_shard(tmp_path / "p", [FaceRecord(source_key=f"{p}/p{i}.jpg", identity=p, input_row=f"{p}/p{i}.jpg",
                                            face_index=0, masked=True, embedding=v, **common)
                                 for i, (p, v) in enumerate(zip(p_ids, probes))], probes.shape[1])
    write_shard(tmp_path / "g", [FaceRecord(source_key=f"{g}/0.jpg", identity=g, input_row=f"{g}/0.jpg", face_index=0,
                                            masked=False, embedding=v, **common) for g, v in zip(g_ids, gallery)]
                + [FaceRecord(source_key="id5/0.jpg", identity="id5", input_row="id5/0.jpg", status="no_face",
                              masked=False, **common)], probes.shape[1])
    result = run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "r"), name="m")["result"].to_dict()
    headline, only = result["identification"], result["acquired_only"]["identification"]
    assert (headline["probes"], headline["mated_probes"]) == (18, 18)  # id5's 3 never identified
    assert (only["probes"], only["mated_probes"]) == (18, 15)  # id5's 3 search for someone not there
    assert "its probes are searches for someone absent from it" in (tmp_path / "r" / "report.md").read_text()


def test_every_probe_counts_alike_in_one_process_and_on_the_cluster(ray_runtime, tmp_path):
    """Probes without a face (no_face, corrupt) count in the headline figures; a duplicate row is not
    a sample; both reducers agree; acquired-only figures are the old ones."""
    from jobs.score import run_score

    probes, p_ids = faces(seed=5)
    gallery, g_ids = faces(n_ids=5, per_id=1, seed=6)
    dim = probes.shape[1]
    common = {"model_id": "m", "mode": "plain", "similarity": "cosine"}
    probe_records = [FaceRecord(source_key=f"{p}/p{i}.jpg", identity=p, input_row=f"{p}/p{i}.jpg", face_index=0,
                                masked=True, embedding=v, **common) for i, (p, v) in enumerate(zip(p_ids, probes))]
    failed = [FaceRecord(source_key=f"id0/bad{i}.jpg", identity="id0", input_row=f"id0/bad{i}.jpg", masked=True,
                         status=st, **common) for i, st in enumerate(["no_face", "corrupt", "duplicate"])]
    write_shard(tmp_path / "p", probe_records[:10] + failed[:1], dim)
    write_shard(tmp_path / "p", probe_records[10:] + failed[1:], dim)
    write_shard(tmp_path / "g", [FaceRecord(source_key=f"{g}/0.jpg", identity=g, input_row=f"{g}/0.jpg", face_index=0,
                                            masked=False, embedding=v, **common) for g, v in zip(g_ids, gallery)]
                + [FaceRecord(source_key="id9/0.jpg", identity="id9", input_row="id9/0.jpg", status="no_face",
                              masked=False, **common)], dim)
    reports = [run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / f"r{d}"), name="m",
                         distributed=d)["result"] for d in (False, True)]
    one, many = (r.to_dict() for r in reports)
    assert one == many
    acq = one["acquisition"]
    assert acq["probe"] == {"samples": 26, "acquired": 24, "failed_to_acquire": 2,
                            "failure_to_acquire_rate": 2 / 26}
    assert acq["gallery"]["samples"] == 6 and acq["gallery"]["failed_to_acquire"] == 1
    only = one["acquired_only"]
    assert one["identification"]["probes"] == 26 and only["identification"]["probes"] == 24
    hits = only["identification"]["rank"]["1"] * only["identification"]["mated_probes"]
    assert one["identification"]["rank"]["1"] == pytest.approx(hits / (only["identification"]["mated_probes"] + 2))
    # each failed probe of id0 adds its genuine pair and 5 impostor pairs (4 identities and id9's image,
    # which failed to enrol); each of the 24 acquired probes an impostor pair with id9's: all rejected
    assert one["verification"]["genuine"] == only["verification"]["genuine"] + 2
    assert one["verification"]["impostor"] == only["verification"]["impostor"] + 10 + 24
    # AUC is the share of genuine-impostor orderings (ties half): rejected pairs sit below every real one
    gen, imp = only["verification"]["genuine"], only["verification"]["impostor"]
    auc = (only["verification"]["auc"] * gen * imp + gen * 34 + 0.5 * 2 * 34) / ((gen + 2) * (imp + 34))
    assert one["verification"]["auc"] == pytest.approx(auc, abs=1e-12)
    # the seed's FPIR reading over 22 mated probes needs the 3rd largest pooled non-mated score at
    # 0.1: a pool sized from the 20 with a face (2) left the column out of the headline
    assert set(one["identification"]["seed_fpir"]) == set(only["identification"]["seed_fpir"]) == {"0.01", "0.1"}
    text = (tmp_path / "rFalse" / "report.md").read_text()
    assert "## Every sample counted" in text and "| m | 26 | 24 | 2 (7.7) | 1 of 6 |" in text
    # the 6 are samples (faces, and images without one), not images: the column said "gallery images"
    assert "| gallery samples without a face |" in text and "is a sample per face" in text
    # GPU scoring asked of a Ray with no GPU (and no MFR_GPU_WORKERS): its tasks waited for ever
    with pytest.raises(ValueError, match=r"scoring on GPUs \(--score-device gpu\) was asked for, but the cluster "
                                         r"has no GPU"):
        run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "rgpu"), name="m", distributed=True,
                  score_device="gpu")


def test_a_gpu_task_whose_cuda_fails_in_onnx_runtime_scores_on_its_cpu(monkeypatch):
    """ONNX Runtime's own errors (Fail, EPFail) are no RuntimeError: a CUDA failure in one failed the score."""
    import onnxruntime

    import jobs.reduce as R

    failure = getattr(onnxruntime.capi.onnxruntime_pybind11_state, "Fail")

    def cuda_fails(*args, **kwargs):
        raise failure("CUDA failure 100: no CUDA-capable device is detected")

    monkeypatch.setattr(R, "block_scorer", cuda_fails)
    with pytest.warns(RuntimeWarning, match="cannot use it .*CUDA failure 100.*scoring on this node's CPU"):
        scorer, how = R._task_scorer(Scoring(("cosine",)), "gpu")
    assert how == "numpy, no CUDA" and isinstance(scorer, R.NumpyBlockScorer)


def test_the_gallerys_samples_are_the_images_enrolment_tried(ray_runtime, tmp_path):
    """`mfr score` over a whole unmasked folder: its gallery side counted every image of the folder
    (21 samples beside 3 gallery entries, a faceless probe image counted as a failed gallery image
    too). Now: each identity's images up to its chosen gallery image(s), in both reducers."""
    import pandas as pd

    from jobs.score import enrolment_tried, run_score, tried_counts

    def enrolment_attempts(faces, failed, chosen, gallery_per_identity):
        return tried_counts(enrolment_tried(faces, failed, chosen, gallery_per_identity))

    emb, ids = faces(n_ids=3, per_id=5, seed=7)
    # id0's first image has no face on either side; id2's last image has none either
    write_shard(tmp_path / "g", image_records(emb, ids, 5, False, faceless={0, 14}), emb.shape[1])
    write_shard(tmp_path / "p", image_records(emb, ids, 5, True, faceless={0, 14}), emb.shape[1])
    reports = [run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / f"r{d}"), name="m",
                         distributed=d)["result"].to_dict() for d in (False, True)]
    assert reports[0] == reports[1]
    # gallery: id0/1.jpg (after id0/0.jpg, tried and faceless), id1/0.jpg, id2/0.jpg
    assert reports[0]["acquisition"]["gallery"] == {"samples": 4, "acquired": 3, "failed_to_acquire": 1,
                                                    "failure_to_acquire_rate": 0.25}
    # probes: every image but the 3 gallery images, the 2 faceless ones among them
    assert reports[0]["acquisition"]["probe"]["samples"] == 12
    assert reports[0]["acquisition"]["probe"]["failed_to_acquire"] == 2
    assert "no gallery entry" not in (tmp_path / "rFalse" / "report.md").read_text()  # every probe is mated

    # two per identity: an identity short of two faces went through all its images
    rows = pd.DataFrame({"key": ["a/1", "a/3", "b/0", "b/1", "b/2"], "identity": ["a", "a", "b", "b", "b"]})
    failed = pd.DataFrame({"key": ["a/0", "a/2", "b/3"], "identity": ["a", "a", "b"]})
    assert enrolment_attempts(rows, failed, {"a/1", "a/3", "b/0", "b/1"}, 2) == (4, 2)
    assert enrolment_attempts(rows.iloc[:1], failed, {"a/1"}, 2) == (1, 3)
    assert enrolment_attempts(rows.iloc[:0], failed.iloc[:0], set(), 1) == (0, 0)


def test_gallery_places_no_face_filled_are_failures_to_enrol_and_a_fusion_counts_every_models_images():
    """With 3 gallery images per identity: X has one face among its 3 images, Y none, Z two. Each place no
    image with a face filled is an empty entry (Y's three gave 3 and X's two gave none); a fusion's
    gallery images are acquired where every model found a face, tried or not (a model that enrolled
    X/1 never tried X/2, which was counted as failed)."""
    import pandas as pd

    from jobs.score import enrolment_tried, fused_enrolment, split_gallery, tried_counts, unenrolled_entries

    faces = pd.DataFrame({"key": ["X/0.jpg", "Z/0.jpg", "Z/2.jpg"], "identity": ["X", "Z", "Z"]})
    failed = pd.DataFrame({"key": ["X/1.jpg", "X/2.jpg", "Y/0.jpg", "Y/1.jpg", "Y/2.jpg", "Z/1.jpg"],
                           "identity": ["X", "X", "Y", "Y", "Y", "Z"]})
    # an identity's gallery images are its first in key order, however the shards gave its rows
    assert split_gallery(faces.iloc[::-1], 1) == split_gallery(faces, 1) == {"X/0.jpg", "Z/0.jpg"}
    for n, best, mean in ((1, ("Y",), ("Y",)), (3, ("X", "X", "Y", "Y", "Y", "Z"), ("Y",))):
        chosen = split_gallery(faces, n)
        tried = enrolment_tried(faces, failed, chosen, n)
        assert unenrolled_entries(tried, chosen, n, "best") == best
        assert unenrolled_entries(tried, chosen, n, "mean") == mean
    # two models: a found no face in X/0 and enrolled X/1; b enrolled X/0 and never tried X/1
    a_faces = pd.DataFrame({"key": ["X/1.jpg", "X/2.jpg"], "identity": ["X", "X"]})
    a_failed = pd.DataFrame({"key": ["X/0.jpg"], "identity": ["X"]})
    b_faces = pd.DataFrame({"key": ["X/0.jpg", "X/1.jpg", "X/2.jpg"], "identity": ["X"] * 3})
    a_tried = enrolment_tried(a_faces, a_failed, split_gallery(a_faces, 1), 1)
    b_tried = enrolment_tried(b_faces, a_failed.iloc[:0], split_gallery(b_faces, 1), 1)
    assert (tried_counts(a_tried), tried_counts(b_tried)) == ((1, 1), (1, 0))
    models = [(a_tried, set(a_faces.key)), (b_tried, set(b_faces.key))]
    for picked in (models, models[::-1]):
        assert fused_enrolment([t for t, _ in picked], [f for _, f in picked]) == (1, 1)  # X/1 acquired, X/0 not


def test_an_identity_whose_gallery_images_all_failed_is_a_failure_to_enrol(ray_runtime, tmp_path):
    """An identity none of whose unmasked images gave a face failed to enrol (ISO/IEC 19795-1; NIST's
    FRVT counts a search for it as a miss): its probes are mated searches never identified, and their
    comparisons with its would-be gallery image are rejected. They were scored as non-mated searches
    (7 probes, 4 mated, 4 genuine pairs), which also made them count towards FPIR."""
    from jobs.score import run_score

    emb, ids = faces(n_ids=3, per_id=3, seed=8)
    write_shard(tmp_path / "g", image_records(emb, ids, 3, False, faceless={6, 7, 8}), emb.shape[1])  # id2's
    write_shard(tmp_path / "p", image_records(emb, ids, 3, True), emb.shape[1])
    got = {}
    for distributed in (False, True):
        got[distributed] = run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / f"r{distributed}"),
                                     distributed=distributed)
        result = got[distributed]["result"]
        ident, v = result.identification, result.verification
        # id2's 3 images are all probes: mated, never identified; one empty gallery entry (one per identity)
        assert (ident["probes"], ident["mated_probes"], ident["unenrolled_probes"]) == (7, 7, 3)
        assert (v["genuine"], v["impostor"]) == (4 + 3, 7 * 3 - 7)
        only = result.acquired_only
        # id2's probes never identified: the 4 others' hits over all 7
        assert ident["rank"]["1"] == pytest.approx(only.identification["rank"]["1"] * 4 / 7)
        assert (only.identification["mated_probes"], only.verification["genuine"]) == (4, 4)
        assert any("3 of 7 probes are of an identity that failed to enrol (no gallery image of it gave a face"
                   in n for n in got[distributed]["notes"])
        report = (tmp_path / f"r{distributed}" / "report.md").read_text()
        assert "> **Note:** 3 of 7 probes are of an identity" in report and "no gallery entry" not in report
    one, many = (got[d]["result"] for d in (False, True))
    assert_same_figures(one.to_dict(), many, threshold_rtol=1e-6)


def test_images_without_an_identity_are_left_out_alike_by_both_reducers(ray_runtime, tmp_path):
    """`mfr embed` of a folder with photos at its top gives them identity "": `mfr score` took that for
    one person, so two strangers' photos were a genuine pair and one a gallery entry of the other."""
    from jobs.score import NothingToScore, run_score

    emb, ids = faces(n_ids=3, per_id=3, seed=9)
    strangers, _ = faces(n_ids=2, per_id=2, seed=10)
    common = {"model_id": "m", "mode": "plain", "similarity": "cosine"}

    def top_level(masked: bool) -> list:  # photos at the top, one without a face; a text file, no sample
        return [FaceRecord(source_key=f"stray{i}.jpg", identity="", input_row=f"stray{i}.jpg", face_index=0,
                           masked=masked, status="no_face" if i == 2 else "ok",
                           embedding=None if i == 2 else strangers[i], **common) for i in range(3)] + [
            FaceRecord(source_key="notes.txt", identity="", input_row="notes.txt", masked=masked,
                       status="not_an_image", **common)]

    for side, masked in (("g", False), ("p", True)):
        write_shard(tmp_path / side, image_records(emb, ids, 3, masked) + top_level(masked), emb.shape[1])
        write_shard(tmp_path / f"{side}-named", image_records(emb, ids, 3, masked), emb.shape[1])
    named = run_score(str(tmp_path / "p-named"), str(tmp_path / "g-named"), str(tmp_path / "named"))["result"]
    got = {}
    for distributed in (False, True):
        out = run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / f"r{distributed}"),
                        distributed=distributed)
        result = got[distributed] = out["result"]
        ident = result.identification
        # as if the strays were not there: 3 identities, 6 probes, 3 gallery entries
        assert (ident["probes"], ident["gallery"], ident["gallery_identities"]) == (6, 3, 3), ident
        assert result.verification["genuine"] == named.verification["genuine"] == 6
        assert result.acquisition["no_identity"] == {"probe": 3, "gallery": 3}
        assert result.acquisition["probe"] == named.acquisition["probe"]
        note = ("3 probe and 3 gallery image(s) have no identity and were left out: a folder input's identity is "
                "an image's parent folder's name")
        assert any(n.startswith(note) for n in out["notes"]), out["notes"]
        assert f"> **Note:** {note}" in (tmp_path / f"r{distributed}" / "report.md").read_text()
    assert_same_figures(got[False].to_dict(), got[True], threshold_rtol=1e-6)
    # fused with a second model: the fusion counts them too, on both reducers (one process dropped them)
    for side, masked in (("g", False), ("p", True)):
        records = [r.with_(model_id="m2", embedding=None if r.embedding is None else r.embedding[::-1].copy())
                   for r in image_records(emb, ids, 3, masked) + top_level(masked)]
        write_shard(tmp_path / f"{side}2", records, emb.shape[1])
    for distributed in (False, True):
        out = run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / f"f{distributed}"), name="a",
                        also=[("b", str(tmp_path / "p2"), str(tmp_path / "g2"))], fuse=[["a", "b"]],
                        distributed=distributed)
        fused = out["results"][-1]
        assert fused.name == "fusion: a + b" and fused.acquisition["no_identity"] == {"probe": 3, "gallery": 3}
    # a side whose every sample lacks an identity: said so ("no ... has an embedded face" of ok images)
    write_shard(tmp_path / "strays", top_level(True)[:2], emb.shape[1])
    for distributed in (False, True):
        with pytest.raises(NothingToScore, match=r"the 2 probe image\(s\) under .*strays have no identity"):
            run_score(str(tmp_path / "strays"), str(tmp_path / "g"), str(tmp_path / f"s{distributed}"),
                      distributed=distributed)


def test_a_fusion_chooses_its_gallery_among_faces_every_model_found_in_any_order(ray_runtime, tmp_path):
    """Model b finds no face in any of id2's gallery-side images, model a in all: the fusion has no
    template for id2, so its 3 probes are mated searches never identified, whichever model is named first
    (only the first model's failures counted: fused as a + b, they were non-mated searches). Where b
    misses id3's first image only, both models take id3's second for the fusion (each chose its own, and
    the fusion had no entry for id3)."""
    from jobs.score import run_score

    emb, ids = faces(n_ids=4, per_id=3, seed=14)
    other, _ = faces(n_ids=4, per_id=3, seed=15)
    uris = {}
    for model, vectors in (("a", emb), ("b", other)):
        for side, masked in (("g", False), ("p", True)):
            records = [FaceRecord(source_key=key, identity=ids[i], input_row=key, face_index=0, masked=masked,
                                  embedding=None if faceless else vectors[i], status="no_face" if faceless else "ok",
                                  model_id=f"{model}@sha256:0{model}", mode="plain", similarity="cosine")
                       for i in range(len(ids)) for key in [f"{ids[i]}/{i % 3}.jpg"]
                       for faceless in [model == "b" and not masked and (ids[i] == "id2" or key == "id3/0.jpg")]]
            write_shard(tmp_path / model / side, records, emb.shape[1])
        uris[model] = (str(tmp_path / model / "p"), str(tmp_path / model / "g"))
    got = []
    for distributed in (False, True):
        for first, second in (("a", "b"), ("b", "a")):
            out = run_score(*uris[first], str(tmp_path / f"r{distributed}{first}"), name=first,
                            also=[(second, *uris[second])], fuse=[[first, second]], distributed=distributed)
            fused = out["results"][-1].to_dict()
            ident = fused["identification"]
            # id0, id1: 2 probes each; id2: all 3 (no gallery image chosen); id3: 2 (id3/1 is the gallery's)
            assert (ident["probes"], ident["mated_probes"], ident["unenrolled_probes"]) == (9, 9, 3)
            assert ident["gallery"] == ident["gallery_identities"] == 3
            # gallery samples: id0/0, id1/0, id3/0 (b: no face), id3/1, id2's three (b: none)
            assert fused["acquisition"]["gallery"]["samples"] == 7
            assert fused["acquisition"]["gallery"]["failed_to_acquire"] == 4
            got.append(fused)
    for other_result in got[1:]:
        assert_same_figures(got[0], other_result, threshold_rtol=1e-6)


def test_a_fusion_over_gallery_images_of_two_faces_counts_each_face(ray_runtime, tmp_path):
    """A gallery image of two faces (`--face all`) is two entries: one process keyed the fusion's gallery
    by image alone and stopped ("scores (8, 4) and mated flags (8, 8) differ in shape") where the
    distributed reducer fused it. A fusion given twice, and a model fused with itself, are refused on
    both."""
    from jobs.score import run_score

    emb, ids = faces(n_ids=4, per_id=4, seed=16)
    other, _ = faces(n_ids=4, per_id=4, seed=17)
    uris = {}
    for model, vectors in (("a", emb), ("b", other)):
        common = {"model_id": f"{model}@sha256:0{model}", "mode": "plain", "similarity": "cosine"}
        gallery = [FaceRecord(source_key=f"{ids[i]}/0.jpg", identity=ids[i], input_row=f"{ids[i]}/0.jpg",
                              face_index=i % 4, masked=False, embedding=vectors[i], **common)
                   for i in range(len(ids)) if i % 4 < 2]  # faces 0 and 1 of each identity's first image
        probes = [FaceRecord(source_key=f"{ids[i]}/{i % 4}.jpg", identity=ids[i], input_row=f"{ids[i]}/{i % 4}.jpg",
                             face_index=0, masked=True, embedding=vectors[i], **common)
                  for i in range(len(ids)) if i % 4 >= 2]
        write_shard(tmp_path / model / "g", gallery, emb.shape[1])
        write_shard(tmp_path / model / "p", probes, emb.shape[1])
        uris[model] = (str(tmp_path / model / "p"), str(tmp_path / model / "g"))
    got = []
    for distributed in (False, True):
        out = run_score(*uris["a"], str(tmp_path / f"r{distributed}"), name="a", also=[("b", *uris["b"])],
                        fuse=[["a", "b"]], distributed=distributed)
        fused = out["results"][-1].to_dict()
        assert fused["name"] == "fusion: a + b"
        assert (fused["identification"]["probes"], fused["identification"]["gallery"]) == (8, 8)
        got.append(fused)
        for fuse, also, why in (([["a", "b"], ["b", "a"]], ("b", *uris["b"]), "that fusion is given twice"),
                                ([["a", "c"]], ("c", *uris["a"]), "the methods to fuse must differ: .* given twice")):
            with pytest.raises(ValueError, match=why):
                run_score(*uris["a"], str(tmp_path / f"x{distributed}"), name="a", also=[also], fuse=fuse,
                          distributed=distributed)
    assert_same_figures(got[0], got[1], threshold_rtol=1e-6)


def test_two_modes_of_one_model_fuse_as_two_methods(ray_runtime, tmp_path):
    """`--fuse 'a plain','a flip'` over one folder holding both modes was refused ("the models to fuse
    must differ", the same model_id twice) though they are two methods with scores of their own."""
    from jobs.score import run_score

    emb, ids = faces(n_ids=4, per_id=4, seed=21)
    flipped, _ = faces(n_ids=4, per_id=4, seed=22)
    gallery, probes = [], []
    for mode, vectors in (("plain", emb), ("flip", flipped)):
        common = {"model_id": "a@sha256:0a", "mode": mode, "similarity": "cosine"}
        for i in range(len(ids)):
            side = gallery if i % 4 == 0 else probes
            side.append(FaceRecord(source_key=f"{ids[i]}/{i % 4}.jpg", identity=ids[i], input_row=f"{ids[i]}/{i % 4}.jpg",
                                   face_index=0, masked=i % 4 != 0, embedding=vectors[i], **common))
    write_shard(tmp_path / "g", gallery, emb.shape[1])
    write_shard(tmp_path / "p", probes, emb.shape[1])
    uris = (str(tmp_path / "p"), str(tmp_path / "g"))
    got = []
    for distributed in (False, True):
        out = run_score(*uris, str(tmp_path / f"r{distributed}"), name="a plain", also=[("a flip", *uris)],
                        fuse=[["a plain", "a flip"]], distributed=distributed)
        fused = out["results"][-1].to_dict()
        assert fused["name"] == "fusion: a plain + a flip"
        assert (fused["identification"]["probes"], fused["identification"]["gallery"]) == (12, 4)
        got.append(fused)
        # "a" names the model's plain rows in a folder of several modes: "a plain" under another name
        with pytest.raises(ValueError, match=r"the methods to fuse must differ: a@sha256:0a \(plain\) is given twice"):
            run_score(*uris, str(tmp_path / f"x{distributed}"), name="a", also=[("a plain", *uris)],
                      fuse=[["a", "a plain"]], distributed=distributed)
    assert_same_figures(got[0], got[1], threshold_rtol=1e-6)


def test_the_distributed_reducer_reads_the_method_named_as_one_process_does(ray_runtime, tmp_path):
    """Folders holding two modes of a model (`mfr embed`, then `mfr embed --mode flip`, into one
    output): the distributed reducer read every row, each image twice, with or without --name (36
    probes where one process scores 18); probes and gallery of two models were scored together
    under the gallery's model's name, where one process refuses them."""
    from jobs.score import run_score

    emb, ids = faces(n_ids=4, per_id=4, seed=9)
    flipped, _ = faces(n_ids=4, per_id=4, seed=10)

    def records(vectors, masked, model="m@sha256:00", mode="plain"):
        return [FaceRecord(source_key=f"{ids[i]}/{i % 4}.jpg", identity=ids[i], input_row=f"{ids[i]}/{i % 4}.jpg",
                           face_index=0, masked=masked, embedding=vectors[i], model_id=model, mode=mode,
                           similarity="cosine") for i in range(len(ids))]

    for side, masked in (("p", True), ("g", False)):
        write_shard(tmp_path / side, records(emb, masked), emb.shape[1])
        write_shard(tmp_path / side, records(flipped, masked, mode="flip"), emb.shape[1])
    reports = [run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / f"r{d}"), name="m plain",
                         distributed=d)["result"].to_dict() for d in (False, True)]
    assert reports[0] == reports[1] and reports[0]["identification"]["probes"] == 12
    for d in (False, True):
        with pytest.raises(ValueError, match=r"holds the shards of several models or modes \(m flip, m plain\)"):
            run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "x"), distributed=d)
    write_shard(tmp_path / "q", records(emb, True, model="other@sha256:11"), emb.shape[1])
    for d in (False, True):
        with pytest.raises(ValueError, match=r"probe and gallery shards must come from one model, found "
                                             r"\['m@sha256:00', 'other@sha256:11'\]"):
            run_score(str(tmp_path / "q"), str(tmp_path / "g"), str(tmp_path / "x"), name="m plain", distributed=d)


def test_folders_of_two_embedding_sizes_repeated_rows_and_missing_columns_on_both_reducers(ray_runtime, tmp_path):
    """Three things a review found, each on both reducers: a folder holding models of two embedding
    sizes failed `--distributed` with "node: string" (pyarrow joined the other model's empty table)
    though --name chose one; rows there twice (two runs' shards copied together) were scored as samples
    of their own (30 probes as 45); a shard without a column was a KeyError traceback, naming nothing."""
    import pyarrow.parquet as pq

    from jobs.score import run_score

    small, ids = faces(n_ids=4, per_id=4, dim=16, seed=21)
    large, _ = faces(n_ids=4, per_id=4, dim=24, seed=22)

    def records(vectors, masked, model):
        return [FaceRecord(source_key=f"{ids[i]}/{i % 4}.jpg", identity=ids[i], input_row=f"{ids[i]}/{i % 4}.jpg",
                           face_index=0, masked=masked, embedding=vectors[i], model_id=model, mode="plain",
                           similarity="cosine") for i in range(len(ids))]

    for side, masked in (("p", True), ("g", False)):
        write_shard(tmp_path / side, records(small, masked, "small@sha256:00"), 16)
        write_shard(tmp_path / side, records(large, masked, "large@sha256:11"), 24)
    for name in ("small", "large"):
        reports = [run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / f"{name}{d}"), name=name,
                             distributed=d)["result"].to_dict() for d in (False, True)]
        assert reports[0] == reports[1] and reports[0]["identification"]["probes"] == 12
    # the first model's probe shard copied in again, beside the first
    shards = tmp_path / "p" / "shards" / "g=x"
    (shards / "part-2.parquet").write_bytes((shards / "part-0.parquet").read_bytes())
    for d in (False, True):
        with pytest.raises(ValueError, match=r"16 face row\(s\) are there more than once \(e.g. '.*' face 0 of "
                                             r"small plain\): shards of two runs"):
            run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / f"twice{d}"), name="small",
                      distributed=d)
    (shards / "part-2.parquet").unlink()
    # repeats of another mode than the one scored are not this method's (--distributed refused them)
    flipped = [r.with_(mode="flip") for r in records(small, True, "small@sha256:00")]
    write_shard(tmp_path / "p", flipped, 16)
    write_shard(tmp_path / "p", flipped, 16)
    reports = [run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / f"flip{d}"), name="small plain",
                         distributed=d)["result"].to_dict() for d in (False, True)]
    assert reports[0] == reports[1] and reports[0]["identification"]["probes"] == 12
    for extra in sorted(shards.glob("part-*.parquet"))[-2:]:
        extra.unlink()
    # a shard without its identity column
    table = pq.read_table(shards / "part-0.parquet")
    pq.write_table(table.drop(["identity"]), shards / "part-0.parquet")
    for d in (False, True):
        with pytest.raises(ValueError, match=rf"{shards / 'part-0.parquet'} has no column\(s\) \['identity'\]"):
            run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / f"cut{d}"), name="small",
                      distributed=d)


def test_fusion_of_models_that_chose_other_gallery_images_counts_alike_in_both_reducers(ray_runtime, tmp_path):
    """Model b found no face in id2/0.jpg, so its gallery image of id2 is id2/1.jpg. One process left out
    of the fusion's probes only each model's own gallery images, so id2/0.jpg and id2/1.jpg were counted
    as probes without a face (20 probe samples; the distributed reducer: 18), and above max_pairs it
    sampled impostors over all pairs, not per probe as the distributed reducer does (48 pairs beside 30)."""
    from jobs.score import run_score

    def side(folder, model, similarity, seed, faceless=()):
        emb, ids = faces(n_ids=4, per_id=4, seed=seed)
        for masked, sub in ((True, "p"), (False, "g")):
            records = []
            for i, identity in enumerate(ids):
                key = f"{identity}/{i % 4}.jpg"
                ok = masked or key not in faceless
                records.append(FaceRecord(source_key=key, identity=identity, input_row=key, masked=masked,
                                          face_index=0 if ok else -1, status="ok" if ok else "no_face",
                                          embedding=emb[i] if ok else None, model_id=model, mode="plain",
                                          similarity=similarity))
            write_shard(tmp_path / folder / sub, records, emb.shape[1])
        return str(tmp_path / folder / "p"), str(tmp_path / folder / "g")

    a_p, a_g = side("a", "a@sha256:01", "cosine", 11)
    b_p, b_g = side("b", "b@sha256:02", "euclidean", 12, faceless=("id2/0.jpg",))
    for extra in ({}, {"max_pairs": 40}):
        runs = [run_score(a_p, a_g, str(tmp_path / f"r{d}"), name="a", also=[("b", b_p, b_g)], fuse=[["a", "b"]],
                          distributed=d, force=True, **extra)["results"] for d in (False, True)]
        one, many = (r[2].to_dict() for r in runs)
        assert one["acquisition"] == many["acquisition"]
        # 16 images less the fusion's 4 gallery images, chosen among the faces both models found (id2's
        # second for both; each model's own choice left 11)
        assert one["acquisition"]["probe"]["samples"] == 12
        assert one["verification"]["pairs"] == many["verification"]["pairs"]
        if not extra:
            assert one == many
        else:  # the report says the impostors are a sample (it said nothing)
            assert [r[0].verification["impostors_sampled_per_probe"] for r in runs] == [2, 2]  # 40 // 12 - 1
            assert "Impostor pairs are a seeded sample of 2 per probe" in (tmp_path / "rTrue" / "report.md").read_text()


def test_a_pairs_protocol_mostly_without_faces_leaves_tar_at_far_unmeasured(tmp_path):
    """Pairs whose images mostly had no face: the impostor pairs at the FAR 0.1 threshold are rejected
    ones, scored below every real pair, so TAR@FAR 0.1 read 100 %."""
    from jobs.score import score_pairs
    from recog.protocols import Pairs

    emb, ids = faces(n_ids=4, per_id=3, seed=13)
    records = [FaceRecord(source_key=f"{ids[i]}/{i}.jpg", identity=ids[i], input_row=f"{ids[i]}/{i}.jpg",
                          face_index=0 if i < 4 else -1, status="ok" if i < 4 else "no_face",
                          embedding=emb[i] if i < 4 else None, masked=False, model_id="m", mode="plain",
                          similarity="cosine") for i in range(len(ids))]
    write_shard(tmp_path / "emb", records, emb.shape[1])
    keys = [r.source_key for r in records]
    a, b = zip(*[(keys[i], keys[j]) for i in range(len(keys)) for j in range(i + 1, len(keys))])
    labels = [int(ids[keys.index(x)] == ids[keys.index(y)]) for x, y in zip(a, b)]
    result = score_pairs([str(tmp_path / "emb")], Pairs(list(a), list(b), labels), "m")
    v = result.verification
    real = sum(1 for x, y, lab in zip(a, b, labels) if not lab and keys.index(x) < 4 and keys.index(y) < 4)
    assert real == 3 < round(0.1 * v["impostor"]) and v["tar_at_far"]["0.1"] is None
    # only two images of one person with a face: the pairs with a face on both sides are one genuine
    # pair, and their own figures (the faces-only ROC) stopped the evaluation after the embedding
    one_sided = [r if keys.index(r.source_key) < 2 else r.with_(status="no_face", face_index=-1, embedding=None)
                 for r in records]
    write_shard(tmp_path / "two", one_sided, emb.shape[1])
    result = score_pairs([str(tmp_path / "two")], Pairs(list(a), list(b), labels), "m")
    assert result.acquired_only is None and result.verification["auc"] is not None
    assert result.verification["acquired_only_unmeasured"] == "the 1 pair(s) with a face on both sides are all genuine"
    # a protocol of one kind of pair: said before any shard is read (the metrics' generic words, after)
    genuine = [i for i, lab in enumerate(labels) if lab]
    with pytest.raises(ValueError, match=r"all 12 pairs are genuine: verification needs both"):
        score_pairs([str(tmp_path / "nowhere")], Pairs([a[i] for i in genuine], [b[i] for i in genuine],
                                                       [1] * len(genuine)), "m")


def test_mean_templates_alike_in_one_process_and_on_the_cluster(ray_runtime, tmp_path):
    """--gallery-template mean: one entry per identity, the normalised mean of its images; the
    gallery's images are still kept out of the probes."""
    from jobs.score import run_score

    probes, p_ids = faces(n_ids=5, per_id=3, seed=7)
    gallery, g_ids = faces(n_ids=5, per_id=3, seed=8)
    dim = probes.shape[1]
    common = {"model_id": "m", "mode": "plain", "similarity": "cosine", "face_index": 0}
    write_shard(tmp_path / "p", [FaceRecord(source_key=f"{p}/p{i}.jpg", identity=p, input_row=f"{p}/p{i}.jpg",
                                            masked=True, embedding=v, **common)
                                 for i, (p, v) in enumerate(zip(p_ids, probes))], dim)
    write_shard(tmp_path / "g", [FaceRecord(source_key=f"{g}/g{i}.jpg", identity=g, input_row=f"{g}/g{i}.jpg",
                                            masked=False, embedding=v, **common)
                                 for i, (g, v) in enumerate(zip(g_ids, gallery))], dim)
    got = {}
    for template in ("best", "mean"):
        got[template] = [run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / f"r-{template}-{d}"),
                                   name="m", gallery_per_identity=3, gallery_template=template,
                                   distributed=d)["result"].to_dict() for d in (False, True)]
        assert got[template][0] == got[template][1]
        # the gallery in parts of at most 2 entries: an identity of 3 images is a part of its own ("best"),
        # templates are in several
        cut = run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / f"r-{template}-parts"), name="m",
                        gallery_per_identity=3, gallery_template=template, distributed=True,
                        gallery_part_rows=2)["result"]
        assert_same_figures(got[template][0], cut, threshold_rtol=1e-6)
    best, mean = got["best"][0], got["mean"][0]
    assert best["identification"]["gallery"] == 15 and mean["identification"]["gallery"] == 5
    assert best["identification"]["gallery_identities"] == mean["identification"]["gallery_identities"] == 5
    # ranks of identities on both reducers: the CMC curve runs to the 5 identities, not the 15 images
    whole = M.identification_stats(probes, gallery, p_ids, g_ids)
    assert [r for r, _ in best["cmc_curve"]] == [1, 2, 3, 4, 5]
    assert best["cmc_curve"] == [[k, pytest.approx(v)] for k, v in M.cmc(whole, range(1, 6)).items()]
    assert mean["verification"]["genuine"] == 15 and mean["verification"]["impostor"] == 60
    templates, ids = M.identity_templates(gallery, g_ids)
    stats = M.identification_stats(probes, templates, p_ids, ids)
    assert mean["identification"]["rank"]["1"] == pytest.approx(M.cmc(stats, (1,))[1])
    with pytest.raises(ValueError, match="gallery template"):
        run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "x"), gallery_template="median")


def test_a_gallery_that_takes_every_image_says_so_on_both_reducers(ray_runtime, tmp_path):
    """With 3 images per identity and --gallery-per-identity 3 no image is left to be a probe: the
    command said no probe image had an embedded face and sent the user to a status column of 'ok's."""
    from jobs.score import NothingToScore, run_score

    probes, p_ids = faces(n_ids=3, per_id=3, seed=9)
    gallery, _ = faces(n_ids=3, per_id=3, seed=10)
    dim = probes.shape[1]
    common = {"model_id": "m", "mode": "plain", "similarity": "cosine", "face_index": 0}
    for side, vectors, masked in (("p", probes, True), ("g", gallery, False)):  # masked and unmasked of one image
        write_shard(tmp_path / side, [FaceRecord(source_key=f"{p}/{i}.jpg", identity=p, input_row=f"{p}/{i}.jpg",
                                                 masked=masked, embedding=v, **common)
                                      for i, (p, v) in enumerate(zip(p_ids, vectors))], dim)
    for distributed in (False, True):
        with pytest.raises(NothingToScore, match=r"every image under .*/p with an embedded face is one of the "
                                                 r"gallery's images \(the first 3 of each identity"):
            run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / f"r{distributed}"),
                      gallery_per_identity=3, distributed=distributed)
    two = run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "two"),
                    gallery_per_identity=2)["result"].to_dict()
    assert two["identification"]["probes"] == 3 and two["identification"]["gallery"] == 6


@pytest.mark.parametrize("rows_per_part", [40, 7])
def test_the_onnx_block_graph_gives_the_numpy_facts(rows_per_part):
    """The graph GPU tasks run (here on ONNX Runtime's CPU provider) against NumPy: same mates, ranks
    and pools, scores to float32 rounding; blocks without mates or sampled impostors included."""
    from recog.block_scoring import block_scorer

    probes, p_ids = faces(n_ids=9, per_id=5, dim=32, seed=21)
    gallery, g_ids = faces(n_ids=8, per_id=5, dim=32, seed=22)
    keys = [(f"id/{i:03d}.jpg", 0) for i in range(len(p_ids))]
    identities, parts = parts_of(gallery, g_ids, rows_per_part)
    codes = codes_of(p_ids, identities)
    scoring = Scoring(("cosine",))
    for per_probe in (None, 3):
        mine = score_block(probes, codes, parts, scoring, per_probe, 12, 1, keys, block=5)
        graph = score_block(probes, codes, parts, scoring, per_probe, 12, 1, keys, block=5,
                            scorer=block_scorer("onnxruntime", scoring))
        assert np.array_equal(mine["mated"], graph["mated"]) and np.array_equal(mine["rank"], graph["rank"])
        for k in ("mated_score", "top_nonmated", "nonmated_top", "genuine", "impostor"):
            assert mine[k].shape == graph[k].shape and np.allclose(mine[k], graph[k], rtol=0, atol=1e-5,
                                                                   equal_nan=True), k
    with pytest.raises(ValueError, match="one cosine model"):
        block_scorer("onnxruntime", Scoring(("euclidean",)))
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
            block_scorer("onnxruntime", scoring, device="cuda")


def test_block_rows_follow_the_scorer():
    """NumPy blocks hold at most 2^24 scores and 256 probes; GPU blocks 2^26 scores and 4,096 probes
    (the CUDA graph's fixed cost per call, about 19 ms on an H200, is spread over more products);
    always at least one probe, even against a part larger than a block."""
    from recog.block_scoring import NumpyBlockScorer, OnnxBlockScorer, rows_for

    assert NumpyBlockScorer.rows_per_block(100_000) == (1 << 24) // 100_000 == 167
    assert NumpyBlockScorer.rows_per_block(1_000) == 256
    assert NumpyBlockScorer.rows_per_block(1 << 30) == 1
    assert rows_for(100_000, 1 << 26, 4096) == 671 and rows_for(1_000, 1 << 26, 4096) == 4096
    assert OnnxBlockScorer("cpu").rows_per_block(100_000) == 167  # the CPU provider keeps NumPy's blocks


def test_a_damaged_first_shard_is_named_by_mfr_score(tmp_path):
    """`mfr score` read its first shard for the report's title with pyarrow's bare message ("Parquet magic
    bytes not found in footer"), naming no file."""
    from jobs.score import run_score

    emb, ids = faces(n_ids=3, per_id=3, seed=12)
    for side, masked in (("g", False), ("p", True)):
        write_shard(tmp_path / side, image_records(emb, ids, 3, masked), emb.shape[1])
    damaged = tmp_path / "g" / "shards" / "g=x" / "part-0.parquet"
    damaged.write_bytes(damaged.read_bytes()[:50])
    with pytest.raises(ValueError, match=f"{damaged} is not a readable Parquet shard"):
        run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "r"))


def test_a_users_report_is_not_written_over(tmp_path):
    """`mfr score P G thesis` replaced the user's own report.md (exit 0); a folder holding mfr's report is
    scored into again."""
    from jobs.score import run_score

    emb, ids = faces(n_ids=3, per_id=3, seed=13)
    for side, masked in (("g", False), ("p", True)):
        write_shard(tmp_path / side, image_records(emb, ids, 3, masked), emb.shape[1])
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "report.md").write_text("# three months of work\n")
    (thesis / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="already holds report.md that mfr did not write"):
        run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(thesis))
    assert (thesis / "report.md").read_text() == "# three months of work\n"
    run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "r"))
    run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "r"), force=True)  # mfr's own: again


def test_a_report_cut_short_by_a_full_disk_is_written_by_the_rerun(tmp_path, monkeypatch):
    """A disk that filled while the report was written left report.md and roc.png without report.json,
    which every rerun then refused as files mfr did not write (`mfr run` too, with space to spare)."""
    from jobs.score import run_score
    from jobs.storage import LocalStore, StorageError

    emb, ids = faces(n_ids=3, per_id=3, seed=18)
    for side, masked in (("g", False), ("p", True)):
        write_shard(tmp_path / side, image_records(emb, ids, 3, masked), emb.shape[1])
    write = LocalStore.write

    def full_at(name):  # a disk that fills as the report's file `name` is written
        def write_until_full(self, key, data):
            if key == name:
                raise StorageError(f"cannot write {self.path(key)}: No space left on device")
            write(self, key, data)
        return write_until_full

    monkeypatch.setattr(LocalStore, "write", full_at("cmc.png"))
    with pytest.raises(StorageError, match="No space left"):
        run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()  # report.md and roc.png were left; the new, empty folder goes too
    monkeypatch.setattr(LocalStore, "write", write)
    out = run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "r"))
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["cmc.png", "report.json", "report.md", "roc.png",
                                                                 "scores.png"]
    assert not out["skipped"]
    # a report written again (--force, or a pairs protocol in evaluate's folder) whose report.json then
    # fails: the earlier report's files were deleted or replaced, and its report.json, left, was trusted
    # by the rerun as up to date; they are put back as they were
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()}
    monkeypatch.setattr(LocalStore, "write", full_at("report.json"))
    with pytest.raises(StorageError, match="No space left"):
        run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "r"), force=True, title="another")
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == before
    # the disk still full when the earlier files are put back, or Ctrl-C then: the old report.json
    # stayed beside the new report.md and plots, and the rerun trusted it; now the report's files go,
    # and the rerun writes the report again
    for putting_back_fails in (StorageError("No space left on device"), KeyboardInterrupt()):
        def full_from_the_record_on(self, key, data):
            if key == "report.json":
                full["now"] = True
                raise StorageError(f"cannot write {self.path(key)}: No space left on device")
            if full.get("now"):
                raise putting_back_fails
            write(self, key, data)

        full = {}
        monkeypatch.setattr(LocalStore, "write", full_from_the_record_on)
        with pytest.raises(StorageError, match="No space left"):
            run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "r"), force=True, title="another")
        assert not list((tmp_path / "r").iterdir())
        monkeypatch.setattr(LocalStore, "write", write)
        assert not run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "r"))["skipped"]
    # up to date while nothing changed; a report of an earlier format (without the Holm column, say) is
    # made again once, not printed from its report.json without the figures it lacks
    assert run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "r"))["skipped"]
    import jobs.score

    monkeypatch.setattr(jobs.score, "REPORT_FORMAT", jobs.score.REPORT_FORMAT + 1)
    assert not run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "r"))["skipped"]
    assert run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "r"))["skipped"]


def test_run_score_takes_paths_and_refuses_unknown_options_before_reading(tmp_path):
    """A Path scored everything and then failed writing the report ('PosixPath' object has no attribute
    'decode'); a typo (gallery_per_identiy=2) or seed=-1 failed after every shard was read, deep inside."""
    from jobs.score import run_score

    emb, ids = faces(n_ids=3, per_id=3, seed=19)
    for side, masked in (("g", False), ("p", True)):
        write_shard(tmp_path / side, image_records(emb, ids, 3, masked), emb.shape[1])
    out = run_score(tmp_path / "p", tmp_path / "g", tmp_path / "r", name="a", also=[("b", tmp_path / "p", tmp_path / "g")])
    assert [r.name for r in out["results"]] == ["a", "b"] and (tmp_path / "r" / "report.json").is_file()
    for options, why in (({"gallery_per_identiy": 2}, "takes no option gallery_per_identiy"),
                         ({"seed": -1}, "run seed is from 0"), ({"distributed": "no"}, "distributed is True or False")):
        with pytest.raises(ValueError, match=why):
            run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "x"), **options)
        assert not (tmp_path / "x").exists()


def test_a_fusion_without_impostor_scores_to_normalise_by_leaves_the_methods_rows(ray_runtime, tmp_path):
    """One identity (no impostor score to z-normalise by): the fusion stopped the whole report after
    every method was scored, with two messages for the two reducers; the methods' rows are reported
    and a note says why the fused row is not."""
    import json

    from jobs.score import run_score

    emb, ids = faces(n_ids=1, per_id=4, seed=31)
    for model in ("m", "m2"):
        for side, masked in (("p", True), ("g", False)):
            write_shard(tmp_path / model / side, [r.with_(model_id=model) for r in image_records(emb, ids, 4, masked)],
                        emb.shape[1])
    for d in (False, True):
        run_score(str(tmp_path / "m" / "p"), str(tmp_path / "m" / "g"), str(tmp_path / f"r{d}"), name="m",
                  also=[("m2", str(tmp_path / "m2" / "p"), str(tmp_path / "m2" / "g"))], fuse=[["m", "m2"]],
                  distributed=d)
        report = json.loads((tmp_path / f"r{d}" / "report.json").read_text())
        assert [r["name"] for r in report["results"]] == ["m", "m2"]
        assert any(n.startswith("fusion: m + m2 is not reported: z-normalisation needs at least two impostor "
                                "scores with some spread") for n in report["notes"]), report["notes"]


def test_two_methods_are_compared_probe_by_probe_on_the_same_images(tmp_path):
    """report.json's `paired` and report.md's table: the probes one method identifies at rank 1 and the
    other not, paired by image whatever order each method's rows came in, with a probe in which one
    method found no face paired as that method's miss; McNemar's p from those counts."""
    import json

    import pandas as pd
    from scipy.stats import binomtest

    from recog.report import acquisition_counts, paired_comparisons, write_report

    embeddings, ids = faces(n_ids=8, per_id=13, seed=4)
    first_of_each = np.arange(0, len(ids), 13)  # each identity's first image: the gallery
    gallery, g_ids = embeddings[first_of_each], ids[first_of_each]
    probes, p_ids = np.delete(embeddings, first_of_each, axis=0), np.delete(ids, first_of_each)
    rng = np.random.default_rng(6)
    keys = np.array([f"{p}/img{i}.jpg" for i, p in enumerate(p_ids)])
    noisy = probes + rng.normal(0, 1.2, probes.shape).astype(np.float32)  # the second method: worse
    rows = pd.DataFrame({"key": keys, "identity": p_ids, "face_index": 0})
    g_rows = pd.DataFrame({"key": [f"{g}/gallery.jpg" for g in g_ids], "identity": g_ids, "face_index": 0})
    # the second method found no face in 5 images, and lists its rows in another order
    lost = np.arange(3, 96, 19)
    kept = np.setdiff1d(rng.permutation(len(keys)), lost, assume_unique=True)
    kept = rng.permutation(kept)
    failed = pd.DataFrame({"key": keys[lost], "identity": p_ids[lost]})
    counts = acquisition_counts(len(kept), len(lost), len(g_ids), 0)
    first = score(rows, probes, g_rows, gallery, "first", acquisition=acquisition_counts(len(keys), 0, len(g_ids), 0))
    second = score(rows.iloc[kept].reset_index(drop=True), noisy[kept], g_rows, gallery, "second", failed=failed,
                   acquisition=counts)
    # each probe's rank-1 hit, by key, from each method's own identification of the probes it has
    hit_first = dict(zip(keys, M.identification_stats(probes, gallery, p_ids, g_ids).rank == 1))
    hit_second = dict(zip(keys[kept], M.identification_stats(noisy[kept], gallery, p_ids[kept], g_ids).rank == 1))
    a = np.array([hit_first[k] for k in keys])
    b = np.array([hit_second.get(k, False) for k in keys])  # no face: never identified
    [c] = paired_comparisons([first, second])
    assert c["methods"] == ["first", "second"] and c["probes"] == len(keys) and c["unpaired"] == 0
    assert (c["both"], c["first_only"], c["second_only"], c["neither"]) == (
        int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum()), int((~a & ~b).sum()))
    assert c["first_only"] > c["second_only"] > 0  # the noisy method loses more probes than it wins
    assert c["first_only"] >= 5  # among them the images it found no face in
    assert c["p_value"] == binomtest(c["first_only"], c["first_only"] + c["second_only"], 0.5).pvalue < 0.05
    assert c["rates"] == [first.identification["rank"]["1"], second.identification["rank"]["1"]]
    paths = write_report([first, second], tmp_path)
    assert json.loads(paths["json"].read_text())["paired"] == [c]
    md = paths["markdown"].read_text()
    assert (f"| first vs second | {len(keys)} | {100 * c['rates'][0]:.1f} vs {100 * c['rates'][1]:.1f} | "
            f"{c['first_only']} | {c['second_only']} | {c['p_value']:.3g} | {c['p_value']:.3g} |") in md
    assert c["p_holm"] == c["p_value"] and "| p, Holm (1 comparison) |" in md  # one test: nothing to adjust


# ---------------------------------------------------------------- from a mutation review of jobs/score.py


def test_an_image_of_two_faces_fills_one_gallery_place():
    """`--face all`, two gallery images per identity: X/0 holds two faces, X/1 none. The image of two
    faces was counted as two chosen images, so X/1 was never tried and its failure to enrol never
    counted; one face or two, X/1 is tried and X has one empty place."""
    import pandas as pd

    from jobs.score import enrolment_tried, split_gallery, unenrolled_entries

    failed = pd.DataFrame({"key": ["X/1.jpg"], "identity": ["X"]})
    found = []
    for faces in (pd.DataFrame({"key": ["X/0.jpg"], "identity": ["X"]}),
                  pd.DataFrame({"key": ["X/0.jpg", "X/0.jpg"], "identity": ["X", "X"]})):
        chosen = split_gallery(faces, 2)
        tried = enrolment_tried(faces, failed, chosen, 2)
        found.append((sorted(set(tried.key)), unenrolled_entries(tried, chosen, 2, "best")))
    assert found == [(["X/0.jpg", "X/1.jpg"], ("X",))] * 2
    tried = pd.DataFrame({"key": ["X/0.jpg", "X/0.jpg", "X/1.jpg"], "identity": ["X"] * 3, "face": [True, True, False]})
    assert unenrolled_entries(tried, {"X/0.jpg"}, 2, "best") == ("X",)  # places are images, not faces
    assert unenrolled_entries(tried, {"X/0.jpg"}, 2, "mean") == ()  # X has a template


def test_probes_and_gallery_of_other_modes_are_refused():
    from jobs.score import refuse_unlike_embeddings

    with pytest.raises(ValueError, match="Embed both sides with --mode upper-face"):
        refuse_unlike_embeddings("plain", "upper-face", "p", "g")
    with pytest.raises(ValueError, match="--mode flip"):
        refuse_unlike_embeddings("flip", "plain", "p", "g")
    refuse_unlike_embeddings("plain", "masked-gallery", "p", "g")  # paired as mfr run pairs them
    refuse_unlike_embeddings("upper-face", "upper-face", "p", "g")


def test_a_euclidean_mean_template_is_the_mean_of_the_embeddings():
    import pandas as pd

    from jobs.score import gallery_entries

    rows = pd.DataFrame({"key": ["a/0", "a/1", "b/0"], "identity": ["a", "a", "b"], "face_index": 0})
    out, templates = gallery_entries(rows, np.array([[1, 0], [3, 2], [5, 5]], np.float32), "mean", "euclidean")
    assert list(out.identity) == ["a", "b"] and list(out.key) == ["template:a", "template:b"]
    np.testing.assert_allclose(templates, [[2, 1], [5, 5]])


def test_a_failure_to_enrol_keeps_the_seed_fpir_and_counts_its_probes():
    """A probe of identity E, whose gallery image had no face: the seed's FPIR pool counts it (its 0.1
    cell vanished when it did not), and a faceless probe of E is an unenrolled probe too."""
    import pandas as pd

    from recog.report import acquisition_counts

    rng = np.random.default_rng(0)
    ids = [f"A{i}" for i in range(10)]
    g = rng.normal(size=(10, 16)).astype(np.float32)
    p = np.concatenate([g + 0.3 * rng.normal(size=g.shape), rng.normal(size=(1, 16))]).astype(np.float32)
    r = score(pd.DataFrame({"identity": ids + ["E"]}), p, pd.DataFrame({"identity": ids}), g, "m",
              acquisition=acquisition_counts(11, 0, 10, 1), empty_ids=("E",))
    assert r.identification["mated_probes"] == 11 and set(r.identification["seed_fpir"]) == {"0.01", "0.1"}
    failed = pd.DataFrame({"key": ["E/1.jpg"], "identity": ["E"], "status": ["no_face"]})
    r = score(pd.DataFrame({"identity": ids}), p[:10], pd.DataFrame({"identity": ids}), g, "m", failed=failed,
              acquisition=acquisition_counts(10, 1, 10, 1), empty_ids=("E",))
    assert r.identification["mated_probes"] == 11 and r.identification.get("unenrolled_probes") == 1


def test_a_fusions_empty_entries_are_the_most_any_model_has():
    from jobs.score import fused_empty_ids

    a, b = ("X", "X", "Y", "Z"), ("X", "Y")  # each model's identity per gallery entry, empty ones included
    for per_model in ([a, b], [b, a]):
        assert fused_empty_ids(per_model, {"Y"}) == ("X", "X", "Z")
    assert fused_empty_ids([("X",), ()], ()) == ("X",)


def test_sampled_impostors_are_distinct_pairs_never_the_mate():
    from jobs.score import PairSampler

    pairs = PairSampler(n_probes=4, n_gallery=50, max_pairs=4 * 21, seed=0)
    assert pairs.per_probe == 20
    same = np.zeros((4, 50), bool)
    same[np.arange(4), np.arange(4)] = True
    pairs.add(np.tile(np.arange(50, dtype=np.float64), (4, 1)), same)  # a score of its own per gallery entry
    scores, labels = pairs.result()
    for r in range(4):
        impostors = scores[labels == 0][r * 20:(r + 1) * 20]
        assert len(np.unique(impostors)) == 20 and r not in impostors


def test_with_several_faces_in_an_image_a_probe_without_a_face_is_still_its_methods_miss():
    """`--face all`: one group photo of two faces makes the pairing go by image and face; a probe in which
    the second method found no face (face -1) dropped out of it (10 probes read as 7, both methods at
    100 %), where it is that method's miss, of each face the first found in the image. scores.png's
    counts leave its comparisons, at the floor, out."""
    import pandas as pd

    from recog.report import acquisition_counts, paired_comparisons

    rng = np.random.default_rng(0)
    ids = ["a", "b", "c", "d"]
    gallery = pd.DataFrame({"key": [f"{i}/0.jpg" for i in ids], "identity": ids, "face_index": 0})
    g = rng.normal(size=(4, 16)).astype(np.float32)
    keys = [f"{i}/{j}.jpg" for i in ids for j in (1, 2)] + ["a/group.jpg", "a/group.jpg"]
    p_ids = [k.split("/")[0] for k in keys]
    rows = pd.DataFrame({"key": keys, "identity": p_ids, "face_index": [0] * 8 + [0, 1]})
    emb = g[[ids.index(i) for i in p_ids]] + 0.1 * rng.normal(size=(10, 16)).astype(np.float32)
    first = score(rows, emb, gallery, g, "first", acquisition=acquisition_counts(10, 0, 4, 0))
    lost = [0, 2, 8, 9]  # no face in a/1, b/1 and the group photo for the second method
    kept = [i for i in range(10) if i not in lost]
    failed = pd.DataFrame({"key": [keys[i] for i in lost], "identity": [p_ids[i] for i in lost]})
    failed = failed.drop_duplicates("key")  # one row per image, as jobs.embed.failed_samples gives them
    second = score(rows.iloc[kept].reset_index(drop=True), emb[kept], gallery, g, "second", failed=failed,
                   acquisition=acquisition_counts(7, 3, 4, 0))
    assert (first.identification["rank"]["1"], second.identification["rank"]["1"]) == (1.0, 6 / 9)
    [c] = paired_comparisons([first, second])
    # the first method's 10 probes, each paired; the group photo's two faces both the second method's misses
    assert (c["probes"], c["rates"], c["both"], c["first_only"], c["second_only"], c["unpaired"]) == (
        10, [1.0, 0.6], 6, 4, 0, 0)
    values, genuine, impostor = M.score_counts(second.roc, second.verification["genuine"],
                                               second.verification["impostor"], second.floor)
    assert second.floor is not None and values.min() > second.floor
    only = second.acquired_only.verification
    assert (genuine.sum(), impostor.sum()) == (only["genuine"], only["impostor"])
