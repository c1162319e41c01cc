"""Face embeddings with any ONNX recognition model, preprocessed by the model's own spec.

    embedder = Embedder("sface")                                  # a built-in model
    embedder = Embedder("w600k_r50.onnx", spec="arcface-112")     # your own insightface-style model
    vectors = embedder.embed_faces(rgb, [face.points for face in faces])   # (N, D) float32
    vectors = embedder.embed_crops(aligned)                       # crops already aligned by the spec

Every batch gives the same vectors as one face at a time; `embedder.model_id` (name and file hash)
goes with every embedding written.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np

from maskgen.align import align_face
from maskgen.decode import check_rgb
from maskgen.runtime import MadeAgainWhereUnpickled, create_session, sha256_bytes
from recog.spec import METADATA_KEY, ModelSpec


def resolve_spec(model_path: Path, spec: ModelSpec | str | Path | None,
                 embedded: str | None) -> tuple[ModelSpec, str]:
    """(the spec, where it came from in words): explicit spec (object, dict, preset name, or JSON path) >
    sidecar JSON beside the file (`model.json`, else `model.onnx.json`) > the spec in the ONNX file's
    metadata (`embedded`: `recog.spec.embedded_spec_text`, parsed only when it is the one used, as
    `ModelSpec.from_onnx` parses it)."""
    if isinstance(spec, ModelSpec):
        return spec, "the spec given"
    if isinstance(spec, dict):  # a JSON spec's object, as `ModelSpec.from_dict` reads it (presets too)
        return ModelSpec.from_dict(spec), "the spec given"
    if not isinstance(spec, (str, Path, type(None))):
        raise ValueError(f"spec is a ModelSpec, a dict of its fields, a preset name or a JSON file's path, got "
                         f"{type(spec).__name__}")
    if isinstance(spec, str) and not spec.endswith(".json"):
        return ModelSpec.preset(spec, name=model_path.stem), f"the preset {spec!r}"
    if spec is not None:
        return ModelSpec.from_json(Path(spec)), str(spec)
    for sidecar in (model_path.with_suffix(".json"), model_path.with_name(model_path.name + ".json")):
        if sidecar.is_file():
            return ModelSpec.from_json(sidecar), str(sidecar)
    if embedded is None:
        raise ValueError(
            f"{model_path} carries no model spec: put a JSON spec beside it as "
            f"{model_path.with_suffix('.json').name} (for an insightface-style model: "
            '{"preset": "arcface-112"}), or in Python pass one (spec="arcface-112")'
        )
    spec = ModelSpec.from_embedded(embedded, f"{model_path}: its metadata's spec ({METADATA_KEY})")
    return spec, "the file's metadata"


# Bump when `rewrite_prelus` changes what it writes or the record's fields change: prepared graphs
# of the old version are then made again instead of reused.
GRAPH_VERSION = 4


def prepared_graph(path: Path, data: bytes, sha256: str, device: str) -> tuple[bytes, int, str | None]:
    """(the bytes the session runs, PReLUs rewritten, the spec's JSON text in the file's metadata or
    None: see `resolve_spec`).

    On CPUs a model's per-channel PReLUs run as ONNX Runtime's blocked convolutions
    (maskgen.blocked_ops: sface 2x faster, values equal to float rounding, about 1e-6); on GPUs, and
    for models without such PReLUs, the file runs as it is. The model's identity (`model_id`) is the
    file's hash either way.

    What a file holds is worked out once per machine and kept in the model cache under the file's
    SHA-256 (`graphs/`): the `onnx` package takes 0.7 s to import and the rewrite 0.2 s more, which
    every recognition actor and pool process paid at start-up. A file seen for the first time is
    checked to be an ONNX model (ValueError otherwise); the rewritten graph is checked against the
    hash recorded when it was made, and made again if it does not match."""
    from maskgen.runtime import cache_dir, cached_bytes, cached_bytes_file, providers_for, write_atomic
    from recog.spec import embedded_spec_text

    root = cache_dir() / "graphs"
    stem = f"{sha256[:32]}-g{GRAPH_VERSION}"
    record_path = root / f"{stem}.json"
    try:
        record = json.loads(record_path.read_text())
        known = record["sha256"] == sha256 and isinstance(record["replaced"], int) and (
            record["spec"] is None or isinstance(record["spec"], str)) and isinstance(record["external"], list)
    except (OSError, ValueError, KeyError, TypeError):
        known = False
    # the rewrite copies PReLU slopes out of the external data files: the graph is kept under their
    # hashes too, taken before it reads them, so a model exported again with other weights beside the
    # same .onnx (or another folder's copy) never runs a graph made from other slopes
    def graph_path(files) -> Path:
        weights = _external_hashes(path, files)
        return root / f"{stem}-{sha256_bytes(json.dumps(weights, sort_keys=True).encode())[:16]}.onnx"

    made_at = None
    if not known:
        model = _load_onnx(path, data)
        files = _external_files(model)
        made_at = graph_path(files)
        rewritten, replaced = _rewrite_prelus(model, path.parent)
        if replaced:
            cached_bytes_file(made_at, lambda: rewritten)
        record = {"sha256": sha256, "replaced": replaced, "spec": embedded_spec_text(model), "external": files}
        write_atomic(record_path, json.dumps(record, sort_keys=True).encode())
    # each time, not only when the record is made: a machine that had this version's record before
    # the clean-up existed kept its older versions' files for good
    _remove_older_versions(root)
    embedded = record["spec"]
    if not record["replaced"] or providers_for(device) != ["CPUExecutionProvider"]:
        return data, 0, embedded
    runnable = cached_bytes(made_at or graph_path(record["external"]),
                            lambda: _rewrite_prelus(_load_onnx(path, data), path.parent)[0])
    return runnable, int(record["replaced"]), embedded


def _remove_older_versions(root: Path) -> None:
    """Removes what earlier GRAPH_VERSIONs kept, of every model file (this version never reads them:
    hundreds of MB on a machine that ran earlier releases, most of it of files never loaded again); a
    newer version's files, kept by a newer install sharing the cache, stay. One listing of the folder,
    at each model's start."""
    try:
        names = [entry.name for entry in os.scandir(root)]
    except OSError:
        return
    for name in names:
        version = re.fullmatch(r"[0-9a-f]{32}-g(\d+)(?:[.-].*)?", name)
        if version and int(version.group(1)) < GRAPH_VERSION:
            (root / name).unlink(missing_ok=True)


