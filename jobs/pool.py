"""Actor pools that follow the cluster: Ray Data grows them as nodes arrive and shrinks them when idle.

A job never sizes its pool from the resources that exist at submit time: on a cloud cluster the head
has no CPUs and the workers start at zero, so the pool starts at `min_size` (1) pending actor, which
is what makes the autoscaler add a node, and grows up to `max_size` (the `--workers` cap, else
whatever the cluster can grow to) while there is queued work.

Each CPU actor asks for `CPU_PER_ACTOR` (0.9) of a core and runs its models on one intra-op thread:
the pool scales by processes, which on CPUs beats threads inside one model call. The 0.1 that every
pair of actors leaves is what Ray Data's own small tasks (listing, shard writing, each asking for
`TASK_CPUS`) run on: a pool that takes every CPU leaves them unschedulable and the job hangs (seen
on 2 cores with two 1-CPU actors). GPU actors take one GPU and no CPU, so they land on GPU nodes and
never take a CPU node's core.

`map_in_pool` is the one way the jobs run work on such a pool.
"""

from __future__ import annotations

import os
import re
import sys
import time
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass

CPU_PER_ACTOR = 0.9
TASK_CPUS = 0.1


@dataclass(frozen=True)
class PoolPlan:
    min_actors: int
    max_actors: int | None   # None: as many as the cluster can hold or grow to
    cpus_per_actor: float
    gpus_per_actor: int
    threads: int

    @property
    def actor_kwargs(self) -> dict:
        """Constructor keywords of this pool's actors: their model threads, and their device. A CPU
        actor runs its models on the CPU (it reserved no GPU; with "auto" it opened CUDA on any GPU of
        its node, beside the actors that hold it); a GPU actor on CUDA, refused with the reason when
        CUDA cannot start (with "auto" it ran on the CPU of a node it reserved none of, saying so only
        in its worker's log), unless its node's ONNX Runtime has no CUDA provider at all (a CPU build:
        `maskgen.runtime.gpu_actor_device`)."""
        from maskgen.runtime import gpu_actor_device

        return {"threads": self.threads, "device": gpu_actor_device if self.gpus_per_actor else "cpu"}

    def map_batches_args(self, reserve_cpus: float = 0.0, initial: int | None = None) -> dict:
        """Keyword arguments for `Dataset.map_batches` that run on this pool. The pool starts with
        the actors that fit in what the cluster has free now (less `reserve_cpus`, kept for another
        pool), at least one, so a job does not wait for its pool to grow into a cluster that is
        already there; from there it grows and shrinks with the cluster."""
        import ray

        start = initial if initial is not None else self.initial_actors(reserve_cpus=reserve_cpus)
        strategy = ray.data.ActorPoolStrategy(min_size=self.min_actors, max_size=self.max_actors,
                                              initial_size=max(self.min_actors, min(start, self.max_actors or start)))
        return {"compute": strategy, "num_cpus": self.cpus_per_actor, "num_gpus": self.gpus_per_actor}

    def initial_actors(self, resources: dict | None = None, reserve_cpus: float = 0.0) -> int:
        """Actors that fit in `resources` (default: the cluster's free resources now), within bounds."""
        if resources is None:
            import ray

            resources = ray.available_resources() if ray.is_initialized() else {}
        if self.gpus_per_actor:
            fits = int(float(resources.get("GPU", 0)) // self.gpus_per_actor)
        else:
            free = float(resources.get("CPU", 0)) - reserve_cpus - TASK_CPUS
            fits = int((free + 1e-9) // self.cpus_per_actor) if free > 0 else 0
        return max(self.min_actors, min(fits, self.max_actors or fits))

    def describe(self) -> str:
        device = f"{self.gpus_per_actor} GPU" if self.gpus_per_actor else f"{self.cpus_per_actor:g} CPU"
        most = "as many as the cluster holds" if self.max_actors is None else str(self.max_actors)
        return f"actors: {self.min_actors} to {most}, {device} and {self.threads} thread(s) each"


def plan_pool(workers: int | None = None, gpu: bool = False) -> PoolPlan:
    """The pool of one stage: `workers` caps the actors (default: no cap), `gpu` gives each actor one
    GPU and no CPU. Nothing here looks at the cluster's current resources: Ray Data and the autoscaler
    place and add actors as nodes come and go."""
    if workers is not None and (isinstance(workers, bool) or int(workers) != workers or workers < 1):
        raise ValueError(f"workers must be a whole number of at least 1, got {workers!r}")
    if gpu:
        return PoolPlan(1, workers, 0.0, 1, 1)
    return PoolPlan(1, workers, CPU_PER_ACTOR, 0, 1)


def recognition_pool(workers: int | None = None) -> PoolPlan | None:
    """The recognition pool where the cluster has (or can add) GPUs: one GPU per actor, no CPU, so
    its actors land on GPU nodes and only embed. None on a CPU-only cluster: there the CPU pool's
    actors embed their own batches, which follows the cluster as that pool does; a second pool of
    CPU actors would compete for the same cores with a share fixed in advance (a face's embedding
    costs about as much as its photo's detection, landmarks and mask; more with several models or
    modes)."""
    return plan_pool(workers, gpu=True) if cluster_has_gpus() else None


def unused_recognition_workers(given: int | None, recognition: PoolPlan | None, *, local: bool) -> list[str]:
    """The note of a job given a recognition-pool cap (`--recognition-workers`) where it has no
    recognition pool to cap: the local pool, or a Ray cluster without GPUs."""
    if given is None or (recognition is not None and not local):
        return []
    where = ("in the local pool each process (--workers) also embeds" if local else
             "on this CPU-only cluster the CPU pool's actors (--workers) also embed")
    return [f"--recognition-workers applies where recognition has GPUs: {where}"]


OWN_RAY = False  # whether ensure_ray started the Ray this process uses (it adds no nodes), not joined one
GPU_WAIT_SAID: set = set()  # the Ray sessions (ray_session) told that their GPU work waits for a GPU node


def ray_session() -> tuple[str, str]:
    """The Ray session this process is in: (its node's id, its job's id). The job id alone is not one:
    a Ray stopped and started again in one process (`ray.shutdown()`, `ray.init()`, as in a notebook)
    numbers its first job 01000000 again, but its node is new."""
    import ray

    context = ray.get_runtime_context()
    return context.get_node_id(), context.get_job_id()


def cluster_has_gpus() -> bool:
    """Whether the cluster has, or its autoscaler can add, a GPU (recognition actors then take one
    each). Read from the nodes that exist and from `MFR_GPU_WORKERS=1`, which a cluster whose GPU
    nodes start at zero sets in the job's environment (see cluster.yaml)."""
    import ray

    has_gpus = float(ray.cluster_resources().get("GPU", 0)) > 0
    if os.environ.get("MFR_GPU_WORKERS", "").strip().lower() in ("1", "true", "yes"):
        if OWN_RAY and not has_gpus:  # its recognition actors would wait for a GPU node for ever
            raise ValueError("MFR_GPU_WORKERS=1 says the cluster adds GPU nodes for recognition, but this job runs "
                             "on a Ray of its own on this machine, which adds no nodes and has no GPU: unset "
                             "MFR_GPU_WORKERS, or run the job on the cluster (RAY_ADDRESS, `ray job submit`)")
        session = ray_session()
        if not has_gpus and session not in GPU_WAIT_SAID:  # the wait for the autoscaler is right, and was silent:
            import warnings  # a GPU node that cannot start (quota, capacity, a wrong image) kept it waiting

            GPU_WAIT_SAID.add(session)  # once a job: its pools and its scoring ask in turn
            warnings.warn("MFR_GPU_WORKERS=1: the job's GPU work (recognition, GPU scoring) waits for a GPU node, "
                          "and none has joined yet; if none can start (an account's GPU quota, no capacity, a wrong "
                          "image id), the job waits: see `ray status` and the autoscaler's log", UserWarning,
                          stacklevel=2)
        return True
    return has_gpus


def use_threads(threads: int) -> None:
    """Called first in an actor: sessions created afterwards use `threads` intra-op threads."""
    import cv2

    os.environ["MFR_NUM_THREADS"] = str(max(1, int(threads)))
    cv2.setNumThreads(max(1, int(threads)))


def quiet_ray_data() -> None:
    """Our jobs draw their own progress bar; Ray Data's bars and per-operator progress logs would
    interleave with it (and fill logs under --quiet). A job's error reaches its caller as an exception
    (the command line says its reason: jobs.cli.root_cause); Ray Data would first print it to the
    console with three tracebacks, so its console handler is silenced: its log file (`ray-data.log`
    in the Ray session's logs) keeps everything."""
    import logging

    import ray

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    if hasattr(context, "enable_operator_progress_bars"):
        context.enable_operator_progress_bars = False
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.CRITICAL + 1)


def _local_cluster_running() -> bool:
    """Whether `ray start` left a cluster on this machine that `ray.init()` would join."""
    from pathlib import Path

    return (Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray" / "ray_current_cluster").exists()


def ensure_ray() -> None:
    """Connect to the cluster `ray.init()` finds (RAY_ADDRESS, `ray job submit`), else start one
    in-process. Ray's own INFO lines stay in its logs: the jobs print their own progress and summary."""
    import logging

    import ray

    global OWN_RAY
    if not ray.is_initialized():
        check_ray_address(os.environ.get("RAY_ADDRESS", ""))
        joining = bool(os.environ.get("RAY_ADDRESS")) or _local_cluster_running()
        options = {} if joining else own_ray_options()
        OWN_RAY = not joining
        with dropping_stderr_lines(RAY_LOG_LEVEL_NOTICE):
            ray.init(ignore_reinit_error=True, log_to_driver=False, logging_level="ERROR", **options)
    quiet_ray_data()
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if TERM_AS_INTERRUPT:
        interrupt_on_sigterm()


RAY_ADDRESS_WAIT = 10.0  # seconds a RAY_ADDRESS may take to answer (a head still starting)


def check_ray_address(address: str, timeout: float | None = None) -> None:
    """A RAY_ADDRESS of `host:port` (or `ray://host:port`) that nothing answers is refused at once:
    `ray.init` would wait on it for minutes, printing only its own connection warnings. `auto`,
    `local` and other forms are left to Ray."""
    import socket

    if re.match(r"https?://", address.strip(), flags=re.IGNORECASE):  # Ray's own words were cut to their first line
        raise RuntimeError(f"RAY_ADDRESS={address} is an HTTP address, the dashboard's, which `ray job submit "
                           "--address` takes; a job run here joins a cluster at its head's address, HOST:PORT "
                           "(`ray start --head --port`, 6379 by default), e.g. RAY_ADDRESS=127.0.0.1:6379; or unset "
                           "RAY_ADDRESS to run on this machine")
    match = re.fullmatch(r"(?:ray://)?\[?([^\s/\[\]]+?)\]?:(\d+)", address.strip())
    if not match:
        return
    host, port = match.group(1), int(match.group(2))
    timeout = RAY_ADDRESS_WAIT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while True:  # a head that is still starting answers within a few seconds
        try:
            with socket.create_connection((host, port), timeout=min(2.0, timeout)):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"RAY_ADDRESS={address}: no Ray cluster answers at {host}:{port} "
                                   f"({exc.strerror or exc}); start one there, or unset RAY_ADDRESS to run on "
                                   "this machine") from None
            time.sleep(0.5)


# What Ray's core worker writes to stderr when it starts with RAY_BACKEND_LOG_LEVEL set (as `--quiet`
# sets it), whatever the level: the one line a quiet job would otherwise print.
RAY_LOG_LEVEL_NOTICE = re.compile(r"logging\.cc:\d+: Set ray log level from environment variable")


@contextmanager
def dropping_stderr_lines(pattern: re.Pattern):
    """Runs the block with file descriptor 2 captured, then writes to stderr what it printed less the
    lines `pattern` finds. At the descriptor, not `sys.stderr`: Ray's C++ core writes there directly.
    A temporary file, not a pipe: processes started in the block may keep the descriptor."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not pattern.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


# What Ray 2.60's core worker writes to stderr, at error level, as each Ray Data pool starts: Ray Data
# hands its actors their function by object reference and lets them restart, which a job needs (a
# killed worker's actor comes back), and Ray warns of any actor that does both (ray-project/ray#53727).
# It was the first line of every job on Ray, `make demo` included, and read as an error.
RAY_ACTOR_RESTART_NOTICE = (r"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object "
                            r"store and max_restarts > 0")

# The filter `filtering_stderr` runs: a process of its own (standard library only), so that what the
# job writes just before it dies (Ray's core exits on a lost head with abort() or _exit) is still
# copied: a thread of the job's died with it, and the job's last words with it.
_STDERR_FILTER = r"""
import os, re, sys
pattern, pending = re.compile(sys.argv[1].encode()), b""
def write(data):
    while data:
        data = data[os.write(1, data):]
try:
    while chunk := os.read(0, 65536):
        *lines, pending = (pending + chunk).split(b"\n")
        out = b"".join(line + b"\n" for line in lines if not pattern.search(line))
        if pending and not pending.startswith(b"["):
            out, pending = out + pending, b""
        write(out)
    write(pending)
except OSError:
    pass
"""


@contextmanager
def filtering_stderr(pattern: str):
    """While the block runs, what this process writes to file descriptor 2 (Ray's C++ core writes
    there directly) goes through a pipe to a small process that copies it to the real stderr at once,
    less the lines `pattern` (a regular expression) finds. Text without its newline yet passes as it
    comes (a progress bar's `\r` updates), unless it begins as Ray's log lines do (`[`): those wait for
    the rest of their line. The copier has a session of its own (Ctrl-C and a group's SIGTERM are the
    job's to take) and ends when the pipe closes: when the block ends, or the job dies."""
    import subprocess

    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    try:
        copier = subprocess.Popen([sys.executable, "-I", "-S", "-c", _STDERR_FILTER, pattern], stdin=read_end,
                                  stdout=saved, stderr=saved, start_new_session=True)
    except (OSError, ValueError):  # no process to spare (or no interpreter to name): stderr as it is
        copier = None
    os.close(read_end)
    if copier is not None:
        os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last write end closes: the copier copies what is left and ends
        os.close(saved)
        if copier is not None:
            try:
                copier.wait(timeout=10)  # before this process writes to stderr again: lines stay in order
            except subprocess.TimeoutExpired:  # a process started in the block holds the pipe: it copies on
                pass


def own_ray_options(cpus: int | None = None) -> dict:
    """`ray.init` options of the Ray a job starts for itself (no cluster to join).

    - No dashboard: its processes cost a small machine seconds of start-up and CPU during the job, and
      the job prints its own progress.
    - `num_workers_soft_limit`: Ray kills a task worker that has been idle for a second whenever the
      node's workers outnumber its CPUs, and actors count. A job's pool alone is about one actor per
      CPU, beside Ray Data's own actors, so every read or shard-writing task that came a second after
      the last one started a new Python process and imported Ray Data again (11 processes in one
      20,000-image job on 2 cores, each about a second of CPU). Idle task workers are kept while the
      node has at most 2 x CPUs + 8 workers; they end with this Ray when the job does. The price is
      memory: a kept worker is a process with Ray Data imported (350 to 700 MiB more at peak in
      bench/bench_jobs.py's in-process jobs on 2 cores).
    A cluster started with `ray start` takes its own settings (`RAY_num_workers_soft_limit`, see
    cluster.yaml)."""
    return {"include_dashboard": False, "_system_config": {"num_workers_soft_limit": worker_soft_limit(cpus)}}


def worker_soft_limit(cpus: int | None = None) -> int:
    """Ray's `num_workers_soft_limit` for a node of `cpus` (default: this machine's) that runs a
    job's pool: 2 x CPUs + 8, room for the pool's actors, Ray Data's own and the task workers kept
    idle (see own_ray_options; cluster.yaml's worker nodes compute the same in shell)."""
    return 2 * (cpus or os.cpu_count() or 1) + 8


TERM_AS_INTERRUPT = False


def interrupt_on_sigterm() -> None:
    """SIGTERM (what Kubernetes, Slurm and `timeout` send) takes the Ctrl-C path: finished batches are
    kept, the lease is released, exit 130. Installed again after `ray.init`, which sets its own."""
    import signal
    import threading

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
