"""Input manifests: the seed's landmark CSV, GBK text, Parquet, and rows that must be refused, not dropped."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.inputs import LANDMARK_COLUMNS, ManifestLister, Tally, manifest_items, read_input_manifest
from jobs.source import DigestSet, bucket_of, digest, group_id
from jobs.storage import open_store
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
    # a refused row keeps the identity its row gives (not a folder name read from the refused path)
    (refused,) = read_input_manifest(b"path,identity\n../in/person_01/img1.jpg,carol\n", "m.csv")
    assert (refused.status, refused.identity) == ("unsafe_path", "carol")


def test_absolute_paths_under_the_images_root_are_taken_relative_to_it(tmp_path):
    """A manifest written by `find /data/lfw` names its images by absolute paths: each row was refused
    (`unsafe_path`), so such a manifest had to be rewritten by hand. Under the root (as given, or
    resolved through a symlink; an S3 root's URI) they are keys; elsewhere they are still refused."""
    from jobs.inputs import root_spellings
    from jobs.storage import open_store

    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    roots = root_spellings(open_store(tmp_path / "link"), str(tmp_path / "m.csv"), str(tmp_path / "link"))
    assert roots == (f"{tmp_path / 'link'}/", f"{real}/")  # as given first: messages show it
    text = (f"path,identity\n{real}/a/1.jpg,\n{tmp_path / 'link'}/a/2.jpg,\n{tmp_path}/other/3.jpg,\n"
            f"a/4.jpg,\n{real}/a/1.jpg,\n{real}//a/5.jpg,\n")
    items = read_input_manifest(text.encode(), "m.csv", roots=roots)
    assert [(it.key, it.identity, it.status) for it in items] == [
        ("a/1.jpg", "a", None), ("a/2.jpg", "a", None), (f"{tmp_path}/other/3.jpg", "", "unsafe_path"),
        ("a/4.jpg", "a", None), ("a/1.jpg", "a", "duplicate"), ("a/5.jpg", "a", None)]
    assert items[2].message.endswith(f"a manifest's paths are relative to the images root (--images), or absolute "
                                     f"under it ({tmp_path / 'link'})")
    s3 = root_spellings(open_store("s3://bucket/lfw"), "s3://bucket/lfw/m.csv")
    (item,) = read_input_manifest(b"path\ns3://bucket/lfw/x/1.jpg\n", "m.csv", roots=s3)
    assert (item.key, item.status) == ("x/1.jpg", None)
    (item,) = read_input_manifest(b"path\ns3://bucket/lfw2/x/1.jpg\n", "m.csv", roots=s3)  # another prefix
    assert item.status == "unsafe_path"


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
    assert (same.status, same.input_row) == ("duplicate", "a/1.jpg#4")  # the 4th row naming a/1.jpg
    assert "same image as row 2" in same.message and "a face already given" in same.message
    assert other.status == "duplicate" and "same identity and masked flag" in other.message
    assert second.key == "b/2.jpg" and len(second.landmarks68) == 272 and second.face_type == ",0_1"
    plain = read_input_manifest(b"path\nc/3.jpg\nc/3.jpg\n", "plain.csv")
    assert [it.status for it in plain] == [None, "duplicate"]


def test_hand_made_manifests_mean_what_they_say():
    """Four ways a hand-made or pandas-written manifest was read as something else, silently."""
    # "path, identity": the column was " identity", so every identity became the folder's name
    items = read_input_manifest(b"path, identity\nx/1.jpg,zed\n", "m.csv")
    assert [(it.key, it.identity) for it in items] == [("x/1.jpg", "zed")]
    # a spreadsheet's blank rows (",,") were refused rows (`unsafe_path`: --strict failed the job)
    items = read_input_manifest(b"path,identity\nx/1.jpg,a\n,,\n , \n,\n", "m.csv")
    assert [(it.key, it.identity, it.status) for it in items] == [("x/1.jpg", "a", None)]
    # a quote left open joined the following rows into one path: they had no row of their own
    items = read_input_manifest(b'path,identity\n"x/1.jpg,a\nx/2.jpg,b\nx/3.jpg,c\n', "m.csv")
    assert [it.status for it in items] == ["unsafe_path"]
    assert 'the path holds a line break: a quote (") opened and not closed' in items[0].message
    # ... and with more than 128 KiB after it, csv's own error ended the command in a traceback
    with pytest.raises(ValueError, match=r'm.csv line \d+: not a CSV row .*field larger than field limit.*a quote'):
        read_input_manifest(b'path\n"x/1.jpg\n' + b"x/2.jpg\n" * 20000, "m.csv")
    # Parquet: identity 0 was taken for "none" (the folder's name instead), and pandas' float column
    # for integers with a gap gave "1.0"
    sink = io.BytesIO()
    pq.write_table(pa.table({"path": ["x/1.jpg", "x/2.jpg", "x/3.jpg"], "identity": [0.0, 1.0, float("nan")]}), sink)
    assert [it.identity for it in read_input_manifest(sink.getvalue(), "m.parquet")] == ["0", "1", "x"]


def _face_rows(*rows) -> bytes:
    """A landmark manifest: (path, first landmark value or a list of 136 cells) per row."""
    def cells(v):
        return [str(v + i) for i in range(136)] if isinstance(v, (int, float)) else list(v)
    return ("path," + ",".join(LANDMARK_COLUMNS) + "\n"
            + "".join(",".join([path] + cells(v)) + "\n" for path, v in rows)).encode()


def test_a_bad_face_row_refuses_its_image_with_its_reason():
    """An image's face rows are one input: a bad one (after or before the good ones) refuses the image
    with that row's reason. Before, a later bad row was a 'duplicate' (fine for --strict, its reason
    lost), and after a first bad row the good ones were 'duplicates ... processed once' while none was."""
    empty_cell = ["1"] * 135 + [""]
    later = read_input_manifest(_face_rows(("a/1.jpg", 0), ("a/1.jpg", 1000), ("a/1.jpg", empty_cell)), "f.csv")
    assert [(it.key, it.status, it.input_row) for it in later] == [("a/1.jpg", "bad_row", "")]
    assert later[0].message.startswith("f.csv row 4: 1 of the 136 landmark cells are empty (part_67_y the first)")
    assert "face rows (row 2 and on) are one input" in later[0].message
    first = read_input_manifest(_face_rows(("a/1.jpg", ["x"] + ["1"] * 135), ("a/1.jpg", 0), ("a/1.jpg", 500),
                                           ("b/2.jpg", 0)), "f.csv")
    assert [(it.key, it.status) for it in first] == [("a/1.jpg", "bad_row"), ("b/2.jpg", None)]
    assert first[0].message == "f.csv row 2: landmark part_0_x is not a number: 'x'"
    # a row with no landmarks at all has its face detected, as in a manifest without them
    (detect,) = read_input_manifest(_face_rows(("c/3.jpg", [""] * 136)), "f.csv")
    assert (detect.status, detect.landmarks68) == (None, None)
    # a plain repeat of a refused row says so, not "processed once"
    plain = read_input_manifest(b"path,masked\na.jpg,maybe\na.jpg,1\n", "p.csv")
    assert [it.status for it in plain] == ["bad_row", "duplicate"]
    assert plain[1].message == "p.csv row 3: same image as row 2, which is refused (bad_row): fix that row"
    # a repeat that labels the image otherwise says which label was dropped (it said only "processed once")
    relabelled = read_input_manifest(b"path,identity,masked\na/1.jpg,B,0\nb/2.jpg,B,0\na/1.jpg,A,0\n"
                                     b"b/2.jpg,B,1\nb/2.jpg,B,0\nb/2.jpg,B,\n", "l.csv")
    assert [it.status for it in relabelled] == [None, None, "duplicate", "duplicate", "duplicate", "duplicate"]
    assert [it.message for it in relabelled[2:]] == [
        "l.csv row 4: same image as row 2; processed once, with row 2's labels (identity 'A' here, 'B' there): "
        "check which is right",
        "l.csv row 5: same image as row 3; processed once, with row 3's labels (masked True here, False there): "
        "check which is right",
        "l.csv row 6: same image as row 3; processed once",
        "l.csv row 7: same image as row 3; processed once, with row 3's labels (masked blank here, False there): "
        "check which is right"]


def test_repeated_and_refused_rows_keep_their_ids_when_rows_are_added():
    """A repeat answers '<key>#<n>' (the n-th row naming the image), and so does a refused path's: a
    row added above them left the old ids (by row number) stale in the output beside new ones. A
    refused path's numbers are kept for the paths that more than one row names: a manifest of a
    million refused rows held 100 MB of them."""
    before = read_input_manifest(b"path\na/1.jpg\na/1.jpg\n../x.jpg\n../x.jpg\n", "m.csv")
    after = read_input_manifest(b"path\nb/0.jpg\na/1.jpg\nb/0.jpg\na/1.jpg\n../x.jpg\n../x.jpg\n", "m.csv")
    ids = [it.input_row or it.key for it in before]
    assert ids == ["a/1.jpg", "a/1.jpg#2", "../x.jpg", "../x.jpg#2"]
    assert set(ids) < {it.input_row or it.key for it in after}
    import tracemalloc

    list(manifest_items(b"path\n/x.jpg\n", "m.csv"))  # what it imports is not what it holds
    # 20,000 refused rows: 37 KB held here, 1.55 MB when every refused path's rows were counted; the
    # file's bytes are made before tracing (which makes Python several times slower: 100,000 rows, 18 s)
    data = ("path\n" + "".join(f"/elsewhere/{i}.jpg\n" for i in range(20_000))).encode()
    tracemalloc.start()
    for n, (_, item) in enumerate(manifest_items(data, "m.csv")):
        if n == 19_000:
            held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert item.status == "unsafe_path" and held < 400_000, held
    # a "nan" masked cell (astype(str) of a missing value) is refused, as before, not read as unmasked
    (nan,) = read_input_manifest(b"path,masked\na.jpg,nan\n", "m.csv")
    assert nan.status == "bad_row"


def test_cells_are_read_as_a_spreadsheet_user_means_them():
    """Spaces around a CSV cell (' alice' was another identity than 'alice', ' a/1.jpg' a missing
    file); a seed-layout Parquet's numeric sub_folder (0 was read as none: another image); a CSV
    masked flag written by pandas from a column with gaps ('1.0' was a bad row)."""
    items = read_input_manifest(b"path, identity, masked\n a/1.jpg , alice,1.0\na/2.jpg,alice ,0.0\n", "m.csv")
    assert [(it.key, it.identity, it.masked, it.status) for it in items] == [
        ("a/1.jpg", "alice", True, None), ("a/2.jpg", "alice", False, None)]
    sink = io.BytesIO()
    pq.write_table(pa.table({"sub_folder": [0, 1], "image_name": ["1.jpg", "2.jpg"]}), sink)
    assert [it.key for it in read_input_manifest(sink.getvalue(), "s.parquet")] == ["0/1.jpg", "1/2.jpg"]
    sink = io.BytesIO()
    pq.write_table(pa.table({"sub_folder": [1.0], "image_name": ["2.jpg"]}), sink)
    assert [it.key for it in read_input_manifest(sink.getvalue(), "s.parquet")] == ["1/2.jpg"]


def test_unusable_manifests_raise(tmp_path):
    with pytest.raises(ValueError, match="needs a 'path' column"):
        read_input_manifest(b"file,identity\na.jpg,x\n", "m.csv")
    with pytest.raises(ValueError, match="no rows"):
        read_input_manifest(b"path\n", "m.csv")
    with pytest.raises(ValueError, match="neither UTF-8 nor GBK"):
        read_input_manifest(b"path\n" + b"a/1.jpg\n" * 20000 + b"\xff\xff.jpg\n", "m.csv")


def _nul_ended(prefix: str, count: int) -> list[str]:
    """Texts whose digest ends in a NUL byte: numpy's bytes scalars drop trailing NULs, so a set built
    from them would miss these."""
    found, i = [], 0
    while len(found) < count:
        if digest(f"{prefix}{i}")[-1] == 0:
            found.append(f"{prefix}{i}")
        i += 1
    return found


def test_a_gbk_manifest_is_found_gbk_where_its_first_non_ascii_row_is_far_down():
    """Streamed, a manifest is decoded as it is read: a GBK name 20,000 rows in sends the reader back to
    the start with GBK, and the rows are those of the whole file decoded as GBK."""
    text = "path,identity\n" + "".join(f"p{i % 7}/{i}.jpg,\n" for i in range(20000)) + "白敬亭/1.jpg,\n"
    items = read_input_manifest(text.encode("gbk"), "list.csv")
    assert len(items) == 20001 and items[-1].key == "白敬亭/1.jpg" and items[-1].identity == "白敬亭"
    assert all(it.status is None for it in items)


def test_repeated_paths_are_found_whatever_their_digest_and_wherever_they_are():
    """Rows far apart that name one image are merged or marked as if the file were read at once; the
    paths chosen here have digests ending in NUL."""
    keys = _nul_ended("a/", 3)
    lines = ["path"] + keys + [f"b/{i}.jpg" for i in range(5000)] + [keys[1], "./" + keys[2]]
    items = read_input_manifest(("\n".join(lines) + "\n").encode(), "m.csv")
    assert len(items) == 5005
    repeats = [it for it in items if it.status == "duplicate"]
    assert [(it.key, it.input_row) for it in repeats] == [(keys[1], f"{keys[1]}#2"), (keys[2], f"{keys[2]}#2")]
    assert "same image as row 3" in repeats[0].message and "same image as row 4" in repeats[1].message
    streamed = list(manifest_items(("\n".join(lines) + "\n").encode(), "m.csv"))
    assert sorted(line for line, _ in streamed) == sorted(set(line for line, _ in streamed))
    assert [line for line, _ in streamed][-4:] == [3, 4, 5005, 5006]  # held to the end, in row order


def test_digest_sets_hold_exactly_their_members():
    members = _nul_ended("m", 20) + [f"k{i}" for i in range(3000)]
    others = _nul_ended("o", 20) + [f"x{i}" for i in range(3000)]
    done = DigestSet(b"".join(digest(t) for t in members + members[:10]))
    assert len(done) == len(members)
    assert done.contains(members).all() and not done.contains(others).any()
    assert members[0] in done and others[0] not in done and not DigestSet().contains(members).any()


def test_a_manifest_is_listed_in_chunks_less_what_is_done_in_bounded_memory(tmp_path):
    """50,000 rows, 500 of them done already: the lister yields the others in chunks, reports every row,
    and never holds the manifest (its items alone take over 20 MiB of Python objects)."""
    import tracemalloc

    manifest = tmp_path / "list.csv"
    manifest.write_text("path\n" + "".join(f"id{i // 20}/{i}.jpg\n" for i in range(50_000)))
    done = [f"id{i // 20}/{i}.jpg" for i in range(0, 50_000, 100)]
    (tmp_path / "out" / "manifest" / "g=x").mkdir(parents=True)
    pq.write_table(pa.table({"input_row": done}), tmp_path / "out" / "manifest" / "g=x" / "shard.parquet")
    tally = Tally()
    lister = ManifestLister(str(manifest), str(tmp_path / "out"), "manifest", progress=tally)
    tracemalloc.start()
    try:
        seen, chunks = 0, 0
        for table in lister.rows("list.csv"):
            chunks += 1
            seen += table.num_rows
            assert not set(table.column("input_row").to_pylist()) & set(done[:50])
            first = table.slice(0, 1).to_pylist()[0]
            assert first["group"] == group_id(bucket_of(first["key"]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == 49_500 and chunks >= 49_500 // 4096 and (tally.todo, tally.done) == (49_500, 500)
    assert peak < 15 * 2**20, f"{peak / 2**20:.1f} MiB traced while listing"


def test_a_manifest_on_s3_is_listed_from_a_local_copy_that_is_then_removed(bucket, tmp_path, monkeypatch):
    import os
    import tempfile

    from jobs.storage import open_store

    # A temp folder of the test's own: the machine's is shared with the other test process, whose jobs
    # make and remove their own mfr-* folders there meanwhile.
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))

    def copies():
        return set(os.listdir(private))

    store = open_store(f"s3://{bucket}/lists")
    store.write("m.csv", "path,masked\na/1.jpg,0\nb/2.jpg,1\na/1.jpg,0\n".encode())
    before = copies()
    lister = ManifestLister(f"s3://{bucket}/lists/m.csv", str(tmp_path / "out"), "manifest")
    rows = [r for table in lister.rows("m.csv") for r in table.to_pylist()]
    assert [(r["key"], r["status"], r["masked"]) for r in rows] == [("b/2.jpg", "", True), ("a/1.jpg", "", False),
                                                                     ("a/1.jpg", "duplicate", False)]
    assert copies() == before
    with pytest.raises(FileNotFoundError):
        next(ManifestLister(f"s3://{bucket}/lists/nope.csv", str(tmp_path / "out"), "manifest").rows("nope.csv"))


def test_gallery_roles_keep_what_an_earlier_run_gave():
    """`mfr run`'s roles per identity (two gallery places here): a fresh run takes the first images in
    key order; images the output already holds keep their role, and new ones fill what is left."""
    from jobs.inputs import FolderLister

    lister = FolderLister("in", "out", "masked/manifest", gallery_per_identity=2)
    entries = [(f"{person}/{name}.jpg", "file") for person in ("a", "b") for name in ("1", "2", "3", "4")]
    entries += [("a/5.jpg", "not_regular"), ("a/0\udcff.jpg", "file")]  # a FIFO; a name that is not UTF-8
    junk = ["a/.DS_Store", "a/._1.jpg", "b/Thumbs.db", "a/0 notes.txt"]  # sort first; not images by their names
    entries = [(k, "file") for k in junk] + entries
    fresh = lister.assign_roles(entries, {})
    assert [k for k, gallery in fresh.items() if gallery] == ["a/1.jpg", "a/2.jpg", "b/1.jpg", "b/2.jpg"]
    for key in ["a/5.jpg", "a/0\udcff.jpg", *junk]:  # never read: no role, no gallery place
        assert key not in fresh, key
    # a/1 and b/1 added since; a/3 was a gallery image, a/4 and b/2 probes, b/3 a gallery image
    recorded = {"a/2.jpg": True, "a/3.jpg": True, "a/4.jpg": False, "b/2.jpg": False, "b/3.jpg": True, "b/4.jpg": False}
    roles = lister.assign_roles(entries, recorded)
    assert [k for k, gallery in roles.items() if gallery] == ["a/2.jpg", "a/3.jpg", "b/1.jpg", "b/3.jpg"]


def test_an_empty_file_is_no_gallery_image_on_a_folder_or_a_bucket(tmp_path, bucket):
    """`mfr run` gave the gallery role to an identity's first file in key order, a file of 0 bytes too:
    no face could be found in it, and every probe of the identity failed to enrol (a walkthrough over
    S3: rank-1 40 % where `mfr score` over the same photos gave 70 %). The listing knows its size: its
    row says `empty`, as reading it said, and the next file is the gallery image."""
    from jobs.inputs import FolderLister

    files = {"a/0.jpg": b"", "a/1.jpg": b"\xff\xd8 not read here", "a/2.jpg": b"x", "b/0 notes.txt": b"",
             "b/1.jpg": b"x", "top.jpg": b"", "top2.jpg": b"x"}
    local = tmp_path / "in"
    for key, data in files.items():
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        (local / key).write_bytes(data)
    remote = open_store(f"s3://{bucket}/in")
    for key, data in files.items():
        remote.write(key, data)
    for uri in (str(local), f"s3://{bucket}/in"):
        store = open_store(uri)
        assert [(k, kind) for g in ("a", "b") for k, kind in store.entries(g)] == [
            ("a/0.jpg", "empty"), ("a/1.jpg", "file"), ("a/2.jpg", "file"), ("b/0 notes.txt", "empty"),
            ("b/1.jpg", "file")], uri
        lister = FolderLister(uri, str(tmp_path / f"out{len(uri)}"), "masked/manifest", gallery_per_identity=1)
        rows = {r["key"]: r for g in ("a", "b", "") for table in lister.rows(g) for r in table.to_pylist()}
        assert {k: (r["status"], r["gallery"]) for k, r in rows.items()} == {
            "a/0.jpg": ("empty", False), "a/1.jpg": ("", True), "a/2.jpg": ("", False),
            "b/0 notes.txt": ("not_an_image", False), "b/1.jpg": ("", True),  # (not an image, first)
            # an image at the top has no identity and is no sample of `mfr run`, empty or not (not a failure)
            "top.jpg": ("no_identity", False), "top2.jpg": ("no_identity", False)}, uri
        assert rows["a/0.jpg"]["message"] == "the file is empty (0 bytes)"  # as decoding it says


def test_run_roles_over_a_manifest_replaced_after_their_pass_stop_the_listing(tmp_path, monkeypatch):
    """`mfr run`'s roles are chosen by a pass of their own over a manifest: one replaced before the
    listing pass would be listed with roles chosen from another file (an identity without a gallery
    image, or with two), so the listing ends with the manifest-changed error."""
    import os

    import jobs.inputs as inputs

    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"path,identity\na/1.jpg,a\na/2.jpg,a\n")
    real = inputs.manifest_items
    calls = []

    def replaced_after_the_first(path, name, encoding=None, roots=()):
        calls.append(name)
        if len(calls) == 2:
            (tmp_path / "new.csv").write_bytes(b"path,identity\na/3.jpg,a\na/2.jpg,a\n")
            os.replace(tmp_path / "new.csv", manifest)
        return real(path, name, encoding, roots)

    lister = ManifestLister(str(manifest), str(tmp_path / "out"), "masked/manifest", gallery_per_identity=1,
                            role_done={"gallery": [("g", None)], "probe": [("p", None)]})
    assert [(r["key"], r["gallery"]) for t in lister.rows("m.csv") for r in t.to_pylist()] == \
        [("a/1.jpg", True), ("a/2.jpg", False)]
    monkeypatch.setattr(inputs, "manifest_items", replaced_after_the_first)
    with pytest.raises(ValueError, match="changed while it was read"):
        list(lister.rows("m.csv"))


