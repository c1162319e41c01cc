"""The augment job on an in-process Ray runtime, local folder and S3 outputs, reruns."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from jobs.augment import output_keys, read_manifest, read_parquet_dir, run_augment
from jobs.storage import open_store
from maskgen.augment import AugmentOptions
from conftest import photo_folder, read_rgb, require_shared
from test_jobs_pipeline import assert_same_figures


@pytest.fixture
def dataset(tmp_path, face_photos):
    """Three real photos of two people, a corrupt file and an empty one."""
    return photo_folder(tmp_path / "in", face_photos[:2] + face_photos[-1:], broken=True)


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
    assert again.processed == 0 and again.skipped == 5 and again.inputs == 5
    assert len(read_manifest(str(out))) == len(read_manifest(str(out)).drop_duplicates(["source_key", "face_index"]))
    # both jobs counted on this process's one progress actor, each apart (the rerun's 5 inputs, not
    # 10), and neither left its counts behind
    from jobs.sink import _BOARD

    assert len(_BOARD) == 1 and ray_runtime.get(next(iter(_BOARD.values())).open_jobs.remote()) == 0


def test_the_progress_board_counts_each_job_apart():
    from jobs.sink import ProgressBoard

    board = ProgressBoard()
    board.list("a", 3, 2, 1)
    board.list("b", 7, 0)
    board.batch("a", 3, 4, {"ok": 2, "no_face": 1})
    board.batch("a", 0, 0, {"ok": 1})
    assert board.get("a") == {"inputs": 5, "skipped": 2, "skipped_failed": 1, "processed": 3, "faces": 4,
                              "statuses": {"ok": 3, "no_face": 1}}
    assert board.get("b")["inputs"] == 7 and board.get("b")["processed"] == 0
    assert board.get("never")["inputs"] == 0 and board.open_jobs() == 2
    board.forget("a")
    assert board.open_jobs() == 1 and board.get("a")["inputs"] == 0
    board.list("a", 1, 0)  # a read task's report that was still on its way when the job ended
    board.batch("a", 1, 1, {"ok": 1})
    assert board.open_jobs() == 1 and board.get("a")["inputs"] == 0


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

    out = tmp_path / "out"

    def kill_the_worker():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            if not list((out / "images").rglob("*.jpg")):  # wait until the job is under way
                time.sleep(0.1)
                continue
            # this job's actor: a descendant of this process (the in-process Ray started its raylet), so
            # no other Ray on the machine is touched (Ray may have started the process before the job: no
            # age check; earlier jobs' pools are gone, Ray Data shuts a pool down when its job ends)
            for proc in psutil.Process().children(recursive=True):
                try:
                    if "AugmentWorker" not in " ".join(proc.cmdline()):
                        continue
                    os.kill(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, psutil.Error):
                    continue
                killed.append(time.time())
                return
            time.sleep(0.3)

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
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


def test_a_large_folder_reaches_the_pool_in_blocks_of_a_few_batches(ray_runtime, face_photos, tmp_path):
    """A read task's rows would reach the pool as one block, which Ray Data gives to one actor: a flat
    folder of thousands of images would be masked by one actor while the others wait. The rows are
    cut into blocks of a few batches as they stream out of the reads, on tasks as light as the reads
    (a whole CPU each would never be free beside a pool and the job would hang: a job runs below)."""
    from jobs.augment import MANIFEST_DIR
    from jobs.inputs import input_listing
    from jobs.source import block_rows, read_grouped

    import cv2

    flat = tmp_path / "flat"
    flat.mkdir()
    for i, photo in enumerate(face_photos[:40]):  # at most 320 px a side: the job below is about blocks
        image = cv2.imread(str(photo))
        scale = min(1.0, 320 / max(image.shape[:2]))
        cv2.imwrite(str(flat / f"{i:02d}-{photo.name}"), cv2.resize(image, None, fx=scale, fy=scale,
                                                                     interpolation=cv2.INTER_AREA))
    photo_folder(flat, face_photos[-3:])  # and a folder of 3 beside the 40 files at the top level
    images, groups, lister, _ = input_listing(str(flat), open_store(tmp_path / "out"), MANIFEST_DIR)
    blocks = read_grouped(groups, lister, rows_per_block=block_rows(1)).map_batches(
        lambda table: {"rows": [table.num_rows]}, batch_size=None, batch_format="pyarrow").take_all()
    sizes = sorted(b["rows"] for b in blocks)
    assert sum(sizes) == 43 and max(sizes) <= block_rows(1) and len(sizes) >= 40 // block_rows(1) + 1, sizes
    # and small blocks are never gathered into one: a job smaller than the pool's actors x 8 batches
    # would then reach fewer actors than the pool has (tried: mfr run's 55 photos went to one actor)
    blocks = read_grouped(groups, lister, rows_per_block=block_rows(8)).map_batches(
        lambda table: {"rows": [table.num_rows]}, batch_size=None, batch_format="pyarrow").take_all()
    assert sorted(b["rows"] for b in blocks) == [3, 40]

    summary = run_augment(str(flat), str(tmp_path / "out"), AugmentOptions(style="random", seed=2), batch_size=1,
                          executor="ray")
    assert summary.processed == 43 and set(summary.statuses) <= {"ok", "no_face"}


def test_augment_from_the_seeds_landmark_csv(ray_runtime, tmp_path):
    """The seed's own CSV as the input manifest: faces masked from its landmarks, no detection, and
    the same black polygon the seed draws."""
    import cv2

    from maskgen.decode import decode_image
    from maskgen.facetype import FaceType
    from maskgen.masks import draw_seed_mask
    from maskgen.seed import read_landmark_csv

    csv_path = require_shared("seed", "landmark", "test.csv")
    sample = require_shared("seed", "sample")
    out = tmp_path / "out"
    summary = run_augment(str(csv_path), str(out), AugmentOptions(style="seed"), images_uri=str(sample))
    assert summary.statuses == {"ok": 3} and summary.faces == 3
    manifest = read_manifest(str(out)).set_index("source_key")
    for row in read_landmark_csv(csv_path):
        got = manifest.loc[row.image_name]
        assert got.source == "manifest" and got.face_type == row.face_type.code and got.mask_style == "seed"
        assert got.landmarks68.tolist() == [round(v, 2) for v in row.landmarks.reshape(-1)]
        expected, _ = draw_seed_mask(decode_image((sample / row.image_name).read_bytes()), row.landmarks,
                                     FaceType.from_code(row.face_type.code), mirror_profiles=False)
        written = cv2.cvtColor(cv2.imread(str(out / got.output_key)), cv2.COLOR_BGR2RGB)
        assert abs(written.astype(int) - expected.astype(int)).mean() < 2.0  # JPEG q95 of the same image


def test_manifest_rows_that_cannot_be_used_are_reported(ray_runtime, dataset, tmp_path):
    good = sorted(str(p.relative_to(dataset)) for p in dataset.rglob("*.jpg") if "broken" not in str(p))
    (dataset / "already").mkdir()
    shutil.copy(dataset / good[0], dataset / "already" / "masked.jpg")
    manifest_csv = dataset / "list.csv"
    manifest_csv.write_text("path,masked\n" + "".join(f"{k},0\n" for k in good) +
                            f"{good[0]},0\n../../outside.jpg,0\nnobody/missing.jpg,0\nalready/masked.jpg,1\n"
                            "nobody/masked.jpg,1\n")  # marked masked, and not there: missing (was already_masked)
    out = tmp_path / "out"
    summary = run_augment(str(manifest_csv), str(out), AugmentOptions(seed=3), batch_size=2)
    assert summary.inputs == len(good) + 5
    assert summary.statuses == {"ok": len(good), "duplicate": 1, "unsafe_path": 1, "missing": 2,
                                "already_masked": 1}
    per_key = read_manifest(str(out)).groupby("source_key")["status"].apply(set).to_dict()
    assert per_key["../../outside.jpg"] == {"unsafe_path"} and per_key["nobody/missing.jpg"] == {"missing"}
    assert per_key["nobody/masked.jpg"] == {"missing"}
    assert per_key[good[0]] == {"ok", "duplicate"} and per_key["already/masked.jpg"] == {"already_masked"}
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert not any("outside" in k or "already" in k or "missing" in k for k in written)
    assert not (tmp_path / "outside.jpg").exists() and not (dataset.parent / "outside.jpg").exists()


def test_an_image_with_no_face_masked_is_its_input_file_byte_for_byte(face_photos, tmp_path):
    """Nothing masked, nothing re-encoded: the output is the input file (a JPEG would otherwise lose a
    generation and its metadata), except one that decoding turned upright by its EXIF orientation,
    which is written upright like every masked image."""
    import io

    from PIL import Image

    folder = tmp_path / "in" / "thumbs"
    folder.mkdir(parents=True)
    thumb = Image.open(face_photos[0]).convert("RGB")
    thumb.thumbnail((24, 16))  # a real photo, smaller than the smallest face masked
    plain, rotated = io.BytesIO(), io.BytesIO()
    thumb.save(plain, "JPEG", quality=80)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    thumb.save(rotated, "JPEG", quality=80, exif=exif.tobytes())
    (folder / "plain.jpg").write_bytes(plain.getvalue())
    (folder / "rotated.jpg").write_bytes(rotated.getvalue())
    out = tmp_path / "out"
    assert run_augment(str(tmp_path / "in"), str(out), executor="local").statuses == {"no_face": 2}
    rows = read_manifest(str(out)).set_index("source_key")
    written = rows.output_key
    assert (out / written["thumbs/plain.jpg"]).read_bytes() == plain.getvalue()
    # the upright size, as a face's row has it (it was null on no_face rows)
    assert list(rows.image_size["thumbs/plain.jpg"]) == [thumb.width, thumb.height]
    assert list(rows.image_size["thumbs/rotated.jpg"]) == [thumb.height, thumb.width]
    upright = Image.open(out / written["thumbs/rotated.jpg"])
    assert upright.getexif().get(0x0112, 1) == 1 and upright.size == (thumb.height, thumb.width)

    # faces found, none masked (each smaller than min_face_size, here the photo's shorter side): the
    # image is untouched too
    photo = tmp_path / "faces" / "p" / face_photos[0].name
    photo.parent.mkdir(parents=True)
    photo.write_bytes(face_photos[0].read_bytes())
    options = AugmentOptions(min_face_size=min(Image.open(photo).size))
    summary = run_augment(str(tmp_path / "faces"), str(tmp_path / "out2"), options, executor="local")
    rows = read_manifest(str(tmp_path / "out2"))
    assert summary.statuses == {"ok": 1} and len(rows) >= 1 and not rows.masked.any()
    assert (tmp_path / "out2" / rows.output_key.iloc[0]).read_bytes() == photo.read_bytes()


def test_a_manifest_gives_several_faces_of_one_image_by_one_row_each(face_photos, detector, predictor, tmp_path):
    """An image with two faces given by landmarks (two rows, one path; a face type for one of them):
    one input, both faces masked from the given points, numbered in row order; a row repeating a face
    already given, or giving another identity, stays a duplicate row of its own."""
    import numpy as np

    from conftest import read_rgb
    from maskgen.seed import LANDMARK_COLUMNS

    for photo in face_photos:  # the first photo with two faces of at least 60 px
        image = read_rgb(photo)
        faces = sorted((f for f in detector.detect(image) if f.width >= 60), key=lambda f: -f.width)[:2]
        if len(faces) == 2:
            break
    else:
        pytest.fail("no photo of ../shared/data/faces has two faces of 60 px")
    points = predictor.predict(image, np.array([f.box for f in faces]))
    folder = tmp_path / "in" / photo.parent.name
    folder.mkdir(parents=True)
    shutil.copy(photo, folder / photo.name)
    key = f"{photo.parent.name}/{photo.name}"

    def row(face: int, face_type: str = "", identity: str = "") -> str:
        return ",".join([key, identity, face_type] + [f"{v:.3f}" for v in points[face].reshape(-1)]) + "\n"

    manifest = tmp_path / "in" / "faces.csv"
    manifest.write_text("path,identity,face_type," + ",".join(LANDMARK_COLUMNS) + "\n" + row(0, "0_0") + row(1)
                        + row(1) + row(0, "", "someone else"))
    out = tmp_path / "out"
    summary = run_augment(str(manifest), str(out), AugmentOptions(style="surgical"), executor="local")
    assert summary.statuses == {"ok": 1, "duplicate": 2} and summary.faces == 2
    rows = read_manifest(str(out))
    given = rows[rows.status == "ok"].sort_values("face_index")
    assert given.face_index.tolist() == [0, 1] and given.masked.all() and set(given.source) == {"manifest"}
    assert given.face_type.iloc[0] == "0_0" and given.face_type.iloc[1]  # given, then classified
    for face, got in zip(points, given.landmarks68):
        assert np.allclose(np.asarray(got).reshape(68, 2), face, atol=0.01)
    assert sorted(rows[rows.status == "duplicate"].input_row) == [f"{key}#3", f"{key}#4"]
    masked = read_rgb(out / given.output_key.iloc[0]).astype(int)
    for face in points:  # a mask over each face's mouth, not just the first one
        x, y = face[48:68].mean(axis=0).astype(int)
        assert np.abs(masked[y - 5:y + 5, x - 5:x + 5] - image[y - 5:y + 5, x - 5:x + 5]).mean() > 20

    # a bad face row refuses the image (--strict fails); fixed, --retry-failed masks both faces, and the
    # output holds the image's two face rows only (the bad row was a 'duplicate', and after the fix the
    # second face was never masked)
    bad = row(1).rsplit(",", 1)[0] + ",\n"
    manifest.write_text("path,identity,face_type," + ",".join(LANDMARK_COLUMNS) + "\n" + row(0, "0_0") + bad)
    fixed = tmp_path / "fixed"
    summary = run_augment(str(manifest), str(fixed), AugmentOptions(style="surgical"), executor="local")
    assert summary.statuses == {"bad_row": 1} and summary.faces == 0
    assert "part_67_y the first" in read_manifest(str(fixed)).message.iloc[0]
    manifest.write_text("path,identity,face_type," + ",".join(LANDMARK_COLUMNS) + "\n" + row(0, "0_0") + row(1))
    summary = run_augment(str(manifest), str(fixed), AugmentOptions(style="surgical"), executor="local",
                          retry_failed=True)
    assert summary.statuses == {"ok": 1} and summary.faces == 2
    rows = read_manifest(str(fixed))
    assert rows.status.tolist() == ["ok", "ok"] and sorted(rows.face_index) == [0, 1]


def test_reading_the_manifest_of_something_that_is_not_an_augment_output_says_so(tmp_path, bucket):
    """A mistyped path (or an embed output) read as a manifest of no rows, as if the job did nothing."""
    (tmp_path / "embed-output" / "shards").mkdir(parents=True)
    for uri, manifest in ((str(tmp_path / "no-such-output"), tmp_path / "no-such-output" / "manifest"),
                          (str(tmp_path / "embed-output"), tmp_path / "embed-output" / "manifest"),
                          (f"s3://{bucket}/nothing", f"s3://{bucket}/nothing/manifest")):
        with pytest.raises(FileNotFoundError, match=f"no manifest under {manifest}: not the output of `mfr mask`"):
            read_manifest(uri)
    # a shard that is not Parquet (cut short, or another tool's file): pyarrow named "<Buffer>", not the file
    shard = tmp_path / "cut" / "manifest" / "g=0" / "part-1.parquet"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b"PAR1 cut short")
    with pytest.raises(ValueError, match=f"{shard} is not a readable Parquet shard"):
        read_manifest(str(tmp_path / "cut"))


def test_every_face_row_is_kept_and_scored_once_wherever_the_shards_are_cut(ray_runtime, tmp_path):
    """An image's face rows cut between two shards: with fewer rows per shard than faces the parts
    shared a name and overwrote each other (faces lost from the manifest), and `mfr run` scored the
    part without the embedded face as a probe with no face (AUC 0.625 instead of 1.0). Ray's shard
    writers take batches cut anywhere; the local pool cuts where an image's rows begin."""

    from jobs.cli import main

    faces = require_shared("faces")
    photos = [faces / "person_01" / "img1.jpg", faces / "person_01" / "img2.jpg",
              faces / "person_02" / "img12.jpg", faces / "person_02" / "img54.jpg"]  # img54: 3 faces
    dataset = photo_folder(tmp_path / "in", photos)

    def job(command: str, executor: str, rows: int, *more: str):
        out = tmp_path / f"{command}-{executor}-{rows}{''.join(more)}"
        assert main([command, str(dataset), str(out), "--quiet", "--executor", executor, "--rows-per-shard",
                     str(rows), "--batch-size", "4", *more]) == 0
        return out

    for executor in ("ray", "local"):
        masked = job("mask", executor, 1)
        manifest = read_manifest(str(masked))
        assert sorted(manifest[manifest.source_key == "person_02/img54.jpg"].face_index) == [0, 1, 2], executor
        assert len(manifest) == 6 and not manifest.duplicated(["source_key", "face_index"]).any()
        if executor == "ray":  # each of img54's rows in a shard of its own: a job stopped before the last
            lost = _stop_before_a_part(masked, "person_02/img54.jpg")
            assert main(["mask", str(dataset), str(masked), "--quiet", "--dry-run"]) == 0
            assert _files(masked) == lost  # a dry run changes nothing
            # a reader sees the image whole or not at all (`embed --from-augment` embedded its part)
            assert "person_02/img54.jpg" not in set(read_manifest(str(masked)).source_key)
            assert main(["mask", str(dataset), str(masked), "--quiet", "--executor", "ray"]) == 0
            again = read_manifest(str(masked))
            assert sorted(again[again.source_key == "person_02/img54.jpg"].face_index) == [0, 1, 2]
            assert len(again) == 6 and not again.duplicated(["source_key", "face_index"]).any()
    # the local pool never cuts an image's rows: Ray's writers, cut inside them, must score what it scores
    outputs = {executor: job("run", executor, 2) for executor in ("ray", "local")}
    ray, local = (json.loads((outputs[executor] / "report" / "report.json").read_text())["results"][0]
                  for executor in ("ray", "local"))
    assert_same_figures(ray, local)
    assert local["identification"]["probes"] == 2 and local["verification"]["auc"] == 1.0
    # img54 (3 rows) is cut at 2 rows a shard. A rerun of the finished run touches nothing (each
    # embedding folder's record counts the faces it gets: one of three with `--face center`, where a
    # record of "1 of 3" had every rerun do the image again); after a stop before the write of its
    # later part, the rerun does the image again, no row doubled or left from the stopped write
    folders = ("masked/manifest", "embeddings/unmasked/shards", "embeddings/masked/shards")
    for face in ("center", "all"):
        out = outputs["ray"] if face == "center" else job("run", "ray", 2, "--face", "all")
        finished = {folder: _rows_under(out / folder) for folder in folders}
        stamps = _stamps(out)
        rerun = ["run", str(dataset), str(out), "--quiet", "--executor", "ray", "--rows-per-shard", "2", "--face", face]
        assert main(rerun) == 0 and _stamps(out) == stamps, face
        _stop_before_a_part(out, "person_02/img54.jpg")
        assert main(rerun) == 0
        for folder in folders:
            rows = _rows_under(out / folder)
            assert not rows.duplicated(["input_row", "face_index"]).any(), (face, folder)
            assert rows.equals(finished[folder]), (face, folder)
        if face == "center":  # the default: img54's subject only, not its two bystanders
            assert len(finished["embeddings/masked/shards"].query("input_row == 'person_02/img54.jpg'")) == 1
            assert all(rows.equals(_rows_under(outputs["local"] / folder)) for folder, rows in finished.items())
            ray = json.loads((out / "report" / "report.json").read_text())["results"][0]
            assert_same_figures(ray, local)
        else:  # every face embedded: parts of img54 in the embedding folders too
            assert len(finished["embeddings/masked/shards"].query("input_row == 'person_02/img54.jpg'")) == 3


