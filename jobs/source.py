"""What a job reads, as a Ray Data datasource whose read tasks do the listing: the driver holds no
per-image data.

The input is cut into *groups*: the top-level entries of a folder or `s3://` prefix (usually one
folder per identity; files at the top level form the group ""), or the hash buckets of an input
manifest's paths. The driver lists only the top level; each read task lists its groups, drops what
an earlier run already finished and yields rows of what is left; the rows are then cut into blocks
of a few of the pool's batches (`cut_blocks`), so every actor of a pool gets work.

Everything a job writes about an input lands under the input's group folder of the output
(`manifest/g=<group id>/`, `shards/g=<group id>/`): finding what is done is then, per group, a read
of that folder's key column inside the read task (an anti-join over one group), never a read of
the whole output into the driver. See `group_id`.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Callable, Iterable

from ray.data import Datasource

MANIFEST_BUCKETS = 64      # groups of an input manifest


@functools.lru_cache(maxsize=4096)  # a manifest's 64 buckets, once per row
def group_id(group: str) -> str:
    """The folder name of a group under the output: short, ASCII, the same on every run."""
    return "g=" + hashlib.sha256(group.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def group_of(key: str) -> str:
    """The group of a key of a folder or prefix input: its first path component ("" at the top)."""
    head, sep, _ = key.partition("/")
    return head if sep else ""


def bucket_of(key: str, buckets: int = MANIFEST_BUCKETS) -> str:
    """The group of a key of an input manifest: a stable hash bucket."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
    return f"bucket-{int.from_bytes(digest[:4], 'big') % buckets:03d}"


def _done_tables(store, directory: str, where: Callable | None):
    """The Parquet shards under `directory` of `store` as tables, each only the rows for which
    `where(table)` (a pyarrow boolean mask) holds, if given. A shard that cannot be parsed (a write
    cut short by a crash on a file system without atomic rename, a file damaged since) counts as not
    written: its rows are done again, and with `drop` (a real run) it is set aside as `<name>.damaged`
    (`set_aside`): the new rows may be cut into other shards than the damaged one, which then stayed
    for good and failed every reader of the output. A `DoneRows` filter also leaves out the
    rows of images whose write was left incomplete (`CutWrites`) and, with `retry_failed`, the failed
    rows; with `drop`, those rows leave their shards as they are read."""
    from jobs.storage import read_parquet_bytes

    rule = where if isinstance(where, DoneRows) else DoneRows(where, drop=False)
    cuts = CutWrites()
    for key in store.list(directory):
        if not key.endswith(".parquet"):
            continue
        data = None
        try:
            data = store.read(key)
            table = read_parquet_bytes(data)
        except (OSError, ValueError):
            if data is not None and rule.drop:  # read, and not Parquet: the shard, not the store, is at fault
                set_aside(store, key, data)
            continue
        if rule.retry_failed and rule.drop:
            key, table = rule.drop_failed(store, key, table)
        yield rule.select(cuts.hold(key, table))
    for table in cuts.settle(store, rule):
        yield rule.select(table)


DAMAGED_SUFFIX = ".damaged"


def set_aside(store, key: str, data: bytes) -> None:
    """Keep a shard that cannot be parsed as `<key>.damaged` (readers take `.parquet` files only) and
    take it out of the output's shards; its rows are being done again."""
    store.write(key + DAMAGED_SUFFIX, data)
    store.delete(key)


