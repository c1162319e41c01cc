"""The reducer at scale: probe shards scored against a gallery in parts, across the cluster.

    result, model_id = score_distributed(probe_uri, gallery_uri, name="sface")
    result = score_fused_distributed([(p1, g1), (p2, g2)], name="fusion: a + b")

How the work is cut, and what each process holds:

- **Gallery index** (tasks, one per group of gallery shards): the key, identity and face of every
  gallery face, no embeddings. The driver picks the gallery split from it (jobs.score.split_gallery)
  and cuts the chosen entries, in (identity, key) order, into parts of at most `part_rows`
  (default `GALLERY_PART_ROWS`), each identity whole in one part (ranks count identities). The
  driver holds these labels (a few hundred bytes per gallery face as pandas strings), never an
  embedding or a score matrix.
- **Gallery parts** (tasks, one per part and model): read the shards that hold the part's entries,
  make mean templates where asked, normalise once, and leave the part in the object store with its
  identity codes. A gallery larger than one machine's memory is simply more parts.
- **Probe tasks** (one per group of probe shards, 1 CPU each): read their probes, then walk the
  parts one at a time, `block` probes at a time, so a task holds its probes, one part and one
  block x part score matrix. The score matrix is computed once per block for identification and
  verification together. Each task returns only per-probe facts: mated score, rank of the mated
  identity, best non-mated score, the genuine scores, a seeded sample of impostor scores (every
  impostor while the whole comparison stays under `max_pairs`), and its largest non-mated scores of
  mated probes (the seed's FPIR reading).
- **Driver**: reduces those facts to ROC, TAR@FAR, CMC and TPIR@FPIR with the definitions of
  recog.metrics, the same figures `jobs.score` computes in one process (tests compare them on the
  same shards to 1e-9; they are equal wherever the impostors are not sampled).

Identities become integer codes once (the sorted gallery identities), so finding a probe's mates is a
lookup, not a comparison of strings with every gallery entry. Scores are those of one matrix product
over the whole gallery: each is the dot product of its probe and gallery entry however either side
is cut (BLAS may round a product of one row or column differently, by a float32 ulp; tests check).

Where the cluster has GPUs (or will add them: jobs.pool.cluster_has_gpus), the probe tasks of a single
cosine model share each GPU (TASKS_PER_GPU to a GPU) and score their blocks with recog.block_scoring's ONNX graph on ONNX
Runtime's CUDA provider: the gallery part stays on the GPU, each block's score matrix never leaves
it, only the per-row facts come back. A GPU task on a node without CUDA warns and scores on its CPU;
`result.scored_by` (and the report's `scored_by`) says which nodes and devices scored.

Fusion (`score_fused_distributed`) runs the same way with every model's embeddings in each part: a
first pass gathers each model's impostor-score mean and variance over the common probes and gallery
entries (merged with Chan's parallel formula), the second scores the z-normalised mean
(recog.matching.fuse_matrices) exactly as one model's scores.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from maskgen.checks import is_whole
from recog import metrics as M
from recog.block_scoring import NumpyBlockScorer, Scoring, block_scorer

GALLERY_PART_ROWS = 262_144     # 512 MiB of 512-d float32 per part and model
SCORE_TASK_CPUS = 1             # scoring is matrix products: one core per task, BLAS on one thread


@dataclass
class GalleryPart:
    """Gallery entries [offset, offset + size) of the whole gallery: their identity codes (in identity
    order, each identity in one part: ranks count identities, recog.metrics), the entries of each code
    (CSR: `order[starts[c]:starts[c + 1]]`), and the embeddings (one array per model; `load` fetches
    them, so a Ray task holds one part at a time)."""

    offset: int
    codes: np.ndarray
    order: np.ndarray
    starts: np.ndarray
    embeddings: tuple | None = None
    loader: object = None

    @classmethod
    def of(cls, embeddings: tuple, codes, offset: int, n_identities: int) -> "GalleryPart":
        codes = np.asarray(codes, np.int64)
        order = np.argsort(codes, kind="stable")
        starts = np.searchsorted(codes[order], np.arange(n_identities + 1))
        return cls(offset, codes, order, starts, embeddings)

    @property
    def size(self) -> int:
        return len(self.codes)

    @property
    def runs(self):
        """Where each identity's run of entries starts (None: one entry per identity)."""
        return M.identity_runs(self.codes)

    def load(self) -> tuple:
        return self.embeddings if self.embeddings is not None else self.loader()

    def mates(self, probe_codes) -> tuple[np.ndarray, np.ndarray]:
        """(probe row, local column) of every probe's mated entries in this part, by row then column."""
        codes = np.asarray(probe_codes)
        known = codes >= 0
        lo = np.where(known, self.starts[np.clip(codes, 0, None)], 0)
        hi = np.where(known, self.starts[np.clip(codes, 0, None) + 1], 0)
        counts = hi - lo
        rows = np.repeat(np.arange(len(codes)), counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        cols = self.order[np.repeat(lo, counts) + within]
        # `order` is a stable argsort, so each probe's columns are already ascending
        return rows, cols


def _sample_impostors(mate_pos: list[np.ndarray], gallery_size: int, per_probe: int | None, seed: int,
                      probe_keys: list) -> list[np.ndarray]:
    """Per probe, the gallery positions of its impostor pairs (ascending): all of them, or with
    `per_probe` a sample of that many drawn by a generator seeded with the run seed and the probe's
    own (key, face), so the sample does not depend on how probes are cut into tasks or the gallery
    into parts. Equal to `np.sort(rng.choice(non_mated_positions, per_probe, replace=False))`,
    without building the non-mated positions (a gallery's worth per probe)."""
    out = []
    for r, mates in enumerate(mate_pos):
        n_imp = gallery_size - len(mates)
        if per_probe is None or n_imp <= per_probe:
            pos = np.setdiff1d(np.arange(gallery_size), mates, assume_unique=True)
        else:
            key, face = probe_keys[r]
            rng = np.random.default_rng([seed, face + 1, *str(key).encode("utf-8", "surrogateescape")])
            pos = rng.choice(n_imp, per_probe, replace=False)
            for m in mates:  # the j-th non-mated position: skip each mate at or below it, in order
                pos[pos >= m] += 1
            pos = np.sort(pos)
        out.append(pos)
    return out


def _flat(per_row: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    rows = np.repeat(np.arange(len(per_row)), [len(p) for p in per_row])
    pos = np.concatenate(per_row).astype(np.int64) if per_row else np.empty(0, np.int64)
    return rows, pos


def check_parts(parts: list[GalleryPart]) -> None:
    """Refuse parts whose entries are not in identity order or that cut an identity in two: a rank counts an
    identity once, which a part can only do for the identities it holds whole."""
    held = [p for p in parts if p.size]
    if any((np.diff(p.codes) < 0).any() for p in held) or \
            any(before.codes[-1] > after.codes[0] for before, after in zip(held, held[1:])):
        raise ValueError("gallery parts must hold their entries in identity order")
    for before, after in zip(held, held[1:]):
        if before.codes[-1] == after.codes[0]:
            raise ValueError(f"gallery parts must hold each identity whole; identity code {int(after.codes[0])} "
                             f"is cut at entry {after.offset}")


def score_block(probes, probe_codes, parts: list[GalleryPart], scoring: Scoring, impostors_per_probe: int | None,
                keep_nonmated: int, seed: int, probe_keys: list, block: int | None = None, scorer=None) -> dict:
    """Per-probe facts of some probes against a gallery in parts (pure, but for the parts' loaders).

    `probes`: one (P, D) array per model (a bare array for one model); `probe_codes`: each probe's
    identity code (-1: not in the gallery); `parts`: the whole gallery, in order. Returns arrays
    aligned with the probes (`mated`, `mated_score`, `rank`, `top_nonmated`), the genuine and impostor
    scores (by probe, then gallery position) and `nonmated_top`, this block's `keep_nonmated` largest
    non-mated scores of mated probes. Definitions: recog.metrics.identification_stats. `scorer`
    (recog.block_scoring; default NumPy) does each block's arithmetic."""
    probes = scoring.prepare(probes if isinstance(probes, tuple) else (probes,))
    codes = np.asarray(probe_codes, np.int64)
    n = len(codes)
    gallery_size = sum(p.size for p in parts)
    check_parts(parts)
    mates = [p.mates(codes) for p in parts]
    # every genuine pair once, by probe then gallery position (parts are in gallery order and each part's
    # columns ascend, so a stable sort by probe is enough); `flat[j]`: where part j's pairs land
    g_rows = np.concatenate([r for r, _ in mates]) if mates else np.empty(0, np.int64)
    g_pos = np.concatenate([c + p.offset for p, (_, c) in zip(parts, mates)]) if mates else np.empty(0, np.int64)
    perm = np.argsort(g_rows, kind="stable")
    where = np.empty(len(perm), np.int64)
    where[perm] = np.arange(len(perm))
    bounds = np.cumsum([0] + [len(r) for r, _ in mates])
    flat = [where[bounds[j]:bounds[j + 1]] for j in range(len(parts))]
    g_rows, g_pos = g_rows[perm], g_pos[perm]
    g_starts = np.searchsorted(g_rows, np.arange(n + 1))
    mate_pos = [g_pos[g_starts[r]:g_starts[r + 1]] for r in range(n)]
    i_rows, i_pos = _flat(_sample_impostors(mate_pos, gallery_size, impostors_per_probe, seed, probe_keys))
    i_starts = np.searchsorted(i_rows, np.arange(n + 1))
    genuine = np.empty(len(g_pos), np.float32)
    impostor = np.empty(len(i_pos), np.float32)
    mated = np.diff(g_starts) > 0
    best = np.full(n, -np.inf, np.float32)
    top = np.full(n, -np.inf, np.float32)
    at_or_above = np.zeros(n, np.int64)
    kept = np.empty(0, np.float32)

    scorer = scorer or NumpyBlockScorer(scoring)

    def step(size):
        return block or scorer.rows_per_block(size)

    several = len(parts) > 1
    if several:  # the best mated score first: every part's non-mated scores are counted against it
        for j, (part, (rows, cols)) in enumerate(zip(parts, mates)):
            with_mates = np.unique(rows)
            if not len(with_mates):
                continue
            # against the part's mated entries only: a probe's mated score costs its mates, not a
            # second pass over the whole part (the pass below scores every entry once)
            used, local = np.unique(cols, return_inverse=True)
            scorer.set_gallery(tuple(g[used] for g in part.load()))
            for a in range(0, len(with_mates), step(len(used))):
                sub = with_mates[a:a + step(len(used))]
                lo, hi = np.searchsorted(rows, [sub[0], sub[-1] + 1])
                pairs = np.stack([np.searchsorted(sub, rows[lo:hi]), local[lo:hi]], axis=1)
                genuine[flat[j][lo:hi]] = scorer.genuine(tuple(p[sub] for p in probes), pairs)
        np.maximum.at(best, g_rows, genuine)
    for j, (part, (rows, cols)) in enumerate(zip(parts, mates)):
        scorer.set_gallery(part.load(), part.runs)
        for r0 in range(0, n, step(part.size)):
            r1 = min(n, r0 + step(part.size))
            lo, hi = np.searchsorted(rows, [r0, r1])
            pairs = np.stack([rows[lo:hi] - r0, cols[lo:hi]], axis=1)
            a, b = i_starts[r0], i_starts[r1]
            inside = np.nonzero((i_pos[a:b] >= part.offset) & (i_pos[a:b] < part.offset + part.size))[0] + a
            sampled = np.stack([i_rows[inside] - r0, i_pos[inside] - part.offset], axis=1)
            floor = kept.min() if keep_nonmated and kept.size >= keep_nonmated else -np.inf
            m = mated[r0:r1]
            facts = scorer.block(tuple(p[r0:r1] for p in probes), pairs, sampled, best[r0:r1], floor,
                                 m if keep_nonmated else np.zeros(r1 - r0, bool))
            if not several:
                genuine[flat[j][lo:hi]] = facts.genuine
                best[r0:r1] = facts.best
            impostor[inside] = facts.impostor
            np.maximum(top[r0:r1], facts.top, out=top[r0:r1])
            at_or_above[r0:r1] += np.where(m, facts.count, 0)
            if facts.candidates.size:  # the seed's reading pools the non-mated scores of mated probes
                pool = np.concatenate([kept, facts.candidates])
                if pool.size > keep_nonmated:
                    pool = np.partition(pool, pool.size - keep_nonmated)[-keep_nonmated:]
                kept = pool
    return {"mated": mated, "mated_score": np.where(mated, best, np.nan).astype(np.float32),
            "rank": np.where(mated, 1 + at_or_above, 0), "top_nonmated": top,
            "nonmated_top": np.sort(kept)[::-1], "genuine": genuine, "impostor": impostor}


def merge_blocks(blocks: list[dict], gallery_size: int, keep_nonmated: int, gallery_identities: int | None = None):
    """(pair scores, labels, IdentificationStats) of all blocks, in block order."""
    cat = {k: np.concatenate([b[k] for b in blocks]) for k in ("mated", "mated_score", "rank", "top_nonmated")}
    pool = np.concatenate([b["nonmated_top"] for b in blocks]) if blocks else np.empty(0, np.float32)
    pool = np.sort(pool)[::-1][:keep_nonmated] if keep_nonmated else np.empty(0, np.float32)
    stats = M.IdentificationStats(cat["mated"], cat["mated_score"], cat["rank"], cat["top_nonmated"], pool,
                                  gallery_size, gallery_identities)
    genuine = np.concatenate([b["genuine"] for b in blocks])
    impostor = np.concatenate([b["impostor"] for b in blocks])
    scores = np.concatenate([genuine, impostor])
    labels = np.concatenate([np.ones(len(genuine), np.int8), np.zeros(len(impostor), np.int8)])
    return scores, labels, stats


def impostor_moments(probes, probe_codes, parts: list[GalleryPart], scoring: Scoring, block: int | None = None):
    """Per model, (count, mean, M2) of the impostor (non-mated) scores of these probes: the first pass
    of fusion (merge with `merge_moments`)."""
    probes = scoring.prepare(probes)
    codes = np.asarray(probe_codes, np.int64)
    out = [(0, 0.0, 0.0)] * len(probes)
    for part in parts:
        rows, cols = part.mates(codes)
        gallery = part.load()
        step = block or NumpyBlockScorer.rows_per_block(part.size)
        for r0 in range(0, len(codes), step):
            r1 = min(len(codes), r0 + step)
            lo, hi = np.searchsorted(rows, [r0, r1])
            keep = np.ones((r1 - r0, part.size), bool)
            keep[rows[lo:hi] - r0, cols[lo:hi]] = False
            for m in range(len(probes)):
                values = scoring.raw(tuple(p[r0:r1] for p in probes), gallery, m)[keep].astype(np.float64)
                if values.size:
                    out[m] = merge_moments(out[m], (values.size, values.mean(), ((values - values.mean()) ** 2).sum()))
    return out


def merge_moments(a, b):
    """Chan et al.'s pairwise merge of (count, mean, M2), the sum of squared deviations."""
    (na, ma, qa), (nb, mb, qb) = a, b
    if nb == 0:
        return a
    if na == 0:
        return b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * nb / n, qa + qb + delta * delta * na * nb / n


# ---------------------------------------------------------------- Ray side: reading shards, tasks, driver

def _shard_table(store, keys, where=None):
    """The shards at `keys` as one table, only the rows `where` (a `jobs.inputs.ColumnsEqual` of the
    method scored) selects: a folder may hold several models' and modes' rows."""
    import pyarrow as pa

    from jobs.augment import read_shard
    from jobs.embed import SCORED_COLUMNS

    tables = [read_shard(store, k, required=SCORED_COLUMNS) for k in keys]
    if where is not None:
        # the chosen rows only: a folder's other models (another embedding size: a fixed-size list of
        # another length) cannot be joined to them, even as empty tables ("node: string", exit 2)
        tables = [t.filter(where(t)) for t in tables]
        tables = [t for t in tables if t.num_rows] or tables[:1]
    return pa.concat_tables(tables) if tables else None


def _methods_of(table):
    """The (model_id, mode) pairs a shard table holds rows of."""
    t = table.select(["model_id", "mode"]).group_by(["model_id", "mode"]).aggregate([])
    return list(zip(t.column("model_id").to_pylist(), t.column("mode").to_pylist()))


def method_filter(held: set, name: str | None, uri: str):
    """The row filter of the method `name` names among the (model, mode) pairs `held` that a shard
    folder's tasks found (`jobs.score.choose_method`, as the single-process reducer chooses it). The
    tasks that index the gallery and count the probes return their labels per method, so choosing
    reads no shard again."""
    from jobs.inputs import ColumnsEqual
    from jobs.score import choose_method

    model_id, mode = choose_method(held, name, uri)
    return ColumnsEqual(model_id=model_id, mode=mode)


def _gallery_index(shard_keys: list[str], uri: str, first_shard: int):
    """Task: per (model_id, mode) the shards hold, the faces of a group of gallery shards as (key,
    identity, face_index, shard: the shard's position in the sorted list), their images without a face
    (key, identity), and their similarities. Only these labels reach the driver: tens of bytes per face."""
    import pandas as pd

    from jobs.augment import read_shard
    from jobs.embed import SCORED_COLUMNS, failed_samples
    from jobs.inputs import ColumnsEqual
    from jobs.storage import open_store

    store = open_store(uri)
    got = {}
    for n, k in enumerate(shard_keys):
        table = read_shard(store, k, [c for c in SCORED_COLUMNS if c != "embedding"], SCORED_COLUMNS)
        for method in _methods_of(table):
            t = table.filter(ColumnsEqual(model_id=method[0], mode=method[1])(table))
            frames, failed, similarities = got.setdefault(method, ([], [], set()))
            failed.append(failed_samples(t)[["key", "identity"]])
            rows = t.to_pandas(use_threads=False)
            rows = rows[rows.status == "ok"]
            similarities |= set(rows.similarity.astype(str))
            frames.append(pd.DataFrame({"key": rows.key.to_numpy(), "identity": rows.identity.to_numpy(),
                                        "face_index": rows.face_index.to_numpy(np.int32),
                                        "shard": np.full(len(rows), first_shard + n, np.int32)}))
    return {method: (pd.concat(frames, ignore_index=True), pd.concat(failed, ignore_index=True), similarities)
            for method, (frames, failed, similarities) in got.items()}


def _gallery_part(uri: str, shard_keys: list[str], entries, template: str, similarity: str, where=None):
    """Task: the embeddings of one part's entries, in the entries' order. `entries`: (key, face_index)
    per entry for `best`; for `mean`, (identity, [(key, face_index) of its images])."""
    from jobs.embed import ok_faces
    from jobs.score import gallery_entries
    from jobs.storage import open_store

    store = open_store(uri)
    rows, emb = ok_faces(_shard_table(store, shard_keys, where), store.uri)
    at = {(k, int(f)): i for i, (k, f) in enumerate(zip(rows.key.astype(str), rows.face_index))}
    if template == "best":
        out = emb[[at[(k, f)] for k, f in entries]]
    else:
        wanted = [at[kf] for _, images in entries for kf in images]
        sub_rows = rows.iloc[wanted].reset_index(drop=True)
        sub_rows, templates = gallery_entries(sub_rows, emb[wanted], "mean", similarity)
        by_identity = dict(zip(sub_rows.identity.astype(str), templates))
        out = np.stack([by_identity[i] for i, _ in entries])
    return Scoring((similarity,)).prepare((out,))[0]


@dataclass
class Gallery:
    """The driver's view of a gallery in parts: labels only, embeddings in the object store."""

    identities: np.ndarray        # sorted unique identities: the codes
    entry_ids: np.ndarray         # identity of each entry, in gallery order
    parts: list                   # GalleryPart with `loader` unset and `embeddings` None (Ray refs beside)
    refs: list                    # per part, one object ref per model
    images: set                   # the gallery images' keys: never probes
    similarities: tuple
    model_ids: tuple
    counts: tuple                 # (faces, faceless images) enrolment tried (jobs.score.tried_counts;
                                  # a fusion's: jobs.score.fused_enrolment)
    empty_ids: tuple = ()         # identity of each entry that failed to enrol (jobs.score.unenrolled_entries)
    unnamed: int = 0              # gallery images left out for want of an identity (jobs.score.with_identity)
    modes: tuple = ()             # each model's gallery mode


@dataclass
class Index:
    """A gallery's labels (`_gallery_index`), its shards, model and similarity."""

    rows: object
    failed: object                # images without a face (key, identity)
    uri: str
    where: object                 # the method's row filter (`method_filter`)
    shards: list
    model_id: str
    similarity: str


def _index(uri: str, shards_per_task: int, name: str | None = None):
    """The gallery's labels in the shards under `uri`, of the method `name` names (`method_filter`)."""
    import pandas as pd
    import ray

    from jobs.embed import SHARD_DIR, repeated_faces, where_shards_are
    from jobs.storage import open_store

    store = open_store(uri)
    shards = sorted(k for k in store.list(SHARD_DIR) if k.endswith(".parquet"))
    if not shards:
        raise FileNotFoundError(f"no embedding shards under {store.uri}/{SHARD_DIR}{where_shards_are(store)}")
    task = ray.remote(num_cpus=SCORE_TASK_CPUS)(_gallery_index)
    got = ray.get([task.remote(shards[i:i + shards_per_task], store.uri, i)
                   for i in range(0, len(shards), shards_per_task)])
    where = method_filter(set().union(*got), name, store.uri)
    method = (where.values["model_id"], where.values["mode"])
    held = [g[method] for g in got if method in g]
    rows = pd.concat([f for f, _, _ in held], ignore_index=True)
    similarities = set().union(*(s for _, _, s in held))
    if len(similarities) > 1:
        raise ValueError(f"the gallery shards under {store.uri} of {method[0]} {method[1]} must have one "
                         f"similarity, found {sorted(similarities)}")
    failed = pd.concat([f for _, f, _ in held], ignore_index=True)
    repeated_faces(rows, store.uri)
    return Index(rows, failed, store.uri, where, shards, method[0], similarities.pop() if similarities else "cosine")


def part_bounds(codes, part_rows: int) -> list[tuple[int, int]]:
    """[start, end) of each gallery part over entries in identity order (`codes`): at most `part_rows`
    entries, ending where an identity ends (check_parts); an identity of more entries than that is a
    part of its own."""
    codes = np.asarray(codes)
    bounds, p0 = [], 0
    while p0 < len(codes):
        p1 = min(p0 + part_rows, len(codes))
        if p1 < len(codes) and codes[p1] == codes[p1 - 1]:  # back to where the cut identity starts
            p1 = int(np.searchsorted(codes, codes[p1], "left"))
            if p1 == p0:  # or on to where it ends
                p1 = int(np.searchsorted(codes, codes[p0], "right"))
        bounds.append((p0, p1))
        p0 = p1
    return bounds


def load_gallery(gallery_uris: list[str], gallery_per_identity: int | None, template: str, part_rows: int,
                 shards_per_task: int, names=None) -> Gallery:
    """Index every model's gallery shards (of the method each of `names` names, `method_filter`), choose
    the split, cut the common entries into parts and start one task per part and model that leaves its
    embeddings in the object store."""
    import ray

    from jobs.score import (GALLERY_TEMPLATES, as_fused, enrolment_tried, fused_empty_ids, fused_enrolment,
                            split_gallery, tried_counts, unenrolled_entries, with_identity)

    if template not in GALLERY_TEMPLATES:
        raise ValueError(f"gallery template must be one of {GALLERY_TEMPLATES}, got {template!r}")
    if part_rows < 1:
        raise ValueError("gallery part rows must be at least 1")
    indexed = [_index(u, shards_per_task, n) for u, n in zip(gallery_uris, names or [None] * len(gallery_uris))]
    # images without an identity are left out, as jobs.score.with_identity leaves them (and counted)
    unnamed = set()
    for index in indexed:
        index.rows, _, index.failed, left_out = with_identity(index.rows, None, index.failed)
        unnamed |= left_out
    chosen, images, tried = [], set(), []
    # a fusion chooses among the images every model found a face in, so every model chooses the same
    shared = set.intersection(*(set(i.rows.key.astype(str)) for i in indexed)) if len(indexed) > 1 else None
    for index in indexed:
        rows, failed = as_fused(index.rows, index.failed, shared)
        keys = split_gallery(rows, gallery_per_identity)
        tried.append(enrolment_tried(rows, failed, keys, gallery_per_identity))
        rows = rows[rows.key.isin(keys)]
        images |= set(rows.key.astype(str))
        rows = rows.assign(entry=list(zip(rows.key.astype(str), rows.face_index.astype(int))) if template == "best"
                           else rows.identity.astype(str))
        chosen.append(rows)
    common = set.intersection(*(set(r.entry) for r in chosen))
    first = chosen[0]
    entries = (first[first.entry.isin(common)].drop_duplicates("entry")
               .sort_values(["identity", "key", "face_index"], kind="stable"))
    if template == "best":
        entry_keys = list(entries.entry)
    else:
        entry_keys = sorted(common)
        entries = entries.drop_duplicates("identity").set_index("identity").loc[entry_keys].reset_index()
    entry_ids = entries.identity.to_numpy().astype(str)
    identities = np.unique(entry_ids)
    codes = np.searchsorted(identities, entry_ids)
    task = ray.remote(num_cpus=SCORE_TASK_CPUS)(_gallery_part)
    parts, refs = [], []
    similarities = tuple(index.similarity for index in indexed)
    for p0, p1 in part_bounds(codes, part_rows):
        part_entries = entry_keys[p0:p1]
        part_refs = []
        for index, model_rows in zip(indexed, chosen):
            holds = model_rows[model_rows.entry.isin(set(part_entries))]
            if template == "best":
                arg = part_entries
            else:
                images_of = {i: list(zip(g.key.astype(str), g.face_index.astype(int)))
                             for i, g in holds.groupby("entry")}
                arg = [(i, images_of[i]) for i in part_entries]
            part_refs.append(task.remote(index.uri, [index.shards[s] for s in sorted(set(holds.shard))], arg, template,
                                         index.similarity, index.where))
        parts.append(GalleryPart.of(None, codes[p0:p1], p0, len(identities)))
        refs.append(part_refs)
    # failures to enrol: each model's own, and in fusion an identity without an entry every model holds
    empty_ids = fused_empty_ids([list(rows.drop_duplicates("entry").identity.astype(str))
                                 + list(unenrolled_entries(t, set(rows.key.astype(str)), gallery_per_identity, template))
                                 for t, rows in zip(tried, chosen)], set(identities))
    return Gallery(identities, entry_ids, parts, refs, images, similarities,
                   tuple(index.model_id for index in indexed),
                   tried_counts(tried[0]) if len(tried) == 1
                   else fused_enrolment(tried, [shared] * len(tried)), empty_ids, len(unnamed),
                   tuple(index.where.values["mode"] for index in indexed))


class _Loader:
    """Fetches one part's embeddings (every model) from the object store when the task needs them."""

    def __init__(self, refs):
        self.refs = refs

    def __call__(self):
        import ray

        return tuple(ray.get(self.refs))


def _probe_rows(store, shard_keys, exclude, where=None):
    """(rows, embeddings, failed) of a group of probe shards with the gallery's images left out, in a
    canonical (key, face) order so results do not depend on how shards are cut; images without an
    identity are left out (counted by `_count_probes`)."""
    from jobs.embed import failed_samples, ok_faces
    from jobs.score import has_identity

    table = _shard_table(store, shard_keys, where)
    if table is None or table.num_rows == 0:
        return None
    table = table.filter(has_identity(table.column("identity").to_numpy(zero_copy_only=False)))
    failed = failed_samples(table)
    failed = failed[~failed.key.isin(exclude)]
    rows, emb = ok_faces(table, store.uri)
    keep = ~rows.key.isin(exclude).to_numpy()
    rows, emb = rows[keep].reset_index(drop=True), emb[keep]
    order = np.lexsort((rows.face_index.to_numpy(), rows.key.to_numpy().astype(str)))
    return rows.iloc[order].reset_index(drop=True), emb[order], failed


def _common_probes(uris: list[str], group: list[list[str]], exclude, wheres=None):
    """Per model (rows, embeddings) of the probes every model has, aligned, and the probes' failures (rows of
    key and identity): images without a face in some model, or embedded by some models only (as
    jobs.score.score_fused counts them)."""
    import pandas as pd

    from jobs.storage import open_store

    wheres = wheres or [None] * len(uris)
    got = [_probe_rows(open_store(u), keys, exclude, w) for u, keys, w in zip(uris, group, wheres)]
    got = [g for g in got if g is not None]
    if not got:
        return None
    if len(uris) == 1:  # one model: its probes as they are
        rows, emb, failed = got[0]
        return [(rows, emb)], failed
    if len(got) < len(uris):  # a model without this group: none of its probes is common
        common = set()
    else:
        common = set.intersection(*(set(zip(r.key.astype(str), r.face_index.astype(int))) for r, _, _ in got))
    aligned = []
    for rows, emb, _ in got:
        at = {kf: i for i, kf in enumerate(zip(rows.key.astype(str), rows.face_index.astype(int)))}
        pick = [at[kf] for kf in sorted(common)]
        aligned.append((rows.iloc[pick].reset_index(drop=True), emb[pick]))
    common_keys = {k for k, _ in common}
    failed = pd.concat([f for _, _, f in got] + [r[["key", "identity"]] for r, _, _ in got], ignore_index=True)
    failed = failed[~failed.key.isin(common_keys)].drop_duplicates("key")
    return aligned, failed


def _task_scorer(scoring: Scoring, device: str):
    """(block scorer, what it runs on) for a task: on `gpu`, the ONNX graph on CUDA; a GPU task on a node
    whose onnxruntime has no CUDA says so (a warning in the job's log, `numpy, no CUDA` in the report)
    and scores on its CPU rather than failing the job."""
    import warnings

    if device != "gpu":
        return NumpyBlockScorer(scoring), "numpy"
    try:
        return block_scorer("onnxruntime", scoring, device="cuda"), "onnxruntime-cuda"
    except Exception as e:  # ours (RuntimeError), or ONNX Runtime's own (its Fail and EPFail are no RuntimeError)
        if not (isinstance(e, RuntimeError) or type(e).__module__.startswith("onnxruntime")):
            raise
        warnings.warn(f"a scoring task was given a GPU but cannot use it ({e}); scoring on this node's CPU",
                      RuntimeWarning, stacklevel=2)
        return NumpyBlockScorer(scoring), "numpy, no CUDA"


def _probe_task(uris: list[str], group: list[list[str]], exclude, identities, part_meta: list[GalleryPart],
                part_refs: list, scoring: Scoring, impostors_per_probe, keep_nonmated: int, seed: int,
                moments_only: bool = False, device: str = "cpu", wheres=None, empty_ids=()):
    """Task: one group of probe shards (per model) against every gallery part, the parts fetched one at a time.
    `empty_ids`: the identities of the gallery's entries that failed to enrol (each probe's count of them
    comes back as `empty_mates`)."""
    from jobs.score import image_hashes

    got = _common_probes(uris, group, exclude, wheres)
    if got is None:
        return None
    aligned, failed = got
    failed_ids = failed.identity.to_numpy().astype(str)
    parts = [GalleryPart(p.offset, p.codes, p.order, p.starts, p.embeddings, r and _Loader(r))
             for p, r in zip(part_meta, part_refs)]
    rows = aligned[0][0]
    keys = list(zip(rows.key.astype(str), rows.face_index.astype(int)))
    if moments_only:
        if not keys:
            return {"moments": [(0, 0.0, 0.0)] * len(uris), "probes": 0, "failed": len(failed_ids)}
        codes = _codes(rows.identity, identities)
        return {"moments": impostor_moments(tuple(e for _, e in aligned), codes, parts, scoring), "probes": len(keys),
                "failed": len(failed_ids)}
    failed_images = image_hashes(failed.key)  # the probes' images, to pair them across methods
    if not keys:
        return {"first_key": None, "failed": failed_ids, "failed_images": failed_images} if len(failed_ids) else None
    scorer, scored_on = _task_scorer(scoring, device)
    out = score_block(tuple(e for _, e in aligned), _codes(rows.identity, identities), parts, scoring,
                      impostors_per_probe, keep_nonmated, seed, keys, scorer=scorer)
    out["first_key"] = keys[0]
    out["failed"], out["failed_images"] = failed_ids, failed_images
    out["images"], out["faces"] = image_hashes(rows.key), rows.face_index.to_numpy().astype(np.int64)
    out["empty_mates"] = M.mates_per_probe(rows.identity.to_numpy().astype(str), np.asarray(empty_ids, dtype=str))
    out["scored_on"] = (_node_id(), scored_on)
    return out


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def _codes(identity, identities) -> np.ndarray:
    """Identity codes: the position in the gallery's sorted identities, -1 for an identity it lacks."""
    ids = np.asarray(identity).astype(str)
    if not len(identities):
        return np.full(len(ids), -1)
    pos = np.clip(np.searchsorted(identities, ids), 0, len(identities) - 1)
    return np.where(identities[pos] == ids, pos, -1)


def _count_probes(shard_keys: list[str], probe_uri: str, exclude_keys) -> dict:
    """Per (model_id, mode) the shards hold: (probes, faces, failed, unnamed), the embedded faces that
    are probes, all embedded faces (gallery images included), rows of images outside the gallery in
    which no face was embedded, and the samples (images with a face, or failures to acquire, as
    `jobs.embed.failed_samples` has them) left out for want of an identity (`_probe_rows`)."""
    import pandas as pd

    from jobs.augment import read_shard
    from jobs.embed import NOT_FAILURES, SCORED_COLUMNS, repeated_faces_message
    from jobs.score import has_identity
    from jobs.storage import open_store

    store = open_store(probe_uri)
    counts, unnamed, faces_read = {}, {}, []
    for k in shard_keys:
        t = read_shard(store, k, ["key", "identity", "face_index", "status", "model_id", "mode"],
                       SCORED_COLUMNS).to_pandas(use_threads=False)
        faces_read.append(t[t.status == "ok"][["model_id", "mode", "key", "face_index"]])
        named = has_identity(t.identity)
        ok, probe = t.status == "ok", ~t.key.isin(exclude_keys) & named
        sample = ok | ~t.status.isin(NOT_FAILURES)  # (a text file's `not_an_image` row is no image)
        for method, at in t.groupby(["model_id", "mode"], sort=False).groups.items():
            n, faces, failed = counts.get(method, (0, 0, 0))
            counts[method] = (n + int((ok & probe)[at].sum()), faces + int((ok & named)[at].sum()),
                              failed + int((~ok & probe)[at].sum()))
            # keys, not rows: an image's rows may lie in two shards of the task's folder
            unnamed.setdefault(method, set()).update(t.key[at][(sample & ~named)[at]])
    # repeats within this task's shards (a run's shards copied beside another's share their folders),
    # per method: the driver refuses those of the method it scores, not another's
    faces = pd.concat(faces_read, ignore_index=True)
    repeats = {method: repeated_faces_message(rows, store.uri)
               for method, rows in faces.groupby(["model_id", "mode"], sort=False)}
    return {method: (*c, len(unnamed[method]), repeats.get(method, "")) for method, c in counts.items()}


def _probe_counts(uri: str, groups: list[list[str]], exclude, name: str | None):
    """(row filter of the method `name` names, (probes, faces, failed, unnamed) of it) in the probe shards under
    `uri`, cut into `groups` of shard keys, counted by tasks."""
    import ray

    from jobs.embed import SHARD_DIR, where_shards_are
    from jobs.storage import open_store

    groups = [g for g in groups if g]
    if not groups:
        raise FileNotFoundError(f"no embedding shards under {uri}/{SHARD_DIR}{where_shards_are(open_store(uri))}")
    count = ray.remote(num_cpus=SCORE_TASK_CPUS)(_count_probes)
    got = ray.get([count.remote(g, uri, exclude) for g in groups])
    where = method_filter(set().union(*got), name, uri)
    method = (where.values["model_id"], where.values["mode"])
    repeated = next((c[method][4] for c in got if method in c and c[method][4]), "")
    if repeated:
        raise ValueError(repeated)
    return where, tuple(sum(c[method][i] for c in got if method in c) for i in range(4))


def _probe_groups(uris: list[str], shards_per_task: int) -> list[list[list[str]]]:
    """Probe shards cut into task groups, per model: by the shard folder (`g=<input group>`), which is the
    same for every model embedded from the same input, so one task sees all models' faces of an image."""
    from jobs.embed import SHARD_DIR
    from jobs.storage import open_store

    per_model = []
    for u in uris:
        shards = sorted(k for k in open_store(u).list(SHARD_DIR) if k.endswith(".parquet"))
        folders = {}
        for k in shards:
            folders.setdefault(k.rsplit("/", 1)[0], []).append(k)
        per_model.append(folders)
    if len(uris) == 1:
        shards = [k for ks in per_model[0].values() for k in ks]
        return [[shards[i:i + shards_per_task]] for i in range(0, len(shards), shards_per_task)]
    names = sorted(set().union(*per_model))
    groups, batch = [], []
    for name in names:
        batch.append(name)
        if sum(len(per_model[0].get(n, ())) for n in batch) >= shards_per_task:
            groups.append(batch)
            batch = []
    if batch:
        groups.append(batch)
    return [[[k for n in g for k in folders.get(n, [])] for folders in per_model] for g in groups]


DEVICES = ("auto", "cpu", "gpu")
# GPU scoring tasks that share one GPU: a task reads its shards, samples impostors and gathers its
# facts on a CPU between products, and tasks sharing the GPU fill those gaps. Measured on an H200
# (bench/bench_gpu_scoring.py, 10^5 x 10^5 at 512-d, 3 tasks): 51.4 s at one task per GPU, 29.3 s
# when they shared it (the first run timed paid the warm-up too: see the README). Each task holds its
# gallery part and a block's intermediates on the GPU: by arithmetic (not measured), 512 MiB for a
# default part of 262,144 x 512-d and about 2 GiB for a block of 2^26 scores, plus CUDA's own context,
# so 4 fit a 24 GiB GPU.
TASKS_PER_GPU = 4
MOST_TASKS_PER_GPU = 100  # each task holds its own gallery part and block on the GPU


def check_tasks_per_gpu(value, name: str = "tasks_per_gpu") -> None:
    """GPU scoring tasks per GPU, refused unless a whole number from 1 to MOST_TASKS_PER_GPU (`name`:
    the argument as its caller calls it)."""
    if not is_whole(value) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    if value > MOST_TASKS_PER_GPU:
        raise ValueError(f"{name} must be at most {MOST_TASKS_PER_GPU}, got {value}")


def _score(probe_uris: list[str], gallery_uris: list[str], name: str | None, gallery_per_identity: int | None,
           max_pairs: int, seed: int, shards_per_task: int, gallery_template: str, part_rows: int, device: str,
           tasks_per_gpu: int = TASKS_PER_GPU, methods: list | None = None):
    """`methods`: per (probe, gallery) folder pair, the name of the method to read in them (None: the
    only one they hold); `name`: the result's."""
    import ray

    from jobs.pool import cluster_has_gpus, ensure_ray
    from jobs.score import (check_max_pairs, counted_result, no_probe_left, none_with_an_identity, note_no_identity,
                            nothing_to_score, refuse_fusing_a_method_twice, refuse_unlike_embeddings, seed_fpir_pool)
    from jobs.storage import open_store
    from recog.report import acquisition_counts

    check_tasks_per_gpu(tasks_per_gpu)
    check_max_pairs(max_pairs)
    ensure_ray()
    methods = methods or [None] * len(probe_uris)
    gallery = load_gallery(gallery_uris, gallery_per_identity, gallery_template, part_rows, shards_per_task, methods)
    uris = [open_store(u).uri for u in probe_uris]
    groups = _probe_groups(uris, shards_per_task)
    exclude = ray.put(gallery.images)
    # which method each probe folder holds, and how many probes: counted before scoring, so that the
    # impostor sample is sized and a folder that lacks the method is refused before any block is scored
    counted = [_probe_counts(u, [g[i] for g in groups], exclude, m) for i, (u, m) in enumerate(zip(uris, methods))]
    probe_wheres = [where for where, _ in counted]
    for p, model_id, gallery_mode, p_uri, g_uri in zip(probe_wheres, gallery.model_ids, gallery.modes, uris,
                                                       gallery_uris):
        if p.values["model_id"] != model_id:  # as jobs.score.load_split refuses it
            raise ValueError(f"probe and gallery shards must come from one model, found "
                             f"{sorted({p.values['model_id'], model_id})}")
        refuse_unlike_embeddings(p.values["mode"], gallery_mode, p_uri, g_uri)
    if len(gallery.entry_ids) == 0:
        if len(gallery_uris) == 1 and gallery.unnamed and not any(gallery.counts):
            raise none_with_an_identity("gallery", open_store(gallery_uris[0]).uri, gallery.unnamed)
        if len(gallery_uris) == 1:
            raise nothing_to_score("gallery", open_store(gallery_uris[0]).uri)
        raise ValueError("the models to fuse share no probes or no gallery entries")
    if len(gallery_uris) > 1:
        refuse_fusing_a_method_twice([(model_id, p.values["mode"], gallery_mode) for p, model_id, gallery_mode
                                      in zip(probe_wheres, gallery.model_ids, gallery.modes)])
    name = name or gallery.model_ids[0].split("@")[0]
    if device not in DEVICES:
        raise ValueError(f"scoring device must be one of {DEVICES}, got {device!r}")
    graph_fits = len(uris) == 1 and gallery.similarities == ("cosine",)
    if device == "gpu" and not graph_fits:
        raise ValueError("scoring on GPUs takes one cosine model; fusion and Euclidean models score on CPUs")
    if device == "gpu" and not cluster_has_gpus():  # its tasks, each asking for a share of one, waited for ever
        raise ValueError("scoring on GPUs (--score-device gpu) was asked for, but the cluster has no GPU and "
                         "MFR_GPU_WORKERS does not say it adds GPU nodes: use --score-device auto or cpu")
    on_gpu = device == "gpu" or (device == "auto" and graph_fits and cluster_has_gpus())
    # a GPU task still reads its shards and gathers its facts on a CPU of the GPU node; tasks that
    # share a GPU overlap that CPU work with each other's products
    task = ray.remote(num_cpus=SCORE_TASK_CPUS, num_gpus=1 / tasks_per_gpu if on_gpu else 0)(_probe_task)
    identities = ray.put(gallery.identities)
    scoring = Scoring(gallery.similarities)
    common = (exclude, identities, ray.put(gallery.parts), gallery.refs)
    if len(uris) > 1:  # fusion: each model's impostor mean and deviation first
        moments = [r for r in ray.get([task.remote(uris, g, *common, scoring, None, 0, seed, True, "cpu", probe_wheres)
                                       for g in groups]) if r is not None]
        n_probes, n_failed = sum(r["probes"] for r in moments), sum(r["failed"] for r in moments)
        merged = [(0, 0.0, 0.0)] * len(uris)
        for r in moments:
            merged = [merge_moments(a, b) for a, b in zip(merged, r["moments"])]
        znorm = []
        for n, mean, m2 in merged:
            std = float(np.sqrt(m2 / n)) if n >= 2 else 0.0
            if n < 2 or not np.isfinite(std) or std == 0:
                from recog.matching import ZNORM_NEEDS, ZNormUnmeasurable

                raise ZNormUnmeasurable(f"{ZNORM_NEEDS} (there are {n})")
            znorm.append((float(mean), std))
        scoring = Scoring(gallery.similarities, tuple(znorm))
    else:
        n_probes, n_faces, n_failed, unnamed = counted[0][1]
    if n_probes == 0:
        if len(uris) == 1 and not n_faces and unnamed and not n_failed:
            raise none_with_an_identity("probe", uris[0], unnamed)
        if len(uris) == 1:
            raise no_probe_left(uris[0], gallery_per_identity) if n_faces else nothing_to_score("probe", uris[0])
        raise ValueError("the models to fuse share no probes or no gallery entries")
    size = len(gallery.entry_ids)
    per_probe = None if n_probes * size <= max_pairs else max(1, max_pairs // n_probes - 1)
    # the seed's FPIR pool is sized from the mated probes, not known before the tasks run: every task
    # keeps the pool of all probes, failed ones included, and the merge trims it
    keep = seed_fpir_pool(n_probes + n_failed)
    empty_ids = ray.put(gallery.empty_ids)
    blocks = [b for b in ray.get([task.remote(uris, g, *common, scoring, per_probe, keep, seed, False,
                                              "gpu" if on_gpu else "cpu", probe_wheres, empty_ids) for g in groups])
              if b is not None]
    scored_on = [b["scored_on"] for b in blocks if "scored_on" in b]
    failed_ids = np.concatenate([b["failed"] for b in blocks]) if blocks else np.empty(0, str)
    failed_images = np.concatenate([b["failed_images"] for b in blocks]) if blocks else np.empty(0, np.uint64)
    blocks = sorted((b for b in blocks if b["first_key"] is not None), key=lambda b: b["first_key"])
    probe_keys = (np.concatenate([b["images"] for b in blocks]) if blocks else np.empty(0, np.uint64),
                  np.concatenate([b["faces"] for b in blocks]) if blocks else np.empty(0, np.int64))
    scores, labels, stats = merge_blocks(blocks, size, keep, len(gallery.identities))
    empty_mates = np.concatenate([b["empty_mates"] for b in blocks]) if blocks else np.empty(0, np.int64)
    enrolled = np.concatenate([gallery.entry_ids.astype(str), np.asarray(gallery.empty_ids, dtype=str)])
    pool = seed_fpir_pool(int((stats.mated | (empty_mates > 0)).sum()), failed_ids, enrolled)
    stats = replace(stats, nonmated_top=stats.nonmated_top[:pool])
    acquisition = note_no_identity(acquisition_counts(len(stats.mated), len(failed_ids), *gallery.counts),
                                   counted[0][1][3], gallery.unnamed)
    result = counted_result(name, scores, labels, stats, gallery.entry_ids, failed_ids, per_probe, acquisition,
                            unit="fused" if len(uris) > 1 else gallery.similarities[0], empty_ids=gallery.empty_ids,
                            empty_mates=empty_mates, probe_keys=probe_keys, failed_keys=failed_images)
    result.scored_by = {"tasks": len(groups), "gallery_parts": len(gallery.parts),
                        "nodes": sorted({node for node, _ in scored_on}),
                        "devices": {d: sum(1 for _, x in scored_on if x == d) for d in sorted({x for _, x in scored_on})}}
    return result, gallery.model_ids


def score_distributed(probe_uri: str, gallery_uri: str, name: str | None = None,
                      gallery_per_identity: int | None = 1, max_pairs: int = 2_000_000, seed: int = 0,
                      shards_per_task: int = 8, gallery_template: str = "best", part_rows: int = GALLERY_PART_ROWS,
                      device: str = "auto", tasks_per_gpu: int = TASKS_PER_GPU):
    """(MethodResult, model_id) of masked probes against the unmasked gallery, computed by Ray tasks
    (module doc); the figures are those of `jobs.score.score` on the same shards. `name` defaults to
    the model's. `device`: `gpu` scores each block on a GPU (ONNX Runtime's CUDA provider; one
    cosine model), `cpu` with NumPy, `auto` on GPUs where the cluster has or can add them
    (jobs.pool.cluster_has_gpus); `tasks_per_gpu` GPU tasks share each GPU (TASKS_PER_GPU). `result.scored_by` says how
    many tasks and parts, and on which nodes and devices."""
    result, model_ids = _score([probe_uri], [gallery_uri], name, gallery_per_identity, max_pairs, seed,
                               shards_per_task, gallery_template, part_rows, device, tasks_per_gpu, [name])
    return result, model_ids[0]


def score_fused_distributed(methods: list[tuple], name: str, gallery_per_identity: int | None = 1,
                            max_pairs: int = 2_000_000, seed: int = 0, shards_per_task: int = 8,
                            gallery_template: str = "best", part_rows: int = GALLERY_PART_ROWS,
                            device: str = "auto", tasks_per_gpu: int = TASKS_PER_GPU):
    """MethodResult of several models' (probe URI, gallery URI[, the method's name in them]) scores fused
    as jobs.score.score_fused fuses them (z-norm on impostors, averaged, on the probes and gallery entries every model has),
    computed by Ray tasks on CPUs (module doc; `tasks_per_gpu` is checked like the single model's, and
    `device="gpu"` is refused)."""
    if len(methods) < 2:
        raise ValueError("fusion needs at least two methods")
    result, _ = _score([m[0] for m in methods], [m[1] for m in methods], name, gallery_per_identity, max_pairs,
                       seed, shards_per_task, gallery_template, part_rows, "cpu" if device == "auto" else device,
                       tasks_per_gpu, [m[2] if len(m) > 2 else None for m in methods])
    return result
