"""Dynamic micro-batching: the batcher alone, then coalescing proven on a real server."""

from __future__ import annotations

import asyncio
import base64
import re
import time

import httpx
import numpy as np
import pytest

from service.api.batching import BatcherClosed, MicroBatcher
from tests.support.api_server import MAX_BATCH_SIZE
from tests.support.images import png_bytes


def _doubling(calls: list[int]):
    def run(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        time.sleep(0.01)
        return batch * 2

    return run


def test_concurrent_submits_share_batches_and_get_their_own_rows():
    calls: list[int] = []

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(_doubling(calls), max_batch_size=4, max_wait_s=0.05)
        try:
            return await asyncio.gather(*(batcher.submit(np.array([i])) for i in range(10)))
        finally:
            await batcher.close()

    results = asyncio.run(main())
    assert [int(r[0]) for r in results] == [2 * i for i in range(10)]
    assert sum(calls) == 10
    assert max(calls) == 4 and len(calls) == 3  # 4 + 4 + 2


async def _timed(batcher: MicroBatcher, *inputs) -> tuple[list, float]:
    started = time.perf_counter()
    try:
        results = await asyncio.gather(*(batcher.submit(x) for x in inputs), return_exceptions=True)
        return results, time.perf_counter() - started
    finally:
        await batcher.close()


async def _later(value: np.ndarray, delay: float) -> np.ndarray:
    await asyncio.sleep(delay)
    return value


async def _failing(delay: float) -> np.ndarray:
    await asyncio.sleep(delay)
    raise ValueError("cannot decode")


def test_a_lone_request_does_not_wait_for_company_that_is_not_coming():
    calls: list[int] = []
    batcher = MicroBatcher(_doubling(calls), max_batch_size=64, max_wait_s=2.0)
    _, elapsed = asyncio.run(_timed(batcher, np.zeros(1)))
    assert calls == [1]
    assert elapsed < 1.0


def test_always_wait_waits_the_full_delay():
    calls: list[int] = []
    batcher = MicroBatcher(_doubling(calls), max_batch_size=64, max_wait_s=0.2, always_wait=True)
    _, elapsed = asyncio.run(_timed(batcher, np.zeros(1)))
    assert calls == [1]
    assert 0.19 <= elapsed < 2.0


def test_requests_still_being_prepared_are_waited_for():
    calls: list[int] = []
    batcher = MicroBatcher(_doubling(calls), max_batch_size=8, max_wait_s=2.0)
    results, _ = asyncio.run(
        _timed(batcher, np.ones(1), _later(np.full(1, 3.0), 0.1), _later(np.full(1, 5.0), 0.2))
    )
    assert calls == [3]
    assert [float(r[0]) for r in results] == [2.0, 6.0, 10.0]


def test_the_wait_is_bounded_by_max_wait():
    calls: list[int] = []
    batcher = MicroBatcher(_doubling(calls), max_batch_size=8, max_wait_s=0.05)
    asyncio.run(_timed(batcher, np.ones(1), _later(np.ones(1), 0.5)))
    assert calls == [1, 1]


def test_a_request_that_fails_while_being_prepared_stops_the_wait():
    calls: list[int] = []
    batcher = MicroBatcher(_doubling(calls), max_batch_size=8, max_wait_s=5.0)
    (ok, failed), elapsed = asyncio.run(_timed(batcher, np.ones(1), _failing(0.05)))
    assert float(ok[0]) == 2.0
    assert isinstance(failed, ValueError)
    assert calls == [1]
    assert elapsed < 2.0


def test_requests_arriving_during_a_batch_form_the_next_one():
    calls: list[int] = []

    def slow(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        time.sleep(0.2)
        return batch

    async def main() -> None:
        batcher = MicroBatcher(slow, max_batch_size=16, max_wait_s=0.0)
        try:
            first = asyncio.ensure_future(batcher.submit(np.zeros(1)))
            await asyncio.sleep(0.05)  # the first batch (of 1) is running now
            await asyncio.gather(first, *(batcher.submit(np.zeros(1)) for _ in range(5)))
        finally:
            await batcher.close()

    asyncio.run(main())
    assert calls == [1, 5]


def test_a_failing_batch_fails_each_of_its_requests():
    def broken(batch: np.ndarray) -> np.ndarray:
        raise ValueError("boom")

    async def main() -> list[object]:
        batcher = MicroBatcher(broken, max_batch_size=4, max_wait_s=0.01)
        try:
            return await asyncio.gather(
                *(batcher.submit(np.zeros(1)) for _ in range(3)), return_exceptions=True
            )
        finally:
            await batcher.close()

    results = asyncio.run(main())
    assert all(isinstance(r, ValueError) and str(r) == "boom" for r in results)


def test_closed_batcher_refuses_work():
    async def main() -> None:
        batcher = MicroBatcher(lambda b: b, max_batch_size=2, max_wait_s=0.0)
        await batcher.close()
        with pytest.raises(BatcherClosed):
            await batcher.submit(np.zeros(1))

    asyncio.run(main())


def test_bad_batcher_settings():
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(lambda b: b, max_batch_size=0, max_wait_s=0.0)
    with pytest.raises(ValueError, match="max_wait_s"):
        MicroBatcher(lambda b: b, max_batch_size=1, max_wait_s=-1)


def _batch_metrics(text: str, model: str) -> tuple[float, float, float]:
    """(batches, images, batches of exactly one) from the batch-size histogram."""

    def value(series: str) -> float:
        match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    label = f'model="{model}"'
    return (
        value(f"medrobust_inference_batch_size_count{{{label}}}"),
        value(f"medrobust_inference_batch_size_sum{{{label}}}"),
        value(f'medrobust_inference_batch_size_bucket{{le="1.0",{label}}}'),
    )


@pytest.mark.integration
def test_concurrent_http_requests_are_coalesced_and_match_single_predictions(live_server):
    from training.predict import predict_images
    from training.preprocess import decode_image_bytes
    from training.store import ModelStore

    n = 2 * MAX_BATCH_SIZE
    images = [png_bytes(seed=100 + i) for i in range(n)]
    headers = {"Authorization": "Bearer all-token"}

    async def fire() -> list[dict]:
        async with httpx.AsyncClient(base_url=live_server.url, headers=headers, timeout=120) as c:
            responses = await asyncio.gather(
                *(
                    c.post(
                        "/predict",
                        json={
                            "image_base64": base64.b64encode(image).decode(),
                            "models": ["derm-baseline"],
                        },
                    )
                    for image in images
                )
            )
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        return [r.json()["predictions"][0] for r in responses]

    before = _batch_metrics(httpx.get(f"{live_server.url}/metrics").text, "derm-baseline:1")
    served = asyncio.run(fire())
    after = _batch_metrics(httpx.get(f"{live_server.url}/metrics").text, "derm-baseline:1")
    batches, batched_images, singles = (a - b for a, b in zip(after, before, strict=True))
    assert batched_images == n
    assert batches < n  # at least one forward pass served several requests
    assert singles < batches

    loaded = ModelStore(live_server.store_dir).load("derm-baseline")
    local = predict_images(loaded, [decode_image_bytes(image) for image in images])
    for http, single in zip(served, local, strict=True):
        assert http["weights_sha256"] == single.weights_sha256
        assert http["top_class"] == single.top_class
        np.testing.assert_allclose(
            list(http["probabilities"].values()),
            list(single.probabilities.values()),
            rtol=1e-4,
            atol=1e-6,
        )
