"""Mask-aware matching on real faces: the modes in the embedder and in `mfr run` / `mfr score`."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from conftest import photo_folder
from jobs.embed import read_shards
from jobs.run import run_pipeline
from test_jobs_pipeline import assert_same_figures, figure_lines


@pytest.fixture(scope="module")
def faces(detected, face_photos):
    """Three real photos with their largest face's five points."""
    out = []
    for path in face_photos[:3]:
        image, found = detected(path)
        face = max(found, key=lambda f: f.width * f.height)
        out.append((image, face.points))
    return out


def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_flip_and_upper_face_change_what_the_model_sees(faces):
    from recog.embed import Embedder

    plain, flip, upper = (Embedder("sface", flip=f, region=r) for f, r in ((False, "full"), (True, "full"),
                                                                           (False, "upper")))
    for image, points in faces:
        p, f, u = (e.embed_faces(image, [points])[0] for e in (plain, flip, upper))
        mirror = plain.embed_crops(plain.align(image, [points])[:, :, ::-1])[0]
        expected = (p + mirror) / np.linalg.norm(p + mirror)
        assert cosine(f, expected) > 0.9999  # the face and its mirror averaged (before normalising)
        assert cosine(f, p) < 0.9999
        assert 0.1 < cosine(p, u) < 0.95  # the same face, seen only above the mask line
    with pytest.raises(ValueError, match="region must be"):
        Embedder("sface", region="lower")


def first_photos(face_photos, people: slice, per_person: int) -> list:
    """The first `per_person` photos (in name order) of each of the people `people` selects (in name
    order): small folder-per-identity datasets of real faces."""
    names = sorted({p.parent.name for p in face_photos})[people]
    return [photo for person in names for photo in sorted(p for p in face_photos if p.parent.name == person)[:per_person]]


def test_run_with_modes_and_fusion(ray_runtime, face_photos, tmp_path):
    dataset = photo_folder(tmp_path / "dataset", first_photos(face_photos, slice(0, 3), 3))
    out = tmp_path / "run"
    result = run_pipeline(str(dataset), str(out), models=["sface", "dlib-resnet"],
                          modes=["plain", "masked-gallery"], fuse=True)
    names = [r.name for r in result["report"]["results"]]
    assert names == ["sface plain", "sface masked-gallery", "dlib-resnet plain", "dlib-resnet masked-gallery",
                     "fusion: sface plain + dlib-resnet plain",
                     "fusion: sface masked-gallery + dlib-resnet masked-gallery"]
    report = json.loads((out / "report" / "report.json").read_text())
    for row in report["results"]:
        assert 0.5 < row["verification"]["auc"] <= 1.0 and row["identification"]["gallery"] == 3, row["name"]
    # which masks and which fused methods, said in the report (two styles' reports read alike; the fused
    # rows were in no list of report.json)
    assert report["masks"] == "the seed mask style, run seed 0" and report["protocol"].endswith(
        "(the seed mask style, run seed 0)")
    assert [f["methods"] for f in report["fusions"]] == [["sface plain", "dlib-resnet plain"],
                                                         ["sface masked-gallery", "dlib-resnet masked-gallery"]]
    assert report["fusions"][0]["model_ids"] == [report["model_ids"]["sface plain"],
                                                 report["model_ids"]["dlib-resnet plain"]]

    # the masked gallery wears the probes' mask: a gallery image is embedded from the very masked
    # face augment wrote (same style, seed and landmarks), so it embeds like that crop as written
    # (JPEG aside), and closer to it than its unmasked embedding does
    from jobs.augment import read_manifest
    from maskgen.decode import decode_image
    from recog.embed import Embedder

    masked_gallery, masked_gallery_emb = read_shards(str(out / "embeddings" / "sface" / "masked-gallery" / "unmasked"))
    plain_gallery, plain_emb = read_shards(str(out / "embeddings" / "unmasked"))
    assert set(masked_gallery["mode"]) == {"masked-gallery"} and set(plain_gallery["mode"]) == {"plain"}
    assert sorted(masked_gallery.key) == sorted(plain_gallery.key) and len(masked_gallery) == 3
    crops = read_manifest(str(out / "masked")).set_index("source_key").crop_key
    sface = Embedder("sface")
    for j, key in enumerate(masked_gallery.key):
        written = sface.embed_crops(decode_image((out / "masked" / crops[key]).read_bytes())[None])[0]
        k = int(np.nonzero(plain_gallery.key.to_numpy() == key)[0][0])
        assert cosine(written, masked_gallery_emb[j]) > 0.97, key
        assert cosine(written, masked_gallery_emb[j]) > cosine(written, plain_emb[k]), key