def _external_files(onnx_model) -> list[str]:
    """The external data files (paths relative to the model's folder) the model's tensors are kept in."""
    from onnx import TensorProto

    files = set()
    for tensor in onnx_model.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            files.update(entry.value for entry in tensor.external_data if entry.key == "location")
    return sorted(files)


def _external_hashes(path: Path, files) -> dict:
    """{file: SHA-256} of the external data files of the model at `path`, beside it; a ValueError
    naming a missing one (onnx's ValidationError, a traceback, said it)."""
    hashes = {}
    for name in files:
        try:
            hashes[name] = sha256_bytes((path.parent / name).read_bytes())
        except OSError as exc:
            raise ValueError(f"{path}: its weights are kept in {name} beside it, which cannot be read "
                             f"({exc.strerror or exc})") from None
    return hashes


def _quiet_run_options():
    """Run options that leave a failure to the exception: ONNX Runtime also printed it, in red, to stderr
    (a graph that takes one crop per call fails once, on purpose, in `Embedder._run`)."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4
    return options


class ModelRunError(ValueError):
    """ONNX Runtime failed to run the model on a batch."""


def _first_line(exc: BaseException) -> str:
    """ONNX Runtime's message, shortened: its first lines, and its end, which often says what would work
    ("Current official support for domain ai.onnx is till opset 28" was cut off)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:3]) if lines else type(exc).__name__
    return text if len(text) <= 600 else f"{text[:300]} ... {text[-280:]}"


def read_onnx(path: Path):
    """The ONNX model in the file at `path` (external weight files are not read); a ValueError that
    says so when the file is not a model."""
    return _load_onnx(Path(path), Path(path).read_bytes())


def _load_onnx(path: Path, data: bytes):
    import onnx

    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not a model
        raise ValueError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node:  # an empty file parses as an empty model
        raise ValueError(f"{path}: not an ONNX model (it holds no graph{'' if data else ': the file is empty'})")
    return model