class CutWrites:
    """The rows of images that two shard writes shared (Ray cut a write batch inside them), held back
    while a folder is read, until every part is known (`jobs.sink.cut_inputs`). An image's write is
    complete when the rows its parts in the folder say they held add up to the image's rows; a job
    stopped between two parts leaves it incomplete, and the image then counts as not done. Its rows
    from that write can then leave their shards (`settle`), so the rerun that does the
    image again neither doubles nor keeps a part of them."""

    def __init__(self):
        self.parts: dict = {}  # (input row, job) -> {"total": rows in all, "here": rows the parts held}
        self.held: dict = {}   # (input row, job) -> [(shard key, its rows of the image)]

    def hold(self, key: str, table):
        """`table` (the shard at `key`) less the rows of the images it holds part of, which are kept."""
        import pyarrow.compute as pc

        from jobs.sink import shard_cuts

        cuts = shard_cuts(table)
        if not cuts:
            return table
        rows = table.column("input_row")
        for name, (job, total, here) in cuts.items():
            part = self.parts.setdefault((name, job), {"total": total, "here": 0})
            part["here"] += here
            mine = table.filter(pc.fill_null(pc.equal(rows, name), False))
            if mine.num_rows:
                self.held.setdefault((name, job), []).append((key, mine))
        return table.filter(pc.invert(rows_of(table, cuts)))

    def incomplete(self) -> set:
        return {k for k, p in self.parts.items() if p["here"] < p["total"]}

    def settle(self, store, rule: "DoneRows"):
        """Yield the held rows of complete writes (with `rule.retry_failed`, of those none of whose rows
        failed). With `rule.drop`, take the rows of incomplete (or failed) ones
        that `rule.where` selects out of their shards (each shard rewritten once): a job for one
        model leaves another model's rows in a shared folder to that model's rerun. An image's record
        stays on a shard while any of its rows do, so those rows still count as a part."""
        import pyarrow.compute as pc

        incomplete = self.incomplete()
        rewrite: dict = {}  # shard key -> input rows to take out
        for part, found in self.held.items():
            # with --retry-failed, an image a row of which failed, in any part, is done again whole
            failed = rule.retry_failed and any(pc.any(pc.fill_null(rule.failed(rows), False)).as_py()
                                               for _, rows in found)
            if part not in incomplete and not failed:
                yield from (rows for _, rows in found)
            elif rule.drop:
                for key, rows in found:
                    if rule.where is None or failed or rule.select(rows).num_rows:
                        rewrite.setdefault(key, set()).add(part[0])
        for key, names in rewrite.items():
            _take_out(store, key, names, rule.where)


def rows_of(table, names):
    """A boolean mask of `table`'s rows whose `input_row` is one of `names` (False for a null one)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.fill_null(pc.is_in(table.column("input_row"), value_set=pa.array(list(names), pa.string())), False)


def _take_out(store, key: str, names: set, where: Callable | None) -> None:
    """Rewrite the shard at `key` (`_rewrite`) without the rows of the input rows `names` that
    `where` (if given) selects; the record of an image whose rows all left goes with them."""
    import pyarrow.compute as pc

    from jobs.sink import shard_cuts, with_cuts
    from jobs.storage import read_parquet_bytes

    table = read_parquet_bytes(store.read(key))
    out = rows_of(table, names)
    if where is not None:
        out = pc.and_(out, pc.fill_null(where(table), False))
    keep = table.filter(pc.invert(out))
    left = set(keep.column("input_row").to_pylist())
    _rewrite(store, key, with_cuts(keep, {k: v for k, v in shard_cuts(table).items() if k not in names or k in left}))


def _rewrite(store, key: str, keep) -> str:
    """Replace the shard at `key` by `keep` (some of its rows; none: the shard goes) and return its
    new key. Deleted first: a crash between the two steps leaves the other rows' images without
    rows (done again by the next run), never twice. Named after the shard it replaces: two parts of
    one image, each left with only that image's rows, would otherwise get one name and the second
    overwrite the first."""
    from jobs.sink import shard_file_name, write_shard

    store.delete(key)
    folder, _, name = key.rpartition("/")
    label = f"rewritten from {name}"
    if keep.num_rows:
        write_shard(store, folder, keep, label)
    return f"{folder}/{shard_file_name(keep, label)}"


class DoneRows:
    """How a listing reads the shards an earlier run wrote (`_done_tables`): an input counts as done
    where it has a row that `where` (a pyarrow boolean mask over a shard, if given) selects, except
    the rows of an image whose write was left incomplete (`CutWrites`) and, with `retry_failed` (for
    `--retry-failed`), the rows of an input a row of which failed (a status outside
    `jobs.progress.FINE`: missing, undecodable, error, ...), so a rerun does those images again.

    With `drop` (a real run, not a dry run), those rows leave their shards as the listing reads
    them (`_rewrite`): the rows written again are then an input's only rows. One read task lists a
    group, so no two tasks rewrite one shard."""

    def __init__(self, where: Callable | None = None, *, retry_failed: bool = False, drop: bool = True):
        self.where, self.retry_failed, self.drop = where, retry_failed, drop

    def _within(self, mask, table):
        import pyarrow.compute as pc

        return mask if self.where is None else pc.and_(mask, self.where(table))

    def failed(self, table):
        """The rows that failed (and that `where` selects), and every row of an input (`input_row`) one
        of whose rows failed: with `--retry-failed` the input is done again whole. Row by row, an image
        with one face failed and one fine still counted as done, and its failed row was dropped and
        never written again (the failure vanished from the manifest and the report)."""
        import pyarrow.compute as pc

        failed = self._within(pc.invert(self._fine(table)), table)
        if "input_row" in table.column_names and pc.any(failed).as_py():
            # (nulls left out of the set: is_in matches a null with every other null)
            inputs = pc.drop_null(pc.unique(table.filter(failed).column("input_row")))
            failed = pc.or_(failed, self._within(pc.is_in(table.column("input_row"), value_set=inputs), table))
        return failed

    def __call__(self, table):
        import pyarrow.compute as pc

        return self._within(pc.invert(self.failed(table)), table) if self.retry_failed else self.where(table)

    def select(self, table):
        """The rows of `table` that count as done (the table itself when every row does)."""
        return table if self.where is None and not self.retry_failed else table.filter(self(table))

    @staticmethod
    def _fine(table):
        import pyarrow as pa
        import pyarrow.compute as pc

        from jobs.progress import FINE

        return pc.is_in(table.column("status"), value_set=pa.array(list(FINE), pa.string()))

    def drop_failed(self, store, key: str, table) -> tuple:
        """(key, table): the shard at `key` less its failed rows, which leave the store (the shard's
        new key, its record of cut images kept). Rows of images the shard holds only part of are left
        to `CutWrites.settle`, which sees all their parts: dropped here, a failed face's part went and
        the image's record still counted it, so the image read as done and the failure was lost."""
        import pyarrow.compute as pc

        from jobs.sink import shard_cuts

        failed = pc.fill_null(self.failed(table), False)
        cut = shard_cuts(table)
        if cut:
            failed = pc.and_(failed, pc.invert(rows_of(table, cut)))
        if not pc.any(failed).as_py():
            return key, table
        keep = table.filter(pc.invert(failed))
        return _rewrite(store, key, keep), keep


