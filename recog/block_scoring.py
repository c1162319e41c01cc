"""One block of probes against one part of the gallery: the reducer's arithmetic, on NumPy or ONNX Runtime.

    scorer = block_scorer("onnxruntime", device="cuda")   # or "numpy"
    scorer.set_gallery(part_embeddings)                   # kept on the device for every block
    facts = scorer.block(probes, mates, impostors, best_in, floor, pool_rows)

Both sides come L2-normalised (`Scoring.prepare`, as the reducer does): the scorers take dot products
and do not normalise, so raw embeddings give raw dot products, not cosines. A block's facts
(`BlockFacts`), for `b` probes against a part of `n` entries (cosine, both sides normalised):

- `genuine`: the scores at `mates` (k (row, column) pairs), `impostor`: at `impostors` (m pairs);
- `best`: per row, the larger of `best_in` and its best genuine score here (-inf without one);
- `top`: per row, its best non-mated score here; `count`: its non-mated identities with a score that
  ties `best` or beats it (>= `recog.metrics.tie_floor(best)`), an identity counted once however many
  of its entries do (the part's columns in identity order, `runs` given to `set_gallery`; without
  runs each entry is an identity of its own);
- `candidates`: the non-mated scores >= `floor` of the rows flagged in `pool_rows` (finite only).

`NumpyBlockScorer` does it with one matrix product and NumPy passes over the block. The ONNX
Runtime graph (`block_graph`, built here, offline and deterministically) does the same in one call:
on a GPU (onnxruntime-gpu's CUDA provider) the b x n score matrix never leaves the device; only
those per-row facts come back. The two agree to float32 rounding of the product (tests compare them
on ONNX Runtime's CPU provider).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recog import metrics as M

LOWEST = np.float32(np.finfo(np.float32).min)  # a floor below every real score, above -inf


def rows_for(part_size: int, scores: int, most_rows: int) -> int:
    """Probe rows per block against a gallery part of `part_size` entries: at most `scores` scores and
    `most_rows` rows, at least one row."""
    return max(1, min(most_rows, scores // max(1, part_size)))


@dataclass(frozen=True)
class Scoring:
    """How a block of scores is made from probe and gallery embeddings (one array per model).

    One model: its similarity (cosine on normalised vectors, or negated Euclidean distance). Several
    models (`znorm`, one (mean, std) of impostor scores per model): the mean of the z-normalised
    scores, computed as recog.matching.fuse_matrices computes it."""

    similarities: tuple[str, ...]
    znorm: tuple[tuple[float, float], ...] | None = None

    def prepare(self, embeddings: tuple) -> tuple:
        """Embeddings as scored: float32, rows normalised for cosine; refuses NaN or infinity."""
        out = []
        for e, similarity in zip(embeddings, self.similarities):
            e = np.asarray(e, np.float32)
            if not np.isfinite(e).all():
                raise ValueError("embeddings contain NaN or infinity")
            out.append(np.ascontiguousarray(M.normalize_rows(e) if similarity == "cosine" else e))
        return tuple(out)

    def raw(self, probes: tuple, gallery: tuple, model: int) -> np.ndarray:
        p, g = probes[model], gallery[model]
        return p @ g.T if self.similarities[model] == "cosine" else M.similarity_matrix(p, g, "euclidean")

    def __call__(self, probes: tuple, gallery: tuple) -> np.ndarray:
        if self.znorm is None:
            return self.raw(probes, gallery, 0)
        total = 0
        for m, (mean, std) in enumerate(self.znorm):
            total = total + (self.raw(probes, gallery, m).astype(np.float64) - mean) / std
        return (total / len(self.znorm)).astype(np.float32)


@dataclass
class BlockFacts:
    genuine: np.ndarray
    impostor: np.ndarray
    best: np.ndarray
    top: np.ndarray
    count: np.ndarray
    candidates: np.ndarray


class NumpyBlockScorer:
    """The block's facts from one BLAS matrix product and NumPy reductions."""

    name = "numpy"

    @staticmethod
    def rows_per_block(part_size: int) -> int:
        """A block's score matrix of at most 64 MiB (2^24 float32), 256 rows: it and NumPy's passes
        over it stay in a CPU's memory bandwidth sweet spot."""
        return rows_for(part_size, 1 << 24, 256)

    def __init__(self, scoring=None):
        self.scoring = scoring
        self.gallery = None
        self.runs = None

    def set_gallery(self, gallery, runs=None) -> None:
        """`runs`: where each identity's run of columns starts (recog.metrics.identity_runs)."""
        self.gallery = gallery
        self.runs = runs

    def scores(self, probes) -> np.ndarray:
        if self.scoring is not None:
            return self.scoring(probes, self.gallery)
        return probes @ self.gallery.T

    def genuine(self, probes, mates) -> np.ndarray:
        s = self.scores(probes)
        return s[mates[:, 0], mates[:, 1]]

    def block(self, probes, mates, impostors, best_in, floor, pool_rows) -> BlockFacts:
        s = self.scores(probes)
        mr, mc = mates[:, 0], mates[:, 1]
        genuine = s[mr, mc]
        impostor = s[impostors[:, 0], impostors[:, 1]]
        best = np.array(best_in, np.float32)
        np.maximum.at(best, mr, genuine)
        s[mr, mc] = -np.inf  # from here on `s` holds non-mated scores only
        top = s.max(axis=1)
        count = M.identities_at_or_above(s, M.tie_floor(best), self.runs)
        candidates = np.empty(0, np.float32)
        if pool_rows.any():
            candidates = s[pool_rows]
            candidates = candidates[(candidates >= max(floor, LOWEST))]
        return BlockFacts(genuine, impostor, best, top, count, candidates)