def _rewrite_prelus(onnx_model, folder: Path) -> tuple[bytes | None, int]:
    """The model with its PReLUs as blocked convolutions, serialised, and how many were rewritten
    (None and 0 when there are none it can rewrite); `folder`: the model file's, where its external
    weight files are."""
    import onnx

    from maskgen.blocked_ops import rewrite_prelus

    if not any(n.op_type == "PRelu" for n in onnx_model.graph.node):
        return None, 0
    model = onnx.ModelProto()
    model.CopyFrom(onnx_model)
    replaced = rewrite_prelus(model, str(folder))
    return (model.SerializeToString(), replaced) if replaced else (None, 0)


class Embedder(MadeAgainWhereUnpickled):
    # settable after it is made: pickled as they are (fixed_batch: a batch of one found at run time)
    _carried = ("flip", "region", "fixed_batch", "batch_size")

    def __init__(self, model: str | Path = "sface", spec: ModelSpec | str | Path | None = None,
                 device: str = "auto", threads: int | None = None, flip: bool = False,
                 accept_licence: bool = False, batch_size: int = 64, region: str = "full"):
        from recog import zoo

        # checked before the model loads (by their setters): batch_size 0 failed on the first call, and
        # flip="no" turned it on
        self.fixed_batch = None
        self.batch_size, self.flip, self.region = batch_size, flip, region
        if isinstance(model, str) and model in zoo.BUILTINS:
            path = zoo.builtin_path(model, accept_licence=accept_licence)
        else:
            path = Path(model)
            if not path.is_file():
                raise FileNotFoundError(f"{model} is neither a built-in model ({zoo.model_names()}) nor a file")
        data = path.read_bytes()
        self.sha256 = sha256_bytes(data)
        runnable, self.blocked_prelus, embedded = prepared_graph(path, data, self.sha256, device)
        self.spec, origin = resolve_spec(path, spec, embedded)
        builtin = isinstance(model, str) and model in zoo.BUILTINS
        self.spec_origin = "the built-in model" if builtin and spec is None else origin
        if self.spec.requires_licence_acceptance and not accept_licence:
            raise zoo.LicenceNotAccepted(f"{self.spec.name}: {self.spec.licence}; pass accept_licence=True "
                                         "(command line: --accept-model-licence)")
        self.path = path
        try:
            try:
                self.session = create_session(runnable, device=device, threads=threads, external_data=path.parent)
            except Exception:
                if runnable is data:
                    raise
                # a graph whose PReLUs could not be rewritten after all (not on a feature map): run it as it is
                self.session, self.blocked_prelus = create_session(data, device=device, threads=threads,
                                                                   external_data=path.parent), 0
        except Exception as exc:
            if not type(exc).__module__.startswith("onnxruntime"):
                raise  # ours (no CUDA where it was asked for), not the model's
            raise ValueError(f"{path}: ONNX Runtime cannot load the model ({_first_line(exc)})") from None
        self.providers = self.session.get_providers()
        self._run_options = _quiet_run_options()
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self.input_name = self.spec.input_name or inputs[0].name
        self.output_name = self.spec.output_name or outputs[0].name
        if self.input_name not in {i.name for i in inputs}:  # the spec's input_name: where it came from is said
            raise ValueError(f"{path}: no input named {self.input_name!r}, as its spec ({self.spec.name}, from "
                             f"{self.spec_origin}) says (inputs: {[i.name for i in inputs]})")
        model_input = next(i for i in inputs if i.name == self.input_name)
        declared = list(model_input.shape)
        self._check_input_shape(declared)
        self._input_dtype = self._input_type(model_input.type)
        # a model exported with a fixed batch (often 1) takes exactly that many crops per call: a
        # shorter last batch is padded (and its padding's vectors dropped)
        self.fixed_batch = declared[0] if declared and isinstance(declared[0], int) and declared[0] > 0 else None
        self.batch_size = self.fixed_batch or batch_size
        self._mean = np.asarray(self.spec.mean, np.float32)
        self._inv_std = 1.0 / np.asarray(self.spec.std, np.float32)

    # Settable after the embedder is made (and carried when it is pickled), so checked whenever set: set
    # on a made embedder, batch_size 0 looped for ever, flip="no" turned flipping on and a region typo
    # embedded the whole face, all without a word.
    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value) -> None:
        from maskgen.checks import is_whole

        if not is_whole(value) or value < 1:
            raise ValueError(f"batch_size must be a whole number of at least 1, got {value!r}")
        if self.fixed_batch and value != self.fixed_batch:
            raise ValueError(f"{self.path}: the model takes exactly {self.fixed_batch} crop(s) per call (as its input "
                             f"declares, or as it was found to when it failed on a batch), so batch_size stays "
                             f"{self.fixed_batch}, not {value!r}")
        self._batch_size = int(value)

    @property
    def flip(self) -> bool:
        return self._flip

    @flip.setter
    def flip(self, value) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"flip is True or False, got {value!r}")
        self._flip = bool(value)

    @property
    def region(self) -> str:
        return self._region

    @region.setter
    def region(self, value) -> None:
        if value not in ("full", "upper"):
            raise ValueError(f"region must be 'full' or 'upper' (see recog.matching), got {value!r}")
        self._region = value

    def _check_input_shape(self, declared: list) -> None:
        """Refuse a model whose input declares fixed sizes other than its spec's: ONNX Runtime would
        refuse each batch with a message about an index."""
        w, h = self.spec.input_size
        want = [3, h, w] if self.spec.layout == "NCHW" else [h, w, 3]
        if len(declared) == 4 and any(isinstance(d, int) and d > 0 and d != e for d, e in zip(declared[1:], want)):
            raise ValueError(f"{self.path}: the model's input {self.input_name!r} has the shape {declared}, its spec "
                             f"({self.spec.name}, from {self.spec_origin}) gives {w}x{h} crops in {self.spec.layout} "
                             f"(shape [N, {', '.join(map(str, want))}]): give a spec whose input_size and layout "
                             "match the model")

    def _input_type(self, declared: str):
        """The NumPy type the model's input takes: float crops as float32, float16 (a model exported for
        GPUs: fed float32, ONNX Runtime refused it and the message blamed the spec) or float64; uint8
        where the spec leaves the pixels as they are (mean 0, std 1)."""
        types = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
        if declared in types:
            return types[declared]
        if declared == "tensor(uint8)" and self.spec.mean == (0.0, 0.0, 0.0) and self.spec.std == (1.0, 1.0, 1.0):
            return np.uint8
        raise ValueError(f"{self.path}: the model's input {self.input_name!r} takes {declared}; crops are fed as "
                         "float, float16 or double tensors (uint8 with mean 0 and std 1 in the spec)")

    def check(self) -> "Embedder":
        """Run the model once on a blank crop of its spec's size: a model that does not take such crops,
        gives vectors of another size than its spec says, or gives NaN or infinite values, is refused
        here, before any input."""
        w, h = self.spec.input_size
        try:
            # two crops, so that a graph taking one per call only says so here (see `_run`)
            free_batch = self.batch_size > 1
            vectors = self.embed_crops(np.zeros((2 if free_batch else 1, h, w, 3), np.uint8))
        except Exception as exc:
            raise ValueError(f"{self.path}: the model does not work as its spec ({self.spec.name}, from "
                             f"{self.spec_origin}) says: {type(exc).__name__}: {_first_line(exc)}") from None
        if free_batch and self.batch_size == 1:
            warnings.warn(f"{self.path}: the model declares a free batch size but takes one crop per call; it "
                          "embeds one crop at a time")
        if not np.isfinite(vectors).all():
            raise ValueError(f"{self.path}: the model gives NaN or infinite values on a blank {w}x{h} crop: its "
                             "embeddings could not be compared")
        return self

    @property
    def model_id(self) -> str:
        """The spec's name and the model file's hash; and the spec's own hash when the spec does not come
        from the file (a sidecar JSON, a preset, a spec given): editing it changes the embeddings, so
        a rerun must not take the rows made with the old one as done."""
        base = f"{self.spec.name}@sha256:{self.sha256[:16]}"
        if self.spec_origin in ("the built-in model", "the file's metadata"):
            return base
        return f"{base}+spec:{sha256_bytes(json.dumps(self.spec.to_dict(), sort_keys=True).encode())[:8]}"

    @property
    def dim(self) -> int:
        return self.spec.embedding_size

    def align(self, image: np.ndarray, points5: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """Aligned crops (N, h, w, 3) uint8 RGB for faces given by their 5 points."""
        return align_crops(image, points5, self.spec)

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        x = check_rgb(crops, "crops", batch=True).astype(np.float32)
        w, h = self.spec.input_size
        if x.shape[1:3] != (h, w):
            raise ValueError(f"{self.spec.name} takes {w}x{h} crops, got {x.shape[2]}x{x.shape[1]}")
        if self.spec.channel_order == "BGR":
            x = x[..., ::-1]
        x = (x - self._mean) * self._inv_std
        if self.spec.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=self._input_dtype)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        try:
            vectors = self.session.run([self.output_name], {self.input_name: self.preprocess(batch)},
                                       self._run_options)[0]
            # a vector per call without a batch axis (a batch-of-one export's `.squeeze()`; or one value a
            # crop): sliced per crop, one crop's vector read as one value ("model gives 1-d vectors")
            return vectors.reshape(len(batch), -1) if np.ndim(vectors) == 1 else vectors
        except Exception as exc:
            if not type(exc).__module__.startswith("onnxruntime"):
                raise
            raise ModelRunError(f"{self.path}: ONNX Runtime failed on a batch of {len(batch)} crop(s): "
                                f"{_first_line(exc)}") from None

    def _run(self, crops: np.ndarray) -> np.ndarray:
        out, i = [], 0
        while i < len(crops):
            batch = crops[i:i + self.batch_size]
            n = len(batch)
            if self.fixed_batch and n < self.fixed_batch:
                batch = np.concatenate([batch, np.repeat(batch[-1:], self.fixed_batch - n, axis=0)])
            try:
                out.append(self._infer(batch)[:n])
            except ModelRunError:
                if self.fixed_batch or n == 1:
                    raise
                # a graph that declares a free batch yet takes one crop per call (an export's x.view(1, -1)):
                # it stopped `mfr run` after the masking; run as a model of fixed batch 1 if one crop works
                out.append(self._infer(batch[:1])[:1])  # (that crop's vector kept, not computed again)
                self.fixed_batch = self.batch_size = 1  # check() says so, once, where the job starts
                i += 1
                continue
            i += n
        return np.concatenate(out).reshape(len(crops), -1).astype(np.float32)

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """Embeddings (N, D) of aligned RGB uint8 crops; with `region="upper"` only the part above the
        mask line is seen, with `flip` each crop and its mirror are averaged."""
        crops = np.asarray(crops) if isinstance(crops, (list, tuple)) else crops
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        check_rgb(crops, "crops", batch=True)  # here, not per batch: the message gives the shape passed
        if self.region == "upper":
            from recog.matching import keep_upper_face

            crops = keep_upper_face(crops, self.spec.face_template.points)
        vectors = self._run(crops)
        if self.flip:
            vectors = (vectors + self._run(crops[:, :, ::-1])) / 2
        if vectors.shape[1] != self.dim:
            outputs = [o.name for o in self.session.get_outputs()]
            raise ValueError(f"{self.spec.name}: model gives {vectors.shape[1]}-d vectors, spec says {self.dim}"
                             + (f" (from its output {self.output_name!r} of {outputs}: the spec's output_name "
                                "chooses another)" if len(outputs) > 1 else ""))
        if self.spec.normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def embed_each(self, crops: np.ndarray) -> list:
        """Per crop, its embedding (as `embed_crops`) or the exception that says why it has none: what a
        job records face by face. A batch the model fails on is embedded again crop by crop, so one
        crop it cannot take costs only its own face; a vector with NaN or infinite values (a model that
        overflows on some faces) is refused too: it scores NaN against everything; so is a vector of
        zeros (a ReLU head on a crop it reads as nothing), which scored 0 against every face, as if it
        were a face like no other. One (H, W, 3) crop where a batch is wanted is refused as a whole,
        as `embed_crops` refuses it (it gave an error per row of the crop); a list of crops of
        several sizes gets an answer per crop."""
        def one(crop):
            try:
                return self.embed_crops(np.asarray(crop)[None])[0]
            except Exception as exc:  # noqa: BLE001 - the face's own error
                return exc

        if isinstance(crops, (list, tuple)) and len({np.shape(c) for c in crops}) > 1:
            vectors = [one(crop) for crop in crops]  # a list of crops of several sizes: each its own answer
        else:
            crops = np.asarray(crops) if isinstance(crops, (list, tuple)) else crops
            if len(crops) == 0:
                return []
            check_rgb(crops, "crops", batch=True)
            try:
                vectors = list(self.embed_crops(crops))
            except Exception:  # noqa: BLE001 - found crop by crop
                vectors = [one(crop) for crop in crops]
        from maskgen.record import NON_FINITE_EMBEDDING, ZERO_EMBEDDING

        def checked(v):
            if not isinstance(v, np.ndarray):
                return v
            if not np.isfinite(v).all():
                return ValueError(NON_FINITE_EMBEDDING)
            return v if v.any() else ValueError(ZERO_EMBEDDING)

        return [checked(v) for v in vectors]

    def embed_faces(self, image: np.ndarray, points5, landmarks68=None, alignment: str = "five-point",
                    locate_eyes=None) -> np.ndarray:
        """Embeddings of faces given by their 5 points: (5, 2) arrays, or the detector's `Face`s, or
        `FaceRecord`s (their `landmarks5`; `alignment` then chooses as for any points).
        `alignment`: `five-point` (default), `eyes`, or
        `auto` (eyes when the 5-point geometry is implausible, as under masks); `locate_eyes(k)` gives
        face k's eyes for those (e.g. maskgen.eyes.EyeLocator), else the 68-point eye contours or the
        detector's eyes are used; see maskgen.finder.alignment_points."""
        check_rgb(image)
        points5 = [_points_of(face) for face in _one_or_many(points5)]
        aligned = self.alignment_of(points5, landmarks68, alignment, locate_eyes)
        return self.embed_crops(self.align(image, [points for points, _ in aligned]))

    @staticmethod
    def alignment_of(points5, landmarks68=None, alignment: str = "five-point", locate_eyes=None) -> list:
        """[(the 5 points a face's crop is aligned with, how they were chosen: `five-point` or `eyes`)]
        per face, as `embed_faces` aligns them (its arguments): what a shard records as `aligned5` and
        `alignment`."""
        from maskgen.finder import alignment_points

        lms = landmarks68 if landmarks68 is not None else [None] * len(points5)
        return [alignment_points(p, lm, alignment, (lambda k=k: locate_eyes(k)) if locate_eyes else None)
                for k, (p, lm) in enumerate(zip(points5, lms))]


