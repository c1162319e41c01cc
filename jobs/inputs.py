"""What a job reads: every image under a folder or `s3://` prefix, or the rows of an input manifest.

An input manifest is a CSV (UTF-8 or GBK; another encoding given by `--manifest-encoding`) or Parquet
file with one row per image:
    path            image path relative to the images root (or the seed's `sub_folder` + `image_name`)
    identity        optional; default: the image's folder name
    masked          optional flag (1/0, true/false, yes/no): images already masked are not masked again
    face_type       optional, the seed's `A_B` code (A: 0 frontal / 1 profile, B: 0 clear / 1 blurred)
    part_0_x ... part_67_y   optional 68 landmarks in the seed's CSV layout: the face is masked from
                    them and not detected (a row whose landmark cells are all empty is detected)
The seed's own `landmark/test.csv` is such a manifest. An image with several faces takes one row per
face, each with the same path and its own landmarks (and face type): the rows become one input whose
faces are numbered in row order (one bad face row refuses the image). A CSV's cells are read stripped
of surrounding spaces. Rows that cannot be used (an unsafe path, a duplicate, bad numbers)
are not dropped: they reach the output manifest with their status and reason.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from jobs.storage import UnsafeKeyError, open_store, safe_key
from maskgen.decode import is_image_name
from maskgen.seed import LANDMARK_COLUMNS, decode_text, seed_relative_path

MANIFEST_SUFFIXES = (".csv", ".parquet")


@dataclass
class InputItem:
    """One image to process. `status` is set when the row was refused before any processing."""

    key: str
    identity: str = ""
    masked: bool | None = None  # None: the input does not say (a folder, a manifest without the column)
    face_type: str | None = None   # the seed's code; one per given face, comma-separated ("" for none)
    landmarks68: list[float] | None = None  # 136 values (x, y) per given face, faces one after another
    status: str | None = None
    message: str = ""
    input_row: str = ""   # unique per input row: the key, or "<key>#<n>" for the n-th row of a path (a repeat, refused)
    # the id a repeated or refused row had before ids were numbered per path ("<key>#row<line>"): a
    # rerun over an output of that version counts the row done by it, not a second row beside it
    legacy_row: str = ""
    gallery: bool = False  # `mfr run`: this image is its identity's gallery image, not a probe
    # `mfr run`'s rerun: the output folders that already hold this image (its manifest, some shard
    # folders), because a model or mode was added since: only the others are written
    written: list[str] = field(default_factory=list)

    def to_row(self, group: str) -> dict:
        """A row of the job's input dataset (`INPUT_SCHEMA`)."""
        return {"key": printable(self.key), "identity": printable(self.identity), "group": group,
                "input_row": printable(self.input_row or self.key), "status": self.status or "",
                "message": self.message, "masked": self.masked, "face_type": self.face_type or "",
                "landmarks68": self.landmarks68 or [], "gallery": bool(self.gallery), "written": list(self.written)}


def relative_in_submitted_job(path) -> bool:
    """Whether `path` is a relative local path read under `ray job submit` (Ray sets
    RAY_JOB_CONFIG_JSON_ENV_VAR for the job's driver), where the working folder is Ray's copy of the
    one the job was submitted from, in Ray's session temp folder."""
    text = str(path)
    return ("RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ and bool(text) and "://" not in text
            and not os.path.isabs(os.path.expanduser(text)))


def submitted_job_hint(path) -> str:
    """What a missing relative path means under `ray job submit`: it was looked for in Ray's copy of
    the working folder, not where the command was typed."""
    if not relative_in_submitted_job(path):
        return ""
    return (f"; under `ray job submit` a relative path is looked for in Ray's copy of the working folder "
            f"({os.getcwd()}): give an absolute path (expanded by your shell: \"$PWD/...\")")


def is_manifest(uri: str) -> bool:
    return str(uri).lower().endswith(MANIFEST_SUFFIXES)


def folder_identity(key: str) -> str:
    parts = PurePosixPath(key).parts
    return parts[-2] if len(parts) >= 2 else ""


def without_outputs(entries: list, store=None) -> list:
    """`entries` ((key, kind) of a folder input) less what mfr wrote there: everything under a folder
    below the input's root that is an output of mfr (it holds a settings record,
    `jobs.settings.SETTINGS_KEYS`), and, where `store` (the input's) is given to read them, the files of
    a report of mfr's (`REPORT_FILES` beside a report.json of mfr's: `mfr score`'s output, `mfr
    evaluate`'s report/; they hold no record). An earlier run's output left inside the input (`mfr mask
    data data/v1`, then `data/v2`; `mfr evaluate data data/eval`, then again) holds masked images, crops
    and plots that are not input. The input's own root may be an output (`mfr embed` over a mask
    output's images); a folder holding a report keeps its other files."""
    from jobs.settings import SETTINGS_KEYS

    markers = set(SETTINGS_KEYS.values())
    roots = {key.rpartition("/")[0] for key, _ in entries if "/" in key and key.rpartition("/")[2] in markers}
    reports = set()
    if store is not None:
        reports = {key.rpartition("/")[0] for key, kind in entries
                   if kind == "file" and key.rpartition("/")[2] == "report.json" and is_report_file(store, key)}
    if not roots and not reports:
        return entries

    def written_by_mfr(key: str) -> bool:
        folder, _, name = key.rpartition("/")
        return any(key.startswith(root + "/") for root in roots) or (folder in reports and name in REPORT_FILES)

    return [(key, kind) for key, kind in entries if not written_by_mfr(key)]


def _is_parquet(name: str) -> bool:
    return name.lower().endswith(".parquet")


AUTO_ENCODINGS = ("utf-8-sig", "gbk")
"""What a CSV manifest is read as when its encoding is not given: UTF-8 (a BOM allowed), else GBK
(the seed's lists). Any text decodes as some 8-bit encoding, so nothing else is guessed: cp1252's
"Müller" reads as GBK "M黮ler" and its rows would all be `missing`."""


def manifest_encoding(value: str | None) -> str | None:
    """A CSV manifest's encoding as given (`--manifest-encoding`): a codec Python knows, by its
    canonical name; None or "auto" for `AUTO_ENCODINGS`. ValueError names an unknown one."""
    import codecs

    if value is None or str(value).strip().lower() == "auto":
        return None
    try:
        name = codecs.lookup(str(value).strip()).name
        io.TextIOWrapper(io.BytesIO(), encoding=name)  # base64, zlib, rot13: codecs, but not of text
    except LookupError:
        raise ValueError(f"not a text encoding Python knows: {value!r} (examples: utf-8, gbk, cp1252, latin-1, "
                         "shift_jis, utf-16; auto reads UTF-8, else GBK)") from None
    if name == "utf-8":
        return "utf-8-sig"  # a BOM is not part of the first column's name
    return name


MANIFEST_HEAD_BYTES = 1 << 20
"""What of a CSV manifest the driver reads before a job starts (`manifest_head`): its encoding note
and its columns are told from this much; the rows are read by the job's read task."""


def manifest_head(store, name: str) -> bytes:
    """The first `MANIFEST_HEAD_BYTES` of a CSV manifest (b"" for Parquet, whose columns are in its footer)."""
    return b"" if _is_parquet(name) else store.read_head(name, MANIFEST_HEAD_BYTES)


def _no_rows(name: str) -> ValueError:
    return ValueError(f"{name}: the manifest has no rows")


