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

import time

import numpy as np

from jobs.augment import JobSummary, job_items, read_manifest, read_parquet_dir, write_parquet_shard
from jobs.inputs import folder_identity
from jobs.pool import map_in_pool, use_threads
from jobs.storage import StorageError, UnreadableObject, open_store

SHARD_DIR = "shards"


class EmbedWorker:
    def __init__(self, input_uri: str, model: str, accept_licence: bool, masked: bool, from_augment: bool,
                 all_faces: bool, finder_options, alignment: str, max_pixels: int, mode: str = "plain",
                 mask_style: str = "seed", seed: int = 0, threads: int | None = None):
        from maskgen.finder import FaceFinder
        from recog.embed import Embedder
        from recog.matching import mode_from_name

        if threads:
            use_threads(threads)
        self.input = open_store(input_uri)
        self.mode = mode_from_name(mode)
        self.embedder = Embedder(model, accept_licence=accept_licence, flip=self.mode.flip, region=self.mode.region)
        self.masked, self.from_augment, self.all_faces = masked, from_augment, all_faces
        self.alignment, self.max_pixels = alignment, max_pixels
        self.finder = None if from_augment else FaceFinder(finder_options)
        self.masker = None
        if self.mode.masked_gallery and not from_augment and not masked:
            from maskgen.augment import AugmentOptions, Augmenter

            # the gallery gets the probes' synthetic mask, drawn with the same style and run seed
            self.masker = Augmenter(AugmentOptions(style=mask_style, seed=seed, outputs="image"),
                                    detector=self.finder.detector("mtcnn"))
        self._eye_locator = None

    def eye_locator(self):
        """Made on first use: only `eyes` / `auto` alignment of detected faces needs it."""
        if self._eye_locator is None:
            from maskgen.eyes import EyeLocator
            from maskgen.landmarks import LandmarkPredictor

            predictor = self.masker.predictor if self.masker is not None else LandmarkPredictor()
            self._eye_locator = EyeLocator(self.finder.detector("mtcnn"), predictor)
        return self._eye_locator

    def __call__(self, batch: dict) -> dict:
        out = {"key": [], "identity": [], "masked": [], "face_index": [], "model_id": [], "mode": [],
               "embedding": [], "status": [], "message": []}

        def emit(key, identity, face_index, vector, status="ok", message=""):
            out["key"].append(key)
            out["identity"].append(identity)
            out["masked"].append(self.masked)
            out["face_index"].append(face_index)
            out["model_id"].append(self.embedder.model_id)
            out["mode"].append(self.mode.name)
            # a failed face still needs a vector of the right shape for Ray's tensor column; its
            # status says it is not one, and the shard stores it as null
            out["embedding"].append(np.zeros(self.embedder.dim, np.float32) if vector is None else vector)
            out["status"].append(status)
            out["message"].append(message)

        for i, key in enumerate(batch["key"]):
            key = str(key)
            identity = str(batch["identity"][i]) if "identity" in batch else folder_identity(key)
            face_index = int(batch["face_index"][i]) if self.from_augment else -1
            try:
                for idx, vector, status, message in self.process(batch, i, key):
                    emit(key, identity, idx, vector, status, message)
            except StorageError:
                raise  # the input store failed as a whole: stop the job rather than record every image
            except Exception as exc:  # one face's unexpected failure is its row, never the run's end
                emit(key, identity, face_index, None, "error", f"{type(exc).__name__}: {exc}")
        return out


    def process(self, batch: dict, i: int, key: str):
        """(face index, vector or None, status, message) for item `i` of the batch."""
        from maskgen.decode import DecodeError, decode_image

        face_index = int(batch["face_index"][i]) if self.from_augment else -1
        refused = batch["status"][i] if "status" in batch else None
        if refused:  # an input-manifest row refused before any reading (unsafe path, duplicate, ...)
            return [(face_index, None, str(refused), str(batch["message"][i]))]
        image_key = str(batch["image_key"][i]) if "image_key" in batch else key
        try:
            image = decode_image(self.input.read(image_key), max_pixels=self.max_pixels)
        except (DecodeError, FileNotFoundError, UnreadableObject) as exc:
            return [(face_index, None, getattr(exc, "status", "missing"), str(exc))]
        if self.from_augment:  # the points are final: chosen by augment on the unmasked image
            points = [np.asarray(batch["points"][i], dtype=np.float64).reshape(5, 2)]
            return [(face_index, self.embedder.embed_faces(image, points)[0].astype(np.float32), "ok", "")]
        faces = self.finder.find(image)
        if not faces:
            return [(-1, None, "no_face", "no face found")]
        if not self.all_faces:
            faces = [max(faces, key=lambda f: f.width * f.height)]
        points, lm68, indices = [f.points for f in faces], None, list(range(len(faces)))
        boxes = np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4)
        eyes_image = image  # eyes are located before the gallery mask, if any, is drawn
        if self.masker is not None:  # masked-gallery mode: mask the face, keep its unmasked alignment
            lm68 = self.masker.predictor.predict(image, boxes)
            image = self.masker.mask_faces(image, key, boxes, [f.score for f in faces], np.stack(points),
                                           lm68, sources=[f.source for f in faces]).image
        vectors = self.embedder.embed_faces(
            image, points, lm68, alignment=self.alignment,
            locate_eyes=lambda k: self.eye_locator().locate(eyes_image, boxes[k], points[k]))
        return [(idx, vec.astype(np.float32), "ok", "") for idx, vec in zip(indices, vectors)]


