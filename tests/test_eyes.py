"""Eyes located for alignment under a mask (maskgen.eyes): exact geometry, real faces, augment and embed."""

from __future__ import annotations

import numpy as np
import pytest

from maskgen.align import ARCFACE_112, align_face, transform_points
from maskgen.augment import AugmentOptions, Augmenter
from maskgen.eyes import BROWS, UPPER_FACE_POINTS, UPPER_FACE_TEMPLATE, EyeLocator, eyes_from_upper_face
from maskgen.finder import alignment_points, eyes_only_points
from maskgen.record import as_recorded


@pytest.fixture(scope="module")
def locator(detector, predictor):
    return EyeLocator(detector, predictor)


def test_eyes_from_the_upper_face_follow_a_similarity_exactly():
    # the template's brows and eyes placed in an image rotated 20 degrees, scaled 2.5x and moved
    angle = np.deg2rad(20)
    matrix = np.array([[2.5 * np.cos(angle), -2.5 * np.sin(angle), 300.0],
                       [2.5 * np.sin(angle), 2.5 * np.cos(angle), 140.0]])
    lm = np.full((68, 2), np.nan)
    lm[list(UPPER_FACE_POINTS)] = transform_points(UPPER_FACE_TEMPLATE, matrix)
    lm = np.nan_to_num(lm, nan=-1e6)  # points outside the upper face must not matter
    t = dict(zip(UPPER_FACE_POINTS, UPPER_FACE_TEMPLATE))
    contours = np.array([np.mean([t[i] for i in range(36, 42)], axis=0), np.mean([t[i] for i in range(42, 48)], axis=0)])
    expected = transform_points(contours, matrix)  # the template's eye-contour centres, moved
    np.testing.assert_allclose(eyes_from_upper_face(lm), expected, atol=1e-6)
    np.testing.assert_allclose(eyes_from_upper_face(lm, BROWS), expected, atol=1e-6)


def test_located_eyes_sit_on_the_eyes_of_real_faces(locator, shared_faces_68):
    """On unmasked faces the six estimates agree with MTCNN's eyes and dlib's eye contours to a few
    percent of the eye distance."""
    off_mtcnn, off_dlib = [], []
    for _, image, faces, lm in shared_faces_68:
        for face, pts in zip(faces, lm):
            if face.width < 40:
                continue
            eyes = locator.locate(image, face.box, face.points)
            d = np.linalg.norm(face.points[1] - face.points[0])
            off_mtcnn.append(np.linalg.norm(eyes - face.points[:2], axis=1).max() / d)
            contours = np.array([pts[36:42].mean(0), pts[42:48].mean(0)])
            off_dlib.append(np.linalg.norm(eyes - contours, axis=1).max() / d)
    assert len(off_mtcnn) >= 50
    assert np.median(off_mtcnn) < 0.08 and np.median(off_dlib) < 0.12
    assert np.max(off_mtcnn) < 0.3
    # NaN points gave NaN eyes; an inverted box or one off the photo was said of an inner region
    # (now in the predictor's words, `maskgen.landmarks.checked_boxes`)
    _, image, faces, _ = shared_faces_68[0]
    h, w = image.shape[:2]
    face = faces[0]
    for box, points, why in ((face.box, np.full((5, 2), np.nan), "points5 of face\\(s\\) \\[0\\] are NaN or infinite"),
                             ((50, 50, 10, 10), face.points, "empty or inverted \\(x2 <= x1 or y2 <= y1\\)"),
                             ((w + 10, 0, w + 50, 40), face.points, f"wholly outside the {w}x{h} image")):
        with pytest.raises(ValueError, match=why):
            locator.locate(image, box, points)


def test_alignment_points_call_the_locator_only_for_eye_alignment():
    plausible = np.array([[100, 120], [160, 120], [130, 150], [108, 180], [152, 180]], float)
    calls = []

    def locate():
        calls.append(1)
        return np.array([[101.0, 121.0], [161.0, 119.0]])

    pts, how = alignment_points(plausible, mode="auto", locate_eyes=locate)
    assert how == "five-point" and not calls
    pts, how = alignment_points(plausible, mode="eyes", locate_eyes=locate)
    assert how == "eyes" and len(calls) == 1
    np.testing.assert_allclose(pts, eyes_only_points((101.0, 121.0), (161.0, 119.0)))


def test_augment_aligns_masked_crops_by_eyes_located_on_the_unmasked_photo(detector, predictor, locator,
                                                                          shared_faces_68):
    path, image, faces, _ = shared_faces_68[0]
    eyes = Augmenter(AugmentOptions(alignment="eyes"), detector=detector, predictor=predictor).augment(image, path.name)
    five = Augmenter(AugmentOptions(), detector=detector, predictor=predictor).augment(image, path.name)
    assert [f.alignment for f in eyes.faces] == ["eyes"] * len(faces)
    np.testing.assert_array_equal(eyes.image, five.image)  # the alignment never changes the mask
    located = eyes_only_points(*locator.locate(image, faces[0].box, faces[0].points))
    # aligned with the points as the record keeps them (0.01 px), so its aligned5 makes the crop again
    np.testing.assert_array_equal(eyes.crops[0], align_face(eyes.image, as_recorded(located)))
    np.testing.assert_array_equal(eyes.crops[0], align_face(eyes.image, np.array(eyes.faces[0].aligned5)))
    assert not np.array_equal(eyes.crops[0], five.crops[0])


def test_embedder_aligns_by_the_located_eyes(locator, shared_faces_68):
    from recog.embed import Embedder

    _, image, faces, _ = shared_faces_68[0]
    embedder = Embedder("sface", device="cpu")
    located = locator.locate(image, faces[0].box, faces[0].points)
    got = embedder.embed_faces(image, [faces[0].points], alignment="eyes", locate_eyes=lambda k: located)
    want = embedder.embed_crops(align_face(image, eyes_only_points(*located))[None])
    np.testing.assert_allclose(got, want, atol=1e-6)
    five = embedder.embed_faces(image, [faces[0].points])
    assert 0.9 < float(got[0] @ five[0]) < 0.9999  # the same face, a slightly different crop


def test_the_template_is_a_face():
    # brows above the eyes, image-left parts left of image-right ones, eyes where ArcFace puts them
    t = dict(zip(UPPER_FACE_POINTS, UPPER_FACE_TEMPLATE))
    assert all(t[b][1] < t[e][1] for b in BROWS for e in range(36, 48))
    assert t[17][0] < t[26][0] and t[36][0] < t[45][0]
    left = np.mean([t[i] for i in range(36, 42)], axis=0)
    right = np.mean([t[i] for i in range(42, 48)], axis=0)
    assert np.linalg.norm(left - ARCFACE_112.array[0]) < 6 and np.linalg.norm(right - ARCFACE_112.array[1]) < 6
