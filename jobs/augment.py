"""The augment job on Ray: read images from a store, mask every face in an actor pool, write the masked
images, the aligned crops and a Parquet manifest with one row per input image and face.

    from jobs.augment import run_augment
    summary = run_augment("../shared/data/faces", "out/masked", AugmentOptions(style="random"))

Output layout under the output URI:
    images/<input key>                    the whole image with every mask, under the input's own name
                                          (JPEG, PNG, BMP and WebP inputs keep their format)
    converted/<input key>.png             the same for inputs of formats not written back (GIF, TIFF, ...)
    crops/<input key>_face<i>.jpg         aligned crops, one per masked face
    manifest/g=<group>/part-<hash>.parquet  manifest rows, written by the workers (jobs/sink.py)

Every name derives from the whole input key, extension included, so two inputs never share an
output (`a.jpg`, `a.jpeg` and `a.JPG` stay three files). The dataset flows read tasks (listing,
jobs/source.py) -> an autoscaling actor pool (this module's `AugmentWorker`) -> shard-writing tasks;
the driver receives only counts. Reruns skip inputs that already have manifest rows, found per group
inside the read tasks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from pathlib import PurePosixPath

import numpy as np

from jobs.inputs import folder_identity, input_listing, with_progress
from jobs.lease import Lease
from jobs.local import LOCAL_MAX_INPUTS, check_executor, run_here
from jobs.pool import ensure_ray, plan_pool, use_threads
from jobs.settings import augment_settings, refuse_other_output, settings_recorded, source_note, source_of
from jobs.sink import (ROWS_PER_SHARD, JobSummary, batch_counts, mark_inputs, require_inputs, run_listed,
                        write_shards, write_stage)
from jobs.storage import MissingColumns, StorageError, UnreadableObject, open_store, read_parquet_bytes, safe_key
from maskgen.augment import AugmentOptions
from maskgen.checks import check_flag, is_whole
from maskgen.decode import DEFAULT_MAX_PIXELS
from maskgen.record import FaceRecord, record_schema

MANIFEST_DIR = "manifest"
AHEAD_PIXELS = 16_000_000  # decoded pixels of one batch masked together (48 MB of RGB); the rest one by one
WRITTEN_AS_IS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def manifest_schema(with_group: bool = False):
    """The manifest's columns (`maskgen.record.FaceRecord.to_row("manifest")`), plus the group and
    the `_first` and `_rows` marks the job carries to its shard writers (`jobs.sink.mark_inputs`)."""
    import pyarrow as pa

    extra = (("group", pa.string()), ("_first", pa.bool_()), ("_rows", pa.int32()))
    return record_schema("manifest", extra=extra if with_group else ())


NAME_MAX = 255  # bytes in one path component on common file systems


def fit_name(key: str, extra: int) -> str:
    """`key` with its last component shortened (a prefix and a hash of the whole name) when it
    plus `extra` bytes of suffix would pass NAME_MAX: inputs named near the limit still get outputs."""
    head, _, name = key.rpartition("/")
    if len(name.encode("utf-8", "surrogateescape")) + extra <= NAME_MAX:
        return key
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    short = name.encode("utf-8", "surrogateescape")[:120].decode("utf-8", "ignore") + "~" + digest
    return f"{head}/{short}" if head else short


def fit_folders(key: str) -> str:
    """`key` with each folder name past NAME_MAX shortened as `fit_name` shortens a name (an S3 key's
    300-byte folder stopped a job writing to a local folder, and every rerun)."""
    *folders, name = key.split("/")
    return "/".join([*(fit_name(folder, 0) for folder in folders), name])


def output_keys(source_key: str) -> tuple[str, str]:
    """(whole-image key, crop key prefix): `images/<key>` for formats written as they are, else
    `converted/<key>.png`; crops are `<prefix>_face<i>.jpg`. Names near the file system's limit
    are shortened with a hash (`fit_name`; an S3 key's name of 300 bytes stopped a job writing to a
    local folder, and every rerun), an image's keeping its extension, which says its format."""
    key = fit_folders(safe_key(source_key))
    suffix = PurePosixPath(key).suffix.lower()
    extension = PurePosixPath(key).suffix
    image_key = f"images/{fit_name(key[:len(key) - len(extension)], len(extension.encode()))}{extension}" \
        if suffix in WRITTEN_AS_IS else f"converted/{fit_name(key, 4)}.png"
    return image_key, f"crops/{fit_name(key, len('_face9999.jpg'))}"