def check_manifest_columns(store, name: str, head: bytes, encoding: str | None = None, roots: tuple = ()) -> None:
    """Refuse, before the job starts, a manifest without a path column or without rows, as its read
    task would: on a cluster whose worker nodes start at zero that task waited for a node (minutes)
    to say it. The columns come from the CSV's first row within `head` (`manifest_head`) read as
    `encoding` (None: the first of `AUTO_ENCODINGS` it decodes as), or from a Parquet file's footer.
    Anything else the head cannot settle (its text, a row cut by the head's end, a footer unread) is
    left to the read task, which reads the whole file and says it in the same words."""
    if _is_parquet(name):
        from jobs.storage import parquet_footer

        try:
            footer = parquet_footer(store, name)
        except (OSError, ValueError):
            return  # the read task says why it is not a readable Parquet file
        if footer.num_rows == 0:
            raise _no_rows(name)
        _ManifestRows(set(footer.schema.to_arrow_schema().names), name, roots)  # top-level: a row's keys
        return
    whole = len(head) < MANIFEST_HEAD_BYTES
    for candidate in (encoding,) if encoding else AUTO_ENCODINGS:
        # the lines the head holds whole, where a byte 0x0A is a line end and never part of a character:
        # a character cut by the head's end is then no reason to try another encoding
        cut = not whole and "path,\n".encode(candidate).endswith(b"path,\n")
        # read as the read task reads the file: its first row names the columns (it refuses them there,
        # before reading on), then every row under this encoding, a byte of another sending it to the next
        rows = (row for _, row in _records(io.BytesIO(head[:head.rfind(b"\n") + 1] if cut else head), name,
                                           candidate))
        try:
            first = next(rows, None)
            if first is not None:
                _ManifestRows(set(first), name, roots)  # the task's refusal, before it reads on
                for _ in rows:
                    pass
        except UnicodeDecodeError:
            if whole or cut:
                continue  # as the read task does: the next encoding, or none
            return  # (UTF-16: the head's end may cut a character)
        except NotCsvRow:
            return  # the read task says where
        finally:
            rows.close()  # now, while its bytes are open (closed later, it printed "Exception ignored in")
        if first is None and whole:
            raise _no_rows(name)
        return


def auto_encoding_note(name: str, head: bytes) -> str | None:
    """What the job says when a CSV manifest read with `AUTO_ENCODINGS` is not UTF-8 from its `head`
    (`manifest_head`): it is read as GBK, right for the seed's lists, and wrong for a cp1252 spreadsheet
    whose paths then all read as missing. (A file not UTF-8 only further on is not noticed here.)"""
    import codecs

    if _is_parquet(name):
        return None
    try:
        codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError:
        return (f"{name} is not UTF-8: it is read as GBK (the seed's lists are); if its paths are in another "
                "encoding they will not be found: give it with --manifest-encoding (e.g. cp1252), into a new "
                "output (an output keeps the encoding it was listed with)")
    return None


@contextmanager
def _opened(source, name: str):
    """(handle, stamp) on a manifest (its bytes, or the path of a local file) for both passes of
    `manifest_items`: the handle keeps the file it opened, so a file replaced meanwhile is not read;
    `stamp()` is the opened file's (size, modification time), to refuse one changed in place."""
    import pyarrow as pa

    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        yield (pa.BufferReader(data) if _is_parquet(name) else io.BytesIO(data)), lambda: None
        return
    with open(source, "rb") as file:
        def stamp():
            stat = os.fstat(file.fileno())
            return stat.st_size, stat.st_mtime_ns

        if not _is_parquet(name):
            yield file, stamp
            return
        # Parquet is read from a memory map of the file, opened now beside `file`: one thread and no
        # I/O pool (see jobs.storage.read_parquet_bytes)
        with pa.memory_map(str(source)) as mapped:
            yield mapped, stamp


def _identity_of(path) -> tuple:
    """What tells a file apart from a replacement or a rewrite: inode, size, modification time."""
    stat = os.stat(path)
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _unchanged(name: str, stamp, before):
    """`stamp()` now, after checking it equals `before` (None: the first look)."""
    now = stamp()
    if before is not None and now != before:
        raise ValueError(f"{name}: the manifest changed while it was read; nothing of it was trusted, run the "
                         "job again once it is complete")
    return now


