"""``service.jobs.dispatch``: one table from job kind to queue to task, shared by the API's
light sending app and the worker's app; messages land where the worker listens.

Real broker: the embedded filesystem transport under a temporary state dir (what `make run`
uses when REDIS_URL is unset), read back through the dispatcher's own queue depths.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.config import Settings
from service.jobs.dispatch import QUEUES, ROUTES, TASK_QUEUES, Dispatcher, make_app, settings_of
from service.jobs.schemas import JobKind
from service.worker.celery_app import make_celery


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", store_dir=tmp_path / "models")


@pytest.fixture
def dispatcher(settings: Settings) -> Iterator[Dispatcher]:
    app = make_app(settings)
    yield Dispatcher(app)
    app.close()


def test_every_kind_has_a_route_and_every_routed_task_runs_in_the_worker(
    settings: Settings,
) -> None:
    assert set(ROUTES) == set(JobKind)
    assert set(TASK_QUEUES.values()) == set(QUEUES)
    worker = make_celery(settings)
    registered = {name for name in worker.tasks if name.startswith("medrobust.")}
    assert registered == set(TASK_QUEUES)  # nothing sent that no worker would run, and back
    assert worker.conf.task_routes == make_app(settings).conf.task_routes
    assert settings_of(worker) is settings


def test_the_sending_app_registers_no_task(settings: Settings) -> None:
    assert not {name for name in make_app(settings).tasks if name.startswith("medrobust.")}


def test_each_kind_lands_in_its_queue(dispatcher: Dispatcher) -> None:
    expected = dict.fromkeys(QUEUES, 0)
    assert dispatcher.queue_depths() == expected
    for number, kind in enumerate(JobKind):
        dispatcher.job(f"job-{number}", kind.value)
        expected[ROUTES[kind].queue] += 1
        assert dispatcher.queue_depths() == expected, kind
    dispatcher.shard("job-1", 0, 0, 8)
    expected[TASK_QUEUES["medrobust.jobs.evaluate_shard"]] += 1
    assert dispatcher.queue_depths() == expected
