"""The training task: a job id in, a stored model (and its ref in the job record) out.

Crash safety: with ``acks_late`` + ``task_reject_on_worker_lost`` a task whose process is killed
goes back to the broker; the redelivery claims the job (its holder is dead) and training resumes
from the job's checkpoint folder. A model stored by an attempt that died before recording it is
found through the job's outcome file, so it is never trained twice.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from celery import Task
from pydantic import ValidationError

from service.jobs.paths import PathRefused
from service.jobs.repository import this_holder
from service.jobs.schemas import JobState, JobView
from service.worker.common import Stopped, claimed, json_safe, run_job, write_atomically
from service.worker.context import WorkerContext, worker_context
from service.worker.progress import Heartbeat, Throttle


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

    options, repo, paths = ctx.options, ctx.repo, ctx.paths
    outcome = options.outcome_file(job.id)
    if outcome.is_file():  # an earlier attempt stored the model but died before recording it
        repo.finish(job.id, JobState.succeeded, result=json.loads(outcome.read_text()))
        return
    try:
        spec = TrainingSpec.model_validate(job.spec)
    except ValidationError as exc:
        repo.finish(job.id, JobState.failed, error=f"invalid training spec: {exc}")
        return
    try:  # the spec comes from the database: confine its paths again, read what was checked
        spec = paths.training_spec(spec)
    except PathRefused as exc:
        repo.finish(job.id, JobState.failed, error=str(exc))
        return
    checkpoint = options.checkpoint_dir(job.id)
    manifest = run_job(
        ctx,
        job,
        f"training job {job.id}",
        lambda heartbeat: train_and_store(
            spec, ctx.store, checkpoint, TrainingListener(ctx, job, heartbeat)
        ),
        limit_note="; the checkpoint is kept",
    )
    if isinstance(manifest, Stopped):
        if manifest.state == JobState.cancelled:
            shutil.rmtree(options.job_dir(job.id), ignore_errors=True)
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
            "location": paths.redact(
                str(options.store_dir / manifest.name / str(manifest.version))
            ),
        }
    )
    write_atomically(outcome, json.dumps(result))
    # Before the job reads as succeeded, so nobody sees a finished job with its checkpoint still
    # there; the outcome file already makes a retry of this step a no-op.
    shutil.rmtree(checkpoint, ignore_errors=True)
    repo.finish(job.id, JobState.succeeded, result=result)


def train(self: Task, job_id: str, busy_checks: int = 0) -> None:
    ctx = worker_context(self.app)
    job = claimed(self, ctx.repo.claim(job_id, this_holder()), busy_checks, f"job {job_id}")
    if job is not None:
        run_training(ctx, job)
