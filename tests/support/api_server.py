"""A real uvicorn server of ``service.api.app:create_app`` on a tiny model store.

:func:`build_store` makes ``derm`` v1 and v2 (attention, 32 px, alias ``production`` → 1) and
``derm-baseline`` v1 (baseline, 32 px), all untrained, classes ``benign`` / ``malignant``;
:func:`start_server` starts uvicorn on it with chosen settings, from this checkout or another one
(the bench scripts compare checkouts). The ``live_server`` fixture (:mod:`tests.support.fixtures`)
is one such server shared by a test session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.images import make_folder_dataset
from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["benign", "malignant"]
TOKENS = {
    "all-token": ["predict", "explain", "jobs", "admin"],
    "predict-token": ["predict"],
    "admin-token": ["admin"],
}
ALL = {"Authorization": "Bearer all-token"}
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
MAX_BATCH_SIZE = 8
MAX_BATCH_WAIT_MS = 25
STARTUP_TIMEOUT_S = 300


def build_store(root: Path) -> Path:
    """The tiny store described in the module docstring (a few seconds of model building)."""
    import keras

    from training.models import ArchitectureConfig, build_from_config
    from training.preprocess import PreprocessConfig
    from training.store import ModelStore

    keras.utils.set_random_seed(0)
    store = ModelStore(root)
    models = (("derm", "attention"), ("derm-baseline", "baseline"), ("derm", "attention"))
    for name, architecture in models:
        config = ArchitectureConfig(architecture=architecture, num_classes=2, input_size=32)
        store.save(
            build_from_config(config),
            name,
            config,
            PreprocessConfig(input_size=32),
            CLASSES,
            training_spec={"note": "untrained test model"},
        )
    store.set_alias("derm", "production", 1)
    return root


@dataclass
class LiveServer:
    """A uvicorn process serving ``service.api.app:create_app`` on 127.0.0.1."""

    url: str
    process: subprocess.Popen
    store_dir: Path
    state_dir: Path
    log_path: Path

    def client(self, token: str | None = "all-token", timeout: float = 120.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def server_env(
    store_dir: Path, state_dir: Path, source: Path = REPO, **settings: object
) -> dict[str, str]:
    """The environment of a server process running the service of the checkout ``source``:
    this one's, minus external services, plus settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("MEDROBUST_")
    }
    env.update(
        PYTHONPATH=str(source),
        PYTHONUNBUFFERED="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        MEDROBUST_STORE_DIR=str(store_dir),
        MEDROBUST_STATE_DIR=str(state_dir),
    )
    for key, value in settings.items():
        env[f"MEDROBUST_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def trust_limits(
    max_n: int, max_steps: int, max_model_calls: int, deadline_s: float
) -> dict[str, str]:
    """:func:`start_server` settings bounding the robustness block: ``max_n`` samples for both
    certification passes (n and n0), flip-search steps, model calls, the deadline."""
    return {
        "trust_max_n": str(max_n),
        "trust_max_n0": str(max_n),
        "trust_max_steps": str(max_steps),
        "trust_max_model_calls": str(max_model_calls),
        "trust_deadline_s": str(deadline_s),
    }


def start_server(
    store_dir: Path, state_dir: Path, log_path: Path, source: Path = REPO, **settings: object
) -> LiveServer:
    """Start uvicorn (factory mode) on a free port, serving the checkout ``source``, and wait
    until ``/healthz`` answers. ``settings`` are ``MEDROBUST_*`` settings by lower-case name."""
    port = free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "uvicorn", "service.api.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=state_dir,  # no stray .env from the checkout
            env=server_env(store_dir, state_dir, source, **settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", process, store_dir, state_dir, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"uvicorn did not answer /healthz in {STARTUP_TIMEOUT_S}s")


def start_job_api(
    root: Path, redis_url: str, source: Path = REPO, **settings: object
) -> LiveServer:
    """A server that takes jobs: :func:`build_store`'s store in ``root/models``, a folder
    dataset ``tiny`` (two images a class) in the data root ``root/data``, the tokens of
    ``TOKENS``, task ``derm``, and jobs sent to the broker at ``redis_url``."""
    make_folder_dataset(root / "data" / "tiny", per_class=2)
    return start_server(
        build_store(root / "models"),
        root / "state",
        root / "uvicorn.log",
        source,
        api_tokens=TOKENS,
        default_models={"derm": "derm:production"},
        redis_url=redis_url,
        data_dir=str(root / "data"),
        **settings,
    )
