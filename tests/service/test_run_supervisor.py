"""``python -m service`` leaves nothing behind, even when the supervisor itself is SIGKILLed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's prctl"
)]  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = (
        Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}").exists() else ""
    )
    return state != "Z"  # a zombie has exited and waits only to be reaped


def test_worker_stops_when_supervisor_is_killed(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MEDROBUST_STATE_DIR": str(tmp_path / "state"),
        "MEDROBUST_STORE_DIR": str(tmp_path / "models"),
    }
    env.pop("REDIS_URL", None)  # the embedded filesystem broker: no server involved
    log = tmp_path / "supervisor.log"
    with log.open("wb") as out:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "service", "--no-api"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        match = None
        while match is None and time.monotonic() < deadline:
            match = re.search(r"started worker \(pid (\d+)\)", log.read_text())
            time.sleep(0.2)
        assert match, log.read_text()
        worker = int(match.group(1))
        while "ready." not in log.read_text() and time.monotonic() < deadline + 120:
            time.sleep(0.5)  # Celery up, with its pool processes forked
        assert "ready." in log.read_text(), log.read_text()
        children = Path(f"/proc/{worker}/task/{worker}/children").read_text().split()
        processes = [worker, *map(int, children)]
        assert len(processes) >= 2 and all(map(_alive, processes))
        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.wait(10)
        deadline = time.monotonic() + 60
        while any(map(_alive, processes)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(_alive, processes)), "the worker outlived its supervisor"
    finally:
        if supervisor.poll() is None:
            os.killpg(supervisor.pid, signal.SIGKILL)