def image_file(data: bytes, result, image_key: str, source) -> bytes:
    """The output file of an image: the masked image encoded in its own format, grey if the input is
    and with its ICC profile; an image in which no face was masked is the input file itself, byte for
    byte (no second JPEG generation, all its metadata kept), unless it is written under another format
    (`converted/`) or decoding turned it upright by its EXIF orientation (written upright, as every
    masked image is, so no output needs its tag). `source` is the input's
    `maskgen.decode.SourceFormat`."""
    from maskgen.decode import encode_image

    nothing_drawn = not any(face.masked for face in result.faces)  # none found, or none masked
    if nothing_drawn and image_key.startswith("images/") and source.orientation == 1:
        return bytes(data)
    return encode_image(result.image, PurePosixPath(image_key).suffix, like=source)


def landmarks_given(item: dict) -> bool:
    """Whether an input manifest gives the image's faces by their 68 landmarks (masked from them, no
    detection): 136 values per face."""
    count = len(item.get("landmarks68") or ())
    return count > 0 and count % 136 == 0


def node_id() -> str:
    """The Ray node this process runs on; empty outside Ray (the local executor never imports Ray)."""
    import sys

    ray = sys.modules.get("ray")
    return ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else ""


class AugmentWorker:
    """One per actor: models loaded once, then batches of keys processed end to end."""

    already_masked = "the input manifest marks this image as masked; not masked again"
    # such a row's file is looked for (not read): its manifest row says missing where there is none
    # (under a wrong --images every such row read already_masked, the unmasked ones missing)
    looks_for_masked = True

    def __init__(self, input_uri: str, output_uri: str, options: AugmentOptions, max_pixels: int,
                 progress=None, threads: int | None = None, device="auto"):
        from maskgen.augment import Augmenter
        from maskgen.runtime import resolve_device

        if threads:
            use_threads(threads)
        self.input = open_store(input_uri)
        self.output = open_store(output_uri)
        self.options = options
        self.max_pixels = max_pixels
        self.augmenter = Augmenter(options, device=resolve_device(device))
        self.versions = json.dumps(self.augmenter.versions, sort_keys=True)
        self.progress, self.node = progress, node_id()
        self.schema = manifest_schema(with_group=True)
        self._ready: dict = {}  # input_row -> (file bytes, image, SourceFormat, AugmentResult) made ahead

    def __call__(self, batch):
        import pyarrow as pa

        rows = []
        items = batch.to_pylist()
        self._ready = self.augment_ahead(items)
        for item in items:
            key = item["key"]
            try:
                found = self.rows_for(key, item)
            except StorageError:
                raise  # the output cannot be written (full, gone): the job must stop, not record it
            except Exception as exc:  # one image's unexpected failure is its row, never the run's end
                record = self.image_record(key, item).with_(status="error", message=f"{type(exc).__name__}: {exc}")
                found = [{**record.to_row("manifest"), **self.row_extras(item)}]
            rows.extend({**r, "group": item["group"], "input_row": item["input_row"], "node": self.node}
                        for r in found)
        self._ready = {}
        table = pa.Table.from_pylist(mark_inputs(rows), schema=self.schema)
        if self.progress is not None:
            self.progress.batch.remote(*batch_counts(table, "masked"))
        return table

    def augment_ahead(self, items: list[dict]) -> dict:
        """Decode a batch's images and mask them in one `Augmenter.augment_batch` call: MTCNN then runs
        P-Net once per pyramid level for all images of a size and R-Net and O-Net once for the batch
        (one image at a time cost 1.3x the time on LFW-size photos). Returns {input_row: (image,
        result)}. Images that are refused, already masked, given landmarks, undecodable or beyond
        `AHEAD_PIXELS` in all are left to `augment_image`, as is the whole batch when one of its
        images makes the batch call fail (each then fails alone, as its own row)."""
        from maskgen.decode import decode_with_source

        todo, pixels = [], 0
        for item in items:
            if item.get("status") or item.get("masked") or landmarks_given(item):
                continue
            try:
                data = self.input.read(item["key"])
                image, source = decode_with_source(data, max_pixels=self.max_pixels)
            except UnreadableObject:  # this input's problem (a folder, no permission): its own row
                continue
            except StorageError:
                raise
            except Exception:  # augment_image reads it again and records why
                continue
            pixels += image.shape[0] * image.shape[1]
            if pixels > AHEAD_PIXELS:  # bounded memory: large photos go one at a time
                break
            todo.append((item, data, image, source))
        if not todo:
            return {}
        try:
            results = self.augmenter.augment_batch([image for _, _, image, _ in todo],
                                                   [item["key"] for item, *_ in todo])
        except Exception:
            return {}
        return {item["input_row"]: (data, image, source, result)
                for (item, data, image, source), result in zip(todo, results)}

    def rows_for(self, key: str, item: dict) -> list[dict]:
        """The manifest rows of one input row (a subclass adds columns: jobs/run.py)."""
        return [r.to_row("manifest") for r in self.process(key, item)]

    def row_extras(self, item: dict) -> dict:
        """Columns a subclass puts on every row of an input, its error row included (jobs/run.py)."""
        return {}

    def process(self, key: str, item: dict | None = None) -> list[FaceRecord]:
        """The face records of one image; `item` carries an input manifest's row (identity, masked
        flag, face type, 68 landmarks, or the status it was refused with)."""
        return self.augment_image(key, item)[0]

    def augment_image(self, key: str, item: dict | None = None):
        """(face records, the decoded image or None, the AugmentResult or None) of one input: the
        masked image and crops are written and their keys set on the records."""
        from maskgen.decode import DecodeError, decode_with_source, encode_image

        item = item or {}
        base = self.image_record(key, item)
        if item.get("status"):
            return [base.with_(status=str(item["status"]), message=str(item.get("message") or ""))], None, None
        if item.get("masked") and self.looks_for_masked:
            try:
                there = self.input.exists(key, reading=True)
            except UnreadableObject as exc:  # (access denied: that row's, as a read's would be)
                return [base.with_(status=exc.status, message=str(exc))], None, None
            if not there:
                return [base.with_(status="missing", message=f"{self.input.uri_of(key)}: no such image (the input "
                                                             "manifest marks it as masked)")], None, None
        if item.get("masked"):
            return [base.with_(status="already_masked", message=self.already_masked)], None, None
        ready = self._ready.pop(item.get("input_row"), None)
        if ready is not None:
            data, image, source, result = ready
        else:
            try:
                data = self.input.read(key)
                image, source = decode_with_source(data, max_pixels=self.max_pixels)
            except DecodeError as exc:
                return [base.with_(status=exc.status, message=str(exc))], None, None
            except (FileNotFoundError, UnreadableObject) as exc:
                return [base.with_(status=getattr(exc, "status", "missing"), message=str(exc))], None, None
            if landmarks_given(item):
                result = self.mask_given(image, key, item)
            else:
                result = self.augmenter.augment(image, key)
        image_key, crop_prefix = output_keys(key)
        if result.image is not None:
            self.output.write(image_key, image_file(data, result, image_key, source))
        output_key = image_key if result.image is not None else None
        if result.status != "ok":  # the image was read: its row says how large it is, as a face's row does
            return [base.with_(status=result.status, message=result.message, output_key=output_key,
                               image_size=[int(result.width), int(result.height)])], image, result
        crops = iter(result.crops)
        for face in result.faces:
            face.identity, face.versions, face.output_key = base.identity, base.versions, output_key
            if face.masked and result.crops:
                face.crop_key = f"{crop_prefix}_face{face.face_index}.jpg"
                self.output.write(face.crop_key, encode_image(next(crops), ".jpg", like=source))
        return result.faces, image, result

    def image_record(self, key: str, item: dict) -> FaceRecord:
        """The record of an image before any face is found: what every one of its rows shares. Its
        `masked` is False (no mask drawn), as a face's left unmasked is and a shard's failed row is: a
        null beside them made pandas' `manifest[manifest.masked]` fail ("non-boolean array containing NA")."""
        return FaceRecord(source_key=key, identity=item.get("identity") or folder_identity(key),
                          seed=self.options.seed, versions=self.versions, masked=False)

    def mask_given(self, image, key: str, item: dict):
        """Mask the faces an input manifest gives by their 68 landmarks (and face types; a face without
        one is classified): no detection."""
        from maskgen.augment import landmarks_to_face
        from maskgen.facetype import FaceType

        lm = np.asarray(item["landmarks68"], dtype=np.float64).reshape(-1, 68, 2)
        faces = [landmarks_to_face(points) for points in lm]
        codes = str(item.get("face_type") or "").split(",") if item.get("face_type") else []
        face_types = [FaceType.from_code(c) if c else None for c in codes + [""] * (len(lm) - len(codes))]
        return self.augmenter.mask_faces(image, key, np.array([b for b, _ in faces]), [1.0] * len(lm),
                                         np.array([p for _, p in faces]), lm,
                                         face_types=face_types if any(face_types) else None,
                                         sources=["manifest"] * len(lm))


