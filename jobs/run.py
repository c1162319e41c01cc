"""The whole job as one streaming Ray Dataset: a dataset of folder-per-identity images (or an input
manifest that names each image's identity) to a report.

    from jobs.run import run_pipeline
    result = run_pipeline("../shared/data/faces", "out/run", style="seed", model="sface")
    result = run_pipeline("s3://bucket/faces", "s3://bucket/runs/1", models=["sface", "dlib-resnet"],
                          modes=["plain", "masked-gallery", "flip", "upper-face"], fuse=True)
    result = run_pipeline("lists/test.csv", "out/listed", images_uri="s3://bucket/faces")

    read tasks (listing)  ->  CPU pool: decode, detect, 68 landmarks, mask, align    ->  recognition pool:
    one row per image        (writes masked images and crops; aligned crops of the    embed the crops (one
                             unmasked and masked face for each model travel on)      GPU each, or CPUs)
                          ->  shard-writing tasks (manifest and embedding shards)  ->  the reducer (report)

Nothing is read, decoded or detected twice. In each identity the first image (a folder's first in key
order, a manifest's first row) is the gallery image: its unmasked face is embedded (and its masked
face, for `masked-gallery`); every other image is a probe: its masked face is embedded. Writes
under the output URI: `masked/` (the augment output: images, crops, manifest), `embeddings/unmasked/` and `embeddings/masked/` (shards of the first
model, plain matching), `embeddings/<model>/<mode>/{unmasked,masked}/` for every other model and
matching mode (recog.matching), and `report/` (report.json, report.md, roc.png, scores.png, cmc.png) with one row
per model and mode, side by side, plus one fused row per mode when `fuse` and several models are given.
A rerun does only the images that are not yet in the manifest and in every shard folder of their role.
A small job with no cluster to join runs the same stages in a local process pool instead (`executor`,
jobs/local.py: each process prepares, then embeds, its batches) and is scored in this process.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from jobs.augment import MANIFEST_DIR, AugmentWorker, check_counts, check_job_options, manifest_schema
from jobs.embed import SHARD_DIR, crop_arrays, error_text
from jobs.inputs import ColumnsEqual, input_listing, with_progress
from jobs.lease import Lease, check_lease
from jobs.local import LOCAL_MAX_INPUTS, check_executor, run_here
from jobs.pool import TASK_CPUS, ensure_ray, plan_pool, recognition_pool, unused_recognition_workers, use_threads
from jobs.score import NothingToScore, run_score
from jobs.settings import (augment_settings, check_settings, refuse_other_output, settings_recorded, source_note,
                           source_of)
from jobs.sink import (ROWS_PER_SHARD, cut_inputs, input_counts, part_label, put_shard, require_inputs, run_listed,
                       with_cuts)
from jobs.storage import open_store
from maskgen.augment import AugmentOptions
from maskgen.checks import check_flag
from maskgen.decode import DEFAULT_MAX_PIXELS
from maskgen.finder import FACE_POLICIES, FinderOptions
from maskgen.record import FaceRecord, embedding_array, records_table
from recog.matching import mode_from_name

RUN_MANIFEST = f"masked/{MANIFEST_DIR}"   # the run's manifest: written last, an image's row means it is done

# plain alone: on real masked faces (README, "Mask-aware matching": masked_crops, every probe counted)
# the masked gallery and the upper face did worse than plain for sface, so neither is a default;
# ask for them (or flip) with `modes` to compare on your own data
DEFAULT_MODES = ("plain",)


@dataclass(frozen=True)
class Target:
    """One shard folder of the run: which model and mode, gallery or probes, embedded from which crop."""

    folder: str        # e.g. "embeddings/unmasked", relative to the run's output
    model: str
    mode: str
    gallery: bool      # gallery images (True) or probes (False)
    crop: str          # "unmasked" or "masked"
    model_id: str
    dim: int
    similarity: str

    @property
    def column(self) -> str:
        return f"emb:{self.folder}"

    @property
    def error_column(self) -> str:
        return f"err:{self.folder}"

    @property
    def shard_dir(self) -> str:
        return f"{self.folder}/{SHARD_DIR}"


def run_targets(out, models: list[str], modes: list[str], infos: dict) -> tuple[list[Target], list[tuple]]:
    """`plan_targets` for the output `out`: the model whose plain shards an earlier run put in
    `embeddings/{unmasked,masked}` keeps that place, whatever this run lists first; if this run does
    not ask for it, its models' shards all go to `embeddings/<model>/<mode>/` (a rerun with another
    `--model` put its shards beside the first's, and scoring them failed or mixed two models)."""
    from jobs.storage import read_parquet_bytes

    first = None
    for key in (k for k in out.list(f"embeddings/unmasked/{SHARD_DIR}") if k.endswith(".parquet")):
        try:
            held = set(read_parquet_bytes(out.read(key), columns=["model_id"]).column("model_id").to_pylist())
        except (OSError, ValueError):  # a damaged shard: the next tells, and the listing sets it aside
            continue
        first = next((m for m in models if infos[m][0] in held), "")
        break
    return plan_targets(models, modes, infos, first, model_folders(out, models))


