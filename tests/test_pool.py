"""Actor pools that follow the cluster: nothing is sized from the resources present at submit time."""

import pytest

from jobs.pool import CPU_PER_ACTOR, TASK_CPUS, plan_pool


def test_cpu_pools_autoscale_from_one_actor_and_leave_room_for_ray_datas_tasks():
    plan = plan_pool()
    assert (plan.min_actors, plan.max_actors, plan.gpus_per_actor, plan.threads) == (1, None, 0, 1)
    # on every node size, the actors that fit leave at least one small task's CPU free
    for cpus in (1, 2, 3, 4, 8, 16, 64, 96):
        actors = int(cpus // plan.cpus_per_actor + 1e-9)
        assert actors >= 1 and cpus - actors * plan.cpus_per_actor >= TASK_CPUS - 1e-9, cpus
    assert plan.cpus_per_actor == CPU_PER_ACTOR
    assert plan.describe() == "actors: 1 to as many as the cluster holds, 0.9 CPU and 1 thread(s) each"


def test_workers_cap_the_pool_and_gpu_actors_take_a_gpu_and_no_cpu():
    assert plan_pool(3).max_actors == 3
    gpu = plan_pool(2, gpu=True)
    assert (gpu.min_actors, gpu.max_actors, gpu.gpus_per_actor, gpu.cpus_per_actor) == (1, 2, 1, 0.0)


def test_cpu_actors_run_on_the_cpu_and_gpu_actors_on_cuda_where_their_onnx_runtime_has_it(monkeypatch):
    """With "auto" a CPU actor opened CUDA on any GPU of its node (it reserved none), and a GPU actor whose
    CUDA could not start ran on the CPU, saying so only in its worker's log."""
    import onnxruntime

    from maskgen.runtime import gpu_actor_device, resolve_device

    assert plan_pool(2).actor_kwargs == {"threads": 1, "device": "cpu"}
    device = plan_pool(2, gpu=True).actor_kwargs["device"]
    assert device is gpu_actor_device  # decided on the actor's node, not the driver's
    assert resolve_device(device) == "cpu" and resolve_device("auto") == "auto"  # a CPU build of ONNX Runtime
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert resolve_device(device) == "cuda"  # onnxruntime-gpu: CUDA must start, or the actor fails saying why


def test_the_pool_is_an_autoscaling_actor_pool():
    import ray

    args = plan_pool(4).map_batches_args()
    strategy = args["compute"]
    assert isinstance(strategy, ray.data.ActorPoolStrategy)
    assert (strategy.min_size, strategy.max_size) == (1, 4) and args["num_cpus"] == CPU_PER_ACTOR
    assert plan_pool().map_batches_args()["compute"].max_size == float("inf")


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "2"])
def test_bad_worker_counts_are_refused(bad):
    with pytest.raises(ValueError, match="workers must be a whole number of at least 1"):
        plan_pool(bad)


def test_a_pool_starts_with_the_actors_that_fit_now_and_at_least_one():
    plan = plan_pool()
    assert plan.initial_actors({"CPU": 2.0}) == 2   # 2 x 0.9, and 0.2 left for the small tasks
    assert plan.initial_actors({"CPU": 2.0}, reserve_cpus=0.1) == 2  # beside one light recognition actor
    assert plan.initial_actors({"CPU": 2.0}, reserve_cpus=0.9) == 1
    assert plan.initial_actors({"CPU": 16.0}) == 17 and plan_pool(4).initial_actors({"CPU": 16.0}) == 4
    assert plan.initial_actors({}) == 1              # a head with no CPUs: one actor, waiting for a node
    assert plan_pool(gpu=True).initial_actors({"CPU": 8, "GPU": 2}) == 2


def test_the_ray_a_job_starts_keeps_its_idle_task_workers():
    """With a pool's actors on every CPU (Ray counts them as workers), Ray's default ends a task worker
    that has been idle for a second, so each read or shard-writing task after a pause started a new
    Python process and imported Ray Data again. The Ray a job starts for itself keeps them. A job on a
    Ray started again in the same process finds its own progress board."""
    import json
    import os
    import secrets
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from conftest import ROOT

    script = """
import json, os, time
import psutil, ray
from jobs.pool import CPU_PER_ACTOR, TASK_CPUS, ensure_ray
ensure_ray()

@ray.remote(num_cpus=CPU_PER_ACTOR)
class Actor:
    def pid(self):
        return os.getpid()

cpus = ray.cluster_resources()["CPU"]
actors = [Actor.remote() for _ in range(int((cpus - TASK_CPUS) // CPU_PER_ACTOR))]  # as a job's pool
ray.get([a.pid.remote() for a in actors])

@ray.remote(num_cpus=TASK_CPUS)
def task():
    return os.getpid()

pid = ray.get(task.remote())
time.sleep(4)  # Ray's idle threshold is 1 s, checked every second
alive = psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
# a Ray of the job's own adds no GPU node: MFR_GPU_WORKERS=1 left recognition actors waiting for ever
import jobs.pool
os.environ["MFR_GPU_WORKERS"] = "1"
try:
    jobs.pool.cluster_has_gpus()
    refused = None
except ValueError as exc:
    refused = str(exc)
# Ray stopped and started again in this process (as in a notebook): the job's progress board of the
# first Ray, under the same job id (01000000), aborted the process when the next job called it
from jobs.sink import start_progress
ray.get(start_progress().board.open_jobs.remote())
ray.shutdown()
ensure_ray()
again = ray.get(start_progress().board.open_jobs.remote())
print("RESULT " + json.dumps({"actors": len(actors), "alive": alive, "own": jobs.pool.OWN_RAY, "refused": refused,
                              "again": again}))
"""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    temp = Path("/tmp") / f"mfr-ray-{secrets.token_hex(3)}"  # short: Ray's socket paths live under it
    env.update(RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT), RAY_TMPDIR=str(temp))
    try:
        done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-2000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["actors"] >= 1 and result["alive"], result
    assert result["again"] == 0, result
    assert result["own"] and result["refused"].startswith("MFR_GPU_WORKERS=1 says the cluster adds GPU nodes for "
                                                          "recognition, but this job runs on a Ray of its own")


def test_gpu_workers_to_come_are_believed_on_a_cluster_the_job_joined(ray_runtime, monkeypatch):
    import jobs.pool

    monkeypatch.setattr(jobs.pool, "OWN_RAY", False)
    monkeypatch.setattr(jobs.pool, "GPU_WAIT_SAID", set())
    monkeypatch.setenv("MFR_GPU_WORKERS", "1")
    with pytest.warns(UserWarning, match="GPU work .* waits for a GPU node, and none has joined yet"):
        assert jobs.pool.cluster_has_gpus()  # the wait is right, and it was silent
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert jobs.pool.cluster_has_gpus()  # said once a job, though its pools and its scoring ask in turn
    monkeypatch.delenv("MFR_GPU_WORKERS")
    assert not jobs.pool.cluster_has_gpus()
