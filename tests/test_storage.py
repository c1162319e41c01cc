"""Local folders and a real S3 endpoint (moto_server over HTTP on 127.0.0.1, started here)."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from jobs.storage import LocalStore, S3Store, StorageError, UnreadableObject, UnsafeKeyError, open_store, redact, safe_key


def _exercise(store):
    store.write("a/b/c.jpg", b"one")
    store.write("a/x y/é#;$.png", b"two")
    store.write("top.txt", b"three")
    assert store.list() == sorted(["a/b/c.jpg", "a/x y/é#;$.png", "top.txt"])
    assert store.list("a") == ["a/b/c.jpg", "a/x y/é#;$.png"]
    assert store.list("a/b/c.jpg") == [] and store.list("a/b/c") == []  # folders, as on S3 (local gave the file)
    assert store.read("a/x y/é#;$.png") == b"two"
    assert store.exists("top.txt") and not store.exists("nope.txt")
    assert store.any_under("a") and store.any_under("a/x y") and not store.any_under("nope")
    assert not store.any_under("a/b/c.jpg") and not store.any_under("a/b/c")  # folders, not name prefixes
    assert store.any_under("")
    versions = dict(store.list_versions())
    assert sorted(versions) == store.list() and list(dict(store.list_versions("a"))) == store.list("a")
    store.write("a/b/c.jpg", b"uno")  # the same size: a report's fingerprint must still see the change
    assert dict(store.list_versions())["a/b/c.jpg"] != versions["a/b/c.jpg"]
    store.write("top.txt", b"replaced")
    assert store.read("top.txt") == b"replaced"
    for data in ("text", None):  # bytes only, alike on both (a local str was memoryview's TypeError)
        with pytest.raises(ValueError, match="an object's data is bytes, got "):
            store.write("top.txt", data)
    assert store.read("top.txt") == b"replaced"
    # a look at the start of a large object (a manifest's encoding): a ranged GET on S3
    assert store.read_head("top.txt", 3) == b"rep" and store.read_head("top.txt", 100) == b"replaced"
    with pytest.raises(FileNotFoundError):
        store.read_head("missing.csv", 10)
    store.write("empty.csv", b"")  # S3 answers a ranged GET of an empty object with InvalidRange
    assert store.read_head("empty.csv", 1 << 20) == b""
    store.delete("empty.csv")
    store.delete("top.txt")
    assert not store.exists("top.txt")
    with pytest.raises(FileNotFoundError):
        store.read("missing.jpg")
    # the lease's compare-and-swap: written only over what was read, or only where there is nothing
    assert store.write_if("l/lease.json", b"one", None) and not store.write_if("l/lease.json", b"two", None)
    data, tag = store.read_tagged("l/lease.json")
    assert data == b"one" and store.write_if("l/lease.json", b"two", tag)
    assert not store.write_if("l/lease.json", b"three", tag) and store.read("l/lease.json") == b"two"
    store.delete("l/lease.json")
    for bad in ("../escape.jpg", "a/../../escape.jpg", "/etc/passwd", "", "C:\\x.jpg"):
        with pytest.raises(UnsafeKeyError):
            store.write(bad, b"x")


def test_local_store(tmp_path):
    store = open_store(tmp_path / "out")
    assert isinstance(store, LocalStore)
    _exercise(store)
    with pytest.raises(StorageError, match="cannot delete .*/out/a: it is a folder"):  # (a bare IsADirectoryError)
        store.delete("a")
    assert not (tmp_path / "escape.jpg").exists()
    assert not any(p.name.startswith(".mfr-tmp-") for p in (tmp_path / "out").rglob("*"))
    assert open_store(f"file://{tmp_path}/out").list("a") == store.list("a")
    (tmp_path / "empty").mkdir()
    assert not open_store(tmp_path / "empty").any_under("")


def test_s3_store_on_a_real_endpoint(bucket):
    store = open_store(f"s3://{bucket}/runs/one")
    assert isinstance(store, S3Store) and store.uri == f"s3://{bucket}/runs/one"
    _exercise(store)
    other = open_store(f"s3://{bucket}/runs/two")
    assert other.list() == [] and not other.any_under("")  # prefixes are kept apart
    assert open_store(f"s3://{bucket}").any_under("")  # the bucket itself
    assert store.uri_of("a/b/c.jpg") == f"s3://{bucket}/runs/one/a/b/c.jpg"


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_boolean_columns_values_are_read_from_the_parquet_footer_alone(where, bucket, tmp_path, monkeypatch):
    """`mfr score` titles a report by what its shard folders hold (every shard's `masked` column):
    read from each file's footer statistics with one ranged read of its end, not the whole shard.
    A footer larger than the first read, a file without statistics, all-null values, and a file
    that is not Parquet."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.storage import MissingColumns, boolean_values

    store = open_store(tmp_path / "s" if where == "local" else f"s3://{bucket}/footer")

    def put(key, table, **options):
        sink = io.BytesIO()
        pq.write_table(table, sink, **options)
        store.write(key, sink.getvalue())

    embedding = pa.array([[0.5] * 4096] * 40, pa.list_(pa.float32()))  # 640 KiB of data before the footer
    put("mixed.parquet", pa.table({"masked": [True, False] * 20, "embedding": embedding}), row_group_size=10)
    put("masked.parquet", pa.table({"masked": [True] * 40, "embedding": embedding}))
    put("none.parquet", pa.table({"masked": pa.array([None] * 3, pa.bool_())}))
    put("bare.parquet", pa.table({"masked": [False, False]}), write_statistics=False)
    put("wide.parquet", pa.table({f"column {i:04d} " + "x" * 40: [True] for i in range(1500)} | {"masked": [False]}))
    store.write("text.parquet", b"not a parquet file at all")
    reads = []
    monkeypatch.setattr(type(store), "read", lambda self, key: reads.append(key) or open_store(self.uri).read_tail(
        key, 1 << 30))
    assert boolean_values(store, "mixed.parquet", "masked") == {True, False}
    assert boolean_values(store, "masked.parquet", "masked") == {True}
    assert boolean_values(store, "none.parquet", "masked") == set()
    assert reads == []  # footers only
    assert boolean_values(store, "bare.parquet", "masked") == {False} and reads == ["bare.parquet"]
    assert boolean_values(store, "wide.parquet", "masked", tail=4096) == {False}  # the footer read again, whole
    with pytest.raises(ValueError, match="is not a Parquet file"):
        boolean_values(store, "text.parquet", "masked")
    with pytest.raises(MissingColumns, match="no column"):
        boolean_values(store, "masked.parquet", "identity")


def test_s3_listing_pages_through_more_than_1000_keys(bucket):
    from concurrent.futures import ThreadPoolExecutor

    store = open_store(f"s3://{bucket}/many")
    store.client  # made once, before the threads share it (boto3 clients are thread-safe, their creation is not)
    with ThreadPoolExecutor(8) as pool:  # 1,005 PUTs one after another took 8 s
        list(pool.map(lambda i: store.write(f"k/{i:05d}.bin", b""), range(1005)))
    keys = store.list()
    assert len(keys) == 1005 and keys[0] == "k/00000.bin" and keys[-1] == "k/01004.bin"


def test_a_bucket_that_does_not_exist_is_named(s3_endpoint, bucket):
    """"S3 said NoSuchBucket" named no bucket (a typo, or a name S3 does not allow: capitals, '_')."""
    for uri in ("s3://no-such-bucket-here/faces", "s3://Bucket_With_Caps/x"):
        name = uri.split("/")[2]
        store = open_store(uri)
        for call in (store.list, lambda: store.read("a.jpg"), lambda: store.write("a.jpg", b"x")):
            with pytest.raises(StorageError, match=re.escape(f": the bucket '{name}' does not exist at {s3_endpoint} "
                                                             "(S3 said NoSuchBucket)")):
                call()
    assert open_store(f"s3://{bucket}/x").list() == []  # (one that exists lists)


def test_credentials_in_uris_are_refused_without_repeating_them():
    with pytest.raises(StorageError) as info:
        open_store("s3://AKIAEXAMPLE:VERYSECRETVALUE@bucket/prefix")
    assert "VERYSECRETVALUE" not in str(info.value) and "AKIAEXAMPLE" not in str(info.value)
    assert redact("http://user:pw@host:9000/x") == "http://***@host:9000/x"
    with pytest.raises(StorageError, match="unsupported scheme"):
        open_store("ftp://host/x")


def test_an_s3_prefix_with_an_empty_segment_is_refused_not_folded():
    """S3 keys are literal: `runs//1` was written as `runs/1`, beside what the user named."""
    for uri in ("s3://b/runs//1", "s3://b/runs/./1", "s3://b//runs/1", "s3://b/runs/1//"):  # b//runs wrote runs/
        with pytest.raises(StorageError, match=r"names another prefix on S3 than s3://b/runs/1"):
            open_store(uri)
    assert open_store("s3://b/runs/1/").uri == "s3://b/runs/1" and open_store("s3://b/").uri == "s3://b"
    with pytest.raises(StorageError, match="names another prefix on S3 than s3://b/;"):  # it was the bucket's root
        open_store("s3://b//")


def test_an_s3_key_with_a_backslash_is_refused_for_its_backslash(bucket):
    """On S3 a backslash is a key's own character: the row said "empty or '.' segments", which it has not."""
    from jobs.inputs import BACKSLASH_NAME, not_read

    store = open_store(f"s3://{bucket}/bs")
    store.client.put_object(Bucket=bucket, Key="bs/p1/back\\slash.jpg", Body=b"x")
    store.client.put_object(Bucket=bucket, Key="bs/p1//two.jpg", Body=b"x")
    kinds = dict(store.entries("p1"))
    assert kinds == {"p1/back\\slash.jpg": "file", "p1//two.jpg": "unsafe_key"}
    assert not_read("p1/back\\slash.jpg", kinds["p1/back\\slash.jpg"]) == ("unsafe_path", BACKSLASH_NAME)


def test_an_s3_key_with_an_empty_segment_after_the_prefix_gets_its_row(bucket, face_photos, tmp_path):
    """`in//lead.jpg` sat under the common prefix `in//`, taken for the top-level files' group and listed
    with a delimiter: the image had no row and no count. It is refused as unsafe, with a row."""
    from jobs.augment import read_manifest, run_augment

    long = "p1/" + "x" * 300 + ".jpg"  # a name S3 holds and a local folder cannot: it stopped the job, and reruns
    deep = "p1/" + "d" * 300 + "/b.jpg"  # a folder's name too
    store = open_store(f"s3://{bucket}/in")
    for key in ("in/p1/a.jpg", "in//lead.jpg", "in//x/y.jpg", f"in/{long}", f"in/{deep}"):
        store.client.put_object(Bucket=bucket, Key=key, Body=face_photos[0].read_bytes())
    assert store.top_level() == ["p1", ""]
    assert dict(store.entries("")) == {"/lead.jpg": "unsafe_key", "/x/y.jpg": "unsafe_key"}
    run_augment(f"s3://{bucket}/in", str(tmp_path / "out"), executor="local")
    rows = read_manifest(str(tmp_path / "out"))
    assert sorted(zip(rows.source_key, rows.status)) == [("/lead.jpg", "unsafe_path"), ("/x/y.jpg", "unsafe_path"),
                                                         ("p1/a.jpg", "ok"), (deep, "ok"), (long, "ok")]
    written = [p.name for p in (tmp_path / "out" / "images" / "p1").iterdir()]
    assert "a.jpg" in written and any(n.startswith("x" * 120 + "~") and n.endswith(".jpg") for n in written)
    assert any(n.startswith("d" * 120 + "~") and (tmp_path / "out" / "images" / "p1" / n / "b.jpg").is_file()
               for n in written)


def test_an_s3_object_named_as_the_output_prefix_is_still_input(bucket, face_photos):
    """S3 holds an object `in/p1/a.jpg` beside a prefix `in/p1/a.jpg/`: with the output there, the
    object was left out as if it were the output (no row of any status, exit 0); only the keys under
    the prefix are the output's."""
    from jobs.augment import read_manifest, run_augment

    store = open_store(f"s3://{bucket}/in")
    for key in ("in/p1/a.jpg", "in/p1/b.jpg"):
        store.client.put_object(Bucket=bucket, Key=key, Body=face_photos[0].read_bytes())
    out = f"s3://{bucket}/in/p1/a.jpg"
    summary = run_augment(f"s3://{bucket}/in", out, executor="local")
    rows = read_manifest(out)
    assert sorted(zip(rows.source_key, rows.status)) == [("p1/a.jpg", "ok"), ("p1/b.jpg", "ok")]
    assert summary.inputs == 2
    run_augment(f"s3://{bucket}/in", out, executor="local")  # the rerun reads none of its own outputs
    assert len(read_manifest(out)) == 2


def test_the_lease_is_written_plainly_where_conditional_writes_are_unknown(bucket):
    """A botocore before 1.35 (boto3>=1.28 is allowed) refuses If-None-Match/If-Match as unknown
    parameters, and an S3-compatible store may answer NotImplemented: every S3 job stopped taking its
    lease. Such a store gets the lease written plainly, and read back as before."""
    from botocore.exceptions import ClientError, ParamValidationError

    from jobs.lease import LEASE_KEY, Lease

    for refusal in (ParamValidationError(report='Unknown parameter in input: "IfNoneMatch"'),
                    ClientError({"Error": {"Code": "NotImplemented"}}, "PutObject")):
        store = open_store(f"s3://{bucket}/out")
        put = store.client.put_object

        def put_without_conditions(**kwargs):
            if "IfMatch" in kwargs or "IfNoneMatch" in kwargs:
                raise refusal
            return put(**kwargs)

        store.client.put_object = put_without_conditions
        try:
            lease = Lease(store, "mfr mask").acquire()
            assert store.exists(LEASE_KEY)
            lease.release()
            assert not store.exists(LEASE_KEY)
        finally:
            del store.client.put_object  # the client's own method again (clients may be shared)


def test_credentials_in_a_uri_are_never_repeated_even_with_a_slash_in_the_secret(monkeypatch):
    """AWS secrets hold '/': urlsplit ended the netloc there, and the key and secret were printed as a
    bucket name ("Invalid bucket name"), in an endpoint URL as botocore's "not a valid URI"."""
    from jobs.storage import _scrub

    leaked = "s3://AKIAPLANTED:SECRET/Plant+Key@outb/run3"
    with pytest.raises(StorageError, match=r"^s3://\*\*\*@outb/run3: credentials in the URI are refused"):
        open_store(leaked)
    assert redact(leaked) == "s3://***@outb/run3" and redact("s3://b/a@b.jpg") == "s3://b/a@b.jpg"
    assert open_store("s3://b/a@b.jpg").prefix == "a@b.jpg"  # an '@' in a key is no credential
    assert "SECRET" not in _scrub("Custom endpoint `http://AKIAPLANTED:SECRET/Plant+Key@127.0.0.1:9000` was not valid")
    # an '@' in a key is no credential (it was refused); a URL without user-info is left as it is
    assert open_store("s3://b/shots/10:00@home").prefix == "shots/10:00@home"
    assert _scrub('"http://localhost:9000/b/me.jpg"') == '"http://localhost:9000/b/me.jpg"'
    # a secret that starts with digits (read as a port) or holds an '@' is hidden whole
    for secret in ("1234/wJalrXUtnFEMI", "pa/ss@word"):
        with pytest.raises(StorageError, match=r"^s3://\*\*\*@b/x: credentials") as info:
            open_store(f"s3://KEY:{secret}@b/x")
        assert secret not in str(info.value) and "word" not in str(info.value)
        assert secret not in _scrub(f'Could not connect to "http://KEY:{secret}@127.0.0.1:9000/b"')
    # a file:// host, one slash or three after s3:, an endpoint without a scheme, a user name holding '@'
    for uri in ("file://backup:wJalr/XUtnS3cretPw@nas/share", "file://backup:pw#S3cretPw@nas/share",
                "s3:/KEY:S3cretPw@bucket/x", "s3:///KEY:S3cretPw@bucket/x"):
        with pytest.raises(StorageError) as info:
            open_store(uri)
        assert "S3cretPw" not in str(info.value) and "***@" in str(info.value), uri
    assert redact("KEY:S3cretPw@minio:9000") == "***@minio:9000" and redact("run@2024/x") == "run@2024/x"
    assert _scrub('"http://me@corp.com:S3cretPw@127.0.0.1:9/b?x=1"') == '"http://***@127.0.0.1:9/b?x=1"'
    monkeypatch.setenv("AWS_ENDPOINT_URL", "KEY:S3cretPw@minio:9000")
    with pytest.raises(StorageError, match="carries credentials") as info:
        open_store("s3://b/x").client
    assert "S3cretPw" not in str(info.value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://AKIAPLANTED:SECRET/Plant+Key@127.0.0.1:9000")
    with pytest.raises(StorageError, match="carries credentials") as info:
        open_store("s3://b/x").client
    assert "SECRET" not in str(info.value)


def test_a_file_uri_is_an_absolute_path():
    """`file://out` took `out` for a host and wrote into the working folder; `%20` stayed in the name."""
    assert open_store("file:///tmp/my%20photos").root == Path("/tmp/my photos")
    assert open_store("file://localhost/tmp/x").root == Path("/tmp/x")
    from jobs.storage import local_path

    assert local_path("FILE:///tmp/my%20photos") == local_path("file:/tmp/my%20photos") == Path("/tmp/my photos")
    assert local_path("rel/x") == Path("rel/x")
    with pytest.raises(StorageError, match="names an absolute path"):
        open_store("file://out")


def test_an_endpoint_that_is_not_s3_is_named(monkeypatch):
    """A web server on a mistyped port answers 404 pages: a listing read "no such object"."""
    def web_page(request):  # a web page's 404, no S3 XML
        request.send_response(404)
        request.send_header("Content-Type", "text/html")
        request.end_headers()
        request.wfile.write(b"<html>Not Found</html>")

    server = _endpoint(monkeypatch, web_page, MFR_S3_ATTEMPTS="1")
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        store = open_store("s3://b/p")
        said = f"the endpoint {url} answered HTTP 404 without an S3 error: is it an S3 endpoint"
        for call in (store.list, lambda: store.read("x.jpg"), lambda: store.write("x.jpg", b"x")):
            with pytest.raises(StorageError, match=re.escape(said)):
                call()
        assert not store.exists("x.jpg")  # a HEAD has no body on S3 either: a missing object
    finally:
        server.shutdown()


def test_unreachable_endpoint_is_a_clear_error(monkeypatch, refused_port, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{refused_port}")
    monkeypatch.setenv("MFR_S3_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    started = time.time()
    said = (f"reading s3://b/p/x.jpg: could not connect to the S3 endpoint http://127.0.0.1:{refused_port} "
            "(AWS_ENDPOINT_URL) in 1 attempt(s): is it running, and is the URL right?")
    with pytest.raises(StorageError, match=re.escape(said)):
        open_store("s3://b/p").read("x.jpg")
    assert time.time() - started < 30
    # the same endpoint from the AWS config file, which botocore reads too: not called AWS's own
    config = tmp_path / "config"
    config.write_text(f"[default]\nendpoint_url = http://127.0.0.1:{refused_port}\n")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # (a session reads the config file once, when made)
    from_config = said.replace("AWS_ENDPOINT_URL", "the AWS config's endpoint_url")
    with pytest.raises(StorageError, match=re.escape(from_config)):
        open_store("s3://b/p").read("x.jpg")


def test_safe_key_normalises():
    assert safe_key("a//b/./c.jpg") == "a/b/c.jpg"
    assert safe_key("a\\b.jpg") == "a/b.jpg"
    with pytest.raises(UnsafeKeyError):
        safe_key("a/\x00b")


def test_no_credentials_says_which_environment_they_are_read_from(monkeypatch, tmp_path, refused_port):
    """A job on a Ray cluster reads AWS settings from the environment its nodes' `ray start` ran with:
    "NoCredentialsError: Unable to locate credentials" alone sent users to their own shell, which had them."""
    import os

    import boto3

    for name in [n for n in list(os.environ) if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # (it keeps credentials an earlier test's client found)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no look for an instance role off this machine
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{refused_port}")
    with pytest.raises(StorageError, match=r"NoCredentialsError: Unable to locate credentials; set AWS_ACCESS_KEY_ID "
                                           r"and AWS_SECRET_ACCESS_KEY \(a job on a Ray cluster has the environment"):
        open_store("s3://bucket/prefix").list()


def test_a_hash_or_question_mark_in_an_s3_prefix_is_part_of_the_key(bucket):
    """S3 keys are literal: `s3://b/set#1` was cut to the prefix `set` (urlsplit's fragment), so the
    job read another dataset and wrote to another output, and said nothing."""
    import boto3

    client = boto3.client("s3")
    for key in ("set#1/p/a.jpg", "set?v=2/p/b.jpg", "set/p/other.jpg"):
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert open_store(f"s3://{bucket}/set#1").list() == ["p/a.jpg"]
    assert open_store(f"s3://{bucket}/set?v=2/").list() == ["p/b.jpg"]
    out = open_store(f"s3://{bucket}/masked#v2")
    out.write("m.txt", b"y")
    assert client.get_object(Bucket=bucket, Key="masked#v2/m.txt")["Body"].read() == b"y"
    assert open_store(out.uri_of("m.txt").rpartition("/")[0]).uri == out.uri  # a key's URI names it again
    for uri, words in (("s3://b#x/p", "no bucket name holds"), ("file:///data/set#1", "write them %23")):
        with pytest.raises(StorageError, match=words):
            open_store(uri)


def _endpoint(monkeypatch, handler, **env):
    """A local HTTP endpoint answering every request with `handler(request)`, as the S3 endpoint."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self):
            handler(self)

        do_PUT = do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_address[1]}",
                        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", **env}.items():
        monkeypatch.setenv(name, value)
    return server


def test_s3_attempts_count_every_request_and_a_silent_endpoint_fails_in_seconds(monkeypatch):
    """MFR_S3_ATTEMPTS=N sent N+1 requests (botocore's max_attempts counts retries); an endpoint that
    took the connection and never answered kept a job silent for 11 minutes (60 s a request, 11 of
    them); a HEAD's 403 said only "S3 said 403"."""
    requests = []

    def failing(request):
        requests.append(request.command)
        request.send_response(500)
        request.send_header("Content-Length", "0")
        request.end_headers()

    server = _endpoint(monkeypatch, failing, MFR_S3_ATTEMPTS="2")
    try:
        with pytest.raises(StorageError):
            open_store("s3://b/p").read("x.jpg")
        assert requests == ["GET", "GET"]
    finally:
        server.shutdown()

    def silent(request):
        time.sleep(5)

    server = _endpoint(monkeypatch, silent, MFR_S3_ATTEMPTS="1", MFR_S3_READ_TIMEOUT="0.5")
    try:
        started = time.time()
        with pytest.raises(StorageError, match=r"did not answer within 0.5 s, 1 time\(s\) \(MFR_S3_READ_TIMEOUT"):
            open_store("s3://b/p").read("x.jpg")
        assert time.time() - started < 4
    finally:
        server.shutdown()

    def forbidden(request):
        request.send_response(403)
        request.send_header("Content-Length", "0")
        request.end_headers()

    server = _endpoint(monkeypatch, forbidden, MFR_S3_ATTEMPTS="1")
    try:
        with pytest.raises(StorageError, match="S3 said 403: access denied; check the credentials"):
            open_store("s3://b/p").exists("_mfr_settings.json")
        # an input looked for in place of a read (a manifest's masked row): its access denied is that
        # row's (unreadable), as a read's is, not the job's
        with pytest.raises(UnreadableObject, match=r"reading s3://b/p/x\.jpg: access denied"):
            open_store("s3://b/p").exists("x.jpg", reading=True)
    finally:
        server.shutdown()
    for value in ("0", "-1", "abc", "inf"):
        monkeypatch.setenv("MFR_S3_READ_TIMEOUT", value)
        with pytest.raises(StorageError, match="MFR_S3_READ_TIMEOUT=.*a number above 0"):
            open_store("s3://b/p").exists("x")


def test_a_write_removes_what_a_killed_writer_on_this_machine_left_in_its_folder(tmp_path):
    """A Ray worker killed mid-write (its job stopped with Ctrl-C) leaves its `.mfr-tmp-` file beside
    the image it wrote; the rerun writes that image again and left the file there. The first write
    into a folder now removes this machine's temporaries whose writer is gone, and no other's: a live
    writer's (it may still rename it), another machine's on a shared file system (a machine is its boot
    and PID namespace: containers sharing a host name have PIDs of their own), or an older name."""
    import subprocess
    import sys

    from maskgen.runtime import _own_prefix

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid no process holds (until the system hands it out again)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    folder = tmp_path / "out" / "images" / "p1"
    folder.mkdir(parents=True)
    names = {"dead": f"{_own_prefix()}{gone.pid}-0a1b2c3d4e5f", "live": f"{_own_prefix()}{live.pid}-0a1b2c3d4e5f",
             "elsewhere": f".mfr-tmp-ffffffff-{gone.pid}-0a1b2c3d4e5f", "older": f".mfr-tmp-{gone.pid}-0a1b2c3d4e5f",
             # names no writer of ours makes: left, and the write still succeeds (they raised past it)
             "odd": f"{_own_prefix()}\u00b2-0a1b2c3d4e5f", "huge": f"{_own_prefix()}{10 ** 20}-0a1b2c3d4e5f"}
    for name in names.values():
        (folder / name).write_bytes(b"half an image")
    try:
        store = LocalStore(str(tmp_path / "out"))
        store.write("images/p1/a.jpg", b"an image")
        left = {p.name for p in folder.iterdir()}
        assert left == {"a.jpg", *(names[k] for k in ("live", "elsewhere", "older", "odd", "huge"))}
        assert store.list("images") == ["images/p1/a.jpg"]  # temporaries are never listed
    finally:
        live.kill()
        live.wait()
