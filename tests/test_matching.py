"""Mask-aware matching: the pure parts (mask line, upper-face crops, z-norm fusion)."""

from __future__ import annotations

import numpy as np
import pytest

from maskgen.align import ARCFACE_112
from recog.matching import (MODES, UPPER_FILL, fuse_matrices, keep_upper_face, mask_line, mode_from_name,
                            znorm_on_impostors)


def test_mask_line_sits_on_the_nose_bridge_of_any_template():
    y = mask_line(ARCFACE_112.points, 112)
    eyes, nose = ARCFACE_112.points[0][1], ARCFACE_112.points[2][1]
    assert eyes < y < nose and y == 60  # 51.6 + 0.4 x (71.7 - 51.6)
    assert mask_line(np.asarray(ARCFACE_112.points) * 2, 224) == 119  # 2 x 59.6, rounded


def test_upper_face_keeps_the_eyes_and_greys_the_rest():
    crops = np.random.default_rng(0).integers(0, 255, (3, 112, 112, 3), dtype=np.uint8)
    out = keep_upper_face(crops, ARCFACE_112.points)
    np.testing.assert_array_equal(out[:, :60], crops[:, :60])
    assert (out[:, 60:] == UPPER_FILL).all()
    assert not (crops[:, 60:] == UPPER_FILL).all()  # the input is left alone


def test_znorm_uses_only_impostor_scores():
    matrix = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.5]])
    mated = np.array([[True, False, False], [False, True, False]])
    z = znorm_on_impostors(matrix, mated)
    imp = matrix[~mated]
    np.testing.assert_allclose(z, (matrix - imp.mean()) / imp.std())
    np.testing.assert_allclose(z[~mated].mean(), 0, atol=1e-12)
    with pytest.raises(ValueError, match=r"at least two impostor scores with some spread \(there are 2\)"):
        znorm_on_impostors(np.ones((2, 2)), np.eye(2, dtype=bool))
    with pytest.raises(ValueError, match=r"\(there are 1\)"):
        znorm_on_impostors(np.ones((1, 2)), np.array([[True, False]]))
    # a NaN impostor was "too few impostors", a NaN mated score came back NaN, a flag of 2 read as mated
    for bad in (np.where(mated, matrix, np.nan), np.where(mated, np.inf, matrix)):
        with pytest.raises(ValueError, match="scores contain NaN or infinity"):
            znorm_on_impostors(bad, mated)
    with pytest.raises(ValueError, match=r"mated flags are True/False \(or 1/0\), got 2"):
        znorm_on_impostors(matrix, mated * 2)
    with pytest.raises(ValueError, match=r"differ in shape"):
        znorm_on_impostors(matrix, mated[:1])
    np.testing.assert_allclose(znorm_on_impostors(matrix, mated.astype(int)), z)


def test_fusion_puts_different_scales_on_one_footing():
    rng = np.random.default_rng(1)
    mated = np.eye(20, dtype=bool)
    cosine = rng.normal(0.1, 0.1, (20, 20)) + mated * 0.6
    distance_scores = -(rng.normal(1.0, 0.05, (20, 20)) - mated * 0.4)  # negated distances, other scale
    fused = fuse_matrices([cosine, distance_scores], mated)
    expected = (znorm_on_impostors(cosine, mated) + znorm_on_impostors(distance_scores, mated)) / 2
    np.testing.assert_allclose(fused, expected, rtol=1e-5)
    assert fused[mated].min() > np.median(fused[~mated])
    # the matrices as one stacked array (was numpy's "truth value ... is ambiguous"), or one alone: said
    np.testing.assert_allclose(fuse_matrices(np.stack([cosine, distance_scores]), mated), fused)
    np.testing.assert_allclose(fuse_matrices((m for m in (cosine, distance_scores)), mated), fused)  # as before
    with pytest.raises(ValueError, match="one \\(k, probes, gallery\\) array, got an array of shape \\(20, 20\\)"):
        fuse_matrices(cosine, mated)


def test_modes_by_name():
    assert set(MODES) == {"plain", "masked-gallery", "flip", "upper-face"}
    assert mode_from_name("flip").flip and mode_from_name("upper-face").region == "upper"
    with pytest.raises(ValueError, match="unknown matching mode"):
        mode_from_name("sunglasses")
    from recog.matching import MatchingMode

    with pytest.raises(ValueError, match="flip is True or False, got 'no'"):  # a true flip
        MatchingMode("mine", flip="no")
    with pytest.raises(ValueError, match="height is the crop's height in whole pixels"):
        mask_line(ARCFACE_112.points, 0)


def test_only_masked_gallery_draws_a_mask_and_upper_face_follows_a_tall_crop():
    from jobs.embed import draws_gallery_mask
    from recog.spec import ModelSpec

    assert [n for n, m in MODES.items() if m.masked_gallery] == ["masked-gallery"]
    assert not draws_gallery_mask("flip", masked=False, from_augment=False)
    assert draws_gallery_mask("masked-gallery", masked=False, from_augment=False)
    spec = ModelSpec.preset("arcface-112", input_size=(64, 128))  # 64 wide, 128 high
    line = mask_line(spec.template, 128)
    assert line == 68
    crops = np.random.default_rng(0).integers(0, 120, (2, 128, 64, 3), dtype=np.uint8)
    out = keep_upper_face(crops, spec.template)
    np.testing.assert_array_equal(out[:, :line], crops[:, :line])  # clipped by the width, rows 64-67 were grey
    assert (out[:, line:] == UPPER_FILL).all()