def augment_stage(ds, images_uri: str, output_uri: str, options: AugmentOptions, *, batch_size: int,
                  workers: int | None, max_pixels: int, progress=None):
    """`ds` (input rows) through the augment pool: manifest rows out, images and crops written."""
    plan = plan_pool(workers)
    return ds.map_batches(AugmentWorker, fn_constructor_args=(images_uri, output_uri, options, max_pixels, progress),
                          fn_constructor_kwargs=plan.actor_kwargs, batch_size=batch_size,
                          batch_format="pyarrow", **plan.map_batches_args())


MAX_COUNT = 2**63 - 1  # what NumPy, pandas and the pool's C code hold: 2**63 raised OverflowError inside a job


def check_counts(**counts) -> None:
    """A job's count arguments (batch_size, rows_per_shard, max_pixels, workers, ...), refused before any
    work unless each is a whole number of at least 1, and at most MAX_COUNT (max_pixels excepted: past
    it, no limit) (None: not given, where the job has a default)."""
    for name, value in counts.items():
        if value is not None and (not is_whole(value) or value < 1):
            raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        if value is not None and name != "max_pixels" and value > MAX_COUNT:
            raise ValueError(f"{name} must be at most 2**63 - 1, got {value!r}")


def check_job_options(manifest_encoding=None, progress=None) -> None:
    """A job's manifest encoding (a text encoding Python knows, or auto: `jobs.inputs.manifest_encoding`)
    and progress callback, refused before any work as the command line refuses them: an unknown
    encoding was a bare LookupError after the output was made, a progress that is no function a
    TypeError once every image was done."""
    from jobs.inputs import manifest_encoding as known_encoding

    if manifest_encoding is not None and not isinstance(manifest_encoding, str):
        raise ValueError(f"manifest_encoding is an encoding's name (or None: auto), got {manifest_encoding!r}")
    known_encoding(manifest_encoding)
    if progress is not None and not callable(progress):
        raise ValueError(f"progress is a function the job calls with its counts (or None), got {progress!r}")


