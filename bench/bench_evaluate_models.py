"""`mfr evaluate --models A,B` against each model evaluated alone, on real photos and crops.

    .venv/bin/python bench/bench_evaluate_models.py [--repeats 3] [--models sface,dlib-resnet]

Each model after the first takes the faces the first found from the output's rows instead of
detecting them again (`jobs.embed.RecordedFaces`); evaluated alone, each model detects every image
itself, as `--models` did before. Both sides run in this process on the local pool, into fresh
outputs, one after the other in each repeat; the table gives medians and their ratios (the whole
command, whose "alone" side also writes one report per model, and the later models' embedding
passes alone, the part the change is about), and checks that both give the same report rows. Datasets: the press photos of ../shared/data/faces (a manifest
marking every person's photos after the first as masked: a timing, not a masked protocol) and the
first `--crops-people` identities of masked_crops (its own masked column).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the project
sys.path.insert(0, str(HERE))
from lfw_like import shared_data  # noqa: E402


def photos_manifest(data: Path, path: Path) -> tuple[Path, Path]:
    rows = []
    for person in sorted(p for p in (data / "faces").iterdir() if p.is_dir()):
        for i, photo in enumerate(sorted(person.glob("*.jpg"))):
            rows.append({"path": f"{person.name}/{photo.name}", "identity": person.name, "masked": int(i > 0)})
    write(path, rows)
    return path, data / "faces"


def crops_manifest(data: Path, path: Path, people: int) -> tuple[Path, Path]:
    crops = data / "masked_crops"
    rows = list(csv.DictReader((crops / "manifest.csv").open(encoding="utf-8")))
    chosen = sorted({r["identity"] for r in rows})[:people]
    write(path, [{k: r[k] for k in ("path", "identity", "masked")} for r in rows if r["identity"] in chosen])
    return path, crops


def write(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "identity", "masked"])
        writer.writeheader()
        writer.writerows(rows)


def evaluate(manifest: Path, images: Path, out: Path, models: list[str]) -> tuple[float, dict, list]:
    """(the whole command's seconds, each model's embedding pass's seconds, the report's rows)."""
    from jobs.evaluate import run_evaluate

    started = time.perf_counter()
    result = run_evaluate(str(manifest), str(out), models, images_uri=str(images))
    seconds = time.perf_counter() - started
    rows = json.loads((out / "report" / "report.json").read_text())["results"]
    assert result["report"], out
    return seconds, {m: s.seconds for m, s in result["embeds"].items()}, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="the shared data folder (default ../shared/data)")
    parser.add_argument("--models", default="sface,dlib-resnet")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--crops-people", type=int, default=20)
    args = parser.parse_args()
    data = shared_data(args.data)
    models = args.models.split(",")
    print(f"models {', '.join(models)}; {args.repeats} repeat(s); local pool; medians\n")
    later = ", ".join(models[1:])
    print(f"| dataset | images | --models (s) | each alone, summed (s) | ratio | {later} pass in --models (s) | "
          f"{later} pass alone (s) | ratio | same report rows |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="mfr-bench-evaluate-") as tmp:
        tmp = Path(tmp)
        for name, (manifest, images) in (("faces (press photos)", photos_manifest(data, tmp / "photos.csv")),
                                         (f"masked_crops ({args.crops_people} people)",
                                          crops_manifest(data, tmp / "crops.csv", args.crops_people))):
            together, alone, reused, detected, same = [], [], [], [], True
            for r in range(args.repeats):
                seconds, passes, rows = evaluate(manifest, images, tmp / f"together-{r}", models)
                together.append(seconds)
                reused.append(sum(passes[m] for m in models[1:]))
                total, singles, own = 0.0, [], 0.0
                for m in models:
                    seconds, passes, row = evaluate(manifest, images, tmp / f"alone-{r}-{m}", [m])
                    total += seconds
                    own += passes[m] if m in models[1:] else 0.0
                    singles += row
                alone.append(total)
                detected.append(own)
                same &= [{k: v for k, v in row.items() if k != "name"} for row in rows] == \
                    [{k: v for k, v in row.items() if k != "name"} for row in singles]
            count = sum(1 for _ in manifest.open(encoding="utf-8")) - 1
            a, b = statistics.median(together), statistics.median(alone)
            c, d = statistics.median(reused), statistics.median(detected)
            print(f"| {name} | {count} | {a:.1f} | {b:.1f} | {b / a:.2f}x | {c:.1f} | {d:.1f} | {d / c:.2f}x | "
                  f"{'yes' if same else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
