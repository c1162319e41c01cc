"""ONNX graph pieces laid out for ONNX Runtime's blocked (NCHWc) CPU convolutions.

ORT runs convolutions on CPUs in a blocked channel layout and fuses a Relu, or an Add of another
map, into them; its PRelu kernel has no blocked form, so every PReLU between two convolutions costs
the kernel itself (per-channel slopes broadcast) and a layout change on each side. In SFace (27
PReLUs) that was 62 % of the time (PRelu 48 %, reorders 14 %; ORT's profiler, one thread, batch 16),
in MTCNN's networks more than two thirds. The same function in blocked ops:

    PReLU(x) = relu(x) * (1 - a) + x * a                         (per channel slope a)
             = relu(x * (1 - a)) + x * a      where every a < 1  (1 - a > 0 passes through relu)

two depthwise 1x1 convolutions (the Relu fused into one, the Add into the other where ORT can) that
never leave the blocked layout. Values equal PRelu's to float rounding.

`prelu_as_depthwise` makes the nodes (maskgen/mtcnn_graphs.py builds its networks with it);
`rewrite_prelus` puts them in place of the PRelu nodes of an existing graph (recog.embed.prepared_graph,
for every recognition model run on CPUs).
"""

from __future__ import annotations

import numpy as np


def prelu_as_depthwise(x: str, a: np.ndarray, ax: str, rb: str, y: str, fresh, const) -> list:
    """The nodes computing y = PReLU(x) with per-channel slopes `a` (C,) as depthwise 1x1
    convolutions: `ax` and `rb` name the two terms, `fresh(prefix)` makes a new tensor name and
    `const(prefix, array)` adds an initializer and returns its name."""
    from onnx import helper

    c = a.size
    nodes = [helper.make_node("Conv", [x, const("alpha", a.reshape(c, 1, 1, 1))], [ax], group=c, kernel_shape=[1, 1])]
    if (a < 1).all():
        scaled = fresh("prelu_b")
        nodes.append(helper.make_node("Conv", [x, const("alpha", (1.0 - a).reshape(c, 1, 1, 1))], [scaled],
                                      group=c, kernel_shape=[1, 1]))
        nodes.append(helper.make_node("Relu", [scaled], [rb]))
    else:
        r = fresh("relu")
        nodes.append(helper.make_node("Relu", [x], [r]))
        nodes.append(helper.make_node("Conv", [r, const("alpha", (1.0 - a).reshape(c, 1, 1, 1))], [rb],
                                      group=c, kernel_shape=[1, 1]))
    nodes.append(helper.make_node("Add", [rb, ax], [y]))
    return nodes


def rewrite_prelus(model, external_data: str | None = None) -> int:
    """Replace (in place) every PRelu of `model` whose slope is a per-channel constant of a feature
    map (an initializer of shape (C, 1, 1) or (1, C, 1, 1)) by `prelu_as_depthwise`; other PRelus
    (a dense layer's, shared slopes) stay. Returns how many were replaced. The rewritten nodes keep
    the PRelu's input and output names, so the rest of the graph is untouched. `external_data`: the
    folder a slope kept in an external weight file is read from (the model file's own; onnx would
    look in the working folder)."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    taken = {n for node in graph.node for n in (*node.input, *node.output)} | set(inits)
    counter = {"n": 0}
    added = []

    def fresh(prefix: str) -> str:
        while True:
            counter["n"] += 1
            name = f"blocked_{prefix}_{counter['n']}"
            if name not in taken:
                taken.add(name)
                return name

    def const(prefix: str, array: np.ndarray) -> str:
        name = fresh(prefix)
        added.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    nodes, replaced, dropped = [], 0, set()
    for node in graph.node:
        slope = inits.get(node.input[1]) if node.op_type == "PRelu" and len(node.input) == 2 else None
        a = numpy_helper.to_array(slope, base_dir=external_data or "") if slope is not None else None
        if a is not None and a.ndim == 4 and a.shape[0] == 1:  # (1, C, 1, 1): the same slopes
            a = a[0]
        if a is None or a.ndim != 3 or a.shape[1:] != (1, 1) or a.dtype != np.float32:
            nodes.append(node)
            continue
        nodes.extend(prelu_as_depthwise(node.input[0], a.reshape(-1), fresh("prelu_ax"), fresh("prelu_rb"),
                                        node.output[0], fresh, const))
        dropped.add(slope.name)
        replaced += 1
    still_used = {n for node in nodes for n in node.input}
    keep = [i for i in graph.initializer if i.name not in dropped or i.name in still_used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(keep + added)
    return replaced
