"""The embed job on Ray: faces to embedding shards (Parquet), from raw images or from an augment output.

    run_embed("../shared/data/faces", "out/emb/unmasked", masked=False)               # detects and aligns
    run_embed("out/masked", "out/emb/masked", masked=True, from_augment=True)          # reuses augment's faces

Each shard `shards/g=<group>/part-<hash>.parquet` (written by the workers, jobs/sink.py) has one row
per face: `key` (source image), `identity`, `masked`, `face_index`, `model_id`, `mode`, `similarity`
(how the model's vectors compare), `status`, `message`, `embedding` (fixed-size list of float32,
null for a face that failed), and the face it was computed from: `box`, `score`, `landmarks5`,
`source` (which detection path found it) and `alignment`. From an augment output, faces are aligned
on the masked whole image with the unmasked detection's points recorded in the manifest, so masking
never changes the alignment. Raw images are detected with `FaceFinder` (the face nearest the centre by
default). Two stages, as in `mfr run`: `FacePreparer` (decoding, detection, landmarks, the gallery
mask, alignment: CPU work) and `CropEmbedder` (the model alone). Where the cluster has (or can add)
GPUs they are two pools, the CPU pool feeding a recognition pool of one GPU per actor; otherwise one
pool whose actors do both on their own batches (`EmbedWorker`), as the local executor's processes do.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np

from jobs.augment import check_counts, check_job_options, node_id, plan_from, read_parquet_dir
from jobs.inputs import ColumnsEqual, folder_identity, input_listing, report_listed, with_progress
from jobs.lease import Lease
from jobs.local import LOCAL_MAX_INPUTS, check_executor, run_here
from jobs.pool import ensure_ray, plan_pool, recognition_pool, unused_recognition_workers, use_threads
from jobs.progress import FINE
from jobs.settings import (check_settings, input_settings, refuse_other_output, settings_recorded, source_note,
                           source_of)
from jobs.sink import (ROWS_PER_SHARD, JobSummary, batch_counts, mark_inputs, require_inputs, run_listed,
                        write_shards, write_stage)
from jobs.storage import StorageError, UnreadableObject, open_store
from maskgen.decode import DEFAULT_MAX_PIXELS
from maskgen.detect import landmark_boxes
from maskgen.finder import select_faces
from maskgen.record import FaceRecord, records_table
from recog.protocols import masked_flags

SHARD_DIR = "shards"


class FacePreparer:
    """The CPU stage of `mfr embed`: each input row's face records, and the aligned crop of each face to
    embed (a `crop` column, raw RGB bytes of the model's input size; null where there is none): decoding,
    detection, landmarks, the gallery mask and alignment, everything but the model. `CropEmbedder`
    fills in the embeddings, in the same process (`EmbedWorker`) or in a recognition pool of its own
    (one GPU per actor) where the cluster has GPUs."""

    def __init__(self, input_uri: str, spec, model_id: str, masked: bool, from_augment: bool, face: str,
                 finder_options, alignment: str, max_pixels: int, mode: str = "plain", mask_style: str = "seed",
                 seed: int = 0, progress=None, threads: int | None = None, masked_rule: str | None = None,
                 device="auto", faces_from: tuple | None = None):
        from maskgen.finder import FaceFinder
        from maskgen.runtime import resolve_device
        from recog.matching import mode_from_name

        if threads:
            use_threads(threads)
        self.input = open_store(input_uri)
        self.mode = mode_from_name(mode)
        self.spec, self.model_id = spec, model_id
        self.masked, self.from_augment, self.face = masked, from_augment, face
        self.masked_rule = masked_rule
        self.alignment, self.max_pixels = alignment, max_pixels
        self.finder = None if from_augment else FaceFinder(finder_options, device=resolve_device(device))
        self.masker = None
        if draws_gallery_mask(self.mode.name, masked, from_augment):
            from maskgen.augment import AugmentOptions, Augmenter

            # the gallery gets the probes' synthetic mask, drawn with the same style and run seed
            self.masker = Augmenter(AugmentOptions(style=mask_style, seed=seed, outputs="image"),
                                    detector=self.finder.detector("mtcnn"))
        self._eye_locator = None
        self.progress, self.node = progress, node_id()
        # the faces another model's pass of this job found (`RecordedFaces`): not detected again. A
        # masked gallery needs each face's 68 points, which no row records
        self.recorded = RecordedFaces(*faces_from) if faces_from and self.masker is None and not from_augment \
            else None

    def eye_locator(self):
        """Made on first use: only `eyes` / `auto` alignment of detected faces needs it."""
        if self._eye_locator is None:
            from maskgen.eyes import EyeLocator
            from maskgen.landmarks import LandmarkPredictor

            predictor = self.masker.predictor if self.masker is not None else LandmarkPredictor()
            self._eye_locator = EyeLocator(self.finder.detector("mtcnn"), predictor)
        return self._eye_locator

    def __call__(self, batch):
        import pyarrow as pa

        records, crops, groups = [], [], []
        items = batch.to_pylist()
        recorded = self.recorded.lookup(items) if self.recorded is not None else {}
        for item in items:
            try:
                faces = self.process(item, recorded.get(item["input_row"]))
            except StorageError:
                raise  # the input store failed as a whole: stop the job rather than record every image
            except Exception as exc:  # one face's unexpected failure is its row, never the run's end
                faces = [(self.input_record(item).with_(status="error", message=f"{type(exc).__name__}: {exc}"),
                          None)]
            records.extend(r for r, _ in faces)
            crops.extend(None if c is None else c.tobytes() for _, c in faces)
            groups.extend([item["group"]] * len(faces))
        marks = mark_inputs([{"input_row": r.input_row} for r in records])
        table = records_table(records, "shard", self.spec.embedding_size,
                              extra={"group": (pa.string(), groups),
                                     "_first": (pa.bool_(), [m["_first"] for m in marks]),
                                     "_rows": (pa.int32(), [m["_rows"] for m in marks]),
                                     CROP: (pa.binary(), crops)})
        if self.progress is not None:
            self.progress.batch.remote(*batch_counts(table, "status"))
        return table

    def input_record(self, item: dict) -> FaceRecord:
        """The record of one input row before any face is embedded (from an augment output: the
        face augment found, with its points and how they were chosen)."""
        key = item["key"]
        # an input manifest's own masked flag wins over the job's (a set of real masked and unmasked photos),
        # then the file-name rule `mfr evaluate` splits a folder by
        if item.get("masked") is not None:
            masked = bool(item["masked"])
        elif self.masked_rule is not None:
            masked = bool(masked_flags([key], self.masked_rule)[0])
        else:
            masked = self.masked
        record = FaceRecord(source_key=key, identity=item.get("identity") or folder_identity(key),
                            input_row=item["input_row"], masked=masked, model_id=self.model_id,
                            mode=self.mode.name, similarity=self.spec.similarity, node=self.node)
        if self.from_augment:
            record = record.with_(face_index=int(item["face_index"]), box=item.get("box"), score=item.get("score"),
                                  landmarks5=item.get("landmarks5"), aligned5=item.get("aligned5"),
                                  source=item.get("source"), alignment=item.get("alignment"))
        return record

    def process(self, item: dict, recorded: list | None = None) -> list[tuple[FaceRecord, np.ndarray | None]]:
        """The face records of one input row, each with the aligned crop to embed (None where none).
        `recorded`: its faces as another model's pass found them (`RecordedFaces.lookup`; [] for none),
        taken instead of detecting them."""
        from maskgen.augment import face_turns, upright_alignment
        from maskgen.decode import DecodeError, decode_image
        from maskgen.record import as_recorded
        from recog.embed import align_crops

        base = self.input_record(item)
        if item.get("status"):  # refused before any reading (unsafe path, duplicate, not a file, ...)
            return [(base.with_(status=str(item["status"]), message=str(item["message"])), None)]
        if recorded == []:  # the earlier pass found no face in the image
            return [(base.with_(status="no_face", message="no face found"), None)]
        image_key = item.get("image_key") or item["key"]
        try:
            image = decode_image(self.input.read(image_key), max_pixels=self.max_pixels)
        except (DecodeError, FileNotFoundError, UnreadableObject) as exc:
            return [(base.with_(status=getattr(exc, "status", "missing"), message=str(exc)), None)]
        if self.from_augment:  # the points are final: chosen by augment on the unmasked image
            return [(base, align_crops(image, [np.asarray(item["points"]).reshape(5, 2)], self.spec)[0])]
        if recorded:
            crops = align_crops(image, [np.asarray(r["aligned5"]).reshape(5, 2) for r in recorded], self.spec)
            return [(base.with_(**{k: r[k] for k in RecordedFaces.FACE}), crop) for r, crop in zip(recorded, crops)]
        faces = self.finder.find(image)
        if not faces:
            return [(base.with_(status="no_face", message="no face found"), None)]
        chosen = select_faces(faces, image.shape, self.face)
        faces = [faces[i] for i in chosen]
        points, lm68 = [f.points for f in faces], None
        boxes = np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4)
        eyes_image = image  # eyes are located before the gallery mask, if any, is drawn
        if self.masker is not None:  # masked-gallery mode: mask the face, keep its unmasked alignment
            lm68 = self.masker.predictor.predict(image, landmark_boxes(faces), np.stack(points),
                                                 [face_turns(f.source) for f in faces])
            image = self.masker.mask_faces(image, item["key"], boxes, [f.score for f in faces], np.stack(points),
                                           lm68, sources=[f.source for f in faces]).image
        # (a face found turned is aligned in the image turned upright: `upright_alignment`)
        aligned = [upright_alignment(eyes_image, points[k], None if lm68 is None else lm68[k], self.alignment,
                                     lambda *look: self.eye_locator().locate(*look), faces[k].landmark_box,
                                     face_turns(faces[k].source)) for k in range(len(faces))]
        # the crop is aligned with the points as the row records them, so that aligned5 remakes it exactly
        # (the unrounded points moved some 430 pixels of a crop by a level: embeddings 1e-3 apart)
        aligned = [(as_recorded(pts), how) for pts, how in aligned]
        crops = align_crops(image, [p for p, _ in aligned], self.spec)
        # face_index: the face's place among the detections (best score first), so a row can be traced;
        # aligned5 and alignment: the points its crop was aligned with, and how they were chosen
        return [(base.with_(face_index=idx, box=f.box, score=f.score, landmarks5=f.points, source=f.source,
                            alignment=how, aligned5=pts), crop)
                for idx, f, crop, (pts, how) in zip(chosen, faces, crops, aligned)]


class RecordedFaces:
    """The faces that another model's pass over the same input found (`mfr evaluate --models`: each
    model after the first): its rows in the output's shards (`model_id`, `mode`), so each model after
    the first decodes and aligns but does not detect again (detection was most of an image's time:
    105 ms of a press photo's 122 with sface). An image's faces are taken as recorded where every
    row of it is a face with the points its crop was aligned with, and "no face" where its one row
    says so; any other image (unread, refused, failed) is done afresh.

    A group's rows are read when a batch first needs them and kept as Arrow columns (a few hundred
    bytes a face), at most `max_rows` of them, the group read longest ago leaving first. Where a
    group that left is needed again (an input manifest spreads its rows over every group, so each
    batch needs most of them), the rows are more than a process can hold and reading them again for
    every batch would cost more than detecting: the process stops taking them and detects."""

    FACE = ("face_index", "box", "score", "landmarks5", "source", "alignment", "aligned5")
    COLUMNS = ("input_row", "status", "model_id", "mode", *FACE)

    def __init__(self, output_uri: str, model_id: str, mode: str, max_rows: int = 200_000):
        self.output_uri, self.model_id, self.mode, self.max_rows = output_uri, model_id, mode, max_rows
        self.tables: dict = {}  # group -> its rows of the model, the group read longest ago first
        self.left: set = set()  # groups read and then let go
        self.stopped = False

    def lookup(self, items: list[dict]) -> dict:
        """{input row: its recorded faces (dicts of `FACE`, in face order), or [] where the image has
        none} for those of `items` (rows with `group` and `input_row`) that can be taken as recorded."""
        import pyarrow as pa
        import pyarrow.compute as pc

        wanted: dict = {}
        for item in items:
            wanted.setdefault(item["group"], []).append(item["input_row"])
        out: dict = {}
        for group, names in wanted.items():
            table = self._table(group)
            if table is None:
                continue
            rows = table.filter(pc.is_in(table.column("input_row"), value_set=pa.array(names, pa.string())))
            out.update(self._faces(rows.to_pylist()))
        return out

    def _table(self, group: str):
        if self.stopped:
            return None
        if group in self.tables:
            return self.tables[group]
        if group in self.left:
            self.stopped, self.tables = True, {}
            return None
        table = self.tables[group] = self._read(group)
        while sum(t.num_rows for t in self.tables.values()) > self.max_rows and len(self.tables) > 1:
            oldest = next(iter(self.tables))
            self.left.add(oldest)
            del self.tables[oldest]
        return table

    def _read(self, group: str):
        import pyarrow as pa

        from jobs.storage import MissingColumns

        where = ColumnsEqual(model_id=self.model_id, mode=self.mode)
        try:
            tables = read_parquet_dir(open_store(self.output_uri), f"{SHARD_DIR}/{group}", columns=self.COLUMNS)
        except MissingColumns:  # shards of an earlier version, without the points: the group is done afresh
            tables = []
        kept = [t.filter(where(t)).select(["input_row", "status", *self.FACE]) for t in tables]
        kept = [t.replace_schema_metadata(None) for t in kept if t.num_rows]
        return pa.concat_tables(kept) if kept else pa.table({"input_row": pa.array([], pa.string())})

    @staticmethod
    def _faces(rows: list[dict]) -> dict:
        found: dict = {}
        for r in rows:
            found.setdefault(r["input_row"], []).append(r)
        out = {}
        for name, faces in found.items():
            if len(faces) == 1 and faces[0]["status"] == "no_face" and faces[0]["face_index"] < 0:
                out[name] = []
            elif all(r["face_index"] >= 0 and r["aligned5"] is not None for r in faces):
                out[name] = sorted(faces, key=lambda r: r["face_index"])
        return out


CROP = "_crop"  # FacePreparer's column of aligned crops, which CropEmbedder embeds and drops


def error_text(exc: Exception) -> str:
    """What a face's row says of the exception that left it without an embedding."""
    return f"{type(exc).__name__}: {exc}"