def test_a_failed_face_in_one_part_of_a_cut_image_is_done_again_whole(ray_runtime, tmp_path, capsys):
    """Ray cut an image's two face rows into two shards, the second face failed (its model gave NaN):
    the summary counted the image by its first part (`ok`, --strict passed), and --retry-failed dropped that part's shard while the image's record still counted it, so the image
    read as done, nothing was embedded again and the failure was gone from the output."""
    from conftest import nan_on_bright_model, two_faces_one_bright
    from jobs.cli import main

    dataset = two_faces_one_bright(tmp_path / "in" / "p" / "two.jpg", require_shared("faces")).parent.parent
    model = str(nan_on_bright_model(tmp_path / "nan.onnx"))
    out = tmp_path / "emb"
    embed = ["embed", str(dataset), str(out), "--model", model, "--face", "all", "--executor", "ray",
             "--rows-per-shard", "1", "--quiet"]
    # the first run counts the image failed: counted by the part holding its first row, it was `ok`
    # and --strict passed
    assert main([*embed, "--strict"]) == 1
    capsys.readouterr()
    assert len(list(out.rglob("*.parquet"))) == 2  # the image's rows in two shards
    rows = _rows_under(out)
    assert list(zip(rows.face_index, rows.status)) == [(0, "ok"), (1, "error")]
    assert main([*embed, "--retry-failed", "--dry-run"]) == 0 and _rows_under(out).equals(rows)
    assert "0 already done; 1 to process" in capsys.readouterr().out  # (was: 1 already done, 0 to process)
    stamps = _stamps(out)
    assert main([*embed, "--retry-failed"]) == 0
    assert _rows_under(out).equals(rows)  # done again: the failed face is still there, once
    assert _stamps(out) != stamps and main(embed) == 0 and _rows_under(out).equals(rows)


