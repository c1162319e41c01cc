"""Small jobs on this machine without Ray: the same worker classes and shard writes, in a process pool.

A Ray runtime started for one job costs a 2-core machine 5 to 10 s (GCS, raylet, workers, actor
start-up) and, while it runs, a share of the CPU for its own processes and Ray Data's per-batch
bookkeeping: on 500 LFW-size photos that was most of the job. When no cluster is reachable (no
RAY_ADDRESS, no `ray start` cluster on this machine) and the job has at most `LOCAL_MAX_INPUTS` images
to do, `--executor auto` runs it here instead:

- the main process lists the inputs with the job's own lister (the same rows, the same already-done
  anti-join as the Ray read tasks) and stops listing as soon as there are more than the limit;
- one worker process per CPU (forked from a forkserver that has the models' modules imported; each
  loads the models once and runs them on one thread) calls the job's own worker class on batches
  (`mfr run`: both of its pools' classes, one after the other);
- the main process writes the shards with the job's own writer (`write_shards`, `mfr run`'s
  `write_run_shards`), one shard per `rows_per_shard` rows, and counts the summary from what it wrote.

Outputs are the same files with the same names and rows as on Ray (`node` is empty). Larger jobs, and
every job when a cluster is reachable, run on Ray: streaming with bounded memory, retries and many
machines are what it is for. Ctrl-C (or SIGTERM) stops taking batches, waits for the ones running,
writes their rows and stops: finished batches are kept and a rerun does the rest. A worker process
that dies (killed, out of memory, or failing to start) stops the job the same way, with a message
that says which (`how_workers_ended`).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import cloudpickle

from jobs.sink import JobSummary, Progress, batch_counts

EXECUTORS = ("auto", "local", "ray")  # `--executor` of mfr mask, mfr embed and mfr run
LOCAL_MAX_INPUTS = 10_000
# what the forkserver imports once, so each worker process starts without importing them again (and
# maskgen.preload: the landmark model, read once there and shared by every worker forked from it)
PRELOAD = ("numpy", "cv2", "onnxruntime", "pyarrow", "pyarrow.parquet", "maskgen.augment", "jobs.augment",
           "recog.embed", "jobs.embed", "jobs.run", "maskgen.preload")


def cluster_reachable() -> bool:
    """Whether `ray.init()` would join a cluster rather than start one: RAY_ADDRESS (and `ray job
    submit`, which sets it), a `ray start` cluster on this machine, or a Ray already initialised here."""
    from jobs.pool import _local_cluster_running

    ray = sys.modules.get("ray")
    return bool(os.environ.get("RAY_ADDRESS")) or _local_cluster_running() or bool(ray and ray.is_initialized())


def check_executor(executor: str) -> None:
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")


def small_job_rows(groups, lister, limit: int):
    """The input rows to do (pyarrow tables) when there are at most `limit`, else None; listing stops
    as soon as the limit is passed, so a large job costs this no more than `limit` rows."""
    tables, count = [], 0
    for group in groups:
        for table in lister.rows(group):
            if table.num_rows:
                tables.append(table)
                count += table.num_rows
            if count > limit:
                return None
    return tables


def input_boundary(table, rows: int) -> int | None:
    """The first row at or after `rows` where an input's rows begin (`_first`), None if none does."""
    import numpy as np

    if table.num_rows <= rows:
        return None
    starts = np.flatnonzero(np.asarray(table.column("_first").slice(rows).to_pylist(), dtype=bool))
    return rows + int(starts[0]) if starts.size else None


_worker = None
_failure: BaseException | None = None


def _exit_after(parent: int) -> None:
    """A worker's watch on the job's process: a job killed outright (SIGKILL, the OOM killer, a hard
    timeout) cannot stop its pool, whose processes, children of the forkserver, would live on."""
    while True:
        time.sleep(1.0)
        if _ended(parent):
            os._exit(1)


