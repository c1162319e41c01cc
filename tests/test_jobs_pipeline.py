"""augment -> embed -> score on an in-process Ray runtime: a dataset to a report."""

from __future__ import annotations

import json
import shutil

import pytest

from jobs.embed import read_shards
from jobs.run import run_pipeline


@pytest.fixture(scope="module")
def ray_runtime(s3_endpoint):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


def test_dataset_to_report(ray_runtime, shared_data, tmp_path):
    dataset = tmp_path / "dataset"
    for person in ("person_01", "person_02", "person_03", "person_04"):
        for path in sorted((shared_data / "faces" / person).glob("*.jpg"))[:3]:
            (dataset / person).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dataset / person / path.name)
    out = tmp_path / "run"
    result = run_pipeline(str(dataset), str(out), style="seed")
    assert result["augment"].statuses == {"ok": 12}
    gallery_rows, gallery_emb = read_shards(str(out / "embeddings" / "unmasked"))
    probe_rows, probe_emb = read_shards(str(out / "embeddings" / "masked"))
    assert len(gallery_rows) == 12 and len(probe_rows) == 12
    assert gallery_emb.shape == (12, 128) and set(probe_rows.masked) == {True}
    assert probe_rows.model_id.nunique() == 1 and probe_rows.model_id.iloc[0].startswith("sface@sha256:")
    report = json.loads((out / "report" / "report.json").read_text())
    ident = report["results"][0]["identification"]
    assert ident["gallery"] == 4 and ident["probes"] == 8  # one unmasked image per person, the rest masked
    verification = report["results"][0]["verification"]
    assert verification["genuine"] == 8 and verification["impostor"] == 24
    assert 0.5 < verification["auc"] <= 1.0 and ident["rank"]["1"] >= 0.5
    for name in ("report.md", "roc.png", "cmc.png"):
        assert (out / "report" / name).stat().st_size > 100


def test_cli_run_and_refusals(ray_runtime, shared_data, tmp_path, capsys):
    from jobs.cli import main

    dataset = tmp_path / "dataset"
    for person in ("person_05", "person_06"):
        for path in sorted((shared_data / "faces" / person).glob("*.jpg"))[:2]:
            (dataset / person).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dataset / person / path.name)
    out = tmp_path / "cli"
    assert main(["run", str(dataset), str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "augment: 4 images" in printed and f"markdown: {out / 'report' / 'report.md'}" in printed
    assert main(["mask", str(dataset), "s3://KEY:SECRET@bucket/x", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "credentials in the URI are refused" in err and "SECRET" not in err
