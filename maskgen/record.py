"""One record per face, from detection to embedding: `FaceRecord`.

Each stage fills in its part of the same record, the way insightface's `FaceAnalysis` fills one
`Face`: the finder the box, score, five points and `source`; the landmark predictor `landmarks68`;
face typing `face_type`, `yaw`, `blur`; the mask `masked` and `mask`; alignment `alignment` and
`aligned5`; the writer `output_key` and `crop_key`; recognition `embedding`, `model_id`, `mode` and
`similarity`. An input without a face (or refused before any reading) is a record too, with
`face_index` -1 and its `status` and `message`, so every input has a row.

The manifest and the embedding shards are two views of the record: `to_row(view)` gives a row
of exactly that view's columns and `FaceRecord.from_row` reads one back (points as (n, 2) lists,
the mask as a dict), so a face written by one job is the same face read by the next.

    record = FaceRecord(source_key="p1/a.jpg", identity="p1", face_index=0, box=[...], ...)
    row = record.to_row("manifest")               # what jobs/augment.py writes
    again = FaceRecord.from_row(row)              # == record for a record without an embedding (a
                                                  # manifest row has none; compare embeddings with
                                                  # np.array_equal)
    schema = record_schema("shard", dim=128)      # pyarrow schema of the embedding shards
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace

import numpy as np

from maskgen.checks import is_number, read_flag

VIEWS = ("manifest", "shard")

# each view's columns, in order; a field is stored under its own name except where RENAMED
MANIFEST_COLUMNS = ("source_key", "identity", "status", "message", "face_index", "image_size", "output_key", "crop_key",
                    "box",
                    "score", "landmarks5", "landmarks68", "face_type", "yaw", "blur", "masked", "mask_style", "mask",
                    "source", "alignment", "aligned5", "seed", "versions", "input_row", "node")
SHARD_COLUMNS = ("key", "identity", "masked", "face_index", "model_id", "mode", "similarity", "status", "message",
                 "embedding", "box", "score", "landmarks5", "source", "alignment", "aligned5", "input_row", "node")
RENAMED = {"shard": {"key": "source_key"}}  # column -> field
POINT_FIELDS = ("landmarks5", "landmarks68", "aligned5")


def _types() -> dict:
    import pyarrow as pa

    floats = pa.list_(pa.float64())
    return {"source_key": pa.string(), "key": pa.string(), "identity": pa.string(), "status": pa.string(),
            "message": pa.string(), "face_index": pa.int32(), "image_size": pa.list_(pa.int32()),
            "output_key": pa.string(), "crop_key": pa.string(),
            "box": floats, "score": pa.float64(), "landmarks5": floats, "landmarks68": floats,
            "face_type": pa.string(), "yaw": pa.float64(), "blur": pa.float64(), "masked": pa.bool_(),
            "mask_style": pa.string(), "mask": pa.string(), "source": pa.string(), "alignment": pa.string(),
            "aligned5": floats, "seed": pa.int64(), "versions": pa.string(), "input_row": pa.string(),
            "node": pa.string(), "model_id": pa.string(), "mode": pa.string(), "similarity": pa.string()}


def view_columns(view: str) -> tuple[str, ...]:
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    return MANIFEST_COLUMNS if view == "manifest" else SHARD_COLUMNS


def record_schema(view: str, dim: int | None = None, extra: tuple = ()):
    """The pyarrow schema of a view (`dim`: the embedding size, needed for shards), plus `extra`
    (name, type) fields the jobs carry between stages."""
    import pyarrow as pa

    types = _types()
    out = []
    for name in view_columns(view):
        if name == "embedding":
            if not dim:
                raise ValueError("the shard schema needs the embedding size (dim)")
            out.append((name, pa.list_(pa.float32(), int(dim))))
        else:
            out.append((name, types[name]))
    return pa.schema(out + list(extra))


POINT_DECIMALS = 2  # points are recorded to 0.01 px


def as_recorded(points) -> np.ndarray:
    """(n, 2) float64 points as a record keeps them (rounded to POINT_DECIMALS): what draws a mask and
    aligns a crop, so that the manifest's landmarks68 and aligned5 re-render the same pixels (tilted
    faces' float landmarks drew masks up to 173 levels away from their re-rendering)."""
    return np.round(np.asarray(points, dtype=np.float64).reshape(-1, 2), POINT_DECIMALS)