def crop_arrays(column: list, rows: list[int], w: int, h: int) -> np.ndarray:
    """The aligned crops (len(rows), h, w, 3) uint8 of a crop column's `rows` (raw bytes, as the CPU
    stage puts them on a row)."""
    if not rows:
        return np.zeros((0, h, w, 3), np.uint8)
    return np.stack([np.frombuffer(column[i], np.uint8).reshape(h, w, 3) for i in rows])


class CropEmbedder:
    """The recognition stage of `mfr embed`: the embedding of each row's crop, nothing else (`node`:
    where it was embedded). A batch the model fails on is embedded crop by crop, and a crop it fails
    on is that face's row, status `error`, never the job's end."""

    def __init__(self, model: str, accept_licence: bool, mode: str = "plain", threads: int | None = None,
                 device="auto", embedder=None):
        from maskgen.runtime import resolve_device
        from recog.embed import Embedder
        from recog.matching import mode_from_name

        if threads:
            use_threads(threads)
        mode = mode_from_name(mode)
        self.embedder = embedder or Embedder(model, accept_licence=accept_licence, flip=mode.flip,
                                             region=mode.region, device=resolve_device(device))
        self.node = node_id()

    def __call__(self, table):
        import pyarrow as pa

        from maskgen.record import embedding_array

        w, h = self.embedder.spec.input_size
        column = table.column(CROP).to_pylist()
        rows = [i for i, c in enumerate(column) if c is not None]
        vectors, status, message = [None] * table.num_rows, table.column("status").to_pylist(), \
            table.column("message").to_pylist()
        done = self.embedder.embed_each(crop_arrays(column, rows, w, h))
        for i, v in zip(rows, done):
            if isinstance(v, Exception):
                status[i], message[i] = "error", error_text(v)
            else:
                vectors[i] = v
        for name, values in (("embedding", embedding_array(vectors, self.embedder.dim)),
                             ("status", pa.array(status, pa.string())), ("message", pa.array(message, pa.string())),
                             ("node", pa.array([self.node] * table.num_rows, pa.string()))):
            table = table.set_column(table.schema.get_field_index(name), name, values)
        return table.drop_columns([CROP])