def test_run_listing_leaves_files_that_are_no_images_or_have_no_identity_out_of_the_samples(tmp_path):
    """`mfr run` over a folder: `.DS_Store` sorted first and became a person's gallery image (every
    real photo a probe, the job ending without a score); a README counted as a failed probe; a flat
    folder gave one identity "" and a meaningless report. Such files are listed with a status that is
    no sample (not read, never a gallery image), and a folder of top-level files only is refused."""
    from jobs.embed import NOT_FAILURES
    from jobs.inputs import input_listing
    from jobs.progress import FINE

    root = tmp_path / "in"
    for key in ("p1/.DS_Store", "p1/._a.jpg", "p1/a.jpg", "p1/b.JPG", "p2/Thumbs.db", "p2/c.png", "p2/d.avif",
                "p2/e.HEIC", "README.md", "loose.jpg"):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(b"x")
    out = open_store(tmp_path / "out")
    _, groups, lister, _ = input_listing(str(root), out, "masked/manifest", gallery_per_identity=1)
    rows = {r["key"]: (r["status"], r["gallery"]) for g in groups for t in lister.rows(g) for r in t.to_pylist()}
    assert rows == {"p1/.DS_Store": ("not_an_image", False), "p1/._a.jpg": ("not_an_image", False),
                    "p1/a.jpg": ("", True), "p1/b.JPG": ("", False), "p2/Thumbs.db": ("not_an_image", False),
                    "p2/c.png": ("", True), "p2/d.avif": ("", False), "p2/e.HEIC": ("", False),
                    "README.md": ("not_an_image", False), "loose.jpg": ("no_identity", False)}
    assert {"not_an_image", "no_identity"} <= set(NOT_FAILURES) & set(FINE)
    _, groups, lister, _ = input_listing(str(root), out, "manifest")  # mask and embed read every image file
    assert {r["key"]: r["status"] for g in groups for t in lister.rows(g) for r in t.to_pylist()}["loose.jpg"] == ""
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="needs a folder per identity"):
        input_listing(str(flat), out, "masked/manifest", gallery_per_identity=1)


