"""What a hung broker costs the API: ``/predict`` latency after ``/readyz`` calls, the time a job
submission takes to answer 503, and what a retry under the same Idempotency-Key gets once the
broker is back. Issue #10, items 7-9.

A real uvicorn API (the tests' tiny store: 32-px ResNet-50s) with ``REDIS_URL`` pointing at a TCP
endpoint on 127.0.0.1 that accepts connections and never answers (``tcp_faults.SwitchableBroker``).
Then: ``/predict`` latency (median of a few), ``--readyz`` sequential ``/readyz`` calls,
``/predict`` again; ``POST /jobs/training`` (its time to 503); the endpoint switched to forward to
the real Redis (127.0.0.1:6379, database ``--redis-db``, flushed first: use a database nothing
else uses); the same submission retried under the same key.

    .venv/bin/python -m bench.hung_broker_probe
    .venv/bin/python -m bench.hung_broker_probe --repo /path/to/another/checkout   # e.g. before

Run it as a module from the repository root, which makes ``tests.support`` importable: the
helpers are this checkout's, the API measured is ``--repo``'s.

Prints one JSON object. Seconds are wall-clock on this machine, for comparison within one run or
between checkouts on the same machine.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import tempfile
import time
from pathlib import Path

import redis

from tests.support.api_server import REPO, LiveServer, start_job_api
from tests.support.images import png_bytes
from tests.support.jobs_stack import training_spec
from tests.support.tcp_faults import SwitchableBroker


def _timed(call, *args, **kwargs):
    started = time.monotonic()
    response = call(*args, **kwargs)
    return response, round(time.monotonic() - started, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose API is measured")
    parser.add_argument("--readyz", type=int, default=8, help="/readyz calls before /predict")
    parser.add_argument("--redis-db", type=int, default=12)
    parser.add_argument("--check-timeout", type=float, default=2.0)
    parser.add_argument("--send-timeout", type=float, default=5.0)
    args = parser.parse_args()
    redis.Redis(db=args.redis_db).flushdb()
    with tempfile.TemporaryDirectory() as tmp, SwitchableBroker(mode="hung") as broker:
        root = Path(tmp)
        server = start_job_api(
            root,
            broker.url(args.redis_db),
            source=args.repo.resolve(),
            dependency_check_timeout_s=args.check_timeout,
            broker_send_timeout_s=args.send_timeout,
        )
        try:
            result = _probe(server, broker, root / "data" / "tiny", args)
        finally:
            server.stop()
    print(json.dumps(result, indent=2))


def _probe(
    server: LiveServer, broker: SwitchableBroker, data: Path, args: argparse.Namespace
) -> dict:
    body = {"image_base64": base64.b64encode(png_bytes()).decode(), "task": "derm"}
    spec = training_spec("probe", data)
    key = {"Idempotency-Key": "hung-broker-probe"}
    with server.client(timeout=300) as client:
        before = [_timed(client.post, "/predict", json=body)[1] for _ in range(5)]
        readyz = [_timed(client.get, "/readyz") for _ in range(args.readyz)]
        predict, predict_s = _timed(client.post, "/predict", json=body)
        metrics_s = _timed(client.get, "/metrics")[1]
        jobs_ready = client.get("/readyz/jobs")
        submit, submit_s = _timed(client.post, "/jobs/training", json=spec, headers=key)
        broker.set_mode("up")
        retry, retry_s = _timed(client.post, "/jobs/training", json=spec, headers=key)
    queued = [
        json.loads(m)["headers"]["id"]
        for m in redis.Redis(db=args.redis_db).lrange("training", 0, -1)
    ]
    retried = retry.json()
    return {
        "repo": str(args.repo),
        "settings": {"check_timeout_s": args.check_timeout, "send_timeout_s": args.send_timeout},
        "predict_s_before_readyz_median": statistics.median(before),
        "readyz": {
            "calls": args.readyz,
            "statuses": sorted({r.status_code for r, _ in readyz}),
            "max_s": max(s for _, s in readyz),
            "checks": readyz[-1][0].json().get("checks"),
        },
        "readyz_jobs_status": jobs_ready.status_code,
        f"predict_s_after_{args.readyz}_readyz": predict_s,
        "predict_status": predict.status_code,
        "metrics_s": metrics_s,
        "submit_to_hung_broker": {"status": submit.status_code, "seconds": submit_s},
        "retry_same_key_after_broker_up": {
            "status": retry.status_code,
            "seconds": retry_s,
            "body": retried,
            "task_in_redis_queue": f"train-{retried.get('job_id')}" in queued,
        },
    }


if __name__ == "__main__":
    main()
