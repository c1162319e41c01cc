"""Frontal/profile and clear/blurred, estimated: the seed's labels, and sensible labels on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import SHARED_DATA, read_rgb, seed_rows
from maskgen.facetype import FaceType, FaceTypeOptions, blur_score, classify_face, yaw_degrees
from maskgen.landmarks import mirror_landmarks


def test_reproduces_the_seed_samples_labels():
    rows = seed_rows()
    assert [r.face_type.code for r in rows] == ["0_0", "1_0", "0_1"]
    for row in rows:
        image = read_rgb(SHARED_DATA / "seed" / "sample" / row.image_name)
        estimated = classify_face(image, row.landmarks)
        print(f"\nseed {row.image_name}: labelled {row.face_type.code}, estimated {estimated.code} "
              f"(yaw {estimated.yaw:.0f} deg, blur {estimated.blur:.3f})")
        assert estimated.code == row.face_type.code


def test_mirror_image_keeps_the_type_and_flips_the_yaw():
    for row in seed_rows():
        image = read_rgb(SHARED_DATA / "seed" / "sample" / row.image_name)
        flipped = np.ascontiguousarray(image[:, ::-1])
        a = classify_face(image, row.landmarks)
        b = classify_face(flipped, mirror_landmarks(row.landmarks, image.shape[1]))
        assert a.code == b.code
        assert b.yaw == pytest.approx(-a.yaw, abs=1.0)


def test_real_photos_get_sensible_labels(shared_faces_68):
    """Press photos: faces of 100 px or more are sharp and nearly all frontal; smaller background faces
    (upsampled to 112 px to be judged) may be blurred."""
    large, small = [], []
    for _, image, faces, lm in shared_faces_68:
        for face, pts in zip(faces, lm):
            (large if face.width >= 100 else small).append(classify_face(image, pts))
    assert len(large) >= 50
    assert all(not t.blurred for t in large), [t for t in large if t.blurred]
    assert sum(not t.profile for t in large) >= 0.95 * len(large)
    print(f"\n{len(large)} faces >= 100 px: {sum(t.profile for t in large)} profile, "
          f"{sum(t.blurred for t in large)} blurred; {len(small)} smaller: {sum(t.blurred for t in small)} blurred")
    # the detector's 5 points, or a NaN point: said as the mask styles say it (was numpy's reshape error)
    _, image, faces, lm = shared_faces_68[0]
    with pytest.raises(ValueError, match="a face type is read from a face's 68 landmarks.*5 points are not enough"):
        classify_face(image, faces[0].points)
    with pytest.raises(ValueError, match=r"landmark\(s\) \[30\] are NaN or infinite"):
        classify_face(image, np.where(np.arange(68)[:, None] == 30, np.nan, lm[0]))


def test_blurring_a_sharp_face_makes_it_blurred(shared_faces_68):
    flipped = 0
    checked = 0
    for _, image, faces, lm in shared_faces_68[:20]:
        face = faces[0]
        if face.width < 100:
            continue
        sharp = classify_face(image, lm[0])
        sigma = 2.5 * face.width / 112  # 2.5 px at the 112 px scale the score is computed at
        soft = classify_face(cv2.GaussianBlur(image, (0, 0), sigma), lm[0])
        checked += 1
        flipped += (not sharp.blurred) and soft.blurred
        assert soft.blur > sharp.blur
    assert checked >= 10 and flipped == checked


def test_profile_threshold_is_an_option():
    rows = seed_rows()
    frontal = rows[0]
    yaw = yaw_degrees(frontal.landmarks)
    image = read_rgb(SHARED_DATA / "seed" / "sample" / frontal.image_name)
    assert not classify_face(image, frontal.landmarks).profile
    assert classify_face(image, frontal.landmarks, FaceTypeOptions(profile_yaw=abs(yaw) / 2 + 1e-3)).profile
    with pytest.raises(ValueError):
        FaceTypeOptions(profile_yaw=0)
    with pytest.raises(ValueError):
        FaceTypeOptions(blur_threshold=1.5)
    for value in (True, "45", None):  # True was 1 degree, the others TypeErrors
        with pytest.raises(ValueError, match="profile_yaw must be a number"):
            FaceTypeOptions(profile_yaw=value)
    with pytest.raises(ValueError, match="options are a FaceTypeOptions, got dict"):
        classify_face(image, frontal.landmarks, {"profile_yaw": 30})


def test_blur_score_extremes_and_codes():
    rng = np.random.default_rng(0)
    assert blur_score(rng.integers(0, 256, (80, 80)).astype(np.uint8)) < 0.3   # noise: all detail
    assert blur_score(np.tile(np.linspace(0, 255, 80), (80, 1))) > 0.95         # a smooth ramp
    assert blur_score(np.full((40, 40), 7.0)) == 1.0
    assert FaceType.from_code("1_0").code == "1_0"
    with pytest.raises(ValueError, match="face_type"):
        FaceType.from_code("2_0")
