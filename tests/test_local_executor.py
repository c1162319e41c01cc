"""Small jobs without a cluster run in a local process pool (jobs/local.py): the same outputs as on Ray,
listing that stops past the limit, a killed worker process said as such, and reruns that finish the job."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys

import psutil
import pandas as pd
import pytest

from conftest import ROOT, photo_folder
from jobs.augment import MANIFEST_DIR, read_manifest, run_augment
from jobs.inputs import Tally, input_listing
from jobs.local import cluster_reachable, small_job_rows
from jobs.storage import open_store
from maskgen.augment import AugmentOptions
from test_faults import start_job, wait_for


@pytest.fixture
def dataset(tmp_path, face_photos):
    """Six real photos of three people, a corrupt file and an empty one."""
    return photo_folder(tmp_path / "in", face_photos[:4] + face_photos[-2:], broken=True)


def files(root):
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and "manifest" not in p.parts and not p.name.startswith("_mfr")}


def rows(uri):
    frame = read_manifest(uri).drop(columns=["node"])
    return sorted(map(repr, frame.sort_values(["source_key", "face_index"]).to_dict("records")))


def assert_same_shards(here, there):
    """Embedding shard rows (`read_shards`' frame and vectors) of the two executors: every column but
    `node` equal, vectors to 1e-6."""
    import numpy as np

    (rows_here, emb_here), (rows_there, emb_there) = here, there
    order_here, order_there = (np.lexsort((r.face_index, r.key)) for r in (rows_here, rows_there))
    columns = [c for c in rows_here.columns if c not in ("node", "embedding")]
    assert (rows_here[columns].iloc[order_here].astype(str).values.tolist()
            == rows_there[columns].iloc[order_there].astype(str).values.tolist())
    np.testing.assert_allclose(emb_here[order_here], emb_there[order_there], atol=1e-6)


def test_local_pool_and_ray_write_the_same_outputs(ray_runtime, dataset, tmp_path):
    options = AugmentOptions(style="random", seed=4)
    here = run_augment(str(dataset), str(tmp_path / "local"), options, batch_size=3, executor="local")
    there = run_augment(str(dataset), str(tmp_path / "ray"), options, batch_size=3, executor="ray")
    assert here.processed == there.processed == 8 and here.statuses == there.statuses
    assert here.statuses == {"ok": 6, "unsupported": 1, "empty": 1}
    assert here.faces == there.faces > 0
    assert rows(str(tmp_path / "local")) == rows(str(tmp_path / "ray"))  # every column but `node`
    assert files(tmp_path / "local") == files(tmp_path / "ray")  # masked images and crops, byte for byte
    assert set(read_manifest(str(tmp_path / "local")).node) == {""}
    assert "" not in set(read_manifest(str(tmp_path / "ray")).node)
    # `masked` is a plain boolean column, False on the rows of the corrupt and the empty file (a null there
    # made pandas' `frame[frame.masked]` fail: "non-boolean array containing NA / NaN values")
    for side in ("local", "ray"):
        frame = pd.read_parquet(tmp_path / side / "manifest")
        assert frame.masked.dtype == bool, (side, frame.masked.tolist())
        assert set(frame[frame.face_index < 0].masked) == {False} and len(frame[frame.masked]) == here.faces


def test_a_rerun_with_nothing_left_starts_no_worker_on_either_executor(ray_runtime, dataset, tmp_path, monkeypatch):
    import jobs.local
    from test_jobs_pipeline import pool_actors

    for executor in ("local", "ray"):
        assert run_augment(str(dataset), str(tmp_path / executor), executor=executor).processed == 8

    def no_pool(*args, **kwargs):
        raise AssertionError("a worker pool was started for a job with nothing to do")

    monkeypatch.setattr(jobs.local, "ProcessPoolExecutor", no_pool)
    pools = pool_actors()
    for executor in ("local", "ray"):
        again = run_augment(str(dataset), str(tmp_path / executor), executor=executor)
        assert (again.inputs, again.skipped, again.processed) == (8, 8, 0), executor
    assert pool_actors() == pools  # no actor of a Ray Data pool either


def test_embed_on_the_local_pool_writes_what_ray_writes(ray_runtime, dataset, tmp_path):
    from jobs.embed import read_shards, run_embed

    here = run_embed(str(dataset), str(tmp_path / "local"), masked=False, batch_size=3, executor="local")
    there = run_embed(str(dataset), str(tmp_path / "ray"), masked=False, batch_size=3, executor="ray")
    assert here.processed == there.processed == 8 and here.statuses == there.statuses
    assert here.faces == there.faces == here.statuses["ok"] > 0
    (rows_here, emb_here, failed_here), (rows_there, emb_there, failed_there) = (
        read_shards(str(tmp_path / side), with_failures=True) for side in ("local", "ray"))
    assert_same_shards((rows_here, emb_here), (rows_there, emb_there))
    assert sorted(failed_here.key) == sorted(failed_there.key) and len(failed_here) == 2


def test_run_on_the_local_pool_writes_and_scores_what_ray_does(ray_runtime, shared_data, tmp_path):
    """`mfr run` in the local pool (each process prepares and embeds its batches, the report scored
    here) against the Ray job: the same masked outputs, manifest, embedding shards and figures."""
    import json

    from jobs.embed import read_shards
    from jobs.run import run_pipeline
    from test_jobs_pipeline import assert_same_figures

    photos = [p for person in ("person_01", "person_02", "person_03")
              for p in sorted((shared_data / "faces" / person).glob("*.jpg"))[:2]]
    dataset = photo_folder(tmp_path / "in", photos, broken=True)
    results = {ex: run_pipeline(str(dataset), str(tmp_path / ex), style="surgical", batch_size=4, executor=ex)
               for ex in ("local", "ray")}
    here, there = results["local"]["run"], results["ray"]["run"]
    assert here.processed == there.processed == 8
    assert here.statuses == there.statuses == {"ok": 6, "unsupported": 1, "empty": 1}
    assert "no Ray" in results["local"]["pools"]["cpu"] and "no Ray" not in results["ray"]["pools"]["cpu"]
    assert rows(str(tmp_path / "local" / "masked")) == rows(str(tmp_path / "ray" / "masked"))
    assert files(tmp_path / "local" / "masked") == files(tmp_path / "ray" / "masked")
    for side in ("unmasked", "masked"):
        here_shards, there_shards = (read_shards(str(tmp_path / ex / "embeddings" / side)) for ex in ("local", "ray"))
        assert len(here_shards[0]) == len(there_shards[0]) == 3, side
        assert_same_shards(here_shards, there_shards)
        assert set(here_shards[0].node) == {""} and "" not in set(there_shards[0].node)
    reports = [json.loads((tmp_path / ex / "report" / "report.json").read_text())["results"][0]
               for ex in ("local", "ray")]
    # the broken folder's second image is a probe too: never identified, counted
    assert (reports[0]["identification"]["gallery"], reports[0]["identification"]["probes"]) == (3, 4)
    assert_same_figures(*reports, tol=1e-6, threshold_rtol=1e-5)  # scored here vs by the distributed reducer


def test_a_rerun_that_adds_images_and_a_model_writes_each_row_once_and_keeps_the_gallery(shared_data, tmp_path):
    """`mfr run` again after an image was added (sorting before its person's gallery image) and a
    second model asked for: the first model's folders get only the new image, the second model's
    every image, the manifest one row per face, and the person keeps the gallery image it had."""
    import json

    from jobs.embed import read_shards
    from jobs.run import run_pipeline

    photos = {person: sorted((shared_data / "faces" / person).glob("*.jpg"))[:4] for person in ("person_01", "person_02")}
    added = photos["person_01"][0]
    dataset = photo_folder(tmp_path / "in", [p for person in photos.values() for p in person if p != added])
    out = tmp_path / "run"
    run_pipeline(str(dataset), str(out), style="seed", executor="local")
    gallery_before = sorted(read_shards(str(out / "embeddings" / "unmasked"))[0].key)
    assert gallery_before == ["person_01/" + photos["person_01"][1].name, "person_02/" + photos["person_02"][0].name]

    photo_folder(dataset, [added])
    result = run_pipeline(str(dataset), str(out), style="seed", executor="local", models=["sface", "dlib-resnet"])
    assert result["run"].processed == 8 and result["run"].skipped == 0  # every image lacked dlib-resnet's rows
    manifest = read_manifest(str(out / "masked"))
    assert manifest.source_key.nunique() == 8 and not manifest.duplicated(["source_key", "face_index"]).any()
    folders = {"sface": out / "embeddings", "dlib-resnet": out / "embeddings" / "dlib-resnet" / "plain"}
    for model, folder in folders.items():
        gallery, probes = (read_shards(str(folder / side))[0] for side in ("unmasked", "masked"))
        for frame in (gallery, probes):
            assert not frame.duplicated(["key", "face_index"]).any(), model
        assert sorted(gallery.key) == gallery_before, model  # the added image sorts first: a probe all the same
        assert sorted(set(probes.key)) == sorted(f"{p.parent.name}/{p.name}" for person in photos.values()
                                                 for p in person if f"{p.parent.name}/{p.name}" not in gallery_before)
    report = json.loads((out / "report" / "report.json").read_text())
    assert [(r["identification"]["gallery"], r["identification"]["probes"]) for r in report["results"]] == [(2, 6)] * 2

    again = run_pipeline(str(dataset), str(out), style="seed", executor="local", models=["sface", "dlib-resnet"])
    assert again["run"].processed == 0 and again["run"].skipped == 8


def test_run_over_a_manifest_takes_each_identitys_first_row_as_gallery_and_keeps_it(shared_data, tmp_path, capsys):
    """`mfr run` over an input manifest (paths relative to `--images`): an identity's rows may name
    several folders, its first usable row is its gallery image even when that image's path is
    repeated further down (such rows are listed last), a row marked masked is no sample and no
    gallery, and a rerun of a grown manifest keeps the gallery when the new row comes first."""
    import json

    from jobs.cli import main
    from jobs.embed import read_shards
    from jobs.run import run_pipeline

    faces = shared_data / "faces"
    (a1, a2, a3), (b1, b2, b3), (c1, c2, c3) = (
        [f"{person}/{p.name}" for p in sorted((faces / person).glob("*.jpg"))[:3]]
        for person in ("person_01", "person_02", "person_03"))
    # a row marked masked whose file is not there is no sample either (mfr mask's manifest says missing;
    # here it was a failure to acquire, one probe more in the report)
    rows = [(a1, "anna", 0), (b1, "anna", 0), (a2, "person_01", 0), (a3, "person_01", 0), (c1, "person_03", 0),
            (c2, "person_03", 0), (b2, "person_02", 1), ("person_02/gone.jpg", "person_02", 1), (b3, "person_02", 0),
            (c1, "person_03", 0)]
    manifest = tmp_path / "lists" / "run.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,identity,masked\n" + "".join(f"{p},{i},{m}\n" for p, i, m in rows))
    out = tmp_path / "run"

    def sides():
        gallery, probes = (read_shards(str(out / "embeddings" / side), with_failures=True)
                           for side in ("unmasked", "masked"))
        return sorted(gallery[0].key), sorted(probes[0].key), probes[2]

    def identification():
        return json.loads((out / "report" / "report.json").read_text())["results"][0]["identification"]

    # on the local pool: the roles are chosen by the lister, which a Ray read task runs as it is
    result = run_pipeline(str(manifest), str(out), images_uri=str(faces), executor="local", batch_size=4)
    assert result["run"].statuses == {"ok": 7, "already_masked": 2, "duplicate": 1}, result["run"].statuses
    gallery, probes, failed = sides()
    assert gallery == sorted([a1, a2, c1, b3]) and probes == sorted([b1, a3, c2]) and failed.empty
    assert (identification()["gallery"], identification()["probes"]) == (4, 3)

    manifest.write_text("path,identity,masked\n" + f"{c3},person_03,0\n"
                        + "".join(f"{p},{i},{m}\n" for p, i, m in rows[:-1]))
    assert main(["run", str(manifest), str(out), "--images", str(faces), "--executor", "local", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"processed\s+1\b", printed) and re.search(r"skipped \(already done\)\s+9\b", printed), printed
    gallery_after, probes_after, _ = sides()
    assert gallery_after == gallery and probes_after == sorted(probes + [c3])
    assert (identification()["gallery"], identification()["probes"]) == (4, 4)
    manifest_rows = read_manifest(str(out / "masked"))
    assert not manifest_rows.duplicated(["input_row", "face_index"]).any()

    again = run_pipeline(str(manifest), str(out), images_uri=str(faces), executor="local")
    assert again["run"].processed == 0 and again["run"].skipped == 10


def test_run_counts_every_image_of_an_identity_in_two_top_level_folders(shared_data, tmp_path, capsys):
    """Roles are chosen per top-level folder: `train/p/` and `test/p/` each give `p` a gallery image,
    and the scorer kept only the first, so the other's images were neither gallery nor probe (12
    images scored as 6 probes and 3 gallery entries, with no word). And a dataset with no probe at all
    (one image per identity) said "no embedding shards under .../embeddings/masked/shards", without
    the summary that says how each image ended."""
    import json

    from jobs.cli import main

    faces = shared_data / "faces"
    layout = {"train/person_01": 2, "test/person_01": 2, "train/person_02": 2, "test/person_02": 1}
    taken = {}
    for folder, n in layout.items():
        person = folder.split("/")[1]
        photos = sorted((faces / person).glob("*.jpg"))[taken.get(person, 0):][:n]
        taken[person] = taken.get(person, 0) + n
        (tmp_path / "in" / folder).mkdir(parents=True)
        for photo in photos:
            shutil.copy(photo, tmp_path / "in" / folder / photo.name)
    out = tmp_path / "run"
    assert main(["run", str(tmp_path / "in"), str(out), "--executor", "local", "--quiet"]) == 0
    ident = json.loads((out / "report" / "report.json").read_text())["results"][0]["identification"]
    # every image counted: a gallery image per identity and top-level folder (4), the others probes (3)
    assert (ident["gallery"], ident["gallery_identities"], ident["probes"]) == (4, 2, 3), ident
    md = (out / "report" / "report.md").read_text()
    assert "gallery images chosen when the input was listed" in md
    # right here, but the sign of a person/session/img.jpg layout (a session's name as the identity): said
    assert ("> **Note:** identity 'person_01' has gallery images in 2 top-level folders (test, train) (and 1 more "
            "identities): each is a gallery entry of that one identity.") in md

    ones = tmp_path / "ones"
    for person in ("person_01", "person_02"):
        (ones / person).mkdir(parents=True)
        shutil.copy(sorted((faces / person).glob("*.jpg"))[0], ones / person / "a.jpg")
    capsys.readouterr()
    assert main(["run", str(ones), str(tmp_path / "ones-out"), "--executor", "local", "--quiet"]) == 2
    printed = capsys.readouterr()
    assert re.search(r"inputs\s+2\b", printed.out) and re.search(r"ok\s+2\b", printed.out), printed.out
    assert printed.err.strip() == ("mfr run: nothing to score: no probe image was embedded (an identity's first "
                                   "image is its gallery image and its other images are probes, so an identity "
                                   "needs 2 or more images; the summary says how each image ended)")


def test_a_run_whose_first_gallery_shard_is_damaged_sets_it_aside(shared_data, tmp_path, capsys):
    """`mfr run` read its first gallery shard to place its models before any listing: a damaged one
    stopped every rerun (and dry run) with pyarrow's "Parquet magic bytes not found", naming no file."""
    import json

    from jobs.cli import main
    from jobs.embed import read_shards

    dataset = photo_folder(tmp_path / "in", [p for person in ("person_01", "person_02")
                                             for p in sorted((shared_data / "faces" / person).glob("*.jpg"))[:2]])
    out = tmp_path / "run"
    assert main(["run", str(dataset), str(out), "--executor", "local", "--quiet"]) == 0
    (shard, *_) = sorted((out / "embeddings" / "unmasked" / "shards").rglob("*.parquet"))
    damaged = shard.read_bytes()[:100]
    shard.write_bytes(damaged)
    for dry in (["--dry-run"], []):
        assert main(["run", str(dataset), str(out), "--executor", "local", "--quiet", "--rows-per-shard", "1",
                     *dry]) == 0, capsys.readouterr().err
    assert shard.with_name(shard.name + ".damaged").read_bytes() == damaged
    rows, _ = read_shards(str(out / "embeddings" / "unmasked"))  # every shard readable again
    assert sorted(rows.identity) == ["person_01", "person_02"]
    assert json.loads((out / "report" / "report.json").read_text())["results"][0]["identification"]["gallery"] == 2


def test_a_manifest_of_absolute_paths_under_the_images_root_is_read(face_photos, tmp_path, capsys):
    """Every row of a manifest that `find "$PWD/in"` wrote was refused (`unsafe_path`)."""
    from jobs.cli import main

    dataset = photo_folder(tmp_path / "in", face_photos[:3])
    manifest = tmp_path / "lists" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text("path\n" + "".join(f"{p}\n" for p in sorted(dataset.rglob("*.jpg"))))
    out = tmp_path / "out"
    assert main(["mask", str(manifest), str(out), "--images", str(dataset), "--executor", "local", "--quiet"]) == 0
    rows = read_manifest(str(out))
    assert sorted(set(rows.input_row)) == sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*.jpg"))
    assert set(rows.status) == {"ok"} and all((out / "images" / k).is_file() for k in rows.input_row)


def test_an_image_that_fails_in_the_run_worker_keeps_its_role_and_where_it_is_written(shared_data, tmp_path,
                                                                                      monkeypatch):
    """An unexpected failure becomes the image's error row, which still says its role and the output
    folders that already hold it: a gallery image is not filed as a probe, and a rerun's error row
    is not a second manifest row."""
    import pyarrow as pa

    from jobs.inputs import InputItem, input_schema
    from jobs.run import PrepareWorker
    from recog.embed import Embedder

    photo = sorted((shared_data / "faces" / "person_01").glob("*.jpg"))[0]
    dataset = photo_folder(tmp_path / "in", [photo])
    worker = PrepareWorker(str(dataset), str(tmp_path / "out"), AugmentOptions(), 40_000_000,
                           {"sface": Embedder("sface").spec}, {"gallery": ["unmasked"], "probe": ["masked"]})

    def fails(*args, **kwargs):
        raise RuntimeError("the aligner broke")

    monkeypatch.setattr(worker, "augment_image", fails)
    item = InputItem(f"person_01/{photo.name}", "person_01", gallery=True, written=["masked/manifest"])
    row = worker(pa.Table.from_pylist([item.to_row("g=test")], schema=input_schema())).to_pylist()[0]
    assert row["status"] == "error" and "the aligner broke" in row["message"]
    assert row["gallery"] is True and row["_written"] == ["masked/manifest"]


def test_listing_stops_past_the_limit(dataset, tmp_path):
    output = open_store(str(tmp_path / "out"))
    for limit, expected in ((100, 8), (8, 8), (7, None), (0, None)):
        tally = Tally()
        _, groups, lister, _ = input_listing(str(dataset), output, MANIFEST_DIR, progress=tally)
        tables = small_job_rows(groups, lister, limit)
        assert (None if tables is None else sum(t.num_rows for t in tables)) == expected, limit


def test_a_cluster_to_join_is_never_ignored(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # no `ray start` cluster recorded there
    monkeypatch.setitem(sys.modules, "ray", None)  # as in a process that never started Ray
    assert not cluster_reachable()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert cluster_reachable()
    monkeypatch.delenv("RAY_ADDRESS")
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:6379")  # what `ray start` leaves
    assert cluster_reachable()


def test_a_small_job_runs_here_without_ray_and_a_rerun_or_a_dry_run_does_nothing(dataset, tmp_path):
    out = tmp_path / "out"
    for more, expected in (([], r"processed\s+8\n"), ([], r"skipped \(already done\)\s+8\n"),
                           (["--dry-run"], r"8 already done; 0 to process")):
        job = start_job(["mask", str(dataset), str(out), "--quiet", "--style", "surgical", *more])
        stdout, stderr = job.communicate(timeout=300)
        assert job.returncode == 0, stderr[-2000:]  # a no-op rerun and a dry run exit 0 too
        assert re.search(expected, stdout), stdout
        assert stderr.strip() == "", stderr  # --quiet: nothing but the summary, no library warnings
    frame = read_manifest(str(out))
    assert frame.source_key.nunique() == 8 and not frame.duplicated(["source_key", "face_index"]).any()
    assert set(frame.node) == {""}  # no Ray node: the local pool did it


def test_a_killed_worker_process_stops_the_job_clearly_and_a_rerun_finishes_it(face_photos, tmp_path):
    root = photo_folder(tmp_path / "in", face_photos[:20])
    out = tmp_path / "out"
    args = ["mask", str(root), str(out), "--quiet", "--batch-size", "1", "--workers", "1", "--rows-per-shard", "1"]
    job = start_job(args)
    try:
        wait_for(lambda: list((out / "manifest").rglob("*.parquet")), 240, "the first shard", job)
        workers = [p for p in psutil.Process(job.pid).children(recursive=True)
                   if "forkserver" in " ".join(p.cmdline())]
        pool = [p for p in workers if p.children()] or workers  # the forkserver's children do the work
        victims = [c for p in pool for c in p.children()]
        assert victims, "no worker process found"
        for victim in victims:
            victim.send_signal(signal.SIGKILL)
        _, err = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode == 2 and "a worker process died (SIGKILL" in err and "Traceback" not in err, err[-2000:]
    assert not (out / "_mfr_lease.json").exists()
    done_before = read_manifest(str(out)).source_key.nunique()
    assert 1 <= done_before < 20
    rerun = start_job(args)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-2000:]
    frame = read_manifest(str(out))
    assert frame.source_key.nunique() == 20 and not frame.duplicated(["source_key", "face_index"]).any()


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_a_job_killed_outright_takes_its_pool_processes_with_it(reaped, face_photos, tmp_path):
    """SIGKILL of the job (the OOM killer, a hard timeout) left its pool's processes alive for good,
    about 1.2 GB of memory, parented to init; and while the killed job was a zombie (its caller
    reading its output to the end before waiting), the workers took it for alive and held that
    output open, so the caller hung."""
    root = photo_folder(tmp_path / "in", face_photos[:20])
    out = tmp_path / "out"
    job = start_job(["mask", str(root), str(out), "--quiet", "--batch-size", "1", "--workers", "1",
                     "--rows-per-shard", "1"])
    pool = []
    try:
        wait_for(lambda: list((out / "manifest").rglob("*.parquet")), 240, "the first shard", job)
        pool = psutil.Process(job.pid).children(recursive=True)
        assert any("forkserver" in " ".join(p.cmdline()) for p in pool), [p.cmdline() for p in pool]
        job.send_signal(signal.SIGKILL)
        if reaped:
            job.wait(timeout=30)
        else:
            wait_for(lambda: psutil.Process(job.pid).status() == psutil.STATUS_ZOMBIE, 30, "the job to die")
        wait_for(lambda: not [p for p in pool if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], 60,
                 "the pool's processes to end")
    finally:
        job.kill()
        for p in pool:  # whatever is left, so that the test leaves nothing behind either way
            try:
                p.kill()
            except psutil.Error:
                pass


def test_a_worker_process_that_fails_is_not_said_to_be_killed():
    """A worker process that ends with an error status (as one does whose worker code cannot be
    imported) is said to have failed, with its status, not to have been killed or out of memory."""
    import functools
    import time

    import pyarrow as pa

    from jobs.local import run_local

    with pytest.raises(RuntimeError, match=r"^a worker process failed \(exit status 3; its error is printed above, "
                                           r"and with none printed it was ended from outside: killed, or out of "
                                           r"memory\); the batches that finished are written"):
        run_local([pa.table({"key": ["a.jpg"]})], functools.partial(os._exit, 3), write=None, faces_column="masked",
                  batch_size=1, rows_per_shard=1, processes=2, started=time.perf_counter(), tally=Tally())


def test_a_script_without_a_main_guard_runs_its_job_once(dataset, tmp_path):
    """The worker processes must not import the caller's script again (it would start its job again), yet
    a mask style the script defines reaches them (sent by value, as Ray sends it: it was "Can't get
    attribute 'GreyMask' on <module '__main__'>" and a failed pool)."""
    script = tmp_path / "mask_my_photos.py"
    script.write_text("from jobs.augment import run_augment\n"
                      "from maskgen.augment import AugmentOptions\n"
                      "from maskgen.masks import SeedMask\n"
                      "class GreyMask(SeedMask):\n"
                      "    name = 'grey'\n"
                      "    def sample(self, rng, face_type=None):\n"
                      "        return {**super().sample(rng, face_type), 'style': 'grey', 'colour': [128, 128, 128]}\n"
                      f"summary = run_augment({str(dataset)!r}, {str(tmp_path / 'out')!r}, "
                      "AugmentOptions(style=GreyMask()), executor='local')\n"
                      "print('processed', summary.processed)\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["processed 8"]
    faces = read_manifest(str(tmp_path / "out"))
    masked = faces[faces.status == "ok"]
    assert len(masked) >= 4 and set(masked.mask_style) == {"grey"}


def test_workers_see_the_environment_of_the_job_not_of_the_first_one(monkeypatch):
    """The forkserver keeps the environment of the process's first local job: AWS settings exported
    after it (a notebook; a test session whose S3 fixture came later) left the workers of every later
    job without credentials ("Unable to locate credentials")."""
    import functools
    import time

    import pyarrow as pa

    from jobs.local import run_local

    def job():
        def factory():  # sent by value: the worker says what it sees
            raise ValueError(f"MFR_ENV_PROBE={os.environ.get('MFR_ENV_PROBE')}")

        return functools.partial(run_local, [pa.table({"key": ["a.jpg"]})], factory, write=None,
                                 faces_column="masked", batch_size=1, rows_per_shard=1, processes=1,
                                 started=time.perf_counter(), tally=Tally())

    monkeypatch.delenv("MFR_ENV_PROBE", raising=False)
    with pytest.raises(ValueError, match="MFR_ENV_PROBE=None"):
        job()()
    monkeypatch.setenv("MFR_ENV_PROBE", "exported later")
    with pytest.raises(ValueError, match="MFR_ENV_PROBE=exported later"):
        job()()


def test_a_worker_forked_after_its_job_stopped_prints_no_traceback():
    """Ctrl-C (or SIGTERM) as the pool starts: a worker forked just then found the pool's semaphores
    removed and the forkserver printed its FileNotFoundError traceback under the job's "interrupted"
    line (8 of 10 tries at 1.5-2.4 s into a job). The server's hook (maskgen.preload) is silent on that
    one failure and prints every other one."""
    import subprocess

    from jobs.local import PRELOAD

    assert "maskgen.preload" in PRELOAD
    code = """
import sys, multiprocessing.synchronize as s
import maskgen.preload
lock = s.Lock.__new__(s.Lock)
for fail in (lambda: lock.__setstate__((0, 1, 1, "/mfr-no-such-semaphore")), lambda: open("/mfr-no-such-file")):
    try:
        fail()
    except FileNotFoundError:
        sys.excepthook(*sys.exc_info())
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("Traceback") == 1 and "/mfr-no-such-file" in done.stderr, done.stderr
    assert "synchronize" not in done.stderr


def test_other_pools_of_the_forkserver_keep_the_default_sigterm():
    """The local pool's forkserver ignores SIGTERM (a signal to the job's process group must not end it
    before the job stops its pool), and every process forked from it, another library's pool too (one
    process has one forkserver), gets the default back: they ignored SIGTERM, and `terminate()` left
    them running."""
    import subprocess

    code = """