def _failed_values(table, key_column: str) -> list:
    """`key_column`'s values in the rows of a done table that failed (none in a table without a
    `status` column)."""
    if "status" not in table.column_names:
        return []
    return table.filter(DoneRows().failed(table)).column(key_column).to_pylist()


def read_done(store, directory: str, key_column: str, where: Callable | None = None, failed: set | None = None) -> set:
    """Values of `key_column` in the Parquet shards under `directory` of `store` (one group's folder),
    optionally only the rows for which `where(table)` holds (see `_done_tables`). `failed`, if given,
    receives the values whose row failed (`DoneRows.failed`): a rerun still counts them."""
    done = set()
    for table in _done_tables(store, directory, where):
        done.update(table.column(key_column).to_pylist())
        if failed is not None:
            failed.update(_failed_values(table, key_column))
    return done


def digest(text: str) -> bytes:
    """16 bytes that stand for `text` in a `DigestSet` (BLAKE2b: a collision among 10^9 texts has a
    chance of about 10^-21)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=16).digest()


class DigestSet:
    """A set of texts held as their sorted 16-byte digests: 16 bytes a member where a Python set holds
    a string object and a slot per member, for the done rows of a whole input manifest."""

    def __init__(self, digests: bytes | bytearray = b""):
        import numpy as np

        self._sorted = np.unique(np.frombuffer(bytes(digests), dtype="S16"))

    def __len__(self) -> int:
        return len(self._sorted)

    def __contains__(self, text: str) -> bool:
        return bool(self.contains([text])[0])

    def contains(self, texts: list[str]):
        """A boolean array: whether each of `texts` is in the set."""
        import numpy as np

        if not len(self._sorted) or not texts:
            return np.zeros(len(texts), dtype=bool)
        wanted = np.frombuffer(b"".join(digest(t) for t in texts), dtype="S16")
        at = np.minimum(np.searchsorted(self._sorted, wanted), len(self._sorted) - 1)
        return self._sorted[at] == wanted


def done_digests(store, directory: str, key_column: str, where: Callable | None = None,
                 failed: bytearray | None = None) -> DigestSet:
    """`read_done` as a `DigestSet`: for folders too large to hold as Python strings (every group of
    an input manifest). `failed`, if given, receives the digests of the values whose row failed."""
    found = bytearray()
    for table in _done_tables(store, directory, where):
        for value in table.column(key_column).to_pylist():
            if value is not None:
                found += digest(value)
        if failed is not None:
            failed += b"".join(digest(value) for value in _failed_values(table, key_column) if value is not None)
    return DigestSet(found)


class GroupedSource(Datasource):
    """A Ray Data datasource over groups: `lister.rows(group)` (run inside a read task) yields
    pyarrow tables of the rows still to do in that group. `groups` is the only thing the driver
    holds."""

    def __init__(self, groups: list[str], lister, name: str = "Inputs"):
        super().__init__()
        self.groups, self.lister, self.name = list(groups), lister, name

    def get_name(self) -> str:
        return self.name

    def estimate_inmemory_data_size(self):
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None):
        from ray.data import ReadTask
        from ray.data.block import BlockMetadata

        tasks = max(1, min(int(parallelism), len(self.groups)))
        lister = self.lister
        out = []
        for i in range(tasks):
            mine = self.groups[i::tasks]
            out.append(ReadTask(lambda mine=mine: _read_groups(lister, mine),
                                BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None),
                                per_task_row_limit=per_task_row_limit))
        return out


def _read_groups(lister, groups: list[str]) -> Iterable:
    for group in groups:
        yield from lister.rows(group)


def block_rows(batch_size: int) -> int:
    """Rows per input block of a job whose pool takes `batch_size` rows per call: a few batches.

    A block is what one actor is given at a time (Ray Data bundles small blocks up to a batch but
    never splits a large one), and a read task's output is one block: everything its groups listed,
    up to 128 MiB of rows, since Ray Data merges what a task yields. So a job had at most 64 blocks
    (its read tasks), however large: a pool could keep at most 64 actors busy, each block took one
    actor minutes to hours, and the job's end waited for whichever actor held the last one.
    `BATCHES_PER_BLOCK` batches per block spread the work over every actor of a pool and keep the
    blocks few enough for the driver's scheduler (up to about 800,000 at 10^8 images)."""
    return max(1, int(batch_size)) * BATCHES_PER_BLOCK


