"""The embed job on Ray: faces to embedding shards (Parquet), from raw images or from an augment output.

    run_embed("../shared/data/faces", "out/emb/unmasked", masked=False)               # detects and aligns
    run_embed("out/masked", "out/emb/masked", masked=True, from_augment=True)          # reuses augment's faces

Each shard `shards/part-<hash>.parquet` has one row per face: `key` (source image), `identity`,
`masked`, `face_index`, `model_id`, `similarity` (how the model's vectors compare), `embedding`
(fixed-size list of float32). From an augment output,
faces are aligned on the masked whole image with the unmasked detection's points recorded in the
manifest, so masking never changes the alignment. Raw images are detected with `FaceFinder` (largest
face per image by default). GPU actors (one GPU each) are used when the cluster has GPUs.
"""

from __future__ import annotations

import hashlib
import io
import time

import numpy as np

from jobs.augment import JobSummary, identity_of, pool_size, read_manifest, read_parquet_dir
from jobs.storage import open_store

SHARD_DIR = "shards"


class EmbedWorker:
    def __init__(self, input_uri: str, model: str, accept_licence: bool, masked: bool, from_augment: bool,
                 all_faces: bool, finder_kind: str, alignment: str, max_pixels: int):
        from maskgen.finder import FaceFinder, FinderOptions
        from recog.embed import Embedder

        self.input = open_store(input_uri)
        self.embedder = Embedder(model, accept_licence=accept_licence)
        self.masked, self.from_augment, self.all_faces = masked, from_augment, all_faces
        self.alignment, self.max_pixels = alignment, max_pixels
        self.finder = None if from_augment else FaceFinder(FinderOptions.for_inputs(finder_kind))

    def __call__(self, batch: dict) -> dict:
        from maskgen.decode import DecodeError, decode_image

        out = {"key": [], "identity": [], "masked": [], "face_index": [], "model_id": [], "embedding": [],
               "status": [], "message": []}

        def emit(key, identity, face_index, vector, status="ok", message=""):
            out["key"].append(key)
            out["identity"].append(identity)
            out["masked"].append(self.masked)
            out["face_index"].append(face_index)
            out["model_id"].append(self.embedder.model_id)
            out["embedding"].append(vector)
            out["status"].append(status)
            out["message"].append(message)

        for i, key in enumerate(batch["key"]):
            key = str(key)
            identity = str(batch["identity"][i]) if "identity" in batch else identity_of(key)
            image_key = str(batch["image_key"][i]) if "image_key" in batch else key
            try:
                image = decode_image(self.input.read(image_key), max_pixels=self.max_pixels)
            except (DecodeError, FileNotFoundError) as exc:
                emit(key, identity, -1, None, getattr(exc, "status", "missing"), str(exc))
                continue
            if self.from_augment:
                points = [np.asarray(batch["landmarks5"][i], dtype=np.float64).reshape(5, 2)]
                lm68 = [np.asarray(batch["landmarks68"][i], dtype=np.float64).reshape(68, 2)]
                indices = [int(batch["face_index"][i])]
            else:
                faces = self.finder.find(image)
                if not faces:
                    emit(key, identity, -1, None, "no_face", "no face found")
                    continue
                if not self.all_faces:
                    faces = [max(faces, key=lambda f: f.width * f.height)]
                points, lm68, indices = [f.points for f in faces], None, list(range(len(faces)))
            vectors = self.embedder.embed_faces(image, points, lm68, alignment=self.alignment)
            for idx, vec in zip(indices, vectors):
                emit(key, identity, idx, vec.astype(np.float32))
        return out


def _write_shard(store, rows: dict, dim: int, similarity: str) -> tuple[str, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ok = [i for i, s in enumerate(rows["status"]) if s == "ok"]
    emb = np.stack([np.asarray(rows["embedding"][i], np.float32) for i in ok]) if ok else np.zeros((0, dim), np.float32)
    table = pa.table({
        "key": pa.array([rows["key"][i] for i in ok], pa.string()),
        "identity": pa.array([rows["identity"][i] for i in ok], pa.string()),
        "masked": pa.array([bool(rows["masked"][i]) for i in ok]),
        "face_index": pa.array([int(rows["face_index"][i]) for i in ok], pa.int32()),
        "model_id": pa.array([rows["model_id"][i] for i in ok], pa.string()),
        "similarity": pa.array([similarity] * len(ok), pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim),
    })
    name = hashlib.sha256("\n".join(sorted(set(rows["key"]))).encode()).hexdigest()[:20]
    key = f"{SHARD_DIR}/part-{name}.parquet"
    sink = io.BytesIO()
    pq.write_table(table, sink)
    store.write(key, sink.getvalue())
    return key, len(ok)


def run_embed(input_uri: str, output_uri: str, model: str = "sface", *, masked: bool, from_augment: bool = False,
              accept_licence: bool = False, all_faces: bool = False, finder_kind: str | None = None,
              alignment: str = "five-point", keys: list[str] | None = None, batch_size: int = 16,
              workers: int | None = None, max_pixels: int = 40_000_000, progress=None) -> JobSummary:
    import ray

    from recog.embed import Embedder

    started = time.perf_counter()
    source, output = open_store(input_uri), open_store(output_uri)
    if from_augment:
        manifest = read_manifest(input_uri)
        manifest = manifest[(manifest.status == "ok") & manifest.masked.astype(bool)]
        if keys is not None:
            manifest = manifest[manifest.source_key.isin(set(keys))]
        if manifest.output_key.isna().any():
            raise ValueError("the augment output has no whole images (outputs='crops'); rerun augment with "
                             "outputs='image' or 'both' to embed from it")
        items = [{"key": r.source_key, "identity": r.identity, "image_key": r.output_key,
                  "face_index": int(r.face_index), "landmarks5": list(r.landmarks5),
                  "landmarks68": list(r.landmarks68)} for r in manifest.itertuples()]
    else:
        items = [{"key": k} for k in (sorted(keys) if keys is not None else source.list())]
    summary = JobSummary(inputs=len(items))
    probe_model = Embedder(model, accept_licence=accept_licence)  # also fetches and caches the model once
    dim, similarity = probe_model.dim, probe_model.spec.similarity
    if not items:
        return summary
    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, log_to_driver=False)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    size = max(1, min(gpus, workers or gpus)) if gpus else pool_size(workers)
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items) // batch_size))
    ds = ds.map_batches(
        EmbedWorker,
        fn_constructor_args=(source.uri, model, accept_licence, masked, from_augment, all_faces,
                             finder_kind or ("masked" if masked else "photos"), alignment, max_pixels),
        batch_size=batch_size, num_cpus=0 if gpus else 1, num_gpus=1 if gpus else 0,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=size), batch_format="numpy",
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        rows = {k: list(v) for k, v in batch.items()}
        if not rows["key"]:
            continue
        shard, n_ok = _write_shard(output, rows, dim, similarity)
        summary.manifest_shards.append(shard)
        summary.record(rows["key"], rows["status"], n_ok, started, progress)
    summary.seconds = time.perf_counter() - started
    return summary


def read_shards(uri: str):
    """All embedding shards under `uri` as (table rows as pandas, embeddings (N, D) float32)."""
    import pyarrow as pa

    store = open_store(uri)
    tables = read_parquet_dir(store, SHARD_DIR)
    if not tables:
        raise FileNotFoundError(f"no embedding shards under {store.uri}/{SHARD_DIR}")
    table = pa.concat_tables(tables)
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    emb = column.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)
    return table.drop(["embedding"]).to_pandas(), emb