import multiprocessing as mp, signal, time
if __name__ == "__main__":
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["maskgen.preload"])
    with ctx.Pool(1) as pool:
        print("pool", pool.apply(signal.getsignal, (signal.SIGTERM,)) == signal.SIG_DFL)
    p = ctx.Process(target=time.sleep, args=(60,))
    p.start()
    # terminated once it runs with the default back (a child not yet past its start keeps the
    # forkserver's ignore: 0.5 s was not always enough on a busy machine)
    def ignores_sigterm():
        ignored = open(f"/proc/{p.pid}/status").read().split("SigIgn:")[1].split()[0]
        return int(ignored, 16) & (1 << (signal.SIGTERM - 1))
    deadline = time.time() + 60
    while time.time() < deadline and ignores_sigterm():
        time.sleep(0.05)
    p.terminate()
    p.join(10)
    print("process", p.exitcode)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["pool", "True", "process", "-15"], done.stdout + done.stderr[-2000:]


def test_a_worker_starts_where_signals_cannot_say_who_sent_them():
    """`signal.sigwaitinfo` is Linux's: where there is none (macOS), a worker keeps SIGTERM's default,
    unblocked, as before (its watch thread failed, and the SIGTERM it had blocked could not end it)."""
    import subprocess

    code = """
import os, signal, cloudpickle
del signal.sigwaitinfo
import jobs.local as local
local._start_worker(cloudpickle.dumps(lambda: (lambda batch: batch)), parent=os.getpid())
print(local._failure is None, signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
      signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, []))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # (a SIGTERM left blocked, with no thread to take it, and the pool could not end the worker)
    assert done.stdout.split() == ["True", "True", "True"] and "Traceback" not in done.stderr, \
        done.stdout + done.stderr[-2000:]
