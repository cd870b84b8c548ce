"""Fixtures for the HTTP API tests: a tiny model store and a real uvicorn server.

Import explicitly (``from api_fixtures import live_server, ...``); this is not a conftest so it
does not leak into the other service tests. The server is started once per test session, however
many test modules import the fixture, and stopped at the end of the session.

Store: ``derm`` v1 and v2 (attention, 32 px, alias ``production`` → 1) and ``derm-baseline`` v1
(baseline, 32 px), all untrained, classes ``benign`` / ``malignant``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

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


def png_bytes(height: int = 40, width: int = 48, seed: int = 0, channels: int = 3) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (height, width, channels) if channels > 1 else (height, width)
    ok, encoded = cv2.imencode(".png", rng.integers(0, 256, shape, dtype=np.uint8))
    assert ok
    return encoded.tobytes()


def jpeg_bytes(height: int = 40, width: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    ok, encoded = cv2.imencode(".jpg", rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    assert ok
    return encoded.tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` × ``height`` (valid signature, IHDR and CRC, tiny IDAT, IEND):
    a decompression bomb's header without the bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def dicom_bytes(
    rows: int = 24,
    columns: int = 20,
    frames: int = 1,
    photometric: str = "MONOCHROME2",
    seed: int = 0,
) -> tuple[bytes, np.ndarray]:
    """A DICOM Part 10 file with 12-bit grayscale pixels (needs pydicom), and its pixel array."""
    from dicom_factory import make_dicom

    rng = np.random.default_rng(seed)
    shape = (frames, rows, columns) if frames > 1 else (rows, columns)
    pixels = rng.integers(0, 4096, shape, dtype=np.uint16)
    return make_dicom(pixels, photometric=photometric, bits_stored=12), pixels


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def server_env(store_dir: Path, state_dir: Path, **settings: object) -> dict[str, str]:
    """The environment of a server process: this one's, minus external services, plus settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL") and not k.startswith("MEDROBUST_")
    }
    env.update(
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        MEDROBUST_STORE_DIR=str(store_dir),
        MEDROBUST_STATE_DIR=str(state_dir),
    )
    for key, value in settings.items():
        env[f"MEDROBUST_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def start_server(
    store_dir: Path, state_dir: Path, log_path: Path, **settings: object
) -> LiveServer:
    """Start uvicorn (factory mode) on a free port and wait until ``/healthz`` answers."""
    port = _free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "uvicorn", "service.api.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=state_dir,  # no stray .env from the checkout
            env=server_env(store_dir, state_dir, **settings),
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


_server: LiveServer | None = None


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real uvicorn server for the whole session (shared by every module importing this)."""
    global _server
    if _server is None or _server.process.poll() is not None:
        root = tmp_path_factory.mktemp("api")
        store = build_store(root / "models")
        _server = start_server(
            store,
            root / "state",
            root / "uvicorn.log",
            api_tokens=TOKENS,
            default_models={"derm": "derm:production", "baseline": "derm-baseline"},
            max_upload_bytes=str(MAX_UPLOAD_BYTES),
            max_batch_size=str(MAX_BATCH_SIZE),
            max_batch_wait_ms=str(MAX_BATCH_WAIT_MS),
        )
    yield _server
    _server.stop()


@pytest.fixture()
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    """An httpx client with the all-scopes token."""
    with live_server.client() as http:
        yield http
