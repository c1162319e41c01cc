"""The score job: a reducer that reads embedding shards and writes the evaluation report beside them.

Split: per identity (the dataset's folders), the first `gallery_per_identity` images in key order
form the unmasked gallery and the masked versions of the others are the probes, so no probe is ever
compared with its own unmasked photo. Verification on every probe x gallery pair (or, past
`max_pairs`, every genuine pair and a seeded sample of impostors per probe); identification of each
masked probe against the gallery images. Writes `report.json`, `report.md`, `roc.png`, `scores.png` and `cmc.png`
under the output URI.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jobs.embed import SHARD_DIR, read_shards
from jobs.inputs import REPORT_FILES
from jobs.storage import LocalStore, open_store, redact
from maskgen.checks import check_flag, is_whole
from recog import metrics as M
from recog.matching import ZNormUnmeasurable
from recog.report import (SCORE_UNITS, TABLE_FPIRS, MethodResult, ProbeOutcomes, acquisition_counts, evaluate,
                          paired_comparisons, write_report)


class NothingToScore(ValueError):
    """One side has no embedded face (every image failed, or had no face masked): no figure can be
    computed. `mfr run` attaches its job summary (`summary`), so the command still says what happened
    to each image before it says why there is no report; `mfr evaluate` each model's (`summaries`)."""

    summary = None
    summaries = None


def status_counts(failed=None) -> str:
    """" (5 missing, 2 no_face)": how many rows of `failed` (rows with a `status`) have each status;
    empty when there are none."""
    if failed is None or not len(failed):
        return ""
    return " (" + ", ".join(f"{n} {status}" for status, n in failed.status.value_counts().items()) + ")"


def nothing_to_score(side: str, uri: str, failed=None) -> NothingToScore:
    """The error for a side (`probe` or `gallery`) with no embedded face, with the statuses of its
    rows when they were read (`failed`: rows with a `status`)."""
    return NothingToScore(f"nothing to score: no {side} image under {uri} has an embedded face"
                          f"{status_counts(failed)}; its shards' status column says why")


def none_with_an_identity(side: str, uri: str, count: int) -> NothingToScore:
    """The error for a side whose only samples have no identity (`with_identity`): "no embedded face"
    said that of images whose status was ok."""
    return NothingToScore(f"nothing to score: the {count} {side} image(s) under {uri} have no identity (a folder "
                          "input's identity is an image's parent folder's name, and these lie at its top, or a "
                          "manifest's identity cell is empty): put them in a folder per person")


def no_probe_left(uri: str, gallery_per_identity: int | None) -> NothingToScore:
    """The error when every probe image with a face is one of the gallery's images (an identity's
    first `gallery_per_identity`), which never count as probes: it is the dataset, not the faces."""
    if gallery_per_identity is None:  # a gallery chosen when the input was listed (mfr run)
        return NothingToScore(f"nothing to score: every image under {uri} with an embedded face is a gallery image")
    return NothingToScore(f"nothing to score: every image under {uri} with an embedded face is one of the gallery's "
                          f"images (the first {gallery_per_identity} of each identity, --gallery-per-identity), "
                          f"which are never probes; an identity needs more than {gallery_per_identity} image(s) "
                          "to have a probe")


def score(probe_rows, probe_emb, gallery_rows, gallery_emb, name: str, similarity: str = "cosine",
          max_pairs: int = 2_000_000, seed: int = 0, failed=None, acquisition: dict | None = None,
          empty_ids=()):
    """MethodResult for masked probes against an unmasked gallery (pure: arrays in, figures out).
    `failed` (rows with `identity`: probe images in which no face was found) and `empty_ids` (the
    identity of each gallery entry that failed to enrol, `unenrolled_entries`) count as every sample
    counts (recog.metrics): the headline figures include them, `acquired_only` leaves them out."""
    p_ids = probe_rows.identity.to_numpy().astype(str)
    g_ids = gallery_rows.identity.to_numpy().astype(str)
    if len(p_ids) == 0 or len(g_ids) == 0:
        raise NothingToScore("need masked probes and unmasked gallery embeddings to score")
    pairs = PairSampler(len(p_ids), len(g_ids), max_pairs, seed)
    for i in range(0, len(p_ids), 256):
        pairs.add(M.similarity_matrix(probe_emb[i:i + 256], gallery_emb, similarity),
                  p_ids[i:i + 256, None] == g_ids[None, :])
    scores, labels = pairs.result()
    keyed = {"key", "face_index"} <= set(probe_rows.columns) and (failed is None or "key" in failed.columns)
    return method_result(name, scores, labels, p_ids, g_ids, probe_emb, gallery_emb,
                         similarity, failed_ids=None if failed is None else failed.identity.to_numpy().astype(str),
                         impostors_per_probe=pairs.per_probe, acquisition=acquisition, empty_ids=empty_ids,
                         probe_keys=(image_hashes(probe_rows.key), probe_rows.face_index) if keyed else None,
                         failed_keys=None if failed is None or not keyed else image_hashes(failed.key))


def check_max_pairs(max_pairs) -> None:
    """`max_pairs` (`--max-pairs`): a whole number of comparisons, at least 1. 0 or -7 were taken, and
    sampled one impostor per probe, so the figures changed without a word."""
    if not is_whole(max_pairs) or max_pairs < 1:
        raise ValueError(f"max_pairs must be a whole number of at least 1, got {max_pairs!r}")


class PairSampler:
    """The verification pairs of probes against a gallery, block by block: every genuine pair, and every
    impostor pair or, past `max_pairs` comparisons in all, a seeded sample of `per_probe` per probe (as
    many as the distributed reducer keeps; its sample is seeded per probe, so its figures differ)."""

    def __init__(self, n_probes: int, n_gallery: int, max_pairs: int, seed: int):
        check_max_pairs(max_pairs)
        sampled = n_probes * n_gallery > max_pairs
        self.per_probe = max(1, max_pairs // max(1, n_probes) - 1) if sampled else None
        self.rng = np.random.default_rng(seed)
        self.scores, self.labels = [], []

    def add(self, sim, same) -> None:
        """A block's probe x gallery scores `sim` and whether each pair is genuine (`same`)."""
        for r in range(sim.shape[0]):
            gen = np.nonzero(same[r])[0]
            imp = np.nonzero(~same[r])[0]
            if self.per_probe is not None and len(imp) > self.per_probe:
                imp = self.rng.choice(imp, self.per_probe, replace=False)
            self.scores += [sim[r, gen], sim[r, imp]]
            self.labels += [np.ones(len(gen), np.int8), np.zeros(len(imp), np.int8)]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.scores), np.concatenate(self.labels)


def method_result(name: str, scores, labels, p_ids, g_ids, probes, gallery, similarity: str = "cosine",
                  failed_ids=None, impostors_per_probe: int | None = None, acquisition: dict | None = None,
                  fused: bool = False, empty_ids=(), probe_keys=None, failed_keys=None):
    """Verification from the pair scores (when there are both genuine and impostor pairs) and
    identification of the probes against the gallery: embeddings, or with `gallery=None` a ready
    probe x gallery score matrix in `probes`. With `acquisition` (recog.report.acquisition_counts), the
    probes of `failed_ids` (no face) are counted in the headline figures and the figures over the
    acquired probes alone are kept beside them (`acquired_only`); so are the gallery entries of
    `empty_ids` (failures to enrol)."""
    enrolled = np.concatenate([np.asarray(g_ids, dtype=str), np.asarray(empty_ids, dtype=str)])
    stats = M.identification_stats(probes, gallery, p_ids, g_ids, similarity,
                                   keep_nonmated=seed_fpir_pool(int(np.isin(p_ids, enrolled).sum()), failed_ids,
                                                                enrolled))
    return counted_result(name, scores, labels, stats, g_ids, failed_ids, impostors_per_probe, acquisition,
                          unit="fused" if fused else similarity, empty_ids=empty_ids,
                          empty_mates=M.mates_per_probe(np.asarray(p_ids, dtype=str), np.asarray(empty_ids, dtype=str)),
                          probe_keys=probe_keys, failed_keys=failed_keys)


