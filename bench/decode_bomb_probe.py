"""Decompression-amplification probe: a ~3.6 KB JPEG whose header claims 7000 × 7000, sent
``--bombs`` times at once to a real API, while a normal ``/predict`` runs in a loop beside it.

Reports the server's resident memory (``/proc/<pid>/status``: VmRSS before, the highest sample
during, after) and the latency of the normal request before and during the attack, plus the
status codes the bombs got. It starts its own uvicorn on the tests' tiny untrained store
(``tests.support.api_server``), with the service's default limits (so it measures whatever the
checked-out defaults are), from ``--source`` (default: this checkout; point it at an export of
another commit to compare). Run it as a module from the repository root, which makes
``tests.support`` importable:

    .venv/bin/python -m bench.decode_bomb_probe
    git archive HEAD | tar -x -C /tmp/head && .venv/bin/python -m bench.decode_bomb_probe \
        --source /tmp/head

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.support.api_server import REPO, build_store, start_server
from tests.support.images import jpeg_claiming, png_bytes

MODEL = "derm-baseline"  # a 32-px ResNet-50 baseline of the tiny store


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def predict(client: httpx.Client, data: bytes, name: str) -> tuple[int, float]:
    started = time.perf_counter()
    files = {"image": (name, data, "application/octet-stream")}
    response = client.post("/predict", files=files, data={"models": MODEL})
    return response.status_code, time.perf_counter() - started


def probe(url: str, pid: int, bombs: int) -> dict:
    normal, bomb = png_bytes(48, 48, seed=1), jpeg_claiming(7000, 7000)
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
        server = start_server(
            build_store(root / "models"),
            root / "state",
            root / "uvicorn.log",
            source=args.source.resolve(),
        )
        try:
            result = probe(server.url, server.process.pid, args.bombs)
        finally:
            server.stop()
    print(json.dumps({"source": str(args.source), **result}, indent=2))


if __name__ == "__main__":
    main()
