"""mfr: masked face recognition at scale. Local paths and s3:// URIs take the same flags.

    mfr demo                                                    # the whole job on the embedded demo data
    mfr run ../shared/data/faces out/run --style seed           # augment -> embed -> score
    mfr mask ../shared/data/faces out/masked --style random --seed 7
    mfr embed ../shared/data/faces out/emb/unmasked
    mfr embed out/masked out/emb/masked --from-augment --masked
    mfr score out/emb/masked out/emb/unmasked out/report
    mfr models list

Each job runs on the Ray cluster that `ray.init()` finds (RAY_ADDRESS, or `ray job submit`); without
one, a job of at most 10,000 images runs on a local process pool, a larger one on a local Ray
(--executor). Options can also come from a TOML file (--config): top-level keys for every command,
[mask] / [embed] / [score] / [run] / [evaluate] / [demo] / [models] tables for one; flags on the
command line win.

Exit codes: 0 done; 1 done, but some inputs failed and --strict was given; 2 bad arguments or a job
error (the message says which); 130 interrupted (finished batches are kept: rerun to finish).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from jobs.augment import MAX_COUNT
from jobs.progress import ProgressBar, failed_inputs, summary_table
from jobs.sink import ROWS_PER_SHARD
from maskgen.decode import DEFAULT_MAX_PIXELS
from maskgen.finder import ALIGNMENTS
from maskgen.masks import STYLE_NAMES, check_seed
from jobs.run import DEFAULT_MODES
from recog.matching import MODES

COMMANDS = ("mask", "embed", "score", "evaluate", "run", "demo", "models")


def _progress(quiet: bool, label: str):
    return None if quiet else ProgressBar(label)


RETRIES = ("mask", "embed", "run", "evaluate")  # the commands that take --retry-failed


def _finish(label: str, summary, bar=None) -> None:
    if bar is not None:
        bar.close()
    for note in getattr(summary, "notes", ()):
        print(f"{label}: note: {note}")
    print(summary_table(label, summary))
    failed = failed_inputs(summary)
    if failed and label in RETRIES:
        earlier = f", {summary.skipped_failed} of them in an earlier run" if summary.skipped_failed else ""
        print(f"{label}: {failed} input(s) failed{earlier} (their rows say why); a rerun skips them: once the cause "
              "is fixed, --retry-failed does them again")


def _print_figures(report: dict) -> None:
    """A report's headline figures (recog.report.summary_lines): the ones computed, or report.json's
    where the report was found up to date (jobs.score.recorded_results)."""
    from recog.report import summary_lines

    for line in summary_lines(report.get("results") or [], report.get("paired")):
        print(line)


def _print_report(report: dict, remake: str = "; --force makes it again") -> None:
    for note in report.get("notes") or ():
        print(f"note: {note}")
    _print_figures(report)  # the figures looked for first
    if report.get("skipped"):  # only `mfr score` takes --force
        print(f"report up to date (same shards and settings){remake}")
    for kind, uri in report["paths"].items():
        print(f"{kind}: {uri}")


def _print_plan(label: str, plan: dict) -> None:
    print(f"{label}: {plan['inputs']} input(s) from {plan['images']}; {plan['done']} already done; "
          f"{plan['count']} to process into {plan['output']}")
    if plan.get("settings"):
        print(f"  masks: {plan['settings']}")
    for note in plan["notes"]:
        print(f"  note: {note}")
    for key, where in plan["todo"]:
        print(f"  {key} -> {where}")
    if plan["count"] > len(plan["todo"]):
        print(f"  ... and {plan['count'] - len(plan['todo'])} more")


def pixel_limit(text) -> int:
    """argparse type (and --config check) of --max-pixels: a whole number of at least 1 (past 2**63, no
    limit)."""
    try:
        value = int(str(text), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_int(text) -> int:
    """argparse type (and --config check) of counts: a whole number from 1 to 2**63 - 1."""
    value = pixel_limit(text)
    if value > MAX_COUNT:  # 2**63 raised OverflowError inside the job, exit 1
        raise argparse.ArgumentTypeError(f"must be at most 2**63 - 1, got {value}")
    return value


def text_encoding(text) -> str | None:
    """argparse type (and --config check) of --manifest-encoding: a codec Python knows, or auto."""
    from jobs.inputs import manifest_encoding

    try:
        return manifest_encoding(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def manifest_options(parser: argparse.ArgumentParser) -> None:
    """Where a manifest's paths point, and how its text is written: the options of every command that
    takes an input manifest."""
    parser.add_argument("--images", help="where a manifest's paths point (default: the manifest's folder)")
    parser.add_argument("--manifest-encoding", type=text_encoding, default=None, metavar="ENCODING",
                        help="a CSV manifest's text encoding, e.g. cp1252, latin-1, shift_jis (default auto: "
                             "UTF-8, else GBK)")


def run_seed(text) -> int:
    """argparse type (and --config check) of run seeds: a whole number from 0 to 2**63 - 1."""
    try:
        value = int(str(text), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a whole number, got {text}") from None
    try:
        return check_seed(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a run seed from 0 to 2**63 - 1, got {value}") from None


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


# an on/off option: --quiet, and --no-quiet to turn off what a --config file turned on ("flags on the
# command line win" held for every option but these)
SWITCH = {"action": argparse.BooleanOptionalAction, "default": False}


def version_text() -> str:
    """`mfr --version`: mfr's version, then Python's and each installed component's (`recog.versions`)."""
    from recog.versions import software_versions

    found = software_versions()
    mfr, python = found.pop("mfr"), found.pop("python")
    return f"mfr {mfr} (Python {python}; " + ", ".join(f"{name} {v}" for name, v in found.items()) + ")"