class EmbedWorker:
    """Both stages in one process: each batch prepared, then embedded. The local executor's processes
    run it, and so do the actors of the one pool on a cluster without GPUs (a second pool of CPU actors
    would only share the same cores, with a share fixed in advance)."""

    def __init__(self, input_uri: str, model: str, accept_licence: bool, masked: bool, from_augment: bool,
                 face: str, finder_options, alignment: str, max_pixels: int, mode: str = "plain",
                 mask_style: str = "seed", seed: int = 0, progress=None, threads: int | None = None,
                 masked_rule: str | None = None, device="auto", faces_from: tuple | None = None):
        self.recognize = CropEmbedder(model, accept_licence, mode, threads=threads, device=device)
        embedder = self.recognize.embedder
        self.prepare = FacePreparer(input_uri, embedder.spec, embedder.model_id, masked, from_augment, face,
                                    finder_options, alignment, max_pixels, mode, mask_style, seed, progress,
                                    masked_rule=masked_rule, device=device, faces_from=faces_from)

    def __call__(self, batch):
        return self.recognize(self.prepare(batch))


class AugmentLister:
    """The masked faces of one group of an augment output's manifest that `face` selects in each image
    (`maskgen.finder.select_faces`: an augment masks every face by default, bystanders too, where the
    image's label names one person), chosen among the masked faces and those left for wearing a mask
    (`--leave-worn-masks`; where `face` chooses one of those, the image's row is `already_masked`),
    less those already embedded (same model and mode) under the embed output: rows for `FacePreparer`
    with `from_augment` (in `EmbedWorker`, or the CPU pool); an image without such a face, one row
    with its reason."""

    def __init__(self, augment_uri: str, output_uri: str, points_column: str, done_where, progress=None,
                 chunk: int = 4096, face: str = "center"):
        self.augment_uri, self.output_uri, self.points_column = augment_uri, output_uri, points_column
        self.done_where, self.progress, self.chunk, self.face = done_where, progress, chunk, face

    def rows(self, group: str):
        import pyarrow as pa
        import pyarrow.compute as pc

        from jobs.augment import MANIFEST_DIR
        from jobs.source import read_done
        from maskgen.augment import NOT_DRAWN, WORN_NOTE

        failed: set = set()
        done = read_done(open_store(self.output_uri), f"{SHARD_DIR}/{group}", "input_row", self.done_where, failed)
        rows, skipped, found, images, left = [], 0, [], {}, {}
        # an image's faces may lie in two shards: the whole group is read before faces are chosen
        for table in read_parquet_dir(open_store(self.augment_uri), f"{MANIFEST_DIR}/{group}"):
            # the masked faces, and those left as they were for wearing a mask (`maskgen.worn`)
            found += table.filter(pc.and_(pc.equal(table.column("status"), "ok"), pc.or_(
                pc.fill_null(table.column("masked"), False),
                pc.starts_with(pc.fill_null(table.column("message"), ""), WORN_NOTE)))).to_pylist()
            for key, status, message, identity in zip(*(table.column(c).to_pylist() for c in
                                                        ("source_key", "status", "message", "identity"))):
                images.setdefault(key, (status, message, identity))
        # chosen among the masked faces alone, a bystander took the place of a person who wears a mask
        # and was embedded under that person's identity: such a face is one of the candidates, and an
        # image whose chosen faces (`all`: every one) all wear one says so in its row (`already_masked`)
        chosen = []
        for r in chosen_faces(found, self.face):
            if r["masked"]:
                chosen.append(r)
            else:
                chooses = "" if self.face == "all" else f", the face --face {self.face} chooses,"
                left.setdefault(r["source_key"], ("already_masked", f"face {r['face_index']}{chooses} "
                                                  f"{r['message'].removeprefix(NOT_DRAWN)}"))
        for r in chosen:
            input_row = f"{r['source_key']}#{r['face_index']}"
            if input_row in done:
                skipped += 1
                continue
            rows.append({"key": r["source_key"], "identity": r["identity"], "group": group,
                         "input_row": input_row, "status": "", "message": "", "image_key": r["output_key"],
                         "face_index": int(r["face_index"]), "points": r[self.points_column],
                         "box": r["box"], "score": r["score"], "source": r["source"],
                         # the points the crop is aligned with: the augment's own (`aligned5`), or
                         # the detected five (they were copied as aligned5 beside "five-point" while
                         # the output's were the eyes', and could not remake the crop)
                         "landmarks5": r["landmarks5"], "aligned5": r[self.points_column],
                         "alignment": r.get("alignment") if self.points_column == "aligned5" else "five-point"})
        # every image without a masked face keeps one row with its reason, as embedding from the images
        # does: a probe in which no face was found is a failure to acquire, counted by the scores
        with_face = {r["source_key"] for r in chosen}
        for key, (status, message, identity) in images.items():
            if key in with_face or f"{key}#-1" in done:
                skipped += key not in with_face
                continue
            reason = (status, message or "") if status != "ok" else left.get(key, ("no_face", "no masked face"))
            rows.append({"key": key, "identity": identity, "group": group, "input_row": f"{key}#-1",
                         "status": reason[0], "message": reason[1], "face_index": -1})
        report_listed(self.progress, len(rows), skipped, len(failed))
        floats = pa.list_(pa.float64())
        schema = pa.schema([("key", pa.string()), ("identity", pa.string()), ("group", pa.string()),
                            ("input_row", pa.string()), ("status", pa.string()), ("message", pa.string()),
                            ("image_key", pa.string()), ("face_index", pa.int32()), ("points", floats),
                            ("box", floats), ("score", pa.float64()), ("source", pa.string()),
                            ("landmarks5", floats), ("aligned5", floats),
                            ("alignment", pa.string())])
        for i in range(0, len(rows), self.chunk):
            yield pa.Table.from_pylist(rows[i:i + self.chunk], schema=schema)