def seed_fpir_pool(mated_probes: int, failed_ids=None, g_ids=()) -> int:
    """How many of the largest non-mated scores the seed's FPIR reading needs (`recog.report.evaluate`:
    the ceil(n x f)-th at the table's largest FPIR f, 0.1, n the mated probes): the `mated_probes` with
    a face and the probes in which none was found (`failed_ids`, their identities) whose identity is in
    the gallery (`g_ids`), or the headline's 0.1 column would want a score beyond the kept ones and be
    left out."""
    if failed_ids is not None and len(failed_ids):
        mated_probes += int(np.isin(np.asarray(failed_ids, dtype=str), np.asarray(g_ids, dtype=str)).sum())
    return max(1, int(np.ceil(mated_probes * max(TABLE_FPIRS))))


def image_hashes(keys) -> np.ndarray:
    """64-bit hashes of image keys (pandas' SipHash, the same in every process), for pairing probes across
    methods (recog.report.ProbeOutcomes) without holding the keys."""
    import pandas as pd

    return pd.util.hash_array(np.asarray(keys, dtype=object).astype(str).astype(object))


def probe_outcomes(stats, probe_keys, failed_keys=None) -> ProbeOutcomes | None:
    """ProbeOutcomes of the stats' probes: `probe_keys` (image hashes, face indexes) of the acquired ones in
    their order, then `failed_keys` (image hashes) of those appended for want of a face
    (recog.metrics.with_failures_to_acquire); None where the keys are not known."""
    if probe_keys is None:
        return None
    images, faces = (np.asarray(x) for x in probe_keys)
    failed = np.asarray([] if failed_keys is None else failed_keys, dtype=np.uint64)
    images = np.concatenate([images.astype(np.uint64), failed])
    faces = np.concatenate([faces.astype(np.int64), np.full(len(failed), -1, np.int64)])
    if len(images) != len(stats.rank):
        return None  # (a caller's keys that do not cover the probes: no pairing rather than a wrong one)
    return ProbeOutcomes(images, faces, np.asarray(stats.mated, bool), np.asarray(stats.rank))


def counted_result(name: str, scores, labels, stats, g_ids, failed_ids=None, impostors_per_probe=None,
                   acquisition: dict | None = None, unit: str = "cosine", empty_ids=(), empty_mates=None,
                   probe_keys=None, failed_keys=None):
    """The MethodResult of acquired probes' pair scores and identification stats, every sample counted
    when `acquisition` is given (shared by the single-process and the distributed reducer): probes
    without a face (`failed_ids`, their identities) and gallery entries that failed to enrol
    (`empty_ids`, their identities; `empty_mates`, per acquired probe, how many are of its identity).
    `unit`: the model's similarity, or `fused` (`recog.report.SCORE_UNITS`). `probe_keys` and `failed_keys`:
    the probes' images and faces, for paired comparisons (`probe_outcomes`)."""
    def result(s, lab, st, floor=None):
        has_both = lab.any() and not lab.all()
        out = evaluate(name, s if has_both else None, lab if has_both else None, stats=st, floor=floor)
        out.score = SCORE_UNITS[unit]
        if impostors_per_probe is not None and out.verification:  # the report says the impostors are a sample
            out.verification["impostors_sampled_per_probe"] = int(impostors_per_probe)
        return out

    only = result(scores, labels, stats)
    if acquisition is None:
        only.outcomes = probe_outcomes(stats, probe_keys)
        return only
    failed_ids = np.asarray([] if failed_ids is None else failed_ids, dtype=str)
    empty_ids = np.asarray(empty_ids, dtype=str).reshape(-1)
    floor = M.rejected_score(scores)  # one score for every comparison a failure leaves without one
    all_scores, all_labels, all_stats = M.with_failures_to_enrol(
        scores, labels, stats, np.zeros(len(stats.mated), np.int64) if empty_mates is None else empty_mates,
        len(empty_ids), impostors_per_probe, floor)
    all_scores, all_labels, all_stats = M.with_failures_to_acquire(
        all_scores, all_labels, all_stats, failed_ids, np.concatenate([np.asarray(g_ids, dtype=str), empty_ids]),
        impostors_per_probe, floor)
    headline = result(all_scores, all_labels, all_stats, floor)
    headline.acquisition, headline.acquired_only = acquisition, only
    headline.outcomes = probe_outcomes(all_stats, probe_keys, failed_keys)
    unenrolled = int((all_stats.mated[:len(stats.mated)] & ~stats.mated).sum()
                     + np.isin(failed_ids, np.setdiff1d(empty_ids, np.asarray(g_ids, dtype=str))).sum())
    if unenrolled and headline.identification is not None:
        headline.identification["unenrolled_probes"] = unenrolled
    return headline


def split_gallery(gallery_rows, gallery_per_identity: int | None = 1) -> set[str]:
    """Keys of the gallery images: the first `gallery_per_identity` per identity, in key order; None:
    every image of the gallery side (a folder that holds only gallery images: `mfr run` chose them
    when it listed the input, an identity's first image in each top-level folder)."""
    if gallery_per_identity is None:
        return set(gallery_rows.key.astype(str))
    if gallery_per_identity < 1:
        raise ValueError("gallery_per_identity must be at least 1")
    chosen = set()
    for _, keys in gallery_rows.groupby("identity")["key"]:
        chosen.update(sorted(set(keys))[:gallery_per_identity])
    return chosen


def enrolment_tried(faces, failed, chosen: set, gallery_per_identity: int | None = 1):
    """The gallery side's images that enrolment went through, as rows (key, identity, face: whether it
    had one; a row per face): each identity's images in key order up to its `gallery_per_identity`-th
    image with a face (`chosen`, `split_gallery`), or all of them when it has fewer. `faces`: rows (key, identity)
    of faces with an embedding; `failed`: rows (key, identity) of images without one. The other
    images of a gallery folder are only the unmasked side of probes, never tried for the gallery:
    counting them made the gallery's failure-to-acquire rate one of the whole dataset (21 samples
    beside 3 gallery entries). `gallery_per_identity` None: every image (`split_gallery`)."""
    import pandas as pd

    seen = pd.concat([pd.DataFrame({"key": faces.key.astype(str), "identity": faces.identity.astype(str),
                                    "face": True}),
                      pd.DataFrame({"key": failed.key.astype(str), "identity": failed.identity.astype(str),
                                    "face": False})], ignore_index=True)
    if not len(seen):
        return seen[["key", "identity", "face"]]
    seen = seen.sort_values(["identity", "key"], kind="stable")
    seen["chosen"] = seen.key.isin(chosen) & seen.face
    # images of an identity from its first up to its last chosen one; identities short of
    # `gallery_per_identity` chosen images went through all of theirs
    after_last = seen[::-1].groupby("identity", sort=False).chosen.cumsum()[::-1] == 0
    if gallery_per_identity is None:
        return seen[["key", "identity", "face"]]
    # chosen images, not rows: an image of two faces (--face all) fills one place, and counted twice it
    # left the identity's next image (without a face) untried and its failure to enrol uncounted
    images = seen.key.where(seen.chosen).groupby(seen.identity).transform("nunique")
    short = images < gallery_per_identity
    return seen[~after_last | short][["key", "identity", "face"]]


def tried_counts(tried) -> tuple[int, int]:
    """(faces, images without a face) among the images enrolment went through (`enrolment_tried`)."""
    return int(tried.face.sum()), int(tried.key[~tried.face].nunique())


