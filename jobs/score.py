"""The score job: a reducer that reads embedding shards and writes the evaluation report beside them.

Split: per identity (the dataset's folders), the first `gallery_per_identity` images in key order
form the unmasked gallery and the masked versions of the others are the probes, so no probe is ever
compared with its own unmasked photo. Verification on every probe x gallery pair (or, past
`max_pairs`, every genuine pair and a seeded sample of impostors per probe); identification of each
masked probe against the gallery images. Writes `report.json`, `report.md`, `roc.png` and `cmc.png`
under the output URI.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from jobs.embed import SHARD_DIR, read_shards
from jobs.storage import open_store, redact
from recog import metrics as M
from recog.report import evaluate, write_report


def score(probe_rows, probe_emb, gallery_rows, gallery_emb, name: str, similarity: str = "cosine",
          max_pairs: int = 2_000_000, seed: int = 0):
    """MethodResult for masked probes against an unmasked gallery (pure: arrays in, figures out)."""
    p_ids = probe_rows.identity.to_numpy().astype(str)
    g_ids = gallery_rows.identity.to_numpy().astype(str)
    if len(p_ids) == 0 or len(g_ids) == 0:
        raise ValueError("need masked probes and unmasked gallery embeddings to score")
    rng = np.random.default_rng(seed)
    scores, labels = [], []
    per_probe_impostors = max(1, max_pairs // max(1, len(p_ids)) - 1)
    for i in range(0, len(p_ids), 256):
        sim = M.similarity_matrix(probe_emb[i:i + 256], gallery_emb, similarity)
        same = p_ids[i:i + 256, None] == g_ids[None, :]
        for r in range(sim.shape[0]):
            gen = np.nonzero(same[r])[0]
            imp = np.nonzero(~same[r])[0]
            if len(p_ids) * len(g_ids) > max_pairs and len(imp) > per_probe_impostors:
                imp = rng.choice(imp, per_probe_impostors, replace=False)
            scores += [sim[r, gen], sim[r, imp]]
            labels += [np.ones(len(gen), np.int8), np.zeros(len(imp), np.int8)]
    scores, labels = np.concatenate(scores), np.concatenate(labels)
    n_mated = int(np.isin(p_ids, g_ids).sum())
    stats = M.identification_stats(probe_emb, gallery_emb, p_ids, g_ids, similarity,
                                   keep_nonmated=max(1, int(np.ceil(n_mated * 0.1))))
    has_both = labels.any() and not labels.all()
    return evaluate(name, scores if has_both else None, labels if has_both else None, stats=stats)


def split_gallery(gallery_rows, gallery_per_identity: int = 1) -> set[str]:
    """Keys of the gallery images: the first `gallery_per_identity` per identity, in key order."""
    if gallery_per_identity < 1:
        raise ValueError("gallery_per_identity must be at least 1")
    chosen = set()
    for _, keys in gallery_rows.groupby("identity")["key"]:
        chosen.update(sorted(set(keys))[:gallery_per_identity])
    return chosen


def inputs_fingerprint(probe_uri: str, gallery_uri: str, settings: dict) -> str:
    """Names the shards a report was made from (shards are named by their faces) and its settings."""
    parts = [json.dumps(settings, sort_keys=True, default=str)]
    for uri in (probe_uri, gallery_uri):
        store = open_store(uri)
        parts += sorted(k for k in store.list(SHARD_DIR) if k.endswith(".parquet"))
        parts.append("--")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def run_score(probe_uri: str, gallery_uri: str, output_uri: str, title: str = "Masked probes vs unmasked gallery",
              gallery_per_identity: int = 1, force: bool = False, **kwargs) -> dict:
    """Score and write the report; a rerun over unchanged shards and settings keeps the report that is
    there (`skipped` is True) unless `force`."""
    out = open_store(output_uri)
    out.check_writable()
    fingerprint = inputs_fingerprint(probe_uri, gallery_uri, {"title": title, "gallery_per_identity":
                                                              gallery_per_identity, **kwargs})
    if not force and out.exists("report.json"):
        previous = json.loads(out.read("report.json"))
        if previous.get("inputs_fingerprint") == fingerprint:
            names = {"json": "report.json", "markdown": "report.md", "roc": "roc.png", "cmc": "cmc.png"}
            paths = {kind: out.uri_of(name) for kind, name in names.items() if out.exists(name)}
            return {"paths": paths, "result": None, "skipped": True}
    probe_rows, probe_emb = read_shards(probe_uri)
    gallery_rows, gallery_emb = read_shards(gallery_uri)
    gallery_keys = split_gallery(gallery_rows, gallery_per_identity)
    keep_g = gallery_rows.key.isin(gallery_keys).to_numpy()
    keep_p = ~probe_rows.key.isin(gallery_keys).to_numpy()
    gallery_rows, gallery_emb = gallery_rows[keep_g].reset_index(drop=True), gallery_emb[keep_g]
    probe_rows, probe_emb = probe_rows[keep_p].reset_index(drop=True), probe_emb[keep_p]
    models = set(probe_rows.model_id) | set(gallery_rows.model_id)
    if len(models) != 1:
        raise ValueError(f"probe and gallery shards must come from one model, found {sorted(models)}")
    model_id = models.pop()
    similarity = str(probe_rows.similarity.iloc[0]) if "similarity" in probe_rows else "cosine"
    result = score(probe_rows, probe_emb, gallery_rows, gallery_emb, model_id.split("@")[0], similarity, **kwargs)
    with tempfile.TemporaryDirectory(prefix="mfr-report-") as tmp:
        paths = write_report([result], Path(tmp), title, extra={
            "model_id": model_id, "probes": redact(probe_uri), "gallery": redact(gallery_uri),
            "inputs_fingerprint": fingerprint,
            "protocol": f"masked probes vs unmasked gallery, {gallery_per_identity} gallery image(s) per identity, "
                        "probes from the other images"})
        written = {}
        # report.json last: its fingerprint is what a rerun trusts, so it must not exist without the rest
        for kind, path in sorted(paths.items(), key=lambda item: item[0] == "json"):
            out.write(path.name, path.read_bytes())
            written[kind] = out.uri_of(path.name)
    return {"paths": written, "result": result, "skipped": False}
