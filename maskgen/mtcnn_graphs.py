"""Build MTCNN's P-Net, R-Net and O-Net as ONNX graphs from the weights the `mtcnn` package ships.

The `mtcnn` wheel (MIT) carries its trained weights as joblib/lz4 files, each a list of numpy arrays
in Keras `get_weights()` order. Its own code needs TensorFlow; we only read the arrays and write the
same networks as plain ONNX (NCHW), so detection runs on ONNX Runtime (CPU or CUDA) with no
TensorFlow anywhere. The build is pure and deterministic: the same weights give the same bytes.

Layer facts mirrored from `mtcnn/network/{pnet,rnet,onet}.py` (mtcnn 1.0.0):
- Conv2D kernels are (kh, kw, in, out) -> ONNX (out, in, kh, kw); padding "valid".
- PReLU alphas are shared over H and W: (1, 1, C) -> (C, 1, 1).
- Max pooling "same" is TensorFlow's: any odd padding goes to the bottom/right (ONNX SAME_UPPER).
- Before the dense layers Keras permutes NHWC (2, 1, 3) and flattens, i.e. the order is W, H, C.
- Softmax over the two classes (non-face, face).

The graphs are laid out for ONNX Runtime's blocked (NCHWc) CPU convolutions, which P-Net, R-Net and
O-Net spent less than a third of their time in: its PRelu kernel (per-channel slopes broadcast) and the
layout changes around it took the rest. So, with the same function:
- PReLU after a convolution is relu(x) * (1 - a) + x * a: a Relu and two depthwise 1x1 convolutions, all
  blocked kernels (R-Net and O-Net 2x faster, P-Net 1.2x); with every slope a < 1 (all but the first
  layers'), relu(x * (1 - a)), the Relu fused into its convolution: bit for bit the same values, one pass
  over the map fewer (P-Net and R-Net 1.07x). maskgen.blocked_ops makes these nodes, for the
  recognition models' PReLUs too;
- a convolution's channel count is padded to a multiple of 16 with zero filters (slope 0 there, zero
  weights in the next layer), so no layer falls back to the plain layout (P-Net's 10, R-Net's 28);
- P-Net's two-class softmax is a sigmoid of the logit differences, fused into its 1x1 convolution;
- where a max pool follows a network's first PReLU, the PReLU runs after the pool, on a quarter of the
  values (that PReLU over the full-size map was a third of P-Net's time and of R-Net's). A PReLU with
  slope a >= 0 is non-decreasing, so it commutes with max; with a < 0 it falls then rises, so the
  largest value of a window comes from the window's largest or smallest input: max(P, a * m), with m
  the smallest. The convolution also writes the negated map of the a < 0 channels (into its zero
  padding where that has room), one pool takes both maxima (P, and -m), and 1x1 convolutions finish:
  PReLU-then-pool = d * relu(L2(pooled)) + L1(pooled), per channel L1 = a * P, L2 = P, d = 1 - a
  where a >= 0, and L1 = |a| * (-m), L2 = P - |a| * (-m), d = 1 where a < 0.
Outputs equal the plain graph's to float rounding (~1e-6); tests/test_mtcnn_graphs.py checks them
against the Keras networks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from maskgen.blocked_ops import prelu_as_depthwise

OPSET = 17
IR_VERSION = 8
# Bump when the graph layout changes, so cached files from an older build are not reused.
BUILDER_VERSION = 4
CHANNEL_BLOCK = 16  # ONNX Runtime's NCHWc block: 8 floats on AVX2 machines, 16 on AVX-512; 16 is whole blocks on both
NETWORKS = ("pnet", "rnet", "onet")


@dataclass(frozen=True)
class _Layer:
    kind: str  # conv, prelu, pool_same, pool_valid, flatten, dense, head, head_softmax
    params: tuple = ()


# Per network: the trunk, then the heads (name, kind). Weight arrays are consumed in this order.
_ARCHITECTURES: dict[str, dict] = {
    "pnet": {
        "input": (None, 3, None, None),
        "trunk": [
            _Layer("conv"), _Layer("prelu"), _Layer("pool_same", (2, 2)),
            _Layer("conv"), _Layer("prelu"),
            _Layer("conv"), _Layer("prelu"),
        ],
        "prelu_after_pool": 1,  # the trunk index of the PReLU moved after its pool (blocked layout)
        "heads": [("bbox_reg", "conv", 4), ("face_prob", "conv_softmax", 2)],
    },
    "rnet": {
        "input": (None, 3, 24, 24),
        "trunk": [
            _Layer("conv"), _Layer("prelu"), _Layer("pool_same", (3, 2)),
            _Layer("conv"), _Layer("prelu"), _Layer("pool_valid", (3, 2)),
            _Layer("conv"), _Layer("prelu"),
            _Layer("flatten"), _Layer("dense"), _Layer("prelu"),
        ],
        "prelu_after_pool": 1,
        "heads": [("bbox_reg", "dense", 4), ("face_prob", "dense_softmax", 2)],
    },
    "onet": {
        "input": (None, 3, 48, 48),
        "trunk": [
            _Layer("conv"), _Layer("prelu"), _Layer("pool_same", (3, 2)),
            _Layer("conv"), _Layer("prelu"), _Layer("pool_valid", (3, 2)),
            _Layer("conv"), _Layer("prelu"), _Layer("pool_same", (2, 2)),
            _Layer("conv"), _Layer("prelu"),
            _Layer("flatten"), _Layer("dense"), _Layer("prelu"),
        ],
        "prelu_after_pool": 1,
        "heads": [("bbox_reg", "dense", 4), ("landmarks", "dense", 10), ("face_prob", "dense_softmax", 2)],
    },
}


def weights_path(name: str) -> Path:
    """The weight file inside the installed `mtcnn` distribution (found without importing it: it imports TensorFlow)."""
    if name not in NETWORKS:
        raise ValueError(f"unknown MTCNN network {name!r}; expected one of {NETWORKS}")
    try:
        dist = metadata.distribution("mtcnn")
    except metadata.PackageNotFoundError as exc:
        raise RuntimeError("the `mtcnn` package (which ships the MTCNN weights) is not installed") from exc
    path = Path(dist.locate_file(f"mtcnn/assets/weights/{name}.lz4"))
    if not path.is_file():
        raise RuntimeError(f"mtcnn {dist.version} does not ship {path.name} where expected ({path})")
    return path


def load_weights(name: str) -> list[np.ndarray]:
    import joblib

    arrays = joblib.load(weights_path(name))
    return [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]


LAYOUTS = ("blocked", "plain")


def build_graph(name: str, weights: list[np.ndarray], layout: str = "blocked"):
    """The ONNX ModelProto of network `name` holding `weights` (Keras order). Pure: no I/O.
    `layout`: `blocked` (the default, laid out for ONNX Runtime's blocked kernels, see above) or
    `plain` (the networks op for op as Keras has them: PRelu, unpadded channels, Softmax), kept as the
    reference the blocked graphs are checked and timed against."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    blocked = layout == "blocked"
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    arch = _ARCHITECTURES[name]
    nodes, inits = [], []
    it = iter(weights)
    counter = {"n": 0}

    def fresh(prefix: str) -> str:
        counter["n"] += 1
        return f"{prefix}_{counter['n']}"

    def const(prefix: str, array: np.ndarray) -> str:
        tname = fresh(prefix)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), tname))
        return tname

    state = {"channels": None, "real": None}  # channels of x as laid out (padded), when x is a feature map

    def conv(x: str, pad_to_block: bool = True, two_class_sigmoid: bool = False, weights=None,
             negated: np.ndarray = np.empty(0, np.int64)) -> str:
        """A convolution; `negated` output channels are written a second time, negated, after the
        real ones (for `conv_prelu_pool`)."""
        kernel, bias = weights if weights else (next(it), next(it))
        w = kernel.transpose(3, 2, 0, 1)  # (out, in, kh, kw)
        if state["channels"] and state["channels"] > w.shape[1]:  # the previous layer's zero channels
            w = np.concatenate([w, np.zeros((w.shape[0], state["channels"] - w.shape[1]) + w.shape[2:],
                                            np.float32)], axis=1)
        if two_class_sigmoid:  # softmax over (l0, l1) == sigmoid(l0 - l1), sigmoid(l1 - l0)
            w, bias = np.stack([w[0] - w[1], w[1] - w[0]]), np.array([bias[0] - bias[1], bias[1] - bias[0]])
        w, bias = np.concatenate([w, -w[negated]]), np.concatenate([bias, -bias[negated]])
        out = w.shape[0]
        padded = -(-out // CHANNEL_BLOCK) * CHANNEL_BLOCK if pad_to_block and blocked else out
        if padded > out:
            w = np.concatenate([w, np.zeros((padded - out,) + w.shape[1:], np.float32)])
            bias = np.concatenate([bias, np.zeros(padded - out, np.float32)])
        y = fresh("conv")
        nodes.append(helper.make_node("Conv", [x, const("W", w), const("B", bias)], [y],
                                      kernel_shape=list(kernel.shape[:2])))
        if two_class_sigmoid:
            z = fresh("sigmoid")
            nodes.append(helper.make_node("Sigmoid", [y], [z]))
            y = z
        state["channels"], state["real"] = padded, out
        return y

    def prelu_map(x: str, alpha: np.ndarray) -> str:
        """PReLU of a feature map in depthwise 1x1 convolutions (maskgen.blocked_ops), with a zero slope
        on the padding channels."""
        a = np.concatenate([alpha.reshape(-1), np.zeros(state["channels"] - alpha.size, np.float32)])
        ax, rb, y = fresh("prelu_ax"), fresh("prelu_rb"), fresh("prelu")
        nodes.extend(prelu_as_depthwise(x, a, ax, rb, y, fresh, const))
        return y

    def pool(x: str, layer: _Layer) -> str:
        k, s = layer.params
        y = fresh("pool")
        pad = "SAME_UPPER" if layer.kind == "pool_same" else "VALID"
        nodes.append(helper.make_node("MaxPool", [x], [y], kernel_shape=[k, k], strides=[s, s], auto_pad=pad))
        return y

    def conv_prelu_pool(x: str, pool_layer: _Layer) -> str:
        """conv, PReLU, max pool, computed as conv, max pool, PReLU (see the module's docstring)."""
        kernel, bias, alpha = next(it), next(it), next(it)
        a = alpha.reshape(-1).astype(np.float64)
        real = a.size
        negated = np.nonzero(a < 0)[0]
        pooled = pool(conv(x, weights=(kernel, bias), negated=negated), pool_layer)
        width, out = state["channels"], -(-real // CHANNEL_BLOCK) * CHANNEL_BLOCK
        l1, l2, d = np.zeros((out, width)), np.zeros((out, width)), np.zeros(out)
        for c in range(real):
            l2[c, c] = 1.0
            if a[c] >= 0:
                l1[c, c], d[c] = a[c], 1.0 - a[c]
            else:  # the negated copy of channel c holds -(smallest value of the window)
                j = real + int(np.searchsorted(negated, c))
                l1[c, j], l2[c, j], d[c] = -a[c], a[c], 1.0
        t1, t2, r, rd, y = fresh("prelu_l1"), fresh("prelu_l2"), fresh("relu"), fresh("prelu_d"), fresh("prelu")
        nodes.append(helper.make_node("Conv", [pooled, const("L2", l2.reshape(out, width, 1, 1))], [t2],
                                      kernel_shape=[1, 1]))
        nodes.append(helper.make_node("Relu", [t2], [r]))
        nodes.append(helper.make_node("Conv", [r, const("d", d.reshape(out, 1, 1, 1))], [rd],
                                      group=out, kernel_shape=[1, 1]))
        nodes.append(helper.make_node("Conv", [pooled, const("L1", l1.reshape(out, width, 1, 1))], [t1],
                                      kernel_shape=[1, 1]))
        nodes.append(helper.make_node("Add", [rd, t1], [y]))
        state["channels"], state["real"] = out, real
        return y

    def dense(x: str) -> str:
        kernel, bias = next(it), next(it)
        y = fresh("dense")
        nodes.append(helper.make_node("Gemm", [x, const("W", kernel), const("B", bias)], [y]))
        return y

    def softmax(x: str) -> str:
        y = fresh("softmax")
        nodes.append(helper.make_node("Softmax", [x], [y], axis=1))
        return y

    x = "image"
    trunk = arch["trunk"]
    fused = arch["prelu_after_pool"] if blocked else None
    i = 0
    while i < len(trunk):
        layer = trunk[i]
        if fused is not None and i == fused - 1:
            assert [t.kind for t in trunk[i:i + 2]] == ["conv", "prelu"] and trunk[i + 2].kind.startswith("pool")
            x = conv_prelu_pool(x, trunk[i + 2])
            i += 3
            continue
        i += 1
        if layer.kind == "conv":
            x = conv(x)
        elif layer.kind == "prelu":
            alpha = next(it)
            if alpha.ndim == 3 and blocked:
                x = prelu_map(x, alpha)
            else:
                y = fresh("prelu")
                slope = alpha.reshape(-1, 1, 1) if alpha.ndim == 3 else alpha.reshape(-1)
                nodes.append(helper.make_node("PRelu", [x, const("alpha", slope)], [y]))
                x = y
        elif layer.kind in ("pool_same", "pool_valid"):
            x = pool(x, layer)
        elif layer.kind == "flatten":
            if state["channels"] != state["real"]:  # the dense weights expect the real channels
                raise AssertionError(f"{name}: a channel-padded map cannot be flattened")
            state["channels"] = None
            t, y = fresh("whc"), fresh("flat")
            nodes.append(helper.make_node("Transpose", [x], [t], perm=[0, 3, 2, 1]))
            nodes.append(helper.make_node("Flatten", [t], [y], axis=1))
            x = y
        elif layer.kind == "dense":
            x = dense(x)
        else:  # pragma: no cover - the table above is fixed
            raise AssertionError(layer.kind)

    outputs = []
    for out_name, kind, channels in arch["heads"]:
        if kind.startswith("conv"):
            y = conv(x, pad_to_block=False, two_class_sigmoid=blocked and kind.endswith("softmax"))
            if not blocked and kind.endswith("softmax"):
                y = softmax(y)
        else:
            y = dense(x)
            if kind.endswith("softmax"):
                y = softmax(y)
        nodes.append(helper.make_node("Identity", [y], [out_name]))
        shape = ["batch", channels, "out_height", "out_width"] if kind.startswith("conv") else ["batch", channels]
        outputs.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, shape))

    leftover = sum(1 for _ in it)
    if leftover:
        raise ValueError(f"{name}: {leftover} weight arrays left unused; the weight file does not match the network")

    _, c, h, w = arch["input"]
    inp = helper.make_tensor_value_info(
        "image", TensorProto.FLOAT, ["batch", c, h if h else "height", w if w else "width"]
    )
    graph = helper.make_graph(nodes, f"mtcnn_{name}", [inp], outputs, initializer=inits)
    model = helper.make_model(
        graph,
        producer_name="mfr.maskgen",
        producer_version=str(BUILDER_VERSION),
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = IR_VERSION
    model.doc_string = f"MTCNN {name.upper()} from the mtcnn package's weights; input NCHW RGB, (x - 127.5) / 128"
    onnx.checker.check_model(model)
    return model


def build_bytes(name: str, layout: str = "blocked") -> bytes:
    return build_graph(name, load_weights(name), layout).SerializeToString()


def cached_models(cache_root: Path | None = None) -> dict[str, Path]:
    """Paths to the three ONNX files, built on first use and kept in the model cache.

    The cache key covers the weight file's hash and the builder version, so a new `mtcnn` release
    or a change of this builder produces new files instead of reusing stale ones.
    """
    from maskgen.runtime import cache_dir, cached_bytes_file, sha256_bytes, write_atomic

    root = (cache_root or cache_dir()) / "mtcnn"
    paths = {}
    for name in NETWORKS:
        weights_sha = sha256_bytes(weights_path(name).read_bytes())
        path = root / f"{name}-{weights_sha[:16]}-b{BUILDER_VERSION}.onnx"
        # the build is deterministic: its hash is known before the file is trusted
        paths[name] = cached_bytes_file(path, lambda name=name: build_bytes(name), expected=_built_sha(name, path))
        if not path.with_suffix(".json").is_file():
            write_atomic(path.with_suffix(".json"), json.dumps({
                "network": name, "weights_sha256": weights_sha, "onnx_sha256": sha256_bytes(path.read_bytes()),
                "mtcnn_version": metadata.version("mtcnn"), "builder_version": BUILDER_VERSION,
            }, indent=1).encode())
    return paths


def _built_sha(name: str, path: Path) -> str | None:
    """The ONNX file's SHA-256 as recorded when it was built (None before the first build)."""
    record = path.with_suffix(".json")
    try:
        return json.loads(record.read_text())["onnx_sha256"]
    except (OSError, ValueError, KeyError):
        return None
