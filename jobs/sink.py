"""The write end of every job: Parquet shards written by Ray tasks on the workers, and the counts that
are all the driver ever receives.

Shards: `<directory>/<group id>/part-<hash>.parquet`, the hash of the sorted `input_row` values of the
rows it holds. A retried write holds the same rows and overwrites its own shard; two writes can
never hold the same input row (each row of the input is listed once), so two shards never share a
name. Every write is atomic (a local rename, an S3 PUT): a reader sees a whole shard or none.

Ray cuts a write batch anywhere, so one image's face rows can reach two write tasks, and a job
stopped between them (Ctrl-C, a lost node) would leave the image with some of its rows. Each shard
holding only some of an image's rows says so in its Parquet metadata (`CUT_KEY`: the image's input
row -> [the job's lease token, the image's rows in all, the rows this write held]); a rerun's
listing (`jobs.source.DoneRows`) counts such an image as done only when the parts add up, and
otherwise takes the parts out of their shards and does the image again. The local pool never cuts.

Progress: every actor reports each finished batch to one small actor (fire and forget), which keeps
each job's `Progress` counts (`ProgressBoard`, one per driver process); the driver polls it for the
progress bar. The final summary is counted from what the shard writes
return, so it says exactly what is in the output.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from dataclasses import dataclass, field

ROWS_PER_SHARD = 2000
CUT_KEY = b"mfr.cut"  # Parquet metadata of a shard holding only some of an image's rows: see `cut_inputs`


@dataclass
class JobSummary:
    inputs: int = 0
    skipped: int = 0
    skipped_failed: int = 0    # of the skipped inputs, those whose recorded row failed (--strict counts them)
    processed: int = 0
    faces: int = 0
    statuses: dict = field(default_factory=dict)
    seconds: float = 0.0
    shards: int = 0
    notes: list = field(default_factory=list)
    # images whose rows reached two or more write batches, until every part is counted (`input_counts`)
    cut_parts: dict = field(default_factory=dict, repr=False)

    def add(self, counts: dict) -> None:
        """Count one write batch (`write_shards`' output row). An image Ray cut into two batches is
        counted once all its parts are in, by the worst status of its rows in any part: counted by
        the part with its first row, a face failed in a later part read `ok` and --strict passed."""
        self.processed += int(counts["inputs"])
        self.faces += int(counts["faces"])
        self.shards += int(counts["shards"])
        for status, n in json.loads(counts["statuses"]).items():
            self._count(status, n)
        for name, (rows, here, status) in json.loads(counts.get("cuts") or "{}").items():
            part = self.cut_parts.setdefault(name, [rows, 0, status])
            part[1] += here
            part[2] = worse_status(part[2], status)
            if part[1] >= part[0]:
                self._count(self.cut_parts.pop(name)[2])
                self.processed += 1

    def finish(self) -> None:
        """Count the cut images some of whose parts never came (none in a job that ran to its end)."""
        for _, _, status in self.cut_parts.values():
            self._count(status)
        self.processed += len(self.cut_parts)
        self.cut_parts.clear()

    def _count(self, status: str, n: int = 1) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + n

    @classmethod
    def live(cls, view: dict, seconds: float) -> "JobSummary":
        """The summary so far, from a `Progress.get()` view (listing and finished batches)."""
        return cls(inputs=view["inputs"], skipped=view["skipped"], skipped_failed=view["skipped_failed"],
                   processed=view["processed"],
                   faces=view["faces"], statuses=view["statuses"], seconds=seconds)


def worse_status(first: str, then: str) -> str:
    """An input's status from two of its rows' in order: the first, unless only the second failed."""
    from jobs.progress import FINE

    return then if then not in FINE and first in FINE else first


def input_statuses(input_rows, statuses) -> dict:
    """Each input's status, from its rows: its first row's, or the first failed one's where a row of
    it failed (a face the model could not embed beside a fine one: read by its first row, such an
    image was `ok` in the summary and passed --strict)."""
    out: dict = {}
    for name, status in zip(input_rows, statuses):
        out[name] = worse_status(out[name], status) if name in out else status
    return out


def status_counts(input_rows, statuses) -> dict:
    """Inputs per status (`input_statuses`): an image's several face rows count once."""
    counts: dict = {}
    for status in input_statuses(input_rows, statuses).values():
        counts[status] = counts.get(status, 0) + 1
    return counts


def shard_name(input_rows, kind: str = "") -> str:
    """`part-<hash>.parquet`, the hash of the input rows (and `kind`, when given)."""
    text = "\n".join(sorted(set(input_rows)))
    if kind:
        text = f"{kind}\n\n{text}"
    return "part-" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:24] + ".parquet"


