"""The evaluate job: a dataset's own images to a report in one command, under a protocol.

    run_evaluate("/data/c-RMFRD", "out/eval", pairs="AFDB_final_Jeff.csv")            # verification pairs
    run_evaluate("/data/c-RMFRD", "out/eval", lists=("gallery.csv", "probe.csv"))     # identification lists
    run_evaluate("../shared/data/masked_crops/manifest.csv", "out/eval")              # real masked vs unmasked
    run_evaluate("../shared/data/masked_crops/manifest.csv", "out/eval", ["sface", "dlib-resnet"])  # a row each

Every image is embedded once (`jobs.embed.run_embed`, on Ray or the local pool as `executor` says: the
face chosen by `face`, found as `input_kind` says, default `masked`: photos and crops of people in real
masks) into `<output>/embeddings/`, then scored in this process (a protocol is at most tens of thousands of images):

- `pairs`: a pairs file (recog.protocols.read_pairs_file: LFW's pairs.txt with its folds, the seed's
  GBK c-RMFRD CSV, or a plain a,b,label CSV): TAR@FAR, AUC, EER, and k-fold accuracy when it has folds.
- `lists`: the seed's identification lists (gallery, probes; recog.protocols.read_seed_list).
- neither: the masked images are the probes and the unmasked ones the gallery. Which are masked: an
  input manifest's `masked` column, else (a folder, a manifest without it) `masked_rule` on the file names (`seed`: the seed's naming,
  recog.protocols.seed_is_masked; or a regular expression that masked names match).

Every sample counts (recog.metrics): an image without a face is a rejected comparison and a probe never
identified in the headline figures; the figures over the images with a face stand beside them. An image
a protocol names that is not in the dataset at all stops the job, or with `missing="skip"` is left out
and counted. The report (report.json, report.md, roc.png, scores.png, cmc.png) goes to `<output>/report/`.
"""

from __future__ import annotations

import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import numpy as np

from jobs.inputs import (ColumnsEqual, check_folder_input, images_root, is_manifest, output_inside_input,
                         refuse_foreign_output, refuse_output_in_place, root_spellings)
from jobs.storage import local_path, open_parent, open_store, redact
from maskgen.checks import check_flag
from maskgen.decode import DEFAULT_MAX_PIXELS, is_image_name
from maskgen.finder import FinderOptions
from recog.protocols import check_masked_rule, masked_flags


def dataset_keys(input_uri: str, labels: dict | None = None, output_uri: str | None = None) -> set[str]:
    """The keys the embed job gives rows to, without reading an image: an input manifest's paths (its
    `labels`, `manifest_labels`, when they are read already), or a folder's files less what the embed
    job's listing leaves out: the output at `output_uri` where the folder holds it, and mfr's outputs
    left inside it (`jobs.inputs.without_outputs`: settings records, reports)."""
    from jobs.inputs import without_outputs

    if is_manifest(str(input_uri)):
        return set(labels if labels is not None else manifest_labels(input_uri))
    store = open_store(input_uri)
    inside = output_inside_input(store, open_store(output_uri)) if output_uri is not None else None
    entries = [(key, "file") for key in store.list() if not inside or not key.startswith(inside + "/")]
    return {key for key, _ in without_outputs(entries, store)}


def manifest_labels(input_uri: str, encoding: str | None = None, roots: tuple = ()) -> dict:
    """An input manifest's paths, each with its (identity, masked flag or None, why the row is refused
    or ""), as the embed job labels its rows (a repeated path: its first row's); a CSV read as
    `encoding` (`jobs.inputs.manifest_encoding`); `roots`: the images root's spellings
    (`jobs.inputs.root_spellings`)."""
    from jobs.inputs import manifest_items

    store, name = open_parent(input_uri)
    labels = {}
    with store.local_file(name) as path:
        for _, item in manifest_items(path, name, encoding, roots):
            labels.setdefault(item.key, (item.identity, item.masked, item.message if item.status else ""))
    return labels


