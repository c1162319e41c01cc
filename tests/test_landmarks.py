"""68-point landmarks from MTCNN boxes mapped into dlib's box convention."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from conftest import ROOT
from maskgen.boxes import iou_matrix
from maskgen.landmarks import MIRROR_68, MTCNN_TO_DLIB, BoxMapping, fit_box_mapping, mirror_landmarks

sys.path.insert(0, str(ROOT / "tools"))


@pytest.fixture(scope="module")
def hog_pairs(shared_faces_68):
    """(image, MTCNN box, dlib HOG box) for every face both detectors find in shared/data/faces."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import dlib
    from fit_dlib_box import match_to_hog

    # dlib's HOG at upsample 1 takes ~30 s over these photos on one core; it releases the GIL, so two
    # threads (a detector each: one is not safe to share) halve it
    own = threading.local()

    def matched(entry):
        _, image, faces, _ = entry
        if not hasattr(own, "hog"):
            own.hog = dlib.get_frontal_face_detector()
        boxes = np.array([f.box for f in faces])
        return [(image, boxes[i], box) for i, box in match_to_hog(image, boxes, own.hog)]

    with ThreadPoolExecutor(2) as pool:
        pairs = [pair for found in pool.map(matched, shared_faces_68) for pair in found]
    assert len(pairs) >= 40
    return pairs


def test_box_mapping_refits_to_the_recorded_constants(hog_pairs):
    ours = np.array([p[1] for p in hog_pairs])
    theirs = np.array([p[2] for p in hog_pairs])
    refit = fit_box_mapping(ours, theirs)
    # w and h of face boxes move together, so the fit can trade side_w against side_h (one large face
    # found 1 % differently moved them by 0.016 each); what must hold is the boxes it makes
    side = lambda m: m.apply(ours)[:, 2] - m.apply(ours)[:, 0]  # noqa: E731
    assert np.abs(side(refit) / side(MTCNN_TO_DLIB) - 1).max() < 0.01
    assert refit.side_w + refit.side_h == pytest.approx(MTCNN_TO_DLIB.side_w + MTCNN_TO_DLIB.side_h, abs=0.01)
    assert refit.dy == pytest.approx(MTCNN_TO_DLIB.dy, abs=0.01)
    raw = np.median(np.diag(iou_matrix(ours, theirs)))
    mapped = np.median(np.diag(iou_matrix(MTCNN_TO_DLIB.apply(ours), theirs)))
    print(f"\nMTCNN vs dlib box, median IoU: raw {raw:.3f}, mapped {mapped:.3f} over {len(ours)} faces")
    assert mapped >= 0.8 and mapped > raw + 0.1


def test_mapped_boxes_give_the_landmarks_dlib_gives_from_its_own_boxes(hog_pairs, predictor):
    """The point of the mapping: from an MTCNN box, dlib's predictor lands where it lands from its own
    detector's box (the convention it was trained on); the raw MTCNN box lands further away."""
    from maskgen.landmarks import LandmarkPredictor

    raw_predictor = LandmarkPredictor(mapping=BoxMapping(1.0, 0.0, 0.0, 0.0))
    own_predictor = LandmarkPredictor(mapping=BoxMapping(1.0, 0.0, 0.0, 0.0))
    mapped_err, raw_err = [], []
    for image, ours, theirs in hog_pairs:
        reference = own_predictor.predict(image, theirs[None])[0]
        size = theirs[2] - theirs[0]
        mapped_err.append(np.linalg.norm(predictor.predict(image, ours[None])[0] - reference, axis=1).mean() / size)
        raw_err.append(np.linalg.norm(raw_predictor.predict(image, ours[None])[0] - reference, axis=1).mean() / size)
    mapped_err, raw_err = np.array(mapped_err), np.array(raw_err)
    print(f"\nmean landmark distance to dlib's own-box landmarks, % of face size (median / 90th pct over "
          f"{len(hog_pairs)} faces): mapped {np.median(mapped_err):.2%} / {np.percentile(mapped_err, 90):.2%}, "
          f"raw MTCNN box {np.median(raw_err):.2%} / {np.percentile(raw_err, 90):.2%}")
    assert np.median(mapped_err) < 0.01
    assert np.median(mapped_err) < np.median(raw_err)
    assert np.percentile(mapped_err, 90) < np.percentile(raw_err, 90)