def fused_enrolment(tried_per_model, faces_per_model) -> tuple[int, int]:
    """(images acquired, images without a face) of a fusion's gallery: every image some model's enrolment
    went through (`enrolment_tried` of each), acquired when every model found a face in it (`faces_per_model`:
    the keys of each model's gallery images with a face, tried or not: a model that enrolled an earlier
    image never tried a later one); the same whatever the models' order (the first model's counts were
    the fusion's). Images, where one model's counts are faces: an image of two faces counts once."""
    images = set().union(*(set(t.key) for t in tried_per_model))
    acquired = {k for k in images if all(k in faces for faces in faces_per_model)}
    return len(acquired), len(images - acquired)


def unenrolled_entries(tried, chosen: set, gallery_per_identity: int | None = 1, template: str = "best") -> tuple:
    """The identity of each gallery entry that failed to enrol, on the gallery side of a split: per
    identity, the gallery places that no image with a face filled (`split_gallery` takes its next image
    with a face), min(images enrolment went through, `gallery_per_identity`) less the images chosen
    (`best`: one empty entry each, as `mfr evaluate --lists` counts each listed image without a face),
    or one empty template for an identity with none chosen (`mean`). `tried`: `enrolment_tried`'s rows."""
    images = tried.assign(chosen=tried.key.isin(chosen)).drop_duplicates("key")
    per = images.groupby(images.identity.astype(str)).agg(images=("key", "size"), chosen=("chosen", "sum"))
    places = per.images if gallery_per_identity is None else np.minimum(per.images, gallery_per_identity)
    empty = (per.chosen == 0).astype(int) if template == "mean" else (places - per.chosen).clip(lower=0)
    return tuple(np.repeat(per.index.to_numpy().astype(str), empty.to_numpy().astype(int)).tolist())


def fused_empty_ids(per_model, with_a_common_entry) -> tuple:
    """Failures to enrol of a fusion: an identity some model enrolled or tried (`per_model`: each model's
    identity per gallery entry, its empty ones included) that has no entry every model holds
    (`with_a_common_entry`) is an identity none of whose entries has a fused template, as the probe an
    image some model could not embed is a failure: as many empty entries as the most any model gave it.
    The same whatever the models' order."""
    import collections

    counts = [collections.Counter(np.asarray(ids, dtype=str).tolist()) for ids in per_model]
    lacking = sorted(set().union(*counts) - set(with_a_common_entry))
    return tuple(i for i in lacking for _ in range(max(c[i] for c in counts)))


# what a report holds, in the fingerprint a rerun trusts: raised when a report gains figures (2: each
# paired comparison's Holm-adjusted p), so a report an earlier version wrote is made again once, not
# found up to date and printed without them
REPORT_FORMAT = 2


def inputs_fingerprint(uris: list[str], settings: dict) -> str:
    """Names the shards a report was made from and its settings. Each shard by its name and its
    version (size and modification time, or S3's ETag): a shard's name comes from its input rows, so
    the shard `--retry-failed` writes for an image that failed has its predecessor's name."""
    parts = [json.dumps(settings, sort_keys=True, default=str)]
    for uri in uris:
        store = open_store(uri)
        parts += sorted(f"{k} {tag}" for k, tag in store.list_versions(SHARD_DIR) if k.endswith(".parquet"))
        parts.append("--")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@dataclass
class Split:
    """Masked probes and the unmasked gallery of one model and matching mode, ready to score."""

    probe_rows: object
    probe_emb: np.ndarray
    gallery_rows: object
    gallery_emb: np.ndarray
    model_id: str
    similarity: str
    failed: object = None        # probe images without a face (key, identity, status)
    acquisition: dict | None = None
    gallery_images: frozenset = frozenset()  # the keys of the gallery's images (`split_gallery`): never probes
    empty_ids: tuple = ()        # the identity of each gallery entry that failed to enrol (`unenrolled_entries`)
    gallery_tried: object = None  # the images enrolment went through (`enrolment_tried`), for a fusion's counts
    gallery_faces: frozenset = frozenset()  # the keys of the gallery side's images with a face (`as_fused`)
    uris: tuple = ()             # (probe URI, gallery URI) it was loaded from
    method: str | None = None    # the method name it was loaded with (`load_split`'s `name`)

    def matrix(self, probe_order, gallery_order) -> np.ndarray:
        """The probe x gallery score matrix (higher: more alike) of the probes and gallery entries at
        these positions, in this order."""
        return M.similarity_matrix(self.probe_emb[probe_order], self.gallery_emb[gallery_order], self.similarity)


GALLERY_TEMPLATES = ("best", "mean")


def gallery_entries(rows, emb, template: str = "best", similarity: str = "cosine"):
    """(rows, embeddings) of the gallery as scored: `best`, every gallery image its own entry (an
    identity scores as its best image); `mean`, one template per identity (cosine: the normalised
    mean of its normalised embeddings, recog.metrics.identity_templates; euclidean: the plain mean)."""
    import pandas as pd

    if template not in GALLERY_TEMPLATES:
        raise ValueError(f"gallery template must be one of {GALLERY_TEMPLATES}, got {template!r}")
    if template == "best" or not len(rows):
        return rows, emb
    ids = rows.identity.to_numpy().astype(str)
    if similarity == "cosine":
        templates, identities = M.identity_templates(emb, ids)
    else:
        identities, inverse = np.unique(ids, return_inverse=True)
        templates = np.zeros((len(identities), emb.shape[1]), np.float64)
        np.add.at(templates, inverse, emb)
        templates /= np.bincount(inverse)[:, None]
    first = rows.drop_duplicates("identity").set_index("identity").loc[identities].reset_index()
    first["key"] = ["template:" + i for i in identities]
    return pd.DataFrame(first), np.asarray(templates, np.float32)


def method_rows(name: str | None, uri: str):
    """A row filter (`jobs.embed.read_shards`' `where`) for a shard folder that may hold several models'
    and modes' shards (`mfr embed` of each into one output): all rows when it holds one; else the rows
    of the method `name` names, "MODEL" or "MODEL MODE" (as `mfr run` names its rows; a model's
    `plain` rows when it has several modes and none is named)."""
    import pyarrow.compute as pc

    def where(table):
        held = set(zip(table.column("model_id").to_pylist(), table.column("mode").to_pylist()))
        if len(held) <= 1:
            if held and name:
                choose_method(held, name, uri)  # a name of another model or mode is refused, not a label
            return pc.is_valid(table.column("key"))
        model_id, mode = choose_method(held, name, uri)
        return pc.and_(pc.equal(table.column("model_id"), model_id), pc.equal(table.column("mode"), mode))

    return where


def choose_method(held: set, name: str | None, uri: str) -> tuple[str, str]:
    """The (model_id, mode) of a shard folder's `held` pairs that `name` ("MODEL" or "MODEL MODE")
    names: the only one held, or the one named (a model's `plain` rows when it has several modes and
    none is named). Refused when it holds several and `name` names none of them, or none; and when it
    holds one model's rows in one mode and `name` names another built-in model or model_id, or the
    held model in another mode (any other name is a label: a report row named after a model or mode
    that was never run read as its figures). `mfr run`'s masked-gallery method scores the plain
    probes, so a masked-gallery name over plain rows is the method's own."""
    from recog.matching import MODES
    from recog.zoo import model_names

    held = sorted(held)
    if len(held) == 1:
        (model_id, held_mode), = held
        model, _, mode = (name or "").strip().partition(" ")
        mode, ours = mode.strip(), {model_id.lower(), model_id.split("@")[0].lower()}
        # a model_id is "<name>@sha256:<hex>[+spec:...]": a path or label with an "@" is neither
        other_model = (model.lower() in model_names() or "@sha256:" in model) and model.lower() not in ours
        other_mode = (model.lower() in ours and mode in MODES and mode != held_mode
                      and (mode, held_mode) != ("masked-gallery", "plain"))
        if other_model or other_mode:
            raise ValueError(f"{redact(uri)} holds the rows of {model_id.split('@')[0]} {held_mode} only: --name "
                             f"{name!r} names another {'model' if other_model else 'mode'}; name the method by "
                             "what the folder holds, or with a label that names no model (e.g. --name 'baseline')")
        return held[0]
    short = [f"{m.split('@')[0]} {mode}" for m, mode in held]
    # one name with two model_ids: a rerun after the spec or weights changed embedded again beside the
    # old rows; only the full model_id tells them apart, so the list shows it
    listed = ", ".join(f"{m} {mode}" if short.count(text) > 1 else text for (m, mode), text in zip(held, short))
    if not held:
        raise ValueError(f"{redact(uri)} holds no embedding rows")
    if not name:
        raise ValueError(f"{redact(uri)} holds the shards of several models or modes ({listed}): choose one "
                         "with --name MODEL or --name 'MODEL MODE' (and another with --compare NAME PROBES "
                         "GALLERY)")
    model, _, mode = name.strip().partition(" ")
    chosen = [(m, md) for m, md in held if model in (m, m.split("@")[0]) and mode.strip() in ("", md)]
    if len(chosen) > 1:
        chosen = [c for c in chosen if c[1] == "plain"] or chosen
    if len(chosen) != 1:
        raise ValueError(f"{redact(uri)} holds no single model and mode named {name!r} ({listed}): name one as "
                         "MODEL or 'MODEL MODE' (MODEL: a name, or a model_id as listed)")
    return chosen[0]


