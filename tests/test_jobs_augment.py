"""The augment job on an in-process Ray runtime, local folder and S3 outputs, reruns."""

from __future__ import annotations

import shutil

import pytest

from jobs.augment import output_keys, read_manifest, run_augment
from jobs.storage import open_store
from maskgen.augment import AugmentOptions


@pytest.fixture(scope="module")
def ray_runtime(s3_endpoint):
    """In-process Ray, started after the S3 settings exist: workers inherit the environment."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture
def dataset(tmp_path, face_photos):
    """Three real photos of two people, a corrupt file and an empty one."""
    root = tmp_path / "in"
    for path in face_photos[:2] + face_photos[-1:]:
        dst = root / path.parent.name / path.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dst)
    (root / "broken").mkdir()
    (root / "broken" / "random bytes.jpg").write_bytes(b"\x13\x37" * 500)
    (root / "broken" / "empty.jpg").write_bytes(b"")
    return root


def _check(manifest, store, n_photos=3):
    per_image = manifest.groupby("source_key")["status"].first().to_dict()
    assert len(per_image) == n_photos + 2
    assert per_image["broken/random bytes.jpg"] == "unsupported"
    assert per_image["broken/empty.jpg"] == "empty"
    ok = manifest[manifest.status == "ok"]
    assert ok.source_key.nunique() == n_photos and ok.masked.all()
    assert not manifest.duplicated(["source_key", "face_index"]).any()
    for _, row in ok.iterrows():
        assert store.exists(row.output_key) and store.exists(row.crop_key)
        assert row.output_key == output_keys(row.source_key)[0]
        assert len(row.landmarks5) == 10 and len(row.landmarks68) == 136 and row.mask_style
        assert row.identity == row.source_key.split("/")[0]


def test_augment_to_a_local_folder_and_rerun(ray_runtime, dataset, tmp_path):
    out = tmp_path / "out"
    summary = run_augment(str(dataset), str(out), AugmentOptions(style="random", seed=1), batch_size=2)
    assert summary.processed == 5 and summary.statuses == {"ok": 3, "unsupported": 1, "empty": 1}
    _check(read_manifest(str(out)), open_store(out))
    again = run_augment(str(dataset), str(out), AugmentOptions(style="random", seed=1), batch_size=2)
    assert again.processed == 0 and again.skipped == 5
    assert len(read_manifest(str(out))) == len(read_manifest(str(out)).drop_duplicates(["source_key", "face_index"]))


def test_augment_from_a_folder_to_s3(ray_runtime, dataset, bucket):
    uri = f"s3://{bucket}/runs/augment"
    summary = run_augment(str(dataset), uri, AugmentOptions(seed=2))
    assert summary.statuses.get("ok") == 3
    _check(read_manifest(uri), open_store(uri))


def test_a_worker_killed_mid_job_loses_and_duplicates_nothing(ray_runtime, face_photos, tmp_path):
    import os
    import signal
    import threading
    import time

    import psutil

    source = tmp_path / "many"
    for path in face_photos[:30]:
        (source / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, source / path.parent.name / path.name)
    killed = []
    started = time.time()

    def kill_the_worker():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
                # this job's actor: earlier tests' actors may still be around
                if "AugmentWorker" in " ".join(proc.info["cmdline"] or []) and proc.info["create_time"] >= started - 1:
                    time.sleep(6)  # in the middle of its batches
                    try:
                        os.kill(proc.info["pid"], signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    killed.append(time.time())
                    return
            time.sleep(0.3)

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
    out = tmp_path / "out"
    summary = run_augment(str(source), str(out), AugmentOptions(style="random"), batch_size=2)
    finished = time.time()
    killer.join()
    assert killed and killed[0] < finished, "the worker was not killed while the job ran"
    manifest = read_manifest(str(out))
    assert summary.processed == 30 and manifest.source_key.nunique() == 30
    assert not manifest.duplicated(["source_key", "face_index"]).any()
    store = open_store(out)
    for _, row in manifest[manifest.status == "ok"].iterrows():
        assert store.exists(row.output_key)
