"""The augment job on Ray: read images from a store, mask every face in an actor pool, write the masked
images, the aligned crops and a Parquet manifest with one row per input image and face.

    from jobs.augment import run_augment
    summary = run_augment("../shared/data/faces", "out/masked", AugmentOptions(style="random"))

Output layout under the output URI:
    images/<input key>                 the whole image with every mask (same relative path)
    crops/<input key stem>_face<i>.jpg aligned crops, one per masked face
    manifest/part-<hash>.parquet       manifest rows, one shard per processed batch

Reruns skip inputs that already have manifest rows. Shards are written whole (atomically) only after
their batch finished, so a batch retried after a worker died is written once.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

from jobs.inputs import InputItem, folder_identity, is_manifest, resolve_input
from jobs.pool import map_in_pool, use_threads
from jobs.storage import StorageError, UnreadableObject, open_store, redact, safe_key
from maskgen.augment import AugmentOptions

MANIFEST_DIR = "manifest"
MANIFEST_COLUMNS = ("source_key", "identity", "status", "message", "face_index", "output_key", "crop_key",
                    "box", "score", "landmarks5", "landmarks68", "face_type", "yaw", "blur", "masked",
                    "mask_style", "mask", "source", "alignment", "aligned5", "seed", "versions")
WRITABLE = {".jpg": ".jpg", ".jpeg": ".jpg", ".png": ".png", ".bmp": ".png", ".webp": ".png"}


def output_keys(source_key: str) -> tuple[str, str]:
    """(whole-image key, crop key stem) mirroring the input layout at full depth."""
    path = PurePosixPath(safe_key(source_key))
    ext = WRITABLE.get(path.suffix.lower(), ".png")
    image_key = f"images/{path.with_suffix(ext)}" if path.suffix.lower() in WRITABLE else f"images/{path}{ext}"
    return image_key, f"crops/{path.with_suffix('')}"


class AugmentWorker:
    """One per actor: models loaded once, then batches of keys processed end to end."""

    def __init__(self, input_uri: str, output_uri: str, options: AugmentOptions, max_pixels: int,
                 threads: int | None = None):
        from maskgen.augment import Augmenter

        if threads:
            use_threads(threads)
        self.input = open_store(input_uri)
        self.output = open_store(output_uri)
        self.options = options
        self.max_pixels = max_pixels
        self.augmenter = Augmenter(options, device="auto")
        self.versions = json.dumps(self.augmenter.versions, sort_keys=True)

    def __call__(self, batch: dict) -> dict:
        rows = []
        for i, key in enumerate(batch["key"]):
            item = {c: batch[c][i] for c in batch}
            try:
                rows.extend(self.process(str(key), item))
            except StorageError:
                raise  # the output cannot be written (full, gone): the job must stop, not record it
            except Exception as exc:  # one image's unexpected failure is its row, never the run's end
                rows.append({**self.image_row(str(key), item), "status": "error",
                             "message": f"{type(exc).__name__}: {exc}"})
        return {c: [r.get(c) for r in rows] for c in MANIFEST_COLUMNS}

    def process(self, key: str, item: dict | None = None) -> list[dict]:
        """Manifest rows for one image; `item` carries an input manifest's row (identity, masked flag,
        face type, 68 landmarks, or the status it was refused with)."""
        from maskgen.decode import DecodeError, decode_image, encode_image

        item = item or {}
        base = self.image_row(key, item)
        if item.get("status"):
            return [{**base, "status": str(item["status"]), "message": str(item.get("message") or "")}]
        if item.get("masked"):
            return [{**base, "status": "already_masked",
                     "message": "the input manifest marks this image as masked; not masked again"}]
        try:
            image = decode_image(self.input.read(key), max_pixels=self.max_pixels)
        except DecodeError as exc:
            return [{**base, "status": exc.status, "message": str(exc)}]
        except (FileNotFoundError, UnreadableObject) as exc:
            return [{**base, "status": getattr(exc, "status", "missing"), "message": str(exc)}]
        if len(item.get("landmarks68", ())) == 136:
            result = self.mask_given(image, key, item)
        else:
            result = self.augmenter.augment(image, key)
        image_key, crop_stem = output_keys(key)
        if result.image is not None:
            self.output.write(image_key, encode_image(result.image, PurePosixPath(image_key).suffix))
        if result.status != "ok":
            return [{**base, "status": result.status, "message": result.message,
                     "output_key": image_key if result.image is not None else None}]
        rows, crops = [], iter(result.crops)
        for face in result.faces:
            crop_key = None
            if face.masked and result.crops:
                crop_key = f"{crop_stem}_face{face.index}.jpg"
                self.output.write(crop_key, encode_image(next(crops), ".jpg"))
            rows.append({
                **base, "status": "ok", "message": face.note or result.message, "face_index": face.index,
                "output_key": image_key if result.image is not None else None, "crop_key": crop_key,
                "box": face.box, "score": face.score, "landmarks5": [v for p in face.landmarks5 for v in p],
                "landmarks68": [v for p in face.landmarks68 for v in p], "face_type": face.face_type,
                "yaw": face.yaw, "blur": face.blur, "masked": face.masked,
                "mask_style": (face.mask or {}).get("style"), "mask": json.dumps(face.mask) if face.mask else None,
                "source": face.source, "alignment": face.alignment,
                "aligned5": [v for p in face.aligned5 for v in p] if face.aligned5 else None,
            })
        return rows

    def image_row(self, key: str, item: dict) -> dict:
        """The columns every manifest row of this image has."""
        return {"source_key": key, "identity": item.get("identity") or folder_identity(key),
                "seed": self.options.seed, "versions": self.versions, "face_index": -1}

    def mask_given(self, image, key: str, item: dict):
        """Mask the face an input manifest gives by its 68 landmarks (and face type): no detection."""
        from maskgen.augment import landmarks_to_face
        from maskgen.facetype import FaceType

        lm = np.asarray(item["landmarks68"], dtype=np.float64).reshape(68, 2)
        box, points5 = landmarks_to_face(lm)
        face_types = [FaceType.from_code(str(item["face_type"]))] if item.get("face_type") else None
        return self.augmenter.mask_faces(image, key, box[None], [1.0], points5[None], lm[None],
                                         face_types=face_types, sources=["manifest"])


@dataclass
class JobSummary:
    inputs: int = 0
    skipped: int = 0
    processed: int = 0
    faces: int = 0
    statuses: dict = field(default_factory=dict)
    seconds: float = 0.0
    manifest_shards: list = field(default_factory=list)

    def record(self, source_keys, statuses, faces: int, started: float, progress=None) -> None:
        """Count one finished batch, then report progress: one input per distinct (key, status), so an
        image's face rows count once and a manifest's duplicate row of it counts as its own input."""
        inputs = dict.fromkeys(zip(source_keys, statuses))
        for _, status in inputs:
            self.statuses[status] = self.statuses.get(status, 0) + 1
        self.processed += len(inputs)
        self.faces += faces
        self.seconds = time.perf_counter() - started
        if progress:
            progress(self)


def read_parquet_dir(store, directory: str, columns=None) -> list:
    """Every Parquet shard under `directory` of a store, as pyarrow tables."""
    import pyarrow.parquet as pq

    return [pq.read_table(io.BytesIO(store.read(k)), columns=columns)
            for k in store.list(directory) if k.endswith(".parquet")]


def done_keys(output) -> set[str]:
    """Source keys that already have manifest rows (reruns skip them)."""
    return {k for t in read_parquet_dir(output, MANIFEST_DIR, ["source_key"]) for k in t.column("source_key").to_pylist()}


def write_parquet_shard(store, directory: str, table, names) -> str:
    """Write `table` as `<directory>/part-<hash>.parquet`, the hash of its sorted `names` (what the
    batch holds), so a batch retried after a worker died overwrites its own shard. Returns the key."""
    import pyarrow.parquet as pq

    name = hashlib.sha256("\n".join(sorted(set(names))).encode()).hexdigest()[:20]
    sink = io.BytesIO()
    pq.write_table(table, sink)
    key = f"{directory}/part-{name}.parquet"
    store.write(key, sink.getvalue())
    return key


def write_manifest_shard(output, table, summary: JobSummary, started: float, progress=None) -> None:
    """Write one finished batch's manifest rows as one shard, named by its source keys, and count it
    in `summary`."""
    if table.num_rows == 0:
        return
    source_keys = table.column("source_key").to_pylist()
    summary.manifest_shards.append(write_parquet_shard(output, MANIFEST_DIR, table, source_keys))
    summary.record(source_keys, table.column("status").to_pylist(),
                   sum(bool(m) for m in table.column("masked").to_pylist()), started, progress)


def job_items(input_uri: str, images_uri: str | None = None, keys: list[str] | None = None):
    """(images root store, InputItems): every image of a folder / prefix, the rows of an input
    manifest (jobs/inputs.py), or just the given `keys` of either."""
    job_input = resolve_input(input_uri, images_uri)
    items = job_input.items
    if keys is not None:
        if is_manifest(input_uri):
            wanted = set(keys)
            items = [it for it in items if it.key in wanted]
        else:
            items = [InputItem(k, folder_identity(k)) for k in sorted(set(keys))]
    if not items and keys is None:
        raise ValueError(f"no images under {redact(str(input_uri))}: check the path (nothing was written)")
    return open_store(job_input.images_uri), items


def plan_augment(input_uri: str, output_uri: str, images_uri: str | None = None,
                 keys: list[str] | None = None) -> dict:
    """What `run_augment` would do, without Ray and without writing: the inputs, which are already
    done, and for each one to process where its outputs would go (or why it is refused)."""
    source, items = job_items(input_uri, images_uri, keys)
    output = open_store(output_uri)
    done = done_keys(output)
    todo = []
    for it in items:
        if it.key in done:
            continue
        if it.status:
            todo.append((it.key, f"refused: {it.status} ({it.message})"))
        else:
            image_key, crop_stem = output_keys(it.key)
            todo.append((it.key, f"{output.uri_of(image_key)}, {crop_stem}_face<i>.jpg"))
    return {"images": source.uri, "output": output.uri, "inputs": len(items), "done": len(items) - len(todo),
            "todo": todo}


def run_augment(input_uri: str, output_uri: str, options: AugmentOptions | None = None, *,
                images_uri: str | None = None, keys: list[str] | None = None, batch_size: int = 8,
                workers: int | None = None, max_pixels: int = 40_000_000, progress=None) -> JobSummary:
    """Mask every image of `input_uri` into `output_uri`, on the Ray cluster `ray.init()` connects to
    (in-process when none is running). `input_uri` is a folder, an `s3://` prefix, or an input
    manifest (.csv / .parquet, see jobs/inputs.py) whose paths are relative to `images_uri` (default:
    the manifest's folder); `keys` restricts the job to those images."""
    import pyarrow as pa

    options = options or AugmentOptions()
    started = time.perf_counter()
    source, items = job_items(input_uri, images_uri, keys)
    output = open_store(output_uri)
    output.check_writable()  # an unreachable endpoint or unwritable folder fails before any work
    done = done_keys(output)
    todo = [it for it in items if it.key not in done]
    summary = JobSummary(inputs=len(items), skipped=len(items) - len(todo))
    if todo:
        batches = map_in_pool([it.to_row() for it in todo], AugmentWorker,
                              (source.uri, output.uri, options, max_pixels), batch_size=batch_size, workers=workers,
                              batch_format="pyarrow")
        for batch in batches:
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_pydict(batch)
            write_manifest_shard(output, table, summary, started, progress)
    summary.seconds = time.perf_counter() - started
    return summary


def read_manifest(output_uri: str):
    """The whole manifest as a pandas DataFrame."""
    import pandas as pd

    tables = read_parquet_dir(open_store(output_uri), MANIFEST_DIR)
    if not tables:
        return pd.DataFrame(columns=list(MANIFEST_COLUMNS))
    return pd.concat([t.to_pandas() for t in tables], ignore_index=True)