def align_crops(image: np.ndarray, points5: list[np.ndarray] | np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Aligned crops (N, h, w, 3) uint8 RGB, as the model of `spec` takes them, for faces given by their
    5 points: what `Embedder.align` gives, without loading the model (the CPU stage of a job whose
    recognition runs elsewhere)."""
    crops = [align_face(image, np.asarray(p), spec.face_template) for p in points5]
    w, h = spec.input_size
    return np.stack(crops) if crops else np.zeros((0, h, w, 3), np.uint8)


def _one_or_many(faces) -> list:
    """Faces as a list: one `Face` or `FaceRecord` is a list of one (was "'Face' object is not
    iterable"), and so are one face's (5, 2) points, which can be nothing else (they read as five
    faces of 2 values: "got shape (2,)")."""
    from maskgen.detect import Face
    from maskgen.record import FaceRecord

    if isinstance(faces, (Face, FaceRecord)):
        return [faces]
    try:
        if np.asarray(faces, dtype=np.float64).shape == (5, 2):
            return [faces]
    except (TypeError, ValueError):  # Faces, records, or ragged lists: each taken on its own below
        pass
    return list(faces)


def _points_of(face) -> np.ndarray:
    """A face's 5 points, (5, 2): given as such, a detector `Face`'s, or a `FaceRecord`'s `landmarks5`."""
    from maskgen.detect import Face
    from maskgen.record import FaceRecord

    if isinstance(face, Face):
        points = face.points
    elif isinstance(face, FaceRecord):
        points = face.landmarks5
    else:
        points = face
    points = np.asarray(points, dtype=np.float64) if points is not None else np.empty(0)
    if points.shape != (5, 2):
        raise ValueError(f"a face's points are 5 (x, y) pairs, got shape {points.shape}: pass one (5, 2) array per "
                         "face (a list of them), or the detector's Faces or FaceRecords")
    return points