def test_the_summary_counts_an_image_cut_into_batches_once_all_its_parts_are_in():
    """Each write batch returns its counts; an image whose rows two batches share is counted once,
    with the worst status of its rows in any of them, whichever batch comes first."""
    import pyarrow as pa

    from jobs.sink import JobSummary, input_counts

    def batch(rows):
        names, statuses, firsts, totals = zip(*rows)
        return pa.table({"input_row": list(names), "status": list(statuses), "_first": list(firsts),
                         "_rows": pa.array(totals, pa.int32())})

    # an image's status is its first failed row's, whatever its fine rows and later failures say
    mixed = batch([("d.jpg", "ok", True, 3), ("d.jpg", "undecodable", False, 3), ("d.jpg", "error", False, 3)])
    assert input_counts(mixed) == ({"undecodable": 1}, {})
    first = batch([("a.jpg", "ok", True, 1), ("b.jpg", "ok", True, 3), ("b.jpg", "ok", False, 3)])
    then = batch([("b.jpg", "error", False, 3), ("c.jpg", "no_face", True, 1)])
    assert input_counts(first) == ({"ok": 1}, {"b.jpg": [3, 2, "ok"]})
    for order in ((first, then), (then, first)):
        summary = JobSummary()
        for table in order:
            counts, cuts = input_counts(table)
            summary.add({"inputs": sum(counts.values()), "faces": 0, "shards": 1,
                         "statuses": json.dumps(counts), "cuts": json.dumps(cuts)})
        assert (summary.processed, summary.statuses) == (3, {"ok": 1, "error": 1, "no_face": 1})
        assert not summary.cut_parts
    summary = JobSummary()  # a part that never came: counted by the parts that did
    counts, cuts = input_counts(first)
    summary.add({"inputs": 1, "faces": 0, "shards": 1, "statuses": json.dumps(counts), "cuts": json.dumps(cuts)})
    summary.finish()
    assert (summary.processed, summary.statuses) == (2, {"ok": 2})


