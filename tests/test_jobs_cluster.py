"""`mfr run` submitted with `ray job submit` to a multi-node cluster shaped like cluster.yaml's: a head
with no CPUs, CPU worker nodes and a node with a GPU, all started by the test with `ray start`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time


from conftest import ROOT
from jobs.augment import read_manifest
from jobs.embed import read_shards
from jobs.storage import open_store

RUNTIME_ENV = json.dumps({"excludes": [".venv", ".git", "out", "**/__pycache__", "docs"]})


def dataset_of(shared_data, root, people, per_person):
    for person in people:
        for path in sorted((shared_data / "faces" / person).glob("*.jpg"))[:per_person]:
            (root / person).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / person / path.name)
    return root


def submit(nodes, dataset, output, *extra, wait=True, command="run"):
    return subprocess.run(
        [nodes.ray, "job", "submit", "--address", nodes.dashboard_url, "--working-dir", str(ROOT),
         "--runtime-env-json", RUNTIME_ENV, *([] if wait else ["--no-wait"]), "--", "env", "MFR_GPU_WORKERS=1",
         sys.executable, "-m",
         "jobs.cli", command, str(dataset), output, "--quiet", *extra],
        env=nodes.env, capture_output=True, text=True, timeout=600, cwd=ROOT)


def check_complete(output, keys):
    """Every input has its manifest row, once; every face its gallery or probe embedding, once."""
    manifest = read_manifest(f"{output}/masked")
    assert sorted(manifest.source_key.unique()) == sorted(keys)
    assert not manifest.duplicated(["source_key", "face_index"]).any() and set(manifest.status) == {"ok"}
    gallery, _ = read_shards(f"{output}/embeddings/unmasked")
    probes, _ = read_shards(f"{output}/embeddings/masked")
    assert sorted(list(gallery.key) + list(probes.key)) == sorted(keys)
    assert json.loads(open_store(output).read("report/report.json"))["results"][0]["identification"]["probes"] \
        == len(probes)
    return manifest, gallery, probes


def test_mfr_run_waits_for_workers_then_runs_on_them_and_on_the_gpu_node(ray_nodes, bucket, shared_data, tmp_path):
    """The job is submitted while the cluster is only its 0-CPU head (as cluster.yaml starts): it
    waits instead of refusing; worker nodes join with `ray start --address`, one with a GPU; the job
    completes, its CPU work on the worker nodes, its recognition actors and scoring tasks on the GPU node."""
    ray_nodes.start_head(num_cpus=0)
    dataset = dataset_of(shared_data, tmp_path / "dataset", ("person_07", "person_08", "person_09"), 3)
    output = f"s3://{bucket}/cluster-run"
    job = submit(ray_nodes, dataset, output, "--modes", "plain", wait=False)
    assert job.returncode == 0, job.stderr[-2000:]
    job_id = re.search(r"raysubmit_\w+", job.stdout + job.stderr).group(0)

    # followed over the dashboard's HTTP API, as `ray job status` and `ray job logs` ask it (each of
    # those commands is a Python process of about a second of CPU, taken from the job on 2 cores)
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(ray_nodes.dashboard_url)
    time.sleep(8)  # the job has started and found no CPU anywhere: it must wait, not refuse
    assert client.get_job_status(job_id) in (JobStatus.PENDING, JobStatus.RUNNING), client.get_job_status(job_id)
    # MFR_GPU_WORKERS is how a cluster whose GPU nodes start at zero tells the job (cluster.yaml sets it)
    ray_nodes.add_worker(num_cpus=1, num_gpus=1)
    ray_nodes.add_worker(num_cpus=2)
    nodes = ray_nodes.node_ids()
    head = [n for n, (cpus, gpus) in nodes.items() if cpus == 0 and gpus == 0]
    gpu_node = [n for n, (_, gpus) in nodes.items() if gpus == 1]
    assert len(nodes) == 3 and len(head) == 1 and len(gpu_node) == 1
    deadline = time.time() + 400
    while time.time() < deadline and not client.get_job_status(job_id).is_terminal():
        time.sleep(1)
    final, logs = client.get_job_status(job_id), client.get_job_logs(job_id)
    assert final == JobStatus.SUCCEEDED, f"{final}\n{logs[-3000:]}"
    assert re.search(r"run:\n\s+inputs\s+9\n", logs), logs[-3000:]
    keys = [p.relative_to(dataset).as_posix() for p in dataset.rglob("*.jpg")]
    manifest, gallery, probes = check_complete(output, keys)
    # detection and masking ran on the worker nodes (the head has no CPU to run them); recognition
    # actors, which take a GPU each, on the node with the GPU
    assert set(manifest.node) <= set(nodes) - set(head)
    assert set(gallery.node) == set(probes.node) == set(gpu_node)
    assert len(gallery) == 3 and len(probes) == 6
    # the job's progress counts live on the driver's node (the head, under `ray job submit`): on a
    # worker node that died they came back empty, and a finished job said "nothing was written"
    from ray.util.state import list_actors

    boards = list_actors(address=ray_nodes.dashboard_url, filters=[("class_name", "=", "ProgressBoard")],
                         detail=True, timeout=60)
    assert boards and {b.node_id for b in boards} == set(head), boards
    # the reducer's scoring tasks asked for a GPU too, so they ran on that node; its onnxruntime has no
    # CUDA, which the report says rather than hiding it
    scored_by = json.loads(open_store(output).read("report/report.json"))["scored_by"]["sface"]
    assert scored_by["nodes"] == gpu_node and scored_by["devices"] == {"numpy, no CUDA": scored_by["tasks"]}

    # `mfr embed` on the same cluster splits its work as `mfr run` does: the CPU pool decodes, detects
    # and aligns off the head, the recognition actors on the GPU node only embed (its one pool's
    # actors took a GPU each and did everything there). One CPU actor is enough to show where it runs
    # (Ray Data grows a pool with one batch in flight, each actor a model load: 9 CPU-s of this test)
    embedded = f"s3://{bucket}/cluster-embed"
    job = submit(ray_nodes, dataset, embedded, "--workers", "1", command="embed")
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    rows, _ = read_shards(embedded)
    assert sorted(rows.key) == sorted(keys) and set(rows.status) == {"ok"} and set(rows.node) == set(gpu_node)

    def actor_nodes(stage):
        actors = list_actors(address=ray_nodes.dashboard_url, detail=True, timeout=60,
                             filters=[("class_name", "=", f"MapWorker(MapBatches({stage}))")])
        return {a.node_id for a in actors}

    assert actor_nodes("CropEmbedder") == set(gpu_node)
    assert actor_nodes("FacePreparer") and not actor_nodes("FacePreparer") & set(head)
    assert not actor_nodes("EmbedWorker")
