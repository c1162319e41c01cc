"""`mfr`: the jobs from the command line. Local paths and s3:// URIs take the same flags.

    mfr run ../shared/data/faces out/run --style seed           # augment -> embed -> score
    mfr mask ../shared/data/faces out/masked --style random --seed 7
    mfr embed ../shared/data/faces out/emb/unmasked
    mfr embed out/masked out/emb/masked --from-augment --masked
    mfr score out/emb/masked out/emb/unmasked out/report

Each job runs on the Ray cluster that `ray.init()` finds (RAY_ADDRESS, or `ray job submit`), else
in-process. Exit codes: 0 done; 1 done, but some inputs failed and --strict was given; 2 bad
arguments or a job error (the message says which).
"""

from __future__ import annotations

import argparse
import sys
import time

from maskgen.masks import STYLE_NAMES


def _progress(quiet: bool, label: str):
    if quiet:
        return None
    last = [0.0]

    def show(summary):
        now = time.perf_counter()
        if now - last[0] >= 0.5:
            last[0] = now
            print(f"\r[{label}] {summary.line()}", end="", file=sys.stderr, flush=True)

    return show


def _finish(label: str, summary, quiet: bool) -> None:
    if not quiet:
        print(f"\r[{label}] {summary.line()}", file=sys.stderr)
    print(f"{label}: {summary.processed} images in {summary.seconds:.1f} s; " +
          ", ".join(f"{k}: {v}" for k, v in sorted(summary.statuses.items())))


def _failed(summary) -> int:
    return sum(v for k, v in summary.statuses.items() if k not in ("ok", "no_face"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mfr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--quiet", action="store_true", help="no progress line, only the summary")
        sp.add_argument("--strict", action="store_true", help="exit 1 when any input failed (undecodable, ...)")
        sp.add_argument("--workers", type=int, help="actors at most (default: the cluster's CPUs minus one)")

    m = sub.add_parser("mask", help="draw synthetic masks on every face (augment job)")
    m.add_argument("input", help="folder or s3://bucket/prefix of images")
    m.add_argument("output", help="folder or s3:// prefix for images/, crops/ and manifest/")
    m.add_argument("--style", choices=STYLE_NAMES, default="seed", help="mask style (default: seed)")
    m.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    m.add_argument("--outputs", choices=("image", "crops", "both"), default="both")
    m.add_argument("--largest-only", action="store_true", help="mask only the largest face per image")
    common(m)

    e = sub.add_parser("embed", help="embedding shards for every face (embed job)")
    e.add_argument("input", help="images, or an augment output with --from-augment")
    e.add_argument("output", help="folder or s3:// prefix for shards/")
    e.add_argument("--model", default="sface", help="built-in model (sface, dlib-resnet, insightface-mbf) or .onnx path")
    e.add_argument("--masked", action="store_true", help="mark these faces as masked (probes)")
    e.add_argument("--from-augment", action="store_true", help="embed the masked faces of an augment output")
    e.add_argument("--accept-model-licence", action="store_true", help="accept a model's restrictive licence")
    e.add_argument("--alignment", choices=("five-point", "eyes", "auto"), default="five-point")
    common(e)

    s = sub.add_parser("score", help="report from masked-probe and unmasked-gallery shards")
    s.add_argument("probes", help="shards of masked faces")
    s.add_argument("gallery", help="shards of unmasked faces")
    s.add_argument("output", help="where report.json, report.md, roc.png, cmc.png go")
    s.add_argument("--gallery-per-identity", type=int, default=1)

    r = sub.add_parser("run", help="dataset to report: mask, embed both sides, score")
    r.add_argument("dataset", help="folder-per-identity images (folder or s3://)")
    r.add_argument("output", help="where masked/, embeddings/ and report/ go")
    r.add_argument("--style", choices=STYLE_NAMES, default="seed")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--model", default="sface")
    r.add_argument("--accept-model-licence", action="store_true")
    r.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from jobs.storage import StorageError

    try:
        if args.command == "mask":
            from jobs.augment import run_augment
            from maskgen.augment import AugmentOptions

            options = AugmentOptions(style=args.style, seed=args.seed, outputs=args.outputs,
                                     largest_only=args.largest_only)
            summary = run_augment(args.input, args.output, options, workers=args.workers,
                                  progress=_progress(args.quiet, "mask"))
            _finish("mask", summary, args.quiet)
            return 1 if args.strict and _failed(summary) else 0
        if args.command == "embed":
            from jobs.embed import run_embed

            summary = run_embed(args.input, args.output, args.model, masked=args.masked,
                                from_augment=args.from_augment, accept_licence=args.accept_model_licence,
                                alignment=args.alignment, workers=args.workers,
                                progress=_progress(args.quiet, "embed"))
            _finish("embed", summary, args.quiet)
            return 1 if args.strict and _failed(summary) else 0
        if args.command == "score":
            from jobs.score import run_score

            out = run_score(args.probes, args.gallery, args.output, gallery_per_identity=args.gallery_per_identity)
            for kind, uri in out["paths"].items():
                print(f"{kind}: {uri}")
            return 0
        if args.command == "run":
            from jobs.run import run_pipeline

            result = run_pipeline(args.dataset, args.output, style=args.style, seed=args.seed, model=args.model,
                                  accept_licence=args.accept_model_licence,
                                  progress=_progress(args.quiet, "run"))
            for stage in ("augment", "gallery", "probes"):
                _finish(stage, result[stage], True)
            for kind, uri in result["report"]["paths"].items():
                print(f"{kind}: {uri}")
            return 0
    except (StorageError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"mfr {args.command}: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