def complete_names(names, keys) -> dict:
    """{name: key} for each of `names` without an image extension that is the stem of exactly one image key
    in the same folder of `keys` (`chenglong/0_0_chenglong_0042` -> `chenglong/0_0_chenglong_0042.jpg`,
    one row of the seed's `AFDB_gallery_no_mask.csv`). A name two images share stays as it is (and is
    then not in the dataset)."""
    wanted = {n for n in names if not is_image_name(n)}  # (a stem may hold a dot: j.smith_0001)
    if not wanted:
        return {}
    found: dict = {}
    for key in keys:
        stem = str(PurePosixPath(key).with_suffix("")) if is_image_name(key) else None
        if stem in wanted:
            found.setdefault(stem, []).append(key)
    return {name: hits[0] for name, hits in found.items() if len(hits) == 1}


def dataset_key(path: str, images) -> str:
    """A protocol's image path as the dataset's key (a path relative to the images' folder or prefix):
    Windows separators, a leading `./`, and the folder's own absolute path or URI taken off. Such
    spellings were all "not in the dataset"."""
    key = str(path).strip().replace("\\", "/")
    for root in (images.uri.rstrip("/") + "/", "file://" + images.uri.rstrip("/") + "/"):
        if key.startswith(root):
            key = key[len(root):]
    while key.startswith("./"):
        key = key[2:].lstrip("/")
    return key


def refuse_what_skipping_leaves(protocol, id_lists, keys: set, absent: int) -> None:
    """With --missing skip, what is left of the protocol once the images the dataset lacks (`absent`
    of them; `keys`: the dataset's) are left out must still be scored: pairs of both kinds, a gallery
    and probes. Said before anything is embedded (it was said after the whole embedding, as "need
    both genuine (1) and impostor (0) pairs", of a file that held both)."""
    if protocol is not None:
        kept = [label for a, b, label in zip(protocol.a, protocol.b, protocol.labels) if a in keys and b in keys]
        if not kept or all(kept) or not any(kept):
            what = "none" if not kept else f"only {'genuine' if kept[0] else 'impostor'} pairs ({len(kept)})"
            raise ValueError(f"--missing skip leaves {what} of the {len(protocol)} pairs: {absent} image(s) they "
                             "name are not in the dataset (keys are paths relative to the input, e.g. "
                             f"{protocol.a[0]!r}), and verification needs genuine and impostor pairs (nothing "
                             "was embedded)")
    else:
        for side, listed in zip(("gallery", "probe"), id_lists):
            if not any(k in keys for k in listed):
                raise ValueError(f"--missing skip leaves no image of the {side} list: none of its {len(listed)} "
                                 f"images is in the dataset (keys are paths relative to the input, e.g. "
                                 f"{listed[0]!r}) (nothing was embedded)")


class InInput:
    """A shard row filter (`jobs.embed.read_shards`' `where`): the rows `where` selects whose image the
    input holds now (`keys`). A rerun into the same output embeds only what is new, and its shards
    still hold the rows of images deleted or moved since, or of another dataset evaluated into that
    output before: scored with them, a report said "13 probes" of a dataset that has 3."""

    def __init__(self, where, keys):
        self.where, self.keys = where, keys

    def __call__(self, table):
        import pyarrow as pa
        import pyarrow.compute as pc

        return pc.and_(self.where(table), pc.is_in(table.column("key"), value_set=pa.array(sorted(self.keys),
                                                                                            pa.string())))


def relabel(frame, labels: dict | None):
    """Rows labelled as the input labels their images now (`labels`: a manifest's, `manifest_labels`;
    None for a folder, whose keys carry their identity): the shards keep the identity and masked flag
    an image had when it was embedded, and a rerun does not embed it again."""
    if labels is None or not len(frame):
        return frame
    frame = frame.copy()
    # a refused row (an absolute path elsewhere, ...) keeps what its own row says: its label was never read
    frame["identity"] = [own if labels[k][2] else labels[k][0] for k, own in zip(frame.key, frame.identity)]
    frame["masked"] = [own if labels[k][2] or labels[k][1] is None else bool(labels[k][1])
                       for k, own in zip(frame.key, frame.masked)]
    return frame


