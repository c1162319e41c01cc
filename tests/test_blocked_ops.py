"""PReLUs rewritten into ONNX Runtime's blocked ops compute what PRelu computes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from maskgen.blocked_ops import rewrite_prelus


def run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_every_per_channel_prelu_is_rewritten_and_computes_the_same():
    rng = np.random.default_rng(3)
    c = 24
    # slopes of every kind: negative, zero, between 0 and 1, one and above (the path without a fused Relu)
    mixed = np.concatenate([[-0.7, 0.0, 0.3, 1.0, 1.4], rng.uniform(-0.5, 0.9, c - 5)]).astype(np.float32)
    below_one = rng.uniform(-0.6, 0.95, c).astype(np.float32)
    dense = rng.uniform(-0.5, 0.5, 6).astype(np.float32)
    inits = [numpy_helper.from_array(rng.normal(size=(c, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(mixed.reshape(c, 1, 1), "a1"),
             numpy_helper.from_array(rng.normal(size=(c, c, 3, 3)).astype(np.float32) / 10, "w2"),
             numpy_helper.from_array(below_one.reshape(1, c, 1, 1), "a2"),
             numpy_helper.from_array(rng.normal(size=(c * 4, 6)).astype(np.float32) / 10, "w3"),
             numpy_helper.from_array(dense, "a3")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["c1", "a1"], ["p1"]),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], strides=[4, 4]),
             helper.make_node("PRelu", ["c2", "a2"], ["p2"]),
             helper.make_node("Flatten", ["p2"], ["f"]),
             helper.make_node("MatMul", ["f", "w3"], ["d"]),
             helper.make_node("PRelu", ["d", "a3"], ["y"])]  # a dense layer's PReLU: not a feature map, kept
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(size=(5, 3, 8, 8)).astype(np.float32) * 3
    expected = run(model, x)

    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert rewrite_prelus(rewritten) == 2
    onnx.checker.check_model(rewritten)
    kinds = [n.op_type for n in rewritten.graph.node]
    assert kinds.count("PRelu") == 1 and kinds.count("Conv") == 2 + 2 * 2
    names = {i.name for i in rewritten.graph.initializer}
    assert {"a1", "a2"}.isdisjoint(names) and "a3" in names  # the replaced slopes are gone, the kept one stays
    np.testing.assert_allclose(run(rewritten, x), expected, rtol=1e-5, atol=1e-5)
    assert np.abs(expected).max() > 1  # not a graph that outputs zeros

    # a graph with nothing left to rewrite is left exactly as it was
    before = rewritten.SerializeToString()
    assert rewrite_prelus(rewritten) == 0 and rewritten.SerializeToString() == before
