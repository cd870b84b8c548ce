"""Resource bounds (issue #10, items 4-6), each attack replayed on a real uvicorn server:
decode bombs, deeply nested JSON, stalled and abandoned uploads. Plus the decode pool's
budget, unit-tested on its real threads."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import threading
import time
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from service.api.decoding import DECODE_BYTES_PER_PIXEL, DecodePool
from service.api.errors import BadRequest, PayloadTooLarge
from service.api.images import check_image
from service.config import Settings
from tests.support.api_server import TOKENS, LiveServer, build_store, start_server
from tests.support.images import jpeg_claiming, png_bytes
from tests.support.scratch import scratch_dir

BODY_READ_TIMEOUT_S = 2.0
# A 48 × 40 image fits (122,880 B estimated), a 64 × 64 one (262,144 B) does not.
DECODE_BUDGET = 200_000
# How long a test waits for an answer that must come; only a bound on failure, never asserted.
PATIENCE_S = 60.0
AUTH = "Authorization: Bearer all-token"


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    with scratch_dir(request, tmp_path_factory, "bounds") as root:
        live = start_server(
            build_store(root / "models"),
            root / "state",
            root / "uvicorn.log",
            api_tokens=TOKENS,
            preload_models=["derm-baseline"],
            body_read_timeout_s=str(BODY_READ_TIMEOUT_S),
            decode_memory_budget_bytes=str(DECODE_BUDGET),
        )
        yield live
        live.stop()


def _post(server: LiveServer, data: bytes):
    with server.client() as http:
        files = {"image": ("f", data, "application/octet-stream")}
        return http.post("/predict", files=files, data={"models": "derm-baseline"})


# --- 4. decompression amplification ----------------------------------------------------------


@pytest.mark.integration
def test_a_header_claiming_more_pixels_than_its_bytes_hold_is_400(server):
    response = _post(server, jpeg_claiming(2000, 2000))
    assert response.status_code == 400, response.text
    assert "2000 × 2000" in response.json()["detail"]


def test_the_default_pixel_limit_refuses_the_7000_square_bomb():
    with pytest.raises(PayloadTooLarge, match="49,000,000 pixels"):
        check_image(jpeg_claiming(7000, 7000), Settings())


@pytest.mark.parametrize("progressive", [0, 1])
def test_the_byte_floors_accept_the_most_compressible_real_files(progressive):
    """A constant image with optimised Huffman tables is the least data a real encoder writes
    (2 bits per block sequential, about 1 progressive); deflate's 1032:1 for PNG likewise."""
    flat = np.zeros((1024, 1024), np.uint8)
    options = [cv2.IMWRITE_JPEG_OPTIMIZE, 1, cv2.IMWRITE_JPEG_PROGRESSIVE, progressive]
    assert check_image(cv2.imencode(".jpg", flat, options)[1].tobytes(), Settings()).width == 1024
    bilevel = cv2.imencode(".png", flat, [cv2.IMWRITE_PNG_BILEVEL, 1])[1].tobytes()
    assert check_image(bilevel, Settings()).height == 1024
    truncated = cv2.imencode(".png", flat)[1].tobytes()
    with pytest.raises(BadRequest, match="1024 × 1024"):
        check_image(truncated[:33] + truncated[-12:], Settings())  # IHDR + IEND, no data


@pytest.mark.integration
def test_an_image_over_the_decode_budget_is_413_and_one_within_it_decodes(server):
    assert _post(server, png_bytes(height=40, width=48)).status_code == 200
    response = _post(server, png_bytes(height=64, width=64))
    assert response.status_code == 413, response.text
    assert "decode budget" in response.json()["detail"]


