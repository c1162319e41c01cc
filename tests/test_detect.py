"""MTCNN on ONNX Runtime finds what the `mtcnn` package finds, on real faces, batched or not."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import FIXTURES, ROOT, read_rgb
from maskgen.boxes import iou_matrix
from maskgen.detect import MTCNN, DetectorOptions

sys.path.insert(0, str(ROOT / "bench"))
from lfw_like import lfw_like_images  # noqa: E402


def _agreement(detector, shared_data, subset):
    """Per reference face with score >= 0.9: matched (IoU >= 0.9) and landmark error as a fraction of box size."""
    reference = json.loads((FIXTURES / "mtcnn_reference.json").read_text())
    rows = []
    for rec in reference["images"]:
        if not rec["image"].startswith(subset + "/"):
            continue
        image = read_rgb(shared_data / rec["image"])
        assert (image.shape[1], image.shape[0]) == (rec["width"], rec["height"]), rec["image"]
        faces = detector.detect(image)
        ours = np.array([f.box for f in faces]).reshape(-1, 4)
        for ref in rec["faces"]:
            if ref["score"] < 0.9:
                continue
            ref_box = np.array([ref["box"]])
            if len(ours) == 0:
                rows.append((0.0, np.inf))
                continue
            ious = iou_matrix(ref_box, ours)[0]
            j = int(ious.argmax())
            size = max(ref_box[0, 2] - ref_box[0, 0], ref_box[0, 3] - ref_box[0, 1])
            err = np.linalg.norm(np.array(ref["landmarks"]) - faces[j].points, axis=1).max() / size
            rows.append((float(ious[j]), float(err)))
    return np.array(rows)


@pytest.mark.parametrize("subset", ["faces", "masked_wild"])
def test_agrees_with_mtcnn_package(detector, shared_data, subset):
    rows = _agreement(detector, shared_data, subset)
    assert len(rows) >= 50, f"too few reference faces in {subset}: {len(rows)}"
    ious, errors = rows[:, 0], rows[:, 1]
    agree = (ious >= 0.9) & (errors <= 0.03)
    print(f"\n{subset}: {agree.sum()}/{len(rows)} reference faces (score >= 0.9) agree; "
          f"IoU min {ious.min():.4f} median {np.median(ious):.4f}; "
          f"landmark error max {errors.max():.4%} median {np.median(errors):.4%} of box size")
    assert agree.mean() >= 0.98


def test_batch_gives_the_same_faces_as_one_by_one(detector, shared_data, face_photos):
    images = lfw_like_images(shared_data, 12, seed=1)
    images += [read_rgb(p) for p in face_photos[:3]]  # other sizes in the same batch
    single = [detector.detect(img) for img in images]
    batched = detector.detect_batch(images)
    assert sum(len(f) for f in single) >= len(images)
    for one, many in zip(single, batched):
        assert len(one) == len(many)
        for a, b in zip(one, many):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            np.testing.assert_allclose(a.points, b.points, atol=1e-3)
            assert a.score == pytest.approx(b.score, abs=1e-5)


def test_every_lfw_like_image_has_its_face(detector, shared_data):
    images = lfw_like_images(shared_data, 40, seed=2)
    results = detector.detect_batch(images)
    centred = 0
    for faces in results:
        assert faces, "no face found in an LFW-like crop"
        best = faces[0]
        cx, cy = (best.box[0] + best.box[2]) / 2, (best.box[1] + best.box[3]) / 2
        centred += abs(cx - 125) < 40 and abs(cy - 125) < 40
    assert centred >= 0.9 * len(images)


def test_faces_are_sorted_and_inside_the_image(detector, shared_data):
    image = read_rgb(shared_data / "masked_wild" / "0002_0078.jpg")  # a crowd
    faces = detector.detect(image)
    assert len(faces) >= 5
    scores = [f.score for f in faces]
    assert scores == sorted(scores, reverse=True)
    h, w = image.shape[:2]
    for f in faces:
        assert 0 <= f.box[0] <= f.box[2] <= w - 1 and 0 <= f.box[1] <= f.box[3] <= h - 1
        assert f.score > 0.8 and f.points.shape == (5, 2)


def test_min_face_size_and_thresholds_are_honoured(detector, shared_data):
    image = read_rgb(shared_data / "masked_wild" / "0006_0135.jpg")  # faces of 14 to 41 px
    everything = detector.detect(image)
    big_only = MTCNN(DetectorOptions(min_face_size=30)).detect(image)
    assert 0 < len(big_only) < len(everything)
    # The option sizes the pyramid; box regression can still return a face somewhat under it.
    assert min(max(f.width, f.height) for f in big_only) >= 0.5 * 30
    strict = MTCNN(DetectorOptions(thresholds=(0.6, 0.7, 0.999))).detect(image)
    assert len(strict) < len(everything) and all(f.score > 0.999 for f in strict)
    capped = MTCNN(DetectorOptions(max_candidates=5)).detect(image)
    assert len(capped) <= 5


def test_images_without_faces(detector):
    rng = np.random.default_rng(0)
    assert detector.detect(np.full((300, 400, 3), 128, np.uint8)) == []
    assert detector.detect(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)) == []
    assert detector.detect(np.zeros((10, 10, 3), np.uint8)) == []  # smaller than one P-Net window
    assert detector.detect_batch([]) == []


def test_bad_input_and_options_are_refused(detector):
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(np.zeros((50, 50), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(np.zeros((50, 50, 3), np.float32))
    with pytest.raises(ValueError, match="scale_factor"):
        DetectorOptions(scale_factor=1.2)
    with pytest.raises(ValueError, match="min_face_size"):
        DetectorOptions(min_face_size=0)
    with pytest.raises(ValueError, match="thresholds"):
        DetectorOptions(thresholds=(0.6, 0.7))
    # NaN failed every comparison: no pyramid scale, so no face and no error
    with pytest.raises(ValueError, match="min_face_size"):
        DetectorOptions(min_face_size=float("nan"))
    with pytest.raises(ValueError, match="max_candidates"):
        DetectorOptions(max_candidates=2.5)
    # 0.01 asked for a 20 TB first level (an OpenCV allocation error), 0.999999 for 3.9 million levels
    for field, value in (("min_face_size", 0.01), ("min_face_size", True), ("scale_factor", 0.999999),
                         ("thresholds", (True, 0.7, 0.8))):
        with pytest.raises(ValueError, match=field):
            DetectorOptions(**{field: value})
    assert DetectorOptions(min_face_size=6).min_face_size == 6  # small faces: the image is enlarged twice
    with pytest.raises(ValueError, match="max_patches_per_call"):  # "range() arg 3 must not be zero", first image
        MTCNN(max_patches_per_call=0)
    # options of the wrong type named (len()'s and the pyramid's TypeErrors), a list taken as the tuple
    for field, value in (("thresholds", 0.5), ("thresholds", None), ("min_face_size", "20"), ("scale_factor", None)):
        with pytest.raises(ValueError, match=field):
            DetectorOptions(**{field: value})
    listed = DetectorOptions(thresholds=[0.6, 0.7, 0.8])
    assert listed == DetectorOptions() and hash(listed) == hash(DetectorOptions())
    for call, why in ((lambda: MTCNN({"min_face_size": 40}), "options are a DetectorOptions, got dict"),
                      (lambda: MTCNN({}), "options are a DetectorOptions, got dict"),
                      (lambda: MTCNN(threads=-1), "threads must be a whole number >= 0 \\(0 or None: one per CPU\\)")):
        with pytest.raises(ValueError, match=why):
            call()


def test_version_names_the_weights(detector):
    assert detector.version.startswith("mtcnn-onnx:pnet-")
    assert detector.providers[-1] == "CPUExecutionProvider"
