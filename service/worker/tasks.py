"""The job tasks: thin adapters from a job id to a ``training/`` call and back to the job record.

Every task takes ids (and a shard's index and range), loads the spec from the job database,
claims the job (so a duplicate or stale delivery does nothing), runs, and records the outcome.
Retries happen only for transient errors (broker or database connection); a bad spec or a failing
model marks the job failed at once. TensorFlow is imported inside the task bodies, i.e. only in
pool processes.

Crash safety: with ``acks_late`` + ``task_reject_on_worker_lost`` a task whose process is killed
goes back to the broker; the redelivery claims the job (its holder is dead) and training resumes
from the job's checkpoint folder; a shard re-runs unless its result file was already written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from celery import Celery, Task
from kombu.exceptions import OperationalError as BrokerError
from pydantic import BaseModel, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError as DatabaseInterfaceError
from sqlalchemy.exc import OperationalError as DatabaseError

from service.jobs.repository import Claim, ClaimOutcome, this_holder
from service.jobs.schemas import JobState, JobView
from service.worker.celery_app import (
    EVALUATE_SHARD_TASK,
    EVALUATE_TASK,
    PACS_DIMSE_TASK,
    PACS_STUDY_TASK,
    TRAIN_TASK,
)
from service.worker.context import WorkerContext, worker_context
from service.worker.progress import Heartbeat, JobAborted, JobCancelled, Throttle

log = logging.getLogger(__name__)

#: worth a retry: the broker or the database could not be reached for a moment
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseError,
    DatabaseInterfaceError,
    BrokerError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
)
#: a redelivery that finds the job held by a live process re-checks this many times, then drops
BUSY_CHECKS = 2


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:4000]


def write_atomically(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)


def json_safe(value: Any) -> Any:
    """NaN and infinities become None (PostgreSQL's json refuses them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


# ---- claiming ---------------------------------------------------------------------------------


def _claimed(task: Task, claim: Claim, busy_checks: int, what: str) -> JobView | None:
    """The job to run, or None; a busy claim re-checks later (the holder may be dying)."""
    if claim.outcome == ClaimOutcome.claimed:
        return claim.job
    if claim.outcome == ClaimOutcome.busy:
        if busy_checks < BUSY_CHECKS:
            options = worker_context(task.app).options
            log.info(
                "%s is held by a live process; checking again in %.0f s", what, options.lease_s
            )
            raise task.retry(
                countdown=options.lease_s,
                kwargs={**task.request.kwargs, "busy_checks": busy_checks + 1},
                max_retries=(task.request.retries or 0) + 1,
            )
        log.warning("%s is still held by a live process: dropping this duplicate delivery", what)
    elif claim.outcome == ClaimOutcome.exhausted:
        log.error("%s: attempts used up; marked failed", what)
    else:
        log.info("%s: nothing to do (finished, cancelled or unknown)", what)
    return None


# ---- training ---------------------------------------------------------------------------------


class TrainingListener:
    """Turns ``training.fit.ProgressEvent`` s into job progress; raises when asked to stop."""

    def __init__(self, ctx: WorkerContext, job: JobView, heartbeat: Heartbeat) -> None:
        self.ctx, self.job_id, self.heartbeat = ctx, job.id, heartbeat
        self.throttle = Throttle(ctx.options.progress_interval_s)
        self.metrics: dict[str, Any] = dict(job.metrics or {})
        self.metrics.setdefault("history", [])

    def __call__(self, event: Any) -> None:
        self.heartbeat.check()
        batches = max(event.batches, 1)
        total = max(event.epochs, 1) * batches
        if event.stage == "batch":
            done = (event.epoch - 1) * batches + event.batch
            self.metrics["last_batch"] = {"epoch": event.epoch, "batch": event.batch}
            self.metrics["last_batch"].update(event.metrics)
        elif event.stage == "epoch":
            done = event.epoch * batches
            row = {"epoch": event.epoch, **event.metrics}
            history = [h for h in self.metrics["history"] if h.get("epoch") != event.epoch]
            self.metrics["history"] = [*history, row]
            self.metrics["last_epoch"] = row
        else:  # "done": the best weights are being evaluated and stored
            done = total
            self.metrics["final"] = dict(event.metrics)
        values: dict[str, Any] = {
            "progress": min(99.0, 100.0 * done / total),
            "epochs": event.epochs,
            "metrics": json_safe(self.metrics),
        }
        if event.stage != "done":  # "done" carries no batch counts
            values.update(epoch=event.epoch, batch=event.batch, batches=event.batches)
        self.throttle(
            lambda: self.ctx.repo.update_progress(self.job_id, **values),
            force=event.stage != "batch",
        )


def run_training(ctx: WorkerContext, job: JobView) -> None:
    from training.config import TrainingSpec
    from training.workflow import train_and_store

    options, repo = ctx.options, ctx.repo
    outcome = options.outcome_file(job.id)
    if outcome.is_file():  # an earlier attempt stored the model but died before recording it
        repo.finish(job.id, JobState.succeeded, result=json.loads(outcome.read_text()))
        return
    try:
        spec = TrainingSpec.model_validate(job.spec)
    except ValidationError as exc:
        repo.finish(job.id, JobState.failed, error=f"invalid training spec: {exc}")
        return
    checkpoint = options.checkpoint_dir(job.id)
    with Heartbeat(repo, job.id, options.heartbeat_s) as heartbeat:
        listener = TrainingListener(ctx, job, heartbeat)
        try:
            manifest = train_and_store(spec, ctx.store, checkpoint, listener)
        except JobCancelled:
            repo.finish(job.id, JobState.cancelled, error="cancelled on request")
            shutil.rmtree(options.job_dir(job.id), ignore_errors=True)
            return
        except JobAborted as exc:
            log.warning("training job %s stopped: %s", job.id, exc)
            return
        except SoftTimeLimitExceeded:
            repo.finish(
                job.id,
                JobState.failed,
                error=f"time limit exceeded ({options.soft_time_limit_s} s); "
                "the checkpoint is kept",
            )
            return
        except Exception as exc:  # the model, data or spec failed: not worth a retry
            log.exception("training job %s failed", job.id)
            repo.finish(job.id, JobState.failed, error=describe(exc))
            return
    result = json_safe(
        {
            "model": manifest.ref,
            "name": manifest.name,
            "version": manifest.version,
            "weights_sha256": manifest.weights_sha256,
            "best_epoch": manifest.best_epoch,
            "epochs_run": manifest.epochs_run,
            "metrics": {k: v.model_dump(mode="json") for k, v in manifest.metrics.items()},
            "location": str(options.store_dir / manifest.name / str(manifest.version)),
        }
    )
    write_atomically(outcome, json.dumps(result))
    # Before the job reads as succeeded, so nobody sees a finished job with its checkpoint still
    # there; the outcome file already makes a retry of this step a no-op.
    shutil.rmtree(checkpoint, ignore_errors=True)
    repo.finish(job.id, JobState.succeeded, result=result)


def train(self: Task, job_id: str, busy_checks: int = 0) -> None:
    ctx = worker_context(self.app)
    job = _claimed(self, ctx.repo.claim(job_id, this_holder()), busy_checks, f"job {job_id}")
    if job is not None:
        run_training(ctx, job)


# ---- evaluation -------------------------------------------------------------------------------


def validated_request(ctx: WorkerContext, job: JobView, model: type[BaseModel]) -> Any:
    """``job.spec`` as ``model``; None after failing the job when the stored spec no longer
    validates (written by another version): re-running it cannot help."""
    try:
        return model.model_validate(job.spec)
    except ValidationError as exc:
        ctx.repo.finish(job.id, JobState.failed, error=f"invalid {job.kind.value} spec: {exc}")
        return None


def _evaluation_request(ctx: WorkerContext, job: JobView) -> Any:
    from service.jobs.requests import EvaluationRequest

    return validated_request(ctx, job, EvaluationRequest)


def run_plan(ctx: WorkerContext, job: JobView) -> None:
    """Split the evaluation into shards on batch boundaries and send one task per shard."""
    from training.evaluation import evaluation_samples
    from training.robustness import shard_ranges

    request = _evaluation_request(ctx, job)
    if request is None:
        return
    try:
        _, indices = evaluation_samples(
            request.dataset, request.split, request.limit, request.evaluation.seed
        )
        if len(indices) == 0:
            raise ValueError(f"the {request.split} split holds no images")
        shards = request.shards or ctx.options.evaluation_shards
        ranges = shard_ranges(len(indices), shards, request.evaluation.batch_size)
    except Exception as exc:  # the data cannot be loaded: not worth a retry
        log.exception("evaluation job %s: planning failed", job.id)
        ctx.repo.finish(job.id, JobState.failed, error=describe(exc))
        return
    pending = [s for s in ctx.repo.set_shards(job.id, ranges) if s.state != JobState.succeeded]
    if not pending:  # a redelivered plan after every shard was done: just merge
        merge_report(ctx, job.id)
        return
    for shard in pending:
        ctx.dispatcher.shard(job.id, shard.index, shard.start, shard.stop)
    log.info("evaluation job %s: sent %d shard(s) %s", job.id, len(pending), ranges)


def run_shard(ctx: WorkerContext, job: JobView, index: int, start: int, stop: int) -> None:
    from training.evaluation import evaluate_stored

    options, repo = ctx.options, ctx.repo
    request = _evaluation_request(ctx, job)
    if request is None:
        return
    result_file = options.shard_file(job.id, index)
    if not result_file.is_file():
        with Heartbeat(repo, job.id, options.heartbeat_s, shard=index) as heartbeat:
            throttle = Throttle(options.progress_interval_s)

            def progress(done: int, total: int) -> None:
                heartbeat.check()  # between batches: cooperative cancellation
                throttle(lambda: repo.shard_progress(job.id, index, done, total), done == total)

            try:
                outcomes = evaluate_stored(
                    ctx.models,
                    request.models,
                    request.dataset,
                    request.evaluation,
                    split=request.split,
                    limit=request.limit,
                    shard=(start, stop),
                    progress=progress,
                )
            except JobCancelled:
                repo.finish(job.id, JobState.cancelled, error="cancelled on request")
                return
            except JobAborted as exc:
                log.warning("job %s shard %d stopped: %s", job.id, index, exc)
                return
            except SoftTimeLimitExceeded:
                repo.shard_failed(
                    job.id, index, f"time limit exceeded ({options.soft_time_limit_s} s)"
                )
                return
            except Exception as exc:  # a model or attack failed: not worth a retry
                log.exception("job %s shard %d failed", job.id, index)
                repo.shard_failed(job.id, index, describe(exc))
                return
        write_atomically(result_file, outcomes.model_dump_json())
    done, total = repo.shard_succeeded(job.id, index)
    log.info("job %s: shard %d done (%d/%d)", job.id, index, done, total)
    if done >= total:
        merge_report(ctx, job.id)


def merge_report(ctx: WorkerContext, job_id: str) -> None:
    """Merge every shard's outcomes into the report; write JSON, markdown and PNG."""
    from training.reporting import markdown_table, robustness_curve_png
    from training.robustness import ShardResult, build_report, merge_shards
    from training.store import code_version

    options, repo = ctx.options, ctx.repo
    job = repo.get(job_id)
    if job is None or job.state != JobState.running:
        return
    try:
        shards = [
            ShardResult.model_validate_json(options.shard_file(job_id, s.index).read_text())
            for s in job.shards
        ]
        report = build_report(merge_shards(shards), code_version())
        folder = options.report_dir(job_id)
        files = {
            "json": folder / "report.json",
            "markdown": folder / "report.md",
            "png": folder / "report.png",
        }
        write_atomically(files["json"], report.model_dump_json(indent=1))
        write_atomically(files["markdown"], markdown_table(report))
        write_atomically(files["png"], robustness_curve_png(report))
    except Exception as exc:
        log.exception("evaluation job %s: merging the shards failed", job_id)
        repo.finish(job_id, JobState.failed, error=f"merging the shards failed: {describe(exc)}")
        return
    result = {
        "report": f"/jobs/{job_id}/report",
        "report_png": f"/jobs/{job_id}/report.png",
        "files": {name: str(path) for name, path in files.items()},
        "models": [m.key for m in report.models],
        "n": report.n,
    }
    if repo.finish(job_id, JobState.succeeded, result=result):
        shutil.rmtree(options.job_dir(job_id), ignore_errors=True)


def evaluate(self: Task, job_id: str, busy_checks: int = 0) -> None:
    ctx = worker_context(self.app)
    job = _claimed(self, ctx.repo.claim(job_id, this_holder()), busy_checks, f"job {job_id}")
    if job is not None:
        run_plan(ctx, job)


def evaluate_shard(
    self: Task, job_id: str, index: int, start: int, stop: int, busy_checks: int = 0
) -> None:
    ctx = worker_context(self.app)
    claim = ctx.repo.claim_shard(job_id, index, this_holder())
    job = _claimed(self, claim, busy_checks, f"job {job_id} shard {index}")
    if job is not None:
        run_shard(ctx, job, index, start, stop)


def register(app: Celery) -> None:
    """Register the job tasks on ``app`` (called by ``make_celery``)."""
    common: dict[str, Any] = {
        "bind": True,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "autoretry_for": TRANSIENT_ERRORS,
        "retry_backoff": 2,
        "retry_backoff_max": 60,
        "retry_jitter": True,
        "max_retries": 5,
    }
    app.task(name=TRAIN_TASK, **common)(train)
    app.task(name=EVALUATE_TASK, **common)(evaluate)
    app.task(name=EVALUATE_SHARD_TASK, **common)(evaluate_shard)
    from service.worker import pacs_tasks

    app.task(name=PACS_STUDY_TASK, **common)(pacs_tasks.pacs_study)
    app.task(name=PACS_DIMSE_TASK, **common)(pacs_tasks.pacs_dimse)