def test_every_landmark_lies_near_its_face(shared_faces_68):
    for _, image, faces, lm in shared_faces_68:
        for face, pts in zip(faces, lm):
            x1, y1, x2, y2 = face.box
            margin = 0.35 * max(face.width, face.height)
            assert (pts[:, 0] > x1 - margin).all() and (pts[:, 0] < x2 + margin).all()
            assert (pts[:, 1] > y1 - margin).all() and (pts[:, 1] < y2 + margin).all()
            assert pts[36:42, 1].mean() < pts[30, 1] < pts[57, 1] < pts[8, 1]  # eyes, nose, mouth, chin


def test_mirroring_is_an_involution_and_matches_a_flipped_photo(shared_faces_68, predictor):
    assert sorted(MIRROR_68) == list(range(68))
    assert all(MIRROR_68[MIRROR_68[i]] == i for i in range(68))
    _, image, faces, lm = shared_faces_68[0]
    flipped = np.ascontiguousarray(image[:, ::-1])
    w = image.shape[1]
    box = np.array([[w - 1 - faces[0].box[2], faces[0].box[1], w - 1 - faces[0].box[0], faces[0].box[3]]])
    on_flipped = predictor.predict(flipped, box)[0]
    err = np.linalg.norm(mirror_landmarks(lm[0], w) - on_flipped, axis=1)
    assert np.median(err) < 0.03 * faces[0].width
    np.testing.assert_allclose(mirror_landmarks(mirror_landmarks(lm[0], w), w), lm[0])
    # a width of 0 or 10.5, or points with NaN, gave numbers (the same for every face at width 0)
    for points, width, why in ((lm[0], 0, "width is the image's width in whole pixels, at least 1, got 0"),
                               (lm[0], 10.5, "got 10.5"), (np.full((68, 2), np.nan), w, "NaN or infinite"),
                               (lm[0][:5], w, r"68 landmarks, \(68, 2\)")):
        with pytest.raises(ValueError, match=why):
            mirror_landmarks(points, width)


def test_predictor_refuses_non_rgb(predictor):
    with pytest.raises(ValueError, match="RGB uint8"):
        predictor.predict(np.zeros((10, 10), np.uint8), np.array([[0, 0, 5, 5]]))
    # turns are quarter turns: 90 (degrees, as `source` names them) was a half turn, 1.5 one turn
    image = np.zeros((40, 40, 3), np.uint8)
    for turns in ([90], [1.5], [4], 0):
        with pytest.raises(ValueError, match="turns are quarter turns, one whole number from -3 to 3 per box"):
            predictor.predict(image, np.array([[5, 5, 30, 30]]), turns=turns)
    box = np.array([[5, 5, 30, 30]])  # -1 is a quarter turn clockwise (3), as before; a float array's whole numbers
    np.testing.assert_array_equal(predictor.predict(image, box, turns=[-1]), predictor.predict(image, box, turns=[3]))
    np.testing.assert_array_equal(predictor.predict(image, box, turns=np.zeros(1)), predictor.predict(image, box))