def chosen_faces(rows: list[dict], policy: str) -> list[dict]:
    """The manifest rows (faces) that `policy` keeps in each image (`select_faces` over their
    boxes and scores in the image's `image_size`), in their order."""
    from maskgen.detect import Face
    from maskgen.finder import select_faces

    if policy == "all":
        return rows
    faces: dict = {}
    for r in rows:
        faces.setdefault(r["source_key"], []).append(r)
    kept = set()
    for key, image_rows in faces.items():
        width, height = image_rows[0].get("image_size") or (0, 0)
        found = [Face(box=tuple(r["box"]), score=float(r["score"] if r["score"] is not None else 1.0))
                 for r in image_rows]
        kept.update(id(image_rows[i]) for i in select_faces(found, (height, width), policy))
    return [r for r in rows if id(r) in kept]


def augment_groups(augment_uri: str, alignment: str, face: str = "all") -> tuple[list[str], str]:
    """(the manifest's groups, the points column faces are aligned with), checked on one shard: an
    augment output whose crops were aligned otherwise, that has no whole images, or that has no image
    sizes where `face` chooses the centred face, is refused."""
    from jobs.augment import MANIFEST_DIR

    source = open_store(augment_uri)
    manifest = open_store(source.uri_of(MANIFEST_DIR))
    groups = [g for g in manifest.top_level() if g.startswith("g=")]
    if not groups:
        raise FileNotFoundError(f"no augment manifest under {source.uri_of(MANIFEST_DIR)}: is this an augment "
                                "output? (without --from-augment the input is a folder of images)")
    sample = next((t for g in groups for t in read_parquet_dir(manifest, g)
                   if (t.column("status").to_pylist().count("ok"))), None)
    if sample is not None:
        ok = [r for r in sample.to_pylist() if r["status"] == "ok" and r["masked"]]
        if face == "center" and any(r.get("image_size") is None for r in ok):
            raise ValueError("this augment output does not record its images' sizes (made by an earlier version), "
                             "which choosing the centred face needs: embed with --face all or largest, or mask again")
        if any(r["output_key"] is None for r in ok):
            raise ValueError("the augment output has no whole images (made with --outputs crops): mask again into "
                             "a new output with --outputs image or both (the default; Python: "
                             "AugmentOptions(outputs=...)) to embed from it")
        if alignment != "five-point":
            recorded = {r["alignment"] for r in ok if r.get("aligned5") is not None}
            if not recorded or (alignment == "eyes" and recorded != {"eyes"}):
                raise ValueError(
                    f"--alignment {alignment} from an augment output needs the crops' own alignment points, "
                    f"which augment records when run with --alignment {alignment} (this output was aligned "
                    f"by {', '.join(sorted(recorded)) or 'five-point'}); mask again (`mfr mask`, into a new output) with "
                    f"--alignment {alignment}, or embed with --alignment five-point")
    return groups, "landmarks5" if alignment == "five-point" else "aligned5"


