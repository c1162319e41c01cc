"""The reducer at scale: probe shards scored against the gallery in blocks across the cluster.

    result = score_distributed(probe_uri, gallery_uri, name="sface")   # a recog.report.MethodResult

The gallery is read by one Ray task, normalised once and kept in the object store; every probe shard
is a task that reads it, scores its probes against the gallery and returns only per-probe facts: the
mated score, the rank of the mated identity, the best non-mated score, the genuine scores, a seeded
sample of impostor scores (all of them while the whole comparison stays under `max_pairs`), and its
largest non-mated scores of mated probes (the seed's FPIR reading). The driver reduces those to
exactly the figures `jobs.score.score` computes in one process (same definitions, recog.metrics):
on shards under `max_pairs` the two agree to rounding (tests compare them), and no process ever holds
the probe x gallery matrix, only `block` rows of it.

Memory per task: the gallery (G x D float32, shared through the object store, not copied per task)
plus `block` x G scores; in the driver: a few numbers per probe and at most `max_pairs` scores.
"""

from __future__ import annotations

import numpy as np

from recog import metrics as M


def gallery_matrix(gallery_uri: str, gallery_per_identity: int = 1, gallery_template: str = "best"):
    """(normalised embeddings, identities, keys, model_id, similarity, (faces, images without a face)
    of the whole gallery shards) of the gallery split: the first `gallery_per_identity` images of each
    identity in key order (jobs.score.split_gallery)."""
    from jobs.embed import read_shards
    from jobs.score import gallery_entries, split_gallery

    rows, emb, failed = read_shards(gallery_uri, with_failures=True)
    counts = (len(rows), len(failed))  # the gallery side's samples: faces with an embedding, images without
    keys = split_gallery(rows, gallery_per_identity)
    keep = rows.key.isin(keys).to_numpy()
    rows, emb = rows[keep].reset_index(drop=True), emb[keep]
    similarity = str(rows.similarity.iloc[0]) if len(rows) else "cosine"
    images = rows.key.to_numpy().astype(str)  # the gallery's images, never probes, whatever the entries
    rows, emb = gallery_entries(rows, emb, gallery_template, similarity)
    if similarity == "cosine":
        emb = M.normalize_rows(emb)
    return (np.ascontiguousarray(emb, np.float32), rows.identity.to_numpy().astype(str),
            images, str(rows.model_id.iloc[0]) if len(rows) else "", similarity, counts)


def score_block(probe_emb, probe_ids, gallery, gallery_ids, similarity: str, impostors_per_probe: int | None,
                keep_nonmated: int, seed: int, probe_keys: list, block: int = 256) -> dict:
    """Per-probe facts of some probes (pure); `gallery` is already normalised for cosine. The score
    matrix is computed once per `block` probes and gives both the identification facts and the pair
    scores. `impostors_per_probe=None` keeps every impostor score; otherwise each probe keeps a sample
    of that many, drawn by a generator seeded with the run seed and the probe's own key, so the
    sample does not depend on how probes are cut into blocks or tasks."""
    p = np.asarray(probe_emb, np.float32)
    if similarity == "cosine":
        p = M.normalize_rows(p)
    g_ids = np.asarray(gallery_ids)
    parts, genuine, impostor = [], [], []
    for i0 in range(0, len(p), block):
        sim = M.similarity_matrix(p[i0:i0 + block], gallery, similarity) if similarity != "cosine" \
            else p[i0:i0 + block] @ gallery.T
        ids = np.asarray(probe_ids[i0:i0 + block])
        parts.append(M.identification_stats(sim, None, ids, g_ids, block=len(sim), keep_nonmated=keep_nonmated))
        same = ids[:, None] == g_ids[None, :]
        for r in range(sim.shape[0]):
            genuine.append(sim[r, same[r]])
            imp = np.nonzero(~same[r])[0]
            if impostors_per_probe is not None and len(imp) > impostors_per_probe:
                key, face = probe_keys[i0 + r]
                rng = np.random.default_rng([seed, face + 1, *str(key).encode("utf-8", "surrogateescape")])
                imp = np.sort(rng.choice(imp, impostors_per_probe, replace=False))
            impostor.append(sim[r, imp])
    empty = np.empty(0, np.float32)
    pool = np.sort(np.concatenate([s.nonmated_top for s in parts]))[::-1][:keep_nonmated] if parts else empty
    return {"mated": np.concatenate([s.mated for s in parts]) if parts else np.empty(0, bool),
            "mated_score": np.concatenate([s.mated_score for s in parts]) if parts else empty,
            "rank": np.concatenate([s.rank for s in parts]) if parts else np.empty(0, np.int64),
            "top_nonmated": np.concatenate([s.top_nonmated for s in parts]) if parts else empty,
            "nonmated_top": pool,
            "genuine": np.concatenate(genuine) if genuine else empty,
            "impostor": np.concatenate(impostor) if impostor else empty}


def merge_blocks(blocks: list[dict], gallery_size: int, keep_nonmated: int):
    """(pair scores, labels, IdentificationStats) of all blocks, in block order."""
    cat = {k: np.concatenate([b[k] for b in blocks]) for k in ("mated", "mated_score", "rank", "top_nonmated")}
    pool = np.concatenate([b["nonmated_top"] for b in blocks]) if blocks else np.empty(0, np.float32)
    pool = np.sort(pool)[::-1][:keep_nonmated] if keep_nonmated else np.empty(0, np.float32)
    stats = M.IdentificationStats(cat["mated"], cat["mated_score"], cat["rank"], cat["top_nonmated"], pool,
                                  gallery_size)
    genuine = np.concatenate([b["genuine"] for b in blocks])
    impostor = np.concatenate([b["impostor"] for b in blocks])
    scores = np.concatenate([genuine, impostor])
    labels = np.concatenate([np.ones(len(genuine), np.int8), np.zeros(len(impostor), np.int8)])
    return scores, labels, stats