def run_augment(input_uri: str, output_uri: str, options: AugmentOptions | None = None, *,
                images_uri: str | None = None, batch_size: int = 32, workers: int | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS, rows_per_shard: int = ROWS_PER_SHARD, progress=None,
                executor: str = "auto", local_max_inputs: int = LOCAL_MAX_INPUTS,
                retry_failed: bool = False, manifest_encoding: str | None = None) -> JobSummary:
    """Mask every image of `input_uri` into `output_uri`, on the Ray cluster `ray.init()` connects to
    (in-process when none is running), or, for a small job with no cluster to join, in a process pool
    on this machine (`executor`: auto, local or ray; see jobs/local.py). `input_uri` is a folder, an
    `s3://` prefix, or an input manifest (.csv / .parquet, see jobs/inputs.py) whose paths are relative
    to `images_uri` (default: the manifest's folder), a CSV one read as `manifest_encoding` (default:
    UTF-8, else GBK). `retry_failed`: inputs an earlier run recorded as failed are done again, their
    old rows replaced (`jobs.source.DoneRows`)."""
    from jobs.source import DoneRows

    options = AugmentOptions() if options is None else options
    if not isinstance(options, AugmentOptions):
        raise ValueError(f"options must be an AugmentOptions (e.g. AugmentOptions(style='surgical')), got {options!r}")
    check_flag("retry_failed", retry_failed)  # "no" was True
    done_where = DoneRows(retry_failed=retry_failed)
    check_counts(batch_size=batch_size, rows_per_shard=rows_per_shard, max_pixels=max_pixels, workers=workers,
                 local_max_inputs=local_max_inputs)
    check_job_options(manifest_encoding, progress)
    check_executor(executor)
    started = time.perf_counter()
    output = open_store(output_uri)
    # listed before anything is written: an input the job cannot use leaves the output untouched
    listing = input_listing(input_uri, output, MANIFEST_DIR, images_uri=images_uri, done_where=done_where,
                            manifest_encoding=manifest_encoding)
    refuse_other_output(output, "embeddings", "mfr mask")
    output.check_writable()  # an unreachable endpoint or unwritable folder fails before any work
    source = source_of(input_uri, images_uri)
    listing[3].extend(n for n in [source_note(output, source)] if n)
    with Lease(output, "mfr mask") as lease, \
            settings_recorded(output, "mfr mask", augment_settings(options, input_uri, manifest_encoding),
                              MANIFEST_DIR, source=source):
        summary = run_here(
            executor, local_max_inputs, lambda tally: with_progress(listing, tally),
            lambda images: functools.partial(AugmentWorker, images.uri, output.uri, options, max_pixels, None,
                                             threads=1),
            write=functools.partial(write_shards, output_uri=output.uri, directory=MANIFEST_DIR,
                                    faces_column="masked", lease=lease.token),
            faces_column="masked", batch_size=batch_size, workers=workers, rows_per_shard=rows_per_shard,
            started=started, progress=progress)
        if summary is None:
            ensure_ray()
            images, groups, lister, notes = listing

            def build(inputs, tracker):
                ds = augment_stage(inputs, images.uri, output.uri, options, batch_size=batch_size, workers=workers,
                                   max_pixels=max_pixels, progress=tracker)
                return write_stage(ds, output.uri, MANIFEST_DIR, "masked", rows_per_shard, lease.token)

            summary = run_listed(output, MANIFEST_DIR, groups, lister, build, started, progress, batch_size)
            summary.notes = notes
        require_inputs(summary, input_uri)
    return summary