def model_folders(out, models: list[str]) -> dict[str, str]:
    """Each model's folder under `embeddings/` in the output `out`: `model_folder`, or the folder an
    earlier version named by the model's path as given (`models/m.onnx`), where `out` has it, so a
    rerun counts those shards done rather than embedding everything again beside them."""
    from jobs.storage import UnsafeKeyError, safe_key

    folders = {}
    for m in models:
        folders[m] = model_folder(m)
        try:
            legacy = safe_key(f"embeddings/{m}").removeprefix("embeddings/")
        except UnsafeKeyError:  # `../m.onnx` was refused, so no output has it
            continue
        if legacy != folders[m] and out.any_under(f"embeddings/{legacy}"):
            folders[m] = legacy
    return folders


def crop_column(model: str, crop: str) -> str:
    return f"crop:{model}:{crop}"


def plan_targets(models: list[str], modes: list[str], infos: dict, first: str | None = None,
                 folders: dict | None = None) -> tuple[list[Target], list[tuple]]:
    """(shard folders, methods for the report as (name, probe folder, gallery folder)). The plain
    shards of `first` (default: the first model) go to `embeddings/{unmasked,masked}`, every other
    model's and mode's to `embeddings/<folder>/<mode>/` (`folders`, default `model_folder`); `first=""`:
    no model's go there."""
    first = models[0] if first is None else first
    folders = {m: model_folder(m) for m in models} | (folders or {})
    targets, methods = {}, []
    for m in models:
        model_id, dim, similarity = infos[m]
        for mode in modes:
            base = "embeddings" if (m, mode) == (first, "plain") else f"embeddings/{folders[m]}/{mode}"
            # probes change only when the mode changes how every face is embedded (flip, upper face)
            probe_mode = "plain" if mode in ("plain", "masked-gallery") else mode
            probe_base = base if probe_mode != "plain" else (
                "embeddings" if m == first else f"embeddings/{folders[m]}/plain")
            gallery_crop = "masked" if mode_from_name(mode).masked_gallery else "unmasked"
            g = Target(f"{base}/unmasked", m, mode, True, gallery_crop, model_id, dim, similarity)
            p = Target(f"{probe_base}/masked", m, probe_mode, False, "masked", model_id, dim, similarity)
            targets.setdefault(g.folder, g)
            targets.setdefault(p.folder, p)
            methods.append((method_name(m, mode, modes), p.folder, g.folder))
    return list(targets.values()), methods


def method_name(model: str, mode: str, modes: list[str]) -> str:
    """A method's name in the report: the model's alone for plain matching only, else with its mode
    (`--modes flip` alone was reported as plain `sface`)."""
    return model if list(modes) == ["plain"] else f"{model} {mode}"


