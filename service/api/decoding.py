"""Where uploaded images are decoded: a few threads of their own, under a memory budget.

Header checks (``service.api.images``) bound one image's pixels, but not how many are decoded at
once: eight images just under the pixel limit, decoded together on the shared default thread
pool, once cost the API gigabytes and stalled every other request. So decoding runs here:

* in a :class:`~concurrent.futures.ThreadPoolExecutor` of ``max_decode_concurrency`` threads,
  never the event loop's default pool (which health checks and other blocking calls share);
* after reserving the image's estimated working memory from ``decode_memory_budget_bytes``.
  Reservations are granted first come, first served, so a large image is not starved by a
  stream of small ones; one image whose estimate alone exceeds the budget is refused (413).

A reservation is released when the decode *thread* finishes, not when the request stops
waiting for it: a client that disconnects mid-decode does not free memory still in use.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Annotated, TypeVar

from fastapi import Depends, Request

from service.api.errors import PayloadTooLarge
from service.api.images import ImageUpload
from service.config import Settings

T = TypeVar("T")

# Peak working bytes per decoded pixel, each step of decode_image + prepare_image at its worst:
#   decoder output: 4 channels × 2 bytes (16-bit RGBA PNG)                        8
#   16-bit → uint8 scaling: two float32 4-channel temporaries alive at once       32
#   colour conversion (BGR → RGB) or DICOM's uint8 RGB output                     4
#   prepare_image: float32 RGB at full size, before resizing                     12
# = 56 (a DICOM frame's float64 modality values and window, 2 × 8, stay below the
# 8 + 32 above), rounded up to 64 for allocator slack and libjpeg's progressive coefficient
# buffers. 4096 × 4096 pixels × 64 B = 1 GiB, the default budget.
DECODE_BYTES_PER_PIXEL = 64


def decode_cost(upload: ImageUpload) -> int:
    """Estimated peak bytes to decode and prepare ``upload`` (first frame only for DICOM)."""
    return upload.width * upload.height * DECODE_BYTES_PER_PIXEL


class DecodePool:
    """Bounded decode threads plus a first-come-first-served memory budget."""

    def __init__(self, max_concurrency: int, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._free = budget_bytes
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._executor = ThreadPoolExecutor(max_concurrency, thread_name_prefix="decode")

    @classmethod
    def from_settings(cls, settings: Settings) -> DecodePool:
        return cls(settings.max_decode_concurrency, settings.decode_memory_budget_bytes)

    @property
    def free_bytes(self) -> int:
        return self._free

    async def run(self, cost: int, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in a decode thread once ``cost`` bytes of the budget are reserved."""
        if cost > self.budget_bytes:
            raise PayloadTooLarge(
                f"decoding this image needs about {cost:,} bytes of working memory, over the "
                f"{self.budget_bytes:,}-byte decode budget: send a smaller image"
            )
        await self._reserve(cost)
        loop = asyncio.get_running_loop()
        try:
            future: Future[T] = self._executor.submit(fn, *args)
        except BaseException:
            self._release(cost)
            raise
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release, cost))
        return await asyncio.wrap_future(future)

    async def _reserve(self, cost: int) -> None:
        if not self._waiters and cost <= self._free:
            self._free -= cost
            return
        turn = asyncio.get_running_loop().create_future()
        entry = (cost, turn)
        self._waiters.append(entry)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release(cost)  # granted just as the request gave up
            else:
                self._waiters.remove(entry)
                self._grant()
            raise

    def _release(self, cost: int) -> None:
        self._free += cost
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self._waiters[0][0] <= self._free:
            cost, turn = self._waiters.popleft()
            self._free -= cost
            turn.set_result(None)

    def close(self) -> None:
        """Stop the threads once the decodes in flight finish (at app shutdown)."""
        self._executor.shutdown(wait=True, cancel_futures=True)


async def get_decode_pool(request: Request) -> DecodePool:
    # async: FastAPI runs a sync dependency in its thread pool, a thread hop per request
    return request.app.state.decoder


DecodePoolDep = Annotated[DecodePool, Depends(get_decode_pool)]