def plan_augment(input_uri: str, output_uri: str, images_uri: str | None = None, retry_failed: bool = False,
                 options: AugmentOptions | None = None, manifest_encoding: str | None = None) -> dict:
    """What `run_augment` would do, listed by the job's own listing code in this process: no Ray,
    nothing written. With `options`, masks the output was not made with are refused, as the run
    refuses them."""
    from jobs.inputs import Tally, input_listing
    from jobs.settings import check_settings
    from jobs.source import DoneRows

    output = open_store(output_uri)
    output.check_could_write()  # refused as the run would refuse it, writing nothing
    if options is not None:
        check_settings(output, "mfr mask", augment_settings(options, input_uri, manifest_encoding), record=False)
    tally = Tally()
    images, groups, lister, notes = input_listing(input_uri, output, MANIFEST_DIR, images_uri=images_uri,
                                                  progress=tally, manifest_encoding=manifest_encoding,
                                                  done_where=DoneRows(retry_failed=retry_failed, drop=False))
    refuse_other_output(output, "embeddings", "mfr mask")
    outputs = options.outputs if options is not None else "both"

    def where(row):  # only what the job writes: --outputs image writes no crops, crops no image
        image, crops = output_keys(row["key"])
        return ", ".join(([output.uri_of(image)] if outputs != "crops" else []) +
                         ([f"{crops}_face<i>.jpg"] if outputs != "image" else []))

    plan = plan_from(images.uri, output, groups, lister, tally, notes, where,
                     already_masked=AugmentWorker.already_masked)
    if options is not None:
        plan["settings"] = mask_settings_line(options)
    return plan