def test_score_compares_and_fuses_from_the_command_line(ray_runtime, tmp_path, face_photos, capsys):
    from jobs.cli import main

    dataset = photo_folder(tmp_path / "dataset", first_photos(face_photos, slice(3, 5), 3))
    masked = tmp_path / "masked"
    # the shards to score, made on the local pool (it writes what Ray writes: tests/test_local_executor.py)
    here = ["--quiet", "--executor", "local"]
    assert main(["mask", str(dataset), str(masked), "--largest-only", *here]) == 0
    for model in ("sface", "dlib-resnet"):
        assert main(["embed", str(dataset), str(tmp_path / model / "g"), "--model", model, *here]) == 0
        assert main(["embed", str(masked), str(tmp_path / model / "p"), "--model", model, "--from-augment",
                     "--masked", *here]) == 0
    assert main(["score", str(tmp_path / "sface" / "p"), str(tmp_path / "sface" / "g"), str(tmp_path / "report"),
                 "--name", "a", "--compare", "b", str(tmp_path / "dlib-resnet" / "p"),
                 str(tmp_path / "dlib-resnet" / "g"), "--fuse", "a,b"]) == 0
    printed = capsys.readouterr().out
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| a |" in text and "| b |" in text and "| fusion: a + b |" in text
    # the headline figures in the terminal, each method's and each two compared, as report.json has them
    body = json.loads((tmp_path / "report" / "report.json").read_text())
    a, b = body["results"][:2]

    def pct(value) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}"

    lines = printed.splitlines()  # (the jobs before it printed their summaries)
    at = lines.index("figures (report.md has their 95 % intervals and the rest):")
    assert lines[at:at + 4] == [
        "figures (report.md has their 95 % intervals and the rest):",
        *(f"  {r['name']:<13}  TAR@FAR=0.01 {pct((r['verification']['tar_at_far']['0.01'] or {}).get('tar')):>5} %   "
          f"AUC {pct(r['verification']['auc']):>5} %   rank-1 {pct(r['identification']['rank']['1']):>5} %"
          for r in body["results"])]
    c = body["paired"][0]
    assert (f"  a vs b (rank-1 {100 * a['identification']['rank']['1']:.1f} % vs "
            f"{100 * b['identification']['rank']['1']:.1f} %, {c['probes']} probes): {c['first_only']} vs "
            f"{c['second_only']} identified by one alone, p {c['p_value']:.3g} (Holm {c['p_holm']:.3g})") in printed
    # a folder of one model and mode: --name of another built-in model, or of its model in another mode,
    # was taken as a label, and the report named sface's figures dlib-resnet's; a name that is no
    # model's is a label, "@" and all (mfr run names an external model's method by its path)
    for name, other in (("dlib-resnet", "model"), ("DLIB-resnet flip", "model"), ("sface upper-face", "mode"),
                        ("SFace flip", "mode")):
        assert main(["score", str(tmp_path / "sface" / "p"), str(tmp_path / "sface" / "g"), str(tmp_path / "mislabel"),
                     "--name", name]) == 2, name
        assert (f"holds the rows of sface plain only: --name '{name}' names another {other}; name the method by "
                "what the folder holds, or with a label that names no model") in capsys.readouterr().err
        assert not (tmp_path / "mislabel").exists()
    from jobs.score import choose_method

    held = {("sface@sha256:0123abcd", "plain")}
    for label in ("models/arcface@r100.onnx", "me@lab", "baseline flip", "sface", "SFACE plain",
                  "sface masked-gallery", "sface@sha256:0123abcd"):  # (masked-gallery scores plain probes)
        assert choose_method(held, label, "p") == ("sface@sha256:0123abcd", "plain"), label
    with pytest.raises(ValueError, match="names another model"):
        choose_method(held, "sface@sha256:ffff", "p")
    # three methods, three comparisons: each p adjusted for the other two (Holm)
    from recog.metrics import holm_adjust

    assert [c["p_holm"] for c in body["paired"]] == holm_adjust([c["p_value"] for c in body["paired"]]).tolist()
    # the same command again: the report is up to date and kept, and its figures and comparisons are
    # printed from its report.json as the first run printed them (it printed its paths only)
    figures = figure_lines(printed)
    assert main(["score", str(tmp_path / "sface" / "p"), str(tmp_path / "sface" / "g"), str(tmp_path / "report"),
                 "--name", "a", "--compare", "b", str(tmp_path / "dlib-resnet" / "p"),
                 str(tmp_path / "dlib-resnet" / "g"), "--fuse", "a,b"]) == 0
    again = capsys.readouterr().out.splitlines()
    assert again[:len(figures)] == figures and again[len(figures)].startswith("report up to date"), again
    # 3 methods, why their TAR reads n/a, 3 paired comparisons
    assert len(figures) == 8 and figures[4].startswith("  TAR@FAR=0.01 reads n/a")
    assert json.loads((tmp_path / "report" / "report.json").read_text()) == body
    # the reducer on Ray tasks, the gallery cut into parts of 3 entries (identities split between
    # parts), gives the same figures for each model (cosine and Euclidean) and for their fusion
    assert main(["score", str(tmp_path / "sface" / "p"), str(tmp_path / "sface" / "g"), str(tmp_path / "report-d"),
                 "--name", "a", "--compare", "b", str(tmp_path / "dlib-resnet" / "p"),
                 str(tmp_path / "dlib-resnet" / "g"), "--fuse", "a,b", "--distributed", "--gallery-part-rows", "3",
                 "--gallery-per-identity", "2", "--score-tasks-per-gpu", "2"]) == 0
    assert main(["score", str(tmp_path / "sface" / "p"), str(tmp_path / "sface" / "g"), str(tmp_path / "report-2"),
                 "--name", "a", "--compare", "b", str(tmp_path / "dlib-resnet" / "p"),
                 str(tmp_path / "dlib-resnet" / "g"), "--fuse", "a,b", "--gallery-per-identity", "2"]) == 0
    bodies = [json.loads((tmp_path / r / "report.json").read_text()) for r in ("report-2", "report-d")]
    one, many = (body["results"] for body in bodies)
    assert [r["name"] for r in many] == ["a", "b", "fusion: a + b"]
    # the methods compared probe by probe (rank-1 hits, McNemar): every two of them, alike in both reducers
    assert [c["methods"] for c in bodies[0]["paired"]] == [["a", "b"], ["a", "fusion: a + b"], ["b", "fusion: a + b"]]
    assert bodies[0]["paired"] == bodies[1]["paired"]
    for c, (x, y) in zip(bodies[0]["paired"], [(0, 1), (0, 2), (1, 2)]):
        assert c["rates"] == [one[x]["identification"]["rank"]["1"], one[y]["identification"]["rank"]["1"]]
        assert c["probes"] == one[x]["identification"]["mated_probes"] and c["unpaired"] == 0
    for x, y in zip(one, many):
        # a threshold is a score: BLAS may sum a product with a 3-column part in another order
        assert_same_figures(x, y, threshold_rtol=1e-6)
    assert one[2]["identification"]["gallery"] == 4 and one[2]["verification"]["genuine"] > 0
    # what a score (and so a threshold) is, per method: a Euclidean model's is minus the distance
    from recog.report import SCORE_UNITS

    units = [SCORE_UNITS["cosine"], SCORE_UNITS["euclidean"], SCORE_UNITS["fused"]]
    assert [r["score"] for r in one] == [r["score"] for r in many] == units
    assert one[1]["verification"]["eer_threshold"] < 0
    assert f"Scores (and thresholds in report.json): a: {units[0]}; b: {units[1]}; fusion: a + b: {units[2]}." in \
        (tmp_path / "report-2" / "report.md").read_text()
    assert main(["score", str(tmp_path / "sface" / "p"), str(tmp_path / "sface" / "g"), str(tmp_path / "r2"),
                 "--fuse", "a,zzz"]) == 2
    assert "cannot fuse" in capsys.readouterr().err
    # --max-pairs: impostors sampled per probe past it (max_pairs was Python's only), and said so
    assert main(["score", str(tmp_path / "sface" / "p"), str(tmp_path / "sface" / "g"), str(tmp_path / "r4"),
                 "--max-pairs", "4"]) == 0
    sampled = json.loads((tmp_path / "r4" / "report.json").read_text())["results"][0]["verification"]
    assert sampled["impostors_sampled_per_probe"] == 1 and "seeded sample of 1 per probe" in \
        (tmp_path / "r4" / "report.md").read_text()

    # both models embedded into one output (their shards side by side, as `mfr embed` of each model
    # into the same folder writes them): --name and --compare choose each method's model
    for side in ("p", "g"):
        for model in ("sface", "dlib-resnet"):
            shutil.copytree(tmp_path / model / side, tmp_path / "both" / side, dirs_exist_ok=True)
    both = [str(tmp_path / "both" / "p"), str(tmp_path / "both" / "g")]
    assert main(["score", *both, str(tmp_path / "r3")]) == 2
    assert "holds the shards of several models or modes (dlib-resnet plain, sface plain): choose one with --name" \
        in capsys.readouterr().err
    assert main(["score", *both, str(tmp_path / "r3"), "--name", "sface", "--compare", "dlib-resnet", *both,
                 "--fuse", "sface,dlib-resnet"]) == 0
    chosen = json.loads((tmp_path / "r3" / "report.json").read_text())["results"]
    apart = json.loads((tmp_path / "report" / "report.json").read_text())["results"]
    assert [r["name"] for r in chosen] == ["sface", "dlib-resnet", "fusion: sface + dlib-resnet"]
    for x, y in zip(chosen, apart):
        assert_same_figures(x, y)
    assert main(["score", *both, str(tmp_path / "r4"), "--name", "sface flip"]) == 2
    assert "holds no single model and mode named 'sface flip'" in capsys.readouterr().err
    for named in (["--name", "sface"], []):  # two rows of one name (the second: the first took its model's)
        assert main(["score", str(tmp_path / "sface" / "p"), str(tmp_path / "sface" / "g"), str(tmp_path / "r5"),
                     *named, "--compare", "sface", *both]) == 2
        assert "two methods are named 'sface'" in capsys.readouterr().err
    # a gallery embedded flipped against plain probes: two embedding functions, refused (it was scored,
    # under whatever --name said), in one process and distributed
    assert main(["embed", str(dataset), str(tmp_path / "flipped"), "--mode", "flip", *here]) == 0
    for distributed in ([], ["--distributed"]):
        assert main(["score", str(tmp_path / "sface" / "p"), str(tmp_path / "flipped"), str(tmp_path / "r6"),
                     "--name", "mixed", *distributed]) == 2
        assert "are embedded in the plain mode and the gallery" in capsys.readouterr().err
        assert not (tmp_path / "r6").exists()


