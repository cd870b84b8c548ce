"""The evaluation tasks: a plan that splits the evaluation into shards, and one task per shard.

The plan sends one shard task per range (on batch boundaries); each shard writes its outcomes to
a result file, and the shard that completes the set merges them into the report (JSON, markdown,
PNG). A redelivered shard re-runs unless its result file was already written; a redelivered plan
after every shard was done just merges.

An evaluation asked for ``trust`` gets one more step in the merge: the trust section
(:mod:`training.trust.report`) on its own stratified subset, written beside the report as
``trust.json`` / ``.md`` / PNGs, under a heartbeat like any job run (it can take minutes). A
model that cannot be certified as asked (trained without noise, no ``noise_sigma``) fails the
job with the reason.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from celery import Task

from service.jobs.paths import PathRefused
from service.jobs.repository import this_holder
from service.jobs.requests import EvaluationRequest, EvaluationTrust
from service.jobs.schemas import JobState, JobView
from service.worker.common import (
    Stopped,
    claimed,
    describe,
    run_job,
    validated_request,
    write_atomically,
)
from service.worker.context import WorkerContext, worker_context
from service.worker.progress import Heartbeat, Throttle

log = logging.getLogger(__name__)


def _evaluation_request(ctx: WorkerContext, job: JobView) -> EvaluationRequest | None:
    """The job's request with its dataset confined again (it comes from the database)."""
    request: EvaluationRequest | None = validated_request(ctx, job, EvaluationRequest)
    if request is None:
        return None
    try:
        dataset = ctx.paths.dataset(request.dataset)
    except PathRefused as exc:
        ctx.repo.finish(job.id, JobState.failed, error=str(exc))
        return None
    return request.model_copy(update={"dataset": dataset})


def run_plan(ctx: WorkerContext, job: JobView) -> None:
    """Split the evaluation into shards on batch boundaries and send one task per shard."""
    from training.robustness.run import evaluation_samples
    from training.robustness.spec import shard_ranges

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
        ctx.repo.finish(job.id, JobState.failed, error=describe(exc, ctx.paths))
        return
    pending = [s for s in ctx.repo.set_shards(job.id, ranges) if s.state != JobState.succeeded]
    if not pending:  # a redelivered plan after every shard was done: just merge
        merge_report(ctx, job.id)
        return
    for shard in pending:
        ctx.dispatcher.shard(job.id, shard.index, shard.start, shard.stop)
    log.info("evaluation job %s: sent %d shard(s) %s", job.id, len(pending), ranges)


def run_shard(ctx: WorkerContext, job: JobView, index: int, start: int, stop: int) -> None:
    from training.robustness.run import evaluate_stored

    options, repo = ctx.options, ctx.repo
    request = _evaluation_request(ctx, job)
    if request is None:
        return
    result_file = options.shard_file(job.id, index)
    if not result_file.is_file():

        def work(heartbeat: Heartbeat) -> Any:
            throttle = Throttle(options.progress_interval_s)

            def progress(done: int, total: int) -> None:
                heartbeat.check()  # between batches: cooperative cancellation
                throttle(lambda: repo.shard_progress(job.id, index, done, total), done == total)

            return evaluate_stored(
                ctx.models,
                request.models,
                request.dataset,
                request.evaluation,
                split=request.split,
                limit=request.limit,
                shard=(start, stop),
                progress=progress,
            )

        outcomes = run_job(ctx, job, f"job {job.id} shard {index}", work, shard=index)
        if isinstance(outcomes, Stopped):
            return
        write_atomically(result_file, outcomes.model_dump_json())
    done, total = repo.shard_succeeded(job.id, index)
    log.info("job %s: shard %d done (%d/%d)", job.id, index, done, total)
    if done >= total:
        merge_report(ctx, job.id)


def merge_report(ctx: WorkerContext, job_id: str) -> None:
    """Merge every shard's outcomes into the report; write JSON, markdown and PNG."""
    from training.robustness.render import markdown_table, robustness_curve_png
    from training.robustness.report import build_report, merge_shards
    from training.robustness.results import ShardResult
    from training.store import code_version

    options, repo, paths = ctx.options, ctx.repo, ctx.paths
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
        error = describe(exc, paths)
        repo.finish(job_id, JobState.failed, error=f"merging the shards failed: {error}")
        return
    request = _evaluation_request(ctx, job)
    if request is None:
        return
    trust, trust_links = request.trust, {}
    if trust is not None:
        written = run_job(
            ctx,
            job,
            f"job {job_id} trust section",
            lambda heartbeat: _write_trust(ctx, request, trust, folder, heartbeat),
        )
        if isinstance(written, Stopped):
            return
        files.update({path.name: path for path in written})
        trust_links = {"trust": f"/jobs/{job_id}/trust", "trust_md": f"/jobs/{job_id}/trust.md"}
    result = {
        "report": f"/jobs/{job_id}/report",
        "report_png": f"/jobs/{job_id}/report.png",
        **trust_links,
        "files": {name: paths.redact(str(path)) for name, path in files.items()},
        "models": [m.key for m in report.models],
        "n": report.n,
    }
    if repo.finish(job_id, JobState.succeeded, result=result):
        shutil.rmtree(options.job_dir(job_id), ignore_errors=True)


def _write_trust(
    ctx: WorkerContext,
    request: EvaluationRequest,
    trust: EvaluationTrust,
    folder: Path,
    heartbeat: Heartbeat,
) -> list[Path]:
    """The trust section of ``request`` in ``folder`` (as ``medrobust evaluate --trust`` writes
    it: the same images for every model, the same σ policy); the files written."""
    import numpy as np

    from training.model_ref import ModelRef
    from training.pipeline import prepared_arrays
    from training.robustness.run import evaluation_samples
    from training.trust import FlipSpec
    from training.trust.report import evaluate_trust, write

    seed, settings = request.evaluation.seed, ctx.settings
    loaded = [ctx.models.load(r.name, r.selector) for r in map(ModelRef.parse, request.models)]
    data, indices = evaluation_samples(request.dataset, request.split, trust.limit, seed)
    subset = data.subset(indices)
    report = evaluate_trust(
        loaded,
        prepared_arrays(subset, loaded[0].manifest.preprocess),
        np.asarray(subset.labels),
        certify_spec=(
            {
                "n": trust.n,
                "n0": trust.n0,
                "alpha": trust.alpha,
                "batch_size": settings.trust_batch_size,
                "seed": seed,
            }
            if trust.certify
            else None
        ),
        flip_spec=(
            FlipSpec(
                steps=trust.steps,
                restarts=trust.restarts,
                max_epsilon=settings.trust_max_epsilon,
                max_model_calls=settings.trust_max_model_calls,
                seed=seed,
            )
            if trust.flip
            else None
        ),
        noise_sigma=trust.noise_sigma,
        progress=lambda done, total: heartbeat.check(),  # cooperative cancellation
    )
    return write(report, folder / "trust.json")


def evaluate(self: Task, job_id: str, busy_checks: int = 0) -> None:
    ctx = worker_context(self.app)
    job = claimed(self, ctx.repo.claim(job_id, this_holder()), busy_checks, f"job {job_id}")
    if job is not None:
        run_plan(ctx, job)


def evaluate_shard(
    self: Task, job_id: str, index: int, start: int, stop: int, busy_checks: int = 0
) -> None:
    ctx = worker_context(self.app)
    claim = ctx.repo.claim_shard(job_id, index, this_holder())
    job = claimed(self, claim, busy_checks, f"job {job_id} shard {index}")
    if job is not None:
        run_shard(ctx, job, index, start, stop)
