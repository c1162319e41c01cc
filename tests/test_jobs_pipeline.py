"""augment -> embed -> score on an in-process Ray runtime: a dataset to a report."""

from __future__ import annotations

import json
import shutil

import pytest

from jobs.embed import read_shards
from jobs.run import run_pipeline


def test_dataset_to_report(ray_runtime, shared_data, tmp_path):
    dataset = tmp_path / "dataset"
    for person in ("person_01", "person_02", "person_03", "person_04"):
        for path in sorted((shared_data / "faces" / person).glob("*.jpg"))[:3]:
            (dataset / person).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dataset / person / path.name)
    out = tmp_path / "run"
    actors = pool_actors()
    result = run_pipeline(str(dataset), str(out), style="seed")
    assert result["augment"].statuses == {"ok": 12}
    # no GPUs here: the CPU pool's actors (1 on the test Ray's one CPU) embed their own batches, and no
    # recognition pool starts beside them to compete for the same cores
    assert pool_actors() - actors <= 1 and "each embedding the batches it prepared" in result["pools"]["recognition"]
    gallery_rows, gallery_emb = read_shards(str(out / "embeddings" / "unmasked"))
    probe_rows, probe_emb = read_shards(str(out / "embeddings" / "masked"))
    # one pass: the first image of each person is embedded unmasked (gallery), the others masked
    assert len(gallery_rows) == 4 and len(probe_rows) == 8 and not set(gallery_rows.key) & set(probe_rows.key)
    assert gallery_emb.shape == (4, 128) and set(probe_rows.masked) == {True} and set(gallery_rows.masked) == {False}
    assert probe_rows.model_id.nunique() == 1 and probe_rows.model_id.iloc[0].startswith("sface@sha256:")
    report = json.loads((out / "report" / "report.json").read_text())
    assert [r["name"] for r in report["results"]] == ["sface"]  # plain matching unless modes are asked for
    ident = report["results"][0]["identification"]
    assert ident["gallery"] == 4 and ident["probes"] == 8  # one unmasked image per person, the rest masked
    verification = report["results"][0]["verification"]
    assert verification["genuine"] == 8 and verification["impostor"] == 24
    assert 0.5 < verification["auc"] <= 1.0 and ident["rank"]["1"] >= 0.5
    for name in ("report.md", "roc.png", "cmc.png"):
        assert (out / "report" / name).stat().st_size > 100
    assert report["title"] == "Masked probes vs unmasked gallery" and "notes" not in report

    # the two folders the wrong way round: scored and titled as what the shards hold, with a note (it
    # was titled "Masked probes vs unmasked gallery")
    from jobs.score import run_score

    scored = run_score(str(out / "embeddings" / "unmasked"), str(out / "embeddings" / "masked"), str(tmp_path / "r"))
    written = json.loads((tmp_path / "r" / "report.json").read_text())
    assert written["title"] == "Unmasked probes vs masked gallery", written["title"]
    assert any("wrong way round" in n for n in scored["notes"]) and written["notes"] == scored["notes"]
    text = (tmp_path / "r" / "report.md").read_text()  # where people read it: it was in report.json only
    assert text.startswith("# Unmasked probes vs masked gallery\n\nProtocol: unmasked probes vs masked gallery, 1 "
                           "gallery image(s) per identity, probes from the other images.\n\n> **Note:** the probes "
                           "are unmasked and the gallery masked: were the two folders given the wrong way round"), \
        text[:300]
    assert "Note:" not in (out / "report" / "report.md").read_text()
    # a probe folder of masked and unmasked rows (an embed of an input manifest whose `masked` column says
    # both, its rows over many shards) is titled by all its shards: it was by the first one listed
    from jobs.score import sides_title

    mixed = tmp_path / "mixed" / "shards"
    for folder, side in (("g=a", "masked"), ("g=b", "unmasked")):
        shutil.copytree(out / "embeddings" / side / "shards", mixed / folder)
    title, notes = sides_title(str(mixed.parent), str(out / "embeddings" / "unmasked"))
    assert title == "Mixed probes vs unmasked gallery" and any("masked and unmasked faces" in n for n in notes)

    # the reducer at scale (Ray tasks over probe shards, the gallery in the object store) gives the
    # single-process figures on the same shards
    from jobs.reduce import score_distributed
    from jobs.score import load_split, score

    split = load_split(str(out / "embeddings" / "masked"), str(out / "embeddings" / "unmasked"))
    one = score(split.probe_rows, split.probe_emb, split.gallery_rows, split.gallery_emb, "one", split.similarity)
    many, model_id = score_distributed(str(out / "embeddings" / "masked"), str(out / "embeddings" / "unmasked"),
                                       "many", shards_per_task=1)
    assert model_id == split.model_id
    assert_same_figures(one, many)

    # embedding by eyes needs an augment that located them on the unmasked photos: refused here,
    # then done after augmenting with eye alignment (the crops' own points, recorded as aligned5)
    from jobs.augment import read_manifest, run_augment
    from jobs.embed import run_embed
    from maskgen.augment import AugmentOptions

    with pytest.raises(ValueError, match=r"mask again \(`mfr mask`, into a new output\) with --alignment eyes"):
        run_embed(str(out / "masked"), str(tmp_path / "eyes"), "sface", masked=True, from_augment=True,
                  alignment="eyes")
    # (on the local pool: both executors run the same workers and write the same rows, tests/
    # test_local_executor.py; an embed aligned by eyes on Ray is tests/test_cli.py's)
    run_augment(str(dataset), str(tmp_path / "masked-eyes"), AugmentOptions(style="seed", largest_only=True,
                                                                            alignment="eyes"), executor="local")
    manifest = read_manifest(str(tmp_path / "masked-eyes"))
    assert set(manifest.alignment) == {"eyes"} and manifest.aligned5.map(len).eq(10).all()
    summary = run_embed(str(tmp_path / "masked-eyes"), str(tmp_path / "eyes"), "sface", masked=True,
                        from_augment=True, alignment="eyes", executor="local")
    assert summary.statuses == {"ok": 12}
    eye_rows, eye_emb = read_shards(str(tmp_path / "eyes"))
    order = {k: i for i, k in enumerate(probe_rows.key)}
    cosines = [float(eye_emb[i] @ probe_emb[order[k]]) for i, k in enumerate(eye_rows.key) if k in order]
    assert len(cosines) == 8 and all(0.7 < c < 0.99999 for c in cosines), cosines  # same faces, other crops
    # the same eye-aligned output embedded by its five points: each row's aligned5 is the points its crop
    # was aligned with (the eyes' were copied beside "five-point", and could not remake the crop)
    run_embed(str(tmp_path / "masked-eyes"), str(tmp_path / "five"), "sface", masked=True, from_augment=True,
              executor="local")
    five_rows, five_emb = read_shards(str(tmp_path / "five"))
    assert set(five_rows.alignment) == {"five-point"}
    import numpy as np

    assert all(np.allclose(a, b) for a, b in zip(five_rows.aligned5, five_rows.landmarks5))
    assert not all(np.allclose(a, b) for a, b in zip(manifest.aligned5, manifest.landmarks5))  # the eyes' differ