def test_a_rerun_with_another_first_model_keeps_each_models_shards_apart(face_photos, tmp_path, capsys):
    """The first model's plain shards go to embeddings/{unmasked,masked}: a rerun whose first model was
    another put its shards in the same folders, and its report failed on Ray ("must come from one
    model") or scored the first model's. The model that first had those folders keeps them."""
    from jobs.cli import main

    dataset = photo_folder(tmp_path / "dataset", first_photos(face_photos, slice(0, 2), 2))
    out = tmp_path / "run"
    here = ["--quiet", "--executor", "local"]
    assert main(["run", str(dataset), str(out), *here]) == 0
    assert main(["run", str(dataset), str(out), "--model", "dlib-resnet", *here]) == 0
    printed = capsys.readouterr().out
    assert "shards: embeddings/dlib-resnet/plain/unmasked, embeddings/dlib-resnet/plain/masked" in printed, printed
    report = json.loads((out / "report" / "report.json").read_text())
    assert [r["name"] for r in report["results"]] == ["dlib-resnet"]
    for side in ("unmasked", "masked"):
        models = {m.split("@")[0] for m in read_shards(str(out / "embeddings" / side))[0].model_id}
        assert models == {"sface"}, (side, models)
    assert main(["run", str(dataset), str(out), "--models", "dlib-resnet,sface", *here]) == 0  # nothing to do
    assert re.search(r"skipped \(already done\)\s+4\n", capsys.readouterr().out)
    report = json.loads((out / "report" / "report.json").read_text())
    assert [r["name"] for r in report["results"]] == ["dlib-resnet", "sface"]