def mask_settings_line(options: AugmentOptions) -> str:
    """The mask settings a dry run shows: what decides the pixels written, as the job records them."""
    settings = augment_settings(options)
    finder = settings.get("finder", {})
    shown = [f"{k} {settings[k]}" for k in ("style", "seed", "outputs", "face", "alignment", "crop_size") if k in settings]
    # how faces are found locks an output too (a rerun with another --input-kind is refused)
    shown += [f"finder {finder['detector']}", f"crop_mode {finder['crop_mode']}",
              f"second_look {'on' if finder['second_look'] else 'off'}"] if finder else []
    shown += ["turned on"] if finder.get("turned") else []
    worn = settings.get("worn_masks")
    shown += [f"worn masks left (lower_skin_max {worn['lower_skin_max']:g}, upper_skin_min "
              f"{worn['upper_skin_min']:g})"] if worn else []
    return ", ".join(shown)


def plan_from(images_uri: str, output, groups, lister, tally, notes, where, limit: int = 20,
              already_masked: str | None = None) -> dict:
    """A dry run's plan: counts over every input, and where the first `limit` to do would go (the
    rest are counted, not kept). `already_masked`: what the job records for a manifest row marked
    masked, which it leaves as it is (`mfr mask`, `mfr run`; `mfr embed` embeds such a row)."""
    todo = []
    for group in groups:
        for table in lister.rows(group):
            for row in table.slice(0, max(0, limit - len(todo))).to_pylist():
                if row["status"]:
                    todo.append((row["key"], f"refused: {row['status']} ({row['message']})"))
                elif already_masked and row.get("masked"):
                    todo.append((row["key"], f"left as it is: already_masked ({already_masked})"))
                else:
                    todo.append((row["key"], where(row)))
    return {"images": images_uri, "output": output.uri, "inputs": tally.todo + tally.done, "done": tally.done,
            "count": tally.todo, "todo": todo, "notes": notes}


def read_parquet_dir(store, directory: str, columns=None, required=()) -> list:
    """Every Parquet shard under `directory` of a store, as pyarrow tables (for reports, `embed
    --from-augment` and tests: the jobs themselves never read a whole output into one process),
    less the rows of an image whose write a stopped job left incomplete (`jobs.source.CutWrites`):
    a reader sees an image's rows whole or not at all, as the rerun that finishes the job will. A
    shard without one of `columns` or `required` is a ValueError naming it (`read_shard`)."""
    from jobs.source import CutWrites, DoneRows

    cuts = CutWrites()
    tables = []
    for key in store.list(directory):
        if key.endswith(".parquet"):
            try:
                table = read_shard(store, key, columns, required)
            except MissingColumns:
                raise
            except (OSError, ValueError) as exc:  # pyarrow names the buffer, not the file
                raise ValueError(f"{store.uri_of(key)} is not a readable Parquet shard ({exc}); the job's rerun "
                                 "does its rows again and sets it aside (as .damaged)") from None
            tables.append(cuts.hold(key, table) if "input_row" in table.column_names else table)
    return tables + list(cuts.settle(store, DoneRows(drop=False)))


def read_shard(store, key: str, columns=None, required=()):
    """The Parquet file at `key` (`columns` of it), refused naming the file when it lacks one of those
    or of `required` (another tool's file, or one written by hand: a KeyError traceback, or pyarrow's
    words about a schema, named nothing)."""
    try:
        return read_parquet_bytes(store.read(key), columns=columns, required=required)
    except MissingColumns as exc:
        raise MissingColumns(f"{store.uri_of(key)} has {exc}: not a file mfr wrote there") from None


def read_manifest(output_uri: str):
    """The whole manifest of an augment output (`mfr mask`, or `mfr run`'s `masked/`) as a pandas
    DataFrame. An output without one is FileNotFoundError (a mistyped path read as no rows would
    look like a job that did nothing); an output whose job is still on its first shard has none yet."""
    import pandas as pd

    store = open_store(output_uri)
    tables = read_parquet_dir(store, MANIFEST_DIR)
    if not tables:
        raise FileNotFoundError(f"no manifest under {store.uri_of(MANIFEST_DIR)}: not the output of `mfr mask` "
                                "(an `mfr run` output holds it under masked/)")
    return pd.concat([t.to_pandas(use_threads=False) for t in tables], ignore_index=True)
