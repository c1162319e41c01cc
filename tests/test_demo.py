"""The one-photo detection demo (`python -m maskgen.demo`) produces its outputs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import ROOT
from maskgen import demo


def test_demo_writes_annotated_picture_and_aligned_crop(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "detections.json").read_text())
    assert len(summary["faces"]) == 1 and summary["faces"][0]["score"] > 0.99
    x1, y1, x2, y2 = summary["faces"][0]["box"]
    assert 150 < x1 < x2 < 300 and 40 < y1 < y2 < 200  # the astronaut's face, upper centre
    annotated = cv2.imread(summary["outputs"]["annotated"])
    assert annotated.shape == (512, 512, 3)
    crop = cv2.imread(summary["outputs"]["aligned_crops"][0])
    assert crop.shape == (112, 112, 3)
    masked = {style: cv2.imread(path) for style, path in summary["outputs"]["masked"].items()}
    assert set(masked) == {"seed", "surgical", "cloth", "n95", "kn95"}
    for style, picture in masked.items():
        assert picture.shape == annotated.shape
    sheet = cv2.imread(summary["outputs"]["contact_sheet"])
    assert sheet.shape == (2 * 112 + 3 * 2, 5 * 112 + 6 * 2, 3)  # 5 styles: originals over masked
    printed = capsys.readouterr().out
    assert "astronaut_detections.jpg" in printed and "1 face(s)" in printed and "contact sheet" in printed


def test_the_photo_demo_leaves_mfr_demos_folder_alone(tmp_path, monkeypatch):
    """Both demos wrote `out/demo` by default: the photo demo replaced `mfr demo`'s contact sheet, and
    `mfr demo` (`make demo`) then refused the folder as holding files it did not write."""
    monkeypatch.chdir(tmp_path)
    assert demo.main([]) == 0
    assert (tmp_path / "out" / "astronaut" / "detections.json").exists() and not (tmp_path / "out" / "demo").exists()


def test_demo_photo_is_checksummed():
    with pytest.raises(RuntimeError, match="expected SHA-256"):
        demo.packaged_photo(("scikit-image", "skimage/data/astronaut.png", "0" * 64))


def test_gallery_command_draws_every_style(tmp_path, capsys):
    from maskgen import gallery

    out = tmp_path / "styles.jpg"
    assert gallery.main(["--out", str(out)]) == 0
    sheet = cv2.imread(str(out))
    assert sheet.shape == (2 * (200 + 24), 5 * 200, 3)
    printed = capsys.readouterr().out
    for label, _ in gallery.GALLERY:
        assert label in printed
    # the README's picture is what this command makes today (it had gone stale after the outlines changed)
    committed = cv2.imread(str(ROOT / "docs" / "mask_styles.jpg")).astype(int)
    assert committed.shape == sheet.shape
    assert (np.abs(committed - sheet.astype(int)).max(axis=2) > 20).mean() < 0.001
