"""The README's Python examples, run as written on real photos (the command-line examples are run by
tests/test_cli.py::test_readme_commands_run_verbatim): a renamed function, argument or field breaks
them here rather than in a user's notebook."""

from __future__ import annotations

import contextlib
import io
import re

import numpy as np
import pandas as pd

from conftest import ROOT


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)


def test_the_readme_python_examples_run_as_written(tmp_path, face_photos, monkeypatch):
    import jobs.local
    from maskgen.decode import decode_image
    from maskgen.record import FaceRecord

    blocks = readme_python_blocks()
    assert len(blocks) == 7, [b.splitlines()[0] for b in blocks]  # a new example: add it below
    detection, finding, augmenting, worn, embedding, own_model, jobs_block = blocks
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo.jpg").write_bytes(face_photos[0].read_bytes())
    others = [decode_image(p.read_bytes()) for p in face_photos[1:4]]
    ns = {"rgb_a": others[0], "rgb_b": others[1], "rgb_c": others[2]}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(detection, ns)
    assert ns["crop"].shape == (112, 112, 3) and ns["crop"].dtype == np.uint8
    assert len(ns["batches"]) == 3 and all(isinstance(faces, list) for faces in ns["batches"])
    assert printed.getvalue().count("\n") == len(ns["detector"].detect(ns["rgb"])) >= 1  # a line per face

    exec(finding, ns)
    sources = re.compile(r"(mtcnn|yunet|yunet\+pad|mtcnn\+pad|onet-whole-image)(\+second-look)?")
    assert ns["faces"] and all(sources.fullmatch(face.source) for face in ns["faces"])

    exec(augmenting, ns)
    result = ns["result"]
    assert result.status in ("ok", "no_face") and result.image.shape == ns["rgb"].shape
    masked = [face for face in result.faces if face.masked]
    assert masked and len(result.crops) == len(masked) and result.crops[0].shape == (112, 112, 3)
    assert all(isinstance(face, FaceRecord) and face.mask["style"] for face in masked)

    exec(worn, ns)  # `face`: the detection example's last face
    verdict = ns["WornMaskCheck"]()(ns["rgb"], ns["face"].points)
    assert verdict.worn in (True, False, None) and 0 <= verdict.lower <= 1

    exec(embedding, ns)
    assert ns["vectors"].shape == (len(ns["faces"]), ns["embedder"].dim)
    np.testing.assert_allclose(np.linalg.norm(ns["vectors"], axis=1), 1, atol=1e-5)
    assert ns["embedder"].model_id == re.search(r'"(sface@sha256:\w+)"', embedding)[1]  # the id the comment shows

    assert own_model.startswith('embedder = Embedder("w600k_r50.onnx"')  # a model of the user's own: not here

    # the jobs on a small real dataset in place of the shared photos and the bucket, on a machine with
    # no cluster to join (as the example's reader has; this test process may hold a Ray of its own)
    dataset = tmp_path / "faces"
    for person in sorted({p.parent.name for p in face_photos})[:2]:
        (dataset / person).mkdir(parents=True)
        for photo in sorted(p for p in face_photos if p.parent.name == person)[:2]:
            (dataset / person / photo.name).symlink_to(photo)
    code = jobs_block.replace('"../shared/data/faces"', repr(str(dataset)))
    code = code.replace('"s3://bucket/masked"', repr(str(tmp_path / "masked")))
    assert code.count(repr(str(dataset))) == 2 and "s3://" not in code
    monkeypatch.setattr(jobs.local, "cluster_reachable", lambda: False)
    exec(code, ns)
    assert ns["summary"].inputs == 4 and ns["summary"].statuses.get("ok", 0) >= 3
    manifest = ns["manifest"]
    assert isinstance(manifest, pd.DataFrame) and set(manifest.identity) == {p.name for p in dataset.iterdir()}
    assert manifest.source_key.nunique() == 4
    assert (tmp_path / "out" / "run" / "report" / "report.md").is_file()
    assert {"run", "report"} <= set(ns["result"])