def test_a_manifest_replaced_or_changed_while_listed_is_never_read_half_old_half_new(tmp_path, monkeypatch):
    """Both passes read one handle: a manifest replaced after the first pass (an atomic rename) is
    listed as it was when opened; one rewritten in place stops the listing with a clear error instead
    of letting a repeat go unseen."""
    import os

    import jobs.source as source

    manifest = tmp_path / "m.csv"
    real = source.digest

    def listing(change):
        manifest.write_bytes(b"path\na.jpg\nb.jpg\n")
        calls = []

        def digest_then_change(text):
            calls.append(text)
            if len(calls) == 2:  # the first pass has just read its last row
                change()
            return real(text)

        monkeypatch.setattr(source, "digest", digest_then_change)
        try:
            return [(it.key, it.status) for _, it in manifest_items(manifest, "m.csv")]
        finally:
            monkeypatch.setattr(source, "digest", real)

    def replace():
        (tmp_path / "new.csv").write_bytes(b"path\na.jpg\na.jpg\n")
        os.replace(tmp_path / "new.csv", manifest)

    def rewrite():
        with open(manifest, "r+b") as f:
            f.write(b"path\na.jpg\na.jpg\nc.jpg\n")

    assert listing(replace) == [("a.jpg", None), ("b.jpg", None)]
    with pytest.raises(ValueError, match="changed while it was read"):
        listing(rewrite)
    assert [it.key for it in read_input_manifest(bytearray(b"path\nx/1.jpg\n"), "m.csv")] == ["x/1.jpg"]


