"""``raydet.engine.fitting.end_controller`` on the session's Ray: a controller that failed is killed, and the
placement groups it created go with it (Ray keeps a group for its job's lifetime, and Ray Train's cleaner
removes only the one registered last)."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from raydet.engine.fitting import StaleGroupRemover, end_controller, placement_groups_created_by


def creator_class(ray):
    from ray.util.placement_group import placement_group

    @ray.remote(num_cpus=0)
    class Creator:  # as Ray Train's controller creates its worker groups' placement groups
        def create(self, cpus: float) -> str:
            group = placement_group([{"CPU": cpus}])
            ray.get(group.ready())
            return group.id.hex()

    return Creator


@pytest.mark.timeout(120)
def test_ending_a_controller_removes_the_placement_groups_it_created(ray_session):
    ray = ray_session
    from ray.util.placement_group import placement_group

    Creator = creator_class(ray)
    other = placement_group([{"CPU": 0.01}])  # this process's: not the controller's
    ray.get(other.ready())
    trainer = SimpleNamespace(controller=Creator.remote())
    actor_id = trainer.controller._actor_id.hex()
    created = [ray.get(trainer.controller.create.remote(cpus)) for cpus in (0.01, 0.02)]
    assert sorted(group.id.hex() for group in placement_groups_created_by(actor_id)) == sorted(created)
    end_controller(trainer)
    table = ray.util.placement_group_table()
    assert [table[group]["state"] for group in created] == ["REMOVED", "REMOVED"]
    assert table[other.id.hex()]["state"] == "CREATED" and trainer.controller is None
    ray.util.remove_placement_group(other)


@pytest.mark.timeout(120)
def test_while_a_fit_runs_its_controllers_older_placement_groups_are_removed(ray_session):
    """The chaos run's hang: a group Ray Train's controller lost track of held what its next group needed."""
    ray = ray_session
    trainer = SimpleNamespace(controller=creator_class(ray).remote())
    lost, current = (ray.get(trainer.controller.create.remote(cpus)) for cpus in (0.01, 0.02))
    remover = StaleGroupRemover(trainer, interval_s=0.2)
    remover.start()
    try:
        deadline = time.time() + 30
        while not remover.removed and time.time() < deadline:
            time.sleep(0.2)
    finally:
        remover.stop()
    table = ray.util.placement_group_table()
    assert remover.removed == [lost]
    assert (table[lost]["state"], table[current]["state"]) == ("REMOVED", "CREATED")
    end_controller(trainer)