def as_fused(faces, failed, shared_keys):
    """A model's gallery rows (key, identity, ...) as a fusion sees them: only the images every fused model
    found a face in (`shared_keys`; None: no fusion) have one, its other faces count with its images
    without one. Every model then chooses the same gallery images (`split_gallery`): chosen apart, one
    model's second image beside another's first left the identity without a fused entry."""
    import pandas as pd

    if shared_keys is None:
        return faces, failed
    shared = faces.key.astype(str).isin(shared_keys).to_numpy()
    lost = faces[~shared][["key", "identity"]].drop_duplicates("key").assign(status="no_face")
    return faces[shared], pd.concat([failed, lost], ignore_index=True)


def has_identity(identity) -> np.ndarray:
    """Which rows have an identity: an image at the top of a folder input (whose identity is its
    parent folder's name) or a manifest row without one has "", which scoring took for one person."""
    return (np.asarray(identity).astype(str) != "")


def with_identity(rows, emb, failed) -> tuple:
    """(rows, embeddings, failed rows) less those without an identity (`has_identity`), and the keys
    of the images that left out; `emb` None: labels alone (the distributed reducer's gallery index)."""
    keep, keep_failed = has_identity(rows.identity), has_identity(failed.identity)
    left_out = set(rows.key[~keep].astype(str)) | set(failed.key[~keep_failed].astype(str))
    return (rows[keep].reset_index(drop=True), None if emb is None else emb[keep],
            failed[keep_failed].reset_index(drop=True), left_out)


def note_no_identity(acquisition: dict, probes: int, gallery: int) -> dict:
    """`acquisition` with the images left out for want of an identity (`with_identity`), when any were."""
    if probes or gallery:
        acquisition["no_identity"] = {"probe": int(probes), "gallery": int(gallery)}
    return acquisition


def no_identity_note(result) -> str | None:
    """A note for a report whose inputs held images without an identity (`note_no_identity`)."""
    left = (result.acquisition or {}).get("no_identity")
    if not left:
        return None
    return (f"{left['probe']} probe and {left['gallery']} gallery image(s) have no identity and were left out: "
            "a folder input's identity is an image's parent folder's name, and these lie at its top (or a "
            "manifest's identity cell is empty); put them in a folder per person (`mfr run` marks such images "
            "`no_identity`).")


def spread_identities_note(gallery_uri: str) -> str | None:
    """A note when an identity's gallery images lie under several top-level folders of the input (a
    gallery chosen per top-level folder, `mfr run`'s): right for `train/alice/`, `test/alice/`, but
    the sign of a `person/session/img.jpg` layout, whose identity (the parent folder's name) is a
    session shared by every person. Reads the gallery's keys and identities only."""
    import pandas as pd

    from jobs.augment import read_parquet_dir
    from jobs.embed import SHARD_DIR

    tables = read_parquet_dir(open_store(gallery_uri), SHARD_DIR, columns=["key", "identity"])
    if not tables:
        return None
    rows = pd.concat([t.to_pandas() for t in tables], ignore_index=True).drop_duplicates("key")
    rows = rows[rows.key.str.contains("/", regex=False)]
    spread = rows.assign(top=rows.key.str.split("/", n=1).str[0]).groupby("identity").top.agg(sorted)
    spread = spread[spread.map(len) > 1]
    if spread.empty:
        return None
    identity, tops = spread.index[0], spread.iloc[0]
    more = f" (and {len(spread) - 1} more identities)" if len(spread) > 1 else ""
    return (f"identity {identity!r} has gallery images in {len(tops)} top-level folders ({', '.join(tops[:4])}"
            f"{', ...' if len(tops) > 4 else ''}){more}: each is a gallery entry of that one identity. A folder "
            "input's identity is an image's parent folder's name: if these are different people "
            "(person/session/img.jpg), give an input manifest with an identity column.")


def load_split(probe_uri: str, gallery_uri: str, gallery_per_identity: int | None = 1,
               gallery_template: str = "best", name: str | None = None, shared_keys=None) -> Split:
    """The probes and gallery of one method; `name` chooses the model and mode in folders that hold
    several (`method_rows`); `shared_keys`: for a fusion, the gallery images every model found a face
    in (`as_fused`)."""
    probe_rows, probe_emb, failed = read_shards(probe_uri, with_failures=True, where=method_rows(name, probe_uri))
    gallery_rows, gallery_emb, gallery_failed = read_shards(gallery_uri, with_failures=True,
                                                            where=method_rows(name, gallery_uri))
    probe_rows, probe_emb, failed, probes_left_out = with_identity(probe_rows, probe_emb, failed)
    gallery_rows, gallery_emb, gallery_failed, gallery_left_out = with_identity(gallery_rows, gallery_emb,
                                                                                gallery_failed)
    probes_with_a_face = len(probe_rows)
    gallery_rows_all, gallery_failed = as_fused(gallery_rows, gallery_failed, shared_keys)
    gallery_keys = split_gallery(gallery_rows_all, gallery_per_identity)
    keep_g = gallery_rows.key.isin(gallery_keys).to_numpy()
    keep_p = ~probe_rows.key.isin(gallery_keys).to_numpy()
    gallery_rows, gallery_emb = gallery_rows[keep_g].reset_index(drop=True), gallery_emb[keep_g]
    probe_rows, probe_emb = probe_rows[keep_p].reset_index(drop=True), probe_emb[keep_p]
    failed = failed[~failed.key.isin(gallery_keys)].reset_index(drop=True)
    # per side: faces with an embedding plus images without a face (the gallery: the images enrolment tried)
    tried = enrolment_tried(gallery_rows_all, gallery_failed, gallery_keys, gallery_per_identity)
    acquisition = note_no_identity(acquisition_counts(len(probe_rows), len(failed), *tried_counts(tried)),
                                   len(probes_left_out), len(gallery_left_out))
    if not len(gallery_rows):
        if gallery_left_out and not len(gallery_failed):
            raise none_with_an_identity("gallery", open_store(gallery_uri).uri, len(gallery_left_out))
        raise nothing_to_score("gallery", open_store(gallery_uri).uri, gallery_failed)
    if not len(probe_rows):
        if probes_with_a_face:
            raise no_probe_left(open_store(probe_uri).uri, gallery_per_identity)
        if probes_left_out and not len(failed):
            raise none_with_an_identity("probe", open_store(probe_uri).uri, len(probes_left_out))
        raise nothing_to_score("probe", open_store(probe_uri).uri, failed)
    models = set(probe_rows.model_id) | set(gallery_rows.model_id)
    if len(models) != 1:
        raise ValueError(f"probe and gallery shards must come from one model, found {sorted(models)}")
    refuse_unlike_embeddings(split_mode(probe_rows), split_mode(gallery_rows), probe_uri, gallery_uri)
    similarity = str(probe_rows.similarity.iloc[0]) if "similarity" in probe_rows and len(probe_rows) else "cosine"
    gallery_rows, gallery_emb = gallery_entries(gallery_rows, gallery_emb, gallery_template, similarity)
    return Split(probe_rows, probe_emb, gallery_rows, gallery_emb, models.pop(), similarity, failed, acquisition,
                 frozenset(gallery_keys), unenrolled_entries(tried, gallery_keys, gallery_per_identity, gallery_template),
                 tried, frozenset(gallery_rows_all.key.astype(str)))


