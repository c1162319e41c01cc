"""Object storage for the jobs: a local folder or an S3 prefix, behind one small interface.

    store = open_store("s3://bucket/datasets/lfw")     # or "/data/lfw", "file:///data/lfw", "./out"
    for key in store.list():                            # keys relative to the prefix, "/"-separated, sorted
        data = store.read(key)
    store.write("masked/a/b.jpg", jpeg_bytes)           # atomic: readers never see half a file

S3 goes through boto3 and the standard AWS settings: the credentials chain (environment, profile,
instance role) and `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`) for any S3-compatible endpoint
such as MinIO or Ceph. Requests retry with backoff (botocore's standard mode, `MFR_S3_ATTEMPTS`
requests in all, default 12), each waiting at most `MFR_S3_READ_TIMEOUT` seconds (default 20) for an
answer. An `s3://` URI's key part is literal: `#` and `?` belong to it.

Keys are checked before anything is read or written: a key that is absolute or climbs out of the
prefix (`..`) is refused, so no output is ever written outside the output prefix. URIs that embed
credentials (`s3://KEY:SECRET@bucket`) are refused without repeating them.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

from maskgen.runtime import TMP_PREFIX, remove_dead_temporaries, sha256_bytes, write_atomic

# the folders this process has written to, each tidied of the temporaries a killed writer left there
# (a Ray worker stopped mid-write by Ctrl-C): the rerun that writes that image again removes its leftover
_TIDIED: set = set()
TIDIED_MAX = 10_000


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI but never a credential."""


class EndpointUnreachable(StorageError):
    """Nothing answers at the S3 endpoint (refused, timed out connecting): the job's end, said once. A
    check that lets other storage errors pass (a parent prefix it may not read) re-raises this one: it
    spent a second round of retries (about 30 s) before the job's own request said the same. `reason`:
    the message without the request, for a caller that names what it was doing."""

    def __init__(self, what: str, reason: str):
        super().__init__(f"{what}: {reason}")
        self.reason = reason


class UnreadableObject(StorageError):
    """One object cannot be read (permissions): that input's problem, not the store's."""

    status = "unreadable"


class MissingColumns(ValueError):
    """A Parquet file lacks columns its reader needs (not a file of the kind expected)."""


class UnsafeKeyError(ValueError):
    """A key that would leave the store's prefix, or is otherwise not a plain relative path."""


