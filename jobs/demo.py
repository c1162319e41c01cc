"""`mfr demo` (what `make demo` runs): the main job, augment -> embed -> score, on a small real-face
dataset that the project makes offline from photos shipped in PyPI packages.

Photos (SHA-256 checked): the group photo and the portrait in the `insightface` 2.1 source archive
(`insightface/data/images/t1.jpg`, `Tom_Hanks_54745.png`; fetched by pip, nothing installed) and the
astronaut portrait in scikit-image's wheel. Every face MTCNN finds in them becomes one identity, and
each identity gets `images_per_identity` LFW-size (250x250) pictures made by seeded crops, rotations,
lighting and scale changes and mirror flips (`vary_face`). The dataset is cached under
`$MFR_CACHE_DIR/demo/` and rebuilt identically when missing.

These are a handful of faces with synthetic variation, not a benchmark: the demo's figures say that
the pipeline runs end to end, nothing about any model's accuracy.

    mfr demo --out out/demo
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np

from maskgen.runtime import cache_dir, member_of_package, sha256_bytes, write_atomic

DATASET_VERSION = 2


@dataclass(frozen=True)
class PackagedPhoto:
    name: str
    package: str
    version: str | None  # None: read from the installed distribution
    member: str
    sha256: str

    def read(self) -> bytes:
        if self.version is None:
            try:
                data = Path(metadata.distribution(self.package).locate_file(self.member)).read_bytes()
            except (metadata.PackageNotFoundError, FileNotFoundError):
                raise RuntimeError(f"the demo photo {self.name} comes with {self.package}; install the project "
                                   "with the [demo] extra") from None
        else:
            cached = cache_dir() / "demo" / "photos" / f"{self.sha256[:16]}-{Path(self.member).name}"
            if cached.is_file():
                data = cached.read_bytes()
            else:
                data = member_of_package(self.package, self.version, self.member, sdist=True)
        if sha256_bytes(data) != self.sha256:
            raise RuntimeError(f"{self.name} from {self.package} does not have the expected SHA-256 "
                               f"{self.sha256}; refusing to use it")
        if self.version is not None and not cached.is_file():
            write_atomic(cached, data)
        return data


PHOTOS = (
    PackagedPhoto("group", "insightface", "2.1", "insightface-2.1/insightface/data/images/t1.jpg",
                  "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489"),
    PackagedPhoto("portrait", "insightface", "2.1", "insightface-2.1/insightface/data/images/Tom_Hanks_54745.png",
                  "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083"),
    PackagedPhoto("astronaut", "scikit-image", None, "skimage/data/astronaut.png",
                  "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"),
)


def vary_face(image: np.ndarray, box, rng: np.random.Generator, size: int = 250, plain: bool = False) -> np.ndarray:
    """One LFW-like picture of the face in `box`: the box grown about 2.2x around its centre, then
    (unless `plain`) a seeded rotation up to 12 degrees, shift, scale, a resolution drop, gamma,
    brightness and contrast change, and a mirror flip half the time. Pure: same inputs, same output."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1)
    expand, angle, shift = 2.2, 0.0, np.zeros(2)
    if not plain:
        expand = float(rng.uniform(1.9, 2.6))
        angle = float(rng.uniform(-12, 12))
        shift = rng.uniform(-0.08, 0.08, size=2) * side
    scale = size / (side * expand)
    matrix = cv2.getRotationMatrix2D((cx + shift[0], cy + shift[1]), angle, scale)
    matrix[:, 2] += np.array([size / 2, size / 2]) - np.array([cx + shift[0], cy + shift[1]])
    # beyond the photo, its edge's median colour: a reflection of a tight portrait repeated its face
    # (upside down too), and each copy was a face of its own in the manifest
    edge = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).reshape(-1, image.shape[2])
    fill = tuple(float(v) for v in np.median(edge, axis=0))
    out = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=fill)
    if plain:
        return out
    low = int(size * rng.uniform(0.45, 1.0))  # a lower-resolution camera
    if low < size:
        out = cv2.resize(cv2.resize(out, (low, low), interpolation=cv2.INTER_AREA), (size, size),
                         interpolation=cv2.INTER_LINEAR)
    gamma = float(rng.uniform(0.7, 1.4))
    table = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma, 0, 255).astype(np.uint8)
    out = cv2.LUT(out, table)
    out = cv2.convertScaleAbs(out, alpha=float(rng.uniform(0.8, 1.2)), beta=float(rng.uniform(-20, 20)))
    return np.ascontiguousarray(out[:, ::-1]) if rng.integers(2) else out