def block_graph(by_identity: bool = False) -> bytes:
    """The ONNX model of `NumpyBlockScorer.block` for cosine scores (opset 17). `by_identity` counts
    identities whose runs of columns (inputs `run_starts`, `run_lasts`: each run's first and last
    column) hold a score at or above the tie floor: a running count of such scores along each row
    (int32: a part's columns are far fewer than 2^31), read at each run's ends. Without it, every entry
    is an identity and the graph is the one the GPU benchmark measured."""
    import onnx
    from onnx import TensorProto, helper

    f, i64, i32, b = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL
    inputs = [helper.make_tensor_value_info("probes", f, ["b", "d"]),
              helper.make_tensor_value_info("gallery", f, ["n", "d"]),
              helper.make_tensor_value_info("mates", i64, ["k", 2]),
              helper.make_tensor_value_info("impostors", i64, ["m", 2]),
              helper.make_tensor_value_info("best_in", f, ["b"]),
              helper.make_tensor_value_info("floor", f, []),
              helper.make_tensor_value_info("pool_rows", b, ["b"])]
    if by_identity:
        inputs += [helper.make_tensor_value_info(name, i64, ["g"]) for name in ("run_starts", "run_lasts")]
    outputs = [helper.make_tensor_value_info(name, f, [dim]) for name, dim in
               (("genuine", "k"), ("impostor", "m"), ("best", "b"), ("top", "b"))]
    outputs += [helper.make_tensor_value_info("count", i64, ["b"]),
                helper.make_tensor_value_info("candidates", f, ["c"])]
    const = [helper.make_tensor("minus_inf", f, [], [-np.inf]),
             helper.make_tensor("one", f, [], [1.0]),
             helper.make_tensor("tie", f, [], [M.TIE_TOLERANCE]),
             helper.make_tensor("axis1", i64, [1], [1]),
             helper.make_tensor("flat", i64, [1], [-1])]
    if by_identity:
        const.append(helper.make_tensor("zero", i32, [], [0]))
    n = helper.make_node
    nodes = [
        n("Gemm", ["probes", "gallery"], ["scores"], transB=1),
        n("GatherND", ["scores", "mates"], ["genuine"]),
        n("GatherND", ["scores", "impostors"], ["impostor"]),
        # best genuine score per row: the genuine scores scattered into a -inf matrix, then a row max
        n("Shape", ["scores"], ["scores_shape"]),
        n("Expand", ["minus_inf", "scores_shape"], ["all_minus_inf"]),
        n("ScatterND", ["all_minus_inf", "mates", "genuine"], ["genuine_only"]),
        n("ReduceMax", ["genuine_only"], ["best_here"], axes=[1], keepdims=0),
        n("Max", ["best_in", "best_here"], ["best"]),
        # the non-mated scores: mates set to -inf
        n("Shape", ["genuine"], ["genuine_shape"]),
        n("Expand", ["minus_inf", "genuine_shape"], ["minus_infs"]),
        n("ScatterND", ["scores", "mates", "minus_infs"], ["nonmated"]),
        n("ReduceMax", ["nonmated"], ["top"], axes=[1], keepdims=0),
        # ties count against the probe: scores down to recog.metrics.tie_floor(best)
        n("Abs", ["best"], ["best_abs"]),
        n("Max", ["best_abs", "one"], ["best_scale"]),
        n("Mul", ["best_scale", "tie"], ["tie_width"]),
        n("Sub", ["best", "tie_width"], ["tie_floor"]),
        n("Unsqueeze", ["tie_floor", "axis1"], ["tie_col"]),
        n("GreaterOrEqual", ["nonmated", "tie_col"], ["at_or_above"]),
    ]
    if by_identity:  # scores at or above in a run [start, last]: running[last] - running[start] + at[start]
        nodes += [
            n("Cast", ["at_or_above"], ["at_or_above_32"], to=i32),
            n("CumSum", ["at_or_above_32", "axis1"], ["running"]),
            n("Gather", ["running", "run_lasts"], ["through_last"], axis=1),
            n("Gather", ["running", "run_starts"], ["through_start"], axis=1),
            n("Gather", ["at_or_above_32", "run_starts"], ["at_start"], axis=1),
            n("Sub", ["through_last", "through_start"], ["after_start"]),
            n("Add", ["after_start", "at_start"], ["per_identity"]),
            n("Greater", ["per_identity", "zero"], ["identity_hit"]),
            n("Cast", ["identity_hit"], ["identity_hit_int"], to=i64),
            n("ReduceSum", ["identity_hit_int", "axis1"], ["count"], keepdims=0),
        ]
    else:
        nodes += [n("Cast", ["at_or_above"], ["at_or_above_int"], to=i64),
                  n("ReduceSum", ["at_or_above_int", "axis1"], ["count"], keepdims=0)]
    nodes += [
        n("GreaterOrEqual", ["nonmated", "floor"], ["over_floor"]),
        n("Unsqueeze", ["pool_rows", "axis1"], ["pool_col"]),
        n("And", ["over_floor", "pool_col"], ["in_pool"]),
        n("Reshape", ["nonmated", "flat"], ["nonmated_flat"]),
        n("Reshape", ["in_pool", "flat"], ["in_pool_flat"]),
        n("Compress", ["nonmated_flat", "in_pool_flat"], ["candidates"]),
    ]
    graph = helper.make_graph(nodes, "mfr_block_scores", inputs, outputs, initializer=const)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="mfr")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