@contextmanager
def protocol_file(uri: str, option: str = "--pairs", dataset: str | None = None):
    """A protocol file (pairs, identification list) as a local path: an `s3://` one is copied to a
    temporary folder under its own name (its readers tell formats apart by name and content), and
    their errors name the URI, not the copy. A relative local path is looked for in the working
    folder, then in the `dataset`'s folder or prefix (datasets ship their protocols inside: c-RMFRD's
    Protocol_verification/, LFW's pairs.txt); one found in neither is refused naming `option`."""
    from jobs.storage import LocalStore

    uri = str(uri)
    store, name = open_parent(uri)
    if isinstance(store, LocalStore):
        path = local_path(uri)
        looked = [str(path.absolute())]
        if not path.exists() and not path.is_absolute() and dataset and isinstance(open_store(dataset), LocalStore):
            inside = local_path(dataset)
            inside = (inside if inside.is_dir() else inside.parent) / path
            looked.append(str(inside.absolute()))
            path = inside if inside.exists() else path
        elif not path.exists() and not path.is_absolute() and dataset:  # a dataset on S3: under its prefix
            folder = str(dataset).rstrip("/")
            inside = f"{folder.rpartition('/')[0] if is_manifest(folder) else folder}/{path.as_posix()}"
            looked.append(inside)
            inside_store, inside_name = open_parent(inside)
            if inside_store.exists(inside_name):
                uri, store, name = inside, inside_store, inside_name
    if isinstance(store, LocalStore):
        if not path.exists():
            raise ValueError(f"{option} {uri}: no such file (looked for {' and '.join(looked)})")
        if path.is_dir():
            raise ValueError(f"{option} {uri} is a folder: a protocol is a file (pairs, or a list of images)")
        yield path
        return
    data = store.read(name)
    with tempfile.TemporaryDirectory(prefix="mfr-protocol-") as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            yield path
        except ValueError as exc:
            raise ValueError(str(exc).replace(str(path), redact(uri))) from None


def refuse_sides_without_identity(input_uri: str, labels: dict | None, id_lists, marked: dict | None, split) -> None:
    """Before anything is embedded: a gallery or probe side none of whose images has an identity (a
    flat folder of photos, a manifest without identities) has nothing to score, and was refused only
    after every image was embedded. The sides: the lists (gallery, probes), a manifest's masked
    column (`marked`) or the masked rule's `split` (keys, flags)."""
    from jobs.inputs import folder_identity
    from jobs.score import none_with_an_identity

    if id_lists is not None:
        sides = {"gallery": id_lists[0], "probe": id_lists[1]}
    elif marked is not None:
        sides = {"gallery": [k for k, f in marked.items() if not f], "probe": [k for k, f in marked.items() if f]}
    else:
        keys, flags = split
        sides = {"gallery": [k for k, f in zip(keys, flags) if not f], "probe": [k for k, f in zip(keys, flags) if f]}
    for side, side_keys in sides.items():
        if side_keys and not any((labels[k][0] if labels is not None and k in labels else folder_identity(k))
                                 for k in side_keys):
            raise ValueError(f"{none_with_an_identity(side, redact(input_uri), len(side_keys))} (nothing was "
                             "embedded)")


