"""`mfr evaluate`: a dataset's own images to a report in one command, every sample counted."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from jobs.cli import main
from jobs.embed import read_shards
from jobs.evaluate import run_evaluate
from recog.protocols import read_pairs_file


def evaluate(*args: str) -> int:
    """`mfr evaluate ARGS` on the local pool: these tests check what the job writes and scores, alike
    on both executors (tests/test_local_executor.py); `auto` took the test process's Ray where an
    earlier test had started it. The crops test below runs on Ray. One worker process: a second loads
    the models again for a job of a batch or two, and the rows are the same."""
    return main(["evaluate", *args, "--executor", "local", "--workers", "1"])


def shard_nodes(root) -> set:
    """The `node` column of every embedding shard under `root`: "" where the local pool wrote it."""
    import pyarrow.parquet as pq

    return {node for path in root.rglob("*.parquet") for node in pq.read_table(path, columns=["node"]).column(0)
            .to_pylist()}


def test_pairs_files_are_read_by_their_shape(tmp_path):
    lfw = tmp_path / "pairs.txt"
    lfw.write_text("2 1\nA 1 2\nA 1 B 3\nC 2 4\nC 1 D 1\n")
    pairs = read_pairs_file(lfw)
    assert pairs.a[0] == "A/A_0001.jpg" and pairs.labels.tolist() == [1, 0, 1, 0]
    assert pairs.folds.tolist() == [0, 0, 1, 1]
    seed = tmp_path / "seed.csv"
    seed.write_bytes("Input,Target,Label\n白敬亭/0_0_9.jpg,白敬亭/0_0_白敬亭_0001.jpg,1\n".encode("gbk"))
    assert read_pairs_file(seed).a == ["白敬亭/0_0_9.jpg"]
    plain = tmp_path / "plain.csv"
    plain.write_text("a,b,label\nx/1.jpg,y/2.jpg,0\nx/1.jpg,x/3.jpg,1\n")
    assert read_pairs_file(plain).labels.tolist() == [0, 1] and read_pairs_file(plain).folds is None
    plain.write_text("x/1.jpg,y/2.jpg,1\nx/1.jpg,y/3.jpg,same\n")
    with pytest.raises(ValueError, match=r"plain.csv line 2: expected a,b,label \(label 1/0, true/false, yes/no\)"):
        read_pairs_file(plain)
    # an input manifest given as --pairs: its (path, identity) rows were read as pairs of images, and
    # the identities reported as images missing from the dataset
    plain.write_text("path,identity,masked\nx/1.jpg,x,1\nx/2.jpg,x,0\n")
    with pytest.raises(ValueError, match=r"its header \(path,identity,masked\) is an input manifest's, not a pairs "
                                         r"file's \(a,b,label\): give a manifest as the input"):
        read_pairs_file(plain)


def test_a_relative_protocol_is_looked_for_under_an_s3_dataset(bucket, tmp_path, monkeypatch):
    """The README's c-RMFRD line (`--pairs Protocol_verification/...`) with the dataset on S3: it was
    looked for in the working folder only."""
    from jobs.evaluate import protocol_file
    from jobs.storage import open_store

    monkeypatch.chdir(tmp_path)
    open_store(f"s3://{bucket}/ds").write("Protocol/pairs.csv", b"a,b,label\np/1.jpg,p/2.jpg,1\n")
    for dataset in (f"s3://{bucket}/ds", f"s3://{bucket}/ds/", f"s3://{bucket}/ds/manifest.csv"):
        with protocol_file("Protocol/pairs.csv", "--pairs", dataset) as path:
            assert path.name == "pairs.csv" and path.read_bytes().startswith(b"a,b,label")
    (tmp_path / "Protocol").mkdir()
    (tmp_path / "Protocol" / "pairs.csv").write_bytes(b"local")  # the working folder comes first
    with protocol_file("Protocol/pairs.csv", "--pairs", f"s3://{bucket}/ds") as path:
        assert path.read_bytes() == b"local"
    with pytest.raises(ValueError, match=rf"--lists Protocol/g.csv: no such file \(looked for {tmp_path}/Protocol/"
                                         rf"g.csv and s3://{bucket}/ds/Protocol/g.csv\)"):
        with protocol_file("Protocol/g.csv", "--lists", f"s3://{bucket}/ds"):
            pass


def test_real_masked_crops_and_the_seeds_gbk_protocol_from_the_command_line(ray_runtime, shared_data, tmp_path,
                                                                           bucket, capsys):
    import csv

    from recog.protocols import read_seed_list, read_seed_verification

    crops = shared_data / "masked_crops"
    rows = list(csv.DictReader((crops / "manifest.csv").open(encoding="utf-8")))
    people = sorted({r["identity"] for r in rows})[:36]  # a third of the set keeps the test short
    rows = [r for r in rows if r["identity"] in people]
    # the set's own folders, and one masked probe of the first person in which there is no face at all
    images = tmp_path / "images"
    for person in people:
        (images / person).parent.mkdir(parents=True, exist_ok=True)
        (images / person).symlink_to(crops / person)
    (images / "zz_blank").mkdir()
    import cv2

    cv2.imwrite(str(images / "zz_blank" / "blank.png"), np.full((160, 160, 3), 128, np.uint8))
    rows.append({"path": "zz_blank/blank.png", "identity": people[0], "masked": "1"})
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "identity", "masked"])
        writer.writeheader()
        writer.writerows(rows)
    n_masked = sum(r["masked"] == "1" for r in rows)
    out = tmp_path / "eval"
    # 1. the set's masked crops (its manifest's masked column) against its unmasked ones, images to report
    assert main(["evaluate", str(manifest), str(out), "--images", str(images), "--quiet", "--executor", "ray"]) == 0
    assert "report/report.md" in capsys.readouterr().out
    nodes = shard_nodes(out / "embeddings")
    assert nodes and all(nodes)  # Ray's workers wrote every shard, each naming its node
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["protocol"] == "masked-split"
    first = report["results"][0]
    probe = first["acquisition"]["probe"]
    assert probe["samples"] == n_masked and probe["acquired"] >= 0.95 * n_masked and probe["failed_to_acquire"] >= 1
    assert first["acquisition"]["gallery"]["samples"] == len(rows) - n_masked
    only = first["acquired_only"]
    # a probe without a face is a miss: the headline rank-1 is the acquired hits over every probe
    hits = only["identification"]["rank"]["1"] * only["identification"]["mated_probes"]
    assert first["identification"]["rank"]["1"] == pytest.approx(hits / n_masked)
    assert first["identification"]["probes"] == n_masked
    assert first["identification"]["rank"]["1"] < only["identification"]["rank"]["1"]  # the miss lowers it
    assert 0.7 < first["verification"]["auc"] < only["verification"]["auc"]
    assert "## Every sample counted" in (out / "report" / "report.md").read_text()

    # 2. the seed's own GBK verification file over the same images (embedded once: the rerun is a no-op)
    protocol = shared_data / "seed" / "Protocol_verification" / "AFDB_final_Jeff.csv"
    args = ["evaluate", str(manifest), str(out), "--images", str(images), "--executor", "ray", "--pairs",
            str(protocol), "--quiet"]
    assert main(args) == 2  # most of its images are not in this set: said before anything is embedded
    assert "image(s) of the protocol are not in the dataset" in capsys.readouterr().err
    assert main(args + ["--missing", "skip"]) == 0
    pairs = read_seed_verification(protocol)
    keys = {r["path"] for r in rows}  # (the blank image is in no protocol pair)
    inside = [i for i in range(len(pairs)) if pairs.a[i] in keys and pairs.b[i] in keys]
    assert inside, "the seed's protocol names images of this set"
    report = json.loads((out / "report" / "report.json").read_text())
    v = report["results"][0]["verification"]
    assert report["protocol"] == "pairs" and v["pairs_skipped"] == len(pairs) - len(inside)
    assert v["genuine"] == int(pairs.labels[inside].sum()) and v["genuine"] + v["impostor"] == len(inside)
    # the title (report.md, report.json, both plots) counts the pairs scored: it said all 15,956
    assert report["title"].startswith(f"Evaluation: {len(inside)} of the {len(pairs)} pairs of ")
    assert 0 <= v["auc"] <= 1 and np.isfinite(v["eer"]["eer"] if isinstance(v["eer"], dict) else v["eer"])
    # report.md counts the pairs' images and pairs (it labelled them probe samples, gallery "n/a of n/a")
    acquisition, md = report["results"][0]["acquisition"], (out / "report" / "report.md").read_text()
    assert "## Every pair counted" in md and "probe samples" not in md and "n/a of n/a" not in md
    assert (f"| sface | {acquisition['images']['samples']} | {acquisition['images']['failed_to_acquire']} ("
            in md) and f"| {len(inside)} | {acquisition['pairs']['with_a_face_on_both_sides']} |" in md
    # the same protocol file on S3 (was: "No such file or directory: 's3:/...'")
    from jobs.storage import open_store

    open_store(f"s3://{bucket}/protocols").write(protocol.name, protocol.read_bytes())
    assert main([*args[:-3], "--pairs", f"s3://{bucket}/protocols/{protocol.name}", "--quiet", "--missing",
                 "skip"]) == 0
    assert json.loads((out / "report" / "report.json").read_text())["results"][0]["verification"] == v

    # 3. the seed's identification lists (masked gallery, unmasked probes: its probe_is_mask folder reversed)
    lists = shared_data / "seed" / "Protocol_identification"
    gallery_list, probe_list = lists / "AFDB_gallery_fianl.csv", lists / "AFDB_probe_final.csv"
    assert main(["evaluate", str(manifest), str(out), "--images", str(images), "--lists", str(gallery_list),
                 str(probe_list), "--missing", "skip", "--gallery-template", "mean", "--quiet", "--executor",
                 "ray"]) == 0
    report = json.loads((out / "report" / "report.json").read_text())
    result = report["results"][0]
    gallery_keys, probe_keys = (set(read_seed_list(p)) for p in (gallery_list, probe_list))
    assert report["protocol"] == "lists" and report["gallery_template"] == "mean"
    # report.md says so too (two reports, best and mean, looked alike but for the gallery's size)
    assert (f"Protocol: probes of {probe_list} against the gallery of {gallery_list}; gallery: one mean template "
            "per identity.") in (out / "report" / "report.md").read_text()
    assert result["acquisition"]["probe"]["samples"] == len(probe_keys & keys)
    assert result["acquisition"]["not_in_dataset"] == len((gallery_keys | probe_keys) - keys)
    assert result["identification"]["gallery"] == len({k.split("/")[0] for k in gallery_keys & keys})


def test_an_output_evaluated_with_two_models_scores_each_with_its_own_embeddings(shared_data, tmp_path):
    """Each model's shards stay beside the others' in one output: the second model's report read the
    first's embeddings too (its probes and gallery doubled, sface vectors scored against dlib ones:
    AUC 0.961 alone, 0.534 mixed). A model of another embedding size (insightface-mbf: 512 against
    128) made the output unreadable to every model: "mfr evaluate: node: string", exit 2, sface's
    own evaluation included."""
    import csv

    crops = shared_data / "masked_crops"
    rows = list(csv.DictReader((crops / "manifest.csv").open(encoding="utf-8")))
    people = sorted({r["identity"] for r in rows})[:8]
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "identity", "masked"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("path", "identity", "masked")} for r in rows if r["identity"] in people)
    out = tmp_path / "eval"
    alone, alone_ids = {}, {}  # each model's report row and model id, evaluated alone

    def evaluate_alone(model, *more):
        assert evaluate(str(manifest), str(out), "--images", str(crops), "--model", model, "--quiet", *more) == 0
        report = json.loads((out / "report" / "report.json").read_text())
        result = alone[model] = report["results"][0]
        alone_ids[model] = report["model_id"]
        return (result["acquisition"], result["identification"]["probes"], result["identification"]["gallery"],
                result["verification"]["auc"], result["verification"]["genuine"], result["verification"]["impostor"])

    first = evaluate_alone("sface")
    other = evaluate_alone("dlib-resnet")
    assert other[:3] == first[:3] and other[4:] == first[4:]  # the same images, counted once
    wider = evaluate_alone("insightface-mbf", "--accept-model-licence")
    assert wider[:3] == first[:3] and wider[4:] == first[4:] and wider[3] > 0.75  # 0.852 here: its own embeddings
    assert evaluate_alone("sface") == first
    # --models: one report, a row per model, each row the figures of that model evaluated alone (the
    # embeddings are all there already: each model's pass embeds nothing)
    assert evaluate(str(manifest), str(out), "--images", str(crops), "--models",
                    "sface,dlib-resnet,insightface-mbf", "--accept-model-licence", "--quiet") == 0
    report = json.loads((out / "report" / "report.json").read_text())
    assert [r["name"] for r in report["results"]] == ["sface", "dlib-resnet", "insightface-mbf"]
    assert report["model"] == ["sface", "dlib-resnet", "insightface-mbf"]
    for row in report["results"]:
        assert row == alone[row["name"]], row["name"]
        # each row's model id by its name, as `mfr score` gives them
        assert report["model_ids"][row["name"]] == alone_ids[row["name"]], row["name"]
    assert "| dlib-resnet |" in (out / "report" / "report.md").read_text()
    with pytest.raises(ValueError, match=r"'sface' is the model 'sface' given again"):
        run_evaluate(str(manifest), str(out), ["sface", "dlib-resnet", "sface"], images_uri=str(crops),
                     executor="local")
    # two models of one spec name (an edited copy of sface): a row each, told apart (both read "sface")
    import onnx

    from recog import zoo

    edited = onnx.load(str(zoo.builtin_path("sface")))
    edited.doc_string = "an edited copy"
    onnx.save(edited, str(tmp_path / "sface_edit.onnx"))
    result = run_evaluate(str(manifest), str(out), ["sface", str(tmp_path / "sface_edit.onnx")], images_uri=str(crops),
                          executor="local")
    assert shard_nodes(out / "embeddings") == {""}  # every pass on the local pool, as asked
    assert [r.name for r in result["results"]] == ["sface", str(tmp_path / "sface_edit.onnx")]
    # read by hand, the folder names its sizes instead of failing inside Arrow
    with pytest.raises(ValueError, match=r"embeddings of 2 sizes \(\[128, 512\]\) from models \['dlib-resnet@"):
        read_shards(str(out / "embeddings"))


def test_a_bad_masked_rule_or_an_empty_list_is_refused_before_any_image(face_photos, tmp_path, capsys, monkeypatch):
    """A masked rule that is no regular expression ended in a Python traceback (exit 1); identification
    lists with no usable line embedded the whole dataset, then said "no face found in any probe
    image", after one raw Python warning per line."""
    dataset = tmp_path / "in" / "p"
    dataset.mkdir(parents=True)
    shutil.copy(face_photos[0], dataset / "a.jpg")
    out = tmp_path / "out"
    assert main(["evaluate", str(dataset.parent), str(out), "--masked-rule", "([", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == ("mfr evaluate: masked rule '([' is not a regular expression: "
                                               "unterminated character set at position 1")
    bad = tmp_path / "bad.csv"
    bad.write_text("foo;bar\n1;2\n")
    assert main(["evaluate", str(dataset.parent), str(out), "--lists", str(bad), str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"mfr evaluate: note: {bad}: 2 line(s) skipped, e.g. line 1: ") and len(err) == 2, err
    assert err[1] == f"mfr evaluate: {bad}: no image in it (one `identity/file` per line, as the seed's lists)"
    assert not out.exists()
    assert main(["evaluate", str(dataset.parent), str(out), "--pairs", str(bad), "--gallery-template", "mean",
                 "--quiet"]) == 2
    assert "--gallery-template applies to identification" in capsys.readouterr().err
    # lists from a --config file and --pairs on the command line: the refusal says where the lists came
    # from (a flag cannot take a file's key back)
    config = tmp_path / "mfr.toml"
    config.write_text(f'[evaluate]\nlists = ["{bad}", "{bad}"]\n')
    assert main(["--config", str(config), "evaluate", str(dataset.parent), str(out), "--pairs", str(bad),
                 "--quiet"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "give a pairs file or identification lists, not both (a `pairs` or `lists` key of a --config file gives "
        "--pairs or --lists too: take it out of the file for the runs that use the other)")
    assert not out.exists()
    # a protocol naming images the dataset lacks, a masked rule matching no file name: said before any
    # image is embedded (both came after a whole embedding)
    listed, probes = tmp_path / "gallery.csv", tmp_path / "probes.csv"
    listed.write_text("q/elsewhere.jpg\n")
    probes.write_text("p/a.jpg\n")
    assert main(["evaluate", str(dataset.parent), str(out), "--lists", str(listed), str(probes), "--quiet"]) == 2
    assert "1 image(s) of the protocol are not in the dataset, e.g. 'q/elsewhere.jpg'" in capsys.readouterr().err
    assert main(["evaluate", str(dataset.parent), str(out), "--masked-rule", "_mask", "--quiet"]) == 2
    assert "the masked rule '_mask' matches none (or all) of the file names" in capsys.readouterr().err
    # the same list as gallery and probes scored every probe against itself: rank-1 100 %, exit 0
    assert main(["evaluate", str(dataset.parent), str(out), "--lists", str(probes), str(probes), "--quiet"]) == 2
    assert ("1 image(s) are in both the gallery list and the probe list, e.g. 'p/a.jpg': a probe is never its "
            "own gallery image") in capsys.readouterr().err
    # pairs of one kind: embedded, then "need both genuine (1) and impostor (0) pairs"
    genuine = tmp_path / "genuine.csv"
    genuine.write_text("Input,Target,Label\np/a.jpg,p/a.jpg,1\n")
    assert main(["evaluate", str(dataset.parent), str(out), "--pairs", str(genuine), "--quiet"]) == 2
    assert "genuine.csv: all 1 pairs are genuine; verification needs both" in capsys.readouterr().err
    # a relative protocol path: the working folder, then the dataset's folder (where datasets keep
    # their protocols); found in neither, the error names the option ("[Errno 2] No such file" before)
    (dataset.parent / "Protocol").mkdir()
    shutil.copy(genuine, dataset.parent / "Protocol" / "genuine.csv")
    monkeypatch.chdir(tmp_path / "in" / "p")
    assert main(["evaluate", str(dataset.parent), str(out), "--pairs", "Protocol/genuine.csv", "--quiet"]) == 2
    assert "Protocol/genuine.csv: all 1 pairs are genuine" in capsys.readouterr().err
    assert main(["evaluate", str(dataset.parent), str(out), "--lists", "Protocol/g.txt", "p.txt", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mfr evaluate: --lists Protocol/g.txt: no such file (looked for {dataset / 'Protocol' / 'g.txt'} and "
        f"{dataset.parent / 'Protocol' / 'g.txt'})")
    monkeypatch.chdir(tmp_path)
    # a manifest without a masked column: embedded, then refused for "the manifest's masked column";
    # its file names now say which are masked, checked first
    manifest = tmp_path / "in" / "list.csv"
    manifest.write_text("path,identity\np/a.jpg,p\n")
    assert main(["evaluate", str(manifest), str(out), "--masked-rule", "_mask", "--quiet"]) == 2
    assert ("the manifest has no masked column and the masked rule '_mask' matches none (or all) of the file "
            "names") in capsys.readouterr().err
    manifest.write_text("path,identity,masked\np/a.jpg,p,1\n")
    assert main(["evaluate", str(manifest), str(out), "--quiet"]) == 2
    assert "the manifest's masked column marks none (or all) of them (nothing was embedded)" in capsys.readouterr().err
    # a blank masked cell: read as unmasked in a fresh output and as embedded in an old one, so one
    # command gave two reports; refused, naming it
    shutil.copy(face_photos[1], dataset / "b.jpg")
    manifest.write_text("path,identity,masked\np/a.jpg,p,1\np/b.jpg,p,\n")
    assert main(["evaluate", str(manifest), str(out), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == ("mfr evaluate: the manifest's masked column is blank for 1 image(s), "
                                               "e.g. 'p/b.jpg': give every row 1 or 0 (nothing was embedded)")
    # absolute paths outside the images root (refused rows) were "the manifest has no masked column"
    # where it had one
    elsewhere = tmp_path / "elsewhere"
    manifest.write_text(f"path,identity,masked\n{elsewhere / 'a.jpg'},p,1\n{elsewhere / 'b.jpg'},p,0\n")
    assert main(["evaluate", str(manifest), str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no image to evaluate: every row of the manifest is refused, e.g. list.csv row 2: " in err
    assert (f"a manifest's paths are relative to the images root (--images), or absolute under it "
            f"({manifest.parent})") in err
    manifest.write_text(f"path,identity,masked\np/a.jpg,p,1\n{elsewhere / 'b.jpg'},p,0\n")
    assert main(["evaluate", str(manifest), str(out), "--quiet"]) == 2
    assert ("marks none (or all) of them; 1 row(s) of the manifest are refused, e.g. list.csv row 3: "
            in capsys.readouterr().err)
    assert not out.exists()


def test_a_manifest_without_a_masked_column_is_split_by_the_masked_rule(face_photos, tmp_path):
    """`--masked-rule` was ignored for a manifest: without a `masked` column every image was
    unmasked, and the job was refused after embedding them all."""
    import json

    dataset = tmp_path / "in"
    for person in ("person_01", "person_02"):
        (dataset / person).mkdir(parents=True)
    photos = [p for p in face_photos if p.parent.name in ("person_01", "person_02")][:6]
    rows = []
    for i, photo in enumerate(photos):
        name = f"{photo.stem}{'_mask' if i % 2 else ''}.jpg"
        shutil.copy(photo, dataset / photo.parent.name / name)
        rows.append(f"{photo.parent.name}/{name},{photo.parent.name}")
    manifest = dataset / "list.csv"
    manifest.write_text("path,identity\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    # a rule with two `$` (matplotlib's math) failed the report after the embedding; its title doubled `\\`
    rule = r"_mask\.jpg$|_mask\.png$"
    assert evaluate(str(manifest), str(out), "--masked-rule", rule, "--input-kind", "photos",
                    "--quiet") == 0
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["title"] == f"Evaluation: masked images (file names, rule '{rule}') against the unmasked ones"
    ident = report["results"][0]["identification"]
    assert ident["probes"] == 3
    # the rows say what the report split by: the rule's flag (every row read masked=False)
    rows, _ = read_shards(str(out / "embeddings"))
    assert {(k, bool(m)) for k, m in zip(rows.key, rows.masked)} == {(k, k.endswith("_mask.jpg")) for k in rows.key}
    assert rows.masked.sum() == 3
    # beside a masked column the rule chooses nothing, and without a protocol --missing skip skips
    # nothing: both were taken without a word, as if they did; each is said in a note
    marked = dataset / "marked.csv"
    marked.write_text("path,identity,masked\n" + "\n".join(f"{r},{int('_mask' in r)}" for r in rows_text(manifest))
                      + "\n")
    assert evaluate(str(marked), str(tmp_path / "out2"), "--masked-rule", rule, "--missing", "skip", "--input-kind",
                    "photos", "--quiet") == 0
    notes = json.loads((tmp_path / "out2" / "report" / "report.json").read_text())["notes"]
    assert notes[:2] == ["--masked-rule is not used: the manifest's masked column says which images are masked",
                         "--missing skip changes nothing here: only a protocol (--pairs, --lists) names images that "
                         "may not be in the dataset"]


def rows_text(manifest) -> list[str]:
    return manifest.read_text().splitlines()[1:]


def test_a_refused_manifest_row_keeps_what_its_shard_row_says():
    """`relabel` gave a refused row (an absolute path elsewhere) the manifest's blank identity and no
    masked flag, so it was counted as a gallery image without an identity."""
    import pandas as pd

    from jobs.evaluate import relabel

    labels = {"p/a.jpg": ("p", True, ""), "/elsewhere/q/b.jpg": ("", None, "m.csv row 3: absolute key refused")}
    frame = pd.DataFrame({"key": ["p/a.jpg", "/elsewhere/q/b.jpg"], "identity": ["old", "q"], "masked": [False, True]})
    got = relabel(frame, labels)
    assert got.identity.tolist() == ["p", "q"] and got.masked.tolist() == [True, True]


def test_photos_at_the_top_of_the_folder_have_no_identity_and_are_left_out(face_photos, tmp_path, capsys):
    """A folder input's identity is an image's parent folder's name: two strangers' photos at its top
    were scored as one person ("")."""
    import json

    dataset = tmp_path / "in"
    people = sorted({p.parent.name for p in face_photos})[:4]
    photos = {person: [p for p in face_photos if p.parent.name == person][:2] for person in people}
    for person in people[:2]:
        (dataset / person).mkdir(parents=True)
        for photo, name in zip(photos[person], ("a.jpg", "a_mask.jpg")):
            shutil.copy(photo, dataset / person / name)
    shutil.copy(photos[people[2]][0], dataset / "stray.jpg")
    shutil.copy(photos[people[3]][0], dataset / "stray_mask.jpg")
    out = tmp_path / "out"
    from recog import zoo

    model = str(zoo.builtin_path("sface"))  # a model given as a file is named by its spec, not the file
    assert evaluate(str(dataset), str(out), "--masked-rule", "_mask", "--input-kind", "photos",
                    "--model", model, "--quiet") == 0
    assert "note: 1 probe and 1 gallery image(s) have no identity and were left out" in capsys.readouterr().out
    result = json.loads((out / "report" / "report.json").read_text())["results"][0]
    assert result["name"] == "sface"
    ident = result["identification"]
    assert (ident["probes"], ident["gallery"], ident["gallery_identities"]) == (2, 2, 2), ident
    assert result["acquisition"]["no_identity"] == {"probe": 1, "gallery": 1}
    # a flat folder (every photo at the top) was refused only after every image was embedded
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("stray.jpg", "stray_mask.jpg"):
        shutil.copy(dataset / name, flat / name)
    assert evaluate(str(flat), str(tmp_path / "out2"), "--masked-rule", "_mask", "--quiet") == 2
    err = capsys.readouterr().err
    assert "the 1 gallery image(s) under" in err and "(nothing was embedded)" in err
    assert not (tmp_path / "out2").exists()


def test_a_wrong_images_folder_is_said_after_the_summary_and_retry_failed_mends_it(shared_data, tmp_path, capsys):
    """With a wrong --images every row was recorded `missing`, and evaluate said only "no face found
    in any probe image: nothing to score", without its summary; evaluate had no --retry-failed, so
    a rerun with the right --images skipped every row as done and failed again."""
    import csv

    crops = shared_data / "masked_crops"
    rows = [r for r in csv.DictReader((crops / "manifest.csv").open(encoding="utf-8"))
            if r["identity"] in sorted({r["identity"] for r in csv.DictReader((crops / "manifest.csv")
                                                                                .open(encoding="utf-8"))})[:3]]
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "identity", "masked"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("path", "identity", "masked")} for r in rows)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "other.jpg").write_bytes(b"not these")
    out = tmp_path / "eval"
    assert evaluate(str(manifest), str(out), "--images", str(elsewhere), "--quiet") == 2
    captured = capsys.readouterr()
    assert re.search(rf"\n +missing +{len(rows)}\n", captured.out)  # the summary came first
    assert f"no probe image has an embedded face ({sum(r['masked'] == '1' for r in rows)} missing)" in captured.err
    assert "--retry-failed" in captured.err
    # several models: each pass's summary under its name (only the first's was printed)
    assert evaluate(str(manifest), str(tmp_path / "eval2"), "--images", str(elsewhere), "--quiet",
                    "--models", "sface,dlib-resnet") == 2
    said = capsys.readouterr().out
    assert "evaluate: sface\n" in said and "evaluate: dlib-resnet\n" in said
    assert len(re.findall(rf"\n +missing +{len(rows)}\n", said)) == 2
    assert evaluate(str(manifest), str(out), "--images", str(crops), "--quiet") == 2  # still missing
    capsys.readouterr()
    assert evaluate(str(manifest), str(out), "--images", str(crops), "--retry-failed", "--quiet") == 0
    report = json.loads((out / "report" / "report.json").read_text())["results"][0]
    assert report["acquisition"]["probe"]["samples"] + report["acquisition"]["gallery"]["samples"] == len(rows)


def test_a_rerun_into_the_same_output_scores_the_input_as_it_is_now(shared_data, tmp_path):
    """A rerun embeds only what is new, and scoring read every row of the output: images since left
    out of the manifest (or another dataset evaluated there before) were still scored, under the
    identity and masked flag they had at first (a review's rerun: 12 probes where a fresh output has 10)."""
    import csv

    crops = shared_data / "masked_crops"
    everyone = list(csv.DictReader((crops / "manifest.csv").open(encoding="utf-8")))
    people = sorted({r["identity"] for r in everyone})[:3]
    rows = [{k: r[k] for k in ("path", "identity", "masked")} for r in everyone if r["identity"] in people]

    def write(path, rows):
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["path", "identity", "masked"])
            writer.writeheader()
            writer.writerows(rows)

    manifest = tmp_path / "manifest.csv"
    write(manifest, rows)
    out = tmp_path / "eval"
    assert evaluate(str(manifest), str(out), "--images", str(crops), "--quiet") == 0
    first = json.loads((out / "report" / "report.json").read_text())["results"][0]
    # the third person leaves the dataset, a masked image of the first is relabelled as the second's
    # and one of the second's unmasked images becomes a probe
    now = [dict(r) for r in rows if r["identity"] != people[2]]
    moved = next(r for r in now if r["identity"] == people[0] and r["masked"] == "1")
    moved["identity"] = people[1]
    flipped = [r for r in now if r["identity"] == people[1] and r["masked"] == "0"][-1]
    flipped["masked"] = "1"
    write(manifest, now)
    assert evaluate(str(manifest), str(out), "--images", str(crops), "--quiet") == 0
    rerun = json.loads((out / "report" / "report.json").read_text())["results"][0]
    assert evaluate(str(manifest), str(tmp_path / "fresh"), "--images", str(crops), "--quiet") == 0
    fresh = json.loads((tmp_path / "fresh" / "report" / "report.json").read_text())["results"][0]
    for part in ("identification", "verification", "acquisition"):
        assert rerun[part] == fresh[part], part
    masked_now = sum(r["masked"] == "1" for r in now)
    assert rerun["acquisition"]["probe"]["samples"] == masked_now < first["acquisition"]["probe"]["samples"]
    # a pairs protocol evaluated there next: the identification report's CMC curve stayed beside it
    assert (out / "report" / "cmc.png").is_file()
    a, b = [r["path"] for r in now if r["identity"] == people[0]][:2]
    c = next(r["path"] for r in now if r["identity"] == people[1])
    (tmp_path / "pairs.csv").write_text(f"{a},{b},1\n{a},{c},0\n")
    assert evaluate(str(manifest), str(out), "--images", str(crops), "--pairs", str(tmp_path / "pairs.csv"),
                    "--quiet") == 0
    assert sorted(p.name for p in (out / "report").iterdir()) == ["report.json", "report.md", "roc.png", "scores.png"]


def test_protocol_paths_as_users_spell_them_and_what_missing_skip_leaves(face_photos, tmp_path, capsys):
    """`./p/a.jpg`, `p\\a.jpg` and the image's absolute path were "not in the dataset"; a --missing skip
    that left no pair (or one kind) embedded everything, then said "need both genuine (1) and impostor
    (0) pairs" of a file that held both."""
    dataset = tmp_path / "in"
    for i, name in enumerate(["p/a.jpg", "p/b.jpg", "q/c.jpg"]):
        (dataset / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(face_photos[i], dataset / name)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pairs = elsewhere / "pairs.csv"
    pairs.write_text(f"./p/a.jpg,{dataset / 'p' / 'b.jpg'},1\np\\a.jpg,q/c.jpg,0\nq/c.jpg,p/a.jpg,0\n")
    out = tmp_path / "out"
    assert evaluate(str(dataset), str(out), "--pairs", str(pairs), "--quiet", "--input-kind", "photos") == 0
    printed = capsys.readouterr()
    # said once (the reader's warning and the report's note both said it), and nothing else on stderr
    assert (printed.out + printed.err).count("given again") == 1 and not printed.err, printed.err
    report = (out / "report" / "report.md").read_text()
    # the pair given again (the other way round) counts once, and the report says so (stderr alone did)
    assert "1 genuine and 1 impostor pairs" in report
    assert f"> **Note:** 1 pair(s) of {pairs} given again (either way round) were counted once." in report
    assert json.loads((out / "report" / "report.json").read_text())["model_id"].startswith("sface@sha256:")
    capsys.readouterr()
    # identification lists whose probes include one of an identity the gallery lacks: said, not silent
    # (and a name without its extension, as one row of the seed's AFDB_gallery_no_mask.csv has it, is the
    # image of that name, as the seed's scripts match it: it was "not in the dataset")
    (elsewhere / "g.txt").write_text("p/a\n")
    (elsewhere / "pr.txt").write_text("p/b.jpg\nq/c.jpg\n")
    assert evaluate(str(dataset), str(out), "--lists", str(elsewhere / "g.txt"), str(elsewhere / "pr.txt"),
                    "--quiet", "--input-kind", "photos") == 0
    printed = capsys.readouterr().out
    assert "note: 1 of 2 probes has no gallery entry of their identity" in printed
    assert ("note: 1 image(s) the protocol names without an extension were taken as the dataset's image of that "
            "name, e.g. 'p/a' as 'p/a.jpg'") in printed
    pairs.write_text("./p/a.jpg,p/a.jpg,1\np/a.jpg,q/c.jpg,0\n")  # one image, spelt two ways
    assert evaluate(str(dataset), str(tmp_path / "o2"), "--pairs", str(pairs), "--quiet") == 2
    assert f"{pairs}: pair 1 pairs 'p/a.jpg' with itself" in capsys.readouterr().err
    pairs.write_text("p/a,p/a.jpg,1\np/a.jpg,q/c.jpg,0\n")  # spelt without its extension: checked as completed
    assert evaluate(str(dataset), str(tmp_path / "o2"), "--pairs", str(pairs), "--quiet") == 2
    assert f"{pairs}: pair 1 pairs 'p/a.jpg' with itself" in capsys.readouterr().err
    from jobs.evaluate import complete_names

    assert complete_names({"p/j.smith_0001", "p/a", "p/twin", "p/a.jpg"},
                          {"p/j.smith_0001.jpg", "p/a.jpg", "p/twin.jpg", "p/twin.png", "p/a.txt"}) == \
        {"p/j.smith_0001": "p/j.smith_0001.jpg", "p/a": "p/a.jpg"}  # a dotted stem too; twins stay unmatched
    pairs.write_text("p/a.jpg,p/gone.jpg,1\np/a.jpg,q/c.jpg,0\n")
    assert evaluate(str(dataset), str(tmp_path / "o2"), "--pairs", str(pairs), "--missing", "skip",
                    "--quiet") == 2
    assert ("--missing skip leaves only impostor pairs (1) of the 2 pairs: 1 image(s) they name are not in the "
            "dataset") in capsys.readouterr().err
    listed = elsewhere / "gallery.txt"
    listed.write_text("r/x.jpg\nr/y.jpg\n")
    probes = elsewhere / "probes.txt"
    probes.write_text("p/a.jpg\n")
    assert evaluate(str(dataset), str(tmp_path / "o2"), "--lists", str(listed), str(probes), "--missing",
                    "skip", "--quiet") == 2
    assert "--missing skip leaves no image of the gallery list: none of its 2 images is in the dataset" \
        in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()
    # a folder without images: said so (it was "the masked rule 'seed' matches none (or all) of the file names")
    (tmp_path / "empty").mkdir()
    assert evaluate(str(tmp_path / "empty"), str(tmp_path / "o3"), "--quiet") == 2
    assert f"{tmp_path / 'empty'} holds no images (nothing was embedded)" in capsys.readouterr().err


def test_a_listed_gallery_image_without_a_face_failed_to_enrol():
    """The lists name each gallery image: one without a face is an entry that failed to enrol, whose
    comparisons are rejected; an identity with no other gallery image leaves its probes mated and never
    identified. It was left out: its identity's probes became non-mated searches and its comparisons
    vanished (a review's run: rank-1 9/20 where 9/25 is every probe counted)."""
    import pandas as pd

    from jobs.evaluate import score_split

    rng = np.random.default_rng(4)
    centres = rng.normal(size=(3, 16))
    keys = ["a/g.jpg", "a/p1.jpg", "a/p2.jpg", "b/g.jpg", "b/p1.jpg", "c/g1.jpg", "c/g2.jpg", "c/p1.jpg"]
    ids = [k[0] for k in keys]
    emb = (centres[[ord(i) - ord("a") for i in ids]] + 0.3 * rng.normal(size=(len(keys), 16))).astype(np.float32)
    faceless = {"b/g.jpg", "c/g2.jpg"}  # b's only gallery image; one of c's two
    has = [k not in faceless for k in keys]
    rows = pd.DataFrame({"key": np.array(keys)[has], "identity": np.array(ids)[has], "face_index": 0})
    failed = pd.DataFrame({"key": sorted(faceless), "identity": ["b", "c"], "status": "no_face"})
    gallery_keys = ["a/g.jpg", "b/g.jpg", "c/g1.jpg", "c/g2.jpg"]
    probe_keys = ["a/p1.jpg", "a/p2.jpg", "b/p1.jpg", "c/p1.jpg"]
    best = score_split(rows, emb[has], failed, probe_keys, gallery_keys, "m", "cosine")
    ident, v = best.identification, best.verification
    assert (ident["probes"], ident["mated_probes"], ident["unenrolled_probes"]) == (4, 4, 1)
    only = best.acquired_only.identification
    assert only["mated_probes"] == 3 and ident["rank"]["1"] == pytest.approx(only["rank"]["1"] * 3 / 4)
    # 4 probes x 4 listed gallery images: b-b and a probe of c with c's faceless image among the genuine
    assert (v["genuine"], v["impostor"]) == (5, 11)
    assert best.acquisition["gallery"]["failed_to_acquire"] == 2
    mean = score_split(rows, emb[has], failed, probe_keys, gallery_keys, "m", "cosine", gallery_template="mean")
    # templates: c's has a face, b's failed; 4 probes x 3 templates
    assert (mean.verification["genuine"], mean.verification["impostor"]) == (4, 8)
    assert mean.identification["unenrolled_probes"] == 1 and mean.identification["mated_probes"] == 4
    from recog.report import markdown_tables
    # b's probe is a mated search, but b has no entry: the report does not count it "in the gallery"
    md = markdown_tables([best])
    assert ("4 probes (3 with their identity in the gallery, 1 of an identity that failed to enrol: 4 mated searches, "
            "which rank-k counts), 2 gallery entries; 2 gallery images had no face (Every sample counted, below, says "
            "how they count).") in md
    assert "every probe here has its identity in the gallery or is of an identity that failed to enrol" in md


def test_each_model_after_the_first_takes_the_faces_the_first_found(shared_data, tmp_path):
    """`mfr evaluate --models A,B` detected every image again for B (a press photo's detection is 105
    of its 122 ms with sface): B's pass now takes A's faces from the output's rows. B's rows made so,
    with no detector at all, are those a fresh detection gives: every face of a three-face photo, the
    image with no face, the unreadable file."""
    import cv2

    from jobs.embed import FacePreparer, embed_finder, run_embed
    from jobs.inputs import input_listing
    from jobs.storage import open_store
    from maskgen.decode import DEFAULT_MAX_PIXELS
    from recog.embed import Embedder
    from conftest import photo_folder

    faces = shared_data / "faces"
    dataset = photo_folder(tmp_path / "in", [faces / "person_02" / "img54.jpg", faces / "person_01" / "img1.jpg"],
                           broken=True)
    y, x = np.mgrid[0:120, 0:160]
    cv2.imwrite(str(dataset / "person_01" / "no-face.png"), np.dstack([x, y, x + y]).astype(np.uint8))
    out = tmp_path / "emb"
    run_embed(str(dataset), str(out), "sface", masked=False, face="all", executor="local")
    first = Embedder("sface").model_id
    other = Embedder("dlib-resnet")
    _, groups, lister, _ = input_listing(str(dataset), open_store(tmp_path / "fresh"), "shards")
    items = [t for g in groups for t in lister.rows(g)]
    args = (str(dataset), other.spec, other.model_id, False, False, "all", embed_finder(False, None, None, None),
            "five-point", DEFAULT_MAX_PIXELS)
    fresh = FacePreparer(*args)
    reusing = FacePreparer(*args, faces_from=(open_store(out).uri, first, "plain"))
    reusing.finder = None  # any detection fails its image: an `error` row
    for batch in items:
        made, taken = (p(batch).drop_columns(["node"]).to_pylist() for p in (fresh, reusing))
        assert taken == made
    statuses = sorted(r["status"] for b in items for r in fresh(b).to_pylist())
    assert statuses == ["empty", "no_face", "ok", "ok", "ok", "ok", "unsupported"]
    # rows beyond what a process keeps: a group let go and needed again stops the taking (reading it
    # for every batch would cost more than detecting), and the rows are still those detection gives
    capped = FacePreparer(*args, faces_from=(open_store(out).uri, first, "plain"))
    capped.recorded.max_rows = 2
    for batch in items + items:
        assert capped(batch).drop_columns(["node"]).to_pylist() == fresh(batch).drop_columns(["node"]).to_pylist()
    assert capped.recorded.stopped and not capped.recorded.tables


def test_an_output_inside_the_dataset_is_never_read_as_its_images_and_a_dataset_is_no_output(shared_data, tmp_path,
                                                                                            capsys):
    """`mfr evaluate DS DS/eval` left only eval/embeddings/ out of the input: run again, it read its own
    report's plots (roc.png, cmc.png, scores.png) as masked probes of an identity named "report", and AUC
    went from 90.6 % to 95.1 % (a review's three people of masked_crops), as did every later evaluation
    of DS into another output. And an output that is another dataset took embeddings/ and report/ among
    its photos (`mfr mask`, `embed`, `run` and `score` refuse such a folder; evaluate wrote into it)."""
    crops = shared_data / "masked_crops"
    data = tmp_path / "ds"
    for person in sorted(p.name for p in crops.iterdir() if p.is_dir())[:3]:
        shutil.copytree(crops / person, data / person)

    def report(out):
        return json.loads((out / "report" / "report.json").read_text())["results"][0]

    assert evaluate(str(data), str(data / "eval"), "--quiet") == 0
    assert "the output lies inside the input: eval/ is not read as input" in capsys.readouterr().out
    first = report(data / "eval")
    assert evaluate(str(data), str(data / "eval"), "--quiet") == 0
    printed = capsys.readouterr().out
    assert re.search(r"processed\s+0\n", printed) and "no gallery entry" not in printed, printed
    assert report(data / "eval") == first
    # an earlier evaluation's output left inside the dataset is not input either (report/ holds no record)
    assert evaluate(str(data), str(data / "eval2"), "--quiet") == 0
    assert report(data / "eval2") == first
    shards, _ = read_shards(str(data / "eval2" / "embeddings"))
    assert not [k for k in shards.key if k.startswith(("eval/", "eval2/"))]
    images = len([p for p in data.rglob("*.jpg") if not p.relative_to(data).as_posix().startswith("eval")])
    assert main(["mask", str(data), str(tmp_path / "masked"), "--dry-run"]) == 0  # nor for other jobs
    assert f"{images} input(s)" in capsys.readouterr().out
    # a copy of the dataset given as the output is refused, and nothing is written into it
    other = tmp_path / "other"
    shutil.copytree(data, other, ignore=shutil.ignore_patterns("eval*"))
    before = sorted(p.relative_to(other) for p in other.rglob("*"))
    assert evaluate(str(data), str(other), "--quiet") == 2
    err = capsys.readouterr().err
    assert "already holds files mfr did not write" in err and "nothing was written" in err, err
    assert sorted(p.relative_to(other) for p in other.rglob("*")) == before
