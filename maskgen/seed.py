"""Seed compatibility: the seed project's masked images from its landmark CSV, without detection.

    python -m maskgen.seed ../shared/data/seed/landmark/test.csv ../shared/data/seed/sample out/seed

The CSV (`landmark/test.csv` layout) has `sub_folder,image_name,face_type,part_0_x,part_0_y,...,
part_67_x,part_67_y`; `face_type` is `A_B` (A: 0 frontal / 1 profile, B: 0 clear / 1 blurred). Each
image is read from `<images>/<sub_folder>/<image_name>` (`\\` or empty means the folder itself), the
seed's black polygon is drawn exactly as the seed draws it (no mirroring of profiles: the seed has
one profile polygon), blurred faces get the outline smoothing, and the result is written under the
same relative path. Seed files may be UTF-8 or GBK (the c-RMFRD lists are GBK).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from maskgen.facetype import FaceType
from maskgen.masks import draw_seed_mask


# the seed CSV's landmark columns, x then y of each of the 68 points
LANDMARK_COLUMNS = tuple(f"part_{i}_{axis}" for i in range(68) for axis in "xy")


@dataclass(frozen=True)
class SeedLandmarks:
    sub_folder: str
    image_name: str
    face_type: FaceType
    landmarks: np.ndarray  # (68, 2)

    @property
    def relative_path(self) -> str:
        return seed_relative_path(self.sub_folder, self.image_name)


def read_text(path: Path) -> str:
    """A seed text file: UTF-8 (with or without BOM), else GBK."""
    return decode_text(Path(path).read_bytes(), str(path))


def decode_text(data: bytes, name: str) -> str:
    """Text that may be UTF-8 (with or without BOM) or GBK, as the seed's files are."""
    for encoding in ("utf-8-sig", "gbk"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ValueError(f"{name}: neither UTF-8 nor GBK text")


def seed_relative_path(sub_folder: str, image_name: str) -> str:
    """Join the seed's Windows-style folder and file name into a safe relative POSIX path."""
    parts = [p for p in str(sub_folder).replace("\\", "/").split("/") if p not in ("", ".")]
    parts += [p for p in str(image_name).replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts) or ":" in parts[0]:
        raise ValueError(f"unsafe or empty image path in the CSV: {sub_folder!r} / {image_name!r}")
    return str(PurePosixPath(*parts))


def read_landmark_csv(path: Path) -> list[SeedLandmarks]:
    rows = list(csv.DictReader(io.StringIO(read_text(path))))
    if not rows:
        raise ValueError(f"{path}: no rows")
    needed = {"sub_folder", "image_name", "face_type", *LANDMARK_COLUMNS}
    missing = needed - set(rows[0])
    if missing:
        raise ValueError(f"{path}: not the seed's landmark layout, missing columns {sorted(missing)[:5]}...")
    out = []
    for line, row in enumerate(rows, start=2):
        try:
            pts = np.array([float(row[c]) for c in LANDMARK_COLUMNS]).reshape(68, 2)
            ftype = FaceType.from_code(row["face_type"])
        except ValueError as exc:
            raise ValueError(f"{path} line {line}: {exc}") from None
        out.append(SeedLandmarks(row["sub_folder"], row["image_name"], ftype, pts))
    return out


def apply_seed_masks(csv_path: Path, image_root: Path, out_root: Path) -> list[dict]:
    """Write the seed's masked image for every CSV row; one record per row, whose status is ok, or why
    the row gave no image (unsafe_path, bad_landmarks, missing, undecodable, ..., unwritable): one bad
    row never stops the others."""
    from maskgen.decode import DecodeError, decode_image

    records = []
    for row in read_landmark_csv(csv_path):
        record = {"image": f"{row.sub_folder}/{row.image_name}", "face_type": row.face_type.code, "status": "ok",
                  "message": ""}
        records.append(record)
        try:
            rel = record["image"] = row.relative_path
        except ValueError as exc:
            record.update(status="unsafe_path", message=str(exc))
            continue
        if not np.isfinite(row.landmarks).all():
            record.update(status="bad_landmarks", message="a landmark is not a finite number: no mask drawn")
            continue
        src = Path(image_root) / rel
        try:
            image = decode_image(src.read_bytes())
        except FileNotFoundError:
            record.update(status="missing", message=f"{src} does not exist")
            continue
        except IsADirectoryError:
            record.update(status="unreadable", message=f"{src} is a folder")
            continue
        except DecodeError as exc:
            record.update(status=exc.status, message=str(exc))
            continue
        masked, _ = draw_seed_mask(image, row.landmarks, row.face_type, mirror_profiles=False)
        dst = Path(out_root) / rel
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            ok = cv2.imwrite(str(dst), cv2.cvtColor(masked, cv2.COLOR_RGB2BGR))
        except cv2.error:  # OpenCV cannot tell the format from the name (no or an unknown extension)
            ok = False
        except OSError as exc:
            record.update(status="unwritable", message=f"cannot write {dst}: {exc.strerror or exc}")
            continue
        if not ok:
            record.update(status="unwritable", message=f"cannot write {dst}: OpenCV writes images named .jpg, "
                                                       ".png, .bmp, .webp or .tif, and needs a writable folder")
            continue
        record["output"] = str(dst)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", type=Path, help="seed landmark CSV (landmark/test.csv layout)")
    parser.add_argument("images", type=Path, help="folder the CSV's sub_folder/image_name paths are relative to")
    parser.add_argument("out", type=Path, help="output folder (same relative paths)")
    args = parser.parse_args(argv)
    records = apply_seed_masks(args.csv, args.images, args.out)
    for r in records:
        print(f"{r['status']:12s} {r['face_type']}  {r['image']}  {r.get('output', r['message'])}")
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