def build_dataset(images_per_identity: int = 6, seed: int = 0, root: Path | None = None) -> Path:
    """The demo dataset's image folder, a folder per identity (`<photo>-<face>/<n>.jpg`), cached and
    reused; `dataset.json` beside it lists the identities and the photos they came from."""
    from maskgen.decode import decode_image, encode_image
    from maskgen.detect import MTCNN

    key = hashlib.sha256(json.dumps([DATASET_VERSION, images_per_identity, seed, [p.sha256 for p in PHOTOS]])
                         .encode()).hexdigest()[:16]
    base = Path(root) if root is not None else cache_dir() / "demo" / f"dataset-{key}"
    root, done = base / "images", base / "dataset.json"  # the record sits beside the images, not among them
    if done.is_file():
        return root
    detector = MTCNN()
    identities = {}
    for photo in PHOTOS:
        image = decode_image(photo.read())
        faces = [f for f in detector.detect(image) if f.score >= 0.95 and f.width >= 40]
        for i, face in enumerate(sorted(faces, key=lambda f: f.box[0])):  # left to right
            name = photo.name if len(faces) == 1 else f"{photo.name}-{i + 1}"
            rng = np.random.default_rng([seed, len(identities)])
            identities[name] = []
            for n in range(images_per_identity):
                picture = vary_face(image, face.box, rng, plain=(n == 0))
                write_atomic(root / name / f"{n}.jpg", encode_image(picture, ".jpg", jpeg_quality=92))
                identities[name].append(f"{name}/{n}.jpg")
    if len(identities) < 3:
        raise RuntimeError(f"the demo photos gave only {len(identities)} identities; expected at least 3")
    write_atomic(done, json.dumps({"version": DATASET_VERSION, "identities": identities,
                                   "photos": [p.__dict__ for p in PHOTOS]}, indent=1).encode())
    return root


DEMO_OUTPUTS = ("run", "contact_sheet.png")


def refuse_foreign_demo_folder(out: Path) -> None:
    """The demo writes `run/` and `contact_sheet.png` into --out: a folder holding anything else, or a
    contact sheet without the demo's `run/` beside it, is the user's (their own contact_sheet.png was
    replaced, exit 0). `run/` itself is checked as every `mfr run` output is."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    entries = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    foreign = entries - set(DEMO_OUTPUTS)
    if "contact_sheet.png" in entries and "run" not in entries:  # a sheet without the demo's run/ is the user's
        foreign.add("contact_sheet.png")
    others = sorted(foreign)
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ValueError(f"--out {out} holds files the demo did not write ({shown}): give a new or empty folder "
                         "(the default is out/demo)")


def run_demo(out: str | Path = "out/demo", style: str = "seed", model: str = "sface", progress_for=None,
             accept_licence: bool = False) -> dict:
    """Build (or reuse) the dataset, run the whole job on it in-process, draw the contact sheet, and
    return every output's location."""
    from jobs.augment import read_manifest
    from jobs.run import run_pipeline
    from maskgen.align import ARCFACE_112, align_face
    from maskgen.decode import decode_image, encode_image
    from maskgen.draw import contact_sheet

    started = time.perf_counter()
    if not str(out).strip():  # "" wrote run/ and the contact sheet into the working folder
        raise ValueError("--out names no folder (an empty path)")
    from jobs.storage import LocalStore, open_store, redact

    store = open_store(out)  # Path() would make ./s3:/bucket/... here
    if not isinstance(store, LocalStore):
        raise ValueError(f"it writes to a local folder (--out), not {redact(out)}: for S3, `mfr run` the dataset "
                         "to an s3:// output")
    out = store.root
    refuse_foreign_demo_folder(out)
    dataset = build_dataset()
    # the demo shows the Ray job (in-process Ray on a laptop), not the local pool small jobs take
    result = run_pipeline(str(dataset), str(out / "run"), style=style, model=model, progress_for=progress_for,
                          executor="ray", accept_licence=accept_licence)
    masked_root = out / "run" / "masked"
    manifest = read_manifest(str(masked_root))
    firsts = manifest[(manifest.status == "ok") & manifest.masked.astype(bool)].drop_duplicates("identity")
    originals, masked = [], []
    for row in firsts.itertuples():
        image = decode_image((dataset / row.source_key).read_bytes())
        originals.append(align_face(image, np.asarray(row.landmarks5, dtype=np.float64).reshape(5, 2), ARCFACE_112))
        masked.append(decode_image((masked_root / row.crop_key).read_bytes()))
    sheet = out / "contact_sheet.png"
    write_atomic(sheet, encode_image(contact_sheet(originals, masked, columns=min(6, len(originals))), ".png"))
    report = result["report"]["paths"]
    return {
        "dataset": str(dataset), "identities": int(manifest.identity.nunique()), "images": int(manifest.source_key.nunique()),
        "masked_images": str(masked_root / "images"), "aligned_crops": str(masked_root / "crops"),
        "contact_sheet": str(sheet), "manifest": str(masked_root / "manifest"),
        "gallery_shards": str(out / "run" / "embeddings" / "unmasked" / "shards"),
        "probe_shards": str(out / "run" / "embeddings" / "masked" / "shards"),
        "report": report.get("markdown"), "roc": report.get("roc"), "scores": report.get("scores"),
        "cmc": report.get("cmc"),
        "report_json": report.get("json"), "seconds": round(time.perf_counter() - started, 1),
        "stages": result,
    }