def test_a_manifest_in_another_encoding_is_read_as_given_or_said_to_be_read_as_gbk(tmp_path):
    """A Western European spreadsheet's CSV (cp1252) is neither UTF-8 nor GBK: refused with the way
    out, or, where its bytes happen to be GBK too ("Müller" reads "M黮ler"), read as GBK with a note
    that says so, since every one of its rows would then be missing. Given its encoding, it is read
    right; given a wrong one, refused; an unknown codec is named."""
    from jobs.inputs import auto_encoding_note, check_manifest_columns, manifest_encoding, manifest_head

    text = "path,identity\nJosé/a.jpg,jose\nMüller/b.jpg,muller\n"
    with pytest.raises(ValueError, match="neither UTF-8 nor GBK text: give its encoding with --manifest-encoding"):
        read_input_manifest(text.encode("cp1252"), "list.csv")
    items = read_input_manifest(text.encode("cp1252"), "list.csv", manifest_encoding("cp1252"))
    assert [(it.key, it.identity) for it in items] == [("José/a.jpg", "jose"), ("Müller/b.jpg", "muller")]
    assert [it.key for it in read_input_manifest(text.encode("utf-16"), "l.csv", manifest_encoding("UTF-16"))] == \
        ["José/a.jpg", "Müller/b.jpg"]
    # "utf-8" given: a BOM is still not part of the first column's name
    assert read_input_manifest(("\ufeff" + text).encode(), "l.csv", manifest_encoding("utf8"))[0].key == "José/a.jpg"
    with pytest.raises(ValueError, match="not UTF-8 text"):
        read_input_manifest(text.encode("cp1252"), "list.csv", manifest_encoding("utf-8"))
    for codec in ("cp9999", "base64", "zlib"):  # the last two codecs of bytes, not text: refused up front too
        with pytest.raises(ValueError, match=f"not a text encoding Python knows: '{codec}'"):
            manifest_encoding(codec)
    assert manifest_encoding("auto") is None and manifest_encoding(None) is None

    only_gbk_too = "path,identity\nMüller/b.jpg,muller\n".encode("cp1252")
    assert read_input_manifest(only_gbk_too, "m.csv")[0].key == "M黮ler/b.jpg"  # what auto can only guess
    store = open_store(str(tmp_path))
    store.write("m.csv", only_gbk_too)
    store.write("u.csv", text.encode("utf-8"))
    store.write("g.csv", "path\n白敬亭/0_0_9.jpg\n".encode("gbk"))
    assert "m.csv is not UTF-8: it is read as GBK" in auto_encoding_note("m.csv", manifest_head(store, "m.csv"))
    assert "--manifest-encoding" in auto_encoding_note("g.csv", manifest_head(store, "g.csv"))
    assert auto_encoding_note("u.csv", manifest_head(store, "u.csv")) is None
    # a multi-byte character cut by the look's end is still UTF-8
    store.write("long.csv", ("path\n" + "é" * 600_000 + ".jpg\n").encode())
    assert auto_encoding_note("long.csv", manifest_head(store, "long.csv")) is None
    # a first row longer than the head is the read task's to judge: the head holds no whole row
    store.write("cut.csv", ("file\n" + "é" * 600_000 + ".jpg\n").encode())
    check_manifest_columns(store, "cut.csv", manifest_head(store, "cut.csv"))
    # a UTF-16 manifest's header, given its encoding, is read as the rows will be
    store.write("wide.csv", "file,identity\na.jpg,x\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"needs a 'path' column .* it has \['file', 'identity'\]"):
        check_manifest_columns(store, "wide.csv", manifest_head(store, "wide.csv"), manifest_encoding("utf-16"))


def test_blank_lines_above_a_manifests_header_are_passed_over():
    """A spreadsheet's CSV with a blank line (or a row of empty cells) above its header was refused:
    "a manifest needs a 'path' column ...; it has ['None']", the blank line taken for the header."""
    from jobs.inputs import manifest_items

    data = b"\n,,\r\n path , identity\r\na.jpg,x\r\n\r\nb.jpg,y\r\n"
    assert [(it.key, it.identity) for it in read_input_manifest(data, "l.csv")] == [("a.jpg", "x"), ("b.jpg", "y")]
    assert [line for line, _ in manifest_items(data, "l.csv")] == [4, 5]  # numbered after the lines above
    with pytest.raises(ValueError, match="the manifest has no rows"):
        read_input_manifest(b"\n\n,\n", "l.csv")
    # a line csv cannot read is named by its own number (it was the header's 0, or the row before it)
    for data, line in ((b"path\n" + b"x" * 200_000 + b"\n", 2), (b"\n\npath\n" + b"x" * 200_000 + b"\n", 4),
                       (b"x" * 200_000 + b"\n", 1)):
        with pytest.raises(ValueError, match=f"l.csv line {line}: not a CSV row"):
            read_input_manifest(data, "l.csv")


def test_the_column_check_before_a_job_says_what_its_read_task_says_or_leaves_it_to_the_task(tmp_path):
    """`check_manifest_columns` reads a manifest's first MiB before the job starts; the read task reads
    it all. Each file below: the check refuses in the read task's words, or passes it on to the task."""
    from jobs.inputs import check_manifest_columns, manifest_head, manifest_items

    store = open_store(str(tmp_path))
    rows = "".join(f"p{i:06d}.jpg,x\n" for i in range(2000))
    unit = "é" * 1000 + ","
    files = {
        # a byte neither UTF-8 nor GBK past the first chunk but within the MiB: the task named the columns
        # in UTF-8 (its first row was read before that byte), the whole head decoded said GBK ('identit茅')
        "mixed.csv": ("file,identité\n" + rows).encode() + "张.jpg,x\n".encode("gbk"),
        # a first row longer than the head, which cuts a character: no whole row, no reading as GBK
        "cut.csv": "file,identité\n".encode() + (unit * 600).encode() + b"\n",
        # a MiB of blank rows, then a row: rows past the head are rows
        "late.csv": b"path,identity\n" + b",\n" * 600_000 + b"a.jpg,x\n",
        "bare.csv": b"path,identity\n" + b",\n" * 3,
        # the seed's lists are GBK: one of more than a MiB is refused before the job too, also where the
        # MiB ends on a line's end
        "seed.csv": "".join(["file,identity\n"] + [f"张三/{i}.jpg,张三\n" for i in range(80_000)]).encode("gbk"),
        "exact.csv": "".join(["file,identity\n"] + [f"张三/{i:06d}.jpg,张\n" for i in range(55_187)]
                             + ["ab.jpg,x\n"] + [f"张三/{i}.jpg,张\n" for i in range(100)]).encode("gbk"),
        # a UTF-8 list with a path column and one GBK row: the task reads it all as GBK, where its BOM is
        # part of the first column's name, and refuses it so
        "stray.csv": ("\ufeffpath,identity\n" + rows).encode() + "张.jpg,x\n".encode("gbk"),
    }
    assert files["exact.csv"][(1 << 20) - 1:1 << 20] == b"\n"
    for name, data in files.items():
        store.write(name, data)
        try:
            list(manifest_items(tmp_path / name, name))
            said_by_task = None
        except ValueError as exc:
            said_by_task = str(exc)
        try:
            check_manifest_columns(store, name, manifest_head(store, name))
        except ValueError as exc:
            assert str(exc) == said_by_task, name
        else:
            assert name in ("cut.csv", "late.csv"), f"{name}: the check passed what it could refuse: {said_by_task}"
    assert "it has ['file', 'identité']" in str(pytest.raises(ValueError, check_manifest_columns, store, "mixed.csv",
                                                              manifest_head(store, "mixed.csv")).value)


def test_a_rerun_over_an_output_of_the_row_numbered_ids_adds_no_second_row(tmp_path):
    """Repeated and refused rows were '<key>#row<line>' before they were numbered per path: a rerun
    over such an output wrote each again under its new id, two rows for one input row."""
    import pyarrow.compute as pc

    from jobs.augment import read_manifest, run_augment

    (tmp_path / "in").mkdir()
    manifest = tmp_path / "in" / "list.csv"
    manifest.write_text("path\na/1.jpg\na/1.jpg\n../x.jpg\n../x.jpg\nb/2.jpg\n")
    out = tmp_path / "out"
    run_augment(str(manifest), str(out), executor="local")
    before = read_manifest(str(out))
    assert sorted(before.input_row) == ["../x.jpg", "../x.jpg#2", "a/1.jpg", "a/1.jpg#2", "b/2.jpg"]
    # the output as the earlier version left it: the same rows under row-numbered ids
    old_ids = {"a/1.jpg#2": "a/1.jpg#row3", "../x.jpg": "../x.jpg#row4", "../x.jpg#2": "../x.jpg#row5"}
    for shard in (out / "manifest").rglob("*.parquet"):
        table = pq.read_table(shard)
        ids = [old_ids.get(v, v) for v in table.column("input_row").to_pylist()]
        pq.write_table(table.set_column(table.schema.get_field_index("input_row"), "input_row", pa.array(ids)), shard)
    summary = run_augment(str(manifest), str(out), executor="local")
    after = read_manifest(str(out))
    assert summary.skipped == 5 and len(after) == 5, (summary, sorted(after.input_row))
    assert not pc.any(pa.array(after.input_row.str.endswith("#2"))).as_py()


def test_mfr_run_over_an_output_of_the_row_numbered_ids_adds_no_second_row(face_photos, tmp_path):
    """The same for `mfr run`, whose role folders (embeddings/masked, embeddings/unmasked) were looked
    up by the new ids alone: each repeated or refused row was written there again."""
    import shutil

    from jobs.run import run_pipeline

    people = sorted({p.parent.name for p in face_photos})[:2]
    lines = ["path"]
    for person in people:
        for photo in [p for p in face_photos if p.parent.name == person][:2]:
            (tmp_path / "in" / person).mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, tmp_path / "in" / person / photo.name)
            lines.append(f"{person}/{photo.name}")
    lines += [lines[2], "../x.jpg"]  # a repeat of a probe, a refused path
    manifest = tmp_path / "in" / "list.csv"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    run_pipeline(str(manifest), str(out), executor="local")
    old_ids = {f"{lines[2]}#2": f"{lines[2]}#row6", "../x.jpg": "../x.jpg#row7"}

    def rows() -> dict:
        return {str(shard.relative_to(out)).split("/shards/")[0].split("/manifest/")[0]: sorted(
            pq.read_table(shard).column("input_row").to_pylist()) for shard in out.rglob("*.parquet")}

    for shard in out.rglob("*.parquet"):  # the output as the earlier version left it
        table = pq.read_table(shard)
        ids = [old_ids.get(v, v) for v in table.column("input_row").to_pylist()]
        pq.write_table(table.set_column(table.schema.get_field_index("input_row"), "input_row", pa.array(ids)), shard)
    before = rows()
    run_pipeline(str(manifest), str(out), executor="local")
    assert rows() == before


