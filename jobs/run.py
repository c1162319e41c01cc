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
                 accept_licence: bool = False, progress=None) -> dict:
    out = open_store(output_uri)
    masked_uri, report_uri = out.uri_of("masked"), out.uri_of("report")
    gallery_uri, probe_uri = out.uri_of("embeddings/unmasked"), out.uri_of("embeddings/masked")
    augment = run_augment(dataset_uri, masked_uri, AugmentOptions(style=style, seed=seed, largest_only=True),
                          progress=progress)
    gallery = run_embed(dataset_uri, gallery_uri, model, masked=False, accept_licence=accept_licence,
                        progress=progress)
    probes = run_embed(masked_uri, probe_uri, model, masked=True, from_augment=True,
                       accept_licence=accept_licence, progress=progress)
    report = run_score(probe_uri, gallery_uri, report_uri)
    return {"augment": augment, "gallery": gallery, "probes": probes, "report": report}
