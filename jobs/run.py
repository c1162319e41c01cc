"""`mfr run` as a function: from a folder-per-identity dataset to a report, masked probes against the
unmasked gallery, with the masking done by augment.

    run_pipeline("../shared/data/faces", "out/run", style="seed", model="sface")

Writes under the output URI: `masked/` (augment: images, crops, manifest), `embeddings/unmasked/`
and `embeddings/masked/` (shards), `report/` (report.json, report.md, roc.png, cmc.png).
"""

from __future__ import annotations

from jobs.augment import run_augment
from jobs.embed import run_embed
from jobs.score import run_score
from jobs.storage import open_store
from maskgen.augment import AugmentOptions


def run_pipeline(dataset_uri: str, output_uri: str, style: str = "seed", seed: int = 0, model: str = "sface",
                 accept_licence: bool = False, progress_for=None) -> dict:
    """`progress_for(stage label)` gives each stage's progress callback (e.g. `jobs.progress.ProgressBar`)."""
    out = open_store(output_uri)
    bars = {label: progress_for(label) if progress_for else None for label in ("augment", "gallery", "probes")}
    masked_uri, report_uri = out.uri_of("masked"), out.uri_of("report")
    gallery_uri, probe_uri = out.uri_of("embeddings/unmasked"), out.uri_of("embeddings/masked")
    augment = run_augment(dataset_uri, masked_uri, AugmentOptions(style=style, seed=seed, largest_only=True),
                          progress=bars["augment"])
    _close(bars["augment"])
    gallery = run_embed(dataset_uri, gallery_uri, model, masked=False, accept_licence=accept_licence,
                        progress=bars["gallery"])
    _close(bars["gallery"])
    probes = run_embed(masked_uri, probe_uri, model, masked=True, from_augment=True,
                       accept_licence=accept_licence, progress=bars["probes"])
    _close(bars["probes"])
    report = run_score(probe_uri, gallery_uri, report_uri)
    return {"augment": augment, "gallery": gallery, "probes": probes, "report": report}


def _close(bar) -> None:
    if bar is not None and hasattr(bar, "close"):
        bar.close()