class _Version(argparse.Action):
    """--version, its text made only when asked (argparse's own would read every version at each start)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    # no abbreviations: `evaluate --mode flip` was taken for --model, and refused for its model
    p = argparse.ArgumentParser(prog="mfr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--version", action=_Version, help="mfr's version and its components', then exit")
    p.add_argument("--config", type=Path, help="TOML file of options (see above); command-line flags win")
    sub = p.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")

    def command(name: str, help: str, *examples: str):
        sp = sub.add_parser(name, help=help, description=help, epilog=_examples(*examples),
                            formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
        # after the command too (`mfr mask in out --config mfr.toml`); read by apply_config
        sp.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML file of options; flags win")
        return sp

    def retry_option(sp):
        sp.add_argument("--retry-failed", **SWITCH,
                        help="do again the inputs an earlier run recorded as failed (missing, undecodable, error, "
                             "...; not no_face): a rerun skips every input with a row, and these rows are replaced")

    def recognition_workers_option(sp):
        sp.add_argument("--recognition-workers", type=positive_int,
                        help="most recognition actors, one GPU each, where the cluster has GPUs (default: as many "
                             "as it holds or can grow to); without GPUs the CPU pool's actors embed their own "
                             "batches")

    def job_options(sp, batch_size: int):
        sp.add_argument("--quiet", **SWITCH, help="no progress bar, only the summary table")
        sp.add_argument("--strict", **SWITCH,
                        help="exit 1 when any input failed (undecodable, missing, ...); no_face is not a failure")
        sp.add_argument("--workers", type=positive_int,
                        help="most actors in the CPU pool (default: as many as the cluster holds or can grow to; "
                             "0.9 CPU each; the local pool: one process per CPU)")
        sp.add_argument("--batch-size", type=positive_int, default=batch_size,
                        help=f"images per actor call (default {batch_size})")
        sp.add_argument("--rows-per-shard", type=positive_int, default=ROWS_PER_SHARD,
                        help=f"rows per manifest / embedding Parquet file (default {ROWS_PER_SHARD}; smaller files "
                             "appear sooner, larger ones are fewer)")
        sp.add_argument("--dry-run", **SWITCH,
                        help="list what would be processed and where it would go; start nothing, write nothing")
        max_pixels_option(sp)

    def max_pixels_option(sp):
        sp.add_argument("--max-pixels", type=pixel_limit, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse images whose header declares more pixels, before decoding them (status "
                             f"too_large; default {DEFAULT_MAX_PIXELS:,}: decompression bombs); raise it for larger "
                             "genuine photos (with --retry-failed on an output that refused them)")

    def executor_option(sp):
        sp.add_argument("--executor", choices=("auto", "local", "ray"), default="auto",
                        help="where the job runs: ray (the cluster `ray.init()` finds, else a Ray of its own), local "
                             "(a process pool on this machine, no Ray), or auto (default: local when no cluster is "
                             "reachable and at most 10,000 images are to do, else ray)")

    def model_options(sp, several: bool = False, each: str = ""):
        if several:  # run, evaluate: --model and --models are one option, so the last given wins (a flag over a file)
            sp.add_argument("--model", dest="models", metavar="MODEL",
                            help="built-in model (see `mfr models list`) or a path to an .onnx file (default sface)")
            sp.add_argument("--models", dest="models",
                            help=f"several models, comma-separated (e.g. sface,dlib-resnet): one report row each{each}; "
                                 "the same option as --model, so the last of the two given wins")
        else:
            sp.add_argument("--model", default="sface",
                            help="built-in model (see `mfr models list`) or a path to an .onnx file (default sface)")
        sp.add_argument("--accept-model-licence", **SWITCH,
                        help="accept a built-in model's restrictive licence (insightface-mbf: non-commercial)")

    def face_options(sp, default_kind, alignment_help):
        sp.add_argument("--input-kind", choices=("photos", "masked", "crops"), default=None,
                        help="what the images are, which sets how faces are found (maskgen.finder): photos "
                             "(MTCNN), masked (photos of people in masks: MTCNN and YuNet merged), crops "
                             f"(tight face crops: always padded before detection) (default {default_kind})")
        sp.add_argument("--crop-mode", choices=("auto", "on", "off"), default=None,
                        help="pad the image before detection: auto (when a face fills the image or a small "
                             "image has none), on (always, for datasets of tight crops) or off (never) "
                             "(default: the input kind's, on for crops, else auto)")
        sp.add_argument("--second-look", choices=("on", "off"), default=None,
                        help="when padding finds no face, look again more permissively and keep a plausible face "
                             "that fills the crop (the manifest's and shards' `source` ends in +second-look) "
                             "(default: the input kind's, on for masked and crops, off for photos)")
        sp.add_argument("--alignment", choices=ALIGNMENTS, default="five-point",
                        help=f"{alignment_help} (default five-point)")
        turned_option(sp)

    def turned_option(sp):
        sp.add_argument("--turned", action="store_true", default=None,
                        help="faces may be turned a quarter or half turn (scans, photos whose camera recorded no "
                             "orientation): an image without an upright face is searched turned, and a face "
                             "O-Net reads as turned is taken so (`source` ends in +turned90/180/270)")

    m = command("mask", "draw synthetic masks on every face (the augment job)",
                "mfr mask ../shared/data/faces out/masked --style random --seed 7",
                "mfr mask s3://bucket/faces s3://bucket/masked --style surgical --quiet",
                "mfr mask ../shared/data/seed/landmark/test.csv out/seed --images ../shared/data/seed/sample",
                "mfr mask /data/tight-crops out/masked-crops --input-kind crops --alignment eyes")
    m.add_argument("input", help="folder or s3://bucket/prefix of images, or an input manifest (.csv/.parquet: "
                                 "path, identity, masked, face_type, part_0_x ... part_67_y; one row per "
                                 "face given by landmarks)")
    m.add_argument("output", help="folder or s3:// prefix for images/, crops/ and manifest/")
    manifest_options(m)
    m.add_argument("--style", choices=STYLE_NAMES, default="seed",
                   help="mask style (default seed: the seed project's black polygon; random: one per face)")
    m.add_argument("--seed", type=run_seed, default=0, help="run seed: same seed, same masks (default 0)")
    m.add_argument("--outputs", choices=("image", "crops", "both"), default="both",
                   help="write whole masked images, aligned 112x112 crops, or both (default both)")
    m.add_argument("--face", choices=("all", "center", "largest"), default="all",
                   help="which faces of an image are masked: all (default), center (the face a centred dataset "
                        "is about: nearest the centre, weighted by size and score) or largest")
    # the same option as --face, so whichever comes last wins (a flag over a --config file's largest_only)
    m.add_argument("--largest-only", dest="face", action="store_const", const="largest",
                   help="the same as --face largest")
    m.add_argument("--leave-worn-masks", action="store_true", default=None,
                   help="leave a face that wears a mask already as it is (maskgen.worn: its mouth and chin show "
                        "little skin colour while its forehead or the bridge of its nose does): its row says so, and "
                        "an image every face of which wears one is already_masked (README, Masking faces)")
    face_options(m, "photos",
                 "points the crops are aligned with: five-point (the unmasked detection's), eyes (the eyes "
                 "alone, located on the unmasked image by maskgen.eyes), or auto (eyes when the 5 points are "
                 "implausible); recorded per face in the manifest")
    job_options(m, 32)
    retry_option(m)
    executor_option(m)

    e = command("embed", "embedding shards (Parquet) for every face (the embed job)",
                "mfr embed ../shared/data/faces out/emb/unmasked",
                "mfr embed out/masked out/emb/masked --from-augment --masked",
                "mfr embed s3://bucket/faces s3://bucket/emb --model dlib-resnet",
                "mfr embed /data/masked-crops out/emb/masked --masked --input-kind crops --alignment eyes")
    e.add_argument("input", help="folder / s3:// prefix / input manifest of images, or an augment output "
                                 "with --from-augment")
    e.add_argument("output", help="folder or s3:// prefix for shards/")
    manifest_options(e)
    model_options(e)
    e.add_argument("--masked", action=argparse.BooleanOptionalAction, default=None,
                   help="mark these faces as masked (the probes)")
    e.add_argument("--from-augment", **SWITCH,
                   help="embed the masked faces of an augment output, aligned with their unmasked detection "
                        "(they are masked: implies --masked)")
    face_options(e, "masked with --masked, else photos",
                 "points the faces are aligned with: five-point (the detector's), eyes (the eyes alone, located "
                 "by maskgen.eyes: steadier when faces are found again under masks), or auto (eyes when the 5 "
                 "points are implausible); use the same for probes and gallery. With --from-augment, eyes and "
                 "auto take the points augment aligned its crops with, so run mask with the same --alignment")
    e.add_argument("--mode", choices=tuple(MODES), default="plain",
                   help="matching mode (recog.matching): masked-gallery draws --mask-style on unmasked faces "
                        "before embedding; flip averages each face with its mirror; upper-face hides the "
                        "region under the mask line (default plain)")
    e.add_argument("--mask-style", choices=STYLE_NAMES, default=None,
                   help="the mask masked-gallery draws (default seed); --seed picks its random choices")
    e.add_argument("--seed", type=run_seed, default=0, help="run seed for --mode masked-gallery (default 0)")
    e.add_argument("--face", choices=("center", "largest", "all"), default="center",
                   help="which faces of an image are embedded: center (default: nearest the centre, weighted by "
                        "size and score; right more often than largest on LFW-style crops, "
                        "bench/bench_face_policy.py), largest, or all (one row each)")
    recognition_workers_option(e)
    job_options(e, 32)
    retry_option(e)
    executor_option(e)

    v = command("evaluate", "a dataset's own images to a report in one command: a pairs protocol, identification "
                            "lists, or its real masked images against its unmasked ones",
                "mfr evaluate ../shared/data/masked_crops/manifest.csv out/eval-crops",
                "mfr evaluate /data/c-RMFRD out/eval --pairs Protocol_verification/AFDB_final_Jeff.csv --missing skip",
                "mfr evaluate /data/lfw out/eval-lfw --pairs /data/lfw/pairs.txt --input-kind photos",
                "mfr evaluate /data/c-RMFRD out/eval-id --lists AFDB_gallery_fianl.csv AFDB_probe_final.csv",
                "mfr evaluate ../shared/data/masked_crops/manifest.csv out/eval-crops --models sface,dlib-resnet")
    v.add_argument("input", help="folder or s3:// prefix of the images, or an input manifest (.csv/.parquet with a "
                                 "path column, optional identity and masked columns)")
    v.add_argument("output", help="where embeddings/ and report/ go")
    manifest_options(v)
    v.add_argument("--pairs", help="a pairs file: LFW pairs.txt (its 10 folds give k-fold accuracy) or "
                                   "pairsDevTest.txt, the seed's c-RMFRD CSV (Input,Target,Label; GBK or UTF-8) or a "
                                   "plain a,b,label CSV")
    v.add_argument("--lists", nargs=2, metavar=("GALLERY", "PROBES"),
                   help="identification lists (one image path per line, the seed's Protocol_identification files)")
    v.add_argument("--masked-rule", default=None,
                   help="without --pairs or --lists, which images are the masked probes when the input is a folder "
                        "or a manifest without a masked column: "
                        "seed (the seed's naming: unmasked files are <A>_<B>_<person>_<4 digits>) or a regular "
                        "expression masked file names match (default seed; a manifest's masked column wins)")
    retry_option(v)
    v.add_argument("--missing", choices=("error", "skip"), default=None,
                   help="an image the protocol names that is not in the dataset: stop (default) or leave its "
                        "pairs / entries out and count them")
    v.add_argument("--gallery-template", choices=("best", "mean"), default="best",
                   help="identification gallery: every image an entry (best, default) or one mean template per "
                        "identity")
    v.add_argument("--input-kind", choices=("photos", "masked", "crops"), default="masked",
                   help="how faces are found (maskgen.finder presets; default masked: photos and crops of people "
                        "in real masks)")
    v.add_argument("--crop-mode", choices=("auto", "on", "off"), default=None,
                   help="pad the image before detection (default: the input kind's)")
    v.add_argument("--second-look", choices=("on", "off"), default=None,
                   help="look again more permissively where padding finds no face (default: the input kind's)")
    v.add_argument("--face", choices=("center", "largest"), default="center",
                   help="the face of each image that is embedded (default center)")
    turned_option(v)
    model_options(v, several=True, each=", each embedded in a pass of its own")
    v.add_argument("--quiet", **SWITCH, help="no progress bar, only the summary and the report's paths")
    v.add_argument("--workers", type=positive_int,
                   help="most actors in the CPU pool (detection and alignment; they also embed where the cluster "
                        "has no GPUs) (default: as many as the cluster holds or can grow to)")
    recognition_workers_option(v)
    v.add_argument("--batch-size", type=positive_int, default=32, help="images per actor call (default 32)")
    max_pixels_option(v)
    executor_option(v)

    s = command("score", "verification and identification report from masked-probe and unmasked-gallery shards",
                "mfr score out/emb/masked out/emb/unmasked out/report",
                "mfr score s3://bucket/emb/masked s3://bucket/emb/unmasked s3://bucket/report --force",
                "mfr score out/a/masked out/a/unmasked out/report --name sface --compare dlib out/b/masked "
                "out/b/unmasked --fuse sface,dlib",
                "RAY_ADDRESS=auto mfr score s3://b/emb/masked s3://b/emb/unmasked s3://b/report --distributed")
    s.add_argument("probes", help="shards of masked faces (an embed output)")
    s.add_argument("gallery", help="shards of unmasked faces (an embed output)")
    s.add_argument("output", help="where report.json, report.md, roc.png, scores.png and cmc.png go")
    s.add_argument("--gallery-per-identity", type=positive_int, default=1,
                   help="unmasked images per identity in the gallery (first in key order; default 1)")
    s.add_argument("--gallery-template", choices=("best", "mean"), default="best",
                   help="best: every gallery image an entry, an identity scores as its best image (default); "
                        "mean: one template per identity, the normalised mean of its normalised embeddings (a "
                        "Euclidean model's: their plain mean)")
    s.add_argument("--force", **SWITCH, help="make the report even if one from the same shards exists")
    s.add_argument("--name", help="the first method's name in the report (default: its model)")
    s.add_argument("--compare", nargs=3, action="append", default=[], metavar=("NAME", "PROBES", "GALLERY"),
                   help="one more method side by side in the same tables and plots (repeatable)")
    s.add_argument("--fuse", action="append", default=[], metavar="NAME,NAME",
                   help="fuse these methods' scores (z-norm on impostors, averaged) into one more row (repeatable)")
    s.add_argument("--max-pairs", type=positive_int,
                   help="verification comparisons kept before impostors are sampled (a seeded sample per probe; "
                        "every genuine pair is kept; default 2000000)")
    s.add_argument("--distributed", **SWITCH,
                   help="score with Ray tasks over the probe shards and the gallery in parts (on the cluster of "
                        "RAY_ADDRESS, else a local Ray): same figures, no process holds the whole gallery or "
                        "score matrix")
    s.add_argument("--gallery-part-rows", type=positive_int,
                   help="gallery entries per part with --distributed (default 262144: 512 MiB at 512-d)")
    s.add_argument("--score-device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="with --distributed: score blocks on GPUs (one cosine model), CPUs, or auto: GPUs where "
                        "the cluster has or can add them (default)")
    s.add_argument("--score-tasks-per-gpu", type=positive_int,
                   help="with --distributed on GPUs: scoring tasks that share one GPU (default 4)")

    r = command("run", "dataset to report: mask, embed both sides, score",
                "mfr run ../shared/data/faces out/run",
                "mfr run s3://bucket/faces s3://bucket/runs/1 --style random --model dlib-resnet",
                "mfr run ../shared/data/faces out/modes --modes plain,masked-gallery,flip,upper-face",
                "mfr run ../shared/data/faces out/fused --models sface,dlib-resnet --fuse",
                "mfr run list.csv out/listed --images s3://bucket/faces")
    r.add_argument("dataset", help="folder-per-identity images (folder or s3:// prefix), or an input manifest "
                                   "(.csv/.parquet: path, identity; each identity's first row is its gallery image)")
    r.add_argument("output", help="where masked/, embeddings/ and report/ go")
    manifest_options(r)
    r.add_argument("--style", choices=STYLE_NAMES, default="seed", help="mask style (default seed)")
    r.add_argument("--seed", type=run_seed, default=0, help="run seed (default 0)")
    model_options(r, several=True)
    r.add_argument("--modes", default=",".join(DEFAULT_MODES),
                   help="matching modes, comma-separated: plain, masked-gallery (the gallery wears the probes' "
                        "mask), flip (mirror averaging), upper-face (only above the mask line); "
                        f"default {','.join(DEFAULT_MODES)}")
    r.add_argument("--fuse", **SWITCH,
                   help="with several --models: one more row per mode, the models' scores z-normalised on "
                        "impostors and averaged")
    r.add_argument("--face", choices=("center", "largest", "all"), default="center",
                   help="which faces of each image are masked and embedded: center (default), largest, or all "
                        "(every face a probe or gallery entry of the image's identity)")
    turned_option(r)
    recognition_workers_option(r)
    job_options(r, 16)
    retry_option(r)
    executor_option(r)

    d = command("demo", "the whole job on the embedded demo dataset (what `make demo` runs)",
                "mfr demo", "mfr demo --out /tmp/demo --style surgical")
    d.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    d.add_argument("--style", choices=STYLE_NAMES, default="seed", help="mask style (default seed)")
    model_options(d)
    d.add_argument("--quiet", **SWITCH, help="no progress bars")

    md = command("models", "list, describe and build the recognition models",
                 "mfr models list", "mfr models describe dlib-resnet", "mfr models build sface",
                 "mfr models describe path/to/model.onnx")
    md.add_argument("action", choices=("list", "describe", "build"),
                    help="list: the built-in models; describe: a model's spec (JSON); build: fetch, convert and "
                         "cache a built-in model, print its path and SHA-256")
    md.add_argument("name", nargs="?", help="built-in model name or .onnx path (describe, build)")
    md.add_argument("--accept-model-licence", **SWITCH, help="accept a restrictive licence (build; describe of a licensed model's file)")
    return p


# options whose flag takes names comma-separated (--models sface,dlib-resnet; score's --fuse a,b): a
# config file may give them as text, as the flag, or as an array of names (the README's "an option of
# several values takes an array" read as that; it said "expects text")
COMMA_SEPARATED = frozenset({"models", "modes", "fuse"})


def _config_one(action: argparse.Action, value, refuse):
    """One value of an option from TOML, checked as its flag's text would be."""
    if action.dest in COMMA_SEPARATED and isinstance(value, list):
        if not (value and all(isinstance(v, str) and v.strip() and "," not in v for v in value)):
            refuse(f"expects names, comma-separated in one text or an array of them, got {value!r}")
        value = ",".join(value)
    if isinstance(value, (list, dict, bool)):  # true for --style said "expects one value"
        kinds = {positive_int: "a whole number", pixel_limit: "a whole number", int: "a whole number",
                 float: "a number", None: "text"}
        kind = (f"one of {', '.join(map(str, action.choices))}" if action.choices is not None
                else kinds.get(action.type, "one value"))
        refuse(f"expects {kind}, got {value!r}")
    if action.type is None:
        if not isinstance(value, str):
            kind = "names, comma-separated in one text or an array of them" if action.dest in COMMA_SEPARATED \
                else "text"
            refuse(f"expects {kind}, got {value!r}")
    else:
        try:  # from its text, as the flag is: int("7.9") fails where int(7.9) gave 7
            value = action.type(str(value))
        except argparse.ArgumentTypeError as exc:
            refuse(str(exc))
        except (TypeError, ValueError):
            kind = {int: "a whole number", float: "a number"}.get(action.type, "a value of its kind")
            refuse(f"expects {kind}, got {value!r}")
    if action.choices is not None and value not in action.choices:
        refuse(f"{value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def _config_args(action: argparse.Action, value, refuse):
    """What one use of the flag takes: one value, or a TOML array of `nargs` values (`--lists`)."""
    if not isinstance(action.nargs, int):
        return _config_one(action, value, refuse)
    if not isinstance(value, list) or len(value) != action.nargs:
        refuse(f"expects an array of {action.nargs} values, got {value!r}")
    return [_config_one(action, v, refuse) for v in value]


def config_value(action: argparse.Action, value, refuse):
    """A TOML value for an option, checked as strictly as the flag: a switch takes true or false (the
    string "false" is not false), a number option a whole number where it wants one (7.9 is not 7),
    a choice one of its choices, a text option text; an option that takes several values an array
    of them, and one that can be given several times an array of its uses. `refuse(why)` does not
    return. None: the key sets nothing (a switch set to false whose flag stores a constant)."""
    if action.nargs == 0:  # a switch (--quiet / --no-quiet), or store_const (--largest-only is --face largest)
        if not isinstance(value, bool):
            refuse(f"expects true or false, got {value!r}")
        if isinstance(action, argparse._StoreConstAction) and not isinstance(action, argparse._StoreTrueAction):
            return action.const if value else None
        return value
    if isinstance(action, argparse._AppendAction):  # --compare, --fuse: one array item per use of the flag
        if not isinstance(value, list):
            refuse(f"expects an array (one item per use of the flag), got {value!r}")
        uses = [_config_args(action, v, refuse) for v in value]
        # fuse = ["sface", "dlib"] reads as two fusions of one model each, where `models = [...]` is one list
        if action.dest == "fuse" and any(len(_names(u)) < 2 for u in uses):
            refuse(f"each item is one fusion of two or more methods, e.g. fuse = [\"sface,dlib\"] or "
                   f"[[\"sface\", \"dlib\"]], got {value!r}")
        return uses
    return _config_args(action, value, refuse)


def _config_options(sub: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """A command's options by the names a config file uses: each flag without its dashes, `-` or `_`
    (`--batch-size`: batch-size, batch_size). --config and --help are not options a file sets."""
    return {flag.lstrip("-").replace("-", "_"): action for action in sub._actions
            for flag in action.option_strings if action.dest not in ("config", "help")
            and not (isinstance(action, argparse.BooleanOptionalAction) and flag.startswith("--no-"))}


def apply_config(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Options from --config become the subcommand's defaults, so command-line flags still win. Every
    key is checked, whichever command runs: a misspelt key in [embed] fails `mfr mask` too, as the
    file is one configuration."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10 (Ubuntu 22.04's, cluster.yaml's nodes): the same parser as a package
        import tomli as tomllib

    pre = argparse.ArgumentParser(prog="mfr", add_help=False, allow_abbrev=False)
    pre.add_argument("--config", type=Path, action="append")
    known, rest = pre.parse_known_args(argv)
    if known.config is None:
        return
    flags = argv[:argv.index("--")] if "--" in argv else argv
    if {"--version", "-h", "--help"} & set(flags):  # they read no option: a broken or missing file must not hide them
        return
    if len(known.config) > 1:  # (argparse kept the last: the first file's options were dropped without a word)
        parser.error(f"--config is given {len(known.config)} times ({', '.join(map(str, known.config))}): one "
                     "file holds a run's options; put them in one (flags on the command line still win)")
    known.config = known.config[0]
    try:
        data = tomllib.loads(known.config.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        parser.error(f"--config {known.config}: not UTF-8 text, as TOML must be (byte {exc.start}: "
                     f"{exc.object[exc.start:exc.start + 1]!r})")
    except tomllib.TOMLDecodeError as exc:  # a JSON or YAML file read as TOML: say what the file must be
        parser.error(f"--config {known.config}: not a TOML file ({exc}); a config file is TOML: `key = value` "
                     "lines and [command] tables (README, --config)")
    except OSError as exc:
        parser.error(f"--config {known.config}: {exc}")
    name = next((a for a in rest if a in COMMANDS), None)
    if name is None:
        return

    def refuse(why: str):
        parser.error(f"--config {known.config}: {why}")

    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    options = {command: _config_options(sp) for command, sp in subparsers.items()}
    top, table = {}, {}  # the running command's defaults: its table's keys win over top-level ones
    given_top = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key not in COMMANDS:
                refuse(f"no command named [{key}] (commands: {', '.join(COMMANDS)})")
            given = {}
            for option, item in value.items():
                action = options[key].get(option.replace("-", "_"))
                if action is None:
                    refuse(f"[{key}] has no option {option!r}")
                checked = config_value(action, item, lambda why: refuse(f"[{key}] {option}: {why}"))
                # dry_run and dry-run, or face and largest_only: the file's order chose without a word
                # (a switch set to false that stores a constant sets nothing: `largest_only = false`)
                if checked is not None and given.setdefault(action.dest, option) != option:
                    refuse(f"[{key}] sets one option twice: {given[action.dest]} and {option}")
                if key == name and checked is not None:
                    table[action.dest] = checked
        else:
            holders = {c: o[key.replace("-", "_")] for c, o in options.items() if key.replace("-", "_") in o}
            if not holders:
                refuse(f"no command has an option {key!r}")
            clashes = []  # the commands the key sets an option of that another top-level key set
            for command, action in holders.items():  # a top-level key is each command's that has the option
                checked = config_value(action, value, lambda why: refuse(
                    f"{key}: {why} for `mfr {command}`; a top-level key is every command's that has the option: "
                    f"put it under [{name}] (the table of each command it is for)"))
                # per command: `model` and `models` are one option of `mfr run` and `mfr evaluate` only
                if checked is not None and given_top.setdefault((command, action.dest), key) != key:
                    clashes.append((command, given_top[(command, action.dest)]))
                if command == name and checked is not None:
                    top[action.dest] = checked
            if clashes:
                refuse(f"sets one option of {', '.join(f'`mfr {c}`' for c, _ in clashes)} twice at the top "
                       f"level: {clashes[0][1]} and {key}")
    chosen = {**top, **table}
    subparsers[name].set_defaults(**chosen)


def warnings_as_notes(command: str) -> None:
    """Our own warnings (a protocol file's skipped lines, ...) print as one `mfr CMD: note:` line each,
    not as Python's two lines with a source file and line; other libraries' keep Python's form."""
    import warnings

    if getattr(warnings.showwarning, "mfr_notes", False):  # main() called again in one process
        return
    ours = tuple(str(Path(__file__).resolve().parents[1] / d) + os.sep for d in ("jobs", "maskgen", "recog"))
    python_form = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(ours):
            print(f"mfr {command}: note: {message}", file=sys.stderr)
        else:
            python_form(message, category, filename, lineno, file, line)

    show.mfr_notes = True
    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:  # `mfr` alone: what it does and its commands, not argparse's "arguments are required"
        parser.print_help(sys.stderr)
        return 2
    apply_config(parser, argv)
    args = parser.parse_args(argv)
    import jobs.pool
    from jobs.lease import OutputBusy
    from jobs.storage import new_local_folder, remove_left_empty

    jobs.pool.TERM_AS_INTERRUPT = True
    jobs.pool.interrupt_on_sigterm()
    warnings_as_notes(args.command)
    if getattr(args, "quiet", False):
        # Ray's core workers log warnings of their own to stderr ("E ... core_worker ..."): quiet means quiet
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")

    output = output_of(args)
    new = None if output is None or getattr(args, "dry_run", False) else new_local_folder(output)
    code, failure = None, None
    try:
        code, failure = _run_command(args)
        return code
    finally:
        # a command that failed leaves no empty folders of its own making (another job's are not touched)
        if new is not None and code not in (0, 1) and not isinstance(failure, OutputBusy):
            remove_left_empty(new)


def _run_command(args) -> tuple[int, BaseException | None]:
    """(exit code, the failure it reports) of the command `args` names."""
    import jobs.pool
    from jobs.storage import StorageError

    try:
        refuse_output_lost_with_the_job(args)
        refuse_output_out_of_reach(args)
        # what every worker needs, refused here, before any output is made: the model cache, and the
        # cluster RAY_ADDRESS names (a job on the local pool needs none)
        job = args.command in ("mask", "embed", "evaluate", "run", "demo") and not getattr(args, "dry_run", False)
        if job:
            from maskgen.runtime import cache_dir

            cache_dir()
        if (job or getattr(args, "distributed", False)) and getattr(args, "executor", "auto") != "local":
            jobs.pool.check_ray_address(os.environ.get("RAY_ADDRESS", ""))
        return COMMAND_FUNCTIONS[args.command](args), None
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0, None
    except KeyboardInterrupt as exc:
        ProgressBar.close_open()  # before the last line: the bar was drawn again below it
        print(f"\nmfr {args.command}: interrupted. Finished batches are kept; run the same command again "
              "to do the rest.", file=sys.stderr)
        return 130, exc
    except (StorageError, ValueError, OSError, RuntimeError) as exc:  # OSError: a file given that cannot be read
        ProgressBar.close_open()
        print(f"mfr {args.command}: {root_cause(exc)}", file=sys.stderr)
        return 2, exc
    except Exception as exc:
        if not type(exc).__module__.startswith("ray."):
            raise  # our own bug: the traceback is what a developer needs
        ProgressBar.close_open()
        print(f"mfr {args.command}: {root_cause(exc)}", file=sys.stderr)
        return 2, exc


def output_of(args):
    """The output a command writes to (`--out` for the demo), None for commands without one."""
    return getattr(args, "output", None) or (getattr(args, "out", None) if args.command == "demo" else None)


def refuse_output_lost_with_the_job(args) -> None:
    """Under `ray job submit` (Ray sets RAY_JOB_CONFIG_JSON_ENV_VAR for the job's driver) the command
    runs in Ray's copy of the working folder, in its session temp folder (removed when Ray's cache of
    copies passes 10 GB or the session is cleaned): a relative output was written there, where no one
    looks, and the job said it succeeded. A relative input may well be in that copy (a dataset uploaded
    with the working folder), so only outputs are refused."""
    from jobs.inputs import relative_in_submitted_job

    output = output_of(args)
    if isinstance(output, (str, Path)) and relative_in_submitted_job(output):
        raise ValueError(f"{output}: a relative output under `ray job submit` is written inside Ray's copy of the "
                         f"working folder ({os.getcwd()}), in its session temp folder, where Ray removes it at will; "
                         "give an absolute path (expanded by your shell: \"$PWD/out\") or an s3:// URI")


def refuse_output_out_of_reach(args) -> None:
    """A local output with a file in its way, or under a folder that may not be looked into: said in
    words, naming the output, before the command reads or writes there (`mfr run`, `evaluate` and
    `score` said "[Errno 13] Permission denied" of a path inside it that the user never gave)."""
    from jobs.storage import LocalStore, StorageError, open_store

    output = output_of(args)
    if output is None:
        return
    try:
        store = open_store(output)
    except (StorageError, ValueError):
        return  # said by the command, in its own words
    if isinstance(store, LocalStore):
        store.refuse_file_in_the_way()
        # the output folder itself closed to this user (the commands named a file inside it, or said "cannot read")
        if store.root.is_dir() and not os.access(store.root, os.R_OK | os.W_OK | os.X_OK):
            raise StorageError(f"cannot write under {store.root}: Permission denied")


def _on_off(value: str | None) -> bool | None:
    return None if value is None else value == "on"


def cmd_mask(args) -> int:
    from jobs.augment import plan_augment, run_augment
    from maskgen.augment import AugmentOptions
    from maskgen.finder import FinderOptions
    from maskgen.worn import WornMaskCheck

    finder = FinderOptions.for_inputs(args.input_kind or "photos", crop_mode=args.crop_mode,
                                      second_look=_on_off(args.second_look), turned=args.turned)
    options = AugmentOptions(style=args.style, seed=args.seed, outputs=args.outputs,
                             face=args.face, alignment=args.alignment, finder=finder,
                             worn_masks=WornMaskCheck() if args.leave_worn_masks else None)
    if args.dry_run:
        _print_plan("mask", plan_augment(args.input, args.output, args.images, retry_failed=args.retry_failed,
                                         options=options, manifest_encoding=args.manifest_encoding))
        return 0
    bar = _progress(args.quiet, "mask")
    summary = run_augment(args.input, args.output, options, images_uri=args.images, workers=args.workers,
                          batch_size=args.batch_size, rows_per_shard=args.rows_per_shard, progress=bar,
                          executor=args.executor, retry_failed=args.retry_failed, max_pixels=args.max_pixels,
                          manifest_encoding=args.manifest_encoding)
    _finish("mask", summary, bar)
    return 1 if args.strict and failed_inputs(summary) else 0


def cmd_embed(args) -> int:
    from jobs.embed import plan_embed, run_embed

    # (not --seed: a --config file's top-level seed, meant for mask and run, reaches embed too)
    if args.mask_style is not None and args.mode != "masked-gallery":
        raise ValueError(f"--mask-style chooses the mask --mode masked-gallery draws on the gallery; with --mode "
                         f"{args.mode} nothing is masked")
    # an augment output's faces wear its masks: without --masked they were recorded unmasked, and a
    # report over them read as masked probes against an unmasked gallery of the same masked faces
    if args.from_augment and args.masked is False:
        raise ValueError("--from-augment embeds an augment output's masked faces: --no-masked (or `masked = false` "
                         "in a --config file) does not apply to them")
    args.masked = bool(args.masked) or args.from_augment

    if args.dry_run:
        _print_plan("embed", plan_embed(args.input, args.output, args.model, from_augment=args.from_augment,
                                        accept_licence=args.accept_model_licence, images_uri=args.images,
                                        mode=args.mode, alignment=args.alignment, retry_failed=args.retry_failed,
                                        masked=args.masked, face=args.face, finder_kind=args.input_kind,
                                        crop_mode=args.crop_mode, second_look=_on_off(args.second_look),
                                        turned=args.turned, manifest_encoding=args.manifest_encoding,
                                        mask_style=args.mask_style or "seed", seed=args.seed))
        return 0
    bar = _progress(args.quiet, "embed")
    summary = run_embed(args.input, args.output, args.model, masked=args.masked, from_augment=args.from_augment,
                        accept_licence=args.accept_model_licence, alignment=args.alignment,
                        images_uri=args.images, workers=args.workers,
                        recognition_workers=args.recognition_workers, batch_size=args.batch_size,
                        rows_per_shard=args.rows_per_shard, progress=bar,
                        mode=args.mode, mask_style=args.mask_style or "seed", seed=args.seed,
                        finder_kind=args.input_kind, crop_mode=args.crop_mode, face=args.face,
                        second_look=_on_off(args.second_look), turned=args.turned, executor=args.executor,
                        retry_failed=args.retry_failed, max_pixels=args.max_pixels,
                        manifest_encoding=args.manifest_encoding)
    _finish("embed", summary, bar)
    return 1 if args.strict and failed_inputs(summary) else 0


def cmd_score(args) -> int:
    from jobs.score import run_score

    _print_report(run_score(args.probes, args.gallery, args.output, gallery_per_identity=args.gallery_per_identity,
                            gallery_template=args.gallery_template, force=args.force, name=args.name,
                            also=[tuple(c) for c in args.compare], fuse=[_names(f) for f in args.fuse],
                            distributed=args.distributed, gallery_part_rows=args.gallery_part_rows,
                            score_device=args.score_device, score_tasks_per_gpu=args.score_tasks_per_gpu,
                            **({"max_pairs": args.max_pairs} if args.max_pairs else {})))
    return 0


def cmd_evaluate(args) -> int:
    from jobs.evaluate import run_evaluate
    from jobs.score import NothingToScore

    models = _names(args.models) if args.models is not None else ["sface"]
    bar = _progress(args.quiet, "evaluate")
    try:
        result = run_evaluate(args.input, args.output, models, pairs=args.pairs, lists=args.lists,
                              masked_rule=args.masked_rule, input_kind=args.input_kind, face=args.face,
                              gallery_template=args.gallery_template, missing=args.missing,
                              accept_licence=args.accept_model_licence, images_uri=args.images,
                              workers=args.workers, recognition_workers=args.recognition_workers,
                              batch_size=args.batch_size, crop_mode=args.crop_mode,
                              second_look=_on_off(args.second_look), turned=args.turned,
                              max_pixels=args.max_pixels, progress=bar,
                              retry_failed=args.retry_failed, manifest_encoding=args.manifest_encoding,
                              executor=args.executor)
    except NothingToScore as exc:
        if exc.summary is not None:  # the images were embedded: say how, then why there is no report
            _finish_models(exc.summaries, bar)
        raise
    _finish_models(result["embeds"], bar)
    _print_report({"paths": result["report"], "notes": result.get("notes"), "results": result.get("results"),
                   "paired": result.get("paired")})
    return 0


def _finish_models(summaries: dict, bar) -> None:
    """`mfr evaluate`'s summary of each model's pass, under the model's name where there are several."""
    for model, summary in summaries.items():
        if len(summaries) > 1:
            print(f"evaluate: {model}")
        _finish("evaluate", summary, bar)


def cmd_run(args) -> int:
    from jobs.run import plan_run, run_pipeline
    from jobs.score import NothingToScore
    from jobs.storage import open_store

    models = _names(args.models) if args.models is not None else ["sface"]  # --models ",," names none: refused
    lone_fusion = "note: --fuse takes two or more --models; with one it adds nothing" \
        if args.fuse and len(models) < 2 else None
    if args.dry_run:  # plan_run refuses the modes and models the job would refuse
        out = open_store(args.output)
        _print_plan("run", plan_run(args.dataset, args.output, models, _names(args.modes),
                                    accept_licence=args.accept_model_licence, images_uri=args.images,
                                    retry_failed=args.retry_failed, style=args.style, seed=args.seed, face=args.face,
                                    turned=bool(args.turned), manifest_encoding=args.manifest_encoding))
        print(f"then: embed the originals and the masked faces under {out.uri_of('embeddings')} with "
              f"{', '.join(models)} ({args.modes}), and score into {out.uri_of('report')}")
        if lone_fusion:
            print(lone_fusion)
        return 0
    if lone_fusion:  # the run says it too, as its notes go: on stderr
        print(f"mfr run: {lone_fusion}", file=sys.stderr)
    try:
        result = run_pipeline(args.dataset, args.output, style=args.style, seed=args.seed,
                              models=models, modes=_names(args.modes), fuse=args.fuse,
                              accept_licence=args.accept_model_licence,
                              progress_for=None if args.quiet else ProgressBar, workers=args.workers,
                              recognition_workers=args.recognition_workers, batch_size=args.batch_size,
                              rows_per_shard=args.rows_per_shard, face=args.face, executor=args.executor,
                              images_uri=args.images, retry_failed=args.retry_failed, max_pixels=args.max_pixels,
                              manifest_encoding=args.manifest_encoding, turned=bool(args.turned))
    except NothingToScore as exc:
        if exc.summary is not None:  # the images were processed: say how, then why there is no report
            _finish("run", exc.summary)
        raise
    _finish("run", result["run"])
    print(f"shards: {', '.join(result['targets'])}")
    _print_report(result["report"], remake="")
    return 1 if args.strict and failed_inputs(result["run"]) else 0


def cmd_demo(args) -> int:
    from jobs.demo import run_demo

    out = run_demo(args.out, style=args.style, model=args.model, progress_for=None if args.quiet else ProgressBar,
                   accept_licence=args.accept_model_licence)
    _finish("run", out["stages"]["run"])
    print(f"\ndemo: {out['identities']} identities, {out['images']} images, in {out['seconds']} s "
          "(a handful of packaged photos with synthetic variation: not a benchmark)")
    _print_figures(out["stages"]["report"])
    for label, key in (("dataset (cached)", "dataset"), ("masked images", "masked_images"),
                       ("aligned crops", "aligned_crops"), ("before/after contact sheet", "contact_sheet"),
                       ("manifest (Parquet)", "manifest"), ("gallery embedding shards", "gallery_shards"),
                       ("probe embedding shards", "probe_shards"), ("report", "report"), ("ROC plot", "roc"),
                       ("score distributions", "scores"), ("CMC plot", "cmc"), ("report data", "report_json")):
        print(f"  {label:<27} {out[key]}")
    return 0


def cmd_models(args) -> int:
    from recog.zoo import BUILTINS, builtin_path

    if args.action == "list":
        if args.name:
            raise ValueError(f"`mfr models list` takes no model name (got {args.name!r}): "
                             "`mfr models describe NAME` shows one")
        print(f"{'name':<16} {'input':>7}  {'dim':>4}  {'similarity':<10}  licence")
        for name, entry in BUILTINS.items():
            spec = entry.spec
            opt_in = " (opt-in: --accept-model-licence)" if spec.requires_licence_acceptance else ""
            print(f"{name:<16} {spec.input_size[0]:>3}x{spec.input_size[1]:<3}  {spec.embedding_size:>4}  "
                  f"{spec.similarity:<10}  {spec.licence}{opt_in}")
        return 0
    if not args.name:
        raise ValueError(f"`mfr models {args.action}` needs " + ("a model name or an .onnx path" if args.action ==
                         "describe" else "a built-in model's name (`mfr models list`)"))
    if args.action == "describe":
        if args.name in BUILTINS:
            print(json.dumps(BUILTINS[args.name].spec.to_dict(), indent=1, default=str))
            return 0
        from recog.embed import Embedder

        path = Path(args.name)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model file, and not a built-in model ({', '.join(BUILTINS)})")
        # the spec the jobs will use (a sidecar JSON beside the file wins over the file's metadata)
        embedder = Embedder(path, device="cpu", threads=1, accept_licence=args.accept_model_licence)
        print(f"spec from {embedder.spec_origin}", file=sys.stderr)
        # checked as a job checks it before any input, and printed only then: `describe X > spec.json`
        # saved a spec the model does not work with, exit 2
        embedder.check()
        print(json.dumps(embedder.spec.to_dict(), indent=1, default=str))
        return 0
    from maskgen.runtime import sha256_bytes

    if args.name not in BUILTINS and Path(args.name).suffix.lower() == ".onnx":
        raise ValueError(f"`mfr models build` builds the built-in models ({', '.join(BUILTINS)}); a model file of "
                         f"your own is used as it is: --model {args.name} (`mfr models describe {args.name}` "
                         "checks it)")
    path = builtin_path(args.name, accept_licence=args.accept_model_licence)
    print(f"{args.name}: {path} (sha256 {sha256_bytes(path.read_bytes())})")
    return 0


COMMAND_FUNCTIONS = {"mask": cmd_mask, "embed": cmd_embed, "score": cmd_score, "evaluate": cmd_evaluate,
                     "run": cmd_run, "demo": cmd_demo,
                     "models": cmd_models}


def root_cause(exc: BaseException) -> str:
    """The message a person needs: a worker's own error, not Ray's wrapping and traceback of it."""
    from jobs.storage import StorageError

    seen, current = set(), exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageError) and type(current).__module__.startswith("jobs."):
            return str(current)
        current = getattr(current, "cause", None) or current.__cause__
    text = str(exc)
    # across processes Ray keeps the worker's error only as text: find our own error's last line
    ours = re.findall(r"^\s*(?:jobs|maskgen|recog)\.[\w.]+: (.+)$", text, flags=re.MULTILINE)
    if ours:
        return ours[-1].strip()
    raised = _raised_in_our_code(text)
    if raised:
        return raised
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(" ")]
    return lines[-1] if lines else text


def _raised_in_our_code(text: str) -> str | None:
    """The message of the last built-in error (`ValueError: ...`) in a traceback text whose innermost
    frame is in this project: Ray Data appends its retry advice to the error's own message, so the
    message's last line would be Ray's, not ours."""
    found, ours = None, False
    for line in text.splitlines():
        frame = re.match(r'^\s*File "([^"]+)", line \d+', line)
        if frame:
            ours = bool(re.search(r"[/\\](jobs|maskgen|recog)[/\\][^/\\]+\.py$", frame.group(1)))
            continue
        error = re.match(r"^([A-Z]\w*(?:Error|Exception)): (.+)$", line)
        if error and ours:
            found = error.group(2).strip()
    return found


if __name__ == "__main__":
    sys.exit(main())