def continuation(table) -> str:
    """'' for rows that begin with an input's first row; else (the shard writer's batch was cut inside
    an image's face rows) the face index the rows continue at, which the shard's name then includes:
    the later parts of one image's rows would otherwise share a name and overwrite each other."""
    if "_first" not in table.column_names or not table.num_rows or table.column("_first")[0].as_py():
        return ""
    return f"continued at face {table.column('face_index')[0].as_py()}"


def shard_file_name(table, part: str = "") -> str:
    """The file name of a shard holding `table`: from its input rows, and, for embedding shards, its
    model and mode. One folder holds the shards of every model and mode embedded into it (a rerun
    with another model adds its own); named by the input rows alone, a second model's shard of the
    same images overwrote the first model's."""
    kind = ""
    if "model_id" in table.column_names:
        modes = table.column("mode").to_pylist() if "mode" in table.column_names else [""] * table.num_rows
        kind = "\n".join(sorted({f"{m}|{d}" for m, d in zip(table.column("model_id").to_pylist(), modes)}))
    if part:
        kind = f"{kind}\n{part}"
    return shard_name(table.column("input_row").to_pylist(), kind)


def cut_inputs(table, job: str | None) -> dict:
    """The images of `table` (a write batch's rows of one group) whose rows it holds only some of:
    {input row: [job, the image's rows in all, the rows held here]} (`CUT_KEY`). `_rows` says how
    many rows the worker gave each image; a table without it (written whole) has none cut."""
    if "_rows" not in table.column_names:
        return {}
    here: dict = {}
    total: dict = {}
    for name, rows in zip(table.column("input_row").to_pylist(), table.column("_rows").to_pylist()):
        here[name] = here.get(name, 0) + 1
        total[name] = rows
    return {name: [job or "", int(total[name]), n] for name, n in here.items() if n < total[name]}


def shard_cuts(table) -> dict:
    """A shard's `CUT_KEY` record (see `cut_inputs`), {} for a shard that holds its images whole."""
    text = (table.schema.metadata or {}).get(CUT_KEY)
    return json.loads(text) if text else {}


def with_cuts(table, cuts: dict):
    """`table` with its `CUT_KEY` record set to `cuts` (removed when empty)."""
    metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k != CUT_KEY}
    if cuts:
        metadata[CUT_KEY] = json.dumps(cuts, sort_keys=True).encode()
    return table.replace_schema_metadata(metadata or None)


def part_label(table, cuts: dict) -> str:
    """What names a shard beside its rows: where the batch was cut inside an image (`continuation`),
    and the cut images it holds parts of."""
    label = continuation(table)
    return f"{label}\n{json.dumps(cuts, sort_keys=True)}" if cuts else label


def write_shards(table, *, output_uri: str, directory: str, faces_column: str, lease: str | None = None) -> dict:
    """Ray Data map function: write `table` (rows with `group` (a `jobs.source.group_id`),
    `input_row`, `status` and `faces_column` columns) as one shard per group, and return the counts.
    `lease`: the job's lease token, checked first (`jobs.lease.check_lease`), and the job's name in
    the record of images whose rows the batch holds only some of (`cut_inputs`)."""
    import pyarrow.compute as pc

    from jobs.lease import check_lease
    from jobs.storage import open_store

    store = open_store(output_uri)
    check_lease(store, lease)
    shards = 0
    counts, cut = input_counts(table)
    transient = ["group"] + [c for c in table.column_names if c.startswith("_")]
    for group in pc.unique(table.column("group")).to_pylist():
        rows = table.filter(pc.equal(table.column("group"), group))
        cuts = cut_inputs(rows, lease)
        put_shard(store, directory, group, with_cuts(rows.drop_columns(transient), cuts), part_label(rows, cuts))
        shards += 1
    return {"inputs": [sum(counts.values())], "faces": [faces_in(table, faces_column)], "shards": [shards],
            "statuses": [json.dumps(counts)], "cuts": [json.dumps(cut)]}