class PrepareWorker(AugmentWorker):
    """The CPU pool of `mfr run`: augment each image (masked image and crop written) and put the
    aligned crops each model needs on the face's row, so the recognition pool only embeds."""

    already_masked = ("the input manifest marks this image as masked: `mfr run` masks images itself, so it is not "
                      "one of this run's samples (compare real masked photos with `mfr evaluate`)")
    # not a sample, so not looked for: a missing one read `missing`, a failure to acquire in the report
    looks_for_masked = False

    def __init__(self, input_uri: str, output_uri: str, options: AugmentOptions, max_pixels: int, specs: dict,
                 crops: dict, progress=None, threads: int | None = None, device="auto"):
        import pyarrow as pa

        super().__init__(input_uri, output_uri, options, max_pixels, progress, threads, device)
        self.specs, self.crops = specs, crops  # crops: {"gallery": {"unmasked", ...}, "probe": {"masked"}}
        fields = [pa.field(crop_column(m, c), pa.binary()) for m in specs for c in ("unmasked", "masked")]
        self.schema = pa.schema(list(self.schema) + [pa.field("gallery", pa.bool_()),
                                                     pa.field("_written", pa.list_(pa.string())),
                                                     pa.field("_image_crops", pa.list_(pa.string()))] + fields)

    def row_extras(self, item: dict) -> dict:
        """The image's role, and the folders a rerun must not write it to again (jobs.inputs.FolderLister)."""
        return {"gallery": bool(item.get("gallery")), "_written": item.get("written") or []}

    def rows_for(self, key: str, item: dict) -> list[dict]:
        from maskgen.align import align_face

        records, image, result = self.augment_image(key, item)
        rows = [{**r.to_row("manifest"), **self.row_extras(item)} for r in records]
        if result is None or result.status != "ok":
            return rows
        wanted = self.crops["gallery" if item.get("gallery") else "probe"]
        for row, face in zip(rows, records):
            if not face.masked:
                continue
            for m, spec in self.specs.items():
                for crop in wanted:
                    picture = image if crop == "unmasked" else result.image
                    row[crop_column(m, crop)] = align_face(picture, face.alignment_points, spec.face_template).tobytes()
        # on every row of the image: its crops, one entry per row that has one, for a shard writer that
        # sees only some of its rows (a batch cut inside them) to know whether the image has a face
        # embedded elsewhere, and how many rows each folder gets of it in all (`folder_cuts`)
        crops = sorted(c for row in rows for c, v in row.items() if c.startswith("crop:") and v is not None)
        for row in rows:
            row["_image_crops"] = crops
        return rows


class RecognizeWorker:
    """The recognition pool of `mfr run`: embeddings of the crops on each row, nothing else."""

    def __init__(self, targets: list[Target], accept_licence: bool, threads: int | None = None, device="auto"):
        from maskgen.runtime import resolve_device
        from recog.embed import Embedder

        from jobs.augment import node_id

        if threads:
            use_threads(threads)
        self.targets, self.node = targets, node_id()
        self.embedders = {}
        for t in targets:
            if (t.model, t.mode) not in self.embedders:
                mode = mode_from_name(t.mode)
                self.embedders[(t.model, t.mode)] = Embedder(t.model, accept_licence=accept_licence, flip=mode.flip,
                                                             region=mode.region, device=resolve_device(device))

    def __call__(self, batch):
        import pyarrow as pa

        gallery = np.asarray(batch.column("gallery").to_pylist(), dtype=bool)
        written = [set(w or ()) for w in batch.column("_written").to_pylist()]
        for t in self.targets:
            embedder = self.embedders[(t.model, t.mode)]
            w, h = embedder.spec.input_size
            column = batch.column(crop_column(t.model, t.crop)).to_pylist()
            rows = [i for i, c in enumerate(column)
                    if c is not None and gallery[i] == t.gallery and t.shard_dir not in written[i]]
            vectors, errors = [None] * batch.num_rows, [None] * batch.num_rows
            # a face the model fails on is its shard row's error (status `error`, rerun by --retry-failed);
            # it stopped the job, and a NaN vector stopped the report
            for i, v in zip(rows, embedder.embed_each(crop_arrays(column, rows, w, h))):
                if isinstance(v, Exception):
                    errors[i] = error_text(v)
                else:
                    vectors[i] = v
            batch = batch.append_column(pa.field(t.column, pa.list_(pa.float32(), t.dim)),
                                        embedding_array(vectors, t.dim))
            batch = batch.append_column(t.error_column, pa.array(errors, pa.string()))
            failed = [i for i, e in enumerate(errors) if e]
            if failed:  # and the manifest's row: the summary counts it, --strict fails on it
                status, message = batch.column("status").to_pylist(), batch.column("message").to_pylist()
                for i in failed:  # (each model that failed on the face says so)
                    said = f"{t.folder}: {errors[i]}"
                    message[i] = f"{message[i]}; {said}" if status[i] == "error" and message[i] else said
                    status[i] = "error"
                for name, values in (("status", status), ("message", message)):
                    batch = batch.set_column(batch.schema.get_field_index(name), name, pa.array(values, pa.string()))
        batch = batch.append_column("recognition_node", pa.array([self.node] * batch.num_rows, pa.string()))
        return batch.drop_columns([c for c in batch.column_names if c.startswith("crop:")])