def _stamps(folder) -> dict:
    return {p: p.stat().st_mtime_ns for p in _files(folder)}


def _files(folder) -> set:
    return {p for p in folder.rglob("*") if p.is_file()}


def _rows_under(folder):
    """Every row of a shard folder, sorted: what a reader of the output sees."""
    import pandas as pd
    import pyarrow.parquet as pq

    rows = pd.concat([pq.read_table(p).to_pandas() for p in sorted(folder.rglob("*.parquet"))], ignore_index=True)
    return rows[["input_row", "face_index", "status"]].sort_values(["input_row", "face_index"], ignore_index=True)


def _stop_before_a_part(output, image: str) -> set:
    """Take out of `output` what one write task wrote of `image`'s group: the manifest shard of a
    later part of its rows (with its record of the cut, `jobs.sink.CUT_KEY`, and without face 0),
    and the embedding shards (`mfr run`) holding faces of that part, as if the job had stopped before
    that task wrote them (a task writes a group's embedding shards, then its manifest shard).
    Return the files left."""
    import pyarrow.parquet as pq

    from jobs.sink import shard_cuts

    def faces(table) -> set:
        return {f for k, f in zip(table.column("input_row").to_pylist(), table.column("face_index").to_pylist())
                if k == image}

    shards = {p: pq.read_table(p) for p in output.rglob("*.parquet")}
    later = next(p for p, t in shards.items() if "manifest" in p.parts and image in shard_cuts(t) and 0 not in faces(t))
    for p, t in shards.items():
        if p == later or ("manifest" not in p.parts and faces(t) & faces(shards[later])):
            p.unlink()
    return _files(output)