def test_decodes_in_flight_never_exceed_the_budget_and_all_of_it_comes_back():
    pool = DecodePool(max_concurrency=4, budget_bytes=100)
    lock, state = threading.Lock(), {"held": 0, "most": 0}
    gate = threading.Event()

    def work(cost: int) -> int:
        with lock:
            state["held"] += cost
            state["most"] = max(state["most"], state["held"])
        gate.wait()
        with lock:
            state["held"] -= cost
        return cost

    async def scenario() -> list[int]:
        tasks = [asyncio.create_task(pool.run(cost, work, cost)) for cost in (60, 30, 50, 20)]
        await asyncio.sleep(0)  # everyone has queued or started
        abandoned = asyncio.create_task(pool.run(90, work, 90))
        await asyncio.sleep(0)
        abandoned.cancel()  # a client that gives up while waiting returns its place
        gate.set()
        with pytest.raises(PayloadTooLarge, match="decode budget"):
            await pool.run(101, work, 101)
        return await asyncio.gather(*tasks)

    assert asyncio.run(scenario()) == [60, 30, 50, 20]
    pool.close()
    assert state["most"] <= 100
    assert pool.free_bytes == 100


def test_a_reservation_is_held_until_the_thread_finishes_not_until_the_caller_leaves():
    pool = DecodePool(max_concurrency=1, budget_bytes=10)
    started, release = threading.Event(), threading.Event()

    def work() -> None:
        started.set()
        release.wait()

    async def scenario() -> int:
        caller = asyncio.create_task(pool.run(10, work))
        await asyncio.to_thread(started.wait)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        held = pool.free_bytes
        release.set()
        while pool.free_bytes != 10:
            await asyncio.sleep(0.01)
        return held

    assert asyncio.run(asyncio.wait_for(scenario(), PATIENCE_S)) == 0
    pool.close()


def test_the_default_budget_holds_one_image_at_the_default_pixel_limit():
    settings = Settings()
    assert settings.max_image_pixels * DECODE_BYTES_PER_PIXEL <= settings.decode_memory_budget_bytes


# --- 5. deeply nested JSON -------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("route", ["/predict", "/explain"])
@pytest.mark.parametrize("where", ["body", "field"])
def test_deeply_nested_json_is_400_not_a_server_error(server, route, where):
    nested = "[" * 100_000 + "]" * 100_000
    image = base64.b64encode(png_bytes()).decode()
    field = f'{{"image_base64": "{image}", "models": {nested}}}'
    body = nested if where == "body" else field
    with server.client() as http:
        response = http.post(route, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert "nested too deeply" in response.json()["detail"]


# --- 6. stalled and abandoned uploads --------------------------------------------------------


def _open_upload(server: LiveServer, declared: int) -> socket.socket:
    """Headers of a multipart /predict declaring ``declared`` body bytes, and a few of them."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=PATIENCE_S)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\n{AUTH}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"--b\r\nContent-Disposition: form-data; name=")
    return sock


@pytest.mark.integration
def test_a_stalled_upload_is_answered_408_and_closed(server):
    with _open_upload(server, 100_000) as sock:
        answer = b""
        while chunk := sock.recv(4096):  # the server answers, then closes: recv returns b""
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408"), answer
    assert b"stalled" in rest


def _predict_counts(server: LiveServer) -> dict[str, float]:
    with server.client(token=None) as http:
        text = http.get("/metrics").text
    pattern = (
        r'medrobust_http_request_duration_seconds_count\{method="POST",route="/predict",'
        r'status="(\d+)"\} ([0-9.e+]+)'
    )
    return {status: float(count) for status, count in re.findall(pattern, text)}


@pytest.mark.integration
def test_a_client_leaving_mid_upload_is_counted_499_not_as_a_server_error(server):
    before = _predict_counts(server)

    def server_errors(counts: dict[str, float]) -> float:
        return sum(n - before.get(s, 0.0) for s, n in counts.items() if s.startswith("5"))

    _open_upload(server, 100_000).close()
    deadline = time.monotonic() + PATIENCE_S
    counts = before
    while counts == before and time.monotonic() < deadline:
        time.sleep(0.1)
        counts = _predict_counts(server)
    assert server_errors(counts) == 0, counts
    assert counts.get("499", 0.0) == before.get("499", 0.0) + 1, counts
    assert "unhandled error" not in server.log_tail(20_000)
