"""Decompression-amplification probe: a ~3.6 KB JPEG whose header claims 7000 × 7000, sent
``--bombs`` times at once to a real API, while a normal ``/predict`` runs in a loop beside it.

Reports the server's resident memory (``/proc/<pid>/status``: VmRSS before, the highest sample
during, after) and the latency of the normal request before and during the attack, plus the
status codes the bombs got. It starts its own uvicorn on a tiny untrained model, with the
service's default limits (so it measures whatever the checked-out defaults are), from
``--source`` (default: this checkout; point it at an export of another commit to compare).

    .venv/bin/python bench/decode_bomb_probe.py
    git archive HEAD | tar -x -C /tmp/head && .venv/bin/python bench/decode_bomb_probe.py \
        --source /tmp/head

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def bomb_jpeg(width: int, height: int) -> bytes:
    """A real 64 × 64 JPEG whose SOF0 claims ``width`` × ``height``, cut to ~3 KB of scan data
    and closed with EOI: the decoder allocates the full claimed frame and pads it grey."""
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = bytearray(cv2.imencode(".jpg", pixels)[1].tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    scan = data.find(b"\xff\xda")
    return bytes(data[: scan + 3000]) + b"\xff\xd9"


def normal_png() -> bytes:
    pixels = np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    return cv2.imencode(".png", pixels)[1].tobytes()


def build_store(root: Path) -> None:
    import keras

    from training.models import ArchitectureConfig, build_from_config
    from training.preprocess import PreprocessConfig
    from training.store import ModelStore

    keras.utils.set_random_seed(0)
    config = ArchitectureConfig(architecture="baseline", num_classes=2, input_size=32)
    ModelStore(root).save(
        build_from_config(config), "probe", config, PreprocessConfig(input_size=32), ["a", "b"]
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(source: Path, store: Path, state: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDROBUST_")}
    env.update(
        PYTHONPATH=str(source),
        TF_CPP_MIN_LOG_LEVEL="2",
        MEDROBUST_STORE_DIR=str(store),
        MEDROBUST_STATE_DIR=str(state),
    )
    command = [
        sys.executable, "-m", "uvicorn", "service.api.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=state, env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("server did not start")


def predict(client: httpx.Client, data: bytes, name: str) -> tuple[int, float]:
    started = time.perf_counter()
    files = {"image": (name, data, "application/octet-stream")}
    response = client.post("/predict", files=files, data={"models": "probe"})
    return response.status_code, time.perf_counter() - started


def probe(url: str, pid: int, bombs: int) -> dict:
    normal, bomb = normal_png(), bomb_jpeg(7000, 7000)
    with httpx.Client(base_url=url, timeout=300) as client:
        for _ in range(3):
            predict(client, normal, "warm.png")  # first calls build the batcher's graph
        before = [predict(client, normal, "n.png")[1] for _ in range(5)]
        rss_before = rss_mb(pid)
        peak, during, done = rss_before, [], threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_mb(pid))
                time.sleep(0.02)

        def normal_loop() -> None:
            with httpx.Client(base_url=url, timeout=300) as own:
                while not done.is_set():
                    during.append(predict(own, normal, "n.png"))

        sampler = threading.Thread(target=sample)
        sampler.start()
        with ThreadPoolExecutor(bombs + 1) as pool:
            loop = pool.submit(normal_loop)
            time.sleep(0.2)

            def send_bomb(_: int) -> tuple[int, float]:
                with httpx.Client(base_url=url, timeout=300) as own:
                    return predict(own, bomb, "bomb.jpg")

            results = list(pool.map(send_bomb, range(bombs)))
            done.set()
            loop.result()
        sampler.join()
        time.sleep(1.0)
        return {
            "bomb_bytes": len(bomb),
            "bombs": bombs,
            "bomb_statuses": sorted({status for status, _ in results}),
            "bomb_seconds_max": round(max(s for _, s in results), 3),
            "rss_mb_before": round(rss_before, 1),
            "rss_mb_peak_during": round(peak, 1),
            "rss_mb_after": round(rss_mb(pid), 1),
            "normal_predict_s_before_median": round(statistics.median(before), 3),
            "normal_predict_s_during_max": round(max(s for _, s in during), 3),
            "normal_predict_s_during_median": round(statistics.median(s for _, s in during), 3),
            "normal_predict_statuses_during": sorted({status for status, _ in during}),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=REPO, help="checkout the server runs")
    parser.add_argument("--bombs", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bomb-probe-") as tmp:
        root = Path(tmp)
        build_store(root / "models")
        (root / "state").mkdir()
        process, url = start_server(
            args.source.resolve(), root / "models", root / "state", root / "uvicorn.log"
        )
        try:
            result = probe(url, process.pid, args.bombs)
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(json.dumps({"source": str(args.source), **result}, indent=2))


if __name__ == "__main__":
    main()