def test_a_masked_image_is_written_in_kind_grey_or_with_its_colour_profile(face_photos, tmp_path):
    """A grey photo's masked image and crops are grey, one channel, with a grey mask (a coloured
    mask on a grey photo is no photo anyone took); a colour photo keeps its ICC profile, so a
    Display P3 phone photo's colours still read as they did, and its mask stays in colour."""
    import io

    from PIL import Image, ImageCms

    photo = Image.open(face_photos[0]).convert("RGB")
    photo.thumbnail((640, 640))
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    folder = tmp_path / "in" / "p"
    folder.mkdir(parents=True)
    grey_jpeg, profiled_jpeg, grey_png = io.BytesIO(), io.BytesIO(), io.BytesIO()
    photo.convert("L").save(grey_jpeg, "JPEG", quality=92)
    photo.save(profiled_jpeg, "JPEG", quality=92, icc_profile=profile)
    photo.convert("L").save(grey_png, "PNG")
    (folder / "grey.jpg").write_bytes(grey_jpeg.getvalue())
    (folder / "profiled.jpg").write_bytes(profiled_jpeg.getvalue())
    (folder / "grey.png").write_bytes(grey_png.getvalue())
    out = tmp_path / "out"
    options = AugmentOptions(style="surgical", outputs="both", seed=3)
    assert run_augment(str(tmp_path / "in"), str(out), options, executor="local").statuses == {"ok": 3}
    rows = read_manifest(str(out))
    masked = rows[rows.masked]
    assert set(masked.source_key) == {"p/grey.jpg", "p/profiled.jpg", "p/grey.png"}
    for _, row in masked.iterrows():
        image, crop = Image.open(out / row.output_key), Image.open(out / row.crop_key)
        if "grey" in row.source_key:
            assert image.mode == crop.mode == "L"
        else:
            assert image.mode == crop.mode == "RGB"
            assert image.info.get("icc_profile") == crop.info.get("icc_profile") == profile
    # a grey photo's mask is grey: its masked image differs from the photo where the mask is
    grey = np.asarray(Image.open(out / masked.set_index("source_key").output_key["p/grey.png"]), dtype=np.int16)
    assert grey.ndim == 2 and (np.abs(grey - np.asarray(photo.convert("L"), dtype=np.int16)) > 30).sum() > 500