def _records(handle, name: str, encoding: str | None = "utf-8-sig"):
    """(row number, row) of an input manifest from the start of `handle` (`_opened`), read as a
    stream: a CSV's rows as `csv.DictReader` gives them, numbered from 2 (the header is row 1), a
    Parquet file's one row group at a time, numbered from 1, a binary column's values read as UTF-8
    or GBK text."""
    handle.seek(0)
    if _is_parquet(name):
        import pyarrow as pa
        import pyarrow.parquet as pq

        line = 0
        try:
            for batch in pq.ParquetFile(handle, pre_buffer=False).iter_batches(batch_size=8192, use_threads=False):
                try:
                    rows = batch.to_pylist()
                except UnicodeDecodeError as exc:
                    raise ValueError(f"{name}: a text column holds bytes that are not UTF-8 ({exc.reason})") from None
                for row in rows:
                    line += 1
                    yield line, {k: decode_text(v, name) if isinstance(v, bytes) else v for k, v in row.items()}
        except (pa.ArrowException, OSError) as exc:  # pyarrow's bare "Parquet magic bytes not found in footer"
            raise ValueError(f"{name}: not a readable Parquet file ({exc}); a manifest is a .csv or a .parquet "
                             "file with a path column") from None
        return
    text = io.TextIOWrapper(handle, encoding=encoding, newline="")
    reader = csv.DictReader(text)
    try:
        # blank lines above the header are passed over, as pandas does (the blank line was the header,
        # the file refused as having "no 'path' column; it has ['None']"): rows are numbered after them
        above, header = 0, next(reader.reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            above, header = above + 1, next(reader.reader, None)
        # "path, identity" (a space after the comma) names the column "identity"
        reader.fieldnames = None if header is None else [cell.strip() for cell in header]
        for line, row in enumerate(reader, start=2 + above):
            if not any((c or "").strip() for v in row.values() for c in (v if isinstance(v, list) else (v,))):
                continue  # a row of empty cells (",,": a spreadsheet's blank line) is a blank line
            # "a/1.jpg, alice" (a space after the comma): the cell was " alice", another identity than
            # "alice", and " a/1.jpg" a missing file
            yield line, {k: v.strip() if isinstance(v, str) else v for k, v in row.items()}
    except csv.Error as exc:
        # the reader's own line count: DictReader's stops at the last row it gave (the header read by
        # the reader itself, and every row it gave before a bad one, named an earlier line)
        raise NotCsvRow(f"{name} line {reader.reader.line_num}: not a CSV row ({exc}); {UNCLOSED_QUOTE}") from None
    finally:
        try:
            text.detach()  # the handle stays open for the other pass
        except ValueError:  # closed before this reader was (a refusal mid-file): nothing to keep open
            pass


UNCLOSED_QUOTE = 'a quote (") opened and not closed joins the lines after it into one field'


class NotCsvRow(ValueError):
    """A CSV manifest's line that csv cannot read (an unclosed quote, a field past csv's size limit)."""


def cell_text(value) -> str:
    """A manifest cell as text: "" for a missing one (None, or NaN where pandas wrote a column with
    gaps as floats), a whole float as the whole number it was (1.0: "1"), anything else as str (0: "0")."""
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:
            return ""
        if value.is_integer():
            return str(int(value))
    return str(value)


class _ManifestRows:
    """How one manifest's rows become items: its columns are checked once, from its first row."""

    def __init__(self, columns: set, name: str, roots: tuple = ()):
        self.name, self.roots = name, roots
        self.longest_first = sorted(roots, key=len, reverse=True)  # the longest spelling that holds a path
        seed_layout = {"sub_folder", "image_name"} <= columns
        if "path" not in columns and not seed_layout:
            raise ValueError(f"{name}: a manifest needs a 'path' column (or the seed's 'sub_folder' and "
                             f"'image_name'); it has {sorted(map(str, columns))[:8]}")
        self.seed_paths = seed_layout and "path" not in columns
        self.has_landmarks = set(LANDMARK_COLUMNS) <= columns

    def key(self, row: dict) -> tuple[str, str | None, str]:
        """(the path as written, the safe key or None, why it is not safe)."""
        try:
            if self.seed_paths:  # cell_text: a Parquet sub_folder 0 read as "" named another image
                folder, image = cell_text(row.get("sub_folder")), cell_text(row.get("image_name"))
                raw = f"{folder}/{image}"
                return raw, safe_key(seed_relative_path(folder, image)), ""
            raw = cell_text(row.get("path"))
            if "\n" in raw or "\r" in raw:
                return raw, None, f"the path holds a line break: {UNCLOSED_QUOTE}"
            return raw, safe_key(self.relative(raw)), ""
        except (UnsafeKeyError, ValueError) as exc:
            return raw, None, str(exc)

    def relative(self, path: str) -> str:
        """`path` relative to the images root when it is an absolute path or URI under it (`roots`:
        `root_spellings`); other paths as they are."""
        for root in self.longest_first:
            if path.startswith(root):
                return path[len(root):].lstrip("/")  # (`root//a/x.jpg` too, as `a//x.jpg` is `a/x.jpg`)
        return path

    def item(self, row: dict, line: int) -> InputItem:
        """The item of one row, on its own: a refused row gets its status and reason."""
        from recog.protocols import read_masked_flag

        where = f"{self.name} row {line}"
        raw, key, unsafe = self.key(row)
        if key is None:
            hint = ("; a manifest's paths are relative to the images root (--images), or absolute under it"
                    + (f" ({self.roots[0].rstrip('/') or '/'})" if self.roots else "")) \
                if "absolute" in unsafe or "a URI where" in unsafe else ""
            return InputItem(raw, cell_text(row.get("identity")), status="unsafe_path",
                             message=f"{where}: {unsafe}; nothing read or written{hint}")
        item = InputItem(key, cell_text(row.get("identity")) or folder_identity(key))
        try:
            if row.get("masked") not in (None, ""):
                item.masked = read_masked_flag(row["masked"])
            if row.get("face_type") not in (None, ""):
                from maskgen.facetype import FaceType

                item.face_type = FaceType.from_code(str(row["face_type"])).code
            if self.has_landmarks:
                item.landmarks68 = landmark_values(row)
        except (TypeError, ValueError) as exc:
            item.status, item.message = "bad_row", f"{where}: {exc}"
        return item


def landmark_values(row: dict) -> list[float] | None:
    """The 136 landmark values of a manifest row, or None where every landmark cell is empty (the
    face is detected, as for a row of a manifest without them). Raises ValueError naming the cell
    that is empty or not a number (was: float()'s own words, "could not convert string to float: ''")."""
    cells = [cell_text(row.get(c)).strip() for c in LANDMARK_COLUMNS]
    if not any(cells):
        return None
    values = []
    for column, cell in zip(LANDMARK_COLUMNS, cells):
        if not cell:
            empty = sum(not c for c in cells)
            raise ValueError(f"{empty} of the 136 landmark cells are empty ({column} the first): give all of "
                             "them, or none to have the face detected")
        try:
            value = float(cell)
        except ValueError:
            raise ValueError(f"landmark {column} is not a number: {cell!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"landmark {column} is {cell!r}: landmarks must be finite numbers")
        values.append(value)
    return values


class _RepeatedPaths:
    """The rows of paths that more than one row names, added in row order. The first row is the
    image's input; a later row giving a further face of it (`another_face_of`) joins it. In a manifest
    of landmarks, an image's face rows are one input: one refused face row (`bad_row`) refuses the
    image, with that row's reason, so that no face of it is masked until the row is fixed (a later bad
    row was marked a duplicate, its reason lost and `--strict` passing; a first bad row made the good
    ones "duplicates ... processed once", and none was). Any other later row keeps its own refusal, or
    is a duplicate. Such rows answer `<key>#<n>`, the n-th row naming the image, which rows added
    elsewhere in the manifest do not change (a row number did: each rerun then left stale rows)."""

    def __init__(self, name: str, landmarks: bool = False):
        self.name, self.landmarks = name, landmarks
        self.first: dict[str, tuple[int, InputItem]] = {}
        self.count: dict[str, int] = {}
        self.items: list[tuple[int, InputItem]] = []

    def _face_row(self, item: InputItem) -> bool:
        return self.landmarks and (bool(item.landmarks68) or item.status == "bad_row")

    def add(self, line: int, item: InputItem) -> None:
        if item.key not in self.first:
            self.first[item.key], self.count[item.key] = (line, item), 1
            self.items.append((line, item))
            return
        first_line, first = self.first[item.key]
        self.count[item.key] += 1
        if another_face_of(first, item):
            first.landmarks68 = first.landmarks68 + item.landmarks68
            first.face_type = _face_types(first, item)
            return
        if "bad_row" in (first.status, item.status) and self._face_row(first) and self._face_row(item):
            if first.status is None:
                first.status = "bad_row"
                first.message = (f"{item.message}; the image's face rows (row {first_line} and on) are one input: "
                                 "none of its faces is masked until that row is fixed")
            return
        item.input_row, item.legacy_row = f"{item.key}#{self.count[item.key]}", f"{item.key}#row{line}"
        if item.status is not None:
            self.items.append((line, item))  # its own refusal, and reason
            return
        item.status = "duplicate"
        if first.status is not None:
            item.message = (f"{self.name} row {line}: same image as row {first_line}, which is refused "
                            f"({first.status}): fix that row")
        else:
            item.message = f"{self.name} row {line}: same image as row {first_line}; processed once"
            # a label the processed row does not give is dropped: said, as the manifest likely has it wrong
            differs = [f"{what} {_label(mine)} here, {_label(theirs)} there" for what, mine, theirs in
                       (("identity", item.identity, first.identity), ("masked", item.masked, first.masked))
                       if mine != theirs]
            if differs:
                item.message += f", with row {first_line}'s labels ({'; '.join(differs)}): check which is right"
            if item.landmarks68 and first.landmarks68:  # (why it is not a further face of the image)
                item.message += (" (its landmarks are those of a face already given)" if _same_face(first, item)
                                 else " (a further face of an image needs the same identity and masked flag)")
        self.items.append((line, item))


def _label(value) -> str:
    """A manifest label as a message quotes it: a blank cell (None, "") as blank."""
    return "blank" if value is None or value == "" else repr(value)


def root_spellings(images, input_uri: str, images_uri: str | None = None) -> tuple[str, ...]:
    """The images root of the manifest `input_uri` (`images_root(input_uri, images_uri)`) as its
    absolute paths may spell it, each ending in "/": for a local folder its absolute path as given
    (--images, else the manifest's folder; through a symlink such as /data -> /mnt/data), then its
    URI (a local folder resolved). Manifests written by `find /data/lfw` name their images so."""
    from jobs.storage import LocalStore

    given = images_uri if images_uri is not None else \
        os.path.dirname(os.path.abspath(input_uri)) if "://" not in str(input_uri) else None
    spellings = [images.uri]
    if given is not None and isinstance(images, LocalStore) and "://" not in str(given):
        spellings.insert(0, os.path.abspath(os.path.expanduser(str(given))))
    return tuple(dict.fromkeys(s.rstrip("/") + "/" for s in spellings))


REFUSED = "\0refused\0"  # before a refused path's text in the first pass's digests: never a key's


def manifest_items(source: bytes | Path, name: str = "manifest.csv", encoding: str | None = None,
                   roots: tuple = ()):
    """(row number, item) for every input of a manifest (its bytes, or the path of a local copy; see
    the module docstring), in memory that does not grow with the manifest but by 16 bytes a row.
    Raises ValueError only when the file as a whole is unusable (not text of `encoding`, by default
    UTF-8 or GBK; no path column; no rows); bad rows become refused items. `encoding` is a CSV's
    (`manifest_encoding`); a Parquet file's text is UTF-8 by its format. `roots`: the images root's
    spellings (`root_spellings`); an absolute path under it is taken relative to it.

    Two passes over one handle on the file (a file replaced meanwhile is not seen; one changed in
    place stops the listing with ValueError): the first keeps a digest of each row's path and finds
    the paths that more than one row names; the second yields each other row as soon as it is read, and holds the
    rows of repeated paths until the end, where `_RepeatedPaths` merges further faces and marks
    duplicates, exactly as if the whole file were read at once (`read_input_manifest`)."""
    import numpy as np

    from jobs.source import digest

    with _opened(source, name) as (handle, stat):
        stamp = _unchanged(name, stat, None)
        given = encoding
        for encoding in (None,) if _is_parquet(name) else (given,) if given else AUTO_ENCODINGS:
            rows, seen = None, bytearray()
            try:
                for _, row in _records(handle, name, encoding):
                    rows = rows or _ManifestRows(set(row), name, roots)
                    raw, key, _ = rows.key(row)
                    seen += digest(key) if key is not None else digest(REFUSED + raw)
                break
            except UnicodeDecodeError as exc:
                if given:
                    label = "UTF-8" if given == "utf-8-sig" else given
                    raise ValueError(f"{name}: not {label} text ({exc.reason}): give its encoding with "
                                     "--manifest-encoding") from None
                continue
        else:
            raise ValueError(f"{name}: neither UTF-8 nor GBK text: give its encoding with --manifest-encoding "
                             "(cp1252 for a Western European spreadsheet's CSV), or save it as UTF-8")
        if rows is None:
            raise _no_rows(name)
        ordered = np.sort(np.frombuffer(bytes(seen), dtype="S16"))
        del seen
        twice = np.unique(ordered[1:][ordered[1:] == ordered[:-1]]).tobytes()  # tobytes keeps trailing NULs
        del ordered
        repeated = {twice[i:i + 16] for i in range(0, len(twice), 16)}
        stamp = _unchanged(name, stat, stamp)
        repeats = _RepeatedPaths(name, rows.has_landmarks)
        refused: dict[bytes, int] = {}  # the rows so far of each refused path that more than one row names
        for line, row in _records(handle, name, encoding):
            item = rows.item(row, line)
            if item.status != "unsafe_path" and repeated and digest(item.key) in repeated:
                repeats.add(line, item)
                continue
            if item.status == "unsafe_path":
                item.legacy_row = f"{item.key}#row{line}"
            if item.status == "unsafe_path" and repeated and digest(REFUSED + item.key) in repeated:
                # its n-th row answers "<path>#<n>", as a repeated key's (not the row number: see _RepeatedPaths)
                count = refused[digest(REFUSED + item.key)] = refused.get(digest(REFUSED + item.key), 0) + 1
                item.input_row = f"{item.key}#{count}" if count > 1 else ""
            yield line, item
        _unchanged(name, stat, stamp)
        yield from repeats.items


def read_input_manifest(data: bytes, name: str = "manifest.csv", encoding: str | None = None,
                        roots: tuple = ()) -> list[InputItem]:
    """The items of an input manifest, in row order (`manifest_items`)."""
    return [item for _, item in sorted(manifest_items(data, name, encoding, roots), key=lambda pair: pair[0])]


def _faces(item: InputItem) -> list[list[float]]:
    values = item.landmarks68 or []
    return [values[i:i + 136] for i in range(0, len(values), 136)]


def _same_face(first: InputItem, item: InputItem) -> bool:
    return any(face == item.landmarks68 for face in _faces(first))


def another_face_of(first: InputItem, item: InputItem) -> bool:
    """Whether `item`, a later row with the same path as `first`, gives a further face of that image:
    both rows usable and with landmarks, the same identity and masked flag, and not a face already given."""
    return (first.status is None and item.status is None and bool(first.landmarks68) and bool(item.landmarks68)
            and first.identity == item.identity and first.masked == item.masked and not _same_face(first, item))


def _face_types(first: InputItem, item: InputItem) -> str | None:
    """The face-type codes of `first` (now holding `item`'s face too), one per face, or None when no
    row gave one."""
    count = len(first.landmarks68) // 136
    before = (first.face_type or "").split(",") if first.face_type is not None else []
    before += [""] * (count - 1 - len(before))
    codes = before + [item.face_type or ""]
    return ",".join(codes) if any(codes) else None


# ---------------------------------------------------------------- listing, inside Ray Data read tasks

NOT_AN_IMAGE = ("not an image's file name (.jpg, .jpeg, .png, .webp, .bmp, .gif, .tif, ...), or a hidden file: not "
                "read, and no sample; rename it if it is an image")

NO_IDENTITY = ("no identity: `mfr run` takes each image's identity from its folder (or a manifest's identity "
               "column), and this one has none: not read, and no sample")

KIND_STATUS = {
    "not_regular": ("not_a_file", "not a regular file (a FIFO, socket or device): never opened"),
    "temporary": ("temporary_file", "the name of an unfinished atomic write (.mfr-tmp-*): not read; rename it "
                                    "if it is an image"),
    "link_loop": ("link_loop", "a symlinked folder that leads back into a folder already read: not read twice"),
    "broken_link": ("missing", "a symlink to nothing"),
    "unsafe_key": ("unsafe_path", "the object key has empty or '.' segments: reading it as a plain path would "
                                  "read another object"),
}


BACKSLASH_NAME = ("the file name holds a backslash, which a manifest or Windows path reads as a folder separator "
                  "(reading it as one read another file): not read; rename it")


def not_read(key: str, kind: str) -> tuple[str, str] | None:
    """(status, message) of a folder's entry that is never read as an image, None for one that is: the
    rows' statuses and the roles `mfr run` gives (never to an entry it cannot read) from one rule. An
    empty image file is `empty`, as reading it says, without being read: `mfr run` gave an identity's
    gallery role to a 0-byte first file, and every probe of the identity failed to enrol."""
    from maskgen.decode import EMPTY_FILE

    if printable(key) != key:
        return "bad_name", "the file name is not UTF-8 (shown with %XX for its other bytes): not read; rename it to UTF-8"
    if kind not in ("file", "empty"):
        return KIND_STATUS[kind]
    if "\\" in key:
        return "unsafe_path", BACKSLASH_NAME
    if not is_image_name(key):
        return "not_an_image", NOT_AN_IMAGE
    if kind == "empty":
        return "empty", EMPTY_FILE
    return None


def raw_digest(text: str) -> str:
    """8 hex digits of a name's own bytes: tells a non-UTF-8 name from a real file named with its %XX
    spelling (`printable`), which took the same key, one row for two inputs."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def printable(text: str) -> str:
    """`text` as valid UTF-8: bytes of a file name that are not UTF-8 (a GBK name read on Linux
    arrives as surrogates) written as %XX."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape")
        return "".join(ch if not 0xDC80 <= ord(ch) <= 0xDCFF else f"%{ord(ch) - 0xDC00:02X}"
                       for ch in raw.decode("utf-8", "surrogateescape"))


def input_schema():
    import pyarrow as pa

    return pa.schema([("key", pa.string()), ("identity", pa.string()), ("group", pa.string()),
                      ("input_row", pa.string()), ("status", pa.string()), ("message", pa.string()),
                      ("masked", pa.bool_()), ("face_type", pa.string()), ("landmarks68", pa.list_(pa.float64())),
                      ("gallery", pa.bool_()), ("written", pa.list_(pa.string()))])


class ColumnsEqual:
    """A picklable row filter for done shards: every named column equals its value."""

    def __init__(self, **values):
        self.values = values

    def __call__(self, table):
        import pyarrow.compute as pc

        mask = None
        for column, value in self.values.items():
            m = pc.equal(table.column(column), value)
            mask = m if mask is None else pc.and_(mask, m)
        return mask


class FolderLister:
    """The images of one group of a folder / prefix, less those whose rows are already under
    `done_dir` of the output.

    For `mfr run`, `gallery_per_identity` gives each identity its gallery images, the rest being
    probes (`assign_roles`), and `role_done` ({"gallery": [(dir, where)], "probe": [...]}) names the
    shard folders an image of that role must also be in to count as done. An image the output holds
    only partly (a model or mode added since) is done again, with `written` saying where it already is."""

    def __init__(self, images_uri: str, output_uri: str, done_dir: str, done_where=None,
                 exclude: str | None = None, progress=None, chunk: int = 4096, gallery_per_identity: int = 0,
                 role_done: dict | None = None):
        self.images_uri, self.output_uri, self.done_dir = images_uri, output_uri, done_dir
        self.done_where, self.exclude, self.progress, self.chunk = done_where, exclude, progress, chunk
        self.gallery_per_identity, self.role_done = gallery_per_identity, role_done or {}

    def assign_roles(self, entries, recorded: dict) -> dict:
        """{key: gallery or not} for the files of a group. An image the output already holds keeps the
        role it was given (`recorded`: input row -> gallery flag); the others, in key order, fill what
        is left of their identity's `gallery_per_identity` gallery places. A fresh run so gives each
        identity its first images; a rerun after images were added keeps the gallery it had, instead
        of embedding an identity's earlier gallery image again as a probe beside a second gallery."""
        from collections import Counter

        # bad names and files that are not images are not read
        files = [key for key, kind in entries if not not_read(key, kind) and folder_identity(key)]
        taken = Counter(folder_identity(key) for key in files if recorded.get(key) is True)
        roles = {}
        for key in files:
            gallery = recorded.get(key)
            if gallery is None:
                identity = folder_identity(key)
                gallery = taken[identity] < self.gallery_per_identity
                taken[identity] += gallery
            roles[key] = bool(gallery)
        return roles

    def recorded_roles(self, held: dict) -> dict:
        """{input row: gallery or not} of the images the role folders (`held`: folder -> input rows
        it holds) already hold."""
        recorded: dict = {}
        for role in ("gallery", "probe"):
            for d, _ in self.role_done.get(role, []):
                for key in held[d]:
                    recorded.setdefault(key, role == "gallery")
        return recorded

    def rows(self, group: str):
        import pyarrow as pa

        from jobs.source import group_id, read_done

        gid = group_id(group)
        images = open_store(self.images_uri)
        entries = without_outputs(images.entries(group, self.exclude), images)
        output = open_store(self.output_uri)
        # the role folders before the manifest: with --retry-failed each read drops failed rows, and a
        # task stopped between the two leaves an image in the manifest only, which any rerun does again
        held = {d: read_done(output, f"{d}/{gid}", "input_row", where)
                for dirs in self.role_done.values() for d, where in dirs}
        failed: set = set()  # done, but failed: a rerun skips them, and --strict still counts them
        done = read_done(output, f"{self.done_dir}/{gid}", "input_row", self.done_where, failed)
        roles = self.assign_roles(entries, self.recorded_roles(held)) if self.gallery_per_identity else {}
        rows, skipped, skipped_failed = [], 0, 0
        listed = {key for key, _ in entries}
        for key, kind in entries:
            item = InputItem(key, folder_identity(key), gallery=roles.get(key, False))
            name = printable(key)
            if name != key and name in listed:  # a real file holds the %XX spelling: this row's key may not
                name = item.key = item.input_row = f"{name}~{raw_digest(key)}"
            needed = [d for d, _ in self.role_done.get("gallery" if item.gallery else "probe", [])]
            have = [d for d in needed if name in held[d]]
            if name in done and len(have) == len(needed):
                skipped += 1
                skipped_failed += name in failed
                continue
            # rows already written (a model or mode added since, a run stopped between its shard
            # writes) are not written again: a batch of other images would not overwrite them
            item.written = ([self.done_dir] if name in done else []) + have
            refused = not_read(key, kind)
            if refused and refused[0] == "empty" and self.gallery_per_identity and not item.identity:
                refused = None  # an image at the top of a run's input is no sample, empty or not: no_identity
            if refused:
                item.status, item.message = refused
            elif self.gallery_per_identity and not item.identity:
                item.status, item.message = "no_identity", NO_IDENTITY
            rows.append(item.to_row(gid))
        report_listed(self.progress, len(rows), skipped, skipped_failed)
        for i in range(0, len(rows), self.chunk):
            yield pa.Table.from_pylist(rows[i:i + self.chunk], schema=input_schema())


class ManifestLister:
    """The rows of an input manifest, less those already done, streamed by one read task: rows reach
    the pool while the task reads on, and its memory does not grow with the manifest (10^6 rows:
    see the README's Benchmarks). A manifest on S3 is copied to the task's local disk first.

    For `mfr run`, `gallery_per_identity` and `role_done` are as for `FolderLister`; the roles are
    given by `ManifestRoles`, over the whole manifest (an identity's rows may name any folders)."""

    def __init__(self, manifest_uri: str, output_uri: str, done_dir: str, done_where=None, progress=None,
                 chunk: int = 4096, gallery_per_identity: int = 0, role_done: dict | None = None,
                 encoding: str | None = None, roots: tuple = ()):
        self.manifest_uri, self.output_uri, self.done_dir = manifest_uri, output_uri, done_dir
        self.encoding, self.roots = encoding, roots
        self.done_where, self.progress, self.chunk = done_where, progress, chunk
        self.gallery_per_identity, self.role_done = gallery_per_identity, role_done or {}

    def rows(self, group: str):
        from jobs.source import DigestSet, done_digests

        from jobs.storage import open_parent

        manifest_store, name = open_parent(self.manifest_uri)
        output = open_store(self.output_uri)
        # role folders first, as FolderLister.rows reads them
        roles = ManifestRoles(output, self.role_done, self.gallery_per_identity) if self.gallery_per_identity else None
        # every group's done rows, as digests: the manifest's rows spread over all of them
        failed = bytearray()
        done = done_digests(output, self.done_dir, "input_row", self.done_where, failed)
        failed = DigestSet(failed)
        with manifest_store.local_file(name) as path:
            if roles is not None:  # a pass of its own: rows whose path a later row repeats are listed last
                before = _identity_of(path)
                roles.choose(manifest_items(path, name, self.encoding, self.roots))
            chunk = []
            for _, item in manifest_items(path, name, self.encoding, self.roots):
                chunk.append(item)
                if len(chunk) == self.chunk:
                    yield from self._left(chunk, done, roles, failed)
                    chunk = []
            yield from self._left(chunk, done, roles, failed)
            if roles is not None:  # the roles came from the file that was listed
                _unchanged(name, lambda: _identity_of(path), before)

    def _left(self, items: list[InputItem], done, roles, failed):
        import pyarrow as pa

        from jobs.source import bucket_of, group_id

        if not items:
            return
        if roles is not None:
            roles.assign(items)
        finished, failed_before = recorded_in(done, items), recorded_in(failed, items)
        todo, skipped_failed = [], 0
        for item, was, did_fail in zip(items, finished, failed_before):
            if was:
                if roles is None or roles.held_everywhere(item):
                    skipped_failed += bool(did_fail)
                    continue
                item.written = [self.done_dir] + item.written
            todo.append(item.to_row(group_id(bucket_of(item.key))))
        report_listed(self.progress, len(todo), len(items) - len(todo), skipped_failed)
        if todo:
            yield pa.Table.from_pylist(todo, schema=input_schema())


def recorded_in(digests, items: list[InputItem]):
    """Whether each item's input row is among `digests` (a `jobs.source.DigestSet` of a folder's
    `input_row` values): by its id, or by the one an earlier version gave it (`InputItem.legacy_row`,
    "<key>#row<N>"), so a rerun over such an output neither does it again nor adds a second row."""
    found = digests.contains([printable(item.input_row or item.key) for item in items])
    older = [i for i, item in enumerate(items) if item.legacy_row and not found[i]]
    if older:
        found[older] = digests.contains([printable(items[i].legacy_row) for i in older])
    return found


class ManifestRoles:
    """`mfr run`'s roles for the images of an input manifest. An image the output already holds keeps
    the role it was given; of the others, each identity's first usable rows (by row number; not
    refused, not marked masked) fill what is left of its `per_identity` gallery places, and every
    other row is a probe (a refused row is never embedded). Like `FolderLister.assign_roles`, but over
    the whole manifest, in memory of 16 bytes per image already written or chosen for the gallery,
    plus the gallery's identities."""

    def __init__(self, output, role_done: dict, per_identity: int):
        from collections import Counter

        from jobs.source import DigestSet, _done_tables, digest

        self.per_identity = per_identity
        self.needed = {role: [d for d, _ in dirs] for role, dirs in role_done.items()}
        self.held: dict = {}
        gallery_rows: dict = {}  # input row -> identity, of the images a gallery folder holds
        for role, dirs in role_done.items():
            for d, where in dirs:
                found = bytearray()
                for table in _done_tables(output, d, where):
                    rows = table.column("input_row").to_pylist()
                    found += b"".join(digest(r) for r in rows if r is not None)
                    if role == "gallery":
                        gallery_rows.update(zip(rows, table.column("identity").to_pylist()))
                self.held[d] = DigestSet(found)
        gallery_rows.pop(None, None)
        self.places = Counter(gallery_rows.values())  # gallery images the output holds, per identity
        self.chosen = DigestSet()

    def _holding(self, items: list[InputItem]) -> list[list[str]]:
        """For each item, the role folders (of either role) that hold it."""
        held = {d: recorded_in(digests, items) for d, digests in self.held.items()}
        return [[d for d, found in held.items() if found[i]] for i in range(len(items))]

    def choose(self, numbered) -> None:
        """Pick the new gallery images from the whole manifest: `numbered` is `manifest_items`' (row
        number, item) pairs, in any order."""
        import heapq

        from jobs.source import DigestSet, digest

        first: dict = {}  # identity -> its earliest candidates, a heap of (-row number, input row)

        def consider(chunk):
            for (line, item), holding in zip(chunk, self._holding([item for _, item in chunk])):
                identity = printable(item.identity)
                left = self.per_identity - self.places[identity]
                if holding or item.status is not None or item.masked or not identity or left <= 0:
                    continue
                heap = first.setdefault(identity, [])
                entry = (-line, printable(item.input_row or item.key))
                if len(heap) < left:
                    heapq.heappush(heap, entry)
                elif entry > heap[0]:
                    heapq.heapreplace(heap, entry)

        chunk = []
        for pair in numbered:
            chunk.append(pair)
            if len(chunk) == 4096:
                consider(chunk)
                chunk = []
        consider(chunk)
        self.chosen = DigestSet(b"".join(digest(name) for heap in first.values() for _, name in heap))

    def assign(self, items: list[InputItem]) -> None:
        """Set each item's `gallery`, and its `written` to the folders of its role that already hold it
        (`choose` has run)."""
        chosen = self.chosen.contains([printable(item.input_row or item.key) for item in items])
        for item, holding, new_gallery in zip(items, self._holding(items), chosen):
            if item.status is None and not printable(item.identity):
                item.status, item.message = "no_identity", NO_IDENTITY
            if any(d in holding for d in self.needed.get("gallery", [])):
                item.gallery = True
            elif any(d in holding for d in self.needed.get("probe", [])):
                item.gallery = False
            else:
                item.gallery = bool(new_gallery)
            item.written = [d for d in self.needed.get("gallery" if item.gallery else "probe", []) if d in holding]

    def held_everywhere(self, item: InputItem) -> bool:
        """Whether every folder of the item's role holds it (`assign` has run)."""
        return len(item.written) == len(self.needed.get("gallery" if item.gallery else "probe", []))


def output_inside_input(input_store, output_store) -> str | None:
    """The output's key prefix relative to the input when the output lies inside it (`mfr mask data
    data/out`): the job must never read its own outputs as inputs."""
    from jobs.storage import LocalStore

    if isinstance(input_store, LocalStore) != isinstance(output_store, LocalStore):
        return None
    if isinstance(input_store, LocalStore):
        try:
            inside = output_store.root.relative_to(input_store.root).as_posix()
        except ValueError:
            return None
        return "" if inside == "." else inside
    if input_store.bucket != output_store.bucket:
        return None
    base = f"{input_store.prefix}/" if input_store.prefix else ""
    if output_store.prefix.startswith(base) and output_store.prefix != input_store.prefix:
        return output_store.prefix[len(base):]
    return "" if output_store.prefix == input_store.prefix else None


def images_root(input_uri: str, images_uri: str | None = None):
    """The store an input's images are read from: `images_uri` if given, else a folder input itself,
    or an input manifest's own folder."""
    from jobs.storage import open_parent

    if images_uri is not None:
        return open_store(images_uri)
    return open_parent(input_uri)[0] if is_manifest(str(input_uri)) else open_store(input_uri)


def refuse_output_in_place(images, output, writes: tuple = ("",)) -> None:
    """An output that is the images' folder itself would write its folders among the images; one that
    holds them (`mfr mask proj/images proj`) writes its masked images at `images/<key>`, over the
    photos they were made from (a read-only photo too: a rename replaces it). `writes`: the folders
    of the output the job writes in ("": anywhere; `mfr evaluate`: embeddings/ and report/)."""
    from jobs.storage import redact

    if output_inside_input(images, output) == "":
        raise ValueError(f"the output {redact(output.uri)} is the input folder itself: choose another output")
    inside = output_inside_input(output, images)
    if inside is not None and any(not w or inside == w or inside.startswith(f"{w}/") for w in writes):
        raise ValueError(f"the input {redact(images.uri)} lies inside the output {redact(output.uri)} "
                         f"(at {inside}/): the job writes under its output, where it could replace the input's "
                         "own files; give an output outside the input's folder (nothing was written)")


# the records a job leaves at the top of an output it starts, before anything else: its settings
# (mfr mask and mfr run; mfr embed) and the lease of the job writing it
MFR_RECORDS = ("_mfr_settings.json", "_mfr_embed_settings.json", "_mfr_lease.json")


def check_input_folder(images, input_uri: str) -> None:
    """A local input folder that is missing or a file, said as such before any output is made."""
    from jobs.storage import LocalStore

    if isinstance(images, LocalStore) and not images.root.exists():
        raise FileNotFoundError(f"{input_uri}: no such folder (nothing was written){submitted_job_hint(input_uri)}")
    if isinstance(images, LocalStore) and images.root.is_file():
        raise ValueError(f"{input_uri} is a file, not a folder: give the folder of the images, or an input manifest "
                         "(.csv/.parquet) that lists them")


def check_folder_input(input_uri: str, images_uri: str | None = None, manifest_encoding: str | None = None) -> None:
    """A folder input (not a manifest) that is a file or not there, said as such first ("is a folder"
    was said of both beside --images), then the manifest-only options given with it refused."""
    from jobs.storage import LocalStore, redact

    folder = open_store(input_uri)
    check_input_folder(folder, input_uri)
    what = "a folder" if isinstance(folder, LocalStore) else "a prefix, not a .csv or .parquet object"
    if manifest_encoding is not None:
        raise ValueError(f"--manifest-encoding applies to an input manifest (.csv); {redact(input_uri)} is {what} "
                         "(a file's name is read as the file system gives it; a `manifest-encoding` key of a "
                         "--config file gives --manifest-encoding too: put it under the table of the command run "
                         "on manifests)")
    if images_uri is not None:
        raise ValueError(f"--images (where a manifest's paths point) applies to an input manifest (.csv/.parquet); "
                         f"{redact(input_uri)} is {what}: its images are read from it (an `images` key of a "
                         "--config file gives --images too: put it under the table of the command run on manifests)")


def refuse_foreign_output(output, reports: bool = False) -> None:
    """An output folder that already holds something, and no record of an mfr job (`MFR_RECORDS`), is
    most often the dataset given as the output (`mfr mask OUT DATA`, the arguments swapped): writing
    there mixed images/, crops/ and manifest/ into the user's photos, and the next job read them as
    photos. Names alone do not make a folder mfr's: a user's own `images/` or `report/` was taken for
    one and overwritten. A folder all of whose entries are outputs of mfr (`holds_mfr_output`: an
    `mfr mask OUT/masked` started before `mfr run DS OUT`) is mfr's, and so is an `mfr embed` output
    of a version that kept no settings record (`shards/` alone); with `reports` (a job that writes its
    report/ beside its outputs: `mfr evaluate`), so is a folder of mfr's report. Hidden files
    (.DS_Store) do not count."""
    from jobs.storage import LocalStore, redact

    if isinstance(output, LocalStore):
        output.refuse_file_in_the_way()  # and a folder above that may not be looked into, in words
        if not output.root.is_dir():
            return
        names = folder_names(output.root)
    else:
        names = output.top_level()  # its folders, and "" for objects at its top
    if not names or names == ["shards"] or holds_record(output):
        return
    # the entries that are not mfr outputs are the ones named (a bucket holding outputs of mfr and
    # something else named its first three, mfr's, as "files mfr did not write"); at most three are
    # looked for, as a dataset's first entries are (one listing or two each, on S3)
    foreign, ours = [], []
    for name in names:
        (ours if holds_mfr_output(output, name, reports) else foreign).append(name)
        if len(foreign) == 3:
            break
    if not foreign:
        return
    more = ", ..." if len(foreign) + len(ours) < len(names) else ""
    shown = ", ".join(n or "(files at its top)" for n in foreign) + more
    if _holds_report(output):  # mfr's own, yet no place for a job's images or shards
        raise ValueError(f"the output {redact(output.uri)} holds a report of `mfr score` or `mfr evaluate` ({shown}): "
                         "give this job a folder of its own; nothing was written")
    if ours:  # beside other jobs' outputs: a folder meant to hold several, not a swapped dataset
        raise ValueError(f"the output {redact(output.uri)} holds files mfr did not write ({shown}) beside outputs of "
                         f"mfr ({', '.join(ours[:3])}): give this job a folder of its own, e.g. "
                         f"{redact(output.uri_of('masked'))}; nothing was written")
    raise ValueError(f"the output {redact(output.uri)} already holds files mfr did not write ({shown}): give a new "
                     "or empty folder (were the input and the output given the other way round?); nothing was "
                     "written")


def folder_names(root) -> list[str]:
    """A local folder's entries by name, sorted, hidden ones (.DS_Store, a write's temporary) left
    out; one that cannot be read is a StorageError saying so."""
    from jobs.storage import StorageError

    try:
        return sorted(e.name for e in os.scandir(root) if not e.name.startswith("."))
    except OSError as exc:
        raise StorageError(f"cannot read {root}: {exc.strerror or exc}") from None


def is_mfr_report(record) -> bool:
    """Whether a parsed report.json is one mfr wrote (its `model_id` and `results`): what tells an
    `mfr score` report's folder from a user's files, here and in `jobs.score.refuse_foreign_report`."""
    return isinstance(record, dict) and "model_id" in record and "results" in record


REPORT_FILES = ("report.json", "report.md", "roc.png", "scores.png", "cmc.png")  # what a report writes


def is_report_file(store, key: str) -> bool:
    """Whether the file `key` of `store` is a report.json of mfr's (`is_mfr_report`). A key the store
    cannot read as itself (`a//report.json` on S3) or a file that is not JSON is not one; a store that
    cannot be read (an S3 endpoint gone) is an error, not a "no": its plots would be read as photos."""
    from jobs.storage import UnreadableObject

    try:
        return is_mfr_report(json.loads(store.read(key)))
    except (ValueError, OSError, UnreadableObject):  # (UnsafeKeyError and JSON errors are ValueErrors)
        return False  # (an unreadable file stays input: its row says so)


def _holds_report(store) -> bool:
    """Whether `store` holds a report.json of mfr's (`is_report_file`), any storage error a "no"."""
    try:
        return is_report_file(store, "report.json")
    except RuntimeError:  # (StorageError is a RuntimeError)
        return False


def holds_record(store) -> bool:
    return any(store.exists(k) for k in MFR_RECORDS)


def holds_mfr_output(output, name: str, reports: bool = False) -> bool:
    """Whether the entry `name` of `output` is a folder holding an mfr output at its top or one level
    down (`mfr run`'s `masked/` and `embeddings/<side>/`), or, with `reports`, a report of mfr's (no
    record is written with one: `mfr evaluate`'s report/)."""
    if not name:
        return False
    folder = open_store(output.uri_of(name))
    return holds_record(folder) or any(n and holds_record(open_store(folder.uri_of(n))) for n in folder.top_level()) \
        or (reports and _holds_report(folder))


def refuse_output_inside_a_run(output) -> None:
    """An output inside an `mfr run` output (`RUN/masked`, `RUN/embeddings/masked`) is the run's own:
    `mfr mask DS RUN/masked --style surgical` once checked only its own settings record, so the run's
    manifest held surgical rows beside the run's seed masks, and the run's rerun embedded those images
    with seed masks. Only `mfr run` adds to a run's output."""
    import json

    from jobs.settings import SETTINGS_KEY
    from jobs.storage import EndpointUnreachable, open_parent, redact

    uri = output.uri.rstrip("/")
    for _ in range(2):  # the run's folders are at most two levels below it
        above = uri.rpartition("/")[0]
        if not above or above.endswith(":/") or above.endswith(":"):  # a bucket or the file system's root
            return
        try:
            parent, _ = open_parent(uri)
            record = json.loads(parent.read(SETTINGS_KEY)) if parent.exists(SETTINGS_KEY) else {}
        except EndpointUnreachable as exc:  # said now, once (passed over, the next request spent its retries again)
            raise EndpointUnreachable(f"writing {redact(output.uri)}", exc.reason) from None
        except Exception:  # an unreadable parent: the job's own checks say so, naming its output
            return
        if isinstance(record, dict) and record.get("command") == "mfr run":
            raise ValueError(f"the output {redact(output.uri)} is inside the mfr run output {redact(parent.uri)}: "
                             "only mfr run adds to it (run it again with the same settings), or give another "
                             "output; nothing was written")
        uri = parent.uri.rstrip("/")


def refuse_output_as_input(images, input_uri: str) -> None:
    """A folder input that is itself the output of `mfr mask` or `mfr run` (its settings record at the
    top): its masked images/ and crops/ would both be read as photos, each face twice, and scored
    against their own originals."""
    from jobs.settings import SETTINGS_KEY
    from jobs.storage import redact

    if images.exists(SETTINGS_KEY):
        uri = redact(input_uri).rstrip("/")
        raise ValueError(f"{uri} is the output of `mfr mask` or `mfr run` (it holds {SETTINGS_KEY}), not a folder "
                         f"of photos: to embed the faces it masked, give it to `mfr embed` with --from-augment; to "
                         f"use its masked images as photos, give the folder that holds them (e.g. {uri}/images)")


def check_images_root(images, given: str) -> None:
    """`--images` must be a folder or prefix that holds something: a typo would otherwise record every
    row of the manifest `missing`."""
    from jobs.storage import LocalStore, redact

    if isinstance(images, LocalStore):
        if not images.root.exists():
            raise FileNotFoundError(f"--images {given}: no such folder (nothing was written)")
        if not images.root.is_dir():
            raise ValueError(f"--images {given} is a file: give the folder the manifest's paths are relative to")
    if not images.any_under(""):
        raise FileNotFoundError(f"--images {redact(given)}: nothing there, so no row of the manifest could be read "
                                "(nothing was written)")


def input_listing(input_uri: str, output, done_dir: str, *, images_uri: str | None = None, done_where=None,
                  progress=None, gallery_per_identity: int = 0, role_done: dict | None = None,
                  manifest_encoding: str | None = None, output_root: str | None = None):
    """(images store, groups, lister, notes): the input's top-level groups, and the lister whose
    `rows(group)` (run in a read task: `jobs.source.read_grouped`, or in this process) yields what is
    left to do in a group. `manifest_encoding`: a CSV manifest's (`manifest_encoding`). `output_root`:
    the whole output where `output` is a part of it (`mfr evaluate`'s embeddings/, beside its
    report/): what an input holding it leaves out."""
    from jobs.storage import open_parent, open_store, redact

    open_store(input_uri)  # a folder path or an s3:// URI, never str(None) read as a folder named None
    input_uri = str(input_uri)
    refuse_output_inside_a_run(output)
    notes = []
    if is_manifest(input_uri):
        manifest_store, name = open_parent(input_uri)
        if not manifest_store.exists(name):
            raise FileNotFoundError(f"{redact(input_uri)}: no such input manifest")
        images = images_root(input_uri, images_uri)
        if images_uri is not None:
            check_images_root(images, images_uri)
        refuse_output_in_place(images, output)
        refuse_foreign_output(output)
        if manifest_encoding is not None and _is_parquet(name):
            raise ValueError(f"--manifest-encoding applies to a CSV manifest; {name} is Parquet, whose text is "
                             "UTF-8 by its format")
        roots = root_spellings(images, input_uri, images_uri)
        head = manifest_head(manifest_store, name)
        check_manifest_columns(manifest_store, name, head, manifest_encoding, roots)
        # the read task runs in another process, with another working folder: give it an absolute URI
        lister = ManifestLister(manifest_store.uri_of(name), output.uri, done_dir, done_where, progress,
                                gallery_per_identity=gallery_per_identity, role_done=role_done,
                                encoding=manifest_encoding, roots=roots)
        note = auto_encoding_note(name, head) if manifest_encoding is None else None
        return images, [name], lister, notes + ([note] if note else [])
    images = images_root(input_uri)
    check_folder_input(input_uri, images_uri, manifest_encoding)
    refuse_output_in_place(images, output)
    refuse_foreign_output(output)  # first: swapped arguments are said as such
    refuse_output_as_input(images, input_uri)
    exclude = output_inside_input(images, open_store(output_root) if output_root else output)
    if exclude:
        notes.append(f"the output lies inside the input: {exclude}/ is not read as input")
    groups = [g for g in images.top_level() if g != exclude]
    if not groups:
        raise ValueError(f"no images under {redact(input_uri)}: check the path (nothing was written)")
    if gallery_per_identity and groups == [""]:
        raise ValueError(f"{redact(input_uri)} holds files at its top level only: `mfr run` takes each image's "
                         "identity from its folder, so it needs a folder per identity (or an input manifest with an "
                         "identity column)")
    lister = FolderLister(images.uri, output.uri, done_dir, done_where, exclude, progress,
                          gallery_per_identity=gallery_per_identity, role_done=role_done)
    return images, groups, lister, notes


def reporting_to(lister, progress):
    """A copy of `lister` whose listing reports what it lists to `progress` (a `jobs.sink.JobProgress`,
    a `Tally`, or None)."""
    twin = copy.copy(lister)
    twin.progress = progress
    return twin


def with_progress(listing: tuple, progress) -> tuple:
    """An `input_listing` result whose lister reports to `progress`. A job lists its input once,
    before it writes anything (so an input it cannot use is refused with the output untouched), and
    hands the result to either executor."""
    images, groups, lister, notes = listing
    return images, groups, reporting_to(lister, progress), notes


def report_listed(progress, todo: int, done: int, failed: int = 0) -> None:
    """Tell `progress` (a `jobs.sink.JobProgress`, a `Tally`, or None) what one group's listing
    found: `todo` inputs to do, `done` already done, `failed` of those with a failed row. An actor's
    call is waited for, a round trip beside a group's listing: a job's summary reads
    these counts as soon as its last read task has ended, and must not miss one still on its way."""
    if progress is None:
        return
    sent = progress.list.remote(todo, done, failed)
    if sent is not None:  # an actor call (a Tally counts in place)
        import ray

        try:
            ray.get(sent, timeout=60)
        except Exception:  # a lost or restarting progress actor costs a count, never the job
            pass


class Tally:
    """What a lister reports (`progress.list.remote(todo, done, failed)`), counted in this process: a
    dry run lists without Ray."""

    def __init__(self):
        self.todo = self.done = self.failed = 0
        self.list = self

    def remote(self, todo: int, done: int, failed: int = 0) -> None:
        self.todo += todo
        self.done += done
        self.failed += failed