def refuse_unlike_embeddings(probe_mode: str | None, gallery_mode: str | None, probe_uri: str,
                             gallery_uri: str) -> None:
    """Probes and gallery embedded by two different functions (one side flipped and averaged, or cut
    to the upper face, the other not) cannot be compared: their scores were reported under the name
    given (`--name 'sface flip'` scored plain probes against a flipped gallery). `masked-gallery`
    changes only the gallery's pictures, so its gallery pairs with plain probes, as `mfr run` pairs them."""
    from recog.matching import mode_from_name

    try:
        probe, gallery = mode_from_name(probe_mode), mode_from_name(gallery_mode)
    except (ValueError, TypeError, KeyError):  # no mode, or one this version does not know: left as read
        return
    if (probe.flip, probe.region) != (gallery.flip, gallery.region):
        other = gallery_mode if gallery.flip or gallery.region != "full" else probe_mode
        raise ValueError(f"the probes ({redact(probe_uri)}) are embedded in the {probe_mode} mode and the gallery "
                         f"({redact(gallery_uri)}) in the {gallery_mode} mode, which embed faces differently: "
                         f"their scores would not compare like with like. Embed both sides with --mode {other}, "
                         "or, where a folder holds several modes, choose the same with --name 'MODEL MODE'")


def split_mode(rows) -> str | None:
    """The matching mode of a method's probe or gallery rows (one mode: `method_rows` chose it)."""
    return str(rows["mode"].iloc[0]) if "mode" in rows and len(rows) else None


def refuse_fusing_a_method_twice(methods: list[tuple]) -> None:
    """Refuse a fusion given one method twice (the same shards under two names: its fused row would be
    the method's own), by each method's (model_id, probe mode, gallery mode). Two modes of one model
    (plain and upper-face, say) are two methods and fuse."""
    twice = next((m for i, m in enumerate(methods) if m in methods[:i]), None)
    if twice is not None:
        model_id, probe_mode, gallery_mode = twice
        modes = probe_mode if probe_mode == gallery_mode else f"{probe_mode} probes, {gallery_mode} gallery"
        raise ValueError(f"the methods to fuse must differ: {model_id} ({modes}) is given twice")


def score_fused(splits: list[Split], name: str, max_pairs: int = 2_000_000, seed: int = 0):
    """MethodResult of several models' scores fused (recog.matching.fuse_matrices) on the probes and
    gallery entries they all have."""
    import pandas as pd

    from recog.matching import fuse_matrices

    refuse_fusing_a_method_twice([(s.model_id, split_mode(s.probe_rows), split_mode(s.gallery_rows))
                                  for s in splits])
    # entries by (key, face): a gallery image of two faces (--face all) is two entries, and keyed by the
    # image alone its faces made the mated flags wider than the scores
    probe_keys = [list(zip(s.probe_rows.key, s.probe_rows.face_index)) for s in splits]
    gallery_keys = [list(zip(s.gallery_rows.key, s.gallery_rows.face_index)) for s in splits]
    # an image that is any model's gallery image is no probe of the fusion (as the distributed reducer
    # leaves them out): where the models chose different gallery images, the others' were counted as
    # probes without a face
    gallery_images = frozenset().union(*(s.gallery_images for s in splits))
    common_p = sorted(k for k in set.intersection(*(set(k) for k in probe_keys)) if k[0] not in gallery_images)
    common_g = sorted(set.intersection(*(set(k) for k in gallery_keys)))
    if not common_p or not common_g:
        raise ValueError("the models to fuse share no probes or no gallery entries")
    matrices = []
    for s, pk, gk in zip(splits, probe_keys, gallery_keys):
        p_pos, g_pos = {k: i for i, k in enumerate(pk)}, {k: i for i, k in enumerate(gk)}
        matrices.append(s.matrix([p_pos[k] for k in common_p], [g_pos[k] for k in common_g]))
    first = splits[0]
    p_ids = first.probe_rows.set_index(["key", "face_index"]).loc[common_p].identity.to_numpy().astype(str)
    g_ids = first.gallery_rows.set_index(["key", "face_index"]).loc[common_g].identity.to_numpy().astype(str)
    mated = p_ids[:, None] == g_ids[None, :]
    fused = fuse_matrices(matrices, mated)
    pairs = PairSampler(len(p_ids), len(g_ids), max_pairs, seed)
    pairs.add(fused, mated)
    (scores, labels), per_probe = pairs.result(), pairs.per_probe
    # a probe fused only where every model has it: one that some model could not embed is a failure
    failed = pd.concat([s.failed for s in splits if s.failed is not None] +
                       [s.probe_rows[["key", "identity"]] for s in splits], ignore_index=True)
    common_keys = {k for k, _ in common_p}
    failed = failed[~failed.key.isin(common_keys) & ~failed.key.isin(gallery_images)].drop_duplicates("key")
    acquisition = None
    if first.acquisition:
        acquisition = acquisition_counts(len(common_p), len(failed), *fused_enrolment(
            [s.gallery_tried for s in splits], [s.gallery_faces for s in splits]))
        left = first.acquisition.get("no_identity") or {}  # the same images in every model's folders
        note_no_identity(acquisition, left.get("probe", 0), left.get("gallery", 0))
    empty_ids = fused_empty_ids([list(s.gallery_rows.identity.astype(str)) + list(s.empty_ids) for s in splits],
                                set(g_ids))
    return method_result(name, scores, labels, p_ids, g_ids, fused, None,
                         failed_ids=failed.identity.to_numpy().astype(str), impostors_per_probe=per_probe,
                         acquisition=acquisition, fused=True, empty_ids=empty_ids,
                         probe_keys=(image_hashes([k for k, _ in common_p]), [f for _, f in common_p]),
                         failed_keys=image_hashes(failed.key))


def side_masked_values(uri: str) -> set:
    """What the `masked` column of a shard folder holds ({True}, {False}, both, or nothing where it has
    no such shard), from every shard's footer statistics (`jobs.storage.boolean_values`).
    Read from the first shard alone, a folder embedded from an input manifest whose `masked` column
    says both (its rows spread over many shards) was titled by whichever shard was listed first."""
    from concurrent.futures import ThreadPoolExecutor

    from jobs.storage import boolean_values

    store = open_store(uri)
    # not a manifest's: an output may hold mfr mask's beside mfr embed's
    keys = [k for k in store.list(SHARD_DIR) if k.endswith(".parquet")]

    def values_of(key: str) -> set:
        try:
            return boolean_values(store, key, "masked")
        except (OSError, ValueError):  # a damaged shard: the reading of all names it
            return set()

    seen: set = set()
    with ThreadPoolExecutor(8) as pool:  # a ranged read each: on S3, latency more than bytes
        for values in pool.map(values_of, keys):
            seen |= values
            if len(seen) > 1:
                pool.shutdown(wait=False, cancel_futures=True)
                break
    return seen


