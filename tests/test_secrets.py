"""Secrets: a recognisable credential planted in the environment and in an endpoint URL never appears
in what the jobs print, write (manifests, reports, shards, images) or log, whether they fail or succeed."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import boto3

from conftest import ROOT

SECRET = "mfrPlantedSecret9f3a7c"
TOKEN = "mfrPlantedToken51e0d2"


def run_cli(args: list[str], **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=600)


def leaks(blob: bytes) -> list[str]:
    return [s for s in (SECRET, TOKEN) if s.encode() in blob]


def test_planted_secrets_never_leak(s3_endpoint, bucket, face_photos, tmp_path):
    dataset = tmp_path / "in"
    for path in face_photos[:2] + face_photos[-2:]:
        (dataset / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dataset / path.parent.name / path.name)
    planted = {"AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN}
    host = s3_endpoint.split("//", 1)[1]
    printed = []

    # failing: credentials in an endpoint URL, in an output URI, and a wrong one that S3 answers
    failing = [
        (["mask", str(dataset), f"s3://{bucket}/a", "--quiet"], {"AWS_ENDPOINT_URL": f"http://user:{SECRET}@{host}"}),
        (["mask", str(dataset), f"s3://AKIAEXAMPLE:{SECRET}@{bucket}/b", "--quiet"], {}),
        (["embed", f"s3://{bucket}/nothing-here", str(tmp_path / "emb"), "--quiet"], {}),
    ]
    for args, env in failing:
        done = run_cli(args, **planted, **env)
        assert done.returncode == 2, (args, done.stderr[-1500:])
        assert "credentials" in done.stderr or "no " in done.stderr.lower(), done.stderr[-500:]
        printed.append(done.stdout + done.stderr)

    # succeeding: the whole chain to S3 with the planted credentials in the environment, on a Ray of
    # its own (a job this small would run on the local pool) with one actor a pool (a second is
    # another model load and the same logs), in a temp folder of its own (short: Ray's socket paths
    # live under it) whose logs are checked below
    ray_temp = Path("/tmp") / f"mfr-secrets-{secrets.token_hex(3)}"
    try:
        done = run_cli(["run", str(dataset), f"s3://{bucket}/run", "--executor", "ray", "--workers", "1"], **planted,
                       RAY_TMPDIR=str(ray_temp))
        assert done.returncode == 0, done.stderr[-2000:]
        printed.append(done.stdout + done.stderr)
        logs = [f for f in ray_temp.rglob("*") if f.is_file() and "logs" in f.relative_to(ray_temp).parts]
        assert logs, "no Ray log written by the job: nothing was checked"
        for path in logs:
            assert not leaks(path.read_bytes()), path
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)

    for text in printed:
        assert not leaks(text.encode()), text[-1000:]
    s3 = boto3.client("s3")
    objects = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert any(o["Key"].endswith("report.md") for o in objects)
    for obj in objects:
        assert not leaks(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()), obj["Key"]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert not leaks(path.read_bytes()), path


def test_cluster_config_holds_no_secrets():
    text = (ROOT / "cluster.yaml").read_text()
    assert not re.search(r"AKIA[0-9A-Z]{12,}", text)
    assert not re.search(r"(?i)(secret_access_key|session_token|password)\s*[:=]\s*\S", text)