def assert_same_figures(a, b, tol=1e-9, threshold_rtol=None):
    """Every figure of two MethodResults (or their report.json dicts) equal to `tol`; with
    `threshold_rtol`, thresholds (scores themselves) to that relative tolerance instead. The score
    distributions' moments (`scores`: over every score) to 1e-4 relative or 1e-6: two reducers' pair
    scores can differ in float32's last bit (BLAS sums in an order set by the block's shape), and a
    spread 0.03 wide of Euclidean scores near -0.5 carries that 20-fold (4.6e-6 relative, measured)."""
    def walk(x, y, where):
        if isinstance(x, dict):
            assert set(x) == set(y), where
            for k in x:
                walk(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, (list, tuple)):
            assert len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{where}[{i}]")
        elif isinstance(x, float) and ".scores." in where:
            assert x == pytest.approx(y, rel=1e-4, abs=1e-6), (where, x, y)
        elif isinstance(x, float) and threshold_rtol is not None and where.endswith("threshold"):
            assert x == y or abs(x - y) <= threshold_rtol * max(1.0, abs(x)), (where, x, y)
        elif isinstance(x, float):
            assert x == y or abs(x - y) <= tol, (where, x, y)
        else:
            assert x == y, (where, x, y)

    a, b = (x if isinstance(x, dict) else x.to_dict() for x in (a, b))
    for part in ("verification", "identification", "acquisition", "acquired_only"):
        if part in ("verification", "identification") or (part in a and part in b):
            walk(a.get(part), b.get(part), part)


def summary_rows(printed: str, label: str) -> dict:
    """The rows of one stage's summary table in the printed output, as name -> int (numbers only)."""
    lines = printed.splitlines()
    start = lines.index(f"{label}:")
    rows = {}
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        name, value = line.strip().rsplit(None, 1)
        if value.isdigit():
            rows[name.strip()] = int(value)
    return rows


def figure_lines(printed: str) -> list[str]:
    """The headline figures a command printed (recog.report.summary_lines): from "figures" to the
    first line that is not indented."""
    lines = printed.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("figures (")), len(lines))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return lines[start:end]


def pool_actors() -> int:
    """Actors Ray Data has started for `map_batches` pools in this Ray session so far, ended ones included."""
    import ray._private.state

    return sum("MapWorker" in a["ActorClassName"] for a in ray._private.state.actors().values())