def write_shard(store, rows: dict, dim: int, similarity: str, summary: JobSummary, started: float,
                progress=None) -> None:
    """One shard for one finished batch, counted in `summary`; failed faces keep their row (status,
    message, null embedding) so that a rerun knows they were seen."""
    import pyarrow as pa

    if not rows["key"]:
        return
    ok = np.array([s == "ok" for s in rows["status"]], dtype=bool)
    emb = np.zeros((len(ok), dim), np.float32)
    for i in np.nonzero(ok)[0]:
        emb[i] = np.asarray(rows["embedding"][i], np.float32)
    table = pa.table({
        "key": pa.array([str(k) for k in rows["key"]], pa.string()),
        "identity": pa.array([str(v) for v in rows["identity"]], pa.string()),
        "masked": pa.array([bool(v) for v in rows["masked"]]),
        "face_index": pa.array([int(v) for v in rows["face_index"]], pa.int32()),
        "model_id": pa.array([str(v) for v in rows["model_id"]], pa.string()),
        "mode": pa.array([str(v) for v in rows["mode"]], pa.string()),
        "similarity": pa.array([similarity] * len(ok), pa.string()),
        "status": pa.array([str(v) for v in rows["status"]], pa.string()),
        "message": pa.array([str(v) for v in rows["message"]], pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim,
                                                        mask=pa.array(~ok)),
    })
    # named by its faces: a face is one item of one batch, an image's faces may be split across batches
    faces = [f"{k}#{i}" for k, i in zip(table.column("key").to_pylist(), table.column("face_index").to_pylist())]
    summary.manifest_shards.append(write_parquet_shard(store, SHARD_DIR, table, faces))
    summary.record(rows["key"], rows["status"], int(ok.sum()), started, progress)


def done_faces(store, model_id: str, mode: str = "plain") -> set[tuple[str, int]]:
    """(key, face_index) of every row already in the shards for this model and matching mode;
    raw-image rows count as face -1 too, so the image is not detected again."""
    done = set()
    for t in read_parquet_dir(store, SHARD_DIR, ["key", "face_index", "model_id", "mode"]):
        for key, face, model, shard_mode in zip(*(t.column(c).to_pylist()
                                                  for c in ("key", "face_index", "model_id", "mode"))):
            if model == model_id and shard_mode == mode:
                done.update({(key, face), (key, -1)})
    return done


def embed_items(input_uri: str, from_augment: bool, images_uri: str | None = None,
                keys: list[str] | None = None, alignment: str = "five-point"):
    """(input store, work items): faces of an augment output, or the images of a folder / manifest.
    An augment output's faces carry the points they are aligned with: the unmasked detection's 5
    points (`five-point`), or for `eyes` / `auto` the points augment aligned its crops with, which
    needs augment to have run with that alignment (it located the eyes on the unmasked image)."""
    if from_augment:
        source = open_store(input_uri)
        manifest = read_manifest(input_uri)
        if manifest.empty:
            raise FileNotFoundError(f"no augment manifest under {source.uri_of('manifest')}: is this an augment "
                                    "output? (without --from-augment the input is a folder of images)")
        manifest = manifest[(manifest.status == "ok") & manifest.masked.astype(bool)]
        if keys is not None:
            manifest = manifest[manifest.source_key.isin(set(keys))]
        if manifest.output_key.isna().any():
            raise ValueError("the augment output has no whole images (outputs='crops'); rerun augment with "
                             "outputs='image' or 'both' to embed from it")
        if alignment != "five-point":
            recorded = set(manifest.alignment) if "aligned5" in manifest else set()
            if not recorded or (alignment == "eyes" and recorded != {"eyes"}):
                raise ValueError(
                    f"--alignment {alignment} from an augment output needs the crops' own alignment points, "
                    f"which augment records when run with --alignment {alignment} (this output was aligned "
                    f"by {', '.join(sorted(recorded)) or 'five-point, before aligned5 was recorded'}); rerun "
                    f"augment with --alignment {alignment}, or embed with --alignment five-point")
        column = "landmarks5" if alignment == "five-point" else "aligned5"
        items = [{"key": r.source_key, "identity": r.identity, "image_key": r.output_key,
                  "face_index": int(r.face_index), "points": list(getattr(r, column))}
                 for r in manifest.itertuples()]
        return source, items
    source, inputs = job_items(input_uri, images_uri, keys)
    return source, [{"key": it.key, "identity": it.identity, "status": it.status or "", "message": it.message}
                    for it in inputs]