def embed_listing(input_uri: str, output, from_augment: bool, alignment: str, done_where, images_uri=None,
                  progress=None, face: str = "center", manifest_encoding: str | None = None,
                  output_root: str | None = None):
    """(input store, groups, lister, notes) of what to embed (`face`: which of an augment output's
    masked faces of each image; `output_root`: `jobs.inputs.input_listing`'s)."""
    if from_augment:
        from jobs.inputs import refuse_foreign_output, refuse_output_in_place, refuse_output_inside_a_run

        refuse_output_in_place(open_store(input_uri), output)  # its shards/ among the masks' images/ and manifest/
        refuse_other_output(output, "masks", "mfr embed")
        refuse_output_inside_a_run(output)
        refuse_foreign_output(output)
        groups, column = augment_groups(input_uri, alignment, face)
        lister = AugmentLister(open_store(input_uri).uri, output.uri, column, done_where, progress, face=face)
        return open_store(input_uri), groups, lister, []
    listing = input_listing(input_uri, output, SHARD_DIR, images_uri=images_uri, done_where=done_where,
                            progress=progress, manifest_encoding=manifest_encoding, output_root=output_root)
    refuse_other_output(output, "masks", "mfr embed")
    return listing


def checked_model(model: str, accept_licence: bool = False):
    """The model's Embedder, run once on a blank crop before any input is read (`Embedder.check`)."""
    from recog.embed import Embedder

    return Embedder(model, accept_licence=accept_licence).check()  # also fetches and caches the model


def model_identity(model: str, accept_licence: bool = False):
    """(model_id, dim, similarity) of a model, checked once before any input is read."""
    embedder = checked_model(model, accept_licence)
    return embedder.model_id, embedder.dim, embedder.spec.similarity


def plan_embed(input_uri: str, output_uri: str, model: str = "sface", *, from_augment: bool = False,
               accept_licence: bool = False, images_uri: str | None = None, mode: str = "plain",
               alignment: str = "five-point", retry_failed: bool = False, masked: bool = False,
               face: str = "center", finder_kind: str | None = None, crop_mode: str | None = None,
               second_look: bool | None = None, turned: bool | None = None, manifest_encoding: str | None = None,
               mask_style: str = "seed",
               seed: int = 0) -> dict:
    """What `run_embed` would do, listed by the same code in this process (no Ray, nothing written;
    the model is fetched and cached, since its identity decides which shards count as done). Settings
    the output was not made with are refused, as the run refuses them."""
    from jobs.inputs import Tally
    from jobs.source import DoneRows

    refuse_finding_options(from_augment, finder_kind=finder_kind, crop_mode=crop_mode, second_look=second_look,
                           turned=turned, images_uri=images_uri, manifest_encoding=manifest_encoding)
    model_id = model_identity(model, accept_licence)[0]
    output = open_store(output_uri)
    output.check_could_write()  # refused as the run would refuse it, writing nothing
    if from_augment:
        refuse_unmasked_augment_rows(output)
    finder = embed_finder(masked, finder_kind, crop_mode, second_look, turned)
    check_settings(output, "mfr embed", embed_settings(masked=masked, from_augment=from_augment, face=face,
                                                       finder=finder, alignment=alignment, input_uri=input_uri,
                                                       manifest_encoding=manifest_encoding, mode=mode,
                                                       mask_style=mask_style, seed=seed),
                   made="embeddings", record=False,
                   follows=finder_follows(finder, finder_kind, crop_mode, second_look, turned))
    tally = Tally()
    where = ColumnsEqual(model_id=model_id, mode=mode)
    source, groups, lister, notes = embed_listing(input_uri, output, from_augment, alignment,
                                                  DoneRows(where, retry_failed=retry_failed, drop=False),
                                                  images_uri, tally, face=face, manifest_encoding=manifest_encoding)
    return plan_from(source.uri, output, groups, lister, tally, notes,
                     lambda row: f"a row in {output.uri_of(SHARD_DIR)}/g=.../part-<hash>.parquet")


def embed_stage(ds, source_uri: str, model: str, *, accept_licence: bool, masked: bool, from_augment: bool,
                face: str, finder, alignment: str, max_pixels: int, mode: str, mask_style: str, seed: int,
                batch_size: int, workers: int | None, recognition, embedder, progress=None,
                masked_rule: str | None = None, faces_from: tuple | None = None):
    """The embed job's pools: where the cluster has (or can add) GPUs, a CPU pool that prepares the
    crops (`FacePreparer`, `workers` its cap) feeding a recognition pool of one GPU per actor that only
    embeds (`CropEmbedder`; `recognition`, `jobs.pool.recognition_pool`'s plan), as `mfr run` splits
    its work; on a CPU-only cluster (`recognition` None), one pool whose actors do both (`EmbedWorker`).
    `embedder`: the model's, as the driver checked it (`checked_model`; its spec and id go to the CPU
    pool). `faces_from`: (output URI, model id, mode) of the rows whose faces are taken as found
    (`RecordedFaces`)."""
    cpu = plan_pool(workers)
    kwargs = {**cpu.actor_kwargs, "masked_rule": masked_rule, "faces_from": faces_from}
    if recognition is None:
        args = (source_uri, model, accept_licence, masked, from_augment, face, finder, alignment, max_pixels,
                mode, mask_style, seed, progress)
        return ds.map_batches(EmbedWorker, fn_constructor_args=args, fn_constructor_kwargs=kwargs,
                              batch_size=batch_size, batch_format="pyarrow", **cpu.map_batches_args())
    args = (source_uri, embedder.spec, embedder.model_id, masked, from_augment, face, finder, alignment, max_pixels,
            mode, mask_style, seed, progress)
    ds = ds.map_batches(FacePreparer, fn_constructor_args=args, fn_constructor_kwargs=kwargs,
                        batch_size=batch_size, batch_format="pyarrow", **cpu.map_batches_args())
    return ds.map_batches(CropEmbedder, fn_constructor_args=(model, accept_licence, mode),
                          fn_constructor_kwargs=recognition.actor_kwargs, batch_size=max(batch_size, 32),
                          batch_format="pyarrow", **recognition.map_batches_args(initial=1))


def embed_finder(masked: bool, finder_kind: str | None, crop_mode: str | None, second_look: bool | None,
                 turned: bool | None = None):
    """How an embed job finds faces: `FinderOptions.for_inputs(finder_kind)` (default `masked` for
    probes, else `photos`), `crop_mode`, `second_look` and `turned` overriding the preset's."""
    from maskgen.finder import FinderOptions

    return FinderOptions.for_inputs(finder_kind or ("masked" if masked else "photos"), crop_mode=crop_mode,
                                    second_look=second_look, turned=turned)


