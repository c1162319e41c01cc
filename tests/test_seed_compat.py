"""The seed's masked images from its landmark CSV, without detection."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import read_rgb, require_shared
from maskgen import seed
from maskgen.masks import draw_seed_mask


def test_seed_csv_and_samples_give_the_seeds_masked_images(tmp_path):
    csv_path = require_shared("seed", "landmark", "test.csv")
    samples = require_shared("seed", "sample")
    records = seed.apply_seed_masks(csv_path, samples, tmp_path)
    assert [(r["image"], r["face_type"], r["status"]) for r in records] == [
        ("1.jpg", "0_0", "ok"), ("2.jpg", "1_0", "ok"), ("3.jpg", "0_1", "ok")]
    for row in seed.read_landmark_csv(csv_path):
        original = read_rgb(samples / row.image_name)
        written = read_rgb(tmp_path / row.image_name)
        expected, coverage = draw_seed_mask(original, row.landmarks, row.face_type, mirror_profiles=False)
        assert written.shape == original.shape == (112, 112, 3)
        # written as JPEG like the seed (cv2.imwrite defaults): equal up to compression
        assert np.abs(written.astype(int) - expected.astype(int)).mean() < 3
        assert written[coverage].mean() < 20  # the black mask survives compression
        if not row.face_type.blurred:
            far = ~np.pad(coverage, 3)[3:-3, 3:-3]
            assert np.abs(written[far].astype(int) - original[far].astype(int)).mean() < 3


def test_the_blurred_sample_matches_the_seeds_own_masked_picture(tmp_path):
    """The seed's `result/result.png` shows sample 3 (frontal, blurred) before and after masking, at
    175 px. Along the mask's outline our picture was 8.55 levels from the seed's (11.6 with no
    smoothing at all): the outline was smoothed once from the unsmoothed image, where the seed smooths
    each outline pixel's patch in turn, in place."""
    import cv2

    from maskgen.masks import SEED_FRONTAL_ROWS

    montage = cv2.imread(str(require_shared("seed", "result", "result.png")))
    rows = seed.read_landmark_csv(require_shared("seed", "landmark", "test.csv"))
    assert seed.main([str(require_shared("seed", "landmark", "test.csv")), str(require_shared("seed", "sample")),
                      str(tmp_path)]) == 0
    sample = cv2.imread(str(require_shared("seed", "sample", "3.jpg")))
    small = cv2.resize(sample, (175, 175), interpolation=cv2.INTER_LANCZOS4)
    _, score, _, (x, y) = cv2.minMaxLoc(cv2.matchTemplate(montage, small, cv2.TM_CCOEFF_NORMED))
    assert score > 0.999  # the unmasked cell; the masked one is below it
    cell = montage[y + 175:y + 350, x - 1:x + 174].astype(int)
    ours = cv2.resize(cv2.imread(str(tmp_path / "3.jpg")), (175, 175), interpolation=cv2.INTER_LANCZOS4).astype(int)
    outline = np.zeros((112, 112), np.uint8)
    cv2.polylines(outline, [np.round(rows[2].landmarks[list(SEED_FRONTAL_ROWS)]).astype(np.int32)], True, 1)
    band = cv2.resize(cv2.dilate(outline, np.ones((5, 5), np.uint8)), (175, 175), interpolation=cv2.INTER_NEAREST) > 0
    difference = np.abs(cell - ours)
    print(f"\nsample 3 against the seed's picture: {difference[band].mean():.2f} levels along the outline, "
          f"{difference[~band].mean():.2f} elsewhere")
    assert difference[band].mean() < 2.5 and difference[~band].mean() < 1.0


def test_cli_prints_each_row_and_exit_code(tmp_path, capsys):
    csv_path = require_shared("seed", "landmark", "test.csv")
    code = seed.main([str(csv_path), str(require_shared("seed", "sample")), str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert out.count("ok") == 3 and "1_0" in out
    assert seed.main([str(csv_path), str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 1
    assert "missing" in capsys.readouterr().out


def test_gbk_csv_with_chinese_folder_and_windows_separators(tmp_path):
    rows = seed.read_landmark_csv(require_shared("seed", "landmark", "test.csv"))
    header = "sub_folder,image_name,face_type," + ",".join(f"part_{i}_x,part_{i}_y" for i in range(68))
    line = "\\白敬亭\\,0_0_9.jpg,0_0," + ",".join(f"{x:g},{y:g}" for x, y in rows[0].landmarks)
    path = tmp_path / "gbk.csv"
    path.write_bytes((header + "\n" + line + "\n").encode("gbk"))
    parsed = seed.read_landmark_csv(path)
    assert parsed[0].relative_path == "白敬亭/0_0_9.jpg"
    np.testing.assert_array_equal(parsed[0].landmarks, rows[0].landmarks)


def test_a_bad_row_is_its_own_record_and_the_rows_after_it_are_masked(tmp_path, capsys):
    """A name without an extension stopped the run with OpenCV's traceback, and a `..` path with a
    ValueError, after the rows before them were written; a NaN landmark was drawn and reported ok."""
    import shutil

    rows = seed.read_landmark_csv(require_shared("seed", "landmark", "test.csv"))
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(require_shared("seed", "sample") / "1.jpg", images / "1.jpg")
    shutil.copy(images / "1.jpg", images / "noext")
    header = "sub_folder,image_name,face_type," + ",".join(f"part_{i}_x,part_{i}_y" for i in range(68))

    def line(sub, name, values):
        return f"{sub},{name},0_0," + ",".join(f"{v:g}" for v in values)

    points = rows[0].landmarks.reshape(-1)
    with_nan = points.copy()
    with_nan[60] = np.nan
    (tmp_path / "cases.csv").write_text("\n".join([header, line("", "noext", points), line("..", "1.jpg", points),
                                                   line("", "1.jpg", with_nan), line("", "1.jpg", points)]) + "\n")
    records = seed.apply_seed_masks(tmp_path / "cases.csv", images, tmp_path / "out")
    assert [r["status"] for r in records] == ["unwritable", "unsafe_path", "bad_landmarks", "ok"]
    assert "OpenCV writes images named .jpg" in records[0]["message"] and not (tmp_path / "out" / "noext").exists()
    assert (tmp_path / "out" / "1.jpg").is_file()
    assert seed.main([str(tmp_path / "cases.csv"), str(images), str(tmp_path / "out2")]) == 1
    assert capsys.readouterr().out.count("\n") == 4


@pytest.mark.parametrize("sub, name", [("..", "x.jpg"), ("a", "../../x.jpg"), ("C:\\x", "y.jpg"), ("", "")])
def test_unsafe_paths_are_refused(sub, name):
    with pytest.raises(ValueError, match="unsafe or empty"):
        seed.seed_relative_path(sub, name)


def test_wrong_layout_is_refused(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not the seed's landmark layout"):
        seed.read_landmark_csv(path)
    path.write_text("sub_folder,image_name,face_type," + ",".join(f"part_{i}_x,part_{i}_y" for i in range(68))
                    + "\n\\,1.jpg,3_0," + ",".join(["1"] * 136) + "\n")
    with pytest.raises(ValueError, match="line 2.*face_type"):
        seed.read_landmark_csv(path)