def _probe_task(shard_keys: list[str], probe_uri: str, gallery_ref, gallery_ids, exclude_keys, similarity: str,
                impostors_per_probe, keep_nonmated: int, seed: int):
    """Ray task body: one group of probe shards against the gallery."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from jobs.storage import open_store, read_parquet_bytes

    from jobs.embed import failed_samples

    store = open_store(probe_uri)
    tables = [read_parquet_bytes(store.read(k)) for k in shard_keys]
    table = pa.concat_tables(tables) if tables else None
    if table is None or table.num_rows == 0:
        return None
    failed = failed_samples(table)
    failed = failed[~failed.key.isin(exclude_keys)]
    # failed faces keep a row with a null embedding, which flatten() would skip: drop them first
    table = table.filter(pc.equal(table.column("status"), "ok"))
    rows = table.drop(["embedding"]).to_pandas()
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    emb = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    keep = ~rows.key.isin(exclude_keys).to_numpy()
    rows, emb = rows[keep].reset_index(drop=True), emb[keep]
    failed_ids = failed.identity.to_numpy().astype(str)
    if not len(rows):
        return {"keys": [], "failed": failed_ids} if len(failed_ids) else None
    # probes in a canonical order (key, face) so the result does not depend on how shards are cut
    order = np.lexsort((rows.face_index.to_numpy(), rows.key.to_numpy().astype(str)))
    rows, emb = rows.iloc[order].reset_index(drop=True), emb[order]
    keys = list(zip(rows.key.astype(str), rows.face_index.astype(int)))
    out = score_block(emb, rows.identity.to_numpy().astype(str), gallery_ref, gallery_ids, similarity,
                      impostors_per_probe, keep_nonmated, seed, keys)
    out["keys"] = keys
    out["failed"] = failed_ids
    return out


def score_distributed(probe_uri: str, gallery_uri: str, name: str | None = None, gallery_per_identity: int = 1,
                      max_pairs: int = 2_000_000, seed: int = 0, shards_per_task: int = 8,
                      gallery_template: str = "best"):
    """(MethodResult, model_id) of masked probes against the unmasked gallery, computed by Ray tasks
    (see the module docstring); the figures are those of `jobs.score.score` on the same shards.
    `name` defaults to the model's."""
    import ray

    from jobs.embed import SHARD_DIR
    from jobs.pool import TASK_CPUS, ensure_ray
    from jobs.score import counted_result
    from jobs.storage import open_store
    from recog.report import acquisition_counts

    ensure_ray()
    gallery, g_ids, g_keys, model_id, similarity, gallery_counts = gallery_matrix(gallery_uri, gallery_per_identity,
                                                                                 gallery_template)
    name = name or model_id.split("@")[0]
    if len(g_ids) == 0:
        raise ValueError("need masked probes and unmasked gallery embeddings to score")
    gallery_ref = ray.put(gallery)
    store = open_store(probe_uri)
    shards = sorted(k for k in store.list(SHARD_DIR) if k.endswith(".parquet"))
    groups = [shards[i:i + shards_per_task] for i in range(0, len(shards), shards_per_task)]
    task = ray.remote(num_cpus=TASK_CPUS)(_probe_task)
    exclude = set(g_keys)
    # the probe count decides the impostor sample; one cheap pass over the key column counts them
    counts = ray.get([ray.remote(num_cpus=TASK_CPUS)(_count_probes).remote(g, store.uri, exclude) for g in groups])
    n_probes = sum(counts)
    if n_probes == 0:
        raise ValueError("need masked probes and unmasked gallery embeddings to score")
    per_probe = None if n_probes * len(g_ids) <= max_pairs else max(1, max_pairs // n_probes - 1)
    n_mated_upper = n_probes
    keep = max(1, int(np.ceil(n_mated_upper * 0.1)))
    blocks = [b for b in ray.get([task.remote(g, store.uri, gallery_ref, g_ids, exclude, similarity, per_probe,
                                              keep, seed) for g in groups]) if b is not None]
    failed_ids = np.concatenate([b["failed"] for b in blocks]) if blocks else np.empty(0, str)
    blocks = sorted((b for b in blocks if b["keys"]), key=lambda b: b["keys"][0])
    scores, labels, stats = merge_blocks(blocks, len(g_ids), keep)
    n_mated = int(stats.mated.sum())
    stats = M.IdentificationStats(stats.mated, stats.mated_score, stats.rank, stats.top_nonmated,
                                  stats.nonmated_top[:max(1, int(np.ceil(n_mated * 0.1)))], stats.gallery_size)
    acquisition = acquisition_counts(n_probes, len(failed_ids), *gallery_counts)
    return counted_result(name, scores, labels, stats, g_ids, failed_ids, per_probe, acquisition), model_id


def _count_probes(shard_keys: list[str], probe_uri: str, exclude_keys) -> int:
    from jobs.storage import open_store, read_parquet_bytes

    store = open_store(probe_uri)
    n = 0
    for k in shard_keys:
        t = read_parquet_bytes(store.read(k), columns=["key", "status"]).to_pandas()
        n += int(((t.status == "ok") & ~t.key.isin(exclude_keys)).sum())
    return n
