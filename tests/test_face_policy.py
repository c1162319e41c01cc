"""Which face is embedded: on an LFW-style crop (the subject centred, a bystander cut off at the
border and larger), the default embeds the subject; `largest` would not; shards say which face."""

from __future__ import annotations

import shutil
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT
from maskgen.boxes import iou_matrix
from maskgen.detect import Face
from maskgen.finder import FaceFinder, FinderOptions, select_faces
from recog.embed import Embedder

sys.path.insert(0, str(ROOT / "bench"))
from bench_face_policy import centred_crop  # noqa: E402


@pytest.fixture(scope="module")
def bystander_crops(shared_data, detector, detected):
    """LFW-style crops of shared photos in which the largest face found is not the centred subject."""
    finder = FaceFinder(FinderOptions.for_inputs("photos"), mtcnn=detector)
    out = []
    for folder in ("faces", "faces_mit", "masked_wild"):
        for path in sorted((shared_data / folder).rglob("*.jpg")):
            image, faces = detected(path)
            for face in faces if len(faces) > 1 else []:
                if max(face.width, face.height) < 30:
                    continue
                crop, subject = centred_crop(image, face.box, 3.0)
                found = finder.find(crop)
                largest = found[select_faces(found, crop.shape, "largest")[0]] if found else None
                if largest is not None and iou_matrix(np.array([largest.box]), np.array([subject]))[0, 0] < 0.5:
                    out.append((crop, subject))
    return out


def test_the_default_embeds_the_centred_subject_not_the_larger_bystander(bystander_crops, detector,
                                                                        ray_runtime, tmp_path):
    import pandas as pd

    from jobs.embed import run_embed

    assert len(bystander_crops) >= 3, "the shared photos give LFW-style crops with a larger bystander"
    finder = FaceFinder(FinderOptions.for_inputs("photos"), mtcnn=detector)
    right = 0
    folder = tmp_path / "lfw" / "p"
    folder.mkdir(parents=True)
    for k, (crop, subject) in enumerate(bystander_crops):
        found = finder.find(crop)
        pick = found[select_faces(found, crop.shape)[0]]
        right += iou_matrix(np.array([pick.box]), np.array([subject]))[0, 0] >= 0.5
        cv2.imwrite(str(folder / f"{k:03d}.png"), crop[:, :, ::-1])
    assert right >= 0.8 * len(bystander_crops), (right, len(bystander_crops))
    # through the job: the shard row's box is the subject's, and says where the face came from
    assert run_embed(str(tmp_path / "lfw"), str(tmp_path / "emb"), masked=False).processed == len(bystander_crops)
    shards = pd.concat(pd.read_parquet(p) for p in (tmp_path / "emb" / "shards").rglob("*.parquet"))
    assert len(shards) == len(bystander_crops) and set(shards.status) == {"ok"}
    hits = 0
    embedder = Embedder("sface", device="cpu")
    for row in shards.itertuples():
        crop, subject = bystander_crops[int(row.key.split("/")[-1][:3])]
        hits += iou_matrix(np.array([row.box]), np.array([subject]))[0, 0] >= 0.5
        assert len(row.landmarks5) == 10 and row.source == "mtcnn" and row.alignment == "five-point"
        np.testing.assert_allclose(row.aligned5, row.landmarks5, atol=0.01)  # aligned with the detected points
        assert row.score > 0.5
        # the recorded points make the embedded crop again (the unrounded ones were used: 1e-3 apart)
        again = embedder.embed_crops(embedder.align(crop, [np.reshape(row.aligned5, (5, 2))]))[0]
        assert np.abs(again - row.embedding).max() < 1e-5
    assert hits == right


def test_policies_on_constructed_faces():
    subject = Face((100, 100, 150, 160), 0.99)           # centred, smaller
    bystander = Face((0, 60, 90, 200), 0.99)             # at the border, larger
    faint = Face((110, 110, 140, 150), 0.2)              # centred, unsure
    faces = [bystander, subject, faint]
    assert select_faces(faces, (250, 250, 3), "largest") == [0]
    assert select_faces(faces, (250, 250, 3), "center") == [1]
    assert select_faces(faces, (250, 250, 3), "all") == [0, 1, 2]
    assert select_faces([], (250, 250, 3)) == []
    with pytest.raises(ValueError, match="face policy"):
        select_faces(faces, (250, 250, 3), "first")


def test_run_refuses_a_face_policy_it_does_not_have(tmp_path):
    """(`mfr run`'s default embeds one face of img54.jpg, `--face all` its three: both on Ray in
    tests/test_jobs_augment.py::test_every_face_row_is_kept_and_scored_once_wherever_the_shards_are_cut.)"""
    from jobs.run import run_pipeline

    with pytest.raises(ValueError, match="face must be one of"):
        run_pipeline(str(tmp_path / "in"), str(tmp_path / "x"), face="first")
    assert not (tmp_path / "x").exists()


