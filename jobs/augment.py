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

from jobs.storage import open_store, safe_key
from maskgen.augment import AugmentOptions

MANIFEST_DIR = "manifest"
MANIFEST_COLUMNS = ("source_key", "identity", "status", "message", "face_index", "output_key", "crop_key",
                    "box", "score", "landmarks5", "landmarks68", "face_type", "yaw", "blur", "masked",
                    "mask_style", "mask", "source", "alignment", "seed", "versions")
WRITABLE = {".jpg": ".jpg", ".jpeg": ".jpg", ".png": ".png", ".bmp": ".png", ".webp": ".png"}


def _encode(rgb: np.ndarray, ext: str) -> bytes:
    import cv2

    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else [])
    if not ok:
        raise RuntimeError(f"could not encode {ext}")
    return buf.tobytes()


def output_keys(source_key: str) -> tuple[str, str]:
    """(whole-image key, crop key stem) mirroring the input layout at full depth."""
    path = PurePosixPath(safe_key(source_key))
    ext = WRITABLE.get(path.suffix.lower(), ".png")
    image_key = f"images/{path.with_suffix(ext)}" if path.suffix.lower() in WRITABLE else f"images/{path}{ext}"
    return image_key, f"crops/{path.with_suffix('')}"


def identity_of(key: str) -> str:
    parts = PurePosixPath(key).parts
    return parts[-2] if len(parts) >= 2 else ""


class AugmentWorker:
    """One per actor: models loaded once, then batches of keys processed end to end."""

    def __init__(self, input_uri: str, output_uri: str, options: AugmentOptions, max_pixels: int):
        from maskgen.augment import Augmenter

        self.input = open_store(input_uri)
        self.output = open_store(output_uri)
        self.options = options
        self.max_pixels = max_pixels
        self.augmenter = Augmenter(options, device="auto")
        self.versions = json.dumps(self.augmenter.versions, sort_keys=True)

    def __call__(self, batch: dict) -> dict:
        rows = []
        for key in batch["key"]:
            rows.extend(self.process(str(key)))
        return {c: [r.get(c) for r in rows] for c in MANIFEST_COLUMNS}

    def process(self, key: str) -> list[dict]:
        from maskgen.decode import DecodeError, decode_image

        base = {"source_key": key, "identity": identity_of(key), "seed": self.options.seed,
                "versions": self.versions, "face_index": -1}
        try:
            image = decode_image(self.input.read(key), max_pixels=self.max_pixels)
        except DecodeError as exc:
            return [{**base, "status": exc.status, "message": str(exc)}]
        except FileNotFoundError as exc:
            return [{**base, "status": "missing", "message": str(exc)}]
        result = self.augmenter.augment(image, key)
        image_key, crop_stem = output_keys(key)
        if result.image is not None:
            self.output.write(image_key, _encode(result.image, PurePosixPath(image_key).suffix))
        if result.status != "ok":
            return [{**base, "status": result.status, "message": result.message,
                     "output_key": image_key if result.image is not None else None}]
        rows, crops = [], iter(result.crops)
        for face in result.faces:
            crop_key = None
            if face.masked and result.crops:
                crop_key = f"{crop_stem}_face{face.index}.jpg"
                self.output.write(crop_key, _encode(next(crops), ".jpg"))
            rows.append({
                **base, "status": "ok", "message": face.note or result.message, "face_index": face.index,
                "output_key": image_key if result.image is not None else None, "crop_key": crop_key,
                "box": face.box, "score": face.score, "landmarks5": [v for p in face.landmarks5 for v in p],
                "landmarks68": [v for p in face.landmarks68 for v in p], "face_type": face.face_type,
                "yaw": face.yaw, "blur": face.blur, "masked": face.masked,
                "mask_style": (face.mask or {}).get("style"), "mask": json.dumps(face.mask) if face.mask else None,
                "source": face.source, "alignment": face.alignment,
            })
        return rows


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
        """Count one finished batch: statuses per image (its first row), then report progress."""
        per_image = {}
        for key, status in zip(source_keys, statuses):
            per_image.setdefault(key, status)
        for status in per_image.values():
            self.statuses[status] = self.statuses.get(status, 0) + 1
        self.processed += len(per_image)
        self.faces += faces
        self.seconds = time.perf_counter() - started
        if progress:
            progress(self)

    def line(self) -> str:
        rate = self.processed / self.seconds if self.seconds else 0.0
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items()))
        return (f"{self.processed} images ({rate:.1f}/s), {self.faces} faces; {counts}; "
                f"{self.skipped} skipped as done")


def read_parquet_dir(store, directory: str, columns=None) -> list:
    """Every Parquet shard under `directory` of a store, as pyarrow tables."""
    import pyarrow.parquet as pq

    return [pq.read_table(io.BytesIO(store.read(k)), columns=columns)
            for k in store.list(directory) if k.endswith(".parquet")]


def done_keys(output) -> set[str]:
    """Source keys that already have manifest rows (reruns skip them)."""
    return {k for t in read_parquet_dir(output, MANIFEST_DIR, ["source_key"]) for k in t.column("source_key").to_pylist()}


def pool_size(requested: int | None = None) -> int:
    """Actors that leave a CPU for Ray's read and write tasks (an actor pool that takes every CPU hangs)."""
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    size = max(1, cpus - 1)
    return max(1, min(requested, size)) if requested else size


def run_augment(input_uri: str, output_uri: str, options: AugmentOptions | None = None, *,
                keys: list[str] | None = None, batch_size: int = 8, workers: int | None = None,
                max_pixels: int = 40_000_000, progress=None) -> JobSummary:
    """Mask every image of `input_uri` (or the given `keys`) into `output_uri`, on the Ray cluster
    `ray.init()` connects to (in-process when none is running)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    options = options or AugmentOptions()
    started = time.perf_counter()
    source, output = open_store(input_uri), open_store(output_uri)
    all_keys = sorted(keys) if keys is not None else source.list()
    done = done_keys(output)
    todo = [k for k in all_keys if k not in done]
    summary = JobSummary(inputs=len(all_keys), skipped=len(all_keys) - len(todo))
    if todo:
        if not ray.is_initialized():
            ray.init(ignore_reinit_error=True, log_to_driver=False)
        size = pool_size(workers)
        ds = ray.data.from_items([{"key": k} for k in todo], override_num_blocks=max(1, len(todo) // batch_size))
        ds = ds.map_batches(
            AugmentWorker, fn_constructor_args=(source.uri, output.uri, options, max_pixels),
            batch_size=batch_size, num_cpus=1, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=size),
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_pydict(batch)
            if table.num_rows == 0:
                continue
            shard_keys = sorted(set(table.column("source_key").to_pylist()))
            name = hashlib.sha256("\n".join(shard_keys).encode()).hexdigest()[:20]
            sink = io.BytesIO()
            pq.write_table(table, sink)
            shard = f"{MANIFEST_DIR}/part-{name}.parquet"
            output.write(shard, sink.getvalue())
            summary.manifest_shards.append(shard)
            summary.record(table.column("source_key").to_pylist(), table.column("status").to_pylist(),
                           sum(bool(m) for m in table.column("masked").to_pylist()), started, progress)
    summary.seconds = time.perf_counter() - started
    return summary


def read_manifest(output_uri: str):
    """The whole manifest as a pandas DataFrame."""
    import pandas as pd

    tables = read_parquet_dir(open_store(output_uri), MANIFEST_DIR)
    if not tables:
        return pd.DataFrame(columns=list(MANIFEST_COLUMNS))
    return pd.concat([t.to_pandas() for t in tables], ignore_index=True)
