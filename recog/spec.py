"""A recognition model carries its own preprocessing, like timm's pretrained configs.

    spec = ModelSpec.preset("arcface-112", name="w600k_r50")   # insightface convention
    spec = ModelSpec.from_json(Path("model.onnx.json"))        # a sidecar file next to the model
    spec = ModelSpec.from_onnx(onnx.load("model.onnx"))        # or the ONNX metadata key "mfr.spec"

Preprocessing of one face: align the image onto `template` at `input_size` (5 points, similarity
transform; without a template, ArcFace's resized to the input size), convert to `channel_order`,
subtract `mean`, divide by `std` (both per channel, in 0..255 units, in the model's channel order),
lay out as `layout`. Postprocessing: optional flip averaging
(embed the mirror image too and average), then L2 normalisation if `normalize`. `similarity` says how
two embeddings are compared: `cosine`, or `euclidean` (score = minus the distance).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from maskgen.align import ARCFACE_112, FaceTemplate
from maskgen.checks import is_number, is_whole

METADATA_KEY = "mfr.spec"
CHANNEL_ORDERS = ("RGB", "BGR")
LAYOUTS = ("NCHW", "NHWC")
SIMILARITIES = ("cosine", "euclidean")


def _number(value):
    """A JSON or TOML number as a float; anything else as given, to be refused naming the field (the
    text "128" was read as 128)."""
    return float(value) if is_number(value) else value  # (NumPy's too: a spec built from arrays)


def _pixels(value):
    """A size read from JSON (112 or 112.0) as an int; 112.5, "a" or true as given, to be refused (it
    was cut to 112)."""
    number = _number(value)
    return int(number) if isinstance(number, float) and number.is_integer() else value


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input_size: tuple[int, int] = (112, 112)          # width, height
    channel_order: str = "RGB"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    # 5 points in input_size pixels; None: ArcFace's, resized to input_size (`default_template`)
    template: tuple[tuple[float, float], ...] | None = None
    layout: str = "NCHW"
    embedding_size: int = 512
    normalize: bool = True
    similarity: str = "cosine"
    input_name: str | None = None                      # None: the model's first input
    output_name: str | None = None                     # None: the model's first output
    licence: str = "unknown"
    requires_licence_acceptance: bool = False
    source: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        # a spec is often read from a sidecar JSON written by hand: "no" was a true `normalize`, 112.5
        # a size, NaN a std, 5 or "" a name
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a model spec's name is a non-empty text (it names the model in shards and "
                             f"reports), got {self.name!r}")
        # sizes and channel values as sequences (a bare 112 or 127.5 failed in `tuple()` with a TypeError)
        sequences = (list, tuple, np.ndarray)
        if not isinstance(self.input_size, sequences) or len(tuple(self.input_size)) != 2 \
                or not all(is_whole(v) for v in self.input_size):
            raise ValueError(f"{self.name}: input_size is (width, height) in whole pixels, got {self.input_size}")
        w, h = self.input_size
        if w < 8 or h < 8:
            raise ValueError(f"{self.name}: input_size must be at least 8x8, got {self.input_size}")
        if self.template is None:
            object.__setattr__(self, "template", default_template(w, h))
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"{self.name}: channel_order must be one of {CHANNEL_ORDERS}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"{self.name}: layout must be one of {LAYOUTS}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"{self.name}: similarity must be one of {SIMILARITIES}")
        if not isinstance(self.mean, sequences) or not isinstance(self.std, sequences):
            raise ValueError(f"{self.name}: mean and std are 3 numbers each, one per channel, got mean {self.mean!r} "
                             f"and std {self.std!r}")
        values = [*self.mean, *self.std]
        if len(self.mean) != 3 or len(self.std) != 3 or any(s == 0 for s in self.std) \
                or not all(isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))
                           for v in values) or not np.isfinite(np.asarray(values, dtype=np.float64)).all():
            raise ValueError(f"{self.name}: mean and std need 3 finite numbers each, std non-zero, got mean "
                             f"{self.mean!r} and std {self.std!r}")
        if np.asarray(self.template).shape != (5, 2):
            raise ValueError(f"{self.name}: template needs 5 (x, y) points")
        points = np.asarray(self.template, dtype=np.float64)
        if not (np.isfinite(points).all() and (points >= 0).all() and (points <= (w, h)).all()):
            # the landmarks are placed there: a point outside the crop leaves that part of the face out of it
            raise ValueError(f"{self.name}: template points must lie inside the {w}x{h} crop (input_size), got "
                             f"{[list(p) for p in self.template]}")
        if not is_whole(self.embedding_size) or self.embedding_size <= 0:
            raise ValueError(f"{self.name}: embedding_size must be a positive whole number, "
                             f"got {self.embedding_size!r}")
        for flag in ("normalize", "requires_licence_acceptance"):
            if not isinstance(getattr(self, flag), (bool, np.bool_)):
                raise ValueError(f"{self.name}: {flag} is true or false, got {getattr(self, flag)!r}")

    @property
    def face_template(self) -> FaceTemplate:
        return FaceTemplate.from_points(self.template, *self.input_size)

    # -- presets ---------------------------------------------------------------------------------

    @classmethod
    def preset(cls, preset: str, **overrides) -> "ModelSpec":
        """`arcface-112`: insightface convention (112x112 RGB, (x - 127.5) / 127.5, ArcFace template,
        512-d, cosine). Any field can be overridden; another `input_size` without a `template` gets
        ArcFace's resized to it (`default_template`)."""
        if preset != "arcface-112":
            raise ValueError(f"unknown spec preset {preset!r}; available: ['arcface-112']")
        base = {"name": "arcface-112", "input_size": (112, 112), "channel_order": "RGB",
                "mean": (127.5, 127.5, 127.5), "std": (127.5, 127.5, 127.5),
                "embedding_size": 512, "normalize": True, "similarity": "cosine"}
        base.update(overrides)
        return cls.from_dict(base)

    # -- (de)serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["template"] = [list(p) for p in self.template]
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        """The spec of a dict of its fields (a JSON object), or of `{"preset": ..., overrides}` (named
        as the preset when it gives no name: the name is part of the `model_id` that outputs made
        with it are counted done by)."""
        data = dict(data)
        if "preset" in data:
            return cls.preset(data.pop("preset"), **data)
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model spec fields {sorted(unknown)}; known: {sorted(known)}")
        if "name" not in data:
            raise ValueError("a model spec needs a name")
        for key, what in (("input_size", "[width, height] in pixels"), ("mean", "a list of 3 numbers, one per channel"),
                          ("std", "a list of 3 numbers, one per channel")):
            if key in data:  # a bare number or null said "'float' object is not iterable"
                if not isinstance(data[key], (list, tuple, np.ndarray)):
                    raise ValueError(f"{key} is {what}, got {data[key]!r}")
                data[key] = tuple(_pixels(v) if key == "input_size" else _number(v) for v in data[key])
        if "embedding_size" in data:  # 512.0 from JSON is 512; 512.5 stays, to be refused
            data["embedding_size"] = _pixels(data["embedding_size"])
        if data.get("template") is not None:
            try:
                points = tuple(tuple(_number(v) for v in p) for p in data["template"])
                if not all(isinstance(v, float) for p in points for v in p):
                    raise ValueError
                data["template"] = points
            except (TypeError, ValueError):
                raise ValueError(f"template is 5 [x, y] points in input_size pixels, got {data['template']!r}") \
                    from None
        else:
            data.pop("template", None)  # ArcFace's, at the input size
        return cls(**data)

    @classmethod
    def from_json(cls, path: Path) -> "ModelSpec":
        """The spec in a JSON file; any refusal names the file (a sidecar beside a model is read unasked)."""
        return cls.from_text(Path(path).read_text(), str(path))

    @classmethod
    def from_onnx(cls, model) -> "ModelSpec | None":
        text = embedded_spec_text(model)
        return None if text is None else cls.from_embedded(text)

    @classmethod
    def from_embedded(cls, text: str, source: str = f"the model's metadata ({METADATA_KEY})") -> "ModelSpec":
        """The spec from the JSON text an ONNX file carries under `METADATA_KEY`."""
        return cls.from_text(text, source)

    @classmethod
    def from_text(cls, text: str, source: str) -> "ModelSpec":
        """The spec in JSON `text`; any refusal names its `source` (a file, a model's metadata)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a model spec is a JSON object of fields, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: {exc}") from None

    def with_(self, **changes) -> "ModelSpec":
        return replace(self, **changes)


def default_template(width: int, height: int) -> tuple[tuple[float, float], ...]:
    """The template of a spec that gives none: ArcFace's 112x112 points, resized to the input size as
    insightface does (`FaceTemplate.resized`: 224x224 doubles them, 96x112 moves them 8 px left). Left
    at 112x112 pixels, a larger input got the face in its top-left corner."""
    if (width, height) == (ARCFACE_112.width, ARCFACE_112.height):
        return ARCFACE_112.points
    return ARCFACE_112.resized(width, height).points


def embedded_spec_text(model) -> str | None:
    """The JSON text of the spec an ONNX model carries in its metadata (`METADATA_KEY`), or None."""
    return next((prop.value for prop in model.metadata_props if prop.key == METADATA_KEY), None)


def attach_spec(model, spec: ModelSpec) -> None:
    """Store `spec` in the ONNX model's metadata, so the file carries its own preprocessing."""
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(spec.to_dict(), sort_keys=True)
