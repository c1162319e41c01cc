"""The ONNX graphs we build from the mtcnn package's weights compute what its Keras networks compute."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnxruntime as ort
import pytest

from conftest import FIXTURES
from maskgen import mtcnn_graphs

# Same cases and seed as tools/mtcnn_keras_outputs.py, which recorded the Keras outputs.
CASES = (("pnet", (2, 37, 51, 3)), ("rnet", (5, 24, 24, 3)), ("onet", (5, 48, 48, 3)))


def _inputs():
    rng = np.random.default_rng(0)
    return {name: rng.uniform(-1, 1, size=shape).astype(np.float32) for name, shape in CASES}


@pytest.mark.parametrize("layout", mtcnn_graphs.LAYOUTS)
@pytest.mark.parametrize("name", mtcnn_graphs.NETWORKS)
def test_graph_matches_keras_reference(name, layout):
    recorded = np.load(FIXTURES / "mtcnn_keras_outputs.npz")
    x = _inputs()[name]
    assert hashlib.sha256(x.tobytes()).digest() == recorded[f"{name}_input_sha256"].tobytes(), \
        "numpy's seeded generator changed; regenerate the fixture with tools/mtcnn_keras_outputs.py"
    session = ort.InferenceSession(mtcnn_graphs.build_bytes(name, layout), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"image": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})
    for i, ours in enumerate(outputs):
        keras = recorded[f"{name}_output{i}"]
        if keras.ndim == 4:  # Keras is NHWC, our graphs NCHW
            keras = keras.transpose(0, 3, 1, 2)
        assert ours.shape == keras.shape
        np.testing.assert_allclose(ours, keras, atol=1e-5, rtol=0)


def test_output_names_and_dynamic_batch():
    session = ort.InferenceSession(mtcnn_graphs.build_bytes("onet"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["bbox_reg", "landmarks", "face_prob"]
    for batch in (1, 7):
        reg, lm, prob = session.run(None, {"image": np.zeros((batch, 3, 48, 48), np.float32)})
        assert reg.shape == (batch, 4) and lm.shape == (batch, 10) and prob.shape == (batch, 2)
        np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-6)


def test_build_is_byte_identical_and_cached(tmp_path):
    first = mtcnn_graphs.cached_models(tmp_path)
    blobs = {name: path.read_bytes() for name, path in first.items()}
    for name, blob in blobs.items():
        assert blob == mtcnn_graphs.build_bytes(name), f"{name}: a rebuild changed the bytes"
        meta = json.loads(first[name].with_suffix(".json").read_text())
        assert meta["onnx_sha256"] == hashlib.sha256(blob).hexdigest()
        assert meta["weights_sha256"][:16] in first[name].name
    mtimes = {name: path.stat().st_mtime_ns for name, path in first.items()}
    again = mtcnn_graphs.cached_models(tmp_path)
    assert again == first
    assert {name: path.stat().st_mtime_ns for name, path in again.items()} == mtimes, "cache was rebuilt"


def test_weights_with_wrong_layout_are_refused():
    weights = mtcnn_graphs.load_weights("rnet")
    with pytest.raises(ValueError, match="left unused"):
        mtcnn_graphs.build_graph("rnet", weights + [np.zeros(3, np.float32)])
    with pytest.raises(ValueError, match="unknown MTCNN network"):
        mtcnn_graphs.weights_path("xnet")
