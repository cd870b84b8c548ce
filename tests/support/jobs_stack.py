"""Real parts for the job tests: a Celery worker and a uvicorn API as subprocesses.

``Stack`` starts both with their state (job database, embedded broker, reports) and model store
in a temporary folder, pointed at Redis database 15 (or at no Redis: the embedded filesystem
broker), waits until they are ready and stops them (their whole process groups) at the end.
:func:`running_stack` is that whole life as one ``with`` block, for a fixture to ``yield`` from.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.config import Settings
from service.run import api_command, worker_command
from tests.support.images import make_folder_dataset
from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/15"
TOKEN = "jobs-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TERMINAL = {"succeeded", "failed", "cancelled"}
START_TIMEOUT_S = 240


def require_redis(url: str = REDIS_URL) -> None:
    """Fail (not skip) with the fix when the Redis these tests need does not answer."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis at {url} does not answer ({exc}); start one with scripts/ensure-redis.sh "
            "(`make test` runs it first)",
            pytrace=False,
        )


def flush_redis(url: str = REDIS_URL) -> None:
    import redis

    redis.Redis.from_url(url, socket_connect_timeout=1).flushdb()


def training_spec(name: str, data: Path, **overrides: Any) -> dict[str, Any]:
    """A TrainingSpec (JSON) for a 32-px ResNet-50 on the folder dataset."""
    train = {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, **overrides.pop("train", {})}
    return {
        "name": name,
        "dataset": {"kind": "folders", "path": str(data)},
        "preprocess": {"input_size": 32},
        "train": train,
        **overrides,
    }