_DRIVE = re.compile(r"[A-Za-z]:")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def safe_key(key: str) -> str:
    """Normalise a relative key ("a/b.jpg"); refuse absolute keys, `..`, NUL and empty keys."""
    if not isinstance(key, str) or not key or "\x00" in key:
        raise UnsafeKeyError(f"not a usable key: {key!r}")
    text = key.replace("\\", "/")
    if text.startswith("/") or (text[1:2] == ":" and _DRIVE.match(text)):
        raise UnsafeKeyError(f"absolute key refused: {key!r}")
    if "://" in text and _SCHEME.match(text):
        raise UnsafeKeyError(f"a URI where a relative key belongs is refused: {redact(key)!r}")
    parts = text.split("/")
    if "" in parts or "." in parts or ".." in parts:  # the common plain key skips this (manifests of 10^7 rows)
        parts = [p for p in parts if p not in ("", ".")]
        if not parts:
            raise UnsafeKeyError(f"an empty key: {key!r}")
        if ".." in parts:  # refused wherever it stands: `a/../a/x.jpg` stays inside, `../x.jpg` does not
            raise UnsafeKeyError(f"a '..' segment is refused (a key must not climb out of its folder): {key!r}")
    return "/".join(parts)


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/*")


def _user_info_split(uri: str) -> tuple[str, str | None, str]:
    """(what comes before the user-info, the user-info or None, the rest after its '@')."""
    text = str(uri)
    scheme = _SCHEME.match(text)
    head = scheme.group(0) if scheme and "/" in scheme.group(0) else ""  # s3://, s3:/, s3:///, http://
    rest = text[len(head):]
    authority = rest.split("/", 1)[0]
    # with a scheme, an '@' or ':' in the authority (user:secret@host, a secret holding '/' or '@' or
    # starting with digits); without one (an endpoint `key:secret@host:9000`), a ':' before an '@'
    found = "@" in rest and ("@" in authority or ":" in authority) if head else \
        ":" in authority.partition("@")[0] and "@" in authority
    if not found:
        return text, None, ""
    info, _, after = rest.rpartition("@")
    return head, info, after


def user_info(uri: str) -> str | None:
    """The user-info part of a URI (`user:secret@`), or None: up to the last '@' where the authority (up
    to the first '/') holds an '@' or a ':'. A secret may hold '/' (AWS secrets do: it ended urlsplit's
    netloc early, and the credentials were printed as a bucket name), digits after the ':' (read as a
    port) and '@'; so a URL with a port and an '@' in its path is taken for one too, which hides a little
    too much rather than a secret. An '@' in a key (`s3://b/10:00@home.jpg`) is none; `s3:/`, `s3:///`
    and an endpoint without a scheme (`key:secret@host:9000`) are read alike."""
    return _user_info_split(uri)[1]


def redact(uri: str | Path) -> str:
    """The URI without any user-info part (credentials); a Path as its text (it failed the report's
    writing, after all the scoring)."""
    head, info, after = _user_info_split(str(uri))
    return str(uri) if info is None else f"{head}***@{after}"


def local_path(location: str | Path) -> Path:
    """The path a local location names: a plain path as given, a `file://` URI as `file_uri_path` reads it."""
    text = str(location)
    return file_uri_path(text) if urlsplit(text).scheme.lower() == "file" else Path(text)


def file_uri_path(text: str) -> Path:
    """The local path a `file://` URI names: an absolute path (or on `localhost`), `%20` a space
    (`file://out` took `out` for a host and wrote into the working folder)."""
    parts = urlsplit(text)
    if "#" in text or "?" in text:  # a URI's '#' and '?' end its path: the job went to another folder
        raise StorageError(f"{redact(text)}: a file:// URI ends its path at '#' or '?'; write them %23 and %3F, or "
                           "give the folder as a plain path")
    if parts.netloc not in ("", "localhost"):
        raise StorageError(f"{redact(text)}: a file:// URI names an absolute path (file:///abs/path), not a "
                           "host; give a relative folder as a plain path")
    return Path(unquote(parts.path))


def endpoint_setting() -> tuple[str, str] | None:
    """(variable, URL) of the S3 endpoint the environment names, `AWS_ENDPOINT_URL_S3` before
    `AWS_ENDPOINT_URL`; None where neither is set (AWS's own, or the AWS config file's)."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return name, os.environ[name]
    return None


def s3_read_timeout() -> float:
    """`MFR_S3_READ_TIMEOUT` (default 20): seconds an S3 request waits for the endpoint's next bytes.
    botocore's 60 s, times 10 attempts, kept a job silent for 11 minutes before it said that an
    endpoint that took the connection never answered."""
    text = os.environ.get("MFR_S3_READ_TIMEOUT", "20").strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise StorageError(f"MFR_S3_READ_TIMEOUT={text!r}: give the seconds an S3 request waits for an answer, a "
                           "number above 0 (default 20)")
    return seconds


def s3_attempts() -> int:
    """`MFR_S3_ATTEMPTS` (default 12): attempts per S3 request, the first included, a whole number of at
    least 1 (-2 was botocore's traceback, "abc" an int() error that did not name the variable, 0 no
    attempt at all). botocore waits 0.05 s before its first retry and doubles it (at random, 20 s at
    most): 12 attempts ride out an endpoint down for about half a minute (a restart)."""
    text = os.environ.get("MFR_S3_ATTEMPTS", "12").strip()
    if not text.isdigit() or int(text) < 1:
        raise StorageError(f"MFR_S3_ATTEMPTS={text!r}: give the attempts per S3 request as a whole number of at "
                           "least 1 (default 12)")
    return int(text)


def open_parent(uri: str | Path) -> tuple["LocalStore | S3Store", str]:
    """(the store of the folder or prefix that holds the object at `uri`, the object's name in it)."""
    parent, _, name = str(uri).rstrip("/").rpartition("/")
    return open_store(parent or "."), name


def open_store(uri: str | Path) -> "LocalStore | S3Store":
    if not isinstance(uri, (str, Path)) or not str(uri):  # str(None) would be a folder named None
        raise ValueError(f"a location is a folder path or an s3:// URI, got {uri!r}")
    text = str(uri)
    parts = urlsplit(text)
    if parts.scheme in ("s3", "s3a"):
        if ":" in parts.netloc and user_info(text) is None:  # no bucket name holds ':' (key:1234/x@b: a secret?)
            raise StorageError("an s3:// URI whose bucket part holds ':' is refused, unrepeated (credentials in the "
                               "URI are refused; use the AWS credentials chain)")
        if user_info(text) is not None:
            raise StorageError(f"{redact(text)}: credentials in the URI are refused; use the AWS credentials "
                               "chain (environment, profile or role) instead")
        if not parts.netloc:
            raise StorageError(f"{redact(text)}: no bucket")
        # an S3 key is literal: '#' and '?' are part of it (urlsplit cut `s3://b/set#1` to the prefix `set`,
        # and the job read and wrote another prefix than the one named)
        bucket_part, slash, path = text.split("://", 1)[1].partition("/")
        if "#" in bucket_part or "?" in bucket_part:
            raise StorageError(f"{redact(text)}: no bucket name holds '#' or '?'")
        parts = parts._replace(path=slash + path, query="", fragment="")
        # S3 keys are literal: `a//b` is not `a/b`, and folding it wrote beside what the user named; only
        # the slash after the bucket and one closing slash (s3://b/p/, a folder's usual spelling) are not keys
        given = parts.path.removeprefix("/")
        prefix = given.removesuffix("/")
        segments = prefix.split("/")
        if given and any(segment in ("", ".") for segment in segments):  # s3://b// too
            folded = "/".join(s for s in segments if s not in ("", "."))
            raise StorageError(f"{redact(text)}: an empty or '.' segment in the prefix names another prefix on S3 "
                               f"than s3://{parts.netloc}/{folded}; give the prefix without it")
        return S3Store(parts.netloc, prefix)
    if parts.scheme.lower() == "file":
        return LocalStore(file_uri_path(text))
    if parts.scheme and len(parts.scheme) > 1:
        raise StorageError(f"{redact(text)}: unsupported scheme {parts.scheme!r}; use a local path or s3://")
    return LocalStore(Path(text))


class LocalStore:
    def __init__(self, root: Path):
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    @property
    def uri(self) -> str:
        return str(self.root)

    def path(self, key: str) -> Path:
        return self.root.joinpath(*safe_key(key).split("/"))

    def uri_of(self, key: str) -> str:
        return str(self.path(key))

    def list(self, prefix: str = "") -> list[str]:
        base = self.path(prefix) if prefix else self.root
        if not base.is_dir():  # a prefix is a folder, as on S3: a file's own key lists nothing there either
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in filenames:
                if name.startswith(TMP_PREFIX):
                    continue
                rel = Path(dirpath, name).relative_to(self.root).as_posix()
                keys.append(rel)
        return sorted(keys)

    def list_versions(self, prefix: str = "") -> list[tuple[str, str]]:
        """`list(prefix)`'s keys, each with a tag that changes when the object is written again (its
        size, modification time and inode: `write` renames a new file over the old one, so even a
        rewrite of the same size within the clock's resolution gets another inode)."""
        versions = []
        for key in self.list(prefix):
            try:
                stat = self.path(key).stat()
            except FileNotFoundError:  # deleted since it was listed
                continue
            versions.append((key, f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"))
        return versions

    def any_under(self, prefix: str) -> bool:
        """Whether any object lies under `prefix` (a folder; "" for the store's root): found without
        listing them all."""
        for _, _, filenames in os.walk(self.path(prefix) if prefix else self.root):
            if any(not name.startswith(TMP_PREFIX) for name in filenames):
                return True
        return False

    def top_level(self) -> list[str]:
        """The groups of a job's input (jobs/source.py): every top-level folder, and "" when files sit
        at the top level. Symlinked folders count as folders."""
        if not self.root.is_dir():
            return [""] if self.root.exists() else []
        groups, files = [], False
        for entry in os.scandir(self.root):
            if entry.is_dir():  # follows symlinks
                groups.append(entry.name)
            else:
                files = True
        return sorted(groups) + ([""] if files else [])

    def entries(self, group: str, exclude: str | None = None):
        """(key, kind) for everything in one group, sorted: kind is `file`, `empty` (a file of 0 bytes,
        which no read would find a face in), `not_regular` (a FIFO, socket or device: never opened),
        `temporary` (a name of our atomic writes), `link_loop` (a symlinked folder already walked) or
        `broken_link`. Symlinked folders are followed once each;
        keys under `exclude` (a job's output inside its own input) are left out."""
        import stat

        out = []

        def visit(path: Path, rel: str, seen: frozenset):
            try:
                items = sorted(os.scandir(path), key=lambda e: e.name)
            except OSError:
                return
            for entry in items:
                key = f"{rel}/{entry.name}" if rel else entry.name
                if exclude and (key == exclude or key.startswith(exclude + "/")):
                    continue
                try:
                    st = os.stat(entry.path)
                except OSError:
                    out.append((key, "broken_link"))
                    continue
                if stat.S_ISDIR(st.st_mode):
                    real = os.path.realpath(entry.path)
                    if real in seen:
                        out.append((key, "link_loop"))
                    elif rel or group:
                        visit(Path(entry.path), key, seen | {real})
                elif not stat.S_ISREG(st.st_mode):
                    out.append((key, "not_regular"))
                elif entry.name.startswith(TMP_PREFIX):
                    out.append((key, "temporary"))
                else:
                    out.append((key, "file" if st.st_size else "empty"))

        if group:
            base = self.root / group
            if exclude == group:
                return []
            if base.is_dir():
                visit(base, group, frozenset({os.path.realpath(self.root), os.path.realpath(base)}))
            elif base.exists():
                return [(group, "file")]
        else:
            visit(self.root, "", frozenset({os.path.realpath(self.root)}))
        return out

    def read(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} does not exist") from None
        except IsADirectoryError:
            raise UnreadableObject(f"cannot read {path}: it is a folder") from None
        except OSError as exc:
            raise UnreadableObject(f"cannot read {path}: {exc.strerror or exc}") from None

    def read_head(self, key: str, size: int) -> bytes:
        """The first `size` bytes of `key` (all of it when shorter): a look at a large object."""
        return self._read_part(key, lambda file: file.read(size))

    def read_tail(self, key: str, size: int) -> bytes:
        """The last `size` bytes of `key` (all of it when shorter): a Parquet file's footer."""
        def tail(file):
            file.seek(max(0, os.fstat(file.fileno()).st_size - size))
            return file.read()

        return self._read_part(key, tail)

    def _read_part(self, key: str, take) -> bytes:
        """`take(file)` of `key`'s file opened for reading, its errors worded as `read`'s."""
        path = self.path(key)
        try:
            with open(path, "rb") as file:
                return take(file)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} does not exist") from None
        except OSError as exc:
            raise UnreadableObject(f"cannot read {path}: {exc.strerror or exc}") from None

    @contextmanager
    def local_file(self, key: str):
        """The path of `key`'s file, for readers that stream a large object (an input manifest)."""
        path = self.path(key)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        if not path.is_file():
            raise UnreadableObject(f"cannot read {path}: not a regular file")
        try:
            open(path, "rb").close()
        except OSError as exc:
            raise UnreadableObject(f"cannot read {path}: {exc.strerror or exc}") from None
        yield path

    def exists(self, key: str, reading: bool = False) -> bool:
        """Whether `key` is a file (`reading`: S3Store's, looked for as an input it would read)."""
        return self.path(key).is_file()

    def write(self, key: str, data: bytes) -> None:
        path = self.path(key)
        if not isinstance(data, (bytes, bytearray, memoryview)):  # (a str was memoryview's TypeError)
            raise ValueError(f"{self.uri_of(key)}: an object's data is bytes, got {type(data).__name__}")
        try:
            write_atomic(path, data)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None
        folder = str(path.parent)
        if folder not in _TIDIED:  # once per folder and process: one listing of it
            if len(_TIDIED) >= TIDIED_MAX:  # (a folder per identity, 10^6 identities: bounded memory)
                _TIDIED.clear()
            _TIDIED.add(folder)
            try:
                remove_dead_temporaries(path.parent)
            except Exception:  # tidying never fails a write that succeeded
                pass

    def delete(self, key: str) -> None:
        path = self.path(key)
        if path.is_dir():  # (a bare IsADirectoryError; `read` says so in words)
            raise UnreadableObject(f"cannot delete {path}: it is a folder, not an object")
        path.unlink(missing_ok=True)

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        """(`read(key)`, a tag of what it holds) for `write_if`."""
        data = self.read(key)
        return data, sha256_bytes(data)

    def write_if(self, key: str, data: bytes, tag: str | None) -> bool:
        """Write `key` only while it holds what `tag` tagged (`read_tagged`; None: only while there is
        no such file), else write nothing and answer False: a compare-and-swap, for the lease. The
        check and the write hold an exclusive lock on the file's folder (none where the file system
        has no locks: the lease then relies on reading itself back)."""
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None
        with _folder_locked(path.parent):
            try:
                now = self.read_tagged(key)[1]
            except FileNotFoundError:
                now = None
            if now != tag:
                return False
            self.write(key, data)
            return True

    def check_writable(self) -> None:
        """Fail now, naming the folder, if nothing can be written under it (not a folder, read-only, full)."""
        probe = f"{TMP_PREFIX}write-check"
        self.refuse_file_in_the_way()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot write under {self.root}: {exc.strerror or exc}") from None
        self.write(probe, b"ok")
        self.delete(probe)

    def check_could_write(self) -> None:
        """What `check_writable` would refuse, as far as it shows without writing anything (for a dry
        run): a file where the folder or a folder above it would be, or a folder that is not writable."""
        there = self.refuse_file_in_the_way()
        if not os.access(there, os.W_OK | os.X_OK):
            raise StorageError(f"cannot write under {self.root}: {there} is not writable")

    def refuse_file_in_the_way(self) -> Path:
        """The nearest of the root and the folders above it that is there, refused when it is a file."""
        try:
            there = next(p for p in (self.root, *self.root.parents) if p.exists())
        except OSError as exc:  # a folder above that may not be looked into
            raise StorageError(f"cannot write under {self.root}: {exc.strerror or exc}") from None
        if not there.is_dir():
            where = "it" if there == self.root else str(there)
            raise StorageError(f"cannot write under {self.root}: {where} is a file, not a folder")
        return there


@contextmanager
def _folder_locked(folder: Path):
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # a file system without locks
        yield
    finally:
        os.close(fd)  # and the lock with it


class S3Store:
    def __init__(self, bucket: str, prefix: str = "", client=None):
        self.bucket = bucket
        self.prefix = "/".join(safe_key(prefix).split("/")) if prefix else ""
        self._client = client

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r})"

    def __getstate__(self):  # Ray ships stores to workers: clients are made where they are used
        return {"bucket": self.bucket, "prefix": self.prefix, "_client": None}

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            attempts = s3_attempts()
            named = endpoint_setting()
            endpoint = named[1] if named else None
            if endpoint and "@" in endpoint:  # an endpoint is scheme://host:port: an '@' is user-info, unrepeated
                raise StorageError(f"the S3 endpoint URL {redact(endpoint)} carries credentials, which are refused; "
                                   "give them through the AWS credentials chain (environment, profile or role)")
            self._client = boto3.client(
                "s3", endpoint_url=endpoint,
                # total_max_attempts: the first try included (max_attempts counts retries: one more request)
                config=Config(retries={"total_max_attempts": attempts, "mode": "standard"}, connect_timeout=5,
                              read_timeout=s3_read_timeout()),
            )
        return self._client

    def _full(self, key: str) -> str:
        key = safe_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri_of(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    def _call(self, what: str, fn, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if (not code or code.isdigit()) and exc.operation_name != "HeadObject":
                # an error without S3's error code (botocore then gives none, or the HTTP status): on S3
                # only a HEAD, which has no body, answers so. A web page or proxy on a mistyped port does
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", code or "?")
                raise StorageError(f"{what}: the endpoint {_scrub(self.client.meta.endpoint_url)} answered HTTP "
                                   f"{status} without an S3 error: is it an S3 endpoint (AWS_ENDPOINT_URL)?") from None
            if code in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(f"{what}: no such object") from None
            if code in ("AccessDenied", "403") and what.startswith("reading "):
                raise UnreadableObject(f"{what}: access denied") from None
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                # a HEAD's 403 has no body: it said only "S3 said 403"
                raise StorageError(f"{what}: S3 said {code}: access denied; check the credentials (the AWS "
                                   "credentials chain) and the bucket's permissions") from None
            if code == "NoSuchBucket":  # (a name S3 does not allow, capitals say, is one no bucket has either)
                raise StorageError(f"{what}: the bucket {self.bucket!r} does not exist at "
                                   f"{_scrub(self.client.meta.endpoint_url)} (S3 said NoSuchBucket)") from None
            raise StorageError(f"{what}: S3 said {code or 'error'}") from None
        except BotoCoreError as exc:
            from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, NoCredentialsError, \
                ReadTimeoutError

            if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
                # (not the request's URL and query string: the endpoint, and the setting that names it)
                url, named = self.client.meta.endpoint_url, endpoint_setting()
                if named:
                    where = named[0]
                elif (urlsplit(url).hostname or "").endswith(".amazonaws.com"):
                    where = "AWS's endpoint for the region; AWS_ENDPOINT_URL names another"
                else:  # botocore reads an endpoint_url from the AWS config file too
                    where = "the AWS config's endpoint_url"
                raise EndpointUnreachable(what, f"could not connect to the S3 endpoint "
                                                f"{_scrub(url)} ({where}) in {s3_attempts()} "
                                                "attempt(s): is it running, and is the URL right?") from None

            hint = ("; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (a job on a Ray cluster has the environment "
                    "its nodes' `ray start` ran with, not the submitting shell's)"
                    if isinstance(exc, NoCredentialsError) else "")
            if isinstance(exc, ReadTimeoutError):
                hint = (f"; the endpoint took the connection but did not answer within {s3_read_timeout():g} s, "
                        f"{s3_attempts()} time(s) (MFR_S3_READ_TIMEOUT, MFR_S3_ATTEMPTS)")
            raise StorageError(f"{what}: {type(exc).__name__}: {_scrub(str(exc))}{hint}") from None

    def list(self, prefix: str = "") -> list[str]:
        return [key for key, _ in self.list_versions(prefix)]

    def list_versions(self, prefix: str = "") -> list[tuple[str, str]]:
        """`list(prefix)`'s keys, each with a tag that changes when the object is written again (its
        ETag and size, which the listing gives)."""
        base = self._full(prefix) if prefix else self.prefix
        start = f"{base}/" if base else ""
        versions = []
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call(f"listing {self.uri}", lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=start)))
        for page in pages:
            for item in page.get("Contents", []):
                rel = item["Key"][len(self.prefix) + 1:] if self.prefix else item["Key"]
                if rel and not rel.endswith("/") and not rel.rsplit("/", 1)[-1].startswith(TMP_PREFIX):
                    versions.append((rel, f"{item.get('Size')}:{item.get('ETag', '')}"))
        return sorted(versions)

    def any_under(self, prefix: str) -> bool:
        """Whether any object lies under `prefix` (a folder; "" for the store's own prefix): one
        listing call of one key."""
        base = self._full(prefix) if prefix else self.prefix
        found = self._call(f"listing {self.uri_of(prefix) if prefix else self.uri}", lambda: self.client.list_objects_v2(
            Bucket=self.bucket, Prefix=f"{base.rstrip('/')}/" if base else "", MaxKeys=1))
        return bool(found.get("KeyCount"))

    def top_level(self) -> list[str]:
        start = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call(f"listing {self.uri}",
                           lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=start, Delimiter="/")))
        groups, files = [], False
        for page in pages:
            groups += [p["Prefix"][len(start):].rstrip("/") for p in page.get("CommonPrefixes", [])]
            files = files or any(item["Key"] != start for item in page.get("Contents", []))
        # `in//lead.jpg` (the common prefix `in//`) is the top level's: `entries("")` lists it
        return sorted(g for g in groups if g) + ([""] if files or "" in groups else [])

    def entries(self, group: str, exclude: str | None = None):
        """(key, kind) for every object of one group (see LocalStore.entries); a key that is not
        a plain path (`a//b.jpg`, `a/./b.jpg`) is `unsafe_key`: reading it under its normal form
        would read another object."""
        base = f"{self.prefix}/" if self.prefix else ""
        start = base + (f"{group}/" if group else "")
        paginator = self.client.get_paginator("list_objects_v2")
        kwargs = {} if group else {"Delimiter": "/"}
        pages = self._call(f"listing s3://{self.bucket}/{start}",
                           lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=start, **kwargs)))
        if not group and any(p["Prefix"] == start + "/" for page in pages for p in page.get("CommonPrefixes", [])):
            # keys under an empty segment right after the prefix (`in//lead.jpg`): no top-level folder lists
            # them, and the delimiter hid them (no row at all); they come out `unsafe_key`, each with its row
            pages += self._call(f"listing s3://{self.bucket}/{start}/", lambda: list(
                paginator.paginate(Bucket=self.bucket, Prefix=start + "/")))
        out = []
        for page in pages:
            for item in page.get("Contents", []):
                rel = item["Key"][len(base):]
                if not rel or rel.endswith("/"):
                    continue
                # (not `rel == exclude`: an object may share its name with the output's prefix, and is input)
                if exclude and rel.startswith(exclude + "/"):
                    continue
                as_key = rel.replace("\\", "_")  # no separator on S3: jobs.inputs.not_read refuses it, saying why
                try:
                    plain = safe_key(as_key) == as_key
                except UnsafeKeyError:
                    plain = False
                name = rel.rsplit("/", 1)[-1]
                out.append((rel, "unsafe_key" if not plain else "temporary" if name.startswith(TMP_PREFIX)
                            else "file" if item.get("Size", 1) else "empty"))
        return sorted(out)

    def read(self, key: str) -> bytes:
        full = self._full(key)
        body = self._call(f"reading s3://{self.bucket}/{full}", self.client.get_object, Bucket=self.bucket, Key=full)
        return body["Body"].read()

    def read_head(self, key: str, size: int) -> bytes:
        """The first `size` bytes of `key` (all of it when shorter), by a ranged GET."""
        return self._read_range(key, f"bytes=0-{max(int(size), 1) - 1}")

    def read_tail(self, key: str, size: int) -> bytes:
        """The last `size` bytes of `key` (all of it when shorter), by a ranged GET: a Parquet file's footer."""
        return self._read_range(key, f"bytes=-{max(int(size), 1)}")

    def _read_range(self, key: str, byte_range: str) -> bytes:
        from botocore.exceptions import ClientError

        full = self._full(key)

        def get():
            try:
                return self.client.get_object(Bucket=self.bucket, Key=full, Range=byte_range)["Body"].read()
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":  # an empty object has no byte 0
                    self.client.head_object(Bucket=self.bucket, Key=full)  # (a missing one is still missing)
                    return b""
                raise

        return self._call(f"reading s3://{self.bucket}/{full}", get)

    @contextmanager
    def local_file(self, key: str):
        """A temporary local copy of `key`, for readers that stream a large object (an input
        manifest) instead of holding its bytes; removed on exit."""
        full = self._full(key)

        def fetch(path: Path) -> None:
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
            with open(path, "wb") as f:
                shutil.copyfileobj(body, f, 1 << 20)

        with tempfile.TemporaryDirectory(prefix="mfr-") as folder:
            path = Path(folder) / "object"
            self._call(f"reading s3://{self.bucket}/{full}", fetch, path=path)
            yield path

    def exists(self, key: str, reading: bool = False) -> bool:
        """Whether object `key` is there. `reading`: an input looked for in place of a read, whose access
        denied is that input's problem (UnreadableObject, as a read's: a bucket without ListBucket answers
        a HEAD of a missing key with 403), not the store's (StorageError)."""
        full = self._full(key)
        try:
            self._call(f"{'reading' if reading else 'checking'} s3://{self.bucket}/{full}", self.client.head_object,
                       Bucket=self.bucket, Key=full)
            return True
        except FileNotFoundError:
            return False

    def write(self, key: str, data: bytes) -> None:
        full = self._full(key)
        if not isinstance(data, (bytes, bytearray, memoryview)):  # as a local folder's
            raise ValueError(f"{self.uri_of(key)}: an object's data is bytes, got {type(data).__name__}")
        self._call(f"writing s3://{self.bucket}/{full}", self.client.put_object, Bucket=self.bucket, Key=full,
                   Body=data)

    def delete(self, key: str) -> None:
        full = self._full(key)
        self._call(f"deleting s3://{self.bucket}/{full}", self.client.delete_object, Bucket=self.bucket, Key=full)

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        """(`read(key)`, its ETag) for `write_if`."""
        full = self._full(key)
        body = self._call(f"reading s3://{self.bucket}/{full}", self.client.get_object, Bucket=self.bucket, Key=full)
        return body["Body"].read(), body["ETag"]

    def write_if(self, key: str, data: bytes, tag: str | None) -> bool:
        """Write `key` only while it holds what `tag` tagged (`read_tagged`'s ETag; None: only while
        there is no such object), else write nothing and answer False: S3's conditional writes
        (If-Match, If-None-Match), for the lease. An endpoint without them (NotImplemented) is written
        plainly (as is every write by a botocore older than them, which refuses their parameters):
        the lease then relies on reading itself back."""
        from botocore.exceptions import ClientError, ParamValidationError

        full = self._full(key)
        condition = {"IfNoneMatch": "*"} if tag is None else {"IfMatch": tag}

        def put():
            try:
                self.client.put_object(Bucket=self.bucket, Key=full, Body=data, **condition)
                return True
            except ParamValidationError:
                pass  # botocore before 1.35 (boto3>=1.28 is allowed) knows neither condition
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                # 409: another conditional write to the key at the same moment (AWS)
                if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                    return False
                # an S3-compatible store without them: a plain write still says what else is wrong
                if code not in ("NotImplemented", "501", "InvalidArgument", "InvalidRequest"):
                    raise
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data)
            return True

        return self._call(f"writing s3://{self.bucket}/{full}", put)

    def check_could_write(self) -> None:
        """Nothing to check without writing: a dry run's listing reads the prefix, which finds an
        unreachable endpoint, a missing bucket or bad credentials; write permission shows only on writing."""

    def check_writable(self) -> None:
        """Fail now, with the reason, if the endpoint is unreachable or the prefix cannot be written."""
        probe = f"{TMP_PREFIX}write-check"
        self.write(probe, b"ok")
        self.delete(probe)


def new_local_folder(uri) -> tuple[Path, Path] | None:
    """(path, the nearest folder above or at it that is there) of a local output that is not there yet
    or is an empty folder, before a command writes to it; None for anything else (an S3 prefix, a
    folder with something in it, a bad location), which `remove_left_empty` then leaves alone."""
    try:
        store = open_store(uri)
    except (StorageError, ValueError):
        return None
    if not isinstance(store, LocalStore):
        return None
    root = store.root
    try:
        there = store.refuse_file_in_the_way()
        if there == root:
            return (root, root) if not any(root.iterdir()) else None
    except (StorageError, OSError):  # a file in the way, a folder that may not be looked into: the command says so
        return None
    return root, there


def remove_left_empty(new: tuple[Path, Path]) -> None:
    """After a command failed, the folders it made (`new_local_folder`: the output, the folders inside
    it and those above it up to `there`) that hold nothing: a refused `mfr run` left masked/ and
    embeddings/ behind, and its corrected rerun was refused as a folder of someone else's. A folder
    holding a file (a record, an image) stays, for the rerun to finish."""
    root, there = new
    if root.is_dir():
        for folder, _, _ in os.walk(root, topdown=False):
            if Path(folder) != there:
                try:
                    Path(folder).rmdir()
                except OSError:  # not empty
                    pass
    for folder in root.parents:
        if folder == there or not folder.is_relative_to(there):
            break
        try:
            folder.rmdir()
        except OSError:
            break


@contextmanager
def tidy_when_failed(uri):
    """Around a Python call that writes the local output `uri`: the folders it made are removed again
    when it fails and leaves them empty, as `mfr` does after its commands (`remove_left_empty`)."""
    new = new_local_folder(uri)
    try:
        yield
    except BaseException:
        if new is not None:
            remove_left_empty(new)
        raise


def _scrub(text: str) -> str:
    """Drop anything that looks like user-info from an endpoint URL in a library message."""
    # each `//...` word read as `redact` reads a URI: a secret holding '/' or '@', a user name holding '@'
    return re.sub(r"//\S+", lambda m: redact("x:" + m.group(0)).removeprefix("x:"), text)


def parquet_footer(store, key: str, tail: int = 65536):
    """The metadata (schema, row groups, statistics) of the Parquet file at `key`, from its footer:
    one ranged read of the file's end whatever its size (two when the footer is larger than `tail`).
    ValueError when the file is not Parquet."""
    import struct

    import pyarrow as pa
    import pyarrow.parquet as pq

    end = store.read_tail(key, tail)
    if len(end) < 12 or end[-4:] != b"PAR1":
        raise ValueError(f"{store.uri_of(key)} is not a Parquet file")
    length = struct.unpack("<I", end[-8:-4])[0]
    if length + 8 > len(end) and len(end) == tail:  # a footer larger than the first read
        end = store.read_tail(key, length + 8)
    if length + 8 > len(end):
        raise ValueError(f"{store.uri_of(key)} is not a Parquet file (its footer is cut)")
    # the footer alone, framed as a file of no data: its offsets are never followed
    try:
        return pq.ParquetFile(pa.BufferReader(b"PAR1" + end[-length - 8:])).metadata
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{store.uri_of(key)} is not a Parquet file ({exc})") from None


def boolean_values(store, key: str, column: str, tail: int = 65536) -> set:
    """The values (True, False) a boolean column of the Parquet file at `key` holds, from its footer's
    statistics (`parquet_footer`) instead of the whole file (a shard's embeddings). A file written
    without statistics is read whole. ValueError when the file is not Parquet or has no such column."""
    metadata = parquet_footer(store, key, tail)
    names = [metadata.schema.column(i).name for i in range(metadata.num_columns)]
    if column not in names:
        raise MissingColumns(f"no column(s) {[column]}; it has {names}")
    j, values = names.index(column), set()
    for i in range(metadata.num_row_groups):
        chunk = metadata.row_group(i).column(j)
        stats = chunk.statistics
        if stats is not None and stats.has_min_max:
            values.update({bool(stats.min), bool(stats.max)})
        elif stats is None or stats.null_count != chunk.num_values:  # values without statistics: read them
            table = read_parquet_bytes(store.read(key), columns=[column])
            return {v for v in table.column(column).to_pylist() if v is not None}
    return values


def read_parquet_bytes(data: bytes, columns=None, required=()):
    """A Parquet file's bytes as a pyarrow table, read on this thread alone. pyarrow starts a thread
    pool on `pq.read_table` (its dataset layer does, even with `use_threads=False`), and a pool
    thread still running at interpreter exit can abort the process in its C++ destructor
    ("terminate called without an active exception", SIGABRT): 1 run in 12 on CI with read_table.
    `ParquetFile` over an Arrow buffer reads on the caller's thread and starts no thread at all.
    Our shards are small; one thread reads them fast enough. A column the file lacks is an error,
    as it is for read_table (ParquetFile alone would silently leave it out), and so is one of
    `required`, read or not (MissingColumns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(pa.BufferReader(data), pre_buffer=False)
    names = parquet.schema_arrow.names
    missing = [c for c in dict.fromkeys([*(columns or ()), *required]) if c not in names]
    if missing:
        raise MissingColumns(f"no column(s) {missing}; it has {names}")
    return parquet.read(columns=columns, use_threads=False)