def sides_title(probe_uri: str, gallery_uri: str) -> tuple[str, list[str]]:
    """(the report's title, notes) from what the shards say about each side: "Masked probes vs
    unmasked gallery" for the protocol the tool is for, else what was scored, with a note when the
    two folders look given the wrong way round."""
    probe, gallery = side_masked_values(probe_uri), side_masked_values(gallery_uri)

    def word(values: set) -> str:
        return "mixed " if len(values) > 1 else "masked " if values == {True} else "unmasked " if values else ""

    title = f"{word(probe)}probes vs {word(gallery)}gallery"
    title = title[0].upper() + title[1:]
    notes = []
    if probe == {False} and gallery == {True}:
        notes.append("the probes are unmasked and the gallery masked: were the two folders given the wrong way "
                     "round? (mfr score PROBES GALLERY OUT)")
    elif probe == {False}:
        notes.append("the probes are unmasked: this is not a masked-face evaluation")
    elif len(probe) > 1:
        notes.append("the probe folder holds masked and unmasked faces (its shards' `masked` column; an input "
                     "manifest's says so per image): its images that are not gallery images are probes, masked or "
                     "not; `mfr evaluate` on such an input scores the masked images against the unmasked ones")
    return title, notes


def refuse_repeated_names(names: list[str]) -> None:
    """Two methods of one name would be two report rows of that name, and `--fuse` could not say which."""
    from recog.report import repeated_name

    repeated = repeated_name(names)
    if repeated is not None:
        raise ValueError(f"two methods are named {repeated!r}: give each its own --name / --compare NAME")


def unmated_note(result, named: bool = False) -> str | None:
    """A note for a report whose probes include some whose identity the gallery does not hold (scored as
    non-mated searches), or some whose identity's gallery images all failed to give a face (mated searches
    never identified). None when neither."""
    ident = result.identification or {}
    unmated = ident.get("probes", 0) - ident.get("mated_probes", 0)
    unenrolled = ident.get("unenrolled_probes", 0)
    whose = f"{ident.get('probes', 0)} probes{f' ({result.name})' if named else ''}"
    said = []
    if unmated:
        said.append(f"{unmated} of {whose} {'has' if unmated == 1 else 'have'} no gallery entry of their identity (the gallery does not hold it): "
                    "they are scored as non-mated searches, so they count towards FPIR and not towards rank-k or "
                    "TPIR.")
    if unenrolled:
        said.append(f"{unenrolled} of {whose} {'is' if unenrolled == 1 else 'are'} of an identity that failed to enrol (no gallery image of it gave "
                    "a face, or in a fusion none that every model embedded): they are mated searches that are never "
                    "identified, and their comparisons with its gallery entries are rejected.")
    return " ".join(said) or None


def publish_report(out, paths: dict, folder: str = "") -> dict:
    """Write the files of a report (`recog.report.write_report`'s paths, by kind) under `folder` of
    `out`, and give their URIs by kind. report.json goes last: its fingerprint is what a rerun trusts,
    so it must not exist without the rest; before it, the report files of an earlier report that this
    one lacks are removed (a CMC curve stayed beside a pairs protocol's report). A report cut short (a
    full disk, Ctrl-C) puts the earlier report's files back as they were (`_put_back`) and takes back
    the files it added: report files without mfr's report.json are the user's to
    `refuse_foreign_report`, and an earlier report.json beside plots deleted or replaced would be
    trusted by the rerun as up to date."""
    def key(name: str) -> str:
        return f"{folder}/{name}" if folder else name

    names = {path.name for path in paths.values()}
    earlier, unread = {}, set()
    for name in REPORT_FILES:
        if out.exists(key(name)):
            try:
                earlier[name] = out.read(key(name))  # a few kB each
            except Exception:  # (a file that may be replaced but not read: it cannot be put back)
                unread.add(name)
    written, touched = {}, []
    try:
        for kind, path in sorted(paths.items(), key=lambda item: item[0] == "json"):
            if kind == "json":
                for stale in sorted((set(earlier) | unread) - names):
                    touched.append(stale)
                    out.delete(key(stale))
            touched.append(path.name)
            out.write(key(path.name), path.read_bytes())
            written[kind] = out.uri_of(key(path.name))
    except BaseException:
        _put_back(out, key, touched, earlier, unread)
        raise
    return written


def _put_back(out, key, touched: list, earlier: dict, unread: set) -> None:
    """After a report cut short: the files it `touched` as they were before (`earlier`), its new ones
    removed. Where one cannot be put back (unreadable before, or the disk still full), every report
    file goes (removing needs no space): the earlier report.json trusted by the rerun beside files of
    another report, or report files left without it, which `refuse_foreign_report` takes for the
    user's, would each stop the rerun from writing the report again."""
    whole = True
    for name in dict.fromkeys(n for n in touched if n != "report.json"):
        try:
            if name in earlier:
                out.write(key(name), earlier[name])
            elif name in unread:
                whole = False
            else:
                out.delete(key(name))
        except BaseException:  # the disk still full, or Ctrl-C again: the first error is the one to say
            whole = False
    if not whole:
        for name in (*(n for n in REPORT_FILES if n != "report.json"), "report.json"):  # the record last
            with contextlib.suppress(BaseException):
                out.delete(key(name))


def refuse_foreign_report(out) -> None:
    """A folder holding report files that no report.json of mfr's (its `model_id` and `results`) comes
    with is the user's: `mfr score P G thesis` replaced their `report.md`, exit 0."""
    present = [name for name in REPORT_FILES if out.exists(name)]
    if not present:
        return
    if "report.json" in present:
        from jobs.inputs import is_mfr_report

        try:
            record = json.loads(out.read("report.json"))
        except ValueError:
            record = None
        if is_mfr_report(record):
            return
    raise ValueError(f"the output {redact(out.uri)} already holds {', '.join(present)} that mfr did not write: give "
                     "a new or empty folder for the report; nothing was written")


def refuse_output_among_data(out, shard_uris) -> None:
    """A report's folder is the report's. One that is, or lies inside, an embeddings folder it scores
    put its files among the shards; one that holds a dataset (`mfr score P G DATASET`: files neither a
    report's nor an mfr output's) took roc.png, scores.png and cmc.png, and the next job over the
    dataset read them as photos. An mfr output's folder (`mfr run`'s, holding its records) may take a
    report at its top. Hidden files and objects (.DS_Store, a write's temporary) do not count."""
    from jobs.inputs import folder_names, holds_mfr_output, holds_record, output_inside_input

    for uri in shard_uris:
        inside = output_inside_input(open_store(uri), out)
        if inside is not None:
            where = "is" if inside == "" else f"lies inside ({inside}/)"
            raise ValueError(f"the output {redact(out.uri)} {where} the embeddings folder {redact(uri)}: give the "
                             "report a folder of its own; nothing was written")
    if isinstance(out, LocalStore):
        if not out.root.is_dir():
            return
        names = folder_names(out.root)
    else:  # its folders, and the objects at its top
        names = [g for g in out.top_level() if g] + [key for key, _ in out.entries("")]
    other = sorted(n for n in names if n not in REPORT_FILES and not n.startswith("."))
    # an `mfr embed` output of a version that kept no record (`shards/` alone) is mfr's, as for the jobs
    if not other or other == ["shards"] or holds_record(out) or all(holds_mfr_output(out, n) for n in other):
        return
    shown = ", ".join(other[:3]) + (", ..." if len(other) > 3 else "")
    raise ValueError(f"the output {redact(out.uri)} already holds files that are not a report's ({shown}): give "
                     "a new or empty folder for the report (was a dataset given as the output?); nothing was written")


def recorded_results(report: dict) -> list[MethodResult]:
    """A report.json's methods with the figures it holds (verification, identification, acquisition),
    for the summary of a report found up to date: a rerun prints the figures the report has (it
    printed only its paths). No curves or per-probe outcomes: report.json does not keep them."""
    return [MethodResult(name=r["name"], verification=r.get("verification"), identification=r.get("identification"),
                         acquisition=r.get("acquisition"), score=r.get("score"))
            for r in report.get("results") or [] if isinstance(r, dict) and "name" in r]