def test_a_run_of_one_mode_other_than_plain_is_named_with_its_mode():
    """`mfr run --modes flip` was reported as plain `sface`: only the shard paths said otherwise."""
    from jobs.run import plan_targets

    infos = {"sface": ("sface@sha256:1", 128, "cosine"), "dlib-resnet": ("dlib-resnet@sha256:2", 128, "euclidean")}

    def names(models, modes):
        return [name for name, _, _ in plan_targets(models, modes, infos)[1]]

    assert names(["sface"], ["plain"]) == ["sface"] and names(["sface", "dlib-resnet"], ["plain"]) == \
        ["sface", "dlib-resnet"]
    assert names(["sface"], ["flip"]) == ["sface flip"]
    assert names(["sface"], ["plain", "upper-face"]) == ["sface plain", "sface upper-face"]


def test_a_model_file_gets_one_folder_however_its_path_is_spelled():
    """A path as `--models` made keys such as `embeddings//data/m.onnx/plain`, `../m.onnx` was refused
    as leaving the output, and `./m.onnx` in a rerun embedded everything again in another folder."""
    from jobs.run import plan_targets, run_methods

    infos = {m: ("m@sha256:1+spec:2", 16, "cosine") for m in ("/data/m.onnx", "./m.onnx", "../m.onnx")}
    infos["sface"] = ("sface@sha256:3", 128, "cosine")
    folders = {m: sorted(t.folder for t in plan_targets(["sface", m], ["plain"], infos)[0])
               for m in infos if m != "sface"}
    assert set(map(tuple, folders.values())) == {("embeddings/m.onnx/plain/masked", "embeddings/m.onnx/plain/unmasked",
                                                  "embeddings/masked", "embeddings/unmasked")}
    with pytest.raises(ValueError, match=r"models a/m.onnx and b/m.onnx would share the shard folder "
                                         r"embeddings/m.onnx/: give model files of different names"):
        run_methods(["a/m.onnx", "b/m.onnx"], ["plain"])