def test_job_functions_refuse_bad_arguments_before_any_output(dataset, tmp_path):
    """From Python: masked_rule="[" failed in each worker (a bare re.error), lists of one or three files
    at an index or after every image was embedded, face="all" ran where --face refuses it, "no" was
    True (accept_licence="no" accepted a licence, distributed="no" started Ray), model=5 a pathlib
    TypeError. Each is refused before the output is made."""
    from jobs.embed import read_shards, run_embed
    from jobs.evaluate import run_evaluate
    from jobs.run import run_pipeline

    out = tmp_path / "out"
    calls = [
        (lambda: run_embed(str(dataset), str(out), masked=False, masked_rule="["), "not a regular expression"),
        (lambda: run_embed(str(dataset), str(out), masked=False, masked_rule=5), "masked rule is 'seed' or"),
        (lambda: run_embed(str(dataset), str(out), masked=False, accept_licence="no"), "accept_licence is True"),
        (lambda: run_evaluate(str(dataset), str(out), lists=("g.csv",)), "lists are two files"),
        (lambda: run_evaluate(str(dataset), str(out), lists="g.csv"), "lists are two files"),
        (lambda: run_evaluate(str(dataset), str(out), face="all"), "face must be 'center' or 'largest'"),
        (lambda: run_evaluate(str(dataset), str(out), input_kind="bogus"), "input kind must be one of"),
        (lambda: run_evaluate(str(dataset), str(out), executor="cluster"), "executor must be one of"),
        (lambda: run_augment(str(dataset), str(out), retry_failed="no"), "retry_failed is True or False"),
        (lambda: run_pipeline(str(dataset), str(out), model=5), "models are built-in models' names"),
        (lambda: run_pipeline(str(dataset), str(out), fuse="yes"), "fuse is True or False"),
        # an unknown encoding (a bare LookupError once the output was made), a mode in a list
        # (unhashable), a local limit that failed after the job, a progress that was no function
        (lambda: run_augment(str(dataset), str(out), manifest_encoding="bogus-enc"), "not a text encoding Python"),
        (lambda: run_embed(str(dataset), str(out), masked=False, manifest_encoding=5), "manifest_encoding is an "),
        (lambda: run_pipeline(str(dataset), str(out), manifest_encoding="bogus-enc"), "not a text encoding Python"),
        (lambda: run_embed(str(dataset), str(out), masked=False, mode=["flip"]), "unknown matching mode \\['flip'\\]"),
        (lambda: run_pipeline(str(dataset), str(out), modes=[["flip"]]), "unknown matching mode"),
        (lambda: run_pipeline(str(dataset), str(out), local_max_inputs="abc"), "local_max_inputs must be a whole"),
        (lambda: run_augment(str(dataset), str(out), local_max_inputs=0), "local_max_inputs must be a whole"),
        (lambda: run_augment(str(dataset), str(out), progress=5), "progress is a function the job calls"),
        (lambda: read_shards(str(out), with_failures="no"), "with_failures is True or False"),
        (lambda: read_shards(str(out), where={"model_id": "m"}), "where is a function of a shard table's columns"),
    ]
    for call, why in calls:
        with pytest.raises(ValueError, match=why):
            call()
        assert not out.exists(), why