def _tidy_when_failed(score_fn):
    """A new local output folder that the scoring leaves empty, failing (its shards missing, say), is
    removed again (`jobs.storage.tidy_when_failed`), from Python as after `mfr score`."""
    @functools.wraps(score_fn)
    def scoring(probe_uri, gallery_uri, output_uri, *args, **kwargs):
        from jobs.storage import tidy_when_failed

        with tidy_when_failed(output_uri):
            return score_fn(probe_uri, gallery_uri, output_uri, *args, **kwargs)

    return scoring


@_tidy_when_failed
def run_score(probe_uri: str, gallery_uri: str, output_uri: str, title: str | None = None,
              gallery_per_identity: int | None = 1, force: bool = False, name: str | None = None,
              also: list[tuple[str, str, str]] = (), fuse: list[list[str]] = (), distributed: bool = False,
              gallery_template: str = "best", gallery_part_rows: int | None = None, score_device: str = "auto",
              score_tasks_per_gpu: int | None = None, masks: str | None = None, **kwargs) -> dict:
    """Score and write the report. `also`: more methods as (name, probe URI, gallery URI), shown side
    by side in the same tables and plots; `fuse`: groups of method names whose scores are fused
    (z-norm on impostors, averaged) into one more row each. `distributed`: score each method and
    each fusion with Ray tasks over the probe shards, the gallery in parts of `gallery_part_rows`
    (jobs.reduce; same figures, no process holds the score matrix or the whole gallery), on GPUs
    where the cluster has them (`score_device`: auto, cpu, gpu; `score_tasks_per_gpu` tasks share each
    GPU, default jobs.reduce.TASKS_PER_GPU). A rerun over unchanged shards and settings keeps the report
    that is there (`skipped` is True) unless `force`. `gallery_template`: `best` (every gallery image an
    entry) or `mean` (one template per identity, `gallery_entries`), for identification and
    verification alike. `title` defaults to what the shards hold (`sides_title`: "Masked probes vs
    unmasked gallery", or a title and a note saying otherwise). `gallery_per_identity` None: every
    image of the gallery side is a gallery image (`split_gallery`; `mfr run`'s gallery folder). `masks`:
    how the probes were masked (`mfr run`: "the surgical mask style, run seed 0"), said in the protocol line and
    report.json (two runs of other styles gave reports that read alike)."""
    # before any shard is read: a typo (gallery_per_identiy=2) or seed=-1 failed after them all, deep inside
    unknown = sorted(set(kwargs) - {"max_pairs", "seed"})
    if unknown:
        raise ValueError(f"run_score takes no option {', '.join(unknown)} (its scoring options: max_pairs, seed)")
    if "max_pairs" in kwargs:
        check_max_pairs(kwargs["max_pairs"])
    if "seed" in kwargs:
        from maskgen.masks import check_seed

        check_seed(kwargs["seed"])
    check_flag("force", force)
    check_flag("distributed", distributed)  # "no" started Ray
    for uri in [probe_uri, gallery_uri, *(u for _, p, g in also for u in (p, g))]:
        store = open_store(uri)
        if isinstance(store, LocalStore) and store.root.is_file():
            raise ValueError(f"{uri} is a file: give the output folder of `mfr embed` (its shards/ hold the "
                             "embeddings)")
    notes = []
    if title is None:
        title, notes = sides_title(probe_uri, gallery_uri)
    from jobs.augment import check_counts

    if gallery_template not in GALLERY_TEMPLATES:
        raise ValueError(f"gallery template must be one of {GALLERY_TEMPLATES}, got {gallery_template!r}")
    check_counts(gallery_per_identity=gallery_per_identity, gallery_part_rows=gallery_part_rows)
    if score_device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"score_device must be one of ('auto', 'cpu', 'gpu'), got {score_device!r}")
    reducer_options = {"part_rows": gallery_part_rows} if distributed and gallery_part_rows else {}
    if distributed:
        reducer_options["device"] = score_device
        if score_tasks_per_gpu is not None:
            from jobs.reduce import check_tasks_per_gpu

            check_tasks_per_gpu(score_tasks_per_gpu, "score_tasks_per_gpu")
            reducer_options["tasks_per_gpu"] = score_tasks_per_gpu
    else:
        given = {"score_device": score_device != "auto", "gallery_part_rows": gallery_part_rows,
                 "score_tasks_per_gpu": score_tasks_per_gpu is not None}
        for option in (k for k, v in given.items() if v):
            raise ValueError(f"{option} (--{option.replace('_', '-')}) applies to the distributed reducer only "
                             "(distributed=True, --distributed)")
    fusions = set()
    for group in fuse:  # before the output is made: `--fuse ''` failed in frozenset.intersection()
        if len(group) < 2 or len(set(group)) < len(group) or not all(str(g).strip() for g in group):
            raise ValueError(f"--fuse {','.join(map(str, group))!r}: a fusion takes two or more different methods "
                             "(NAME,NAME)")
        if frozenset(group) in fusions:  # two report rows of one fusion
            raise ValueError(f"--fuse {','.join(map(str, group))!r}: that fusion is given twice")
        fusions.add(frozenset(group))
    out = open_store(output_uri)
    refuse_foreign_report(out)
    methods = [(name, probe_uri, gallery_uri), *also]
    uris = [u for _, p, g in methods for u in (p, g)]
    refuse_output_among_data(out, uris)
    out.check_writable()
    refuse_repeated_names([m for m, _, _ in methods if m])  # before any scoring: the names given
    fingerprint = inputs_fingerprint(uris, {"title": title, "gallery_per_identity": gallery_per_identity,
                                            **({"gallery_template": gallery_template} if gallery_template != "best"
                                               else {}),
                                            "methods": [m[0] for m in methods], "fuse": fuse, **kwargs,
                                            **({"masks": masks} if masks else {}),
                                            **({"reducer": "distributed"} if distributed else {}),
                                            "report_format": REPORT_FORMAT})
    if not force and out.exists("report.json"):
        previous = json.loads(out.read("report.json"))
        if previous.get("inputs_fingerprint") == fingerprint:
            names = {"json": "report.json", "markdown": "report.md", "roc": "roc.png", "scores": "scores.png",
                     "cmc": "cmc.png"}
            paths = {kind: out.uri_of(n) for kind, n in names.items() if out.exists(n)}
            return {"paths": paths, "result": None, "results": recorded_results(previous),
                    "paired": previous.get("paired") or [], "skipped": True, "notes": notes}
    splits, results, model_ids, uris_of = {}, [], {}, {}
    for method, p_uri, g_uri in methods:
        if distributed:
            from jobs.reduce import score_distributed

            result, model_id = score_distributed(p_uri, g_uri, method, gallery_per_identity,
                                                 gallery_template=gallery_template, **reducer_options, **kwargs)
            model_ids[result.name] = model_id
            uris_of[result.name] = (p_uri, g_uri, method)
            results.append(result)
            continue
        split = load_split(p_uri, g_uri, gallery_per_identity, gallery_template, name=method)
        split.uris, split.method = (p_uri, g_uri), method
        method = method or split.model_id.split("@")[0]
        splits[method] = split
        model_ids[method] = split.model_id
        results.append(score(split.probe_rows, split.probe_emb, split.gallery_rows, split.gallery_emb, method,
                             split.similarity, failed=split.failed, acquisition=split.acquisition,
                             empty_ids=split.empty_ids, **kwargs))
    refuse_repeated_names([r.name for r in results])  # a first method may take its model's name, given to another
    for group in fuse:
        known = uris_of if distributed else splits
        missing = [g for g in group if g not in known]
        if missing:
            raise ValueError(f"cannot fuse {missing}: no such method (methods: {list(known)})")
        name_of = "fusion: " + " + ".join(group)
        try:
            if distributed:
                from jobs.reduce import score_fused_distributed

                results.append(score_fused_distributed([uris_of[g] for g in group], name_of, gallery_per_identity,
                                                       gallery_template=gallery_template, **reducer_options, **kwargs))
            else:  # each model's split over the gallery images every model of the group found a face in: read
                # again only where some model found faces the others did not (the split would otherwise be its own)
                shared = frozenset.intersection(*(splits[g].gallery_faces for g in group))
                fused = [splits[g] if splits[g].gallery_faces == shared else
                         load_split(*splits[g].uris, gallery_per_identity, gallery_template, name=splits[g].method,
                                    shared_keys=shared) for g in group]
                results.append(score_fused(fused, name_of, **kwargs))
        except ZNormUnmeasurable as exc:  # (one identity, one impostor): the methods' own rows stay
            notes.append(f"{name_of} is not reported: {exc}, and its scores are z-normalised by them before "
                         "they are averaged")
    notes = notes + [n for n in map(unmated_note, results, [len(results) > 1] * len(results)) if n]
    if gallery_per_identity is None:  # a gallery chosen per top-level folder
        notes += [n for n in [spread_identities_note(gallery_uri)] if n]
    notes += list(dict.fromkeys(n for n in map(no_identity_note, results) if n))  # the same for each method
    per_identity = ("the gallery images chosen when the input was listed (an identity's first image)"
                    if gallery_per_identity is None else f"{gallery_per_identity} gallery image(s) per identity")
    protocol = (f"{title[0].lower()}{title[1:]}, {per_identity}"
                + (" as one mean template" if gallery_template == "mean" else "") + ", probes from the other images"
                + (f" ({masks})" if masks else ""))
    paired = paired_comparisons(results)  # once: for the report and the command's summary
    with tempfile.TemporaryDirectory(prefix="mfr-report-") as tmp:
        paths = write_report(results, Path(tmp), title, protocol=protocol, paired=paired, extra={
            "model_id": model_ids[results[0].name], "model_ids": model_ids,
            "probes": redact(probe_uri), "gallery": redact(gallery_uri),
            "methods": [{"name": m or results[i].name, "probes": redact(p), "gallery": redact(g)}
                        for i, (m, p, g) in enumerate(methods)],
            # the fused rows' methods and models (they were in no list of report.json)
            **({"fusions": [{"name": "fusion: " + " + ".join(g), "methods": list(g),
                             "model_ids": [model_ids[m] for m in g]} for g in fuse]} if fuse else {}),
            **({"masks": masks} if masks else {}),
            "inputs_fingerprint": fingerprint,
            **({"scored_by": {r.name: r.scored_by for r in results if r.scored_by}} if distributed else {}),
            "protocol": protocol, **({"notes": notes} if notes else {})})
        written = publish_report(out, paths)
    return {"paths": written, "result": results[0], "results": results, "paired": paired, "skipped": False,
            "notes": notes}