def test_embed_from_an_augment_output_chooses_its_faces_as_from_images(shared_data, tmp_path, capsys):
    """`mfr mask` masks every face (bystanders too) by default; `embed --from-augment` embedded every
    masked face, so the README's mask -> embed -> score path counted two bystanders of img54.jpg as
    genuine probes of person_02 (TAR@FAR=0.1 90 % where `mfr run` gave 100 %). It now keeps the face
    `--face` names in each image, as embedding from the images does, from the image sizes the
    manifest records."""
    import shutil

    from jobs.augment import read_manifest, run_augment
    from jobs.embed import read_shards, run_embed

    group = shared_data / "faces" / "person_02" / "img54.jpg"
    dataset = tmp_path / "dataset" / "person_02"
    dataset.mkdir(parents=True)
    shutil.copy(group, dataset / group.name)
    run_augment(str(tmp_path / "dataset"), str(tmp_path / "masked"), executor="local")
    manifest = read_manifest(str(tmp_path / "masked"))
    assert manifest.masked.sum() >= 3 and manifest.image_size.map(list).map(tuple).nunique() == 1
    from maskgen.decode import decode_image

    height, width = decode_image(group.read_bytes()).shape[:2]
    assert list(manifest.image_size.iloc[0]) == [width, height]
    faces = {}
    for face in ("center", "all"):
        run_embed(str(tmp_path / "masked"), str(tmp_path / face), masked=True, from_augment=True, face=face,
                  executor="local")
        faces[face] = read_shards(str(tmp_path / face))[0]
    direct = run_embed(str(tmp_path / "dataset"), str(tmp_path / "direct"), masked=False, executor="local")
    assert direct.faces == 1 and len(faces["center"]) == 1 and len(faces["all"]) == manifest.masked.sum()
    centred = read_shards(str(tmp_path / "direct"))[0]
    assert faces["center"].box.map(list).iloc[0] == centred.box.map(list).iloc[0]  # the same face as from the image
    # an augment output's faces wear its masks: `--from-augment` alone marked them unmasked, and `mfr
    # score` over them and an unmasked gallery read "masked probes vs unmasked gallery" of masked faces
    # on both sides; the command line's --from-augment implies --masked, Python's call says to pass it
    from jobs.cli import main

    assert main(["embed", str(tmp_path / "masked"), str(tmp_path / "implied"), "--from-augment", "--executor",
                 "local", "--quiet"]) == 0
    assert read_shards(str(tmp_path / "implied"))[0].masked.tolist() == [True]
    assert main(["embed", str(tmp_path / "masked"), str(tmp_path / "not-masked"), "--from-augment", "--no-masked",
                 "--executor", "local", "--quiet"]) == 2
    assert "--no-masked (or `masked = false` in a --config file) does not apply" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"from_augment embeds an augment output's masked faces: pass masked=True"):
        run_embed(str(tmp_path / "masked"), str(tmp_path / "unmarked"), masked=False, from_augment=True)
    assert not (tmp_path / "unmarked").exists()
    # an output an earlier version made that way (its record says masked=False): its rerun is refused
    # as what it is, not with "run it with the same settings", which no option gives any more
    import json

    record_path = tmp_path / "implied" / "_mfr_embed_settings.json"
    record = json.loads(record_path.read_text())
    record["settings"]["masked"] = False
    record_path.write_text(json.dumps(record))
    for dry in ([], ["--dry-run"]):
        assert main(["embed", str(tmp_path / "masked"), str(tmp_path / "implied"), "--from-augment", "--executor",
                     "local", "--quiet", *dry]) == 2
        assert "was embedded with --from-augment by an earlier version, which marked its masked faces unmasked " \
            "(masked=False in its record" in capsys.readouterr().err
    # a crops-only mask output has no images to embed from: said in the commands a user runs ("rerun
    # augment with outputs='image'" named neither a command nor a flag)
    assert main(["mask", str(tmp_path / "dataset"), str(tmp_path / "crops-only"), "--outputs", "crops", "--executor",
                 "local", "--quiet"]) == 0
    assert main(["embed", str(tmp_path / "crops-only"), str(tmp_path / "from-crops"), "--from-augment", "--executor",
                 "local", "--quiet"]) == 2
    assert "has no whole images (made with --outputs crops): mask again into a new output with --outputs image or " \
        "both" in capsys.readouterr().err


def test_embed_from_an_augment_output_keeps_a_row_for_every_image_without_a_masked_face(face_photos, tmp_path):
    """A probe in which no face was found is a failure to acquire, which every score counts. Embedded
    from an augment output, such images had no row at all: mask -> embed --from-augment -> score
    reported 18 probes and none failed where embedding the images gave 20 and 2."""
    from jobs.embed import read_shards, run_embed
    from jobs.score import load_split

    dataset = tmp_path / "dataset"
    for photo in face_photos[:3]:
        (dataset / photo.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, dataset / photo.parent.name / photo.name)
    person = face_photos[0].parent.name
    cv2.imwrite(str(dataset / person / "zz_blank.jpg"), np.full((300, 300, 3), 128, np.uint8))
    (dataset / person / "zz_broken.jpg").write_bytes(b"not a jpeg")
    from jobs.augment import run_augment

    run_augment(str(dataset), str(tmp_path / "masked"), executor="local")
    counts = {}
    for name, source, options in (("augment", tmp_path / "masked", {"from_augment": True}), ("images", dataset, {})):
        summary = run_embed(str(source), str(tmp_path / name), masked=True, executor="local", **options)
        rows, _, failed = read_shards(str(tmp_path / name), with_failures=True)
        counts[name] = (len(rows), sorted(zip(failed.key, failed.status)), summary.inputs)
    assert counts["augment"] == counts["images"] == (
        3, [(f"{person}/zz_blank.jpg", "no_face"), (f"{person}/zz_broken.jpg", "unsupported")], 5)
    run_embed(str(dataset), str(tmp_path / "gallery"), masked=False, executor="local")
    split = load_split(str(tmp_path / "augment"), str(tmp_path / "gallery"))
    assert split.acquisition["probe"]["failed_to_acquire"] == 2