def score_split(rows, emb, failed, probe_keys, gallery_keys, name: str, similarity: str,
                gallery_template: str = "best", missing: str = "error"):
    """MethodResult of the probe images against the gallery images (every gallery image an entry, or
    one mean template per identity), every sample counted."""
    from jobs.score import (NothingToScore, gallery_entries, none_with_an_identity, note_no_identity, score,
                            status_counts, with_identity)
    from recog.report import acquisition_counts

    probe_keys, gallery_keys = set(probe_keys), set(gallery_keys)
    present = set(rows.key) | set(failed.key)
    absent = sorted((probe_keys | gallery_keys) - present)
    if absent and missing == "error":
        raise ValueError(f"{len(absent)} image(s) of the protocol are not in the dataset, e.g. {absent[0]!r}; "
                         "pass missing='skip' (--missing skip) to leave them out")
    rows, emb, failed, unnamed = with_identity(rows, emb, failed)
    is_probe, is_gallery = rows.key.isin(probe_keys).to_numpy(), rows.key.isin(gallery_keys).to_numpy()
    probe_rows, probe_emb = rows[is_probe].reset_index(drop=True), emb[is_probe]
    gallery_rows, gallery_emb = rows[is_gallery].reset_index(drop=True), emb[is_gallery]
    failed_probes = failed[failed.key.isin(probe_keys)].reset_index(drop=True)
    failed_gallery = failed[failed.key.isin(gallery_keys)]
    if not len(probe_rows) or not len(gallery_rows):
        side, why = ("probe", failed_probes) if not len(probe_rows) else ("gallery", failed_gallery)
        unnamed_side = unnamed & (probe_keys if side == "probe" else gallery_keys)
        if unnamed_side and not len(why):
            raise none_with_an_identity(side, "the input", len(unnamed_side))
        raise NothingToScore(f"no {side} image has an embedded face{status_counts(why)}: nothing to score; the rows "
                             "of embeddings/shards say why (images that failed, such as `missing` ones under a "
                             "wrong --images, are done again with --retry-failed)")
    acquisition = acquisition_counts(len(probe_rows), len(failed_probes), len(gallery_rows), len(failed_gallery))
    acquisition["not_in_dataset"] = len(absent)
    note_no_identity(acquisition, len(unnamed & probe_keys), len(unnamed & gallery_keys))
    # the lists name each gallery image: one without a face is an entry that failed to enrol (`mean`: an
    # identity without any face is a template that did)
    failed_gallery = failed_gallery.drop_duplicates("key")
    empty_ids = failed_gallery.identity.astype(str)
    if gallery_template == "mean":
        empty_ids = sorted(set(empty_ids) - set(gallery_rows.identity.astype(str)))
    gallery_rows, gallery_emb = gallery_entries(gallery_rows, gallery_emb, gallery_template, similarity)
    return score(probe_rows, probe_emb, gallery_rows, gallery_emb, name, similarity, failed=failed_probes,
                 acquisition=acquisition, empty_ids=tuple(empty_ids))


def evaluated_models(model, accept_licence: bool) -> list[tuple[str, str, str]]:
    """(model_id, model, name in the report) of each model `mfr evaluate` is asked for: one name or
    path, or a list of them, none given twice (two spellings of one model, a built-in's name and its
    cached file, are one model). Each is loaded here, so a wrong one fails before any image is
    embedded. A row is named by its spec's name, as `mfr score` names it, or, where two models share
    that name (an edited copy of sface beside sface), by the model as given."""
    from jobs.embed import model_identity

    given = [model] if isinstance(model, (str, Path)) else list(model) if isinstance(model, (list, tuple)) else None
    if not given or not all(isinstance(m, (str, Path)) and str(m).strip() for m in given):
        raise ValueError(f"models are names or .onnx paths, at least one, got {model!r}")
    out, seen = [], {}
    for m in given:
        model_id = model_identity(str(m), accept_licence)[0]
        if model_id in seen:
            raise ValueError(f"{m!r} is the model {seen[model_id]!r} given again ({model_id})")
        seen[model_id] = m
        out.append((model_id, str(m)))
    names = [model_id.split("@")[0] for model_id, _ in out]
    return [(model_id, m, name if names.count(name) == 1 else m) for (model_id, m), name in zip(out, names)]


