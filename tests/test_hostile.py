"""Hostile input: every odd or broken file gets a manifest row with a specific status and a message a
person understands, every good image is processed, nothing is written outside the output prefix,
and the exit code is non-zero only under --strict."""

from __future__ import annotations

import csv
import io

import boto3
import pytest

from corpus import GOOD, build_corpus
from jobs.augment import read_manifest
from jobs.cli import main
from jobs.embed import SHARD_DIR
from jobs.storage import open_store

WORDS = {"empty": "empty", "undecodable": "corrupt or truncated", "unsupported": "not an image format",
         "too_large": "pixels", "no_face": "no face", "missing": "does not exist", "unsafe_path": "refused",
         "duplicate": "same image as row", "not_an_image": "not an image's file name"}


@pytest.fixture
def corpus(tmp_path, face_photos, shared_data):
    root = tmp_path / "corpus"
    return root, build_corpus(root, face_photos, shared_data)


def files_under(root):
    return {p for p in root.rglob("*") if p.is_file()}


def test_augment_and_embed_over_the_corpus(ray_runtime, corpus, tmp_path, capsys):
    root, expected = corpus
    before = files_under(tmp_path)
    out, emb = tmp_path / "out", tmp_path / "emb"

    assert main(["mask", str(root), str(out), "--quiet"]) == 0
    manifest = read_manifest(str(out))
    assert set(manifest.source_key) == set(expected)
    for key, status in expected.items():
        rows = manifest[manifest.source_key == key]
        assert set(rows.status) == {status}, key
        if status == GOOD:
            assert rows.masked.all() and open_store(out).exists(rows.output_key.iloc[0]), key
        else:
            message = rows.message.iloc[0]
            assert WORDS[status] in message and "Traceback" not in message, (key, message)
    crowd = manifest[manifest.source_key == "scenes/twenty-faces.jpg"]
    assert crowd.masked.sum() >= 18, f"{crowd.masked.sum()} of 20 faces masked"
    assert (out / "images" / "people" / "白敬亭" / "照片.jpg").is_file()
    assert (out / "images" / "people" / "odd" / "a;b $(echo x) & 'q' \"r\".jpg").is_file()
    printed = capsys.readouterr().out
    assert "too_large" in printed and "unsupported" in printed  # the summary table names every status

    assert main(["embed", str(root), str(emb), "--quiet"]) == 0
    shards = [t.to_pandas() for t in _tables(emb)]
    rows = __import__("pandas").concat(shards)
    for key, status in expected.items():
        assert set(rows[rows.key == key].status) == {status}, key
    assert rows[rows.status == "ok"].embedding.notna().all() and rows[rows.status != "ok"].embedding.isna().all()

    new = files_under(tmp_path) - before
    assert all(out in p.parents or emb in p.parents for p in new), sorted(map(str, new))[:5]


def _tables(uri):
    from jobs.augment import read_parquet_dir

    return read_parquet_dir(open_store(uri), SHARD_DIR)


def test_gbk_manifest_with_bad_rows_to_s3_is_strict(ray_runtime, corpus, bucket, tmp_path, capsys):
    root, expected = corpus
    # a folder's files named as no image are not read; a manifest's rows are read whatever their names
    usable = [k for k in sorted(expected) if _gbk(k) and expected[k] != "not_an_image"]
    paths = usable + ["people/nobody/missing.jpg", usable[0], "../../escape.jpg", "/etc/passwd",
                      "people/../../../escape.jpg", "s3://other-bucket/x.jpg", "bad/document.pdf"]
    text = io.StringIO()
    csv.writer(text).writerows([("path", "identity")] + [(p, "") for p in paths])
    manifest_csv = tmp_path / "list.csv"
    manifest_csv.write_bytes(text.getvalue().encode("gbk"))
    out = f"s3://{bucket}/out"

    assert main(["mask", str(manifest_csv), out, "--images", str(root), "--quiet", "--strict"]) == 1
    manifest = read_manifest(out)
    statuses = manifest.groupby("source_key")["status"].apply(set).to_dict()
    assert statuses["people/nobody/missing.jpg"] == {"missing"}
    assert statuses[usable[0]] == {expected[usable[0]], "duplicate"}
    for bad in ("../../escape.jpg", "/etc/passwd", "people/../../../escape.jpg"):
        assert statuses[bad] == {"unsafe_path"}, bad
    assert statuses["s3://other-bucket/x.jpg"] == {"unsafe_path"}
    assert statuses["people/白敬亭/照片.jpg"] == {"ok"}
    assert statuses["bad/document.pdf"] == {"unsupported"}
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys and all(k.startswith("out/") for k in keys) and not any("escape" in k for k in keys)
    assert "unsafe_path" in capsys.readouterr().out


def _gbk(text: str) -> bool:
    try:
        text.encode("gbk")
        return True
    except UnicodeEncodeError:
        return False
