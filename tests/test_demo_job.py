"""`mfr demo` / `make demo`: the whole job on the demo dataset made offline from packaged photos."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from jobs.cli import main
from jobs.demo import PHOTOS, PackagedPhoto, build_dataset, vary_face


def test_vary_face_is_seeded_and_pure():
    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    box = (150, 100, 250, 220)
    one = vary_face(image, box, np.random.default_rng(5))
    assert one.shape == (250, 250, 3)
    np.testing.assert_array_equal(one, vary_face(image, box, np.random.default_rng(5)))
    assert not np.array_equal(one, vary_face(image, box, np.random.default_rng(6)))
    # where the picture reaches past the photo: one plain colour, the photo's edge's median (a mirror
    # of a tight portrait repeated its face, upside down too, and each copy was a face in the manifest)
    portrait = np.zeros((120, 100, 3), np.uint8)
    portrait[:] = (90, 100, 110)
    portrait[20:100, 15:85] = np.random.default_rng(1).integers(0, 255, (80, 70, 3), dtype=np.uint8)
    plain = vary_face(portrait, (15, 20, 85, 100), np.random.default_rng(5), plain=True)
    assert np.array_equal(plain[0, 0], [90, 100, 110]) and np.array_equal(plain[-1, -1], [90, 100, 110])
    assert (np.abs(plain.astype(int) - [90, 100, 110]).max(axis=2) == 0).mean() > 0.5


def test_packaged_photos_are_checksummed():
    wrong = PackagedPhoto("astronaut", "scikit-image", None, PHOTOS[2].member, "0" * 64)
    with pytest.raises(RuntimeError, match="expected SHA-256"):
        wrong.read()


def test_mfr_demo_writes_every_output(ray_runtime, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 0  # exactly as the README says
    printed = capsys.readouterr().out
    assert "not a benchmark" in printed
    out = tmp_path / "out" / "demo"
    dataset = build_dataset()  # cached: the same folder the demo used
    record = json.loads((dataset.parent / "dataset.json").read_text())
    assert len(record["identities"]) >= 8 and all(len(v) == 6 for v in record["identities"].values())
    for name in ("contact_sheet.png", "run/report/report.md", "run/report/roc.png", "run/report/scores.png",
                 "run/report/cmc.png"):
        assert (out / name).is_file() and str(out / name) in printed, name
    masked = list((out / "run" / "masked" / "images").rglob("*.jpg"))
    assert len(masked) == sum(len(v) for v in record["identities"].values())
    assert list((out / "run" / "masked" / "manifest").rglob("*.parquet"))
    assert list((out / "run" / "embeddings" / "masked" / "shards").rglob("*.parquet"))
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet.shape[0] >= 2 * 112 and sheet.shape[1] >= 6 * 112
    report = json.loads((out / "run" / "report" / "report.json").read_text())
    ident = report["results"][0]["identification"]
    assert ident["gallery"] == len(record["identities"])
    # the figures themselves, under the demo's line, as report.json has them
    lines = printed.splitlines()
    at = lines.index("figures (report.md has their 95 % intervals and the rest):")
    assert "not a benchmark" in lines[at - 1]
    assert lines[at + 1].startswith("  sface  TAR@FAR=0.01 ") and lines[at + 1].endswith(
        f"rank-1 {100 * ident['rank']['1']:>5.1f} %")