def _points(value, n: int | None = None) -> list[list[float]] | None:
    if value is None:
        return None
    pts = as_recorded(value)
    if n is not None and len(pts) != n:
        raise ValueError(f"expected {n} points, got {len(pts)}")
    return pts.tolist()


NON_FINITE_EMBEDDING = "the model gave NaN or infinite values for this face: no embedding"
ZERO_EMBEDDING = "the model gave a vector of zeros for this face (no direction to compare): no embedding"


@dataclass
class FaceRecord:
    """One face of one input (or the input itself, `face_index` -1, when it has no face)."""

    source_key: str                        # the input's key (path relative to the input root)
    identity: str = ""
    input_row: str = ""                    # the input row it came from (unique per input, reruns skip it)
    status: str = "ok"                     # ok, or why this input has no face (no_face, corrupt, ...)
    message: str = ""
    face_index: int = -1
    image_size: list[int] | None = None    # (width, height) of the upright image the face was found in
    # detection (maskgen.finder)
    box: list[float] | None = None         # x1, y1, x2, y2
    score: float | None = None
    landmarks5: list[list[float]] | None = None
    source: str | None = None              # which detection path found it
    # 68 landmarks and face type (maskgen.landmarks, maskgen.facetype)
    landmarks68: list[list[float]] | None = None
    face_type: str | None = None
    yaw: float | None = None
    blur: float | None = None
    # mask: in the manifest, a mask was drawn on this face; in shards, the face embedded wears one
    masked: bool | None = None
    mask: dict | None = None               # the mask's parameters (maskgen.masks), enough to redraw it
    # alignment (maskgen.finder.alignment_points)
    alignment: str | None = None
    aligned5: list[list[float]] | None = None
    # outputs
    output_key: str | None = None
    crop_key: str | None = None
    # recognition
    embedding: np.ndarray | None = None
    model_id: str | None = None
    mode: str | None = None
    similarity: str | None = None
    # provenance
    seed: int | None = None
    versions: str | None = None
    node: str | None = None

    def __post_init__(self):
        for name in POINT_FIELDS:
            setattr(self, name, _points(getattr(self, name)))
        if self.box is not None:
            self.box = [round(float(v), 2) for v in np.asarray(self.box, dtype=np.float64).reshape(4)]
        if self.score is not None:
            self.score = round(float(self.score), 6)
        if self.embedding is not None and not np.isfinite(np.asarray(self.embedding, np.float32)).all():
            # never written: one NaN poisons every score it enters, and the report would fail at the end
            self.embedding, self.status, self.message = None, "error", NON_FINITE_EMBEDDING

    @property
    def found(self) -> bool:
        return self.status == "ok" and self.face_index >= 0

    @property
    def alignment_points(self) -> np.ndarray | None:
        """(5, 2): the points its crop is aligned with (`aligned5`, else the detected five)."""
        pts = self.aligned5 if self.aligned5 is not None else self.landmarks5
        return None if pts is None else np.asarray(pts, dtype=np.float64).reshape(5, 2)

    def with_(self, **changes) -> "FaceRecord":
        return replace(self, **changes)

    def to_row(self, view: str) -> dict:
        """This record as a row of `view` (`manifest` or `shard`): exactly that view's columns."""
        renamed = RENAMED.get(view, {})
        row = {}
        for column in view_columns(view):
            name = renamed.get(column, column)
            if name == "mask_style":
                row[column] = (self.mask or {}).get("style")
            elif name == "mask":
                row[column] = json.dumps(self.mask, sort_keys=True, default=_plain) if self.mask else None
            elif name in POINT_FIELDS or name == "box":
                value = getattr(self, name)
                row[column] = None if value is None else [float(v) for v in np.asarray(value).reshape(-1)]
            elif name == "embedding":
                row[column] = None if self.embedding is None else np.asarray(self.embedding, np.float32)
            else:
                row[column] = getattr(self, name)
        return row

    @classmethod
    def from_row(cls, row: dict) -> "FaceRecord":
        """The record a manifest or shard row holds (columns it lacks stay unset; unknown ones are
        ignored)."""
        values = {}
        known = {f.name for f in fields(cls)}
        for column, value in row.items():
            name = RENAMED["shard"].get(column, column) if column not in known else column
            if name not in known:
                continue
            if _missing(value):
                value = None  # pandas' missing values (a manifest read with pandas): unset, as pyarrow gives it
            elif isinstance(value, np.ndarray) and name != "embedding":
                value = value.tolist()  # pandas' list cells
            if name in values and value is None:  # `key` beside `source_key`, one of them a gap (a merge)
                continue
            if name in values and values[name] is not None and value != values[name]:  # naming two inputs
                raise ValueError(f"a row gives {name} twice, {values[name]!r} and {value!r}")
            if name == "mask" and value is not None and not isinstance(value, dict):
                value = json.loads(value) if isinstance(value, str) and value else None  # (a dict was dropped)
            elif name == "embedding" and value is not None:
                value = np.asarray(value, np.float32)
            elif name in ("face_index", "seed") and value is not None:
                value = _whole(name, value)
            elif name == "masked" and value is not None:
                value = read_flag(value, "masked")  # (the text "False" was True)
            values[name] = value
        if values.get("source_key") is None:
            raise ValueError("a row needs the key of its input (source_key; key in a shard)")
        return cls(**values)