def plan_embed(input_uri: str, output_uri: str, model: str = "sface", *, from_augment: bool = False,
               accept_licence: bool = False, images_uri: str | None = None, mode: str = "plain",
               alignment: str = "five-point") -> dict:
    """What `run_embed` would do, without Ray and without writing (the model is fetched and cached,
    since its identity decides which shards count as done)."""
    from recog.embed import Embedder

    source, items = embed_items(input_uri, from_augment, images_uri, alignment=alignment)
    output = open_store(output_uri)
    done = done_faces(output, Embedder(model, accept_licence=accept_licence).model_id, mode)
    todo = []
    for it in items:
        if (it["key"], it.get("face_index", -1)) in done:
            continue
        where = f"refused: {it['status']} ({it['message']})" if it.get("status") else \
            f"a row in {output.uri_of(SHARD_DIR)}/part-<hash>.parquet"
        face = f" face {it['face_index']}" if from_augment else ""
        todo.append((f"{it['key']}{face}", where))
    return {"images": source.uri, "output": output.uri, "inputs": len(items), "done": len(items) - len(todo),
            "todo": todo}


def run_embed(input_uri: str, output_uri: str, model: str = "sface", *, masked: bool, from_augment: bool = False,
              accept_licence: bool = False, all_faces: bool = False, finder_kind: str | None = None,
              alignment: str = "five-point", images_uri: str | None = None, keys: list[str] | None = None,
              batch_size: int = 16, workers: int | None = None, max_pixels: int = 40_000_000,
              mode: str = "plain", mask_style: str = "seed", seed: int = 0, crop_mode: str | None = None,
              progress=None) -> JobSummary:
    """Embed every face of `input_uri` into shards under `output_uri` (see the module docstring).
    `mode` is a matching mode of recog.matching (`plain`, `masked-gallery`, `flip`, `upper-face`);
    `masked-gallery` draws `mask_style` with run `seed` on unmasked faces before embedding them.
    Faces are found with `FinderOptions.for_inputs(finder_kind)` (`photos`, `masked`, `crops`; default
    `masked` for probes, else `photos`), `crop_mode` (`auto`, `on`, `off`) overriding the preset's."""
    from maskgen.finder import FinderOptions
    from recog.embed import Embedder

    started = time.perf_counter()
    finder = FinderOptions.for_inputs(finder_kind or ("masked" if masked else "photos"), crop_mode=crop_mode)
    output = open_store(output_uri)
    source, items = embed_items(input_uri, from_augment, images_uri, keys, alignment)
    output.check_writable()  # an unreachable endpoint or unwritable folder fails before any work
    probe_model = Embedder(model, accept_licence=accept_licence)  # also fetches and caches the model once
    dim, similarity = probe_model.dim, probe_model.spec.similarity
    done = done_faces(output, probe_model.model_id, mode)
    todo = [it for it in items if (it["key"], it.get("face_index", -1)) not in done]
    summary = JobSummary(inputs=len(items), skipped=len(items) - len(todo))
    if not todo:
        summary.seconds = time.perf_counter() - started
        return summary
    args = (source.uri, model, accept_licence, masked, from_augment, all_faces, finder, alignment, max_pixels,
            mode, mask_style, seed)
    batches = map_in_pool(todo, EmbedWorker, args, batch_size=batch_size, workers=workers, use_gpus=True)
    for batch in batches:
        write_shard(output, {k: list(v) for k, v in batch.items()}, dim, similarity, summary, started, progress)
    summary.seconds = time.perf_counter() - started
    return summary


def read_shards(uri: str):
    """All embedding shards under `uri` as (table rows as pandas, embeddings (N, D) float32)."""
    import pyarrow as pa
    import pyarrow.compute  # noqa: F401  (pa.compute)

    store = open_store(uri)
    tables = read_parquet_dir(store, SHARD_DIR)
    if not tables:
        raise FileNotFoundError(f"no embedding shards under {store.uri}/{SHARD_DIR}")
    table = pa.concat_tables(tables)
    table = table.filter(pa.compute.equal(table.column("status"), "ok"))
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    emb = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)
    return table.drop(["embedding"]).to_pandas(), emb
