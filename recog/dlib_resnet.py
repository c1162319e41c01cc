"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) converted to ONNX.

Only numpy and `onnx`: the file is parsed with dlib's serialisation rules and the network is written
as an ONNX graph, deterministically, so the model needs neither dlib nor a download at run time.

Serialisation facts (dlib/serialize.h, dlib/dnn/*.h):
- An integer is one control byte (low 4 bits: number of little-endian magnitude bytes that follow;
  bit 0x80: negative) and those bytes. A float is two integers, mantissa and exponent
  (value = mantissa * 2**exponent). A bool is one ASCII byte '0' or '1'. A string is a length and
  its bytes. A tensor is version 2, four dimensions (N, K, rows, cols), then N*K*rows*cols
  little-endian float32 in NCHW order; an alias tensor is version 1 and four dimensions.
- The loss layer (`loss_metric_2`: margin, distance threshold) comes first. Every layer writes its
  version and then its whole sub-network before its own data, so after the loss details the file has
  a run of nested version numbers (2 for a computational layer, 1 for tag and skip layers, 3 for the
  layer on the input) and then the layers' data from the input outwards: `input_rgb_image_sized`
  (channel means, rows, cols), then per layer its details, three bools, its (empty) state tensors,
  and after the first layer its sample-expansion factor.
- `con_4`: one params tensor (filters out/in/kh/kw, then biases), filter count, kernel rows/cols,
  strides, paddings, two alias tensors, four learning-rate/decay multipliers. Filters are
  cross-correlations, as in ONNX. `affine_` (frozen batch norm, y = x * gamma + beta): params
  (gamma then beta), two aliases, mode. `max_pool_2`/`avg_pool_2`: window, strides, paddings (a 0
  window pools everything). `fc_2`: outputs, inputs, params (input-major), two aliases, bias mode,
  four multipliers. `relu_` and `add_prev_` carry nothing.
- `add_prev` adds tensors of different shapes by giving the result the larger size in every
  dimension and zero-padding the smaller operand at the end.
The architecture (dlib's dnn_face_recognition_ex.cpp): a 7x7/2 convolution and 3x3/2 max pool,
then residual blocks (conv, affine, relu, conv, affine, add, relu; downsampling blocks stride the
first conv and average-pool 2x2/2 the shortcut), a global average pool and a 128-d fully connected
layer without bias. Its output is not normalised; dlib's rule: same person when the Euclidean
distance is below 0.6.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BUILDER_VERSION = 3
OPSET = 17


class DlibFormatError(ValueError):
    pass


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def int(self) -> int:
        if self.pos >= len(self.data):
            raise DlibFormatError("unexpected end of file")
        control = self.data[self.pos]
        size = control & 0x0F
        if size > 8:
            raise DlibFormatError(f"bad integer control byte {control:#x} at offset {self.pos}")
        start = self.pos + 1
        value = int.from_bytes(self.data[start:start + size], "little")
        self.pos = start + size
        return -value if control & 0x80 else value

    def peek_int(self) -> int:
        saved = self.pos
        try:
            return self.int()
        finally:
            self.pos = saved

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return float(mantissa) * 2.0 ** exponent

    def bool(self) -> bool:
        byte = self.data[self.pos:self.pos + 1]
        if byte not in (b"0", b"1"):
            raise DlibFormatError(f"expected a bool at offset {self.pos}, found {byte!r}")
        self.pos += 1
        return byte == b"1"

    def string(self) -> str:
        n = self.int()
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        return raw.decode("ascii")

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise DlibFormatError(f"tensor version {version} at offset {self.pos}, expected 2")
        dims = [self.int() for _ in range(4)]
        count = int(np.prod(dims))
        end = self.pos + 4 * count
        if end > len(self.data):
            raise DlibFormatError("tensor runs past the end of the file")
        array = np.frombuffer(self.data[self.pos:end], dtype="<f4").reshape(dims).astype(np.float32)
        self.pos = end
        return array

    def alias(self) -> tuple[int, ...]:
        if self.int() != 1:
            raise DlibFormatError("alias tensor version must be 1")
        return tuple(self.int() for _ in range(4))


@dataclass
class DlibLayer:
    kind: str                 # con, affine, relu, max_pool, avg_pool, add_prev, fc
    params: dict = field(default_factory=dict)


@dataclass
class DlibMetricNet:
    margin: float
    distance_threshold: float
    channel_means: tuple[float, float, float]  # R, G, B
    input_size: tuple[int, int]                 # rows, cols
    layers: list[DlibLayer]


def parse(data: bytes) -> DlibMetricNet:
    """Parse a dlib metric-learning network file; the whole file must be consumed."""
    r = _Reader(data)
    if r.int() != 1 or r.string() != "loss_metric_2":
        raise DlibFormatError("not a dlib loss_metric network (expected loss_metric_2 first)")
    margin, threshold = r.float(), r.float()
    versions = []
    while r.peek_int() in (1, 2, 3):
        versions.append(r.int())
    if not versions or versions[-1] != 3:
        raise DlibFormatError("nested layer versions do not end with the input layer's version 3")
    if r.string() != "input_rgb_image_sized":
        raise DlibFormatError("expected input_rgb_image_sized")
    means = (r.float(), r.float(), r.float())
    size = (r.int(), r.int())
    layers = []
    while r.pos < len(data):
        name = r.string()
        layers.append(_read_layer(r, name))
        for _ in range(3):
            r.bool()
        while r.pos < len(data) and r.peek_int() == 2:
            r.tensor()  # training state (gradients, cached outputs): empty in a released model
        if len(layers) == 1:
            r.int()     # the first layer's sample expansion factor
    if r.pos != len(data):
        raise DlibFormatError(f"{len(data) - r.pos} trailing bytes")
    n_computational = sum(v != 1 for v in versions)
    if n_computational != len(layers):
        raise DlibFormatError(f"{n_computational} computational layers nested but {len(layers)} serialised")
    return DlibMetricNet(margin, threshold, means, size, layers)


def _read_layer(r: _Reader, name: str) -> DlibLayer:
    if name == "con_4":
        params = r.tensor().reshape(-1)
        nf, nr, nc, sy, sx, py, px = (r.int() for _ in range(7))
        filters = r.alias()
        r.alias()  # the biases alias: their count is nf
        for _ in range(4):
            r.float()
        n_weights = int(np.prod(filters))
        if params.size != n_weights + nf:
            raise DlibFormatError(f"con_4: {params.size} params for {filters} filters and {nf} biases")
        return DlibLayer("con", {"weight": params[:n_weights].reshape(filters), "bias": params[n_weights:],
                                 "stride": (sy, sx), "pad": (py, px)})
    if name == "affine_":
        params = r.tensor().reshape(-1)
        r.alias(), r.alias()
        mode = r.int()
        half = params.size // 2
        return DlibLayer("affine", {"gamma": params[:half], "beta": params[half:], "mode": mode})
    if name in ("max_pool_2", "avg_pool_2"):
        nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
        return DlibLayer(name[:-2], {"window": (nr, nc), "stride": (sy, sx), "pad": (py, px)})
    if name == "fc_2":
        n_out, n_in = r.int(), r.int()
        params = r.tensor().reshape(-1)
        r.alias(), r.alias()
        bias_mode = r.int()
        for _ in range(4):
            r.float()
        has_bias = bias_mode == 0
        weight = params[:n_in * n_out].reshape(n_in, n_out)
        bias = params[n_in * n_out:] if has_bias else None
        return DlibLayer("fc", {"weight": weight, "bias": bias})
    if name == "relu_":
        return DlibLayer("relu")
    if name == "add_prev_":
        return DlibLayer("add_prev")
    raise DlibFormatError(f"unsupported dlib layer {name!r}")


def build_onnx(net: DlibMetricNet):
    """ONNX graph: input `image` (N, 3, rows, cols) already normalised ((pixel - mean) / 256, RGB
    planes), output `embedding` (N, 128), not normalised."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    counter = [0]

    def name(prefix):
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(prefix, array, dtype=np.float32):
        n = name(prefix)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=dtype), n))
        return n

    def op(kind, inputs, **attrs):
        out = name(kind.lower())
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    layers = list(net.layers)
    i = 0

    def take(kind):
        nonlocal i
        if i >= len(layers) or layers[i].kind != kind:
            found = layers[i].kind if i < len(layers) else "end"
            raise DlibFormatError(f"layer {i}: expected {kind}, found {found}")
        i += 1
        return layers[i - 1]

    # Shapes are static (the input size is fixed), so zero-padding is planned here and ORT sees plain
    # Conv/Add/Relu chains it can fuse; shape[name] = (channels, rows, cols).
    shape = {"image": (3, *net.input_size)}

    def conv_affine(x):
        """A convolution followed by its frozen batch norm, folded into one Conv."""
        con, aff = take("con"), take("affine")
        g = aff.params["gamma"]
        w = con.params["weight"] * g[:, None, None, None]
        b = con.params["bias"] * g + aff.params["beta"]
        (sy, sx), (py, px) = con.params["stride"], con.params["pad"]
        y = op("Conv", [x, const("W", w), const("B", b)], kernel_shape=list(w.shape[2:]),
               strides=[sy, sx], pads=[py, px, py, px])
        _, rows, cols = shape[x]
        shape[y] = (w.shape[0], (rows + 2 * py - w.shape[2]) // sy + 1, (cols + 2 * px - w.shape[3]) // sx + 1)
        return y

    def pool(x, layer, kind):
        (nr, nc), (sy, sx), (py, px) = layer.params["window"], layer.params["stride"], layer.params["pad"]
        channels, rows, cols = shape[x]
        if nr == 0:  # pool everything
            y = op("GlobalAveragePool" if kind == "avg" else "GlobalMaxPool", [x])
            shape[y] = (channels, 1, 1)
            return y
        y = op("AveragePool" if kind == "avg" else "MaxPool", [x], kernel_shape=[nr, nc],
               strides=[sy, sx], pads=[py, px, py, px])
        shape[y] = (channels, (rows + 2 * py - nr) // sy + 1, (cols + 2 * px - nc) // sx + 1)
        return y

    def pad_to(x, target):
        missing = [t - c for t, c in zip(target, shape[x])]
        if not any(missing):
            return x
        pads = np.array([0, 0, 0, 0, 0, *missing], np.int64)
        y = op("Pad", [x, const("pads", pads, np.int64)])
        shape[y] = target
        return y

    def add_zero_padded(a, b):
        """dlib's add_prev: result takes the larger size in every dimension; zeros pad the end."""
        target = tuple(max(p, q) for p, q in zip(shape[a], shape[b]))
        y = op("Add", [pad_to(a, target), pad_to(b, target)])
        shape[y] = target
        return y

    def pooled_shortcut(x, layer, channels_out):
        """Average pool plus zero channels, as one Conv (weights 1/window over the identity, zero for
        the new channels): the same numbers, and the residual Add then joins two Convs, which ONNX
        Runtime fuses."""
        (nr, nc), (sy, sx), (py, px) = layer.params["window"], layer.params["stride"], layer.params["pad"]
        channels_in, rows, cols = shape[x]
        if nr == 0 or (py, px) != (0, 0) or channels_out < channels_in:
            return pad_to(pool(x, layer, "avg"), (channels_out, *shape[x][1:]))
        w = np.zeros((channels_out, channels_in, nr, nc), np.float32)
        w[np.arange(channels_in), np.arange(channels_in)] = 1.0 / (nr * nc)
        y = op("Conv", [x, const("W", w)], kernel_shape=[nr, nc], strides=[sy, sx])
        shape[y] = (channels_out, (rows - nr) // sy + 1, (cols - nc) // sx + 1)
        return y

    def relu(x):
        take("relu")
        y = op("Relu", [x])
        shape[y] = shape[x]
        return y

    x = conv_affine("image")
    x = pool(relu(x), take("max_pool"), "max")
    while i < len(layers) and layers[i].kind == "con":
        block_in = x
        y = conv_affine(relu(conv_affine(x)))
        if layers[i].kind == "avg_pool":  # downsampling block: the shortcut is average-pooled
            shortcut = pooled_shortcut(block_in, take("avg_pool"), shape[y][0])
        else:
            shortcut = block_in
        take("add_prev")
        x = relu(add_zero_padded(y, shortcut))
    x = pool(x, take("avg_pool"), "avg")
    x = op("Flatten", [x], axis=1)
    fc = take("fc")
    inputs = [x, const("W", fc.params["weight"])]
    if fc.params["bias"] is not None:
        inputs.append(const("B", fc.params["bias"]))
    y = op("Gemm", inputs)
    if i != len(layers):
        raise DlibFormatError(f"{len(layers) - i} layers left after the fully connected layer")
    nodes.append(helper.make_node("Identity", [y], ["embedding"]))
    rows, cols = net.input_size
    graph = helper.make_graph(
        nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, rows, cols])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", fc.params["weight"].shape[1]])],
        initializer=inits,
    )
    model = helper.make_model(graph, producer_name="mfr.recog", producer_version=str(BUILDER_VERSION),
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