def score_pairs(shard_uris: list[str], pairs, name: str, missing: str = "error", where=None):
    """MethodResult of a verification protocol (recog.protocols.Pairs: the seed's c-RMFRD pairs, LFW's
    pairs.txt, a plain a,b,label file) over embedding shards whose keys are the protocol's image paths.
    Every pair counts: a pair with an image in which no face was found is a rejected pair in the
    headline figures (the figures over pairs with a face on both sides stand beside them,
    `acquired_only`). A pair whose image the shards do not hold at all (not in the dataset) raises,
    or with `missing="skip"` is left out and counted in `verification["pairs_skipped"]`. `where`: only
    the shard rows it selects (`jobs.embed.read_shards`)."""
    import pandas as pd

    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    if isinstance(shard_uris, (str, Path)):  # one folder (was walked letter by letter: "no shards under //shards")
        shard_uris = [shard_uris]
    shard_uris = [str(u) for u in shard_uris]
    if not shard_uris:
        raise ValueError("score_pairs needs one or more embedding folders (shard_uris), got none")
    given = np.asarray(pairs.labels, bool)
    if given.all() or not given.any():  # before any shard is read (was the metrics' own words, after)
        raise ValueError(f"all {len(given)} pairs are {'genuine' if given.all() else 'impostor'}: verification needs "
                         "both genuine and impostor pairs")
    loaded = [read_shards(u, with_failures=True, where=where) for u in shard_uris]
    seen: dict = {}
    for uri, (r, _, f) in zip(shard_uris, loaded):
        keys = set(r.key) | set(f.key)
        for earlier, held in seen.items():
            both = sorted(keys & held)
            if both:  # the first folder's rows were taken, silently: a masked folder beside an unmasked one
                raise ValueError(f"{len(both)} image(s) are in both {redact(earlier)} and {redact(uri)}, e.g. "
                                 f"{both[0]!r}: a pair names an image by its key, so which folder's embedding it "
                                 "means is not known; score the folders apart")
        seen[uri] = keys
    rows = pd.concat([r for r, _, _ in loaded], ignore_index=True)
    emb = np.concatenate([e for _, e, _ in loaded])
    failed = pd.concat([f for _, _, f in loaded], ignore_index=True)
    if rows.model_id.nunique() != 1:
        raise ValueError(f"the shards must come from one model, found {sorted(set(rows.model_id))}")
    first_face = rows.reset_index().sort_values("face_index").drop_duplicates("key").set_index("key")["index"]
    no_face = set(failed.key) - set(first_face.index)
    present = set(first_face.index) | no_face
    keep = [i for i in range(len(pairs)) if pairs.a[i] in present and pairs.b[i] in present]
    if len(keep) < len(pairs) and missing == "error":
        lost = next(k for i in range(len(pairs)) for k in (pairs.a[i], pairs.b[i]) if k not in present)
        raise ValueError(f"{len(pairs) - len(keep)} pair(s) have an image the shards do not hold, e.g. {lost!r}; "
                         "pass missing='skip' (--missing skip) to leave them out")
    left = np.asarray(pairs.labels, bool)[keep]
    if left.all() or not left.any():  # what skipping left (was the metrics' "need both genuine and impostor")
        kind = "no pair" if not left.size else f"only {'genuine' if left.all() else 'impostor'} pairs"
        raise ValueError(f"{len(pairs) - len(keep)} of the {len(pairs)} pairs have an image the shards do not hold "
                         f"(missing='skip'), leaving {kind}: verification needs both genuine and impostor pairs")
    acquired = np.array([pairs.a[i] in first_face.index and pairs.b[i] in first_face.index for i in keep], bool)
    both = [i for i, ok in zip(keep, acquired) if ok]
    a = emb[first_face.loc[[pairs.a[i] for i in both]].to_numpy()]
    b = emb[first_face.loc[[pairs.b[i] for i in both]].to_numpy()]
    real = M.pair_scores(a, b, str(rows.similarity.iloc[0])).astype(np.float64)
    floor = M.rejected_score(real)
    scores = np.full(len(keep), floor)  # rejected at every real threshold
    scores[acquired] = real
    labels = pairs.labels[keep]
    folds = pairs.folds[keep] if pairs.folds is not None else None
    result = evaluate(name, scores, labels, folds=folds, floor=floor)
    result.score = SCORE_UNITS[str(rows.similarity.iloc[0])]
    result.verification["pairs_skipped"] = len(pairs) - len(keep)
    images = {k for i in keep for k in (pairs.a[i], pairs.b[i])}
    failed_images = len(images & no_face)
    result.acquisition = {"images": acquisition_counts(len(images) - failed_images, failed_images)["probe"],
                          "pairs": {"pairs": len(keep), "with_a_face_on_both_sides": int(acquired.sum()),
                                    "rejected_for_no_face": int((~acquired).sum())}}
    kept = labels[acquired]
    if kept.any() and not kept.all():
        result.acquired_only = evaluate(name, real, kept, folds=None if folds is None else folds[acquired])
    elif kept.size:  # no ROC over one kind of pair: said, not the evaluation stopped after the embedding
        result.verification["acquired_only_unmeasured"] = (
            f"the {kept.size} pair(s) with a face on both sides are all {'genuine' if kept.all() else 'impostor'}")
    return result