class RunWorker:
    """Both pools' work in one process: each batch is prepared (masked, crops put on its rows), then
    embedded. The local executor's processes run it (jobs/local.py), and so do the CPU pool's actors
    on a cluster without GPUs, where a separate recognition pool would only share the same cores
    (and, sized apart from the CPU pool, be the bottleneck or sit idle)."""

    def __init__(self, prepare_args: tuple, recognize_args: tuple, threads: int | None = None, device="auto"):
        self.prepare = PrepareWorker(*prepare_args, threads=threads, device=device)
        self.recognize = RecognizeWorker(*recognize_args, threads=threads, device=device)

    def __call__(self, batch):
        return self.recognize(self.prepare(batch))


def write_run_shards(table, *, output_uri: str, targets: list[Target], lease: str | None = None) -> dict:
    """Ray Data map function: per group, one shard in every target folder (every image of the
    target's role gets a row; null embedding and the reason when it has no masked face), then the
    manifest shard, last: a manifest row means the image is done everywhere. Shard rows are the
    manifest's face records with their embedding (`FaceRecord.to_row("shard")`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    store = open_store(output_uri)
    check_lease(store, lease)  # a job whose output another took over while it was stopped writes nothing more
    manifest_columns = [f.name for f in manifest_schema()]
    shards = 0
    for gid in pc.unique(table.column("group")).to_pylist():
        part = table.filter(pc.equal(table.column("group"), gid))
        rows = part.to_pylist()
        # the images this batch holds only some rows of: the manifest's record counts their rows, each
        # embedding folder's the rows it gets of them (`folder_cuts`); a rerun judges each folder by its own
        cuts = cut_inputs(part, lease)
        label = part_label(part, cuts)
        for t in targets:
            by_input: dict = {}
            for r in rows:
                if bool(r["gallery"]) == t.gallery and t.shard_dir not in (r["_written"] or ()):
                    by_input.setdefault(r["input_row"], []).append(r)
            records = []
            written: dict = {}  # input row -> its rows this shard holds
            for name, faces in by_input.items():
                # a face the model failed on keeps its row, with the error (`RecognizeWorker`)
                embedded = [r for r in faces if r[t.column] is not None or r[t.error_column]]
                if not embedded:
                    # the image's one row without an embedding, from its first row: none where this batch
                    # holds only some of its rows and another has its embedded faces or its first row
                    faces = [r for r in faces if r.get("_first") and
                             crop_column(t.model, t.crop) not in (r.get("_image_crops") or ())]
                for r in embedded or faces[:1]:
                    record = FaceRecord.from_row(r).with_(masked=not t.gallery, model_id=t.model_id, mode=t.mode,
                                                          similarity=t.similarity, node=r["recognition_node"])
                    if r[t.error_column]:
                        record = record.with_(embedding=None, status="error", message=r[t.error_column])
                    elif embedded:
                        record = record.with_(embedding=r[t.column], status="ok", message="")
                    else:  # the image's reason, or its faces were all left unmasked
                        record = record.with_(face_index=-1, **({} if r["status"] != "ok" else
                                                                {"status": "no_face", "message": "no masked face"}))
                    records.append(record)
                    written[name] = written.get(name, 0) + 1
            if records:
                put_shard(store, t.shard_dir, gid,
                          with_cuts(records_table(records, "shard", t.dim), folder_cuts(cuts, written, by_input, t)),
                          label)
                shards += 1
        new = [RUN_MANIFEST not in (r["_written"] or ()) for r in rows]
        if any(new):
            put_shard(store, RUN_MANIFEST, gid, with_cuts(part.filter(pa.array(new)).select(manifest_columns), cuts),
                      label)
            shards += 1
    counts, cut = input_counts(table)
    return {"inputs": [sum(counts.values())], "shards": [shards], "statuses": [json.dumps(counts)],
            "cuts": [json.dumps(cut)],
            "faces": [int(pc.sum(pc.cast(pc.fill_null(table.column("masked"), False), pa.int64())).as_py() or 0)]}


def folder_cuts(cuts: dict, written: dict, by_input: dict, t: Target) -> dict:
    """The record (`jobs.sink.cut_inputs`) of the shard a batch writes in `t`'s folder: of the images
    the batch holds only some rows of (`cuts`), those whose embedded faces (one row each) it holds
    only some of. Counted in the batch's rows, a folder that gets one of three faces (`--face
    center`) held "1 of 3" for ever, and every rerun did the image again. An image without an
    embedded face has one row, written whole by the batch holding its first row."""
    column = crop_column(t.model, t.crop)
    out = {}
    for name, (job, _, _) in cuts.items():
        if name in written:
            total = list(by_input[name][0].get("_image_crops") or ()).count(column)
            if written[name] < total:
                out[name] = [job, total, written[name]]
    return out


def run_listing(dataset_uri: str, out, targets: list[Target], *, images_uri: str | None = None,
                retry_failed: bool = False, drop: bool = True, progress=None,
                manifest_encoding: str | None = None) -> tuple:
    """`jobs.inputs.input_listing` of a run: an image is done when the run's manifest and every shard
    folder of its role (`targets`) hold it. With `retry_failed`, an image's failed rows (a status
    outside `jobs.progress.FINE`) do not count: with `drop` (a real run, not a dry run) the read task
    takes them out of the manifest and the shard folders as it lists (`jobs.source.DoneRows`),
    so the image is done again, its role chosen again as on a fresh run, and it keeps one row in each."""
    from jobs.source import DoneRows

    def where(condition=None):
        return DoneRows(condition, retry_failed=retry_failed, drop=drop)

    role_done = {role: [(t.shard_dir, where(ColumnsEqual(model_id=t.model_id, mode=t.mode)))
                        for t in targets if t.gallery == (role == "gallery")] for role in ("gallery", "probe")}
    listing = input_listing(dataset_uri, out, RUN_MANIFEST, images_uri=images_uri, gallery_per_identity=1,
                            role_done=role_done, done_where=where(), progress=progress,
                            manifest_encoding=manifest_encoding)
    refuse_other_output(out, "embeddings", "mfr run")
    return listing


def run_methods(models: list[str], modes: list[str]) -> tuple[list[str], list[str]]:
    """The run's models and modes, refused before any work (by the run and its dry run alike) when a
    list is empty, repeats a name, or names an unknown mode. A single name is a list of one (modes="flip"
    was read letter by letter: "unknown matching mode 'f'")."""
    if models is None or modes is None:
        raise ValueError(f"models and modes are lists of names, got {models!r} and {modes!r}")
    models, modes = ([v] if isinstance(v, (str, Path)) else list(v) for v in (models, modes))
    if not all(isinstance(m, (str, Path)) for m in models):  # model=5: a pathlib TypeError
        raise ValueError(f"models are built-in models' names or .onnx paths, got {models!r}")
    modes = [mode_from_name(m).name for m in modes]
    if len(set(models)) != len(models) or len(set(modes)) != len(modes) or not models or not modes:
        raise ValueError(f"models and modes must be non-empty and without repeats: {models}, {modes}")
    folders = {}
    for m in models:
        folder = model_folder(m)
        other = folders.setdefault(folder, m)
        if other != m:
            raise ValueError(f"models {other} and {m} would share the shard folder embeddings/{folder}/: "
                             "give model files of different names")
    return models, modes


def model_folder(model) -> str:
    """A model's folder under `embeddings/`: a built-in's name, a file's name however its path is
    spelled (`./m.onnx`, `/data/m.onnx`: one folder; the path itself made keys such as
    `embeddings//data/m.onnx/...`, and `../m.onnx` was refused as leaving the output)."""
    from recog import zoo

    text = str(model)
    return text if text in zoo.BUILTINS else PurePosixPath(text.replace("\\", "/")).name