def test_a_rerun_keeps_the_folder_an_earlier_version_named_by_the_models_path(tmp_path):
    """Outputs made before put `--models sface,models2/m.onnx` under embeddings/models2/m.onnx/: a rerun
    that looked in embeddings/m.onnx/ embedded every image again beside them."""
    from jobs.run import run_targets
    from jobs.storage import open_store

    infos = {"sface": ("sface@sha256:3", 128, "cosine"), "models2/m.onnx": ("m@sha256:1+spec:2", 16, "cosine")}
    out = open_store(tmp_path / "run")
    new = sorted(t.folder for t in run_targets(out, list(infos), ["plain"], infos)[0])
    assert "embeddings/m.onnx/plain/masked" in new
    out.write("embeddings/models2/m.onnx/plain/masked/shards/part-0.parquet", b"x")
    kept = sorted(t.folder for t in run_targets(out, list(infos), ["plain"], infos)[0])
    assert kept == sorted(f.replace("embeddings/m.onnx", "embeddings/models2/m.onnx") for f in new)


def test_score_lists_rows_of_one_name_by_their_model_id():
    """A rerun after a sidecar edit embeds again beside the old rows; both were listed as 'mine plain'."""
    from jobs.score import choose_method

    held = {("mine@sha256:aa+spec:01", "plain"), ("mine@sha256:aa+spec:02", "plain"), ("sface@sha256:bb", "plain")}
    with pytest.raises(ValueError, match=r"\(mine@sha256:aa\+spec:01 plain, mine@sha256:aa\+spec:02 plain, "
                                         r"sface plain\)"):
        choose_method(held, "mine", "out/emb")
    assert choose_method(held, "mine@sha256:aa+spec:02", "out/emb") == ("mine@sha256:aa+spec:02", "plain")