class OnnxBlockScorer:
    """`block_graph` on ONNX Runtime: `device="cuda"` keeps the gallery part on the GPU across blocks
    (onnxruntime-gpu), `"cpu"` runs the same graph on the CPU provider."""

    def __init__(self, device: str = "cpu", threads: int = 1):
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        # the sessions every model gets: on CUDA, a provider that cannot start is a RuntimeError. No
        # TF32 (CUDA's default for products on recent GPUs): it keeps 10 bits of mantissa, and scores
        # are compared and ranked at float32 precision, as the NumPy path computes them
        self._sessions = {}
        self._options = {"device": device, "threads": threads, "cuda_options": {"use_tf32": 0}}
        self.session = self._session(False)
        self.device = device
        self.name = f"onnxruntime-{device}"
        self.gallery = None
        self.runs = None

    def _session(self, by_identity: bool):
        """The graph's session, made on first use (the graph counting identities only for a gallery
        with several entries per identity)."""
        from maskgen.runtime import create_session

        if by_identity not in self._sessions:
            self._sessions[by_identity] = create_session(block_graph(by_identity), **self._options)
        return self._sessions[by_identity]

    def rows_per_block(self, part_size: int) -> int:
        """On a GPU, blocks of up to 4,096 rows and 2^26 scores (the graph's intermediates take about
        2 GiB of GPU memory at that size): a call's fixed cost (binding, launches, copies back) is
        spread over more products. On the CPU provider, NumPy's block."""
        if self.device == "cuda":
            return rows_for(part_size, 1 << 26, 4096)
        return NumpyBlockScorer.rows_per_block(part_size)

    def set_gallery(self, gallery, runs=None) -> None:
        import onnxruntime as ort

        gallery = gallery[0] if isinstance(gallery, tuple) else gallery  # one model
        # on the device once per part; every block's call binds it without copying it again
        self.gallery = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(gallery, np.float32), self.device, 0)
        if runs is None:
            self.runs = None
        else:  # each run's first and last column
            starts = np.asarray(runs, np.int64)
            self.runs = (starts, np.append(starts[1:], len(gallery)) - 1)

    def _run(self, probes, mates, impostors, best_in, floor, pool_rows, by_identity=False):
        probes = probes[0] if isinstance(probes, tuple) else probes
        session = self._session(by_identity)
        binding = session.io_binding()
        if by_identity:
            binding.bind_cpu_input("run_starts", self.runs[0])
            binding.bind_cpu_input("run_lasts", self.runs[1])
        binding.bind_cpu_input("probes", np.ascontiguousarray(probes, np.float32))
        binding.bind_ortvalue_input("gallery", self.gallery)
        binding.bind_cpu_input("mates", np.ascontiguousarray(mates, np.int64).reshape(-1, 2))
        binding.bind_cpu_input("impostors", np.ascontiguousarray(impostors, np.int64).reshape(-1, 2))
        binding.bind_cpu_input("best_in", np.ascontiguousarray(best_in, np.float32))
        binding.bind_cpu_input("floor", np.array(max(floor, LOWEST), np.float32))
        binding.bind_cpu_input("pool_rows", np.ascontiguousarray(pool_rows, bool))
        for name in ("genuine", "impostor", "best", "top", "count", "candidates"):
            binding.bind_output(name, "cpu")
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def genuine(self, probes, mates) -> np.ndarray:
        b = len(probes)
        return self._run(probes, mates, np.empty((0, 2), np.int64), np.full(b, -np.inf, np.float32), np.inf,
                         np.zeros(b, bool))[0]

    def block(self, probes, mates, impostors, best_in, floor, pool_rows) -> BlockFacts:
        return BlockFacts(*self._run(probes, mates, impostors, best_in, floor, pool_rows, self.runs is not None))


def block_scorer(backend: str = "numpy", scoring=None, device: str = "cpu"):
    """`numpy` (any Scoring: one model or fused) or `onnxruntime` (one cosine model) on `device`."""
    if backend == "numpy":
        return NumpyBlockScorer(scoring)
    if backend == "onnxruntime":
        if scoring is not None and (scoring.znorm is not None or scoring.similarities != ("cosine",)):
            raise ValueError("the ONNX Runtime block scorer takes one cosine model; fusion and Euclidean "
                             "scores run on NumPy")
        return OnnxBlockScorer(device)
    raise ValueError(f"block scoring backend must be 'numpy' or 'onnxruntime', got {backend!r}")