def plan_run(dataset_uri: str, output_uri: str, models: list[str], modes: list[str], *, accept_licence: bool = False,
             images_uri: str | None = None, retry_failed: bool = False, style: str = "seed", seed: int = 0,
             face: str = "center", manifest_encoding: str | None = None, turned: bool = False) -> dict:
    """What `run_pipeline` would do, listed by the run's own listing code in this process (no Ray,
    nothing written): an image counts as done only where the manifest and every shard folder of its
    role hold it, so a model or mode added since is counted as work. Each model is fetched and
    checked, since its identity decides which shards count; masks the output was not made with are
    refused, as the run refuses them."""
    from jobs.augment import mask_settings_line, output_keys, plan_from
    from jobs.embed import model_identity
    from jobs.inputs import Tally

    out = open_store(output_uri)
    out.check_could_write()  # refused as the run would refuse it, writing nothing
    models, modes = run_methods(models, modes)
    options = AugmentOptions(style=style, seed=seed, face=face, finder=FinderOptions(turned=turned))
    check_settings(out, "mfr run", augment_settings(options, dataset_uri, manifest_encoding), record=False)
    targets, _ = run_targets(out, models, modes, {m: model_identity(m, accept_licence) for m in models})
    tally = Tally()
    images, groups, lister, notes = run_listing(dataset_uri, out, targets, images_uri=images_uri,
                                                retry_failed=retry_failed, drop=False, progress=tally,
                                                manifest_encoding=manifest_encoding)
    masked = out.uri_of("masked")
    plan = plan_from(images.uri, out, groups, lister, tally, notes, lambda row: "{}/{}, embedded as {}".format(
        masked, output_keys(row["key"])[0], "gallery" if row["gallery"] else "probe"),
        already_masked=PrepareWorker.already_masked)
    plan["settings"] = mask_settings_line(options)
    return plan