def run_evaluate(input_uri: str, output_uri: str, model: str | list[str] = "sface", *, pairs: str | None = None,
                 lists: tuple[str, str] | None = None, masked_rule: str | None = None, input_kind: str = "masked",
                 face: str = "center", gallery_template: str = "best", missing: str | None = None,
                 accept_licence: bool = False, images_uri: str | None = None, workers: int | None = None,
                 recognition_workers: int | None = None, batch_size: int = 32, crop_mode: str | None = None,
                 second_look: bool | None = None, turned: bool | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, progress=None, title: str | None = None,
                 retry_failed: bool = False, manifest_encoding: str | None = None, executor: str = "auto") -> dict:
    """Embed every image of `input_uri` and score it under the protocol (see the module docstring).
    `model`: one model, or a list of them: each embeds in a pass of its own and is a row of one report.
    Returns {"embed": JobSummary, "result": MethodResult, "report": {kind: URI}, "protocol": name}
    (the first model's), and "embeds" / "results", one per model.
    `retry_failed`: images an earlier run recorded as failed (missing, undecodable, ...) are embedded
    again, as `mfr embed --retry-failed` does. `executor`: where each pass runs, as `run_embed`'s
    (`auto`, `local`, `ray`). `masked_rule` (None: `seed`) and `missing` (None: `error`) given where
    they change nothing (a rule beside a manifest's masked column or a protocol; `skip` without one)
    are said in a note. With no face on one side, NothingToScore carries the embedding job's summary."""
    from jobs.augment import check_counts, check_job_options
    from jobs.embed import read_shards, run_embed
    from jobs.local import check_executor
    from jobs.score import (GALLERY_TEMPLATES, NothingToScore, no_identity_note, publish_report, refuse_foreign_report,
                            score_pairs, unmated_note)
    from recog.protocols import read_pairs_file, read_seed_list
    from recog.report import paired_comparisons, write_report

    check_counts(batch_size=batch_size, workers=workers, recognition_workers=recognition_workers,
                 max_pixels=max_pixels)
    check_executor(executor)  # before the output is made, as every job
    check_job_options(manifest_encoding, progress)
    for option, flag in (("accept_licence", accept_licence), ("retry_failed", retry_failed)):
        check_flag(option, flag)
    if face not in ("center", "largest"):  # as --face: a protocol names images, each one face
        raise ValueError(f"face must be 'center' or 'largest', got {face!r}")
    FinderOptions.for_inputs(input_kind)  # an unknown kind, before the output is made
    models = evaluated_models(model, accept_licence)  # loaded: a wrong one fails before any image
    if lists is not None and (isinstance(lists, (str, Path)) or len(lists) != 2):
        # one file failed at an index, three after every image was embedded, a text letter by letter
        raise ValueError(f"lists are two files, the gallery's and the probes', got {lists!r}")
    if pairs is not None and not str(pairs).strip():  # "" was no protocol: a masked vs unmasked report
        raise ValueError("--pairs names no file (an empty path)")
    if pairs and lists:
        # (one of them often comes from a --config file, which a flag cannot take back: said, as the
        # folder-only options say it)
        raise ValueError("give a pairs file or identification lists, not both (a `pairs` or `lists` key of a "
                         "--config file gives --pairs or --lists too: take it out of the file for the runs that "
                         "use the other)")
    if pairs and gallery_template != "best":
        raise ValueError("--gallery-template applies to identification (--lists, or masked against unmasked "
                         "images), not to --pairs, which compares the images of each pair")
    rule_given, skip_given = masked_rule is not None, missing == "skip"
    masked_rule, missing = ("seed" if masked_rule is None else masked_rule), ("error" if missing is None else missing)
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    if gallery_template not in GALLERY_TEMPLATES:
        raise ValueError(f"gallery template must be one of {GALLERY_TEMPLATES}, got {gallery_template!r}")
    check_masked_rule(masked_rule)  # a bad expression fails before any work
    # protocol files are read before any image: a wrong file fails fast
    images = images_root(input_uri, images_uri)
    protocol = None
    if pairs:
        with protocol_file(pairs, "--pairs", input_uri) as path:
            protocol = read_pairs_file(path)
        if protocol.labels.all() or not protocol.labels.any():
            raise ValueError(f"{redact(pairs)}: all {len(protocol)} pairs are "
                             f"{'genuine' if protocol.labels.all() else 'impostor'}; verification needs both "
                             "genuine and impostor pairs (nothing was embedded)")
    id_lists = None
    if lists:
        id_lists = []
        for uri in lists:
            with protocol_file(uri, "--lists", input_uri) as path:
                id_lists.append(read_seed_list(path))
    repeated_pairs, early_notes = 0, []
    # the dataset's keys first: a protocol's names are checked (a pair of an image with itself, a pair
    # given twice, an image in both lists) as the dataset's keys they name
    labels = manifest_labels(input_uri, manifest_encoding, root_spellings(images, input_uri, images_uri)) \
        if is_manifest(str(input_uri)) else None
    if labels is None:  # "holds no images" was said of a missing folder, of a photo, and beside --images of a list
        check_folder_input(input_uri, images_uri, manifest_encoding)
    keys = dataset_keys(input_uri, labels, output_uri)
    # (a manifest's paths are images whatever their names; a folder's are its image files)
    if not (keys if labels is not None else [k for k in keys if is_image_name(k)]):
        raise ValueError(f"{redact(input_uri)} holds no images (nothing was embedded)")
    if protocol is not None:
        protocol.a, protocol.b = ([dataset_key(k, images) for k in side] for side in (protocol.a, protocol.b))
    id_lists = [[dataset_key(k, images) for k in listed] for listed in id_lists] if id_lists is not None else None
    named = (set(protocol.a) | set(protocol.b)) if protocol is not None else \
        (set(id_lists[0]) | set(id_lists[1])) if id_lists is not None else set()
    # a name given without its extension (the seed's lists have one) is the image of that name, as the
    # seed's scripts match names by what precedes the extension
    completed = complete_names(named - keys, keys)
    if completed:
        if protocol is not None:
            protocol.a, protocol.b = ([completed.get(k, k) for k in side] for side in (protocol.a, protocol.b))
        if id_lists is not None:
            id_lists = [[completed.get(k, k) for k in listed] for listed in id_lists]
        first = sorted(completed)[0]
        early_notes.append(f"{len(completed)} image(s) the protocol names without an extension were taken as the "
                           f"dataset's image of that name, e.g. {first!r} as {completed[first]!r}")
    if protocol is not None:
        given = len(protocol)
        with warnings.catch_warnings():  # said once, in the report's notes (printed too), not twice
            warnings.simplefilter("ignore")
            protocol = protocol.distinct(redact(pairs))
        repeated_pairs = given - len(protocol)
    for path, listed in zip(lists or (), id_lists or ()):
        if not listed:
            raise ValueError(f"{redact(path)}: no image in it (one `identity/file` per line, as the seed's lists)")
    if id_lists is not None:
        both = sorted(set(id_lists[0]) & set(id_lists[1]))
        if both:  # an image compared with itself always matches: every such probe would rank first
            raise ValueError(f"{len(both)} image(s) are in both the gallery list and the probe list, e.g. "
                             f"{both[0]!r}: a probe is never its own gallery image (nothing was embedded)")
    out = open_store(output_uri)
    # the output holds embeddings/ and report/: never among the images themselves
    refuse_output_in_place(images, out, writes=("embeddings", "report"))
    # a folder of the user's files (another dataset, the arguments swapped) took embeddings/ and report/
    # among them; mfr's embeddings/ and report/ are this job's rerun. A project folder whose folder the
    # images are (`mfr evaluate proj/images proj`) is the place for them; one far above them (`~`) is not.
    holds = output_inside_input(out, images)  # ("" is refused above: the output is the images' folder)
    if holds is None or "/" in holds:
        refuse_foreign_output(out, reports=True)
    refuse_foreign_report(open_store(out.uri_of("report")))  # the user's own report/ is not overwritten
    # what the protocol names must be in the dataset, and a masked rule must split it: checked on the
    # dataset's keys before anything is embedded (a protocol is at most tens of thousands of images)
    needed = (set(protocol.a) | set(protocol.b)) if protocol is not None else \
        (set(id_lists[0]) | set(id_lists[1])) if id_lists is not None else set()
    # a manifest says which images are masked in its `masked` column; without one, the file names do
    marked = {key: masked for key, (_, masked, refused) in labels.items() if not refused} \
        if labels is not None and not needed else {}
    by_column = any(flag is not None for flag in marked.values())
    refused = [(key, why) for key, (_, _, why) in (labels or {}).items() if why]
    # rows refused (an absolute path, ...) are never embedded: said beside a split they leave one-sided
    refused_said = (f"; {len(refused)} row(s) of the manifest are refused, e.g. {refused[0][1]}" if refused else "")
    if by_column:
        blank = sorted(key for key, flag in marked.items() if flag is None)
        if blank:  # neither masked nor unmasked: read as unmasked in a fresh output, as embedded in an old one
            raise ValueError(f"the manifest's masked column is blank for {len(blank)} image(s), e.g. {blank[0]!r}: "
                             "give every row 1 or 0 (nothing was embedded)")
    absent = sorted(needed - keys)
    if absent and missing == "skip":
        refuse_what_skipping_leaves(protocol, id_lists, keys, len(absent))
        absent = []
    if absent:
        raise ValueError(f"{len(absent)} image(s) of the protocol are not in the dataset, e.g. {absent[0]!r}; "
                         "--missing skip leaves them out (nothing was embedded)")
    if by_column:
        flags = np.array([bool(flag) for flag in marked.values()])
        if not flags.any() or flags.all():
            raise ValueError("need masked and unmasked images: the manifest's masked column marks none (or "
                             f"all) of them{refused_said} (nothing was embedded)")
    elif not needed:
        flags = masked_flags(sorted(k for k in keys if is_image_name(k)), masked_rule)
        if not flags.any() or flags.all():
            where = "the manifest has no masked column and " if marked else ""
            if refused and not marked:  # every row refused: the rows, not the rule, are what to mend
                raise ValueError(f"no image to evaluate: every row of the manifest is refused, e.g. "
                                 f"{refused[0][1]} (nothing was embedded)")
            raise ValueError(f"need masked and unmasked images: {where}the masked rule '{masked_rule}' matches "
                             f"none (or all) of the file names; give --masked-rule{refused_said} "
                             "(nothing was embedded)")
    if protocol is None:
        refuse_sides_without_identity(input_uri, labels, id_lists, marked if by_column else None,
                                      None if needed or by_column else (sorted(k for k in keys if is_image_name(k)),
                                                                        flags))
    out.check_writable()
    embeddings = out.uri_of("embeddings")
    # the rows' masked column says what the report splits by: a manifest's column, else the masked rule
    # (a folder's rows all read false); a protocol file names its images, no rule
    rule = masked_rule if not needed and not by_column else None
    if rule_given and rule is None:  # (taken without a word, as if it chose the probes)
        early_notes.append("--masked-rule is not used: " + ("the protocol names the images each side holds"
                                                           if needed else "the manifest's masked column says which "
                                                           "images are masked"))
    if skip_given and not needed:
        early_notes.append("--missing skip changes nothing here: only a protocol (--pairs, --lists) names images "
                           "that may not be in the dataset")
    summaries = []
    for i, (_, model, _) in enumerate(models):
        # each model after the first takes the faces the first found (it detects nothing again)
        summaries.append(run_embed(input_uri, embeddings, model, masked=False, masked_rule=rule,
                                   faces_of=models[0][0] if i else None, output_root=out.uri,
                                   accept_licence=accept_licence, face=face, finder_kind=input_kind,
                                   crop_mode=crop_mode, second_look=second_look, turned=turned, images_uri=images_uri,
                                   manifest_encoding=manifest_encoding, workers=workers,
                                   recognition_workers=recognition_workers, batch_size=batch_size,
                                   max_pixels=max_pixels, progress=progress, retry_failed=retry_failed,
                                   executor=executor))
        if getattr(progress, "close", None):  # a bar per model's pass
            progress.close()
    embeds = dict(zip((m for _, m, _ in models), summaries))
    try:
        results = []
        for model_id, _, name in models:
            # this model's rows only: an output evaluated with another model before holds its shards too
            ours = ColumnsEqual(model_id=model_id, mode="plain")
            if protocol is not None:
                result = score_pairs([embeddings], protocol, name, missing=missing, where=InInput(ours, keys))
                skipped = (result.verification or {}).get("pairs_skipped") or 0
                kind, described = "pairs", (f"{len(protocol)} pairs of {redact(pairs)}" if not skipped else
                                            f"{len(protocol) - skipped} of the {len(protocol)} pairs of "
                                            f"{redact(pairs)} (--missing skip: the rest name images not in the "
                                            "dataset)")
            else:
                rows, emb, failed = read_shards(embeddings, with_failures=True, where=InInput(ours, keys))
                rows, failed = relabel(rows, labels), relabel(failed, labels)
                similarity = str(rows.similarity.iloc[0]) if len(rows) else "cosine"
                if id_lists is not None:
                    gallery_keys, probe_keys = id_lists
                    kind, described = "lists", f"probes of {redact(lists[1])} against the gallery of {redact(lists[0])}"
                else:
                    embedded = np.concatenate([rows.key.to_numpy(), failed.key.to_numpy()]).astype(str)
                    given = np.concatenate([rows.masked.to_numpy(), failed.masked.to_numpy()])
                    flags = given.astype(bool) if by_column else masked_flags(embedded, masked_rule)
                    probe_keys, gallery_keys = set(embedded[flags]), set(embedded[~flags])
                    if not probe_keys or not gallery_keys:
                        raise ValueError("need masked and unmasked images: " + (
                            "the manifest's masked column marks none (or all) of them" if by_column else
                            f"the masked rule '{masked_rule}' matches none (or all) of the file names; give "
                            "--masked-rule"))
                    kind = "masked-split"
                    described = ("masked images (the manifest's masked column)" if by_column else
                                 f"masked images (file names, rule '{masked_rule}')") + " against the unmasked ones"
                result = score_split(rows, emb, failed, probe_keys, gallery_keys, name, similarity,
                                     gallery_template, missing)
            results.append(result)
        result = results[0]
        title = title or f"Evaluation: {described}"
        notes = early_notes + list(dict.fromkeys(n for r in results for n in (unmated_note(r), no_identity_note(r))
                                                 if n))
        if repeated_pairs:
            notes.append(f"{repeated_pairs} pair(s) of {redact(pairs)} given again (either way round) were counted "
                         "once.")
        paired = paired_comparisons(results)  # once: for the report and the command's summary
        with tempfile.TemporaryDirectory(prefix="mfr-evaluate-") as tmp:
            template = {"best": "every gallery image an entry (an identity scores as its best image)",
                        "mean": "one mean template per identity"}[gallery_template] if kind != "pairs" else None
            paths = write_report(results, Path(tmp), title, protocol=f"{described}" + (f"; gallery: {template}"
                                                                                         if template else ""),
                                 paired=paired, extra={
                "protocol": kind, "described": described, "input": redact(input_uri),
                "model": models[0][1] if len(models) == 1 else [m for _, m, _ in models],
                # each row's model id by the row's name, as in `mfr score`'s reports
                "model_id": models[0][0], **({"model_ids": {name: i for i, _, name in models}} if len(models) > 1
                                             else {}),
                "face": face, "input_kind": input_kind, "gallery_template": gallery_template,
                **({"notes": notes} if notes else {})})
            written = publish_report(out, paths, "report")
        return {"embed": summaries[0], "embeds": embeds, "result": result, "results": results, "paired": paired,
                "report": written, "protocol": kind, "notes": notes}
    except NothingToScore as exc:
        # what happened to each image, for the command to print first: each model's pass
        exc.summary, exc.summaries = summaries[0], embeds
        raise
