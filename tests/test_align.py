"""Five-point alignment: exact on synthetic points, on-template for real detected faces."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import read_rgb
from maskgen.align import (ARCFACE_112, FaceTemplate, align_face, align_faces, alignment_matrix,
                           similarity_transform, transform_points)


def _similarity(angle, scale, tx, ty):
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, tx], [s, c, ty]])


def test_recovers_a_known_similarity_exactly():
    rng = np.random.default_rng(0)
    for _ in range(20):
        truth = _similarity(rng.uniform(-np.pi, np.pi), rng.uniform(0.2, 5), *rng.uniform(-300, 300, 2))
        src = rng.uniform(0, 500, size=(5, 2))
        dst = transform_points(src, truth)
        np.testing.assert_allclose(similarity_transform(src, dst), truth, atol=1e-9)


def test_never_reflects():
    src = ARCFACE_112.array
    mirrored = src * [-1, 1] + [112, 0]  # a mirror image of the template
    matrix = similarity_transform(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_least_squares_with_noise():
    rng = np.random.default_rng(1)
    truth = _similarity(0.3, 1.7, 20, -10)
    src = rng.uniform(0, 200, size=(5, 2))
    dst = transform_points(src, truth) + rng.normal(0, 0.5, size=(5, 2))
    fit = similarity_transform(src, dst)
    residual = np.linalg.norm(transform_points(src, fit) - dst, axis=1).mean()
    assert residual < np.linalg.norm(transform_points(src, truth) - dst, axis=1).mean() + 1e-9


def test_degenerate_points_are_refused():
    with pytest.raises(ValueError, match="one point"):
        similarity_transform(np.ones((5, 2)), ARCFACE_112.array)
    with pytest.raises(ValueError, match="NaN"):
        similarity_transform(np.full((5, 2), np.nan), ARCFACE_112.array)
    with pytest.raises(ValueError, match=r"a face template's points are 5 finite \(x, y\) points, got shape"):
        FaceTemplate.from_points(np.zeros((4, 2)), 112, 112)


def test_template_resizing_follows_insightface_conventions():
    narrow = ARCFACE_112.resized(96, 112)
    np.testing.assert_allclose(narrow.array, ARCFACE_112.array - [8, 0], atol=1e-9)
    double = ARCFACE_112.resized(224)
    np.testing.assert_allclose(double.array, ARCFACE_112.array * 2, atol=1e-9)
    padded = ARCFACE_112.resized(150, padding=0.25)
    centre = np.array([75, 75])
    np.testing.assert_allclose(padded.array - centre, (ARCFACE_112.array - 56) * 150 / 112 / 1.5, atol=1e-9)
    assert (padded.width, padded.height) == (150, 150)


def test_real_faces_land_on_the_template(detected, face_photos):
    residuals = []
    for path in face_photos[::4]:
        image, faces = detected(path)
        assert faces, path
        face = max(faces, key=lambda f: f.width)
        for template in (ARCFACE_112, ARCFACE_112.resized(160, padding=0.1)):
            crop = align_face(image, face.points, template)
            assert crop.shape == (template.height, template.width, 3) and crop.dtype == np.uint8
            placed = transform_points(face.points, alignment_matrix(face.points, template))
            residuals.append(np.linalg.norm(placed - template.array, axis=1).mean() / template.height)
    # A similarity cannot fit 5 points perfectly, but real faces sit within a few percent of the crop.
    assert np.median(residuals) < 0.03
    assert max(residuals) < 0.08


def test_aligned_crop_is_the_face_upright(detector, face_photos):
    image = read_rgb(face_photos[0])
    face = max(detector.detect(image), key=lambda f: f.width)
    rotated = np.ascontiguousarray(np.rot90(image))  # 90 degrees counter-clockwise
    # MTCNN is not rotation-invariant, so rotate the known points instead of re-detecting.
    h = image.shape[0]
    pts_rot = np.stack([face.points[:, 1], image.shape[1] - 1 - face.points[:, 0]], axis=1)
    assert rotated.shape[0] == image.shape[1] and rotated.shape[1] == h
    upright = align_face(image, face.points).astype(float)
    from_rotated = align_face(rotated, pts_rot).astype(float)
    assert np.abs(upright - from_rotated).mean() < 4.0  # same crop up to resampling


def test_align_faces_stacks_and_handles_none(detector, face_photos):
    image = read_rgb(face_photos[1])
    faces = detector.detect(image)
    stack = align_faces(image, [f.points for f in faces])
    assert stack.shape == (len(faces), 112, 112, 3)
    assert align_faces(image, []).shape == (0, 112, 112, 3)
    # what a stage is given is checked as every stage checks it: a grey, RGBA or float image gave a
    # crop of its own kind, an empty one, a template named in text or 68 points errors of OpenCV or NumPy
    points = faces[0].points
    for call, why in ((lambda: align_face(image[:, :, 0], points), "RGB uint8"),
                      (lambda: align_face(image.astype(np.float32) / 255, points), "RGB uint8"),
                      (lambda: align_face(np.zeros((0, 0, 3), np.uint8), points), "no pixels"),
                      (lambda: align_face(image, points, "arcface"), "template is a FaceTemplate"),
                      (lambda: align_face(image, np.zeros((68, 2))), "5 finite \\(x, y\\) points.*68 points"),
                      (lambda: align_face(image, np.full((5, 2), np.nan)), "5 finite .* got NaN or infinite"),
                      (lambda: align_face(image, "points"), "a face's landmarks here are 5 finite \\(x, y\\) points, "
                                                            "got 'points'"),
                      # xs in one row, ys in the other: read as other points (any 10 numbers were taken)
                      (lambda: align_face(image, points.T), "5 finite .* got shape \\(2, 5\\)"),
                      (lambda: align_face(image, points, border_value=300), "border_value is a whole number"),
                      (lambda: ARCFACE_112.resized(112, padding=True), "padding must be a finite number")):
        with pytest.raises(ValueError, match=why):
            call()