def test_cli_run_and_refusals(ray_runtime, shared_data, tmp_path, capsys):
    from jobs.cli import main

    dataset = tmp_path / "dataset"
    for person in ("person_05", "person_06"):
        for path in sorted((shared_data / "faces" / person).glob("*.jpg"))[:2]:
            (dataset / person).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dataset / person / path.name)
    out = tmp_path / "cli"
    assert main(["run", str(dataset), str(out), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert summary_rows(printed.out, "run") == {"inputs": 4, "skipped (already done)": 0, "processed": 4,
                                               "ok": 4, "faces written": 4}
    assert f"markdown: {out / 'report' / 'report.md'}" in printed.out and printed.err.count("img/s") == 0
    report_time = (out / "report" / "report.json").stat().st_mtime_ns
    figures = figure_lines(printed.out)
    assert len(figures) == 3 and figures[1].startswith("  sface  TAR@FAR=0.01   n/a %"), figures
    # why it reads n/a, under the figures (said in report.md alone before)
    assert figures[2] == "  TAR@FAR=0.01 reads n/a: FAR 0.01 is below 1 / impostors = 0.5: 2 impostor pairs cannot " \
                         "measure it.", figures

    # a rerun skips the done work, keeps the report, and shows progress bars unless --quiet; finding
    # nothing to do, it starts no actor pool (whose models would load for no input)
    pools = pool_actors()
    assert main(["run", str(dataset), str(out)]) == 0
    printed = capsys.readouterr()
    rows = summary_rows(printed.out, "run")
    assert rows["inputs"] == 4 and rows["skipped (already done)"] == 4 and rows["processed"] == 0
    assert pool_actors() == pools
    assert (out / "report" / "report.json").stat().st_mtime_ns == report_time
    # the report kept: its figures, as the first run printed them (it printed only its paths)
    assert "report up to date" in printed.out and figure_lines(printed.out) == figures

    # a new image: only it is masked and embedded, and the report is made again
    extra = sorted((shared_data / "faces" / "person_06").glob("*.jpg"))[2]
    shutil.copy(extra, dataset / "person_06" / extra.name)
    assert main(["run", str(dataset), str(out)]) == 0
    printed = capsys.readouterr()
    assert summary_rows(printed.out, "run")["processed"] == 1 and pool_actors() > pools
    assert "img/s" in printed.err and "no_face=0" in printed.err
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["results"][0]["verification"]["genuine"] == 3  # 1 probe of person_05, 2 of person_06
    assert main(["mask", str(dataset), "s3://KEY:SECRET@bucket/x", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "credentials in the URI are refused" in err and "SECRET" not in err


def test_a_seed_style_pairs_protocol_over_embedding_shards(ray_runtime, shared_data, tmp_path):
    """The README's recipe for c-RMFRD-style protocols: embed the folder, then score the pairs file."""
    from jobs.embed import run_embed
    from jobs.score import score_pairs
    from recog.protocols import read_seed_verification

    dataset = tmp_path / "dataset"
    keys = {}
    for person in ("person_07", "person_08"):
        for path in sorted((shared_data / "faces" / person).glob("*.jpg"))[:3]:
            (dataset / person).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dataset / person / path.name)
            keys.setdefault(person, []).append(f"{person}/{path.name}")
    run_embed(str(dataset), str(tmp_path / "emb"), "sface", masked=False)
    a7, a8 = keys["person_07"], keys["person_08"]
    rows = [(a7[0], a7[1], 1), (a7[0], a7[2], 1), (a8[0], a8[1], 1), (a8[1], a8[2], 1),
            (a7[0], a8[0], 0), (a7[1], a8[1], 0), (a7[2], a8[2], 0), (a8[0], "person_09/nowhere.jpg", 0)]
    protocol = tmp_path / "pairs.csv"
    protocol.write_bytes(("Input,Target,Label\n" + "".join(f"{x},{y},{z}\n" for x, y, z in rows)).encode("gbk"))
    pairs = read_seed_verification(protocol)
    with pytest.raises(ValueError, match="1 pair\\(s\\) have an image the shards do not hold"):
        score_pairs([str(tmp_path / "emb")], pairs, "sface")
    result = score_pairs([str(tmp_path / "emb")], pairs, "sface", missing="skip")
    assert result.verification["genuine"] == 4 and result.verification["impostor"] == 3
    assert result.verification["pairs_skipped"] == 1 and result.verification["auc"] > 0.9
    # one folder given as such (was walked letter by letter), and what a Python caller can get wrong:
    # no folder, the same images in two folders (the first folder's rows were taken, silently), a
    # skip that leaves one kind of pair (was the metrics' words)
    alone = score_pairs(str(tmp_path / "emb"), pairs, "sface", missing="skip")
    assert alone.verification == result.verification
    shutil.copytree(tmp_path / "emb", tmp_path / "again")
    both = f"6 image\\(s\\) are in both {tmp_path / 'emb'} and {tmp_path / 'again'}, e.g. 'person_07/"
    for uris, why in (([], "needs one or more embedding folders"),
                      ([str(tmp_path / "emb"), str(tmp_path / "again")], both)):
        with pytest.raises(ValueError, match=why):
            score_pairs(uris, pairs, "sface", missing="skip")
    from recog.protocols import Pairs

    one_kind = Pairs([a7[0], a8[0]], [a7[1], "person_09/nowhere.jpg"], [1, 0])
    with pytest.raises(ValueError, match="1 of the 2 pairs have an image the shards do not hold \\(missing='skip'\\), "
                                         "leaving only genuine pairs"):
        score_pairs([str(tmp_path / "emb")], one_kind, "sface", missing="skip")
