"""The `mfr` command line: help, models, config files, dry runs, and every `mfr` command the README
shows, run verbatim on a small real dataset."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import shlex
import sys

import pytest

from conftest import ROOT, require_shared
from jobs.cli import COMMANDS, apply_config, build_parser, main


def subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_complete_help_with_examples(command, capsys):
    parser, subs = subparsers()
    with pytest.raises(SystemExit) as info:
        parser.parse_args([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and f"mfr {command}" in text
    for action in subs[command]._actions:
        assert action.help, f"mfr {command}: {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize("argv, unknown", [(["evaluate", "a", "b", "--mode", "flip"], "--mode flip"),
                                            (["score", "p", "g", "out", "--dist"], "--dist")])
def test_an_option_is_never_taken_for_a_longer_one_it_begins(argv, unknown, capsys):
    """`mfr evaluate --mode flip` (evaluate has no --mode) was read as --model and refused as a model
    named flip."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert f"unrecognized arguments: {unknown}" in capsys.readouterr().err


def test_top_level_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    assert all(code in text for code in ("0 done", "1 done", "2 bad arguments", "130 interrupted"))


def test_models_list_describe_build(capsys, tmp_path):
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("sface", "dlib-resnet", "insightface-mbf")) and "opt-in" in listed
    assert main(["models", "describe", "dlib-resnet"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["input_size"] == [150, 150] and spec["similarity"] == "euclidean"
    assert main(["models", "build", "sface"]) == 0
    built = capsys.readouterr().out
    path = built.split(": ", 1)[1].split(" (sha256")[0]
    assert os.path.isfile(path) and re.search(r"sha256 [0-9a-f]{64}", built)
    assert main(["models", "describe", path]) == 0  # a built model carries its own spec
    assert json.loads(capsys.readouterr().out)["name"] == "sface"
    assert main(["models", "describe", "no-such-model"]) == 2
    assert "not a built-in model" in capsys.readouterr().err
    assert main(["models", "list", "sface"]) == 2  # was: the name ignored
    assert "takes no model name" in capsys.readouterr().err
    # a licensed model's file: refused without the flag, described with it (the flag was taken by
    # `build` only, and the refusal asked for the very flag given)
    from recog import zoo

    mbf = zoo.builtin_path("insightface-mbf", accept_licence=True)
    assert main(["models", "describe", str(mbf)]) == 2
    assert "--accept-model-licence" in capsys.readouterr().err
    assert main(["models", "describe", str(mbf), "--accept-model-licence"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "insightface-mbf"
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"junk\n")
    assert main(["models", "describe", str(junk)]) == 2  # was a protobuf traceback, exit 1
    assert capsys.readouterr().err.startswith(f"mfr models: {junk}: not an ONNX model (DecodeError")
    # a sidecar JSON beside a file wins over its metadata in every job: describe showed the metadata's spec
    own = tmp_path / "own.onnx"
    shutil.copy(path, own)
    own.with_suffix(".json").write_text(json.dumps({"name": "mine", "input_size": [112, 112], "embedding_size": 64,
                                                    "similarity": "euclidean", "normalize": False}))
    assert main(["models", "describe", str(own)]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # the spec is printed once checked: `describe X > spec.json` saved one that fails
    assert err.splitlines() == [f"spec from {own.with_suffix('.json')}",
                                f"mfr models: {own}: the model does not work as its spec (mine, from "
                                f"{own.with_suffix('.json')}) says: ValueError: mine: model gives 128-d vectors, "
                                "spec says 64"]
    own.with_suffix(".json").write_text(json.dumps({"name": "mine", "input_size": [112, 112], "embedding_size": 128}))
    assert main(["models", "describe", str(own)]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "mine"
    # build makes the built-in models: asked for none, or for a file of one's own, it says what it takes
    assert main(["models", "build"]) == 2
    assert "`mfr models build` needs a built-in model's name (`mfr models list`)" in capsys.readouterr().err
    assert main(["models", "build", str(own)]) == 2
    assert f"a model file of your own is used as it is: --model {own}" in capsys.readouterr().err


def test_config_file_sets_defaults_and_flags_win(tmp_path):
    config = tmp_path / "mfr.toml"
    config.write_text('quiet = true\n[mask]\nstyle = "surgical"\nseed = 7\nbatch-size = 4\n')
    for argv, style in ((["mask", "a", "b"], "surgical"), (["mask", "a", "b", "--style", "cloth"], "cloth")):
        argv = ["--config", str(config), *argv]
        parser = build_parser()
        apply_config(parser, argv)
        args = parser.parse_args(argv)
        assert (args.style, args.seed, args.batch_size, args.quiet) == (style, 7, 4, True)
    config.write_text('[mask]\nstyel = "surgical"\n')
    with pytest.raises(SystemExit) as info:
        main(["--config", str(config), "mask", "a", "b"])
    assert info.value.code == 2


def test_config_files_given_twice_or_not_toml_are_refused_and_names_may_come_as_arrays(tmp_path, capsys):
    """A second --config silently dropped the first file's options (seed 7 became 0); a JSON file
    was refused in tomllib's words alone ("Invalid statement"); `models = ["sface", "dlib-resnet"]`,
    as the README's "an option of several values takes an array" reads, said "expects text"."""
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    first.write_text('[mask]\nstyle = "surgical"\nseed = 7\n')
    second.write_text('[mask]\nstyle = "cloth"\n')
    with pytest.raises(SystemExit) as info:
        main(["--config", str(first), "mask", "a", "b", "--dry-run", "--config", str(second)])
    assert info.value.code == 2
    assert f"--config is given 2 times ({first}, {second}): one file holds a run's options" in capsys.readouterr().err
    as_json = tmp_path / "mfr.json"
    as_json.write_text('{"mask": {"style": "cloth"}}\n')
    with pytest.raises(SystemExit) as info:
        main(["--config", str(as_json), "mask", "a", "b", "--dry-run"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"--config {as_json}: not a TOML file (" in err and "a config file is TOML: `key = value` lines" in err
    # names: as the flag's comma-separated text, or an array of them (run's models and modes, score's fuse)
    config = tmp_path / "mfr.toml"
    for text in ('[run]\nmodels = "sface,dlib-resnet"\nmodes = "plain,flip"\n',
                 '[run]\nmodels = ["sface", "dlib-resnet"]\nmodes = ["plain", "flip"]\n'):
        config.write_text(text)
        parser, argv = build_parser(), ["--config", str(config), "run", "a", "b"]
        apply_config(parser, argv)
        args = parser.parse_args(argv)
        assert (args.models, args.modes) == ("sface,dlib-resnet", "plain,flip")
    # a switch a file turns on is turned off by its --no- flag ("flags on the command line win" held
    # for every option but the switches); the --no- spelling is no key of a file
    config.write_text('quiet = true\n[mask]\nstrict = true\n')
    for argv, expected in ((["mask", "a", "b"], (True, True)), (["mask", "a", "b", "--no-quiet", "--no-strict"],
                                                                 (False, False))):
        parser, argv = build_parser(), ["--config", str(config), *argv]
        apply_config(parser, argv)
        args = parser.parse_args(argv)
        assert (args.quiet, args.strict) == expected, argv
    config.write_text('[mask]\nno_quiet = true\n')
    with pytest.raises(SystemExit):
        main(["--config", str(config), "mask", "a", "b", "--dry-run"])
    assert "[mask] has no option 'no_quiet'" in capsys.readouterr().err
    config.write_text('[score]\nfuse = [["a", "b"], "a,c"]\n')
    parser, argv = build_parser(), ["--config", str(config), "score", "p", "g", "r"]
    apply_config(parser, argv)
    assert parser.parse_args(argv).fuse == ["a,b", "a,c"]
    config.write_text('[score]\nfuse = ["a", "b"]\n')  # two fusions of one method each, not one of two
    with pytest.raises(SystemExit):
        main(["--config", str(config), "score", "p", "g", "r"])
    assert "[score] fuse: each item is one fusion of two or more methods, e.g. fuse = [\"sface,dlib\"]" in \
        capsys.readouterr().err
    for text in ('[run]\nmodels = []\n', '[run]\nmodels = ["sface", 3]\n', '[run]\nmodels = ["a,b", "c"]\n',
                 '[run]\nmodels = 3\n'):
        config.write_text(text)
        with pytest.raises(SystemExit):
            main(["--config", str(config), "run", "a", "b", "--dry-run"])
        assert "[run] models: expects names, comma-separated in one text or an array of them" in \
            capsys.readouterr().err, text


def test_unreadable_config_and_protocol_files_are_refused_with_the_reason(tmp_path, capsys):
    """A config file that is not UTF-8, and a folder given as a pairs file, ended in Python
    tracebacks (exit 1); a top-level `face = "all"` was refused for `mfr mask` without saying that
    `mfr evaluate`, which also takes the key, was the command that cannot take it."""
    config = tmp_path / "mfr.toml"
    config.write_bytes('quiet = true\n# caf\u00e9\n'.encode("latin-1"))
    with pytest.raises(SystemExit) as info:
        main(["--config", str(config), "mask", "a", "b", "--dry-run"])
    assert info.value.code == 2
    assert "not UTF-8 text, as TOML must be (byte 18: b'\\xe9')" in capsys.readouterr().err
    config.write_text('face = "all"\n')
    with pytest.raises(SystemExit) as info:
        main(["--config", str(config), "mask", "a", "b", "--dry-run"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "face: " in err and "for `mfr evaluate`" in err and "put it under [mask]" in err, err
    images = tmp_path / "in" / "p"
    images.mkdir(parents=True)
    (images / "a.jpg").write_bytes(b"")
    assert main(["evaluate", str(images.parent), str(tmp_path / "out"), "--pairs", str(images), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (f"mfr evaluate: --pairs {images} is a folder: a protocol is a file "
                                               "(pairs, or a list of images)")
    # a file where `mfr score` wants an embed output: "not a usable key: ''"
    assert main(["score", str(images / "a.jpg"), str(images / "a.jpg"), str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == (f"mfr score: {images / 'a.jpg'} is a file: give the output folder "
                                               "of `mfr embed` (its shards/ hold the embeddings)")


def test_dry_run_lists_work_and_writes_nothing(shared_data, tmp_path, capsys, monkeypatch):
    import ray

    import jobs.augment
    import jobs.pool

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run must not start or join Ray")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(jobs.pool, "ensure_ray", refuse)
    monkeypatch.setattr(jobs.augment, "ensure_ray", refuse)
    out = tmp_path / "out"
    assert main(["mask", str(shared_data / "faces"), str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "56 input(s)" in printed and "0 already done" in printed and "... and 36 more" in printed  # 55 + SOURCES.tsv
    assert f"{out}/images/person_01/img1.jpg" in printed
    assert not out.exists()
    # the masks it would draw: a mistyped --style or --seed showed only after the whole job
    assert main(["mask", str(shared_data / "faces"), str(out), "--dry-run", "--style", "cloth", "--seed", "9"]) == 0
    assert ("  masks: style cloth, seed 9, outputs both, face all, alignment five-point, crop_size 112, finder mtcnn, "
            "crop_mode auto, second_look off\n") in capsys.readouterr().out
    assert main(["mask", str(shared_data / "faces"), str(out), "--dry-run", "--input-kind", "crops"]) == 0
    assert "finder mtcnn, crop_mode on, second_look on\n" in capsys.readouterr().out  # they lock an output too
    for outputs, listed in (("image", f"-> {out}/images/person_01/img1.jpg\n"),
                            ("crops", "-> crops/person_01/img1.jpg_face<i>.jpg\n")):  # only what is written
        assert main(["mask", str(shared_data / "faces"), str(out), "--dry-run", "--outputs", outputs]) == 0
        assert listed in capsys.readouterr().out
    # a manifest row marked masked is left as it is by mask and run (embed embeds it): listed as such,
    # not with the outputs the job never writes for it
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,identity,masked\nperson_01/img1.jpg,a,0\nperson_01/img2.jpg,a,1\n")
    images = str(shared_data / "faces")
    for command in (["mask"], ["run", "--models", "sface"]):
        assert main([command[0], str(manifest), str(out), "--images", images, "--dry-run", *command[1:]]) == 0
        printed = capsys.readouterr().out
        assert "person_01/img2.jpg -> left as it is: already_masked (the input manifest marks" in printed, command
        assert "img2.jpg, crops" not in printed and "img2.jpg, embedded" not in printed
        assert "person_01/img1.jpg -> " in printed and "img1.jpg -> left" not in printed
    assert not out.exists()


def readme_commands() -> list[list[str]]:
    """Every `.venv/bin/mfr ...` line in the README's bash blocks, as argv lists, in order. (The
    measurement recipes in `sh` blocks take minutes on their own data; their options run in
    tests/test_matching_jobs.py.)"""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        for line in block.splitlines():
            if line.startswith(".venv/bin/mfr "):
                commands.append(shlex.split(line.split("  #")[0])[1:])
    return commands


def test_readme_commands_run_verbatim(tmp_path, face_photos, monkeypatch, capsys):
    """The README's `mfr` commands, in order, from a working folder whose ../shared/data holds a small
    real subset (3 people, the 3 smallest photos of each: the commands run, not the detector, are
    what is tested) and the seed's files."""
    commands = readme_commands()
    assert len(commands) >= 8, commands
    seed = require_shared("seed")
    faces = tmp_path / "shared" / "data" / "faces"
    people = sorted({p.parent.name for p in face_photos})[:3]
    for person in people:
        (faces / person).mkdir(parents=True)
        for photo in sorted((p for p in face_photos if p.parent.name == person), key=lambda p: p.stat().st_size)[:3]:
            (faces / person / photo.name).symlink_to(photo)
    (tmp_path / "shared" / "data" / "seed").symlink_to(seed)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for argv in commands:
        if argv[0] == "demo":
            continue  # tests/test_demo_job.py runs `mfr demo` exactly as written
        if argv == ["--version"]:  # argparse's way out of a command that only prints
            with pytest.raises(SystemExit, match="0"):
                main(argv)
            continue
        # quietly, and on the local pool a user's job this small takes (the Ray path has tests of its own)
        assert main(argv + (["--quiet", "--executor", "local"] if argv[0] in ("mask", "embed", "run", "evaluate")
                            else [])) == 0, argv
    capsys.readouterr()
    assert (work / "out" / "report" / "report.md").is_file() and (work / "out" / "run" / "report" / "report.md").is_file()


def test_mask_and_embed_take_the_input_kind_crop_mode_and_alignment(ray_runtime, shared_data, detector, tmp_path,
                                                                    capsys, monkeypatch):
    """Tight crops of real masked faces: `--input-kind crops` pads them before detection (the manifest
    says which path found each face), and embed aligns them by located eyes. `embed --from-augment`
    took the finding options and `--images` without effect and recorded them, so that the same job
    without them was refused; they are now refused. `embed --recognition-workers` caps the recognition
    pool as `mfr run`'s does (embed had no such option: only the GPU nodes there were limited it)."""
    import sys

    import cv2
    import pandas as pd

    import jobs.embed
    from jobs.augment import read_manifest
    from jobs.pool import recognition_pool

    sys.path.insert(0, str(ROOT / "bench"))
    from lfw_like import tight_masked_crops

    crops = tmp_path / "crops"
    crops.mkdir()
    for i, crop in enumerate(tight_masked_crops(shared_data, detector, limit=6)):
        cv2.imwrite(str(crops / f"crop{i}.png"), crop[:, :, ::-1])
    assert main(["mask", str(crops), str(tmp_path / "masked"), "--input-kind", "crops", "--quiet"]) == 0
    faces = read_manifest(str(tmp_path / "masked"))
    assert len(faces) >= 6 and set(faces.status) == {"ok"}
    assert set(faces.source) <= {"yunet+pad", "onet-whole-image"}  # never the plain pass
    asked = []  # the recognition pool the job asks for (this Ray has no GPU: none, and the CPU pool embeds)
    monkeypatch.setattr(jobs.embed, "recognition_pool", lambda workers=None: asked.append(workers) or
                        recognition_pool(workers))
    capsys.readouterr()
    assert main(["embed", str(crops), str(tmp_path / "emb"), "--input-kind", "crops", "--alignment", "eyes",
                 "--masked", "--quiet", "--recognition-workers", "2"]) == 0
    assert asked == [2]
    assert ("note: --recognition-workers applies where recognition has GPUs: on this CPU-only cluster the CPU "
            "pool's actors (--workers) also embed") in capsys.readouterr().out
    shards = pd.concat(pd.read_parquet(p) for p in (tmp_path / "emb" / "shards").rglob("*.parquet"))
    assert len(shards) == 6 and set(shards.status) == {"ok"}
    # the points each crop was aligned with (were: none recorded when embedding from images)
    assert set(shards.alignment) == {"eyes"} and shards.aligned5.map(len).eq(10).all()
    capsys.readouterr()
    assert main(["embed", str(tmp_path / "masked"), str(tmp_path / "fa"), "--from-augment", "--masked",
                 "--crop-mode", "on", "--images", str(crops), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == ("mfr embed: --crop-mode, --images do not apply with --from-augment: "
                                               "it embeds the faces `mfr mask` found, read from its output (a "
                                               "--config file's key gives its option too: put it under the table "
                                               "of the command that takes it)")
    assert not (tmp_path / "fa").exists()
    args = build_parser().parse_args(["mask", "a", "b", "--crop-mode", "off", "--input-kind", "masked",
                                      "--second-look", "off"])
    assert (args.crop_mode, args.input_kind, args.second_look) == ("off", "masked", "off")
    assert build_parser().parse_args(["embed", "a", "b"]).second_look is None  # the input kind's preset
    assert build_parser().parse_args(["evaluate", "a", "b", "--recognition-workers", "3"]).recognition_workers == 3


def test_version_and_mfr_alone(capsys, tmp_path):
    """`mfr --version` names mfr's version and its components' (it was "unrecognized arguments"); `mfr`
    alone shows what it does and its commands (it said only "the following arguments are required").
    Neither --version nor --help reads options, so a missing or broken --config file does not stop them
    (it did: "--config ...: No such file or directory", exit 2, where a user asked what is installed)."""
    from importlib import metadata

    broken = tmp_path / "broken.toml"
    broken.write_text("workers = [\n")
    for argv in (["--version"], ["--config", str(tmp_path / "missing.toml"), "--version"],
                 ["--version", "--config", str(broken)]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        out = capsys.readouterr().out.strip()
        assert done.value.code == 0 and out.startswith(f"mfr {metadata.version('mfr')} (Python "), argv
        assert f"ray {metadata.version('ray')}" in out and f"numpy {metadata.version('numpy')}" in out
    with pytest.raises(SystemExit) as done:
        main(["--config", str(broken), "mask", "--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage: mfr mask")
    with pytest.raises(SystemExit) as done:  # a command that runs still reads, and refuses, the file
        main(["--config", str(broken), "mask", "a", "b", "--dry-run"])
    assert done.value.code == 2 and "--config " in capsys.readouterr().err
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: mfr") and "masked face recognition at scale" in err
    assert all(f"    {command} " in err for command in ("mask", "embed", "evaluate", "score", "run", "demo", "models"))


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_an_unusable_manifest_is_refused_with_its_own_reason_on_either_executor(executor, tmp_path, capsys):
    """On Ray the reason is raised in a read task, and Ray Data appends its retry advice to the
    error's message: the command still says what is wrong with the file, and writes nothing. Ray
    Data also logged the error to the console first, with three tracebacks (130 lines): the command
    runs as a user runs it, in a process of its own, where Ray Data's console handler writes. (A
    file whose text is unreadable only past its first MiB: its columns are checked before the job
    starts, from its head, test_a_manifest_without_paths_or_rows_is_refused_before_the_job_starts.)"""
    import subprocess
    import sys

    manifest = tmp_path / "list.csv"
    # UTF-8 for its first MiB (the head the command reads before the job starts), then a byte neither
    # UTF-8 nor GBK has: only the read task, reading it all, finds it
    padding = "".join(f"p{i:06d}.jpg,x\n" for i in range((1 << 20) // 13 + 1))
    manifest.write_bytes(f"path,identity\n{padding}".encode() + b"\x80.jpg,x\n")
    if executor == "local":
        assert main(["mask", str(manifest), str(tmp_path / "out"), "--quiet", "--executor", executor]) == 2
        stderr = capsys.readouterr().err
    else:
        done = subprocess.run([sys.executable, "-m", "jobs.cli", "mask", str(manifest), str(tmp_path / "out"),
                               "--quiet", "--executor", executor], capture_output=True, text=True, timeout=300,
                              cwd=ROOT, env={**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)})
        assert done.returncode == 2, done.stderr[-3000:]
        stderr = done.stderr
    assert "Traceback" not in stderr and "ERROR" not in stderr, stderr[:3000]
    err = stderr.strip().splitlines()[-1]
    assert err == ("mfr mask: list.csv: neither UTF-8 nor GBK text: give its encoding with --manifest-encoding "
                   "(cp1252 for a Western European spreadsheet's CSV), or save it as UTF-8")
    # nothing at all: the settings record it started with would refuse a corrected rerun with other masks
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


# a reader of the manifest left open printed "Exception ignored in: <generator object _records ...>" and a
# traceback under the refusal, once garbage collected
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_manifest_without_paths_or_rows_is_refused_before_the_job_starts(tmp_path, monkeypatch, capsys,
                                                                            s3_endpoint, bucket):
    """Its read task said so, once Ray had started: on a cluster whose worker nodes start at zero,
    after a node came up (minutes). The command reads the manifest's head (a Parquet file's footer)
    first, on a folder or a bucket, and refuses it in the read task's words, writing nothing."""
    import itertools

    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq

    import jobs.augment
    import jobs.embed
    import jobs.run

    def no_ray():
        raise AssertionError("Ray was started for a manifest the command could refuse first")

    for module in (jobs.augment, jobs.embed, jobs.run):
        monkeypatch.setattr(module, "ensure_ray", no_ray)
    no_path = ("mfr {command}: {name}: a manifest needs a 'path' column (or the seed's 'sub_folder' and "
               "'image_name'); it has ['file', 'identity']")
    no_rows = "mfr {command}: {name}: the manifest has no rows"
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.table({"file": ["a.jpg"], "identity": ["x"]}), buffer)
    empty = pa.BufferOutputStream()
    pq.write_table(pa.table({"path": pa.array([], pa.string())}), empty)
    # a header in GBK (the seed's lists), a BOM, rows past the head's MiB, rows of blank cells only
    long = "".join(f"file{i:06d}.jpg,x\n" for i in range((1 << 20) // 16 + 1))
    manifests = {"list.csv": ("file,identity\na.jpg,x\n".encode(), no_path),
                 "gbk.csv": ("file,identity\n张三.jpg,张\n".encode("gbk"), no_path),
                 "bom.csv": ("\ufefffile,identity\na.jpg,x\n".encode(), no_path),
                 "long.csv": (f"file,identity\n{long}".encode(), no_path),
                 "header.csv": (b"path,identity\n", no_rows),
                 "blank.csv": (b"path,identity\n,\n\n", no_rows),
                 "list.parquet": (buffer.getvalue().to_pybytes(), no_path),
                 "empty.parquet": (empty.getvalue().to_pybytes(), no_rows)}
    s3 = boto3.client("s3")
    commands = itertools.cycle(("mask", "embed", "run"))  # the check is input_listing's, which all three call
    for name, (data, said) in manifests.items():
        (tmp_path / name).write_bytes(data)
        s3.put_object(Bucket=bucket, Key=f"lists/{name}", Body=data)
        for where, out in ((str(tmp_path / name), tmp_path / "out"), (f"s3://{bucket}/lists/{name}", None)):
            command = next(commands)
            output = str(out / command) if out else f"s3://{bucket}/out/{command}"
            assert main([command, where, output, "--images", str(tmp_path), "--executor", "ray", "--quiet"]) == 2
            err = capsys.readouterr().err.strip().splitlines()[-1]
            assert err == said.format(command=command, name=name), (where, command, err)
    assert not (tmp_path / "out").exists()
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])
            if not o["Key"].startswith("lists/")] == []


@pytest.mark.parametrize("command", ("mask", "run", "embed", "evaluate"))
def test_a_refused_command_leaves_no_folders_behind(command, tmp_path, capsys):
    """`mfr run` over a manifest without a path column made masked/ and embeddings/ (its leases) before
    it read the manifest, and the corrected command was then refused, the output holding "files mfr did
    not write"; a damaged Parquet manifest said only pyarrow's "Parquet magic bytes not found"."""
    manifest = tmp_path / "list.csv"
    manifest.write_text("file,identity\na.jpg,x\n")
    damaged = tmp_path / "list.parquet"
    damaged.write_bytes(b"path,identity\na.jpg,x\n")
    (tmp_path / "empty").mkdir()
    for given, out, why in ((manifest, tmp_path / "new" / "a" / "b", "a manifest needs a 'path' column"),
                            (damaged, tmp_path / "empty", "list.parquet: not a readable Parquet file")):
        assert main([command, str(given), str(out), "--quiet", "--executor", "local"]) == 2
        assert why in capsys.readouterr().err
        # the folders made above a new output go too; a folder given stays
        assert not (tmp_path / "new").exists() if out.name == "b" else not any(out.iterdir())


def test_evaluate_says_a_missing_input_or_a_photo_is_not_a_folder(tmp_path, capsys):
    """Both read "holds no images" (mask, embed and run said what is wrong)."""
    (tmp_path / "one.jpg").write_bytes(b"\xff\xd8")
    for given, why in (("nope", "nope: no such folder"), ("one.jpg", "one.jpg is a file, not a folder")):
        assert main(["evaluate", str(tmp_path / given), str(tmp_path / "out"), "--quiet"]) == 2
        assert why in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_demo_refuses_a_folder_of_the_users(tmp_path, capsys):
    """`mfr demo --out DIR` replaced the user's own contact_sheet.png, exit 0."""
    (tmp_path / "contact_sheet.png").write_bytes(b"mine")
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 2
    assert "holds files the demo did not write (contact_sheet.png)" in capsys.readouterr().err
    assert (tmp_path / "contact_sheet.png").read_bytes() == b"mine" and not (tmp_path / "run").exists()
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 2
    assert "(contact_sheet.png, notes.txt)" in capsys.readouterr().err


def test_a_manifest_in_another_encoding_is_masked_when_its_encoding_is_given(face_photos, tmp_path, capsys):
    """A cp1252 manifest naming "Müller/" reads as GBK on its own, and its row is missing, with a note
    that says why; given --manifest-encoding cp1252 (or from a --config file), its images are masked.
    The option is refused where there is no CSV manifest to read."""
    photos = tmp_path / "photos" / "Müller"
    photos.mkdir(parents=True)
    shutil.copy(face_photos[0], photos / "b.jpg")
    manifest = tmp_path / "list.csv"
    manifest.write_bytes("path,identity\nMüller/b.jpg,muller\n".encode("cp1252"))
    images = str(tmp_path / "photos")
    here = ["--executor", "local"]  # (`auto` took the test process's Ray where an earlier test had started it)
    assert main(["mask", str(manifest), str(tmp_path / "auto"), "--images", images, "--quiet", *here]) == 0
    out = capsys.readouterr().out
    assert "list.csv is not UTF-8: it is read as GBK" in out and "missing" in out
    # the same output read in another encoding: its GBK rows would stay beside the right ones
    assert main(["mask", str(manifest), str(tmp_path / "auto"), "--images", images, "--quiet",
                 "--manifest-encoding", "cp1252"]) == 2
    assert ("was listed from the manifest read as auto (UTF-8, else GBK) (--manifest-encoding); this run reads it as "
            "cp1252") in capsys.readouterr().err
    config = tmp_path / "mfr.toml"
    config.write_text('manifest-encoding = "cp1252"\n')
    assert main(["mask", str(manifest), str(tmp_path / "given"), "--images", images, "--quiet",
                 "--config", str(config), *here]) == 0
    out = capsys.readouterr().out
    assert "not UTF-8" not in out and "missing" not in out
    from jobs.augment import read_manifest

    rows = read_manifest(str(tmp_path / "given"))
    assert set(rows.source_key) == {"Müller/b.jpg"} and rows.masked.any()
    assert (tmp_path / "given" / rows.output_key.iloc[0]).is_file()
    assert main(["mask", images, str(tmp_path / "folder"), "--manifest-encoding", "cp1252", "--quiet"]) == 2
    assert "--manifest-encoding applies to an input manifest" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["mask", str(manifest), str(tmp_path / "x"), "--manifest-encoding", "klingon"])
    assert "not a text encoding Python knows: 'klingon'" in capsys.readouterr().err


def test_demo_to_s3_is_refused_not_written_to_a_local_s3_folder(tmp_path, monkeypatch, capsys):
    """`mfr demo --out s3://bucket/demo` wrote everything to ./s3:/bucket/demo and exited 0."""
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--out", "s3://bucket/demo", "--quiet"]) == 2
    assert "writes to a local folder (--out), not s3://bucket/demo" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_demo_takes_the_licence_flag_its_refusal_names(tmp_path, capsys):
    """`mfr demo --model insightface-mbf` said to pass --accept-model-licence, which demo refused."""
    assert main(["demo", "--out", str(tmp_path / "demo"), "--model", "insightface-mbf", "--quiet"]) == 2
    assert "(command line: --accept-model-licence)" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
    args = build_parser().parse_args(["demo", "--model", "insightface-mbf", "--accept-model-licence"])
    assert args.accept_model_licence is True and args.model == "insightface-mbf"


def test_a_dry_run_refuses_the_lists_of_models_and_modes_the_run_refuses(face_photos, tmp_path, capsys):
    """`--models sface,sface`, `--modes plain,plain` and `--modes ""` were fine for the dry run and
    refused by the run; `--models ",,"` ran the default model; `embed --mask-style cloth` without
    masked-gallery meant nothing."""
    from conftest import photo_folder

    dataset = photo_folder(tmp_path / "in", face_photos[:1])
    for extra, shown in ((["--models", "sface,sface"], "['sface', 'sface'], ['plain']"),
                         (["--modes", "plain,plain"], "['sface'], ['plain', 'plain']"),
                         (["--modes", ""], "['sface'], []"), (["--models", ",,"], "[], ['plain']")):
        for dry in (["--dry-run"], ["--quiet", "--executor", "local"]):
            assert main(["run", str(dataset), str(tmp_path / "out"), *extra, *dry]) == 2
            assert capsys.readouterr().err == \
                f"mfr run: models and modes must be non-empty and without repeats: {shown}\n"
    assert not (tmp_path / "out").exists()
    assert main(["embed", str(dataset), str(tmp_path / "emb"), "--mask-style", "cloth", "--dry-run"]) == 2
    assert "--mask-style chooses the mask --mode masked-gallery draws" in capsys.readouterr().err


def test_an_output_that_is_a_file_is_refused_by_the_dry_run_as_by_the_run(face_photos, tmp_path, capsys):
    """The dry runs of mask, embed and run printed a plan into a file the run then refused, and the
    run's words were the OS's ("File exists"), not that the output is a file."""
    from conftest import photo_folder

    dataset = photo_folder(tmp_path / "in", face_photos[:1])
    (tmp_path / "afile").write_bytes(b"someone's file")
    for output, where in ((tmp_path / "afile", "it"), (tmp_path / "afile" / "out", str(tmp_path / "afile"))):
        for command in ("mask", "embed", "run"):
            for dry in (["--dry-run"], ["--quiet", "--executor", "local"]):
                assert main([command, str(dataset), str(output), *dry]) == 2, (command, dry)
                assert capsys.readouterr().err == \
                    f"mfr {command}: cannot write under {output}: {where} is a file, not a folder\n"
    assert (tmp_path / "afile").read_bytes() == b"someone's file"


def test_an_output_under_a_folder_that_may_not_be_looked_into_is_refused_in_words(face_photos, tmp_path):
    """The run printed "[Errno 13] Permission denied: '...'" and, through the folder clean-up, a
    traceback could follow; the dry run the same errno; `mfr run`, `evaluate` and `score` named a path
    inside the output (".../embeddings/unmasked/shards") that the user never gave. As root the folder's mode is ignored, so the
    commands run without the capabilities that override it (setpriv)."""
    import stat
    import subprocess

    from conftest import photo_folder

    command = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("as root, a folder's permissions need setpriv (util-linux) to take effect")
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    dataset = photo_folder(tmp_path / "in", face_photos[:1])
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    out = str(locked / "out")
    try:
        for argv in (["mask", str(dataset), out, "--dry-run"], ["mask", str(dataset), out, "--executor", "local"],
                     ["run", str(dataset), out, "--dry-run"], ["run", str(dataset), out, "--executor", "local"],
                     ["evaluate", str(dataset), out], ["score", str(dataset), str(dataset), out],
                     ["score", str(dataset), str(dataset), str(locked)], ["mask", str(dataset), str(locked)]):
            done = subprocess.run([*command, sys.executable, "-m", "jobs.cli", *argv], capture_output=True, text=True,
                                  timeout=300)
            assert (done.returncode, done.stderr) == \
                (2, f"mfr {argv[0]}: cannot write under {argv[3 if argv[0] == 'score' else 2]}: Permission denied\n"), \
                (argv, done.stderr[-2000:])
    finally:
        locked.chmod(stat.S_IRWXU)


def test_every_benchmark_and_tool_prints_its_usage_for_help():
    """`--help` ran two benchmarks for minutes and made the tools fail with tracebacks (the argument
    taken as a data folder). All of them in one process, each as `python SCRIPT --help` runs it."""
    import subprocess
    import sys

    scripts = sorted(str(p) for d in ("bench", "tools") for p in (ROOT / d).glob("*.py")
                     if p.name not in ("lfw_like.py", "reference_mtcnn.py"))  # helpers other scripts import
    code = ("import contextlib, io, runpy, sys\n"
            "for script in sys.argv[1:]:\n"
            "    sys.argv = [script, '--help']\n"
            "    out = io.StringIO()\n"
            "    try:\n"
            "        with contextlib.redirect_stdout(out):\n"
            "            runpy.run_path(script, run_name='__main__')\n"
            "        print('NO EXIT', script)\n"
            "    except SystemExit as exc:\n"
            "        print('EXIT', exc.code, script, 'usage:' in out.getvalue())\n")
    done = subprocess.run([sys.executable, "-c", code, *scripts], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    results = done.stdout.splitlines()
    assert len(results) == len(scripts) >= 15, results
    assert all(line.startswith("EXIT 0 ") and line.endswith(" True") for line in results), results


def test_score_given_a_run_or_mask_output_says_where_the_shards_are(tmp_path, capsys):
    """`mfr score OUT OUT REPORT` on a run's output said only "no embedding shards under OUT/shards";
    on an evaluate's, it sent the user to score OUT/embeddings against itself, which takes each
    identity's first images as its gallery, masked or not (not what the evaluation scored)."""
    evaluated = tmp_path / "evaluated"
    (evaluated / "embeddings").mkdir(parents=True)
    (evaluated / "embeddings" / "_mfr_embed_settings.json").write_text("{}")
    assert main(["score", str(evaluated), str(evaluated), str(tmp_path / "report")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mfr score: no embedding shards under {evaluated}/shards: {evaluated} is the output of `mfr evaluate`, "
        f"whose shards are under {evaluated}/embeddings, masked and unmasked images together; `mfr evaluate` again "
        f"on its input into {evaluated} scores them (nothing is embedded again), masked against unmasked")
    run = tmp_path / "run"
    (run / "embeddings" / "masked").mkdir(parents=True)
    (run / "embeddings" / "masked" / "_mfr_embed_settings.json").write_text("{}")
    masked = tmp_path / "masked"
    masked.mkdir()
    (masked / "_mfr_settings.json").write_text("{}")
    assert main(["score", str(run), str(run), str(tmp_path / "report")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mfr score: no embedding shards under {run}/shards: {run} is the output of `mfr run`, whose shards are "
        f"under {run}/embeddings/masked (the probes) and {run}/embeddings/unmasked (the gallery)")
    assert main(["score", str(masked), str(masked), str(tmp_path / "report")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mfr score: no embedding shards under {masked}/shards: {masked} is the output of `mfr mask`; embed its "
        f"masked faces first (mfr embed {masked} EMB --from-augment --masked) and score EMB")
    shards = tmp_path / "emb" / "shards"  # the shard folder itself, given for its output
    (shards / "g=x").mkdir(parents=True)
    (shards / "g=x" / "part-0.parquet").write_bytes(b"PAR1")
    assert main(["score", str(shards), str(shards), str(tmp_path / "report")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mfr score: no embedding shards under {shards}/shards: {shards} holds the shards themselves; give the "
        "folder above it")


def test_the_summary_gives_a_small_rate_in_two_figures():
    """One image in 27.5 s read "images/s 0.0" (a rerun on Ray that had one image to do)."""
    from jobs.progress import summary_table
    from jobs.sink import JobSummary

    def rate(processed, seconds):
        table = summary_table("run", JobSummary(inputs=processed, processed=processed, seconds=seconds))
        return next(line.split()[-1] for line in table.splitlines() if "images/s" in line)

    assert [rate(1, 27.5), rate(56, 22.0), rate(2000, 1.6), rate(0, 3.0)] == ["0.036", "2.5", "1250.0", "0.0"]
    # a rate of one or two images a second is a rate, not a count (a table reader took "1" for one); 9.97 is 10.0
    assert [rate(4, 4.0), rate(4, 2.01), rate(997, 100.0), rate(4, 40.0)] == ["1.0", "2.0", "10.0", "0.10"]


def test_the_python_api_checks_its_arguments_before_any_work(tmp_path):
    """What the CLI's argparse types refuse, the Python functions refuse too, before anything is read or
    written: max_pairs=0 sampled one impostor per probe without a word, masked="no" made an empty
    output and failed in a worker, batch_size=0 failed on the first call, flip="no" turned flipping
    on, and modes="flip" was read letter by letter."""
    from jobs.embed import run_embed
    from jobs.run import run_methods
    from jobs.score import run_score
    from recog.embed import Embedder

    for bad in (0, -7, 2.5):
        with pytest.raises(ValueError, match="max_pairs must be a whole number of at least 1"):
            run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "report"), max_pairs=bad)
    with pytest.raises(ValueError, match="masked is True or False, got 'no'"):
        run_embed(str(tmp_path), str(tmp_path / "emb"), masked="no", executor="local")
    assert not (tmp_path / "emb").exists() and not (tmp_path / "report").exists()
    for kwargs, why in (({"batch_size": 0}, "batch_size must be"), ({"flip": "no"}, "flip is True or False")):
        with pytest.raises(ValueError, match=why):
            Embedder("sface", **kwargs)
    assert run_methods("sface", "flip") == (["sface"], ["flip"])
    assert run_methods(["sface"], ("plain", "flip")) == (["sface"], ["plain", "flip"])


def test_a_relative_output_under_ray_job_submit_is_refused(tmp_path, monkeypatch, capsys):
    """A submitted job runs in Ray's copy of the working folder, deleted after the job: a relative output
    was written there and lost while the job said it succeeded."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what Ray sets for a submitted job's driver
    for command in (["mask", str(tmp_path), "out/masked"], ["run", str(tmp_path), "out/run", "--dry-run"],
                    ["score", str(tmp_path / "p"), str(tmp_path / "g"), "report"], ["demo"]):  # demo: out/demo
        assert main(command) == 2
        said = capsys.readouterr().err
        assert f"a relative output under `ray job submit` is written inside Ray's copy of the working folder " \
               f"({tmp_path}), in its session temp folder, where Ray removes it at will" in said, said
    assert not (tmp_path / "out").exists()
    # an absolute output goes on to the usual checks (here: an empty input), as it does outside a job
    assert main(["mask", str(tmp_path), str(tmp_path / "out"), "--dry-run"]) == 2
    assert "ray job submit" not in capsys.readouterr().err
    # a relative input is looked for in Ray's copy of the working folder: the refusal says so
    assert main(["mask", "data/faces", str(tmp_path / "out")]) == 2
    assert ("data/faces: no such folder (nothing was written); under `ray job submit` a relative path is looked for "
            f"in Ray's copy of the working folder ({tmp_path})") in capsys.readouterr().err
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")
    assert main(["mask", str(tmp_path), "out/masked", "--dry-run"]) == 2  # outside a job a relative path is fine
    assert "ray job submit" not in capsys.readouterr().err


def test_values_that_crashed_or_were_ignored_are_refused_before_any_output(tmp_path, capsys):
    """A CLI review: each of these ended in a traceback (exit 1, read as "--strict failures"), or did
    something else than asked without a word."""
    images = tmp_path / "in" / "p"
    images.mkdir(parents=True)
    (images / "a.jpg").write_bytes(b"")
    cases = [  # (argv, what the refusal says)
        (["mask", str(images.parent), str(tmp_path / "o1"), "--batch-size", str(2**63)], "must be at most 2**63 - 1"),
        (["score", str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "o2"), "--gallery-per-identity",
          str(2**63)], "must be at most 2**63 - 1"),
        (["score", str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "o3"), "--fuse", ""],
         "a fusion takes two or more different methods"),
        (["score", str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "o4"), "--fuse", "a,b,a"],
         "a fusion takes two or more different methods"),
        (["score", str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "o5"), "--fuse", "sface"],
         "a fusion takes two or more different methods"),
        (["evaluate", str(images.parent), str(tmp_path / "o6"), "--pairs", ""], "--pairs names no file"),
        (["demo", "--out", ""], "--out names no folder"),
    ]
    for argv, said in cases:
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's refusal of a flag's value
            code = exc.code
        assert code == 2, argv
        assert said in capsys.readouterr().err, argv
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("o")]  # no output folder made
    from jobs.augment import run_augment

    with pytest.raises(ValueError, match=r"batch_size must be at most 2\*\*63 - 1"):
        run_augment(str(images.parent), str(tmp_path / "o7"), batch_size=2**63)


def test_a_config_table_that_sets_one_option_twice_is_refused(tmp_path, capsys):
    """`dry_run` then `dry-run`, or `face` with `largest_only`: the file's order chose without a word."""
    config = tmp_path / "mfr.toml"
    for text, said in (('[mask]\ndry_run = true\ndry-run = false\n', "[mask] sets one option twice: dry_run and "
                                                                      "dry-run"),
                       ('[mask]\nface = "center"\nlargest_only = true\n', "[mask] sets one option twice: face and "
                                                                           "largest_only"),
                       ('batch_size = 4\nbatch-size = 8\n', "sets one option of `mfr mask`, `mfr embed`, `mfr evaluate`, `mfr run` "
                                                   "twice at the top level: batch_size and batch-size"),
                       ('[mask]\nstyle = true\n', "[mask] style: expects one of seed, "),
                       ('[mask]\nworkers = true\n', "[mask] workers: expects a whole number, got True")):
        config.write_text(text)
        with pytest.raises(SystemExit) as info:
            main(["--config", str(config), "mask", "a", "b", "--dry-run"])
        assert info.value.code == 2
        assert said in capsys.readouterr().err, text
    # `model` and `models` at the top level are one option of `mfr run` and `mfr evaluate`
    config.write_text('model = "sface"\nmodels = "dlib-resnet"\n')
    with pytest.raises(SystemExit):
        main(["--config", str(config), "run", "a", "b", "--dry-run"])
    assert "sets one option of `mfr evaluate`, `mfr run` twice at the top level: model and models" in \
        capsys.readouterr().err
    # a switch set to false that stores a constant sets nothing: beside `face`, it is no second setting
    config.write_text('[mask]\nface = "all"\nlargest_only = false\n')
    parser, argv = build_parser(), ["--config", str(config), "mask", "a", "b"]
    apply_config(parser, argv)
    assert parser.parse_args(argv).face == "all"
    # --max-pixels past 2**63 is no limit, as in the Python API (the count cap is for counts)
    assert build_parser().parse_args(["mask", "a", "b", "--max-pixels", str(2**64)]).max_pixels == 2**64


def test_a_licensed_models_licence_is_said_once_a_process(caplog, monkeypatch):
    """`mfr embed --model insightface-mbf --accept-model-licence` printed its licence line twice (the
    job looks its model up more than once)."""
    import logging

    from recog import zoo

    monkeypatch.setattr(zoo, "_LICENCES_SAID", set(), raising=False)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            zoo.builtin_path("insightface-mbf", accept_licence=True)
    said = [r for r in caplog.records if "under its licence" in r.getMessage()]
    assert len(said) == 1 and "insightface-mbf" in said[0].getMessage()


def test_a_job_into_a_report_folder_is_refused_as_such(tmp_path, capsys):
    """`mfr embed DS REPORT` into an `mfr score` report's folder was refused as holding "files mfr did not
    write" (cmc.png, report.json, ...), which mfr had written."""
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.json").write_text(json.dumps({"model_id": "sface@sha256:0", "results": []}))
    (report / "report.md").write_text("# report\n")
    dataset = tmp_path / "in" / "p"
    dataset.mkdir(parents=True)
    (dataset / "a.jpg").write_bytes(b"")
    for command in ("embed", "mask"):
        assert main([command, str(tmp_path / "in"), str(report), "--quiet", "--executor", "local"]) == 2
        err = capsys.readouterr().err
        assert "holds a report of `mfr score` or `mfr evaluate` (report.json, report.md)" in err, err
        assert "did not write" not in err
    (report / "report.json").write_text("{}")  # not mfr's
    assert main(["embed", str(tmp_path / "in"), str(report), "--quiet", "--executor", "local"]) == 2
    assert "already holds files mfr did not write" in capsys.readouterr().err


def test_run_score_from_python_leaves_no_empty_output_when_it_fails(tmp_path):
    """`run_score` made its (new, local) output folder before finding the shards missing, and left it
    empty behind it: `mfr score` removed it, the Python call did not."""
    from jobs.score import run_score

    with pytest.raises(FileNotFoundError, match="no embedding shards under"):
        run_score(str(tmp_path / "p"), str(tmp_path / "g"), str(tmp_path / "reports" / "r"))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()  # a folder that was there stays
    with pytest.raises(FileNotFoundError):
        run_score(str(tmp_path / "p"), str(tmp_path / "g"), output_uri=str(tmp_path / "kept"))
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]


def test_rays_pool_start_warning_is_kept_off_stderr_and_nothing_else(face_photos, tmp_path):
    """Ray 2.60's core worker wrote an error-level line as each pool started ("... has constructor
    arguments in the object store and max_restarts > 0 ..."): the first line of every job on Ray,
    `make demo` included. The job's stderr passes through `filtering_stderr` while its Dataset runs:
    that line is dropped, everything else kept, a progress bar's partial lines at once."""
    import subprocess

    code = r"""
import os, sys, time
from jobs.pool import RAY_ACTOR_RESTART_NOTICE, filtering_stderr
with filtering_stderr(RAY_ACTOR_RESTART_NOTICE):
    os.write(2, b"\rrun:  50%|")
    time.sleep(0.3)
    os.write(2, b"[2026-12-06 12:29:25,242 E 26585 26585] core_worker.cc:2465: Actor with class name: "
                b"'MapWorker(MapBatches(RunWorker))' and ID: '94' has constructor arguments in the object store and "
                b"max_restarts > 0. If the arguments in the object store go out of scope or are lost, the actor "
                b"restart will fail.\n")
    print("a line of our own", file=sys.stderr)
    os.write(2, b"[2026-12-06 12:29:26,000 E 1 1] core_worker.cc:99: another error of Ray's\n")
print("after", file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == (b"\rrun:  50%|a line of our own\n[2026-12-06 12:29:26,000 E 1 1] core_worker.cc:99: another "
                           b"error of Ray's\nafter\n")
    # a job that dies in the block (Ray's core ends a job whose head is gone with abort() or _exit): what
    # it wrote last still reaches stderr (a thread of the job's copying it died with it, the words too)
    for end in ("os._exit(3)", "os.abort()"):
        dying = ("import os\nfrom jobs.pool import RAY_ACTOR_RESTART_NOTICE, filtering_stderr\n"
                 "with filtering_stderr(RAY_ACTOR_RESTART_NOTICE):\n"
                 "    os.write(2, b'[2026-12-06 E 1 1] rpc_client.h:204: Failed to connect to GCS within 5 seconds\\n')\n"
                 f"    {end}\n")
        died = subprocess.run([sys.executable, "-c", dying], cwd=ROOT, capture_output=True, timeout=60)
        assert died.returncode != 0 and died.stderr.endswith(b"Failed to connect to GCS within 5 seconds\n"), died
    # and a job on Ray, not quiet: its progress bar and summary, not that line (one actor's is enough: a
    # second is only another model load)
    (tmp_path / "in" / "p").mkdir(parents=True)
    shutil.copy(face_photos[0], tmp_path / "in" / "p" / "a.jpg")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_BACKEND_LOG_LEVEL")}
    job = subprocess.run([sys.executable, "-m", "jobs.cli", "mask", str(tmp_path / "in"), str(tmp_path / "out"),
                          "--executor", "ray", "--workers", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**env, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)})
    assert job.returncode == 0 and "mask:" in job.stdout and "ok=1" in job.stderr, job.stderr[-2000:]
    assert "constructor arguments in the object store" not in job.stderr, job.stderr[-2000:]
