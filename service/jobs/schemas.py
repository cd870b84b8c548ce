"""What goes over the wire about jobs: states and the job view (no training imports here)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


ACTIVE_STATES = (JobState.queued, JobState.running)
TERMINAL_STATES = (JobState.succeeded, JobState.failed, JobState.cancelled)


class JobKind(StrEnum):
    training = "training"
    evaluation = "evaluation"
    pacs_study = "pacs_study"  # DICOMweb: a study in a PACS, results stored back (STOW-RS)
    pacs_dimse = "pacs_dimse"  # instances the DIMSE listener received, results sent by C-STORE


class SubmittedJob(BaseModel):
    job_id: str
    state: JobState
    created: bool = Field(description="false when an Idempotency-Key matched an earlier job")


class ShardView(BaseModel):
    index: int
    start: int
    stop: int
    state: JobState
    done: int = 0
    total: int = 0
    attempts: int = 0
    error: str | None = None
    worker: str | None = None
    heartbeat_at: datetime | None = None


class JobView(BaseModel):
    """A job as the API reports it."""

    id: str
    kind: JobKind
    state: JobState
    progress: float = Field(description="percent, 0-100")
    epoch: int | None = None
    epochs: int | None = None
    batch: int | None = None
    batches: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] | None = Field(None, description="model ref and sha256, or report")
    error: str | None = None
    cancel_requested: bool = False
    attempts: int = 0
    worker: str | None = Field(None, description="host:pid of the process running it")
    idempotency_key: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    spec: dict[str, Any]
    shards: list[ShardView] = Field(default_factory=list)


class JobList(BaseModel):
    jobs: list[JobView]
    total: int
