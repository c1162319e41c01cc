"""The reducer's pieces without Ray: per-probe facts of blocks merge into the single-process figures."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from jobs.reduce import _probe_task, merge_blocks, score_block
from jobs.score import score
from maskgen.record import FaceRecord, records_table
from recog import metrics as M


def faces(n_ids=6, per_id=4, dim=16, seed=0):
    """Embeddings that cluster by identity, as a recogniser's do (a real model is not needed to
    check that blocks add up to the whole)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, dim))
    ids = np.repeat([f"id{i}" for i in range(n_ids)], per_id)
    emb = centres[np.repeat(np.arange(n_ids), per_id)] + 0.8 * rng.normal(size=(len(ids), dim))
    return emb.astype(np.float32), ids


def test_blocks_merge_into_the_single_process_figures():
    import pandas as pd

    probes, p_ids = faces(seed=1)
    gallery, g_ids = faces(n_ids=5, per_id=1, seed=2)  # id5 has no gallery entry: open-set probes
    one = score(pd.DataFrame({"identity": p_ids}), probes, pd.DataFrame({"identity": g_ids}), gallery, "one")
    g = M.normalize_rows(gallery)
    n_mated = int(np.isin(p_ids, g_ids).sum())
    keep = max(1, int(np.ceil(n_mated * 0.1)))
    keys = [(f"k{i}", 0) for i in range(len(p_ids))]
    blocks = [score_block(probes[i:i + 7], p_ids[i:i + 7], g, g_ids, "cosine", None, keep, 0, keys[i:i + 7], block=3)
              for i in range(0, len(p_ids), 7)]
    scores, labels, stats = merge_blocks(blocks, len(g_ids), keep)
    from recog.report import evaluate

    many = evaluate("many", scores, labels, stats=stats)
    # blocks of 7 probes, scored 3 at a time, give exactly the figures of one process
    assert one.verification == many.verification and one.identification == many.identification
    assert one.identification["mated_probes"] == 20 and one.verification["genuine"] == 20


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
    got = _probe_task(["shards/g=x/part-1.parquet"], str(tmp_path / "p"), M.normalize_rows(gallery), g_ids, set(),
                      "cosine", None, 1, 0)
    assert [k for k, _ in got["keys"]] == sorted(rows["key"][1:])
    expected = M.normalize_rows(probes[1:]) @ M.normalize_rows(gallery).T
    order = np.argsort(rows["key"][1:])
    mates = np.array([list(g_ids).index(p) for p in np.asarray(p_ids[1:])[order]])
    assert np.allclose(got["mated_score"], expected[order][np.arange(8), mates], atol=1e-6)
