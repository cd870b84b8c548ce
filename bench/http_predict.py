"""``/predict`` images/s over HTTP at concurrency 16 vs the model's raw batched throughput, and
single-request HTTP latency vs raw batch-1 latency, measured in one run.

Raw figures are the model's own ceiling, measured in this process on the same stored artifact
through the runtime the server serves it with (``--runtime``, i.e. ``MEDROBUST_SERVE_RUNTIME``:
the same derived artefact and parity gate, ``training.runtimes.serving_forward``): back-to-back
forward calls on batches of ``--batch-size`` (the server's ``max_batch_size``), and on single
images. For a runtime other than ``keras`` the stored model gets a training spec whose validation
split is real HAM10000 (``MEDROBUST_DATA_DIR``), which its parity gate needs; the runtime that
actually answered (``serving_runtime``, from the responses) is printed with the figures.

The HTTP figures go through everything a client sees: a real uvicorn server (started here unless
``--url`` is given), multipart upload, PNG sniffing and decoding, preprocessing, dynamic
micro-batching, JSON response. The raw throughput
and the HTTP figure are measured in interleaved rounds and the median per-round ratio is reported,
so load drift on a shared machine does not favour either side. The client is a minimal
keep-alive HTTP/1.1 client on asyncio streams, so that the load generator, which shares the CPU
with the server, costs as little as possible.

    .venv/bin/python bench/http_predict.py --size 64 --architecture attention
    .venv/bin/python bench/http_predict.py --size 224 --runtime openvino

``--compare-ref REF`` also serves the same model from another version of the code (a git ref,
e.g. the commit before a feature) on a second server, and adds its HTTP throughput to the same
interleaved rounds: ``current_vs_ref_ratio`` > ~1 means this version's plain ``/predict`` is not
slower. Each server's store is built by its own version of ``build_store`` (same seed); with a
runtime other than ``keras`` that needs a ref whose ``build_store`` takes ``with_spec``.

Prints one JSON object; ``throughput_ratio`` = HTTP images/s ÷ raw images/s (goal >= 0.9),
``latency_ratio`` = raw batch-1 latency ÷ HTTP single-request latency (1.0 = no overhead).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
BOUNDARY = "medrobust-bench-boundary"


#: images per split of the HAM10000 spec a gated runtime's model is stored with (its gate's
#: validation images; int8's training images)
SPEC_IMAGES_PER_SPLIT = 300


def build_store(
    root: Path, architecture: str, size: int, classes: int, with_spec: bool = False
) -> str:
    """An untrained model stored as ``bench``; ``with_spec``: with a HAM10000 training spec, so
    that a serving runtime's parity gate has a validation split to run on."""
    import keras

    from training.config import TrainingSpec
    from training.data.registry import DatasetSpec
    from training.models import ArchitectureConfig, build_from_config
    from training.preprocess import PreprocessConfig
    from training.store import ModelStore

    keras.utils.set_random_seed(0)
    config = ArchitectureConfig(architecture=architecture, num_classes=classes, input_size=size)
    names = [f"class{k}" for k in range(classes)]
    preprocess = PreprocessConfig(input_size=size)
    dataset = DatasetSpec(
        kind="ham10000",
        path="ham10000_200x150",
        split="source",
        limit_per_split=SPEC_IMAGES_PER_SPLIT,
    )
    spec = TrainingSpec(name="bench", dataset=dataset, preprocess=preprocess)
    ModelStore(root).save(
        build_from_config(config),
        "bench",
        config,
        preprocess,
        names,
        training_spec=spec.model_dump(mode="json") if with_spec else None,
    )
    return "bench"


def build_store_from(source: Path, root: Path, args: argparse.Namespace) -> str:
    """``build_store`` of the code at ``source`` (another checkout), run in a child process so
    that version's own ``training`` package writes the store its server will read."""
    script = (
        "import importlib.util, pathlib, sys\n"
        "spec = importlib.util.spec_from_file_location('bench_http', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "spec_args = [True] if sys.argv[6:] == ['with-spec'] else []\n"
        "print(module.build_store(pathlib.Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]),"
        " int(sys.argv[5]), *spec_args))\n"
    )
    arguments = [source / "bench" / "http_predict.py", root, args.architecture, args.size]
    arguments += [args.classes] + (["with-spec"] if args.runtime != "keras" else [])
    env = {**os.environ, "PYTHONPATH": str(source), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, arguments)],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return done.stdout.strip().splitlines()[-1]


def checkout(ref: str, destination: Path) -> Path:
    """The tracked files of ``ref`` under ``destination`` (``git archive``: no worktree state)."""
    destination.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(destination)], input=archive, check=True)
    return destination