def finder_follows(finder, finder_kind: str | None, crop_mode: str | None, second_look: bool | None,
                   turned: bool | None = None) -> dict:
    """`check_settings`' `follows` of an embed job: the finder's fields not given by an option follow
    `masked` (`embed_finder`), or `--input-kind` where it is given, so a refused rerun asks for the
    option a user gives, not for a detector no flag sets."""
    import dataclasses

    given = {"crop_mode": crop_mode, "second_look": second_look, "turned": turned}
    source = "masked" if finder_kind is None else f"--input-kind {finder_kind}"
    return {f.name: source for f in dataclasses.fields(finder) if given.get(f.name) is None}


FINDING_OPTIONS = {"finder_kind": "--input-kind", "crop_mode": "--crop-mode", "second_look": "--second-look",
                   "turned": "--turned", "images_uri": "--images", "manifest_encoding": "--manifest-encoding"}


def refuse_unmasked_augment_rows(output) -> None:
    """An output an earlier version embedded with `--from-augment` alone recorded its masked faces as
    unmasked (masked=False); `--from-augment` now brings `--masked`, so its rerun was refused in the
    settings' words ("run it with the same settings"), which no option gives any more: said as what it is."""
    from jobs.settings import SettingsChanged, read_record
    from jobs.storage import redact

    try:
        settings = (read_record(output, "embeddings") or {}).get("settings") or {}
    except SettingsChanged:
        return  # a damaged record: check_settings says so
    if settings.get("from_augment") is True and settings.get("masked") is False:
        raise ValueError(f"{redact(output.uri)} was embedded with --from-augment by an earlier version, which marked "
                         "its masked faces unmasked (masked=False in its record; a report read them as the unmasked "
                         "side): embed into a new output; nothing was written")


def refuse_finding_options(from_augment: bool, **given) -> None:
    """`--from-augment` embeds the faces `mfr mask` found, from its own output: options that say how
    to find faces, or where the images are, do not apply. They were taken without effect, and then
    recorded, so that the same job without them was refused."""
    named = [FINDING_OPTIONS[k] for k, v in given.items() if v is not None]
    if from_augment and named:
        raise ValueError(f"{', '.join(named)} {'does' if len(named) == 1 else 'do'} not apply with --from-augment: "
                         "it embeds the faces `mfr mask` found, read from its output (a --config file's key "
                         "gives its option too: put it under the table of the command that takes it)")


def draws_gallery_mask(mode: str, masked: bool, from_augment: bool) -> bool:
    """Whether embedding in `mode` draws a synthetic mask on the faces: `masked-gallery` on unmasked
    photos (masked inputs and an augment's masked faces have theirs)."""
    from recog.matching import mode_from_name

    return mode_from_name(mode).masked_gallery and not masked and not from_augment


def embed_settings(*, masked: bool, from_augment: bool, face: str, finder, alignment: str, input_uri: str,
                   manifest_encoding: str | None = None, mode: str = "plain", mask_style: str = "seed",
                   seed: int = 0) -> dict:
    """What decides every embedding of an output, whatever its model and mode (those are columns of
    each row, so several live side by side): recorded by the job that starts the output, and a rerun
    asking for others is refused (`jobs.settings`): it would skip what is done and leave two kinds of
    faces under one output. That includes the input's kind: a folder's rows and a manifest's are
    grouped apart, so the same images given the other way were not found done, and were embedded
    and scored twice; and a manifest's encoding (`jobs.settings.input_settings`). Where `masked-gallery`
    draws a mask (on unmasked photos: not `masked`, not `from_augment`), that mask (`mask_style`, run
    `seed`): a rerun with another mixed two masks under one mode without a word
    (`jobs.settings.MODE_SETTINGS`: recorded by the run that makes the output, compared only between
    runs that both draw one)."""
    import json

    from jobs.inputs import is_manifest
    from jobs.settings import finder_settings

    # the finder's fields as keys of their own: a refusal names the one that differs (crop_mode, ...)
    drawn = {"masked_gallery_style": mask_style, "masked_gallery_seed": seed} \
        if draws_gallery_mask(mode, masked, from_augment) else {}
    return json.loads(json.dumps({"masked": bool(masked), "from_augment": bool(from_augment), "face": face,
                                  "alignment": alignment, "input": "manifest" if is_manifest(input_uri) else "folder",
                                  **finder_settings(finder), **input_settings(input_uri, manifest_encoding),
                                  **drawn}, sort_keys=True, default=str))