def _ended(pid: int) -> bool:
    """Whether the process `pid` has ended: gone, taken by another user's process, or a zombie (dead,
    not yet reaped by its parent: a caller that reads the job's output to its end before waiting
    kept the workers, which hold that output open, alive for good)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:  # Linux; elsewhere a zombie reads as running
            return stat.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def _end_only_on_the_pools_sigterm(parent: int) -> None:
    """A worker ends on the SIGTERM its pool sends it (the job's process, ending a broken pool's
    workers) and lets any other go by: `timeout`, systemd or `kill -TERM -PGID` signal the job's whole
    process group, and the job, which then takes the Ctrl-C path, lets running batches finish. Ended
    at once, the workers broke the pool, lost those batches, and the standard library's pool printed
    an InvalidStateError traceback under the "interrupted" line. Blocked here, before any other thread
    starts (ONNX Runtime's inherit the mask), SIGTERM reaches only the thread that asks who sent it."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def watch() -> None:
        while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
            pass
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        signal.raise_signal(signal.SIGTERM)  # ended by it, as before: the pool reads the exit code

    threading.Thread(target=watch, daemon=True, name="mfr-sigterm-watch").start()


def _start_worker(factory: bytes, parent: int | None = None, environ: dict | None = None) -> None:
    global _worker, _failure
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides what Ctrl-C stops
    # (sigwaitinfo is Linux's: on macOS a group SIGTERM still ends the workers at once, as it did)
    if parent is not None and hasattr(signal, "sigwaitinfo"):
        _end_only_on_the_pools_sigterm(parent)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if parent is not None:
        threading.Thread(target=_exit_after, args=(parent,), daemon=True, name="mfr-parent-watch").start()
    if environ is not None:
        # the caller's environment now: the forkserver keeps the one of the process's first job, and AWS
        # settings exported after it (a notebook, a test session) left the workers without credentials
        os.environ.clear()
        os.environ.update(environ)
    os.environ["MFR_NUM_THREADS"] = "1"
    try:
        _worker = pickle.loads(factory)()
    except Exception as exc:  # e.g. a model that cannot load: said by the first batch, not as a dead pool
        _failure = exc


def _started() -> int:
    if _failure is not None:
        raise _failure
    return os.getpid()


@contextlib.contextmanager
def _main_module_hidden():
    """While worker processes start: the forkserver, like spawn, would import the caller's `__main__`
    script again in each process, and a script without an `if __name__ == "__main__":` guard would run
    its job again there. The workers need nothing from it (their code lives in jobs/), so they are
    started as if there were none."""
    main = sys.modules.get("__main__")
    hidden = {name: getattr(main, name) for name in ("__file__", "__spec__")
              if main is not None and getattr(main, name, None) is not None}
    try:
        for name in hidden:
            setattr(main, name, None)
        yield
    finally:
        for name, value in hidden.items():
            setattr(main, name, value)


def _call_worker(batch):
    if _failure is not None:
        raise _failure
    return _worker(batch)


def run_here(executor: str, limit: int, listing, worker_factory, *, write, faces_column: str, batch_size: int,
             workers: int | None, rows_per_shard: int, started: float, progress=None):
    """A job in a process pool on this machine, or None when it belongs on Ray (the caller then runs it
    there): `executor` "ray", or "auto" with a cluster to join or more than `limit` inputs to do.
    `listing(tally)` is the job's own listing, (input store, groups, lister, notes), reporting to
    `tally`; `worker_factory(input store)` makes the callable that builds one worker (picklable: it is
    sent to each worker process); `write(table)` writes up to `rows_per_shard` of the workers' rows as
    the job's shards and returns their counts (`jobs.sink.write_shards`' output)."""
    from jobs.inputs import Tally
    from maskgen.runtime import machine_cpus

    if executor == "ray" or (executor == "auto" and cluster_reachable()):  # checked by the job, before any I/O
        return None
    tally = Tally()
    source, groups, lister, notes = listing(tally)
    tables = small_job_rows(groups, lister, float("inf") if executor == "local" else limit)
    if tables is None:
        return None
    todo = sum(t.num_rows for t in tables)
    processes = max(1, min(workers or machine_cpus(), -(-todo // batch_size)))
    summary = run_local(tables, worker_factory(source), write=write, faces_column=faces_column,
                        batch_size=batch_size, rows_per_shard=rows_per_shard, processes=processes,
                        started=started, tally=tally, progress=progress)
    summary.notes = notes
    return summary


def batches_of(tables, batch_size: int):
    for table in tables:
        for start in range(0, table.num_rows, batch_size):
            yield table.slice(start, batch_size)


def run_local(tables, factory, *, write, faces_column: str, batch_size: int, rows_per_shard: int, processes: int,
              started: float, tally, progress=None) -> JobSummary:
    """Run `factory()` (a job's worker: a pyarrow batch of input rows in, a table of output rows with
    `group`, `input_row`, `status`, `_first` out) over `tables` in `processes` worker processes, and
    write the rows with `write`, `rows_per_shard` at a time. `tally` holds what the listing counted."""
    import multiprocessing

    import pyarrow as pa

    summary = JobSummary(inputs=tally.todo + tally.done, skipped=tally.done, skipped_failed=tally.failed)
    counts = Progress()  # what the Ray jobs' progress actor counts, counted here
    counts.list(tally.todo, tally.done, tally.failed)
    pending_rows: list = []

    def flush(final: bool = False) -> None:
        # shards of at least rows_per_shard rows, cut where an input's rows begin: an image's face rows
        # are never split between two shards
        while pending_rows and (final or sum(t.num_rows for t in pending_rows) > rows_per_shard):
            table = pa.concat_tables(pending_rows)
            cut = input_boundary(table, rows_per_shard)
            if cut is None and not final:
                pending_rows[:] = [table]
                return
            head, rest = (table, table.slice(table.num_rows)) if cut is None else (table.slice(0, cut), table.slice(cut))
            pending_rows[:] = [rest] if rest.num_rows else []
            summary.add({k: v[0] for k, v in write(head).items()})

    def take(table) -> None:
        pending_rows.append(table)
        counts.batch(*batch_counts(table, faces_column))
        flush()
        if progress:
            progress(JobSummary.live(counts.get(), time.perf_counter() - started))

    if not any(t.num_rows for t in tables):  # a rerun with nothing left: no process to start, no model to load
        summary.seconds = time.perf_counter() - started
        if progress:
            progress(summary)
        return summary
    if progress:  # the bar starts now, with what the listing found, not when the first batch is done
        progress(JobSummary.live(counts.get(), time.perf_counter() - started))
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    batches = batches_of(tables, batch_size)
    running: set = set()
    members: list = []  # the pool's processes, for why it broke
    broken = False
    # by value (cloudpickle), as Ray sends it: a mask style defined in the user's own script is in its
    # `__main__`, which the workers never import (`_main_module_hidden`)
    with ProcessPoolExecutor(max_workers=processes, mp_context=context, initializer=_start_worker,
                             initargs=(cloudpickle.dumps(factory), os.getpid(), dict(os.environ))) as pool:
        try:
            with _main_module_hidden():  # every process starts now (and loads its models), none later
                starting = [pool.submit(_started) for _ in range(processes)]
                members = list((getattr(pool, "_processes", None) or {}).values())
                for future in starting:
                    future.result()
            for batch in batches:
                running.add(pool.submit(_call_worker, batch))
                if len(running) >= 2 * processes:  # a bounded queue: listing tables are consumed as work ends
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        take(future.result())
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    take(future.result())
        except BrokenProcessPool:
            _keep_finished(running, take)
            flush(final=True)
            broken = True  # said once the pool is shut down and its processes' exit codes are known
        except BaseException:
            _keep_finished(running, take)
            flush(final=True)
            raise
    if broken:
        raise RuntimeError(f"{how_workers_ended(members)}; the batches that finished are written: run the "
                           "same command again to do the rest")
    flush(final=True)
    summary.seconds = time.perf_counter() - started
    if progress:
        progress(summary)
    return summary


def how_workers_ended(processes) -> str:
    """Why a process pool broke, from its (ended and joined) processes' exit codes: an exit status
    (the process failed, e.g. importing the worker's code: its traceback is printed above) or a
    signal (SIGKILL: out of memory, or killed by hand). The pool itself ends the other processes with
    SIGTERM once one has died, so SIGTERM is named only when nothing else explains it."""
    codes = {p.exitcode for p in processes if p.exitcode}
    failed = sorted(c for c in codes if c > 0)
    if failed:
        # nothing printed is a process ended from outside: a killed forkserver leaves its workers 255
        return (f"a worker process failed (exit status {', '.join(map(str, failed))}; its error is printed above, "
                "and with none printed it was ended from outside: killed, or out of memory)")
    signals = sorted(-c for c in codes if c < 0)
    named = [n for n in signals if n != signal.SIGTERM] or signals
    if named:
        names = ", ".join(signal.Signals(n).name if n in signal.Signals._value2member_map_ else f"signal {n}"
                          for n in named)
        return f"a worker process died ({names}: killed, or out of memory)"
    return "a worker process died (killed, or out of memory)"


def _keep_finished(running: set, take) -> None:
    """After an interruption: cancel what has not started, let what runs finish (a batch is seconds of
    work) and keep its rows; a second Ctrl-C stops waiting."""
    for future in running:
        future.cancel()
    try:
        for future in running:
            if future.cancelled():
                continue
            try:
                take(future.result(timeout=120))
            except Exception:  # a broken pool or a failed batch: its images are simply not done
                pass
    except KeyboardInterrupt:
        pass