def start_server(
    store: Path, state: Path, args: argparse.Namespace, source: Path = REPO
) -> tuple[str, subprocess.Popen]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDROBUST_")}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    env.update(
        PYTHONPATH=str(source),
        TF_CPP_MIN_LOG_LEVEL="2",
        MEDROBUST_STORE_DIR=str(store),
        MEDROBUST_STATE_DIR=str(state),
        MEDROBUST_PRELOAD_MODELS=json.dumps([args.model]),
        MEDROBUST_MAX_BATCH_SIZE=str(args.batch_size),
        MEDROBUST_MAX_BATCH_WAIT_MS=str(args.wait_ms),
    )
    runtime = getattr(args, "runtime", "keras")
    if runtime != "keras":  # the parity gate reads the spec's dataset under the data dir
        from training.data.registry import data_dir

        env.update(MEDROBUST_SERVE_RUNTIME=runtime, MEDROBUST_DATA_DIR=str(data_dir()))
    command = [
        sys.executable, "-m", "uvicorn", "service.api.app:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    log = (state / "uvicorn.log").open("wb")
    process = subprocess.Popen(command, cwd=state, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((state / "uvicorn.log").read_text()[-3000:])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return url, process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("the server did not start")


def multipart_request(host: str, model: str, png: bytes) -> bytes:
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="models"\r\n\r\n{model}\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


class Connection:
    """One keep-alive HTTP/1.1 connection; responses must carry Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        parts = urlsplit(url)
        return cls(*await asyncio.open_connection(parts.hostname, parts.port))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def throughput(url: str, requests: list[bytes], total: int, concurrency: int) -> float:
    connections = [await Connection.open(url) for _ in range(concurrency)]
    sent = 0
    failures: list[str] = []

    async def worker(connection: Connection) -> None:
        nonlocal sent
        while sent < total:
            request = requests[sent % len(requests)]
            sent += 1
            status, body = await connection.send(request)
            if status != 200:
                failures.append(f"{status}: {body[:200]!r}")

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.perf_counter() - started
    for connection in connections:
        await connection.close()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return total / elapsed


async def latency(url: str, requests: list[bytes], count: int) -> float:
    connection = await Connection.open(url)
    times = []
    for i in range(count):
        started = time.perf_counter()
        status, body = await connection.send(requests[i % len(requests)])
        times.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"{status}: {body[:200]!r}")
    await connection.close()
    return statistics.median(times)


def raw_throughput(forward, batch: np.ndarray, seconds: float) -> float:
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or calls < 3:
        forward(batch)
        calls += 1
    return calls * len(batch) / (time.perf_counter() - started)


def raw_latency(forward, image: np.ndarray, count: int) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        forward(image[None])
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def serving_runtime(url: str, request: bytes) -> str:
    """The runtime named by the server's answer to ``request`` (what actually serves)."""
    status, body = asyncio.run(_one(url, request))
    if status != 200:
        raise RuntimeError(f"{status}: {body[:200]!r}")
    return json.loads(body)["predictions"][0]["runtime"]


async def _one(url: str, request: bytes) -> tuple[int, bytes]:
    connection = await Connection.open(url)
    try:
        return await connection.send(request)
    finally:
        await connection.close()


def mean_batch_size(url: str, model: str) -> tuple[float, float]:
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=30).text

    def value(series: str) -> float:
        match = re.search(rf'^{series}{{model="{re.escape(model)}"}} (\S+)$', text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    return (
        value("medrobust_inference_batch_size_sum"),
        value("medrobust_inference_batch_size_count"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an already running server (default: start one here)")
    parser.add_argument("--store", type=Path, help="its model store (with --url)")
    parser.add_argument("--model", default="bench", help="model ref (with --url)")
    parser.add_argument("--architecture", default="attention")
    parser.add_argument("--size", type=int, default=64, help="model input size (px)")
    parser.add_argument("--image-size", type=int, help="uploaded PNG side (default: --size)")
    parser.add_argument("--classes", type=int, default=7)
    parser.add_argument(
        "--runtime",
        default="keras",
        help="MEDROBUST_SERVE_RUNTIME of the server, and what the raw figures run (default keras)",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="server max_batch_size")
    parser.add_argument("--wait-ms", type=float, default=5.0, help="server max_batch_wait_ms")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=128, help="per round")
    parser.add_argument("--latency-requests", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5, help="raw/HTTP rounds, interleaved")
    parser.add_argument("--raw-seconds", type=float, default=4.0, help="raw time per round")
    parser.add_argument(
        "--compare-ref", help="also serve from this git ref's code, in the same rounds"
    )
    args = parser.parse_args()
    if args.compare_ref and args.url:
        parser.error("--compare-ref starts both servers itself: leave out --url")

    from training.model_ref import ModelRef
    from training.runtimes import serving_forward
    from training.store import ModelStore

    work = Path(tempfile.mkdtemp(prefix="bench-http-"))
    process = None
    compared: tuple[str, subprocess.Popen] | None = None
    if args.url:
        if args.store is None:
            parser.error("--url needs --store (the server's model store) for the raw figures")
        url, store = args.url.rstrip("/"), args.store
    else:
        store = work / "models"
        gated = args.runtime != "keras"
        args.model = build_store(store, args.architecture, args.size, args.classes, gated)
        (work / "state").mkdir()
        url, process = start_server(store, work / "state", args)
    if args.compare_ref:
        source = checkout(args.compare_ref, work / "ref-source")
        (work / "ref-state").mkdir()
        ref_args = argparse.Namespace(**vars(args))
        ref_args.model = build_store_from(source, work / "ref-models", args)
        compared = start_server(work / "ref-models", work / "ref-state", ref_args, source)
    try:
        ref = ModelRef.parse(args.model)
        loaded = ModelStore(store).load(ref.name, ref.selector)
        model_dir = Path(store) / loaded.manifest.name / str(loaded.manifest.version)
        # the server derived (and gated) the artefact at start-up: this reuses it and its gate
        forward = serving_forward(loaded, args.runtime, model_dir)
        size = loaded.manifest.preprocess.input_size
        side = args.image_size or size
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (32, side, side, 3), dtype=np.uint8)
        host = urlsplit(url).netloc
        pngs = [cv2.imencode(".png", image)[1].tobytes() for image in images]
        requests = [multipart_request(host, args.model, png) for png in pngs]
        ref_requests = (
            [multipart_request(urlsplit(compared[0]).netloc, args.model, png) for png in pngs]
            if compared
            else []
        )
        pixels = rng.uniform(0, 255, (args.batch_size, size, size, 3)).astype(np.float32)
        raw_throughput(forward, pixels, 1.0)  # compile both shapes
        raw_latency(forward, pixels[0], 3)
        served_by = serving_runtime(url, requests[0])
        if served_by != forward.runtime:
            raise RuntimeError(f"the server answers with {served_by}, raw runs {forward.runtime}")
        asyncio.run(throughput(url, requests, 4 * args.concurrency, args.concurrency))  # warm-up
        if compared:
            asyncio.run(
                throughput(compared[0], ref_requests, 4 * args.concurrency, args.concurrency)
            )
        raw_rounds, http_rounds, ref_rounds = [], [], []
        sum_before, count_before = mean_batch_size(url, loaded.manifest.ref)
        for _ in range(args.rounds):  # interleaved, so load drift hits both sides alike
            raw_rounds.append(raw_throughput(forward, pixels, args.raw_seconds))
            http_rounds.append(
                asyncio.run(throughput(url, requests, args.requests, args.concurrency))
            )
            if compared:
                ref_rounds.append(
                    asyncio.run(
                        throughput(compared[0], ref_requests, args.requests, args.concurrency)
                    )
                )
        sum_after, count_after = mean_batch_size(url, loaded.manifest.ref)
        ratios = [h / r for h, r in zip(http_rounds, raw_rounds, strict=True)]
        raw_single = raw_latency(forward, pixels[0], args.latency_requests)
        http_single = asyncio.run(latency(url, requests, args.latency_requests))
        batches = count_after - count_before
        result = {
            "model": loaded.manifest.ref,
            "architecture": loaded.manifest.architecture.architecture,
            "input_size": size,
            "runtime_requested": args.runtime,
            "serving_runtime": served_by,
            "upload_png_side": side,
            "max_batch_size": args.batch_size,
            "max_batch_wait_ms": args.wait_ms,
            "concurrency": args.concurrency,
            "requests_per_round": args.requests,
            "raw_images_per_s": round(statistics.median(raw_rounds), 2),
            "http_images_per_s": round(statistics.median(http_rounds), 2),
            "throughput_ratio": round(statistics.median(ratios), 3),
            "throughput_ratio_per_round": [round(r, 3) for r in ratios],
            "raw_images_per_s_per_round": [round(r, 2) for r in raw_rounds],
            "http_images_per_s_per_round": [round(h, 2) for h in http_rounds],
            "mean_server_batch_size": (
                round((sum_after - sum_before) / batches, 2) if batches else None
            ),
            "raw_batch1_latency_ms": round(raw_single * 1000, 2),
            "http_single_latency_ms": round(http_single * 1000, 2),
            "latency_ratio": round(raw_single / http_single, 3),
            "latency_overhead_ms": round((http_single - raw_single) * 1000, 2),
            "cpu_count": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
        if compared:
            versus = [h / r for h, r in zip(http_rounds, ref_rounds, strict=True)]
            result |= {
                "compare_ref": args.compare_ref,
                "ref_http_images_per_s": round(statistics.median(ref_rounds), 2),
                "current_vs_ref_ratio": round(statistics.median(versus), 3),
                "current_vs_ref_ratio_per_round": [round(v, 3) for v in versus],
                "ref_throughput_ratio": round(
                    statistics.median(r / w for r, w in zip(ref_rounds, raw_rounds, strict=True)),
                    3,
                ),
            }
        print(json.dumps(result, indent=1))
    finally:
        for server in (process, compared[1] if compared else None):
            if server is not None:
                server.terminate()
                server.wait(timeout=30)


if __name__ == "__main__":
    main()
