"""Prometheus metrics of one app: request latency per route, batch sizes, models, jobs.

Each app has its own :class:`~prometheus_client.CollectorRegistry`, so several apps (tests) in one
process never collide. Job gauges come from a hook: if the jobs runtime (``app.state.jobs``) has a
``stats()`` method returning ``{"jobs": {state: count}, "queues": {queue: depth}}``, every scrape
exports them as ``medrobust_jobs{state=...}`` and ``medrobust_queue_depth{queue=...}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("service.api.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


class JobsCollector(Collector):
    """Job counts and queue depths read from the jobs runtime at scrape time (if it says)."""

    def __init__(self, runtime: Callable[[], Any]) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = getattr(self._runtime(), "stats", None)
        if not callable(stats):
            return
        try:
            data = stats() or {}
        except Exception:  # a scrape must not fail because the broker is briefly away
            log.warning("jobs runtime stats() failed; job gauges skipped", exc_info=True)
            return
        jobs = GaugeMetricFamily("medrobust_jobs", "Jobs by state", labels=["state"])
        for state, count in sorted((data.get("jobs") or {}).items()):
            jobs.add_metric([str(state)], float(count))
        queues = GaugeMetricFamily(
            "medrobust_queue_depth", "Messages waiting per job queue", labels=["queue"]
        )
        for queue, depth in sorted((data.get("queues") or {}).items()):
            queues.add_metric([str(queue)], float(depth))
        yield jobs
        yield queues


class Metrics:
    """The app's instruments; ``render()`` is the ``/metrics`` body."""

    content_type = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_latency = Histogram(
            "medrobust_http_request_duration_seconds",
            "HTTP request latency by route template, method and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "medrobust_inference_batch_size",
            "Images per forward pass after dynamic micro-batching",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "medrobust_inference_batch_seconds",
            "Seconds per batched forward pass",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "medrobust_predictions", "Images predicted", ["model"], registry=self.registry
        )
        self.explanations = Counter(
            "medrobust_explanations", "Images explained", ["model"], registry=self.registry
        )
        self.models_loaded = Gauge(
            "medrobust_models_loaded", "Model versions held in memory", registry=self.registry
        )
        self._jobs_runtime: Callable[[], Any] = lambda: None
        self.registry.register(JobsCollector(lambda: self._jobs_runtime()))

    def watch_jobs(self, runtime: Callable[[], Any]) -> None:
        """Read job gauges from ``runtime()`` (e.g. ``lambda: app.state.jobs``) at scrape time."""
        self._jobs_runtime = runtime

    def observe_batch(self, model: str) -> Callable[[int, float], None]:
        size = self.batch_size.labels(model)
        seconds = self.batch_seconds.labels(model)

        def observe(batch: int, elapsed: float) -> None:
            size.observe(batch)
            seconds.observe(elapsed)

        return observe

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request under its route template (not its path,
    so label cardinality stays bounded whatever clients send)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request_latency.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )
