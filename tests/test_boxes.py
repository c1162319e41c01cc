"""Box geometry of the cascade against brute-force definitions."""

from __future__ import annotations

import numpy as np
import pytest

from maskgen import boxes as B


def _random_boxes(rng, n, extent=200.0):
    xy = rng.uniform(0, extent, size=(n, 2))
    wh = rng.uniform(5, 60, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def _iou_one(a, b, method):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter) if method == "union" else inter / min(area_a, area_b)


@pytest.mark.parametrize("method", ["union", "min"])
def test_iou_matrix_matches_definition(method):
    rng = np.random.default_rng(3)
    a, b = _random_boxes(rng, 7), _random_boxes(rng, 9)
    expected = np.array([[_iou_one(x, y, method) for y in b] for x in a])
    np.testing.assert_allclose(B.iou_matrix(a, b, method), expected, rtol=1e-12)


@pytest.mark.parametrize("method", ["union", "min"])
@pytest.mark.parametrize("block", [1024, 3])
def test_nms_matches_brute_force_definition(method, block):
    rng = np.random.default_rng(4)
    boxes = _random_boxes(rng, 300, extent=150)
    scores = rng.uniform(size=300)
    groups = rng.integers(0, 3, size=300)
    order = np.argsort(-scores, kind="stable")
    expected = [i for pos, i in enumerate(order)
                if not any(groups[j] == groups[i] and _iou_one(boxes[j], boxes[i], method) > 0.5
                           for j in order[:pos])]
    kept = B.nms(boxes, scores, 0.5, method, groups=groups, block=block)
    assert kept.tolist() == expected
    assert 0 < len(kept) < 300


def test_nms_groups_do_not_suppress_each_other():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float)
    scores = np.array([0.9, 0.8])
    assert B.nms(boxes, scores, 0.5).tolist() == [0]
    assert sorted(B.nms(boxes, scores, 0.5, groups=np.array([0, 1])).tolist()) == [0, 1]
    assert B.nms(np.empty((0, 4)), np.empty(0), 0.5).tolist() == []


def test_pyramid_covers_min_face_to_whole_image():
    scales = B.pyramid_scales(250, 250, min_face_size=20, scale_factor=0.709)
    assert scales[0] == pytest.approx(12 / 20)
    np.testing.assert_allclose(np.diff(np.log(scales)), np.log(0.709))
    assert 250 * scales[-1] >= 12 > 250 * scales[-1] * 0.709
    assert B.pyramid_scales(250, 250, min_face_size=40)[0] == pytest.approx(0.3)
    assert B.pyramid_scales(15, 300) == []  # short side 15 px * 0.6 < 12: no face of 20 px fits


def test_square_and_regress():
    sq = B.square(np.array([[10.0, 20.0, 30.0, 60.0]]))
    np.testing.assert_allclose(sq, [[0.0, 20.0, 40.0, 60.0]])
    out = B.regress(np.array([[0.0, 0.0, 9.0, 19.0]]), np.array([[0.1, -0.1, 0.2, 0.0]]))
    np.testing.assert_allclose(out, [[1.0, -2.0, 11.0, 19.0]])


def test_pnet_boxes_map_cells_back_to_the_image():
    prob = np.zeros((1, 5, 6), np.float32)
    prob[0, 2, 3] = 0.9
    reg = np.zeros((1, 4, 5, 6), np.float32)
    n, boxes, scores = B.pnet_boxes(reg, prob, scale=0.5, threshold=0.6)
    assert n.tolist() == [0] and scores.tolist() == pytest.approx([0.9])
    np.testing.assert_allclose(boxes, [[(2 * 3 + 1) / 0.5, (2 * 2 + 1) / 0.5, (2 * 3 + 12) / 0.5, (2 * 2 + 12) / 0.5]])


def test_crop_and_resize_is_bilinear_with_zero_outside():
    rng = np.random.default_rng(5)
    image = rng.uniform(-1, 1, size=(40, 50, 3)).astype(np.float32)
    box = np.array([[5.0, 8.0, 30.0, 33.0]])
    patch = B.crop_and_resize(image, box, 6)
    assert patch.shape == (1, 3, 6, 6)

    def bilinear(y, x):
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        y1, x1 = min(y0 + 1, 39), min(x0 + 1, 49)
        fy, fx = y - y0, x - x0
        top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
        bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
        return top * (1 - fy) + bottom * fy

    for i in range(6):
        for j in range(6):
            y = (8 + i * 25 / 5) * 39 / 40
            x = (5 + j * 25 / 5) * 49 / 50
            np.testing.assert_allclose(patch[0, :, i, j], bilinear(y, x), atol=1e-5)
    outside = B.crop_and_resize(image, np.array([[-100.0, -100.0, -60.0, -60.0]]), 4)
    assert np.all(outside == 0)


def test_crop_and_resize_handles_more_patches_than_one_remap_call():
    rng = np.random.default_rng(6)
    image = rng.uniform(-1, 1, size=(64, 64, 3)).astype(np.float32)
    boxes = _random_boxes(rng, 1500, extent=40)  # 1500 x 24 rows > OpenCV's 32767-row limit
    together = B.crop_and_resize(image, boxes, 24)
    one_by_one = np.concatenate([B.crop_and_resize(image, boxes[i:i + 1], 24) for i in (0, 700, 1499)])
    np.testing.assert_array_equal(together[[0, 700, 1499]], one_by_one)
    assert together.shape == (1500, 3, 24, 24)