@pytest.mark.parametrize("where", ["local", "s3"])
def test_what_mfr_wrote_inside_an_input_is_left_out_and_nothing_else(where, tmp_path, request):
    """An mfr output's folder (a settings record) is left out whole; beside a report.json of mfr's
    (`mfr score`'s output, `mfr evaluate`'s report/, which hold no record) only the report's own files:
    `mfr evaluate DS DS/eval` run again read eval/report's plots as photos. A report.json of someone
    else's, or one that is not JSON, leaves its folder as it is."""
    import json

    from jobs.inputs import without_outputs

    store = open_store(f"s3://{request.getfixturevalue('bucket')}/in" if where == "s3" else str(tmp_path / "in"))
    ours = json.dumps({"model_id": "sface", "results": []}).encode()
    files = {"p/a.jpg": b"a", "p/eval/report/report.json": ours, "p/eval/report/roc.png": b"plot",
             "p/eval/report/cmc.png": b"plot", "p/eval/report/b.jpg": b"b",
             "p/eval/embeddings/_mfr_embed_settings.json": b"{}", "p/eval/embeddings/shards/x.parquet": b"x",
             "p/theirs/report.json": json.dumps({"model_id": "x"}).encode(), "p/theirs/roc.png": b"c",
             "p/odd/report.json": b"\xff not json", "p/odd/roc.png": b"d"}
    for key, data in files.items():
        store.write(key, data)
    kept = [key for key, _ in without_outputs(store.entries("p"), store)]
    assert kept == ["p/a.jpg", "p/eval/report/b.jpg", "p/odd/report.json", "p/odd/roc.png", "p/theirs/report.json",
                    "p/theirs/roc.png"]
    # without the store to read them with, reports are not looked for (settings records still are)
    assert len(without_outputs(store.entries("p"))) == len(files) - 2