def run_embed(input_uri: str, output_uri: str, model: str = "sface", *, masked: bool, from_augment: bool = False,
              accept_licence: bool = False, face: str = "center", all_faces: bool = False,
              finder_kind: str | None = None,
              alignment: str = "five-point", images_uri: str | None = None, batch_size: int = 32,
              workers: int | None = None, recognition_workers: int | None = None,
              max_pixels: int = DEFAULT_MAX_PIXELS, mode: str = "plain",
              mask_style: str = "seed", seed: int = 0, crop_mode: str | None = None,
              second_look: bool | None = None, turned: bool | None = None, rows_per_shard: int = ROWS_PER_SHARD,
              progress=None,
              executor: str = "auto", local_max_inputs: int = LOCAL_MAX_INPUTS,
              retry_failed: bool = False, masked_rule: str | None = None,
              manifest_encoding: str | None = None, faces_of: str | None = None,
              output_root: str | None = None) -> JobSummary:
    """Embed every face of `input_uri` into shards under `output_uri` (see the module docstring).
    `mode` is a matching mode of recog.matching (`plain`, `masked-gallery`, `flip`, `upper-face`);
    `masked-gallery` draws `mask_style` with run `seed` on unmasked faces before embedding them.
    Faces are found with `FinderOptions.for_inputs(finder_kind)` (`photos`, `masked`, `crops`; default
    `masked` for probes, else `photos`), `crop_mode` (`auto`, `on`, `off`) and `second_look` overriding
    the preset's. `face` says which faces of an image are embedded (`maskgen.finder.select_faces`:
    `center`, the default, `largest` or `all`; `all_faces=True` is `face="all"`). `executor`: as
    `jobs.augment.run_augment`'s (a small job with no cluster to join runs in a local process pool).
    `retry_failed`: faces or images an earlier run recorded as failed are done again, their old rows
    replaced (`jobs.source.DoneRows`). `masked_rule` (`recog.protocols.masked_flags`; `mfr evaluate`'s)
    sets each row's masked flag from its file name where a manifest gives none, instead of `masked`.
    `workers` caps the CPU pool, `recognition_workers` the recognition pool where the cluster has GPUs
    (`embed_stage`). `faces_of`: the `model_id` of an earlier pass over the same input into this
    output with these settings (`mfr evaluate --models`), whose faces are taken as it found them
    instead of detected again (`RecordedFaces`). `output_root`: the whole output where `output_uri` is a
    part of it (`mfr evaluate`'s embeddings/): an input holding it leaves all of it out."""
    from maskgen.checks import check_flag
    from maskgen.finder import ALIGNMENTS, FACE_POLICIES
    from maskgen.masks import STYLE_NAMES, check_seed
    from recog.matching import mode_from_name
    from recog.protocols import check_masked_rule

    from jobs.source import DoneRows

    # everything a worker would refuse, refused here before anything is written (an alignment typo
    # recorded in the settings refused every correct rerun of the output; masked="no" made an empty
    # output folder, then failed in a worker)
    for name, flag in (("masked", masked), ("from_augment", from_augment), ("all_faces", all_faces),
                       ("retry_failed", retry_failed), ("accept_licence", accept_licence)):
        check_flag(name, flag)  # accept_licence="no" accepted a non-commercial licence
    if from_augment and not masked:  # (its rows said unmasked: a report took them for the gallery's kind)
        raise ValueError("from_augment embeds an augment output's masked faces: pass masked=True (the command "
                         "line's --from-augment implies --masked)")
    if face not in FACE_POLICIES:
        raise ValueError(f"face must be one of {FACE_POLICIES}, got {face!r}")
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    if mask_style not in STYLE_NAMES:
        raise ValueError(f"mask_style must be one of {STYLE_NAMES}, got {mask_style!r}")
    mode_from_name(mode)
    check_seed(seed)
    if masked_rule is not None:
        check_masked_rule(masked_rule)
    if not isinstance(model, (str, Path)):
        raise ValueError(f"model is a built-in model's name or an .onnx path, got {model!r}")
    check_counts(batch_size=batch_size, rows_per_shard=rows_per_shard, max_pixels=max_pixels, workers=workers,
                 recognition_workers=recognition_workers, local_max_inputs=local_max_inputs)
    check_job_options(manifest_encoding, progress)
    check_executor(executor)
    refuse_finding_options(from_augment, finder_kind=finder_kind, crop_mode=crop_mode, second_look=second_look,
                           turned=turned, images_uri=images_uri, manifest_encoding=manifest_encoding)
    face = "all" if all_faces else face
    started = time.perf_counter()
    finder = embed_finder(masked, finder_kind, crop_mode, second_look, turned)
    output = open_store(output_uri)
    if from_augment:
        refuse_unmasked_augment_rows(output)
    embedder = checked_model(model, accept_licence)
    model_id = embedder.model_id
    done_where = DoneRows(ColumnsEqual(model_id=model_id, mode=mode), retry_failed=retry_failed)
    faces_from = (output.uri, faces_of, mode) if faces_of else None
    settings = embed_settings(masked=masked, from_augment=from_augment, face=face, finder=finder, alignment=alignment,
                              input_uri=input_uri, manifest_encoding=manifest_encoding, mode=mode,
                              mask_style=mask_style, seed=seed)
    # listed before anything is written: an input the job cannot use leaves the output untouched
    listing = embed_listing(input_uri, output, from_augment, alignment, done_where, images_uri, face=face,
                            manifest_encoding=manifest_encoding, output_root=output_root)
    output.check_writable()  # an unreachable endpoint or unwritable folder fails before any work
    source = source_of(input_uri, images_uri)
    listing[3].extend(n for n in [source_note(output, source, "embeddings")] if n)
    with Lease(output, "mfr embed") as lease, \
            settings_recorded(output, "mfr embed", settings, SHARD_DIR, made="embeddings",
                              follows=finder_follows(finder, finder_kind, crop_mode, second_look, turned),
                              source=source):
        summary = run_here(
            executor, local_max_inputs, lambda tally: with_progress(listing, tally),
            lambda source: functools.partial(
                EmbedWorker, source.uri, model, accept_licence, masked, from_augment, face, finder, alignment,
                max_pixels, mode, mask_style, seed, None, threads=1, masked_rule=masked_rule, faces_from=faces_from),
            write=functools.partial(write_shards, output_uri=output.uri, directory=SHARD_DIR,
                                    faces_column="status", lease=lease.token),
            faces_column="status", batch_size=batch_size, workers=workers, rows_per_shard=rows_per_shard,
            started=started, progress=progress)
        if summary is None:
            ensure_ray()
            source, groups, lister, notes = listing
            recognition = recognition_pool(recognition_workers)

            def build(inputs, tracker):
                ds = embed_stage(inputs, source.uri, model, accept_licence=accept_licence, masked=masked,
                                 from_augment=from_augment, face=face, finder=finder, alignment=alignment,
                                 max_pixels=max_pixels, mode=mode, mask_style=mask_style, seed=seed,
                                 batch_size=batch_size, workers=workers, recognition=recognition, progress=tracker,
                                 masked_rule=masked_rule, embedder=embedder, faces_from=faces_from)
                return write_stage(ds, output.uri, SHARD_DIR, "status", rows_per_shard, lease.token)

            summary = run_listed(output, SHARD_DIR, groups, lister, build, started, progress, batch_size)
            summary.notes = [*notes, *unused_recognition_workers(recognition_workers, recognition, local=False)]
        else:
            summary.notes = [*(summary.notes or []), *unused_recognition_workers(recognition_workers, None,
                                                                                 local=True)]
        require_inputs(summary, input_uri)
    return summary


# a duplicate input row repeats another sample, a folder's file that is not an image (by its name)
# is none, and `mfr run` does not take an image without an identity or one its input manifest marks
# as masked for a sample: none of them is a failure to acquire; an image with no face is one
NOT_FAILURES = tuple(status for status in FINE if status != "no_face")


