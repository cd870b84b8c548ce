"""The job side of the API process: ``app.state.jobs``.

``JobRuntime.open(settings)`` in the FastAPI lifespan, ``.checks`` for the probes and /metrics
(bounded: :mod:`service.jobs.bounded`), ``.close()`` at shutdown. Submissions are validated here
(422 on a bad spec, a path outside the allowed roots, an unknown model or a bad attack), written
to the job database first and only then sent to the broker; if sending fails the job is marked
failed (the broker's error goes to the log only), so no job is ever lost between the two, and
its Idempotency-Key is released, so a retry can succeed once the broker is back. A background
thread applies the staleness rule (:mod:`service.jobs.recovery`) every few seconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.config import Settings
from service.jobs.bounded import CachedChecks, DeadlineCalls, Outcome
from service.jobs.dispatch import Dispatcher, make_app
from service.jobs.errors import EnqueueError, IdempotencyConflict, JobSpecError
from service.jobs.paths import PathPolicy, PathRefused
from service.jobs.recovery import sweep_stale
from service.jobs.repository import open_job_database
from service.jobs.schemas import JobKind, JobState, JobView
from training.data.base import DatasetError
from training.data.check import DatasetSummary, check_dataset
from training.data.registry import DatasetSpec
from training.model_ref import ModelRef

log = logging.getLogger(__name__)

SEND_THREADS = 4  # concurrent sends to the broker; more submissions wait (up to their deadline)


class JobRuntime:
    """Job database + broker connection + staleness sweeper, for one API process."""

    def __init__(self, settings: Settings, *, sweep: bool = True) -> None:
        self.settings = settings
        self.paths = PathPolicy.from_settings(settings)
        self.options, self.repo = open_job_database(settings)
        self.options.state_dir.mkdir(parents=True, exist_ok=True)  # reports, job folders
        self.celery = make_app(settings)  # sends by task name: the worker is not imported
        self.dispatcher = Dispatcher(self.celery)
        # never on a shared pool: a hung broker or database may hold these threads for long
        self.checks = CachedChecks(
            {
                "database": self.repo.ping,
                "broker": self.dispatcher.ping,
                "job_counts": self.repo.count_by_state,
                "queue_depths": self.dispatcher.queue_depths,
            },
            timeout_s=settings.dependency_check_timeout_s,
            cache_s=settings.dependency_check_cache_s,
        )
        self._sends = DeadlineCalls(
            SEND_THREADS, timeout_s=settings.broker_send_timeout_s, thread_name="broker-send"
        )
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        if sweep:
            self._sweeper = threading.Thread(target=self._sweep_loop, name="job-sweeper")
            self._sweeper.daemon = True
            self._sweeper.start()

    @classmethod
    def open(cls, settings: Settings) -> JobRuntime:
        return cls(settings)

    def ping(self) -> dict[str, bool]:
        """Whether the job database and the broker answer (each within the check timeout)."""
        return {name: _passed(self.checks.get(name)) for name in ("database", "broker")}

    def stats(self) -> dict[str, dict[str, int]]:
        """For /metrics: ``{"jobs": {state: count}, "queues": {queue: depth}}``; a dependency
        that does not answer within the check timeout leaves its part out."""
        counts, depths = self.checks.get("job_counts"), self.checks.get("queue_depths")
        for name, outcome in (("job counts", counts), ("queue depths", depths)):
            if not outcome.ok:
                log.warning("reading %s for /metrics failed: %s", name, outcome.error)
        return {"jobs": counts.value or {}, "queues": depths.value or {}}

    def close(self) -> None:
        self._stop.set()
        self.checks.close()
        self._sends.close()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
        self.celery.close()
        self.repo.dispose()

    # ---- staleness ----------------------------------------------------------------------

    def _sweep_loop(self) -> None:
        interval = min(30.0, max(1.0, self.options.stale_after_s / 4))
        while not self._stop.wait(interval):
            self.sweep()

    def sweep(self) -> list[str]:
        try:
            return sweep_stale(self.repo, self.options, self.dispatcher)
        except Exception:  # noqa: BLE001 - the sweeper must outlive a database outage
            log.exception("stale-job sweep failed")
            return []

    # ---- submissions --------------------------------------------------------------------

    def submit_training(
        self, spec: Any, idempotency_key: str | None = None
    ) -> tuple[JobView, bool]:
        """``spec``: a ``training.config.TrainingSpec``. Returns (job, created).

        Its paths must lie inside the configured roots; the job keeps them as the caller wrote
        them (the worker confines them again before reading anything). The dataset is checked
        then (:func:`training.data.check.check_dataset`), so a file the worker could not train
        on is a 422 now rather than a failed job later."""
        confined = self._confined(self.paths.training_spec, spec)
        self._checked_dataset(confined.dataset)
        return self._submit(JobKind.training, spec.model_dump(mode="json"), idempotency_key)

    def submit_evaluation(
        self, request: Any, idempotency_key: str | None = None
    ) -> tuple[JobView, bool]:
        """``request``: a :class:`service.jobs.requests.EvaluationRequest`; its dataset is
        checked as a training job's is, and must have as many classes as every model."""
        dataset = self._checked_dataset(self._confined(self.paths.dataset, request.dataset))
        resolved, preprocess = [], set()
        for ref in request.models:
            manifest = self._manifest(ref)
            if len(manifest.class_names) != dataset.num_classes:
                raise JobSpecError(
                    f"{manifest.ref} has {len(manifest.class_names)} classes but the dataset "
                    f"has {dataset.num_classes} ({', '.join(dataset.class_names)})"
                )
            resolved.append(manifest.ref)
            preprocess.add(manifest.preprocess.model_dump_json())
        if len(set(resolved)) != len(resolved):
            raise JobSpecError(f"models name the same model twice: {resolved}")
        if len(preprocess) != 1:
            raise JobSpecError("models to compare must share their preprocessing (input size)")
        try:
            request.evaluation.validate_attacks()
        except Exception as exc:  # noqa: BLE001 - any attack constructor error is the caller's
            raise JobSpecError(f"bad attack parameters: {exc}") from exc
        spec = request.model_copy(
            update={"models": resolved, "shards": request.shards or self.options.evaluation_shards}
        ).model_dump(mode="json")
        return self._submit(JobKind.evaluation, spec, idempotency_key)

    def submit_pacs_study(
        self, request: Any, idempotency_key: str | None = None
    ) -> tuple[JobView, bool]:
        """``request``: a :class:`service.jobs.requests.PacsStudyRequest`; the PACS must be one
        the settings name (its URL is looked up by the worker, never taken from a request)."""
        if request.pacs not in self.settings.pacs_dicomweb:
            configured = ", ".join(sorted(self.settings.pacs_dicomweb)) or "none"
            raise JobSpecError(
                f"unknown PACS {request.pacs!r}; configured: {configured} "
                "(setting MEDROBUST_PACS_DICOMWEB)"
            )
        manifest = self._manifest(request.model)
        spec = request.model_copy(update={"model": manifest.ref}).model_dump(mode="json")
        return self._submit(JobKind.pacs_study, spec, idempotency_key)

    def submit_pacs_dimse(
        self, request: Any, idempotency_key: str | None = None
    ) -> tuple[JobView, bool]:
        """``request``: a :class:`service.jobs.requests.DimseRequest` (from the DIMSE listener)."""
        missing = [path for path in request.files if not Path(path).is_file()]
        if missing:
            raise JobSpecError(f"{len(missing)} spooled file(s) missing, e.g. {missing[0]}")
        manifest = self._manifest(request.model)
        spec = request.model_copy(update={"model": manifest.ref}).model_dump(mode="json")
        return self._submit(JobKind.pacs_dimse, spec, idempotency_key)

    @staticmethod
    def _confined(confine: Callable[[Any], Any], value: Any) -> Any:
        """Run a :class:`PathPolicy` check and return what it resolved; its refusal is the
        caller's mistake (422)."""
        try:
            return confine(value)
        except PathRefused as exc:
            raise JobSpecError(str(exc)) from exc

    def _checked_dataset(self, dataset: DatasetSpec) -> DatasetSummary:
        """The classes a confined ``dataset`` holds, or 422 saying what is wrong with it (the
        check reads headers and labels only, within fixed bounds)."""
        try:
            return check_dataset(dataset)
        except (DatasetError, OSError) as exc:  # OSError: a file the service may not read
            raise JobSpecError(f"dataset: {self.paths.redact(str(exc))}") from exc

    def _manifest(self, ref: str) -> Any:
        """The stored model ``ref`` names (a ``training.store.ModelManifest``), or 422."""
        from training.store import ModelStore, ModelStoreError

        try:
            parsed = ModelRef.parse(ref)
        except ValueError as exc:
            raise JobSpecError(str(exc)) from exc
        try:
            return ModelStore(self.options.store_dir).manifest(parsed.name, parsed.selector)
        except (ModelStoreError, ValueError, OSError) as exc:
            raise JobSpecError(f"unknown model {ref!r}: {self.paths.redact(str(exc))}") from exc

    def _submit(
        self, kind: JobKind, spec: dict[str, Any], idempotency_key: str | None
    ) -> tuple[JobView, bool]:
        job, created = self.repo.create(kind, spec, idempotency_key)
        if not created:
            if job.kind != kind or not _same_submission(job, spec):
                raise IdempotencyConflict(
                    f"Idempotency-Key {idempotency_key!r} was used for another submission "
                    f"(job {job.id})"
                )
            return job, False
        try:
            self._sends.run(self.dispatcher.job, job.id, kind.value)
        except Exception as exc:  # noqa: BLE001 - record it; never lose the job silently
            log.exception("enqueueing job %s failed", job.id)
            error = "could not enqueue: the job queue is unavailable"
            if not self.repo.fail_unsent(job.id, error=error):
                # a send that outlived its deadline went through: a worker holds the job
                return self.repo.get(job.id) or job, True
            failed = self.repo.get(job.id)
            raise EnqueueError(failed or job) from exc
        return job, True

    # ---- queries ------------------------------------------------------------------------

    def get(self, job_id: str) -> JobView | None:
        return self.repo.get(job_id)

    def list(
        self,
        state: JobState | None = None,
        kind: JobKind | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[JobView], int]:
        return self.repo.list(state, kind, limit, offset)

    def cancel(self, job_id: str) -> JobView | None:
        return self.repo.request_cancel(job_id)

    def report_file(self, job_id: str, name: str) -> Path:
        """``report.json``, ``report.md`` or ``report.png`` of an evaluation job."""
        return self.options.report_dir(job_id) / name


def _passed(outcome: Outcome) -> bool:
    """A ping that answered ``True`` in time (not False, an error or no answer)."""
    return outcome.ok and outcome.value is True


def _same_submission(job: JobView, spec: dict[str, Any]) -> bool:
    """Whether a reused Idempotency-Key comes with the submission it was first used for."""
    if job.kind == JobKind.evaluation:
        # refs were pinned to versions at submission (a later version may exist by now): compare
        # the model names and everything else the caller sent
        def names(s: dict[str, Any]) -> list[str]:
            return [ModelRef.parse(ref).name for ref in s.get("models", [])]

        def others(s: dict[str, Any]) -> dict[str, Any]:
            return {key: value for key, value in s.items() if key != "models"}

        return names(job.spec) == names(spec) and others(job.spec) == others(spec)
    if job.kind in (JobKind.pacs_study, JobKind.pacs_dimse):  # the model ref was pinned too

        def unpinned(s: dict[str, Any]) -> dict[str, Any]:
            return {**s, "model": ModelRef.parse(s["model"]).name}

        return unpinned(job.spec) == unpinned(spec)
    return job.spec == spec
