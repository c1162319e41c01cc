"""The jobs on a local Ray cluster: `ray start --head`, then `ray job submit --working-dir .`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, free_port
from jobs.storage import open_store

RAY = Path(sys.executable).with_name("ray")


@pytest.fixture(scope="module")
def local_cluster(s3_endpoint):
    """A one-node cluster started like a user would; the S3 settings exist before it starts."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    port, dashboard = free_port(), free_port()
    start = subprocess.run([str(RAY), "start", "--head", "--num-cpus=2", f"--port={port}",
                            f"--dashboard-port={dashboard}", "--include-dashboard=true", "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stderr[-2000:]
    yield f"http://127.0.0.1:{dashboard}", env
    subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_mfr_run_submitted_to_a_local_cluster_writes_to_s3(local_cluster, bucket, shared_data, tmp_path):
    address, env = local_cluster
    dataset = tmp_path / "dataset"
    for person in ("person_07", "person_08"):
        for path in sorted((shared_data / "faces" / person).glob("*.jpg"))[:2]:
            (dataset / person).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dataset / person / path.name)
    output = f"s3://{bucket}/cluster-run"
    runtime_env = json.dumps({"excludes": [".venv", ".git", "out", "**/__pycache__"]})
    job = subprocess.run(
        [str(RAY), "job", "submit", "--address", address, "--working-dir", str(ROOT), "--runtime-env-json",
         runtime_env, "--", sys.executable, "-m", "jobs.cli", "run", str(dataset), output, "--quiet"],
        env=env, capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    assert re.search(r"augment:\n\s+inputs\s+4\n", job.stdout) and "succeeded" in (job.stdout + job.stderr)
    store = open_store(output)
    report = json.loads(store.read("report/report.json"))
    assert report["results"][0]["identification"]["probes"] == 2
    keys = store.list()
    assert any(k.startswith("masked/manifest/") for k in keys)
    assert any(k.startswith("embeddings/masked/shards/") for k in keys)
    assert {"report/report.md", "report/roc.png", "report/cmc.png"} <= set(keys)
