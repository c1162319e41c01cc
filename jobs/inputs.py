"""What a job reads: every image under a folder or `s3://` prefix, or the rows of an input manifest.

An input manifest is a CSV (UTF-8 or GBK) or Parquet file with one row per image:
    path            image path relative to the images root (or the seed's `sub_folder` + `image_name`)
    identity        optional; default: the image's folder name
    masked          optional flag (1/0, true/false, yes/no): images already masked are not masked again
    face_type       optional, the seed's `A_B` code (A: 0 frontal / 1 profile, B: 0 clear / 1 blurred)
    part_0_x ... part_67_y   optional 68 landmarks in the seed's CSV layout: the face is masked from
                    them and not detected
The seed's own `landmark/test.csv` is such a manifest. Rows that cannot be used (an unsafe path, a
duplicate, bad numbers) are not dropped: they reach the output manifest with their status and reason.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from jobs.storage import UnsafeKeyError, open_store, safe_key
from maskgen.seed import LANDMARK_COLUMNS, decode_text, seed_relative_path

MANIFEST_SUFFIXES = (".csv", ".parquet")


@dataclass
class InputItem:
    """One image to process. `status` is set when the row was refused before any processing."""

    key: str
    identity: str = ""
    masked: bool = False
    face_type: str | None = None
    landmarks68: list[float] | None = None
    status: str | None = None
    message: str = ""

    def to_row(self) -> dict:
        """A Ray Data row: strings never None (an all-None column arrives as NaN), landmarks an empty
        list when not given."""
        return {"key": self.key, "identity": self.identity, "masked": self.masked,
                "face_type": self.face_type or "", "landmarks68": self.landmarks68 or [],
                "status": self.status or "", "message": self.message}


@dataclass
class JobInput:
    """Where the images are (`images_uri`) and which ones (`items`)."""

    images_uri: str
    items: list[InputItem] = field(default_factory=list)


def is_manifest(uri: str) -> bool:
    return str(uri).lower().endswith(MANIFEST_SUFFIXES)


def folder_identity(key: str) -> str:
    parts = PurePosixPath(key).parts
    return parts[-2] if len(parts) >= 2 else ""


def resolve_input(uri: str, images_uri: str | None = None) -> JobInput:
    """A folder / prefix (every image under it) or a manifest file (its rows; images relative to
    `images_uri`, by default the manifest's own folder)."""
    uri = str(uri)
    if not is_manifest(uri):
        store = open_store(uri)
        return JobInput(store.uri, [InputItem(k, folder_identity(k)) for k in store.list()])
    parent, _, name = uri.rstrip("/").rpartition("/")
    data = open_store(parent or ".").read(name)
    root = open_store(images_uri if images_uri is not None else (parent or "."))
    return JobInput(root.uri, read_input_manifest(data, name))


def _rows(data: bytes, name: str) -> list[dict]:
    if name.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data)).to_pylist()
    return list(csv.DictReader(io.StringIO(decode_text(data, name))))


def read_input_manifest(data: bytes, name: str = "manifest.csv") -> list[InputItem]:
    """The items of an input manifest (see the module docstring). Raises ValueError only when the file
    as a whole is unusable (no path column, no rows); bad rows become refused items."""
    from recog.protocols import read_masked_flag

    rows = _rows(data, name)
    if not rows:
        raise ValueError(f"{name}: the manifest has no rows")
    columns = set(rows[0])
    seed_layout = {"sub_folder", "image_name"} <= columns
    if "path" not in columns and not seed_layout:
        raise ValueError(f"{name}: a manifest needs a 'path' column (or the seed's 'sub_folder' and "
                         f"'image_name'); it has {sorted(columns)[:8]}")
    has_landmarks = set(LANDMARK_COLUMNS) <= columns
    seen: dict[str, int] = {}
    items = []
    for line, row in enumerate(rows, start=2 if name.lower().endswith(".csv") else 1):
        where = f"{name} row {line}"
        try:
            if seed_layout and "path" not in columns:
                raw = f"{row.get('sub_folder') or ''}/{row.get('image_name') or ''}"
                key = safe_key(seed_relative_path(row.get("sub_folder") or "", row.get("image_name") or ""))
            else:
                raw = str(row.get("path") or "")
                key = safe_key(raw)
        except (UnsafeKeyError, ValueError) as exc:
            items.append(InputItem(raw, status="unsafe_path", message=f"{where}: {exc}; nothing read or written"))
            continue
        item = InputItem(key, str(row.get("identity") or "") or folder_identity(key))
        if key in seen:
            item.status, item.message = "duplicate", f"{where}: same image as row {seen[key]}; processed once"
            items.append(item)
            continue
        seen[key] = line
        try:
            if row.get("masked") not in (None, ""):
                item.masked = read_masked_flag(row["masked"])
            if row.get("face_type") not in (None, ""):
                from maskgen.facetype import FaceType

                item.face_type = FaceType.from_code(str(row["face_type"])).code
            if has_landmarks:
                values = [float(row[c]) for c in LANDMARK_COLUMNS]
                if not all(math.isfinite(v) for v in values):
                    raise ValueError("landmarks must be finite numbers")
                item.landmarks68 = values
        except (TypeError, ValueError) as exc:
            item.status, item.message = "bad_row", f"{where}: {exc}"
        items.append(item)
    return items