def _clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("MEDROBUST_")
    }
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    return env


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen | None, grace_s: float = 15.0) -> None:
    """SIGTERM the process group we started, then SIGKILL what is left of it."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@dataclass
class Stack:
    """A worker and an API on one state folder; both restartable."""

    root: Path
    redis_url: str | None
    supervised: bool = False  # one `python -m service` (what `make run` starts) runs both
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    worker: subprocess.Popen | None = None
    api: subprocess.Popen | None = None
    supervisor: subprocess.Popen | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.env = _clean_env()
        self.env.update(
            MEDROBUST_STATE_DIR=str(self.root / "state"),
            MEDROBUST_STORE_DIR=str(self.root / "models"),
            MEDROBUST_DATA_DIR=str(self.root / "data"),
            MEDROBUST_API_TOKENS=json.dumps({TOKEN: ["jobs", "predict", "explain"]}),
            MEDROBUST_EVALUATION_SHARDS="2",
        )
        if self.redis_url:
            self.env["REDIS_URL"] = self.redis_url
        self.port = free_port()
        self.env.update(MEDROBUST_HOST="127.0.0.1", MEDROBUST_PORT=str(self.port))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def worker_log(self) -> Path:
        return self.root / "worker.log"

    @property
    def api_log(self) -> Path:
        return self.worker_log if self.supervised else self.root / "api.log"

    def logs(self) -> str:
        return (
            f"--- worker log ---\n{_tail(self.worker_log)}\n--- api log ---\n{_tail(self.api_log)}"
        )

    # ---- processes --------------------------------------------------------------------------

    def _settings(self) -> Settings:
        """The settings the children read from ``env``, for building the same commands as
        ``make run`` does."""
        return Settings(host="127.0.0.1", port=self.port, redis_url=self.redis_url)

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen:
        handle = log.open("a")
        try:
            return subprocess.Popen(
                args,
                cwd=REPO,
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: we stop all of it
            )
        finally:
            handle.close()

    def start_worker(self) -> None:
        self.starts += 1
        self.worker_log.write_text("")
        node = f"jobs-test-{uuid.uuid4().hex[:8]}@%h"
        command = worker_command(self._settings(), node_name=node)
        if "--without-mingle" not in command:  # the tests' workers never need to sync state
            command += ["--without-mingle", "--without-gossip"]
        self.worker = self._spawn(command, self.worker_log)

    def start_api(self) -> None:
        self.api = self._spawn(api_command(self._settings()), self.api_log)

    def start(self) -> None:
        """Worker and API (``supervised``: ``python -m service``), ready; stopped if they fail
        to come up, so a failed start leaves no process behind."""
        try:
            if self.supervised:
                self.start_supervised()
            else:
                self.start_worker()
                self.start_api()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def start_supervised(self) -> None:
        """``python -m service``: the API and a worker as its children, one log."""
        self.worker_log.write_text("")
        self.supervisor = self._spawn([sys.executable, "-m", "service"], self.worker_log)

    def interrupt(self, timeout_s: float = 60) -> int:
        """Ctrl-C to ``python -m service`` (its process only); returns its exit status."""
        assert self.supervisor is not None
        self.supervisor.send_signal(signal.SIGINT)
        return self.supervisor.wait(timeout_s)

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until the API answers /healthz and a worker pool process has reported its device."""
        deadline = time.monotonic() + timeout_s
        api_up = worker_up = False
        supervised = self.supervisor is not None
        while time.monotonic() < deadline:
            processes = [("worker", self.worker), ("api", self.api), ("service", self.supervisor)]
            for name, process in processes:
                if process is not None and process.poll() is not None:
                    raise AssertionError(
                        f"the {name} exited with {process.returncode}\n{self.logs()}"
                    )
            if not api_up and (self.api is not None or supervised):
                with contextlib.suppress(httpx.HTTPError):
                    api_up = httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            if not worker_up and (self.worker is not None or supervised):
                text = self.worker_log.read_text(errors="replace")
                worker_up = "[medrobust worker] ready" in text and bool(
                    re.search(r"pool process \d+: TensorFlow", text)
                )
            if (api_up or not (self.api or supervised)) and (
                worker_up or not (self.worker or supervised)
            ):
                return
            time.sleep(0.5)
        raise AssertionError(f"the stack did not come up in {timeout_s} s\n{self.logs()}")

    def stop_worker(self) -> None:
        _stop(self.worker)
        self.worker = None

    def stop_api(self) -> None:
        _stop(self.api)
        self.api = None

    def restart_api(self) -> None:
        self.stop_api()
        self.start_api()
        self.wait_ready()

    def stop(self) -> None:
        self.stop_api()
        self.stop_worker()
        _stop(self.supervisor)
        self.supervisor = None

    # ---- HTTP ---------------------------------------------------------------------------

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=AUTH, timeout=60, **kwargs)

    def job(self, job_id: str) -> dict[str, Any]:
        with self.client() as client:
            response = client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_job(
        self,
        job_id: str,
        until: Callable[[dict[str, Any]], bool] = lambda job: job["state"] in TERMINAL,
        timeout_s: float = 300,
        poll_s: float = 0.25,
        seen: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Poll the job until ``until(job)``; ``seen`` collects every observation."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if seen is not None:
                seen.append(job)
            if until(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job {job_id} still {job['state']} ({job['progress']}%) after {timeout_s} s: "
                    f"{json.dumps(job, default=str)[:2000]}\n{self.logs()}"
                )
            for process in (self.worker, self.supervisor):
                if process is not None and process.poll() is not None:
                    raise AssertionError(f"the worker exited\n{self.logs()}")
            time.sleep(poll_s)


def start_stack(root: Path, redis_url: str | None, supervised: bool = False) -> Stack:
    """Make the dataset, start worker and API (or ``python -m service``), wait for both."""
    if redis_url:
        require_redis(redis_url)
        flush_redis(redis_url)
    make_folder_dataset(root / "data" / "tiny")
    stack = Stack(root, redis_url, supervised)
    stack.start()
    return stack


@contextlib.contextmanager
def running_stack(
    root: Path, redis_url: str | None, env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """A worker and an API on ``root`` (its ``data/`` and ``models/`` as the caller made them),
    with ``env`` over the default settings, ready inside the block and stopped after it. With
    ``redis_url``, that Redis must answer and its database is flushed before and after, so no
    other test's jobs are seen nor left behind."""
    if redis_url:
        require_redis(redis_url)
        flush_redis(redis_url)
    stack = Stack(root, redis_url)
    stack.env.update(env or {})
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        if redis_url:
            flush_redis(redis_url)


def pool_pid(job: dict[str, Any]) -> int:
    """The pid of the pool process holding a running job (``host:pid``)."""
    holder = job["worker"]
    assert holder and holder.rpartition(":")[0] == socket.gethostname(), holder
    return int(holder.rpartition(":")[2])
