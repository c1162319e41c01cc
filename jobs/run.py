"""`mfr run` as a function: from a folder-per-identity dataset to a report, masked probes against the
unmasked gallery, with the masking done by augment.

    run_pipeline("../shared/data/faces", "out/run", style="seed", model="sface")
    run_pipeline("../shared/data/faces", "out/run", models=["sface", "dlib-resnet"],
                 modes=["plain", "masked-gallery", "flip", "upper-face"], fuse=True)

Writes under the output URI: `masked/` (augment: images, crops, manifest), `embeddings/unmasked/`
and `embeddings/masked/` (shards of the first model, plain matching), `embeddings/<model>/<mode>/
{unmasked,masked}/` for every other model and matching mode (recog.matching), and `report/`
(report.json, report.md, roc.png, cmc.png) with one row per model and mode, side by side, plus one
fused row per mode when `fuse` and several models are given.
"""

from __future__ import annotations

from jobs.augment import run_augment
from jobs.embed import run_embed
from jobs.score import run_score
from jobs.storage import open_store
from maskgen.augment import AugmentOptions
from recog.matching import mode_from_name

# plain and mask-aware side by side: on the faces measured here (README, "Mask-aware matching") the
# masked gallery helped both built-in models under the seed's and the surgical mask
DEFAULT_MODES = ("plain", "masked-gallery")


def run_pipeline(dataset_uri: str, output_uri: str, style: str = "seed", seed: int = 0, model: str = "sface",
                 accept_licence: bool = False, progress_for=None, models: list[str] | None = None,
                 modes: list[str] = DEFAULT_MODES, fuse: bool = False) -> dict:
    """`progress_for(stage label)` gives each stage's progress callback (e.g. `jobs.progress.ProgressBar`).
    `models` (default: just `model`) and `modes` say which embeddings are made and scored."""
    models = list(models or [model])
    modes = [mode_from_name(m).name for m in modes]  # refuse an unknown mode before any work
    if len(set(models)) != len(models) or len(set(modes)) != len(modes) or not models or not modes:
        raise ValueError(f"models and modes must be non-empty and without repeats: {models}, {modes}")
    out = open_store(output_uri)
    masked_uri, report_uri = out.uri_of("masked"), out.uri_of("report")

    def bar(label):
        return progress_for(label) if progress_for else None

    progress = bar("augment")
    augment = run_augment(dataset_uri, masked_uri, AugmentOptions(style=style, seed=seed, largest_only=True),
                          progress=progress)
    _close(progress)

    def embed(label, input_uri, output, **options):
        progress = bar(label)
        summary = run_embed(input_uri, output, options.pop("model"), accept_licence=accept_licence,
                            progress=progress, mask_style=style, seed=seed, **options)
        _close(progress)
        return summary

    def label(kind, m, mode):
        return " ".join([kind] + ([m] if len(models) > 1 else []) + ([mode] if len(modes) > 1 else []))

    stages, methods, probe_uris = {}, [], set()
    for m in models:
        for mode in modes:
            base = "embeddings" if (m, mode) == (models[0], "plain") else f"embeddings/{m}/{mode}"
            gallery_uri = out.uri_of(f"{base}/unmasked")
            # probes change only when the mode changes how every face is embedded (flip, upper face)
            probe_mode = "plain" if mode in ("plain", "masked-gallery") else mode
            probe_base = base if probe_mode != "plain" else \
                ("embeddings" if m == models[0] else f"embeddings/{m}/plain")
            probe_uri = out.uri_of(f"{probe_base}/masked")
            stages[label("gallery", m, mode)] = embed(label("gallery", m, mode), dataset_uri, gallery_uri,
                                                      model=m, masked=False, mode=mode)
            if probe_uri not in probe_uris:
                probe_uris.add(probe_uri)
                stages[label("probes", m, probe_mode)] = embed(label("probes", m, probe_mode), masked_uri, probe_uri,
                                                               model=m, masked=True, from_augment=True,
                                                               mode=probe_mode)
            methods.append((m if len(modes) == 1 else f"{m} {mode}", probe_uri, gallery_uri))
    groups = [[m if len(modes) == 1 else f"{m} {mode}" for m in models] for mode in modes] \
        if fuse and len(models) > 1 else []
    (name, probe_uri, gallery_uri), also = methods[0], methods[1:]
    report = run_score(probe_uri, gallery_uri, report_uri, name=name, also=also, fuse=groups)
    first = list(stages.values())
    return {"augment": augment, "gallery": first[0], "probes": first[1], "stages": stages, "report": report}


def _close(bar) -> None:
    if bar is not None and hasattr(bar, "close"):
        bar.close()
