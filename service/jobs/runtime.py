"""The job side of the API process: ``app.state.jobs``.

``JobRuntime.open(settings)`` in the FastAPI lifespan, ``.ping()`` for /readyz, ``.close()`` at
shutdown. Submissions are validated here (422 on a bad spec, unknown model or bad attack), written
to the job database first and only then sent to the broker; if sending fails the job is marked
failed with the broker's error, so no job is ever lost between the two. A background thread
applies the staleness rule (:mod:`service.jobs.recovery`) every few seconds.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from service.config import Settings
from service.jobs.options import JobOptions
from service.jobs.recovery import sweep_stale
from service.jobs.repository import JobRepository
from service.jobs.schemas import JobKind, JobState, JobView

log = logging.getLogger(__name__)


class JobSpecError(ValueError):
    """The submission is well-formed JSON but cannot run (unknown model, bad attack ...): 422."""


class IdempotencyConflict(ValueError):
    """The Idempotency-Key was used before for a different submission: 409."""


class EnqueueError(RuntimeError):
    """The job was recorded but the broker refused it; the job is marked failed: 503."""

    def __init__(self, job: JobView, cause: BaseException) -> None:
        super().__init__(f"the job queue is unavailable: {cause}")
        self.job = job


class JobRuntime:
    """Job database + broker connection + staleness sweeper, for one API process."""

    def __init__(self, settings: Settings, *, sweep: bool = True) -> None:
        from service.worker.celery_app import Dispatcher, make_celery

        self.settings = settings
        self.options = JobOptions.from_settings(settings)
        self.options.state_dir.mkdir(parents=True, exist_ok=True)
        self.repo = JobRepository(
            settings.resolved_database_url,
            lease_s=self.options.lease_s,
            max_attempts=self.options.max_attempts,
        )
        self.repo.create_schema()
        self.celery = make_celery(settings)
        self.dispatcher = Dispatcher(self.celery)
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
        return {"database": self.repo.ping(), "broker": self.dispatcher.ping()}

    def stats(self) -> dict[str, dict[str, int]]:
        """For /metrics: ``{"jobs": {state: count}, "queues": {queue: depth}}``."""
        try:
            queues = self.dispatcher.queue_depths()
        except Exception:  # noqa: BLE001 - the broker is down: report jobs without depths
            log.warning("reading queue depths failed", exc_info=True)
            queues = {}
        return {"jobs": self.repo.count_by_state(), "queues": queues}

    def close(self) -> None:
        self._stop.set()
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
        """``spec``: a ``training.config.TrainingSpec``. Returns (job, created)."""
        _require_dataset(spec.dataset)
        return self._submit(JobKind.training, spec.model_dump(mode="json"), idempotency_key)

    def submit_evaluation(
        self, request: Any, idempotency_key: str | None = None
    ) -> tuple[JobView, bool]:
        """``request``: a :class:`service.jobs.requests.EvaluationRequest`."""
        _require_dataset(request.dataset)
        resolved, preprocess = [], set()
        for ref in request.models:
            manifest = self._manifest(ref)
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

    def _manifest(self, ref: str) -> Any:
        """The stored model ``ref`` names (a ``training.store.ModelManifest``), or 422."""
        from training.store import NAME_PATTERN, ModelStore, ModelStoreError, parse_model_ref

        name, selector = parse_model_ref(ref)
        if not NAME_PATTERN.match(name) or not NAME_PATTERN.match(selector):
            raise JobSpecError(f"bad model ref {ref!r}: expected NAME[:VERSION|ALIAS]")
        try:
            return ModelStore(self.options.store_dir).manifest(name, selector)
        except (ModelStoreError, ValueError, OSError) as exc:
            raise JobSpecError(f"unknown model {ref!r}: {exc}") from exc

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
            self.dispatcher.job(job.id, kind.value)
        except Exception as exc:  # noqa: BLE001 - record it; never lose the job silently
            log.exception("enqueueing job %s failed", job.id)
            self.repo.finish(job.id, JobState.failed, error=f"could not enqueue: {exc}")
            failed = self.repo.get(job.id)
            raise EnqueueError(failed or job, exc) from exc
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


def _require_dataset(dataset: Any) -> None:
    from training.data.registry import resolve_path

    try:
        path = resolve_path(dataset.path)
        found = path.exists()
    except (OSError, ValueError) as exc:  # e.g. a NUL byte in the path
        raise JobSpecError(f"bad dataset path {dataset.path!r}: {exc}") from exc
    if not found:
        raise JobSpecError(f"dataset path {dataset.path!r} not found (looked at {path})")


def _same_submission(job: JobView, spec: dict[str, Any]) -> bool:
    if job.kind == JobKind.evaluation:
        # refs were pinned to versions at submission (a later version may exist by now): compare
        # the model names and everything else the caller sent
        def names(s: dict[str, Any]) -> list[str]:
            return [ref.partition(":")[0] for ref in s.get("models", [])]

        keys = ("dataset", "evaluation", "split", "limit", "shards")
        return names(job.spec) == names(spec) and all(job.spec.get(k) == spec.get(k) for k in keys)
    if job.kind in (JobKind.pacs_study, JobKind.pacs_dimse):  # the model ref was pinned too

        def unpinned(s: dict[str, Any]) -> dict[str, Any]:
            return {**s, "model": str(s.get("model", "")).partition(":")[0]}

        return unpinned(job.spec) == unpinned(spec)
    return job.spec == spec
