"""What a person sees while a job runs: a progress bar (tqdm) with images/s and done / failed /
no-face counts, then a summary table."""

from __future__ import annotations

import sys

# what --strict and --retry-failed do not count as an input that failed: no face found, a manifest row
# repeating an image done once, a file not named as an image, an image `mfr run` has no identity for,
# and one an input manifest marks as masked (done as asked)
FINE = ("ok", "no_face", "duplicate", "not_an_image", "no_identity", "already_masked")


def failed_count(statuses: dict) -> int:
    """Images whose status is neither ok nor no_face (undecodable, missing, too_large, ...)."""
    return sum(v for k, v in statuses.items() if k not in FINE)


def failed_inputs(summary) -> int:
    """A job's inputs that failed: in this run, and those an earlier run recorded as failed that this
    one skipped as done (a rerun with `--strict` must not pass over an output holding failures)."""
    return failed_count(summary.statuses) + summary.skipped_failed


class ProgressBar:
    """`progress=` callback of the jobs: called with a `JobSummary` of the counts so far (from a
    polling thread while the job runs, then once with the final counts)."""

    OPEN: set = set()  # the bars drawn and not closed, for a command stopped by Ctrl-C or an error

    def __init__(self, label: str, stream=None):
        self.label, self.stream, self.bar = label, stream or sys.stderr, None

    @classmethod
    def close_open(cls) -> None:
        """Closes every bar still drawn, so that what the command prints next is the last line."""
        for bar in list(cls.OPEN):
            bar.close()

    def __call__(self, summary) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=summary.inputs - summary.skipped, desc=self.label, unit="img",
                            file=self.stream, dynamic_ncols=True, mininterval=0.5)
            ProgressBar.OPEN.add(self)
        # the read tasks are still listing while the first batches finish: the total grows
        self.bar.total = max(summary.inputs - summary.skipped, summary.processed)
        # counts first: update() draws the bar, and would show the previous call's counts
        self.bar.set_postfix(ok=summary.statuses.get("ok", 0), failed=failed_count(summary.statuses),
                             no_face=summary.statuses.get("no_face", 0), refresh=False)
        self.bar.update(summary.processed - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        ProgressBar.OPEN.discard(self)


def summary_table(label: str, summary) -> str:
    """The end-of-job table: inputs, skipped, processed, every status, faces, time, rate."""
    rate = summary.processed / summary.seconds if summary.seconds else 0.0
    rows = [("inputs", summary.inputs), ("skipped (already done)", summary.skipped)]
    if summary.skipped_failed:
        rows.append(("  of them failed", summary.skipped_failed))
    rows.append(("processed", summary.processed))
    rows += [(f"  {status}", count) for status, count in sorted(summary.statuses.items())]
    # two significant figures below 10/s (a small rerun's one image in 27.5 s read 0.0), always with a
    # decimal point: a rate of 1 or 2 read "1" or "2", a count to a reader of the table
    rows += [("faces written", summary.faces), ("seconds", f"{summary.seconds:.1f}"),
             ("images/s", f"{rate:.1f}" if rate >= 9.95 or rate == 0 else f"{rate:#.2g}")]
    width = max(len(name) for name, _ in rows)
    lines = [f"{label}:"] + [f"  {name:<{width}}  {value:>8}" for name, value in rows]
    return "\n".join(lines)