def test_model_objects_go_to_ray_tasks_by_value(ray_runtime, detector, predictor, face_photos):
    """The Python API in a user's own Ray code: an Augmenter or Embedder made on the driver and given
    to a task (or captured by a `map_batches` function) was "cannot pickle 'InferenceSession' object".
    Each model object pickles as the arguments it was made with and is made again in the worker."""
    import pickle

    from conftest import read_rgb
    from maskgen.augment import Augmenter
    from maskgen.yunet import YuNet
    from recog.embed import Embedder

    image = read_rgb(face_photos[0])
    augmenter = Augmenter(AugmentOptions(style="surgical", seed=3), detector=detector, predictor=predictor)
    embedder = Embedder("sface", device="cpu")
    faces = detector.detect(image)

    @ray_runtime.remote(num_cpus=0.5)
    def in_a_worker(augmenter, embedder, image):
        import os

        found = augmenter.detector.detect(image)
        return os.getpid(), augmenter.augment(image, "p/a.jpg").image, found, embedder.embed_faces(image, found)

    pid, masked, found, vectors = ray_runtime.get(in_a_worker.remote(augmenter, embedder, image))
    import os

    assert pid != os.getpid()
    np.testing.assert_array_equal(masked, augmenter.augment(image, "p/a.jpg").image)
    assert [f.box for f in found] == [f.box for f in faces]
    np.testing.assert_allclose(vectors, embedder.embed_faces(image, faces), atol=1e-5)
    # one detector shared by the augmenter's parts stays one; YuNet and the predictor travel too
    returned = pickle.loads(pickle.dumps(augmenter))
    assert returned.finder.detector("mtcnn") is returned.detector and returned.eye_locator.mtcnn is returned.detector
    yunet = YuNet()
    assert [f.box for f in pickle.loads(pickle.dumps(yunet)).detect(image)] == [f.box for f in yunet.detect(image)]
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(predictor)).predict(image, faces), predictor.predict(image, faces))
    # what a user sets after making it travels (a flipped embedder came back plain); copy.copy shares the
    # model, as before (it loaded a new session)
    import copy

    embedder.flip = True
    travelled = pickle.loads(pickle.dumps(embedder))
    assert travelled.flip
    np.testing.assert_allclose(travelled.embed_faces(image, faces), embedder.embed_faces(image, faces), atol=1e-5)
    shallow = copy.copy(embedder)
    assert shallow.flip and shallow.session is embedder.session


def test_mask_turned_finds_a_photo_upside_down_and_its_output_keeps_the_setting(tmp_path, capsys):
    """`mfr mask --turned`: a photo stored upside down is masked over its mouth (the manifest says
    how the face was turned); the setting is the output's, so a rerun without it is refused, and an
    output made without it (as every output made before it was) reruns as before."""
    import cv2

    from jobs.cli import main

    photo = require_shared("faces", "person_01", "img1.jpg")
    dataset = tmp_path / "in" / "p"
    dataset.mkdir(parents=True)
    shutil.copy(photo, dataset / "upright.jpg")
    cv2.imwrite(str(dataset / "upside-down.jpg"), cv2.rotate(cv2.imread(str(photo)), cv2.ROTATE_180))
    out = tmp_path / "out"
    args = ["mask", str(dataset.parent), str(out), "--executor", "local", "--quiet"]
    assert main([*args, "--turned"]) == 0
    rows = read_manifest(str(out)).set_index("source_key")
    assert rows.loc["p/upside-down.jpg", "source"] == "mtcnn+turned180" and rows.masked.all()
    assert rows.loc["p/upright.jpg", "source"] == "mtcnn"
    capsys.readouterr()
    assert main(args) == 2 and "finder.turned=True; this run asks finder.turned=not set" in capsys.readouterr().err
    assert main([*args, "--turned", "--dry-run"]) == 0 and "turned on" in capsys.readouterr().out
    plain = tmp_path / "plain"
    assert main(["mask", str(dataset.parent), str(plain), "--executor", "local", "--quiet"]) == 0
    # recorded as outputs made before the option were
    assert "turned" not in json.loads((plain / "_mfr_settings.json").read_text())["settings"]["finder"]
    assert main(["mask", str(dataset.parent), str(plain), "--executor", "local", "--quiet"]) == 0
    assert main(["embed", str(out), str(tmp_path / "emb"), "--from-augment", "--turned"]) == 2
    assert "--turned does not apply with --from-augment" in capsys.readouterr().err


