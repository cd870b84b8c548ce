"""The micro-batcher waits for ``/predict`` requests whose body is still being read (ARRIVALS).

Under steady load every client of a batch comes back at once; a collector that knew only the
requests already decoding took the first few parsed ones alone and left the rest for a second,
half-full batch (bench/http_predict.py). These tests pin the policy with the batcher alone: the
"body being read" is an ``asyncio.sleep`` inside ``Arrivals.coming()``, as the route does it.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from service.api.batching import Arrivals, MicroBatcher

#: far longer than any test here may take: waiting it out would fail the timing asserts
MAX_WAIT_S = 5.0


def _doubling(calls: list[int]):
    def run(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return batch * 2

    return run


async def _request(
    batcher: MicroBatcher, arrivals: Arrivals, value: int, reading_s: float, fail: bool = False
) -> np.ndarray:
    with arrivals.coming() as arrival:
        await asyncio.sleep(reading_s)  # the body is being read and parsed
        if fail:
            raise ValueError("malformed multipart body")
        return await batcher.submit(np.array([value]), arrival)


def _run(*requests: tuple[int, float, bool]) -> tuple[list[object], list[int], float]:
    calls: list[int] = []

    async def main() -> list[object]:
        arrivals = Arrivals()
        batcher = MicroBatcher(_doubling(calls), 8, MAX_WAIT_S, arrivals=arrivals)
        try:
            return await asyncio.gather(
                *(_request(batcher, arrivals, *r) for r in requests), return_exceptions=True
            )
        finally:
            await batcher.close()

    started = time.perf_counter()
    results = asyncio.run(main())
    return results, calls, time.perf_counter() - started


def test_a_request_still_being_read_joins_the_batch_of_one_already_queued():
    results, calls, _ = _run((1, 0.0, False), (2, 0.2, False))
    assert [int(np.asarray(r)[0]) for r in results] == [2, 4]
    assert calls == [2]  # without ARRIVALS: [1, 1]


def test_a_lone_request_does_not_wait():
    results, calls, elapsed = _run((1, 0.0, False))
    assert calls == [1] and elapsed < MAX_WAIT_S / 2


def test_a_request_that_fails_while_being_read_stops_the_wait():
    results, calls, elapsed = _run((1, 0.0, False), (2, 0.2, True))
    assert isinstance(results[1], ValueError)
    assert calls == [1] and elapsed < MAX_WAIT_S / 2
