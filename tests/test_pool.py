"""Actor-pool sizing: pure arithmetic over the cluster's resources."""

import pytest

from jobs.pool import RESERVED_CPUS, plan_pool


@pytest.mark.parametrize("cpus", [1, 2, 3, 4, 16, 64, 96.0])
def test_cpu_pools_leave_room_for_ray_data(cpus):
    plan = plan_pool(resources={"CPU": cpus})
    assert plan.actors == int(cpus) and plan.gpus_per_actor == 0 and plan.threads == 1
    assert plan.actors * plan.cpus_per_actor <= cpus - RESERVED_CPUS
    assert 0 < plan.cpus_per_actor <= 1


def test_two_cpus_run_two_actors_of_three_quarters():
    plan = plan_pool(resources={"CPU": 2.0})
    assert (plan.actors, plan.cpus_per_actor) == (2, 0.75)
    assert plan.describe() == "2 actor(s) x 0.75 CPU, 1 thread(s) each"


def test_workers_and_tasks_cap_the_pool():
    assert plan_pool(1, resources={"CPU": 2}).actors == 1
    assert plan_pool(1, resources={"CPU": 2}).cpus_per_actor == 1.0
    assert plan_pool(resources={"CPU": 16}, tasks=3).actors == 3
    oversubscribed = plan_pool(4, resources={"CPU": 2})  # asked for: four actors share 1.5 CPUs
    assert oversubscribed.actors == 4 and oversubscribed.cpus_per_actor == 0.37


def test_gpu_pools_take_one_gpu_per_actor():
    plan = plan_pool(use_gpus=True, resources={"CPU": 8, "GPU": 4})
    assert (plan.actors, plan.gpus_per_actor, plan.cpus_per_actor) == (4, 1, 0)
    assert plan_pool(2, use_gpus=True, resources={"CPU": 8, "GPU": 4}).actors == 2
    assert plan_pool(use_gpus=True, resources={"CPU": 8}).gpus_per_actor == 0  # no GPU: CPU actors


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="workers must be at least 1"):
        plan_pool(0, resources={"CPU": 2})
    with pytest.raises(RuntimeError, match="has 0 CPU"):
        plan_pool(resources={})