def _missing(value) -> bool:
    """None, a float NaN, or pandas' own missing values (pd.NA, NaT) without importing pandas."""
    return value is None or (isinstance(value, (float, np.floating)) and value != value) or \
        type(value).__name__ in ("NAType", "NaTType")


def _whole(name: str, value) -> int | None:
    """A row's face index or seed: a whole number, or its text (a CSV row; "3.0" where pandas wrote a
    column with gaps as floats, "" for a gap); 1.7 was face 1."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            value = float(text)
        except ValueError:
            pass
    if is_number(value) and float(value).is_integer():  # (2.0: pandas' float column of a column with gaps)
        return int(value)
    raise ValueError(f"{name} is a whole number, got {value!r}")


def _plain(value):
    """json.dumps' fallback for a mask's parameters: NumPy numbers and arrays as Python's."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"a mask parameter of type {type(value).__name__} cannot be recorded as JSON")


def records_table(records: list[FaceRecord], view: str, dim: int | None = None, extra: dict | None = None):
    """A pyarrow table of `view`'s columns for these records (`extra`: more columns, name -> (type,
    values), e.g. the group and `_first` flags the jobs carry to the shard writers)."""
    import pyarrow as pa

    extra = extra or {}
    schema = record_schema(view, dim, tuple((name, t) for name, (t, _) in extra.items()))
    rows = [r.to_row(view) for r in records]
    columns = {}
    for f in schema:
        if f.name in extra:
            columns[f.name] = pa.array(extra[f.name][1], f.type)
        elif f.name == "embedding":
            columns[f.name] = embedding_array([row["embedding"] for row in rows], f.type.list_size)
        else:
            columns[f.name] = pa.array([row[f.name] for row in rows], f.type)
    return pa.table(columns, schema=schema)


def embedding_array(vectors: list, dim: int):
    """A fixed-size list array of float32, null where a face has no vector."""
    import pyarrow as pa

    ok = np.array([v is not None for v in vectors], dtype=bool)
    emb = np.zeros((len(vectors), dim), np.float32)
    for i in np.nonzero(ok)[0]:
        emb[i] = np.asarray(vectors[i], np.float32).reshape(dim)
    return pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim, mask=pa.array(~ok))
