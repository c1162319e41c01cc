"""Input manifests: the seed's landmark CSV, GBK text, Parquet, and rows that must be refused, not dropped."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.inputs import LANDMARK_COLUMNS, read_input_manifest, resolve_input
from conftest import require_shared


def test_the_seeds_landmark_csv_is_a_manifest():
    csv_path = require_shared("seed", "landmark", "test.csv")
    items = read_input_manifest(csv_path.read_bytes(), "test.csv")
    assert [it.key for it in items] == ["1.jpg", "2.jpg", "3.jpg"]
    assert [it.face_type for it in items] == ["0_0", "1_0", "0_1"]
    assert all(it.status is None and len(it.landmarks68) == 136 for it in items)
    first_row = csv_path.read_text().splitlines()[1].split(",")
    assert items[0].landmarks68[:4] == [float(v) for v in first_row[3:7]]


def test_gbk_paths_identities_and_masked_flags():
    text = "path,identity,masked\n白敬亭/0_0_9.jpg,,1\n白敬亭/0_0_白敬亭_0001.jpg,,no\nb/x.jpg,someone,true\n"
    items = read_input_manifest(text.encode("gbk"), "list.csv")
    assert [(it.key, it.identity, it.masked) for it in items] == [
        ("白敬亭/0_0_9.jpg", "白敬亭", True), ("白敬亭/0_0_白敬亭_0001.jpg", "白敬亭", False), ("b/x.jpg", "someone", True)]


def test_bad_rows_are_kept_with_a_reason():
    text = ("path,masked,face_type\n"
            "a/ok.jpg,0,0_0\n"
            "../../etc/passwd,0,0_0\n"
            "/abs/path.jpg,0,0_0\n"
            "s3/../../x.jpg,0,0_0\n"
            "a/ok.jpg,0,0_0\n"
            "a/flag.jpg,perhaps,0_0\n"
            "a/type.jpg,0,2_2\n"
            ",0,0_0\n")
    items = read_input_manifest(text.encode(), "m.csv")
    statuses = [it.status for it in items]
    assert statuses == [None, "unsafe_path", "unsafe_path", "unsafe_path", "duplicate", "bad_row", "bad_row",
                        "unsafe_path"]
    assert "m.csv row 3" in items[1].message and "nothing read or written" in items[1].message
    assert "same image as row 2" in items[4].message
    assert "masked flag" in items[5].message and "face_type" in items[6].message


def test_parquet_manifest_with_landmarks():
    row = {"path": "p/1.jpg", "identity": "p", **{c: float(i) for i, c in enumerate(LANDMARK_COLUMNS)}}
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([row]), sink)
    (item,) = read_input_manifest(sink.getvalue(), "m.parquet")
    assert item.key == "p/1.jpg" and item.landmarks68[5] == 5.0 and item.face_type is None


def test_rows_giving_further_faces_of_one_image_become_one_input():
    """One row per face: their landmarks one after another, face types in row order ("" where none was
    given); a row repeating a given face, with another identity, or with no landmarks is a duplicate."""
    def row(path, start, face_type="", identity=""):
        return ",".join([path, identity, face_type] + [str(start + i) for i in range(136)]) + "\n"

    text = ("path,identity,face_type," + ",".join(LANDMARK_COLUMNS) + "\n" + row("a/1.jpg", 0, "0_0")
            + row("a/1.jpg", 1000) + row("a/1.jpg", 2000, "1_1") + row("a/1.jpg", 1000)
            + row("a/1.jpg", 3000, "", "someone else") + row("b/2.jpg", 0) + row("b/2.jpg", 500, "0_1"))
    items = read_input_manifest(text.encode(), "faces.csv")
    first, same, other, second = items
    assert first.key == "a/1.jpg" and first.status is None and first.face_type == "0_0,,1_1"
    assert first.landmarks68 == [float(v) for start in (0, 1000, 2000) for v in range(start, start + 136)]
    assert (same.status, same.input_row) == ("duplicate", "a/1.jpg#row5")
    assert "same image as row 2" in same.message and "a face already given" in same.message
    assert other.status == "duplicate" and "same identity and masked flag" in other.message
    assert second.key == "b/2.jpg" and len(second.landmarks68) == 272 and second.face_type == ",0_1"
    plain = read_input_manifest(b"path\nc/3.jpg\nc/3.jpg\n", "plain.csv")
    assert [it.status for it in plain] == [None, "duplicate"]


def test_unusable_manifests_raise(tmp_path):
    with pytest.raises(ValueError, match="needs a 'path' column"):
        read_input_manifest(b"file,identity\na.jpg,x\n", "m.csv")
    with pytest.raises(ValueError, match="no rows"):
        read_input_manifest(b"path\n", "m.csv")
    (tmp_path / "m.csv").write_text("path\nx/a.jpg\n")
    job = resolve_input(str(tmp_path / "m.csv"))
    assert job.images_uri == str(tmp_path) and [it.key for it in job.items] == ["x/a.jpg"]


def test_gallery_roles_keep_what_an_earlier_run_gave():
    """`mfr run`'s roles per identity (two gallery places here): a fresh run takes the first images in
    key order; images the output already holds keep their role, and new ones fill what is left."""
    from jobs.inputs import FolderLister

    lister = FolderLister("in", "out", "masked/manifest", gallery_per_identity=2)
    entries = [(f"{person}/{name}.jpg", "file") for person in ("a", "b") for name in ("1", "2", "3", "4")]
    entries += [("a/5.jpg", "not_regular"), ("a/0\udcff.jpg", "file")]  # a FIFO; a name that is not UTF-8
    fresh = lister.assign_roles(entries, {})
    assert [k for k, gallery in fresh.items() if gallery] == ["a/1.jpg", "a/2.jpg", "b/1.jpg", "b/2.jpg"]
    assert "a/5.jpg" not in fresh and "a/0\udcff.jpg" not in fresh  # never read: no role, no gallery place
    # a/1 and b/1 added since; a/3 was a gallery image, a/4 and b/2 probes, b/3 a gallery image
    recorded = {"a/2.jpg": True, "a/3.jpg": True, "a/4.jpg": False, "b/2.jpg": False, "b/3.jpg": True, "b/4.jpg": False}
    roles = lister.assign_roles(entries, recorded)
    assert [k for k, gallery in roles.items() if gallery] == ["a/2.jpg", "a/3.jpg", "b/1.jpg", "b/3.jpg"]