def test_the_landmark_model_is_read_once_per_process_and_by_the_local_pools_forkserver(shared_faces_68, predictor):
    """dlib's 68-point model (100 MB, about a second to read) is shared by every predictor of a
    process, and read by the local pool's forkserver (maskgen.preload) before it forks the workers."""
    import subprocess

    from maskgen.landmarks import LandmarkPredictor
    from jobs.local import PRELOAD

    again = LandmarkPredictor()
    assert again._predictor is predictor._predictor
    path, image, faces, lm = shared_faces_68[0]
    assert np.array_equal(again.predict(image, np.array([f.box for f in faces])), lm)
    assert "maskgen.preload" in PRELOAD
    code = ("import sys, maskgen.landmarks as L; import maskgen.preload; "
            "print(len(L._SHAPE_PREDICTORS), L.LandmarkPredictor()._predictor is next(iter(L._SHAPE_PREDICTORS.values())))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["1", "True"], done.stderr[-2000:]


def test_tilted_faces_get_their_landmarks_where_the_face_is(detector, predictor, shared_data):
    """dlib's predictor only knows upright faces: a photo turned by 40 to 60 degrees had its 68 points
    on the cheek and neck (mean error 0.84 to 0.95 of the eye distance against the upright photo's
    points turned the same way), and masks were drawn there. Faces tilted 20 degrees or more are now
    turned upright for the predictor."""
    import cv2

    from conftest import read_rgb
    from maskgen.landmarks import LEVEL_ABOVE_DEGREES, eye_roll_degrees

    def largest(image):
        faces = detector.detect(image)
        face = max(faces, key=lambda f: f.width)
        return np.array([face.box]), np.array([face.points])

    for name in ("person_01/img5.jpg", "person_08/img29.jpg"):
        upright = read_rgb(shared_data / "faces" / name)
        box, points = largest(upright)
        truth0 = predictor.predict(upright, box, points)[0]
        eyes = np.linalg.norm(truth0[42:48].mean(0) - truth0[36:42].mean(0))
        for angle in (15, 45, 60):
            h, w = upright.shape[:2]
            turn = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
            tilted = cv2.warpAffine(upright, turn, (w, h), borderMode=cv2.BORDER_REPLICATE)
            truth = truth0 @ turn[:, :2].T + turn[:, 2]
            box, points = largest(tilted)
            assert (abs(eye_roll_degrees(points[0])) >= LEVEL_ABOVE_DEGREES) == (angle > 15)
            error = np.linalg.norm(predictor.predict(tilted, box, points)[0] - truth, axis=1).mean() / eyes
            assert error < 0.1, (name, angle, error)
        # without the detector's points nothing is turned: what the predictor alone makes of it
        error = np.linalg.norm(predictor.predict(tilted, box)[0] - truth, axis=1).mean() / eyes
        assert error > 0.5, (name, error)


def test_a_face_the_images_edge_cuts_keeps_its_landmarks_and_is_not_read_as_a_profile(detector, predictor,
                                                                                         shared_data):
    """A face cut by the image's left or right edge (people at the side of a group photo): its landmarks
    were found from the clipped box, on an image dlib reads as black past the edge, so they were pressed
    inside it; a face a third of whose width was cut read as a profile (yaw -59 to -90 on some) and its
    mask left the mouth and nose bare. Found from the detector's whole box, with the edge continued, they
    stay near the uncut photo's points."""
    from conftest import read_rgb
    from maskgen.augment import AugmentOptions, Augmenter
    from maskgen.detect import Face, landmark_boxes
    from maskgen.facetype import yaw_degrees

    augmenter = Augmenter(AugmentOptions(style="surgical", seed=1, alignment="eyes"), detector=detector,
                          predictor=predictor)
    for name in ("person_04/img13.jpg", "person_01/img5.jpg", "person_08/img29.jpg"):
        whole = read_rgb(shared_data / "faces" / name)
        face = max(detector.detect(whole), key=lambda f: f.width)
        truth = predictor.predict(whole, landmark_boxes([face]), np.array([face.points]))[0]
        eyes = np.linalg.norm(truth[42:48].mean(0) - truth[36:42].mean(0))
        located = augmenter.eye_locator.locate(whole, face.box, face.points)
        x1, _, x2, y2 = face.box
        for side in ("left", "right", "bottom"):
            if side == "bottom":  # the chin cut off
                y = int(y2 - 0.33 * face.height)
                cut, shift = np.ascontiguousarray(whole[:y]), np.zeros(2)
            else:
                x = int(x1 + 0.33 * (x2 - x1)) if side == "left" else int(x2 - 0.33 * (x2 - x1))
                cut = np.ascontiguousarray(whole[:, x:] if side == "left" else whole[:, :x])
                shift = np.array([x, 0]) if side == "left" else np.zeros(2)
            found = min(detector.detect(cut), key=lambda f: np.linalg.norm(f.points[2] + shift - truth[30]))
            assert found.full_box is not None and found.box != found.full_box  # the edge cut its box
            assert {"left": found.full_box[0] < 0, "right": found.full_box[2] > cut.shape[1] - 1,
                    "bottom": found.full_box[3] > cut.shape[0] - 1}[side]
            lm = predictor.predict(cut, landmark_boxes([found]), np.array([found.points]))[0] + shift
            # the detector's Face given as it is (was "float() argument must be ... not 'Face'"): the same
            np.testing.assert_array_equal(predictor.predict(cut, found)[0] + shift, lm)
            np.testing.assert_array_equal(predictor.predict(cut, [found, found])[1] + shift, lm)
            with pytest.raises(ValueError, match=r"face\(s\) \[1\] have no 5 points and the others do"):
                predictor.predict(cut, [found, Face(found.box, found.score)])  # (were dropped for every face)
            error = np.linalg.norm(lm - truth, axis=1).mean() / eyes  # was 0.12 to 0.30, three of six profiles
            assert error < 0.15, (name, side, error)
            assert abs(yaw_degrees(lm) - yaw_degrees(truth)) < 20, (name, side, yaw_degrees(lm), yaw_degrees(truth))
            # the job's record: not a profile (whose mask follows the far side, leaving the mouth bare),
            # and its crop aligned by eyes located from the whole box too (0.06 to 0.14 away from the clipped)
            record = max(augmenter.augment(cut, "cut.jpg").faces, key=lambda f: f.box[2] - f.box[0])
            assert record.face_type == "0_0", (name, side, record.face_type)
            assert record.alignment == "eyes"
            moved = np.linalg.norm(np.asarray(record.aligned5)[:2] + shift - located, axis=1).mean() / eyes
            assert moved < 0.06, (name, side, moved)
    # a crop's edges frame its face, they do not cut it: the crop path (the image padded, the face found
    # there) keeps the box inside the image, and its landmarks are dlib's own (continued, the edges of
    # real masked crops read as longer faces)
    from maskgen.finder import FaceFinder, FinderOptions

    framed = FaceFinder(FinderOptions(crop_mode="on"), mtcnn=detector).find(cut)
    assert framed and framed[0].full_box is None and framed[0].box[3] == cut.shape[0] - 1  # (the chin cut off)
    # a face inside the image keeps one box
    assert detector.detect(read_rgb(shared_data / "faces" / "person_01" / "img5.jpg"))[0].full_box is None


def test_a_face_far_past_the_edge_is_predicted_scaled_down_in_the_same_place(detector, predictor, shared_data,
                                                                               monkeypatch):
    """A neighbourhood wider than PAST_EDGE_MAX_SIDE is predicted scaled down (a box regressed far past a
    large crop made a padded copy of gigabytes): the points land where the full-size prediction puts them."""
    import maskgen.landmarks
    from conftest import read_rgb
    from maskgen.detect import landmark_boxes

    whole = read_rgb(shared_data / "faces" / "person_04" / "img13.jpg")
    face = max(detector.detect(whole), key=lambda f: f.width)
    x = int(face.box[0] + 0.3 * face.width)
    cut = np.ascontiguousarray(whole[:, x:])
    found = max(detector.detect(cut), key=lambda f: f.width)
    boxes, points = landmark_boxes([found]), np.array([found.points])
    full = predictor.predict(cut, boxes, points)[0]
    eyes = np.linalg.norm(full[42:48].mean(0) - full[36:42].mean(0))
    monkeypatch.setattr(maskgen.landmarks, "PAST_EDGE_MAX_SIDE", 160)  # about a third of this neighbourhood
    scaled = predictor.predict(cut, boxes, points)[0]
    assert 0 < np.linalg.norm(scaled - full, axis=1).mean() / eyes < 0.08


def test_the_predictor_reads_faces_in_every_container_and_boxes_as_before():
    """`faces_as_boxes` (what `predict` is given): Faces in a list, tuple, object array or generator;
    anything else passes to `checked_boxes` as it did (a DataFrame of boxes was read as its column
    names once; None is the shape error, not "not iterable")."""
    import pandas as pd

    from maskgen.detect import Face
    from maskgen.landmarks import checked_boxes, faces_as_boxes

    face = Face((10.0, 10.0, 50.0, 60.0), 0.9, tuple((20.0 + i, 30.0) for i in range(5)))
    for faces in ([face, face], (face, face), np.array([face, face], dtype=object), (f for f in [face, face])):
        boxes, points = checked_boxes(*faces_as_boxes(faces), (100, 100, 3))
        assert boxes.tolist() == [list(face.box)] * 2 and points.shape == (2, 5, 2)
    for boxes in ([[1, 2, 30, 40]], np.array([[1.0, 2, 30, 40]]), pd.DataFrame([[1, 2, 30, 40]], columns=list("abcd"))):
        assert checked_boxes(*faces_as_boxes(boxes), (100, 100, 3))[0].tolist() == [[1, 2, 30, 40]]
    with pytest.raises(ValueError, match=r"boxes are \(N, 4\)"):
        checked_boxes(*faces_as_boxes(None), (100, 100, 3))