def failed_samples(table):
    """The rows of a shard table whose image gave no face (no face found, unreadable, refused), one per
    image: `key`, `identity`, `status`, `masked` (the failures to acquire of recog.metrics)."""
    import pyarrow.compute as pc

    failed = table.filter(pc.invert(pc.is_in(table.column("status"), value_set=pa_strings(NOT_FAILURES))))
    return (failed.select(["key", "identity", "status", "masked"]).to_pandas(use_threads=False).drop_duplicates("key")
            .reset_index(drop=True))


def pa_strings(values):
    import pyarrow as pa

    return pa.array(list(values), pa.string())


# what scoring reads of an embedding shard: one without a column is refused naming it (was a KeyError
# traceback, or pyarrow's words, naming nothing; a missing similarity was taken for cosine)
SCORED_COLUMNS = ("key", "identity", "face_index", "status", "similarity", "model_id", "mode", "masked", "embedding")


def repeated_faces(rows, where: str) -> None:
    """Refuse face rows (`ok_faces`' rows, or labels with `key` and `face_index`, and `model_id` and
    `mode` where given) that are there more than once: shards of two runs copied into one folder, each
    repeat a probe or gallery entry of its own (30 probes were scored as 45, silently). An mfr output
    never holds them: a rerun replaces an image's rows."""
    message = repeated_faces_message(rows, where)
    if message:
        raise ValueError(message)


def repeated_faces_message(rows, where: str) -> str:
    """`repeated_faces`' refusal, or "" when no face row is there twice."""
    columns = [c for c in ("model_id", "mode", "key", "face_index") if c in rows]
    repeated = rows.duplicated(columns)
    if not repeated.any():
        return ""
    first = rows[repeated].iloc[0]
    method = f" of {str(first.model_id).split('@')[0]} {first['mode']}" if "model_id" in rows else ""
    return (f"{where}: {int(repeated.sum())} face row(s) are there more than once (e.g. {first.key!r} face "
            f"{int(first.face_index)}{method}): shards of two runs copied into one folder? Each repeat would "
            "count as a sample of its own; score each run's folder on its own")


def read_shards(uri: str, with_failures: bool = False, where=None):
    """All embedding shards under `uri` as (table rows as pandas, embeddings (N, D) float32) of the
    faces that have an embedding; with `with_failures`, also the images that gave none
    (`failed_samples`). `where` (e.g. `ColumnsEqual(model_id=..., mode=...)`) keeps only the rows it
    selects: one output may hold several models' and modes' shards."""
    import pyarrow as pa

    from maskgen.checks import check_flag

    check_flag("with_failures", with_failures)  # ("no" gave the failures)
    if where is not None and not callable(where):  # (a dict was "'dict' object is not callable", at the end)
        raise ValueError(f"where is a function of a shard table's columns, e.g. ColumnsEqual(model_id=...), got "
                         f"{where!r}")
    store = open_store(uri)
    tables = read_parquet_dir(store, SHARD_DIR, required=SCORED_COLUMNS)
    if not tables:
        raise FileNotFoundError(f"no embedding shards under {store.uri}/{SHARD_DIR}{where_shards_are(store)}")
    if where is not None:
        # chosen over every shard's labels, then applied shard by shard: models of other embedding
        # sizes (a fixed-size list column each) cannot be joined into one table before the choice
        chosen = where(pa.concat_tables([t.drop(["embedding"]) for t in tables]))
        starts = np.cumsum([0] + [t.num_rows for t in tables])
        tables = [t.filter(chosen.slice(int(a), t.num_rows)) for t, a in zip(tables, starts)]
    widths = sorted({t.schema.field("embedding").type.list_size for t in tables if t.num_rows})
    if len(widths) > 1:
        models = sorted({m for t in tables for m in t.column("model_id").unique().to_pylist()})
        raise ValueError(f"{store.uri} holds embeddings of {len(widths)} sizes ({widths}) from models {models}: "
                         "read one model's rows at a time")
    whole = pa.concat_tables([t for t in tables if t.num_rows] or tables[:1])
    rows, emb = ok_faces(whole, store.uri)
    repeated_faces(rows, store.uri)
    return (rows, emb, failed_samples(whole)) if with_failures else (rows, emb)


def where_shards_are(store) -> str:
    """A hint for a folder given where embedding shards were expected: the output of another command."""
    from jobs.settings import SETTINGS_KEY

    if store.any_under("embeddings/masked") or store.any_under("embeddings/unmasked"):
        return (f": {store.uri} is the output of `mfr run`, whose shards are under {store.uri}/embeddings/masked "
                f"(the probes) and {store.uri}/embeddings/unmasked (the gallery)")
    if store.any_under("embeddings"):
        # one folder of masked and unmasked images: scored as one side, each identity's first images would
        # be its gallery, masked or not
        return (f": {store.uri} is the output of `mfr evaluate`, whose shards are under {store.uri}/embeddings, "
                "masked and unmasked images together; `mfr evaluate` again on its input into "
                f"{store.uri} scores them (nothing is embedded again), masked against unmasked")
    if store.exists(SETTINGS_KEY):
        return (f": {store.uri} is the output of `mfr mask`; embed its masked faces first (mfr embed "
                f"{store.uri} EMB --from-augment --masked) and score EMB")
    if store.uri.rstrip("/").endswith(f"/{SHARD_DIR}") and any(k.endswith(".parquet") for k in store.list()):
        return f": {store.uri} holds the shards themselves; give the folder above it"
    return ""


def ok_faces(table, folder: str = ""):
    """(rows as pandas without the embedding, embeddings (N, D) float32) of a shard table's faces that
    have an embedding. Rows whose embedding holds NaN or infinity are refused, named (`folder`: where
    the table was read, for the message)."""
    import pyarrow.compute as pc

    # failed faces keep a row with a null embedding, which flatten() would skip: drop them first
    table = table.filter(pc.equal(table.column("status"), "ok"))
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    emb = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)
    rows = table.drop(["embedding"]).to_pandas(use_threads=False)
    bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))
    if bad.size:
        # mfr marks such faces failed as it embeds them (`Embedder.embed_each`); these came from an older
        # mfr or another tool. Refused by name: the metrics' own refusal named no face
        first = rows.iloc[bad[0]]
        raise ValueError(f"{folder + ': ' if folder else ''}{bad.size} face row(s) with status ok hold NaN or "
                         f"infinite embeddings, e.g. {str(first.key)!r} face {first.face_index} "
                         f"({first.model_id}): their model failed on them; embed those images again into a new "
                         "folder (mfr marks such faces failed), or drop the rows")
    return rows, emb
