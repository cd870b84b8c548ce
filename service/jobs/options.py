"""Job knobs and on-disk layout, derived from the one ``Settings`` object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.config import Settings


@dataclass(frozen=True)
class JobOptions:
    state_dir: Path
    store_dir: Path
    heartbeat_s: float
    stale_after_s: float
    max_attempts: int
    progress_interval_s: float
    soft_time_limit_s: int
    hard_time_limit_s: int
    visibility_timeout_s: int
    evaluation_shards: int

    @classmethod
    def from_settings(cls, settings: Settings) -> JobOptions:
        hard = settings.job_hard_time_limit_s
        heartbeat = settings.job_heartbeat_s
        return cls(
            state_dir=Path(settings.state_dir).resolve(),
            store_dir=Path(settings.store_dir).resolve(),
            heartbeat_s=heartbeat,
            stale_after_s=max(settings.job_stale_after_s, 10 * heartbeat),
            max_attempts=settings.job_max_attempts,
            progress_interval_s=settings.job_progress_interval_s,
            soft_time_limit_s=settings.job_soft_time_limit_s,
            hard_time_limit_s=hard,
            visibility_timeout_s=settings.broker_visibility_timeout_s or hard + 600,
            evaluation_shards=settings.evaluation_shards,
        )

    @property
    def lease_s(self) -> float:
        """A running job whose heartbeat is older than this may be taken over by a redelivery."""
        return max(10.0, 5 * self.heartbeat_s)

    # on-disk layout under state_dir
    @property
    def broker_dir(self) -> Path:
        return self.state_dir / "broker"

    def job_dir(self, job_id: str) -> Path:
        return self.state_dir / "jobs" / job_id

    def checkpoint_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "checkpoint"

    def outcome_file(self, job_id: str) -> Path:
        """Training: the stored model's ref, written before the job record is updated."""
        return self.job_dir(job_id) / "outcome.json"

    def shard_file(self, job_id: str, index: int) -> Path:
        return self.job_dir(job_id) / "shards" / f"{index:03d}.json"

    def report_dir(self, job_id: str) -> Path:
        return self.state_dir / "reports" / job_id