BATCHES_PER_BLOCK = 8


def read_grouped(groups: list[str], lister, progress=None, cpus: float | None = None, rows_per_block: int | None = None):
    """The dataset of what is left to do, listed by read tasks that report their counts to
    `progress`, in blocks of at most `rows_per_block` rows (`block_rows`; default: a block per read
    task). Each task asks for `cpus` (default `jobs.pool.TASK_CPUS`: little, beside a job's pools)."""
    import ray

    from jobs.pool import TASK_CPUS

    if not groups:
        return ray.data.from_items([])
    name = "Input" + type(lister).__name__.removesuffix("Lister")  # InputFolder, InputManifest, InputAugment
    cpus = TASK_CPUS if cpus is None else cpus
    from jobs.inputs import reporting_to

    ds = ray.data.read_datasource(GroupedSource(groups, reporting_to(lister, progress), name), num_cpus=cpus,
                                  override_num_blocks=min(len(groups), 64))
    return cut_blocks(ds, rows_per_block, cpus) if rows_per_block else ds


def cut_blocks(ds, rows: int, cpus: float):
    """`ds` in blocks of at most `rows` rows, cut as they stream out of its reads (Ray Data's streaming
    repartition: no shuffle, nothing held). Ray Data gives each cutting task a whole CPU, which a pool
    holding a node's cores never leaves free, so the job would wait forever: the tasks are as light
    as the reads and ask for what they ask (`cpus`). Where this Ray Data has no such setting, the
    blocks stay as read (a job still runs, spread over fewer actors)."""
    import logging

    cut = ds.repartition(target_num_rows_per_block=int(rows))
    op = getattr(getattr(cut, "_logical_plan", None), "dag", None)
    if type(op).__name__ != "StreamingRepartition" or not isinstance(getattr(op, "ray_remote_args", None), dict):
        logging.getLogger(__name__).warning("this Ray Data cannot cut input blocks: each read task's rows go "
                                            "to one actor")
        return ds
    op.ray_remote_args["num_cpus"] = cpus
    return cut