@contextlib.contextmanager
def sub_leases(out, targets: list[Target]):
    """Leases on the outputs inside the run's own (`masked/`, each shard folder's), which `mfr mask` and
    `mfr embed` could be writing to as outputs of their own: a lease on the run's folder alone let
    `mfr mask DS OUT/masked` rewrite a running run's manifest and images, each job holding a lease the
    other never looked at."""
    with contextlib.ExitStack() as stack:
        for folder in ["masked", *sorted({t.folder for t in targets})]:
            stack.enter_context(Lease(open_store(out.uri_of(folder)), f"mfr run (its {folder}/)"))
        yield


def run_pipeline(dataset_uri: str, output_uri: str, style: str = "seed", seed: int = 0, model: str = "sface",
                 accept_licence: bool = False, progress_for=None, models: list[str] | None = None,
                 modes: list[str] = DEFAULT_MODES, fuse: bool = False, batch_size: int = 16,
                 workers: int | None = None, recognition_workers: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 rows_per_shard: int = ROWS_PER_SHARD, face: str = "center", executor: str = "auto",
                 local_max_inputs: int = LOCAL_MAX_INPUTS, images_uri: str | None = None,
                 retry_failed: bool = False, manifest_encoding: str | None = None, turned: bool = False) -> dict:
    """`progress_for(label)` gives the progress callback (e.g. `jobs.progress.ProgressBar`).
    `turned`: faces may be turned a quarter or half turn (`maskgen.finder.FinderOptions.turned`).
    `models` (default: just `model`) and `modes` say which embeddings are made and scored;
    `workers` caps the CPU pool, `recognition_workers` the recognition pool. `face` says which faces of
    each image are masked and embedded (maskgen.finder.select_faces): `center` (default), `largest`, or
    `all` (every face a probe, or a gallery entry of the image's identity: for sets of group photos
    whose every face is the labelled person, rarely what a folder-per-identity set means).
    `executor` (jobs/local.py): with no cluster to join and at most `local_max_inputs` images to do,
    `auto` runs the job in a process pool here, each process doing both pools' work on its batches,
    and scores in this process while the whole output has at most that many images (else with the
    distributed reducer, on Ray); `local` always does, `ray` never. `dataset_uri` may be an input
    manifest (jobs/inputs.py: a path and an identity per row; each identity's first row is its
    gallery image) whose paths are relative to `images_uri` (default: the manifest's folder), a CSV
    one read as `manifest_encoding` (default: UTF-8, else GBK). `retry_failed`: images an earlier run
    recorded as failed are done again, their old rows replaced in the manifest and in every shard
    folder (`run_listing`)."""
    from recog.embed import Embedder

    models, modes = run_methods(models if models is not None else [model], modes)
    check_counts(batch_size=batch_size, rows_per_shard=rows_per_shard, max_pixels=max_pixels, workers=workers,
                 recognition_workers=recognition_workers, local_max_inputs=local_max_inputs)
    check_job_options(manifest_encoding)
    check_executor(executor)
    for option, flag in (("accept_licence", accept_licence), ("fuse", fuse), ("retry_failed", retry_failed)):
        check_flag(option, flag)  # "no" was True
    if face not in FACE_POLICIES:
        raise ValueError(f"face must be one of {FACE_POLICIES}, got {face!r}")
    started = time.perf_counter()
    out = open_store(output_uri)
    # every model is loaded once here: a wrong model or licence fails before any image is read
    embedders = {m: Embedder(m, accept_licence=accept_licence).check() for m in models}
    infos = {m: (e.model_id, e.dim, e.spec.similarity) for m, e in embedders.items()}
    specs = {m: e.spec for m, e in embedders.items()}
    targets, methods = run_targets(out, models, modes, infos)
    crops = {"gallery": sorted({t.crop for t in targets if t.gallery}), "probe": ["masked"]}

    options = AugmentOptions(style=style, seed=seed, face=face, finder=FinderOptions(turned=turned))
    progress = progress_for("run") if progress_for else None

    # listed before anything is written: an input the job cannot use leaves the output untouched
    listing = run_listing(dataset_uri, out, targets, images_uri=images_uri, retry_failed=retry_failed,
                          manifest_encoding=manifest_encoding)
    # before the leases make the run's folders: an output it may not add to is left as it was
    check_settings(out, "mfr run", augment_settings(options, dataset_uri, manifest_encoding), record=False)
    out.check_writable()

    def worker_args(images, tracker=None) -> tuple[tuple, tuple]:
        """(PrepareWorker's, RecognizeWorker's) constructor arguments, for either executor."""
        return (images.uri, out.uri_of("masked"), options, max_pixels, specs, crops, tracker), (targets, accept_licence)

    source = source_of(dataset_uri, images_uri)
    listing[3].extend(n for n in [source_note(out, source)] if n)
    with Lease(out, "mfr run") as lease, sub_leases(out, targets), \
            settings_recorded(out, "mfr run", augment_settings(options, dataset_uri, manifest_encoding), RUN_MANIFEST,
                              source=source):
        summary = run_here(
            executor, local_max_inputs, lambda tally: with_progress(listing, tally),
            lambda images: functools.partial(RunWorker, *worker_args(images), threads=1),
            write=functools.partial(write_run_shards, output_uri=out.uri, targets=targets, lease=lease.token),
            faces_column="masked",
            batch_size=batch_size, workers=workers, rows_per_shard=rows_per_shard, started=started,
            progress=progress)
        on_ray = summary is None
        if on_ray:
            ensure_ray()
            images, input_groups, lister, notes = listing
            cpu = plan_pool(workers)
            recognition = recognition_pool(recognition_workers)

            def build(inputs, tracker):
                prepare, recognize = worker_args(images, tracker)
                # no GPUs: each CPU actor embeds what it prepared; else the GPU actors embed
                worker, args = (RunWorker, (prepare, recognize)) if recognition is None else (PrepareWorker, prepare)
                ds = inputs.map_batches(worker, fn_constructor_args=args,
                                        fn_constructor_kwargs=cpu.actor_kwargs, batch_size=batch_size,
                                        batch_format="pyarrow", **cpu.map_batches_args())
                if recognition is not None:
                    ds = ds.map_batches(RecognizeWorker, fn_constructor_args=recognize,
                                        fn_constructor_kwargs=recognition.actor_kwargs,
                                        batch_size=max(batch_size, 32), batch_format="pyarrow",
                                        **recognition.map_batches_args(initial=1))
                return ds.map_batches(write_run_shards, fn_kwargs={"output_uri": out.uri, "targets": targets,
                                                                   "lease": lease.token},
                                      batch_size=rows_per_shard, batch_format="pyarrow", num_cpus=TASK_CPUS)

            summary = run_listed(out, RUN_MANIFEST, input_groups, lister, build, started, progress,
                                 batch_size)
            summary.notes = notes
            pools = {"cpu": cpu.describe(), "recognition": recognition.describe() if recognition else
                     "the CPU pool's actors, each embedding the batches it prepared (the cluster has no GPUs)"}
            summary.notes = [*summary.notes, *unused_recognition_workers(recognition_workers, recognition,
                                                                         local=False)]
        else:
            pools = {"cpu": "a local process pool (no Ray): each process prepares and embeds its batches",
                     "recognition": "the CPU pool's processes"}
            summary.notes = [*(summary.notes or []), *unused_recognition_workers(recognition_workers, None,
                                                                                 local=True)]
        if progress is not None and hasattr(progress, "close"):
            progress.close()
        require_inputs(summary, dataset_uri)

    groups = [[method_name(m, mode, modes) for m in models] for mode in modes] if fuse and len(models) > 1 else []
    (name, probe, gallery), also = methods[0], methods[1:]
    # a small output is scored here; beyond what a local job may hold, by the distributed reducer
    distributed = on_ray or summary.inputs > local_max_inputs
    try:
        why = {"probe": "an identity's first image is its gallery image and its other images are probes, so an "
                        "identity needs 2 or more images",
               "gallery": "an identity's first image is its gallery image"}
        for side, folder in (("probe", probe), ("gallery", gallery)):
            if not out.any_under(f"{folder}/{SHARD_DIR}"):  # ("no embedding shards under ...": a folder, not why)
                raise NothingToScore(f"nothing to score: no {side} image was embedded ({why[side]}; the summary says "
                                     "how each image ended)")
        # every image of the gallery folder is a gallery image: the listing chose them, an identity's
        # first image in each top-level folder (scoring only the first of those left the others' images
        # out of the report, neither gallery nor probe)
        report = run_score(out.uri_of(probe), out.uri_of(gallery), out.uri_of("report"), name=name,
                           also=[(n, out.uri_of(p), out.uri_of(g)) for n, p, g in also], fuse=groups,
                           distributed=distributed, gallery_per_identity=None,
                           masks=f"the {style} mask style, run seed {seed}")
    except NothingToScore as exc:
        exc.summary = summary  # what happened to each image, for the command to print before the reason
        raise
    return {"run": summary, "augment": summary, "report": report, "targets": [t.folder for t in targets],
            "pools": pools}