def test_mask_leave_worn_masks_leaves_a_photo_of_people_in_masks_as_it_is(tmp_path, capsys):
    """`mfr mask --leave-worn-masks`: a real-world photo of a person in a mask is `already_masked`,
    written as its input file, with no crop and its row saying how little of the lower face is skin;
    a press photo beside it is masked. The setting is the output's (a rerun without it is refused),
    the dry run shows it, and --strict passes (leaving a worn mask is not a failure)."""
    from jobs.cli import main

    dataset = tmp_path / "in"
    for folder, photo in (("wild", require_shared("masked_wild", "0001_0000.jpg")),
                          ("press", require_shared("faces", "person_01", "img1.jpg"))):
        (dataset / folder).mkdir(parents=True)
        shutil.copy(photo, dataset / folder / photo.name)
    out = tmp_path / "out"
    args = ["mask", str(dataset), str(out), "--executor", "local", "--quiet", "--strict"]
    assert main([*args, "--leave-worn-masks", "--dry-run"]) == 0
    assert "worn masks left (lower_skin_max 0.3, upper_skin_min 0.3)" in capsys.readouterr().out
    assert main([*args, "--leave-worn-masks"]) == 0
    rows = read_manifest(str(out)).set_index("source_key")
    wild = rows.loc["wild/0001_0000.jpg"]
    assert wild.status == "already_masked" and wild.message.startswith("left as it is: every face found (1) wears a mask")
    assert (out / "images" / "wild" / "0001_0000.jpg").read_bytes() == (dataset / "wild" / "0001_0000.jpg").read_bytes()
    assert not (out / "crops" / "wild").exists()
    assert rows.loc["press/img1.jpg", "status"] == "ok" and rows.loc["press/img1.jpg", "masked"]
    capsys.readouterr()
    assert main(args) == 2
    assert "worn_masks.lower_skin_max=0.3" in capsys.readouterr().err


def person_in_a_mask_beside_a_bystander(folder, bystander_width: int = 150):
    """`folder/personX/group.png`: X in a real mask (masked_wild) in the centre, a bare bystander (a
    press photo's face, `bystander_width` px with its margin) at the left."""
    import cv2

    from maskgen.finder import FaceFinder, FinderOptions

    wild, press = (read_rgb(require_shared(*parts)) for parts in
                   (("masked_wild", "0001_0000.jpg"), ("faces", "person_01", "img1.jpg")))
    x1, y1, x2, y2 = map(int, max(FaceFinder(FinderOptions()).find(press), key=lambda f: f.width).box)
    pad = int(0.4 * (x2 - x1))
    side = press[max(0, y1 - pad):y2 + pad, max(0, x1 - pad):x2 + pad]
    side = cv2.resize(side, (bystander_width, int(bystander_width * side.shape[0] / side.shape[1])))[:260]
    canvas = np.full((300, 640, 3), 200, np.uint8)
    canvas[20:276, 224:416] = cv2.resize(wild, (192, 256))  # X in the centre
    canvas[40:40 + side.shape[0], 10:10 + bystander_width] = side  # the bystander at the left
    (folder / "personX").mkdir(parents=True)
    cv2.imwrite(str(folder / "personX" / "group.png"), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    return folder


def embedded_rows(output):
    return [r for table in read_parquet_dir(open_store(str(output)), "shards") for r in table.to_pylist()]


def test_embed_from_augment_does_not_put_a_bystander_in_place_of_a_person_in_a_mask(tmp_path):
    """A photo of person X in a real mask, a bare bystander at its side: `mfr mask --leave-worn-masks`
    masks only the bystander, and `mfr embed --from-augment --masked` (`--face center`) must not embed
    the bystander as X (it chose among the masked faces only): the image's row says X wears a mask.
    With `--face all`, an image whose only other face was too small to mask says so too (it read
    "no masked face")."""
    from jobs.cli import main
    from jobs.embed import run_embed
    from maskgen.worn import WornMaskCheck

    dataset = person_in_a_mask_beside_a_bystander(tmp_path / "in")
    out, emb = tmp_path / "out", tmp_path / "emb"
    assert main(["mask", str(dataset), str(out), "--leave-worn-masks", "--executor", "local", "--quiet"]) == 0
    faces = read_manifest(str(out))
    faces = faces.assign(left=[box[0] for box in faces.box]).sort_values("left")
    assert faces.masked.tolist() == [True, False]  # the bystander (at the left) masked, X left as X is
    assert main(["embed", str(out), str(emb), "--from-augment", "--masked", "--executor", "local", "--quiet"]) == 0
    rows = embedded_rows(emb)
    assert [(r["face_index"], r["status"]) for r in rows] == [(-1, "already_masked")]
    assert "the face --face center chooses, wears a mask already" in rows[0]["message"]
    # the bystander too small to mask (36 px against min_face_size 40), X wearing a mask (57 px)
    small = person_in_a_mask_beside_a_bystander(tmp_path / "small", bystander_width=50)
    run_augment(str(small), str(tmp_path / "out2"), AugmentOptions(min_face_size=40, worn_masks=WornMaskCheck()),
                executor="local")
    notes = sorted(read_manifest(str(tmp_path / "out2")).message.str.split(" [(]").str[0])
    assert notes[0] == "mask not drawn: wears a mask already" and notes[1].startswith("smaller than min_face_size")
    run_embed(str(tmp_path / "out2"), str(tmp_path / "emb2"), from_augment=True, masked=True, face="all",
              executor="local")
    rows = embedded_rows(tmp_path / "emb2")
    assert [(r["face_index"], r["status"]) for r in rows] == [(-1, "already_masked")]
    assert rows[0]["message"].startswith("face ") and " wears a mask already" in rows[0]["message"]