def faces_in(table, faces_column: str) -> int:
    """Faces among a table's rows: rows whose `faces_column` is true (manifest: `masked`), or for
    embedding shards (`status`) rows with a vector."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if faces_column == "status":  # embedding shards: a face counts when it has a vector
        return table.column("status").to_pylist().count("ok")
    return int(pc.sum(pc.cast(pc.fill_null(table.column(faces_column), False), pa.int64())).as_py() or 0)


def batch_counts(table, faces_column: str) -> tuple[int, int, dict]:
    """What one worker's finished batch adds to the progress counts (`Progress.batch`): inputs, faces,
    and inputs per status."""
    inputs = table.column("input_row").to_pylist()
    return len(set(inputs)), faces_in(table, faces_column), status_counts(inputs, table.column("status").to_pylist())


def put_shard(store, directory: str, group: str, table, part: str = "") -> None:
    """Write `table` (the rows of one group) as its shard: `<directory>/<group>/part-<hash>.parquet`
    (`part`: `part_label`'s label of the rows it was cut from)."""
    write_shard(store, f"{directory}/{group}", table, part)


def write_shard(store, folder: str, table, part: str = "") -> None:
    """Write `table` as a shard in `folder` of `store`, named by `shard_file_name`."""
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    store.write(f"{folder}/{shard_file_name(table, part)}", sink.getvalue())


def input_counts(table) -> tuple[dict, dict]:
    """(inputs per status, cut parts) of a write batch's rows (`input_statuses`). The inputs it holds
    only some rows of (Ray cut a batch inside an image's face rows; `_rows` says how many it has in
    all) are left out of the counts and listed instead, {input row: [its rows in all, rows here, their
    status]}, for the summary to count once every part is in (`JobSummary.add`). A batch
    without `_rows` holds its inputs whole."""
    parts = cut_inputs(table, None)  # (an image's rows are of one group: the batch's cuts are its groups')
    statuses = input_statuses(table.column("input_row").to_pylist(), table.column("status").to_pylist())
    counts: dict = {}
    cut: dict = {}
    for name, status in statuses.items():
        if name in parts:
            cut[name] = [*parts[name][1:], status]
        else:
            counts[status] = counts.get(status, 0) + 1
    return counts, cut


def mark_inputs(rows: list[dict]) -> list[dict]:
    """Set `_first` on the first row of each input row, and `_rows` on every row to its input's rows
    in all (a worker emits an input's rows together): what the shard writers need to see where a
    batch cut an image's rows (`continuation`, `cut_inputs`)."""
    start = 0
    for i in range(len(rows) + 1):
        if i == len(rows) or rows[i]["input_row"] != rows[start]["input_row"]:
            for j in range(start, i):
                rows[j]["_first"], rows[j]["_rows"] = j == start, i - start
            start = i
    return rows


def write_stage(ds, output_uri: str, directory: str, faces_column: str, rows_per_shard: int = ROWS_PER_SHARD,
                lease: str | None = None):
    """`ds` written as shards by tasks (a little CPU each: see jobs.pool)."""
    from jobs.pool import TASK_CPUS

    return ds.map_batches(write_shards, fn_kwargs={"output_uri": output_uri, "directory": directory,
                                                   "faces_column": faces_column, "lease": lease},
                          batch_size=rows_per_shard, batch_format="pyarrow", num_cpus=TASK_CPUS)


class Progress:
    """Counts reported by read tasks (listed, already done) and actors (finished batches)."""

    def __init__(self):
        self.listed = self.skipped = self.skipped_failed = self.processed = self.faces = 0
        self.statuses: dict = {}

    def list(self, todo: int, done: int, failed: int = 0) -> None:
        self.listed += todo + done
        self.skipped += done
        self.skipped_failed += failed

    def batch(self, processed: int, faces: int, statuses: dict) -> None:
        self.processed += processed
        self.faces += faces
        for status, n in statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n

    def get(self) -> dict:
        return {"inputs": self.listed, "skipped": self.skipped, "skipped_failed": self.skipped_failed,
                "processed": self.processed,
                "faces": self.faces, "statuses": dict(self.statuses)}


class ProgressBoard:
    """The `Progress` counts of every job a driver process runs, by job key: one actor serves them
    all. An actor is a process of its own, and a job's read tasks wait for its first report to
    arrive, so an actor per job put its start (about a second of CPU) in front of every job."""

    def __init__(self):
        self.jobs: dict = {}
        self.closed: set = set()  # keys of ended jobs: a report still on its way must not bring one back

    def list(self, key: str, todo: int, done: int, failed: int = 0) -> None:
        if key not in self.closed:
            self.jobs.setdefault(key, Progress()).list(todo, done, failed)

    def batch(self, key: str, processed: int, faces: int, statuses: dict) -> None:
        if key not in self.closed:
            self.jobs.setdefault(key, Progress()).batch(processed, faces, statuses)

    def get(self, key: str) -> dict:
        return self.jobs.get(key, Progress()).get()

    def forget(self, key: str) -> None:
        self.jobs.pop(key, None)
        self.closed.add(key)

    def open_jobs(self) -> int:
        """Jobs whose counts are held: those running (a finished job's are dropped)."""
        return len(self.jobs)


class _JobCall:
    def __init__(self, board, name: str, key: str):
        self.board, self.name, self.key = board, name, key

    def remote(self, *args):
        return getattr(self.board, self.name).remote(self.key, *args)


class JobProgress:
    """One job's counts on the driver's `ProgressBoard` actor, called as a `Progress` actor is
    (`progress.list.remote(todo, done, failed)`, `.batch.remote(...)`, `.get.remote()`); sent to
    the job's read tasks and actors. `close()` drops the job's counts from the board."""

    def __init__(self, board, key: str):
        self.board, self.key = board, key

    @property
    def list(self) -> _JobCall:
        return _JobCall(self.board, "list", self.key)

    @property
    def batch(self) -> _JobCall:
        return _JobCall(self.board, "batch", self.key)

    @property
    def get(self) -> _JobCall:
        return _JobCall(self.board, "get", self.key)

    def close(self) -> None:
        try:
            self.board.forget.remote(self.key)
        except Exception:  # a board gone with its Ray: nothing left to drop
            pass


_BOARD: dict = {}  # the Ray session (jobs.pool.ray_session) -> the ProgressBoard actor this process started on it


def start_progress() -> JobProgress:
    """A job's progress counts, on the one `ProgressBoard` actor of this process and Ray session
    (started on first use; no CPU, so it fits on a head that has none). It lives on the driver's own
    node: on a worker node that died it came back empty, and a job that had written every output
    stopped with "no images under ... (nothing was written)"; the driver's node takes the job with it
    anyway."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from jobs.pool import ray_session

    session = ray_session()  # a board of an earlier Ray of this process, under the same job id, is gone:
    if session not in _BOARD:  # calling it aborted the process (Ray's "Cannot find an actor handle")
        _BOARD.clear()
        here = NodeAffinitySchedulingStrategy(node_id=session[0], soft=False)
        _BOARD[session] = ray.remote(num_cpus=0, max_restarts=-1)(ProgressBoard).options(
            scheduling_strategy=here).remote()
    return JobProgress(_BOARD[session], uuid.uuid4().hex)


def nothing_to_do(output, done_dir: str, groups: list[str], lister, started: float,
                  progress=None) -> JobSummary | None:
    """The summary of a rerun that finds everything done, else None (the job then runs as usual).
    Ray Data starts a job's actor pools, and waits for their models to load, whether or not any row
    reaches them: seconds per pool that a finished job need not pay. So a rerun (an `output` with
    something under `done_dir`) first lists on its own: read tasks list until the first input still
    to do, where a job with work left stops (after a group or so), or to the end. A first run does
    not look: stopping a listing early is not free (with the look, a first run over 20,000 tiny
    images ran at a median 775 against 1,045 images/s without)."""
    import ray

    from jobs.source import read_grouped

    if not output.any_under(done_dir):
        return None
    tracker = start_progress()
    # a CPU per listing task: with no pool beside them, tasks of 0.1 CPU would start ten worker
    # processes per core (3.5x the time over 300,000 finished inputs on 2 cores)
    rows = iter(read_grouped(groups, lister, tracker, cpus=1).iter_rows())
    try:
        if next(rows, None) is not None:
            return None
        summary = JobSummary.live(ray.get(tracker.get.remote(), timeout=60), time.perf_counter() - started)
    finally:
        rows.close()  # stops the read tasks of a job with work left
        tracker.close()
    if progress:
        progress(summary)
    return summary


def require_inputs(summary: JobSummary, input_uri: str) -> None:
    """A job whose input lists nothing at all (identity folders that are all empty) is refused, as an
    empty input folder is before the job starts; a rerun with nothing left has skipped inputs."""
    from jobs.storage import redact

    if summary.inputs == 0 and summary.skipped == 0:
        raise FileNotFoundError(f"no images under {redact(str(input_uri))}: its folders are empty; check the path "
                                "(nothing was written)")


def run_listed(output, done_dir: str, groups: list[str], lister, build, started: float,
               progress=None, batch_size: int | None = None) -> JobSummary:
    """A job on Ray: the inputs left to do (`groups` listed by `lister` in read tasks, in blocks of a
    few of the pool's batches of `batch_size` rows: `jobs.source.block_rows`), turned by
    `build(inputs, tracker)` into the dataset of shard-write counts, run to the end. `tracker` is
    the job's progress actor, for its workers' reports. A rerun with nothing left under `done_dir`
    of `output` ends after its listing (`nothing_to_do`)."""
    from jobs.source import block_rows, read_grouped

    summary = nothing_to_do(output, done_dir, groups, lister, started, progress)
    if summary is not None:
        return summary
    tracker = start_progress()
    try:
        inputs = read_grouped(groups, lister, tracker, rows_per_block=block_rows(batch_size) if batch_size else None)
        return run_to_end(build(inputs, tracker), tracker, started, progress)
    finally:
        tracker.close()


def run_to_end(ds, progress_actor, started: float, progress=None) -> JobSummary:
    """Execute `ds` (its rows: `write_shards` counts) and return the summary; `progress(summary)` is
    called from a polling thread while it runs (a live view from the actors' reports) and once at
    the end (the exact counts of what was written)."""
    import ray

    summary = JobSummary()
    stop = threading.Event()

    def live() -> JobSummary:
        return JobSummary.live(ray.get(progress_actor.get.remote(), timeout=30), time.perf_counter() - started)

    def poll():
        while not stop.wait(0.5):
            try:
                progress(live())
            except Exception:  # a progress bar never stops a job
                pass

    from jobs.pool import RAY_ACTOR_RESTART_NOTICE, filtering_stderr

    poller = threading.Thread(target=poll, daemon=True) if progress else None
    if poller:
        poller.start()
    try:
        with filtering_stderr(RAY_ACTOR_RESTART_NOTICE):  # (its pools' start-up warning: jobs.pool)
            for counts in ds.iter_rows():
                summary.add(counts)
        summary.finish()
    finally:
        stop.set()
        if poller:
            poller.join(timeout=5)
    listed = ray.get(progress_actor.get.remote(), timeout=60)
    summary.inputs, summary.skipped, summary.skipped_failed = listed["inputs"], listed["skipped"], \
        listed["skipped_failed"]
    summary.seconds = time.perf_counter() - started
    if progress:
        progress(summary)
    return summary
