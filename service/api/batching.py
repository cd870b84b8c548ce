"""Dynamic micro-batching: concurrent requests for one model share one forward pass.

Each :class:`MicroBatcher` owns one model's queue, one collector task on the event loop and one
executor thread. A request submits its input (an array, or an awaitable that produces it, e.g.
decoding in a worker thread) and awaits its own row of the output.

Batching policy: the collector takes everything queued, up to ``max_batch_size``. If that is less
than a full batch and other requests are known to be on their way, it waits for them until the
batch fills or the oldest queued request has waited ``max_wait_s``; with ``always_wait`` it waits
that long whether or not more are expected (the classic fixed-delay policy). Then the batch runs
in the executor thread, off the event loop. Requests that arrive while a batch runs queue up for
the next one, so under load batches fill without waiting, and a lone request on an idle server
never waits for company that is not coming.

"On their way" are requests submitted as awaitables that are still decoding, and requests whose
body is still being read and parsed (:data:`ARRIVALS`, which a route enters before it knows the
model: every batcher of the process waits for those, at most ``max_wait_s`` as always). Without
the latter, clients that all come back at once after a batch (steady load) were split: the first
few parsed requests made a batch, the rest queued behind it, and such splits tended to persist
(bench/http_predict.py at 64 px, concurrency 16: mean batch 9.8 of 16; with them 14.6).

The batcher knows nothing about models: ``run`` is any ``(N, ...) array → (N, ...) array``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("service.api.batching")

BatchObserver = Callable[[int, float], None]  # (batch size, seconds in run)


class BatcherClosed(RuntimeError):
    """The batcher was shut down before the request was served."""


@dataclass
class _Pending:
    x: np.ndarray
    future: asyncio.Future[np.ndarray]
    arrived: float


class Arrival:
    """One request on its way to a batcher: counted in its :class:`Arrivals` until
    :meth:`done` (called at its first submit, or when it fails before one)."""

    def __init__(self, arrivals: Arrivals) -> None:
        self._arrivals: Arrivals | None = arrivals

    def done(self) -> None:
        """No longer on its way (idempotent)."""
        if self._arrivals is not None:
            self._arrivals._left()
            self._arrivals = None


class Arrivals:
    """Requests of this process that will submit to some batcher but do not know which yet."""

    def __init__(self) -> None:
        self.count = 0
        #: the events of collectors waiting now, each for its batch to fill
        self._waiting: set[asyncio.Event] = set()

    @contextlib.contextmanager
    def coming(self) -> Iterator[Arrival]:
        """Count one request from here until it submits (``batcher.submit(x, arrival)``) or
        leaves this block, whichever comes first."""
        self.count += 1
        arrival = Arrival(self)
        try:
            yield arrival
        finally:
            arrival.done()

    def _left(self) -> None:
        self.count -= 1
        for changed in self._waiting:  # a collector waiting for it looks again
            changed.set()


#: the requests on their way to this process's batchers (they all run on one event loop)
ARRIVALS = Arrivals()


class MicroBatcher:
    """Coalesces :meth:`submit` calls into batches for ``run``; start and close it on one loop."""

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int,
        max_wait_s: float,
        name: str = "model",
        observe: BatchObserver | None = None,
        always_wait: bool = False,
        arrivals: Arrivals = ARRIVALS,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._run = run
        self._observe = observe
        self._pending: list[_Pending] = []
        self.always_wait = always_wait
        self._incoming = 0  # submitted awaitables still producing their input
        self._arrived = asyncio.Event()  # something is pending
        self._changed = asyncio.Event()  # a request was queued, or an expected one gave up
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"batch-{name}")
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._arrivals = arrivals

    def start(self) -> None:
        """Start the collector on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._collect(), name=f"batcher-{self.name}"
            )

    async def submit(
        self, x: np.ndarray | Awaitable[np.ndarray], arrival: Arrival | None = None
    ) -> np.ndarray:
        """``run(stack([x, ...]))[i]`` for this request's ``x``.

        Pass an awaitable (e.g. ``asyncio.to_thread(decode, ...)``) to let the collector know
        the request is coming while it is still being prepared; its errors propagate here.
        ``arrival`` (from ``ARRIVALS.coming()``) ends when this request is counted here instead.
        """
        if arrival is not None:
            arrival.done()
        if self._closed:
            raise BatcherClosed(f"{self.name}: the model is being unloaded")
        self.start()
        if not isinstance(x, np.ndarray):
            self._incoming += 1
            try:
                x = await x
            finally:
                self._incoming -= 1
                self._changed.set()
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(x, future, time.monotonic()))
        self._arrived.set()
        self._changed.set()
        return await future

    async def close(self) -> None:
        """Stop collecting, fail what is still queued, and let a running batch finish."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for item in self._pending:
            if not item.future.done():
                item.future.set_exception(BatcherClosed(f"{self.name}: unloaded"))
        self._pending.clear()
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            if not self._pending:
                self._arrived.clear()
                continue
            deadline = self._pending[0].arrived + self.max_wait_s
            while len(self._pending) < self.max_batch_size and (
                self.always_wait or self._incoming > 0 or self._arrivals.count > 0
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.clear()
                self._arrivals._waiting.add(self._changed)
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), remaining)
                finally:
                    self._arrivals._waiting.discard(self._changed)
            batch = self._pending[: self.max_batch_size]
            self._pending = self._pending[self.max_batch_size :]
            if not self._pending:
                self._arrived.clear()
            batch = [item for item in batch if not item.future.done()]  # cancelled by a client
            if not batch:
                continue
            await self._run_batch(loop, batch)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            stacked = np.stack([item.x for item in batch])
            out = await loop.run_in_executor(self._executor, self._run, stacked)
            if len(out) != len(batch):
                raise RuntimeError(f"{self.name}: {len(out)} outputs for a batch of {len(batch)}")
        except asyncio.CancelledError:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(BatcherClosed(f"{self.name}: unloaded"))
            raise
        except Exception as exc:  # every waiting request learns of the failure
            log.exception("%s: batch of %d failed", self.name, len(batch))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        if self._observe is not None:
            self._observe(len(batch), time.perf_counter() - started)
        for item, row in zip(batch, out, strict=True):
            if not item.future.done():
                item.future.set_result(row)
