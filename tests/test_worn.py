"""Faces that wear a mask already (`maskgen.worn`): read on bare faces and under our own masks, and left
as they are by the augmenter when asked (on real masked crops: tests/test_masked_crops.py)."""

from __future__ import annotations


import cv2
import numpy as np
import pytest

from conftest import read_rgb, require_shared
from maskgen.augment import AugmentOptions, Augmenter
from maskgen.finder import FaceFinder, FinderOptions
from maskgen.worn import WornMaskCheck, skin_shares

PRESS = [("person_01", "img1.jpg"), ("person_02", "img3.jpg"), ("person_03", "img8.jpg"),
         ("person_04", "img13.jpg"), ("person_01", "img5.jpg"), ("person_02", "img12.jpg")]


@pytest.fixture(scope="module")
def press_photos():
    return [read_rgb(require_shared("faces", *parts)) for parts in PRESS]


def test_bare_faces_masked_faces_and_grey_photos(press_photos):
    """Bare press faces are not wearing masks; the same faces under our own surgical masks are; a grey
    photo gives colour nothing to go on, so the check abstains (None) rather than guess."""
    check = WornMaskCheck()
    augmenter = Augmenter(AugmentOptions(style="surgical", outputs="image"))
    for image in press_photos:
        result = augmenter.augment(image, "p.jpg")
        points = [np.asarray(face.landmarks5) for face in result.faces]
        assert points and all(face.masked for face in result.faces)
        grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        for p in points:
            assert check(image, p).worn is False
            assert check(result.image, p).worn is True
            verdict = check(grey, p)
            assert verdict.worn is None and verdict.upper == 0.0


def test_a_worn_face_is_left_and_the_bare_one_beside_it_masked(press_photos):
    """Two people side by side, one already in a mask: only the other is masked, the first keeps its
    pixels and its row says why; a photo whose every face wears a mask is `already_masked`."""
    first, second = (cv2.resize(image, (256, 256)) for image in press_photos[:2])
    worn_first = Augmenter(AugmentOptions(style="n95", outputs="image")).augment(first, "a.jpg").image
    pair = np.ascontiguousarray(np.hstack([worn_first, second]))
    augmenter = Augmenter(AugmentOptions(style="surgical", worn_masks=WornMaskCheck()))
    result = augmenter.augment(pair, "pair.jpg")
    assert result.status == "ok" and len(result.faces) == 2 and len(result.crops) == 1
    left, right = sorted(result.faces, key=lambda face: face.box[0])
    assert not left.masked and left.message.startswith("mask not drawn: wears a mask already")
    assert right.masked
    assert np.array_equal(result.image[:, :256], worn_first) and not np.array_equal(result.image[:, 256:], second)
    alone = augmenter.augment(np.ascontiguousarray(worn_first), "a.jpg")
    assert alone.status == "already_masked" and alone.crops == [] and np.array_equal(alone.image, worn_first)
    assert alone.message.startswith("left as it is: every face found (1) wears a mask already")
    # with a bare face beside it that is not masked for another reason (here: not the centre face),
    # the image keeps a record per face, each with its reason, and is not `already_masked`
    centred = Augmenter(AugmentOptions(style="surgical", face="center", worn_masks=WornMaskCheck()))
    wide = np.ascontiguousarray(np.hstack([second, worn_first, np.full_like(second, 128)]))  # worn one in the middle
    mixed = centred.augment(wide, "wide.jpg")
    assert mixed.status == "ok" and len(mixed.faces) == 2 and not any(face.masked for face in mixed.faces)
    bare, middle = sorted(mixed.faces, key=lambda face: face.box[0])
    assert middle.message.startswith("mask not drawn: wears a mask already")
    assert bare.message == "not the face nearest the centre"
    # without the check, the face in a mask is masked again, as before
    assert Augmenter(AugmentOptions(style="surgical")).augment(pair, "pair.jpg").faces[0].masked


def test_bad_settings_and_points_are_refused(press_photos):
    with pytest.raises(ValueError, match="lower_skin_max"):
        WornMaskCheck(lower_skin_max=1.5)
    with pytest.raises(ValueError, match="upper_skin_min"):
        WornMaskCheck(upper_skin_min=float("nan"))
    with pytest.raises(ValueError, match="worn_masks is None or a maskgen.worn.WornMaskCheck"):
        AugmentOptions(worn_masks=True)
    with pytest.raises(ValueError, match=r"points5 are 5 finite \(x, y\) points, got shape \(4, 2\)"):
        skin_shares(press_photos[0], np.zeros((4, 2)))
    with pytest.raises(ValueError, match="points5 are 5 finite .* got NaN or infinite values"):
        skin_shares(press_photos[0], np.full((5, 2), np.nan))
    from maskgen.detect import Face

    face = Face(box=(0, 0, 10, 10), score=0.9, landmarks=((1, 1), (2, 2), (3, 3), (4, 4), (5, 5)))
    with pytest.raises(ValueError, match=r"points5 are 5 finite \(x, y\) points, got a Face: give its .points$"):
        WornMaskCheck()(press_photos[0], face)  # (its whole repr was the message)
    # a face wholly off the image has no pixel to read, so colour tells nothing
    off = np.array([[-500, -500], [-460, -500], [-480, -480], [-495, -460], [-465, -460]], float)
    assert np.isnan(skin_shares(press_photos[0], off)).all() and WornMaskCheck()(press_photos[0], off).worn is None


def test_a_bare_face_cut_below_the_nose_is_not_taken_for_one_in_a_mask(press_photos):
    """The image's edge cuts a bare face between its nose and mouth: its mouth and chin are not there
    to be read, so the face is not `worn` (it read 0 % skin there, and was left unmasked)."""
    finder, check = FaceFinder(FinderOptions()), WornMaskCheck()
    for image in press_photos:
        face = max(finder.find(image), key=lambda f: f.width)
        nose, mouth = face.points[2, 1], face.points[3:, 1].mean()
        cut = np.ascontiguousarray(image[:int(nose + 0.3 * (mouth - nose))])
        verdict = check(cut, face.points)
        assert verdict.worn is None and np.isnan(verdict.lower), verdict


def test_dark_pixels_do_not_count_as_skin_and_the_thresholds_are_inclusive():
    """A face drawn in the ArcFace template's own frame (its 5 points are the template's): skin above,
    and below a near-black whose chroma falls inside the skin box (a black mask's shadows: Y 30, Cr 150,
    Cb 100). Too dark to carry colour, it is not skin, so the face wears a mask. A share exactly at
    a threshold counts (at most `lower_skin_max`, at least `upper_skin_min`)."""
    from maskgen.align import ARCFACE_112

    def rgb(y, cr, cb):
        return cv2.cvtColor(np.uint8([[[y, cr, cb]]]), cv2.COLOR_YCrCb2RGB)[0, 0]

    face = np.empty((112, 112, 3), np.uint8)
    face[:] = rgb(160, 150, 110)   # skin
    face[70:] = rgb(30, 150, 100)  # from below the nose: dark, skin-like chroma
    lower, upper = skin_shares(face, ARCFACE_112.array)
    assert lower == 0.0 and upper == 1.0 and WornMaskCheck()(face, ARCFACE_112.array).worn is True
    check = WornMaskCheck()
    assert check.verdict(0.3, 0.3).worn is True and check.verdict(0.31, 0.9).worn is False
    assert check.verdict(0.1, 0.29).worn is None
