"""``make run`` / ``python -m service``: the API (uvicorn) and one Celery worker as children.

Needs no server: with ``REDIS_URL`` unset the broker is a folder under ``state_dir`` and the job
database a SQLite file there (set ``REDIS_URL`` / ``DATABASE_URL`` to use Redis / PostgreSQL).
Ctrl-C (or SIGTERM) stops both: the API gracefully, the worker with a cold shutdown, which hands a
running job back to the broker so the next start resumes it from its checkpoint. A second Ctrl-C
kills both at once. If either child dies, the other is stopped and the exit status says so.
On Linux the children also stop if the supervisor itself is killed (even by SIGKILL), so no
worker is left behind consuming jobs for a service that is gone.
With ``MEDROBUST_DIMSE_ENABLED=true`` a third child, the DIMSE listener
(``python -m service.pacs.listener``), runs beside them and stops with them.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from sqlalchemy.engine import make_url

from service.config import Settings, get_settings
from service.jobs.dispatch import QUEUES
from service.jobs.options import JobOptions


def api_command(settings: Settings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "service.api.app:create_app",
        "--factory",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
    ]


def worker_command(
    settings: Settings, concurrency: int = 1, node_name: str = "medrobust@%h"
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "service.worker.celery_app",
        "worker",
        "-Q",
        ",".join(QUEUES),
        "-c",
        str(concurrency),
        "--pool",
        "prefork",
        "-l",
        "INFO",
        "-n",
        node_name,
    ]
    if not settings.redis_url:  # no broadcast over the filesystem broker
        command += ["--without-mingle", "--without-gossip"]
    return command


def dimse_command() -> list[str]:
    """The DIMSE "AI node" (``service/pacs/listener.py``); it reads the same settings."""
    return [sys.executable, "-m", "service.pacs.listener"]


def child_environment(settings: Settings) -> dict[str, str]:
    """The children read the same settings; the data root is also what ``training/`` reads."""
    env = dict(os.environ)
    if settings.data_dir is not None:
        env["MEDROBUST_DATA_DIR"] = str(settings.data_dir)
    return env


def describe(settings: Settings) -> list[str]:
    options = JobOptions.from_settings(settings)
    database = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
    if settings.redis_url:
        broker = make_url(settings.redis_url).render_as_string(hide_password=True)
    else:
        broker = f"embedded (filesystem under {options.broker_dir})"
    lines = [
        f"API       http://{settings.host}:{settings.port}  (docs: /docs)",
        f"broker    {broker}",
        f"jobs DB   {database}",
        f"models    {options.store_dir}",
        f"state     {options.state_dir}",
    ]
    if settings.dimse_enabled:
        destination = (
            f"{settings.dimse_destination_ae}@{settings.dimse_destination_host}:"
            f"{settings.dimse_destination_port}"
        )
        lines.append(
            f"DIMSE     {settings.dimse_ae_title}@{settings.dimse_host}:{settings.dimse_port} "
            f"(model {settings.dimse_model}, results to {destination})"
        )
    return lines


PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def _stop_signal(name: str) -> int:
    """The worker: cold shutdown (running tasks are cancelled and requeued, not awaited)."""
    return signal.SIGQUIT if name == "worker" else signal.SIGTERM


def _stop_with_parent(sig: int) -> None:
    """In the child before exec: ask Linux to send ``sig`` when the supervisor dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig))


class Supervisor:
    """Starts the children in their own process groups and stops them together."""

    def __init__(self, commands: dict[str, list[str]], env: dict[str, str], grace_s: float):
        self.commands, self.env, self.grace_s = commands, env, grace_s
        self.children: dict[str, subprocess.Popen] = {}
        self.stopping = False
        self.forced = False

    def start(self) -> None:
        for name, command in self.commands.items():
            # own session: a terminal's Ctrl-C reaches only us, and we decide what each child gets
            self.children[name] = subprocess.Popen(
                command,
                env=self.env,
                start_new_session=True,
                preexec_fn=functools.partial(_stop_with_parent, _stop_signal(name)),
            )
            print(f"[medrobust] started {name} (pid {self.children[name].pid})", flush=True)

    def _signal(self, name: str, sig: int) -> None:
        child = self.children[name]
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, sig)

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping:
            self.forced = True
        self.stopping = True

    def stop(self) -> None:
        for name in self.children:
            self._signal(name, _stop_signal(name))
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline and not self.forced:
            if all(child.poll() is not None for child in self.children.values()):
                return
            time.sleep(0.2)
        for name in self.children:
            self._signal(name, signal.SIGKILL)
        for child in self.children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5)

    def run(self) -> int:
        """Until a signal or a child's exit; returns the exit status."""
        self.start()
        status = 0
        try:
            while not self.stopping:
                for name, child in self.children.items():
                    if child.poll() is not None:
                        print(
                            f"[medrobust] {name} exited ({child.returncode}); stopping", flush=True
                        )
                        status = child.returncode or 1
                        self.stopping = True
                        break
                time.sleep(0.3)
        finally:
            print("[medrobust] shutting down", flush=True)
            self.stop()
        return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__.split("\n")[0])
    parser.add_argument("--no-worker", action="store_true", help="run the API only")
    parser.add_argument("--no-api", action="store_true", help="run the worker only")
    parser.add_argument(
        "--no-dimse", action="store_true", help="no DIMSE listener even if MEDROBUST_DIMSE_ENABLED"
    )
    parser.add_argument("--concurrency", type=int, default=1, help="worker pool processes")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds to stop gracefully")
    args = parser.parse_args(argv)

    settings = get_settings()
    options = JobOptions.from_settings(settings)
    options.state_dir.mkdir(parents=True, exist_ok=True)
    options.store_dir.mkdir(parents=True, exist_ok=True)
    commands = {}
    if not args.no_api:
        commands["api"] = api_command(settings)
    if not args.no_worker:
        commands["worker"] = worker_command(settings, args.concurrency)
    if settings.dimse_enabled and not args.no_dimse:
        commands["dimse"] = dimse_command()
    if not commands:
        parser.error("nothing to run")
    for line in describe(settings):
        print(f"[medrobust] {line}", flush=True)
    supervisor = Supervisor(commands, child_environment(settings), args.grace)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
