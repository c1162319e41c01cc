"""Faults: an unreachable or restarted S3 endpoint, an output that cannot be written, a Ctrl-C and a
rerun. Jobs run as the user runs them, `python -m jobs.cli` in a process of its own: with a Ray of its
own (`--executor ray`), or in the local process pool that small jobs without a cluster get."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import boto3
import pytest

from conftest import ROOT, photo_folder
from jobs.augment import read_manifest


@pytest.fixture
def dataset(tmp_path, face_photos):
    return photo_folder(tmp_path / "in", face_photos[:16])


def start_job(args: list[str], new_session: bool = False, **env) -> subprocess.Popen:
    # a process of its own: a RAY_ADDRESS in the developer's shell must not send it to their cluster
    environment = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
                   "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT), **env}
    # Ctrl-C must work in the job as it does in a terminal, even when the test suite itself runs as a
    # background job (whose children start with SIGINT ignored, so Python would never see it)
    return subprocess.Popen([sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=new_session,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the job ended before {what}: rc {proc.returncode}\n{err[-2000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def manifest_rows(uri: str):
    frame = read_manifest(uri)
    return sorted((r.source_key, int(r.face_index), r.status, r.mask or "",
                   () if r.landmarks68 is None else tuple(r.landmarks68)) for r in frame.itertuples())


# ---------------------------------------------------------------- S3

def test_unreachable_endpoint_at_start_is_a_clear_error(dataset, tmp_path, s3_endpoint, monkeypatch, capsys,
                                                         refused_port):
    from jobs.cli import main

    import jobs.storage

    port = refused_port
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MFR_S3_ATTEMPTS", "2")
    requests = []  # each request that spent its attempts
    call = jobs.storage.S3Store._call
    monkeypatch.setattr(jobs.storage.S3Store, "_call", lambda self, what, fn, **kw: requests.append(what) or
                        call(self, what, fn, **kw))
    for output in ("s3://bucket/out", "s3://bucket/runs/out"):  # the second has a parent prefix to look at
        requests.clear()
        assert main(["mask", str(dataset), output, "--quiet"]) == 2
        err = capsys.readouterr().err
        # said once, in words, of the output given: a first failure passed over (the parent prefix's
        # record) spent a second round of retries, and the message gave the request's URL and query string
        assert len(requests) == 1, requests
        assert err.strip() == (f"mfr mask: writing {output}: could not connect to the S3 endpoint http://127.0.0.1:"
                               f"{port} (AWS_ENDPOINT_URL) in 2 attempt(s): is it running, and is the URL right?"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing half-written anywhere


def port_outside_ephemeral_range() -> int:
    """A free port below Linux's ephemeral range (32768-60999): while the proxy is down, the job's
    reconnection attempts to a port inside that range can be given that very port as their own
    local end (a TCP self-connect), and the proxy could not come back on it."""
    import random

    for port in random.Random().sample(range(21000, 32000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port below the ephemeral range")


class Proxy:
    """A TCP proxy on a fixed port in front of the S3 endpoint, that can go away and come back: the
    endpoint restarting, as the client sees it, with the stored objects kept."""

    def __init__(self, target_port: int):
        self.port, self.target = port_outside_ephemeral_range(), target_port
        self.accepted, self.server, self.conns = 0, None, []

    def start(self):
        self.server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def stop(self):
        self.server.close()
        for conn in self.conns:
            for sock in conn:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass
        self.conns = []

    def _accept(self, server):
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            self.accepted += 1
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.close()
                except OSError:
                    pass


def test_endpoint_restarted_mid_job_loses_nothing(dataset, bucket, s3_endpoint):
    proxy = Proxy(int(s3_endpoint.rsplit(":", 1)[1]))
    proxy.start()
    s3 = boto3.client("s3")

    def shards():
        listing = s3.list_objects_v2(Bucket=bucket, Prefix="out/manifest/")
        return [o["Key"] for o in listing.get("Contents", [])]

    # one worker, one image per batch: 16 shards, so the outage surely falls inside the job
    job = start_job(["mask", str(dataset), f"s3://{bucket}/out", "--quiet", "--batch-size", "1", "--workers", "1",
                     "--rows-per-shard", "1", "--executor", "ray"],
                    AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}")
    try:
        wait_for(lambda: len(shards()) >= 1, 240, "the first manifest shard", job)
        assert job.poll() is None and len(shards()) < 16, "the job finished before the outage"
        proxy.stop()
        time.sleep(4)
        accepted_before = proxy.accepted
        proxy.start()
        out, err = job.communicate(timeout=300)
    finally:
        job.kill()
        proxy.stop()
    assert job.returncode == 0, err[-2000:]
    assert proxy.accepted > accepted_before  # the job went on talking to the endpoint after it came back
    frame = read_manifest(f"s3://{bucket}/out")
    assert frame.source_key.nunique() == 16 and set(frame.status) == {"ok"}
    assert not frame.duplicated(["source_key", "face_index"]).any()


# ---------------------------------------------------------------- local output

def test_output_that_cannot_be_written_names_the_path(dataset, tmp_path, capsys):
    from jobs.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["mask", str(dataset), str(blocker / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(blocker) in err and "Traceback" not in err


def test_output_that_fails_mid_job_stops_it_with_the_path(dataset, tmp_path):
    out = tmp_path / "out"
    # an output of mfr's (a foreign folder is refused before any work) whose images/ became a file
    first = photo_folder(tmp_path / "first", sorted(dataset.rglob("*.jpg"))[:1])
    assert subprocess.run([sys.executable, "-m", "jobs.cli", "mask", str(first), str(out), "--quiet", "--executor",
                           "local"], cwd=ROOT, timeout=300).returncode == 0
    shutil.rmtree(out / "images")
    (out / "images").write_text("a file where the job's images/ folder must go")
    job = start_job(["mask", str(dataset), str(out), "--quiet"])
    _, err = job.communicate(timeout=300)
    assert job.returncode == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("mfr mask: cannot write") and str(out / "images") in last, last


def test_a_full_disk_is_a_storage_error_naming_the_file(tmp_path):
    """The OS refusing a write (here a file-size limit, as a full disk would) surfaces as the store's
    error with the path and the reason."""
    script = ("import resource, signal\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
              "from jobs.storage import open_store, StorageError\n"
              f"store = open_store({str(tmp_path / 'out')!r})\n"
              "store.write('small.bin', b'x' * 100)\n"
              "try:\n    store.write('masked/big.jpg', b'x' * 100000)\n"
              "except StorageError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"cannot write {tmp_path / 'out' / 'masked' / 'big.jpg'}: File too large"
    assert sorted(p.name for p in (tmp_path / "out" / "masked").iterdir()) == []  # no half-written file


# ---------------------------------------------------------------- interrupt

# 20 photos, one per batch, one worker: the interrupt lands mid-job (the first shards appear with
# about 8 photos done)
INTERRUPTED_PHOTOS = 20
INTERRUPTED_ARGS = ["--quiet", "--batch-size", "1", "--workers", "1", "--rows-per-shard", "1", "--style", "random",
                    "--seed", "5"]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, face_photos):
    """The uninterrupted run of the same photos that both executors' interrupted runs must end equal
    to, on the local pool (which writes what Ray writes: tests/test_local_executor.py)."""
    from jobs.cli import main

    root = tmp_path_factory.mktemp("clean")
    dataset, clean = photo_folder(root / "in", face_photos[:INTERRUPTED_PHOTOS]), root / "out"
    assert main(["mask", str(dataset), str(clean), *INTERRUPTED_ARGS, "--executor", "local"]) == 0  # in this process
    return clean


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_ctrl_c_then_rerun_equals_a_clean_run(executor, face_photos, clean_run, tmp_path):
    dataset, out = photo_folder(tmp_path / "in", face_photos[:INTERRUPTED_PHOTOS]), tmp_path / "out"
    args = [*INTERRUPTED_ARGS, "--executor", executor]
    job = start_job(["mask", str(dataset), str(out), *args])
    try:
        wait_for(lambda: len(list((out / "manifest").rglob("*.parquet"))) >= 1, 240, "the first shard", job)
        job.send_signal(signal.SIGINT)
        _, err = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode == 130 and "interrupted" in err, err[-2000:]
    partial = len(list((out / "manifest").rglob("*.parquet")))
    assert 1 <= partial < INTERRUPTED_PHOTOS

    rerun = start_job(["mask", str(dataset), str(out), *args])
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-2000:]
    assert err == "", err[-2000:]  # --quiet: not one line, Ray's own included
    assert manifest_rows(str(out)) == manifest_rows(str(clean_run))
    images = sorted(p.relative_to(out) for p in (out / "images").rglob("*") if p.is_file())
    assert images == sorted(p.relative_to(clean_run) for p in (clean_run / "images").rglob("*") if p.is_file())
    assert not list(out.rglob(".mfr-tmp-*"))
