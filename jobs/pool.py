"""Actor-pool sizing from the resources the Ray cluster actually has.

One CPU actor per CPU core, each asking for slightly less than a core, so that `RESERVED_CPUS` stay
free for Ray Data's own tasks: a pool that takes every CPU leaves them unschedulable and the job
hangs (seen on 2 cores with two 1-CPU actors). On 2 CPUs that is two actors of 0.75 CPU; on 64 CPUs,
64 actors of 0.99. Each CPU actor runs its models on one intra-op thread: the pool scales by
processes, which on CPUs beats threads inside one model call, and actors never fight over cores.
GPU actors take one GPU each and no CPU reservation, and their number is the cluster's GPU count.

`map_in_pool` is the one way the jobs run work on such a pool.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

RESERVED_CPUS = 0.5


@dataclass(frozen=True)
class PoolPlan:
    actors: int
    cpus_per_actor: float
    gpus_per_actor: int
    threads: int

    def map_batches_args(self) -> dict:
        """Keyword arguments for `Dataset.map_batches` that start this pool (fixed size: every actor
        loads its models once, up front, rather than while the job runs)."""
        import ray

        return {"compute": ray.data.ActorPoolStrategy(size=self.actors),
                "num_cpus": self.cpus_per_actor, "num_gpus": self.gpus_per_actor}

    def describe(self) -> str:
        device = f"{self.gpus_per_actor} GPU" if self.gpus_per_actor else f"{self.cpus_per_actor:g} CPU"
        return f"{self.actors} actor(s) x {device}, {self.threads} thread(s) each"


def plan_pool(workers: int | None = None, use_gpus: bool = False, resources: dict | None = None,
              tasks: int | None = None) -> PoolPlan:
    """How many actors, and what each reserves. `resources` defaults to `ray.cluster_resources()`;
    `workers` caps the actor count (or, past one per core, oversubscribes on purpose); `tasks` (the
    job's batches) caps it too, so a small job does not start actors that would get no work."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if resources is None:
        import ray

        resources = ray.cluster_resources()
    cpus = float(resources.get("CPU", 0))
    gpus = int(resources.get("GPU", 0))
    if tasks is not None and tasks < 1:
        raise ValueError(f"tasks must be at least 1, got {tasks}")
    if use_gpus and gpus:
        actors = min(workers or gpus, gpus, tasks or gpus)
        return PoolPlan(actors=actors, cpus_per_actor=0, gpus_per_actor=1, threads=1)
    if cpus <= RESERVED_CPUS:
        raise RuntimeError(f"the Ray cluster has {cpus:g} CPU(s); at least 1 is needed to run a job")
    actors = min(workers or max(1, math.floor(cpus)), tasks or math.inf)
    per_actor = min(1.0, (cpus - RESERVED_CPUS) / actors)
    per_actor = math.floor(per_actor * 100) / 100  # two decimals, never rounding up past the budget
    return PoolPlan(actors=actors, cpus_per_actor=per_actor, gpus_per_actor=0, threads=1)


def use_threads(threads: int) -> None:
    """Called first in an actor: sessions created afterwards use `threads` intra-op threads."""
    import cv2

    os.environ["MFR_NUM_THREADS"] = str(max(1, int(threads)))
    cv2.setNumThreads(max(1, int(threads)))


def quiet_ray_data() -> None:
    """Our jobs draw their own progress bar; Ray Data's bars and per-operator progress logs would
    interleave with it (and fill logs under --quiet)."""
    import ray

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    if hasattr(context, "enable_operator_progress_bars"):
        context.enable_operator_progress_bars = False


def map_in_pool(rows: list[dict], worker, args: tuple, *, batch_size: int, workers: int | None = None,
                use_gpus: bool = False, batch_format: str = "numpy"):
    """Batches of `worker(*args, threads=...)(batch)` over `rows`, computed on an actor pool sized by
    `plan_pool` on the cluster `ray.init()` finds (in-process when none is running), as they finish."""
    import ray

    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, log_to_driver=False)
    blocks = math.ceil(len(rows) / batch_size)
    plan = plan_pool(workers, use_gpus=use_gpus, tasks=blocks)
    quiet_ray_data()
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    ds = ds.map_batches(worker, fn_constructor_args=args, fn_constructor_kwargs={"threads": plan.threads},
                        batch_size=batch_size, batch_format="numpy", **plan.map_batches_args())
    return ds.iter_batches(batch_size=None, batch_format=batch_format)
