"""The one settings object of the network side; no other module reads the environment.

Every field can be set as an environment variable with the ``MEDROBUST_`` prefix (or in a
``.env`` file); ``REDIS_URL`` and ``DATABASE_URL`` are also read under their conventional names.
It extends :class:`training.settings.CoreSettings`, the settings the ``medrobust`` CLI reads too
(``store_dir``, ``data_dir``), so both tools agree on them under one name each.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, StringConstraints

from training.settings import CoreSettings

Scope = str  # "predict" | "explain" | "jobs" | "admin"
AETitle = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16)]
ALL_SCOPES = ("predict", "explain", "jobs", "admin")
#: the runtimes of ``training.runtimes.RUNTIMES``, spelt out so the settings validate them
ServeRuntime = Literal["keras", "keras-bf16", "openvino", "openvino-bf16", "openvino-int8"]


class Settings(CoreSettings):
    # storage (store_dir and data_dir: CoreSettings)
    state_dir: Path = Field(Path("var/state"), description="job database, embedded broker, reports")
    # job requests may name files only inside these (service/jobs/paths.py)
    data_roots: list[Path] = Field(
        default_factory=list,
        description="roots job datasets may lie in (symlinks followed); default: [data_dir]",
    )
    weights_dir: Path | None = Field(
        None, description="backbone weights files jobs may name (besides the model store)"
    )
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "MEDROBUST_DATABASE_URL"),
        description="SQLAlchemy URL; default: a SQLite file in state_dir",
    )
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "MEDROBUST_REDIS_URL"),
        description="Celery broker (no result store: job state lives in the job database); "
        "unset: an embedded broker on local disk",
    )

    # serving
    preload_models: list[str] = Field(
        default_factory=list, description="NAME[:VERSION] loaded at start-up (all if empty)"
    )
    default_models: dict[str, str] = Field(
        default_factory=dict, description="task -> model ref used when a request names none"
    )
    max_batch_size: int = Field(16, ge=1, description="dynamic micro-batching: largest batch")
    max_batch_wait_ms: float = Field(5.0, ge=0, description="how long a batch waits to fill")
    # openvino-bf16: the fastest runtime that passed the parity gate in bench/serve_runtimes.py
    # (trained models at 224 and 48 px; docs/results/benchmarks-cpu.md), openvino (f32) where the
    # CPU has no bf16 units; keras-bf16 and openvino-int8 failed the gate there and are opt-in
    serve_runtime: ServeRuntime = Field(
        "openvino-bf16",
        description="forward pass of /predict and of the PACS analysis: keras (fp32), keras-bf16, "
        "openvino (fp32), openvino-bf16 (CPUs with bf16 units; images the model is nearly "
        "undecided about recomputed in f32) or openvino-int8 (quantised on the model's training "
        "images); a runtime that fails its parity gate against keras fp32, or a model without a "
        "readable validation split to gate it on, is served by keras",
    )
    max_upload_bytes: int = Field(32 * 1024 * 1024, ge=1)
    # 4096 × 4096: the models take 32-1024 px inputs, so this is resolution to spare for a
    # large dermoscopy photo (4000 × 4000) or a CR/DX chest image (~3000 × 3500; the largest
    # sample in shared/data/dicom_samples is 1955 × 1841), and at DECODE_BYTES_PER_PIXEL
    # (service.api.decoding) one such image fits exactly in the default decode budget.
    max_image_pixels: int = Field(
        4096 * 4096, ge=1, description="decompression-bomb guard: width × height × frames"
    )
    max_decode_concurrency: int = Field(
        2, ge=1, description="images decoded at once, in the API's own decode threads"
    )
    decode_memory_budget_bytes: int = Field(
        1024**3,
        ge=1,
        description="estimated working memory of all decodes in flight; more waits its turn, "
        "and one image that alone needs more is refused (413)",
    )
    body_read_timeout_s: float = Field(
        30.0, gt=0, description="a request body silent this long mid-upload is answered 408"
    )
    allowed_formats: list[str] = Field(default_factory=lambda: ["png", "jpeg", "dicom"])

    # auth: token -> scopes; empty means auth is off (development only)
    api_tokens: dict[str, list[Scope]] = Field(default_factory=dict)

    # jobs
    job_soft_time_limit_s: int = Field(6 * 3600, ge=1)
    job_hard_time_limit_s: int = Field(6 * 3600 + 300, ge=1)
    evaluation_shards: int = Field(2, ge=1)
    job_heartbeat_s: float = Field(2.0, gt=0, description="how often a running job says alive")
    job_stale_after_s: float = Field(300.0, gt=0, description="silent longer: resend or fail")
    job_max_attempts: int = Field(3, ge=1, description="deliveries before a job is failed")
    job_progress_interval_s: float = Field(0.5, ge=0, description="progress write throttle")
    broker_visibility_timeout_s: int | None = Field(
        None, ge=1, description="Redis redelivery of unacked tasks; default hard limit + 600 s"
    )
    # a hung database or broker costs the API bounded time and threads (service/jobs/bounded.py)
    dependency_check_timeout_s: float = Field(
        2.0, gt=0, description="/readyz and /metrics wait this long for the database or broker"
    )
    dependency_check_cache_s: float = Field(
        1.0, ge=0, description="a dependency check's answer is reused this long"
    )
    broker_send_timeout_s: float = Field(
        5.0, gt=0, description="a job submission waits this long for the broker, then 503"
    )

    # PACS over DICOMweb: jobs name a PACS, never a URL (a request cannot make us fetch any URL)
    pacs_dicomweb: dict[str, str] = Field(
        default_factory=dict,
        description='PACS name -> DICOMweb base URL, e.g. {"orthanc": "http://pacs:8042/dicom-web"}',
    )
    pacs_timeout_s: float = Field(30.0, gt=0, description="one DICOMweb request's time limit")
    pacs_max_instances: int = Field(500, ge=1, description="largest study a PACS job analyses")

    host: str = "127.0.0.1"
    port: int = 8000

    # the DIMSE "AI node" (service/pacs/listener.py): receives images by C-STORE, queues their
    # analysis, C-STOREs the SR + Secondary Capture to the destination
    dimse_enabled: bool = Field(False, description="make run also starts the DIMSE listener")
    dimse_ae_title: AETitle = Field("MEDROBUST", description="our AE title")
    dimse_host: str = Field("127.0.0.1", description="address the listener binds")
    dimse_port: int = Field(11112, ge=1, le=65535)
    dimse_allowed_calling_aets: list[AETitle] = Field(
        default_factory=list, description="calling AE titles accepted; empty refuses everyone"
    )
    dimse_destination_ae: AETitle | None = Field(None, description="results go here")
    dimse_destination_host: str = "127.0.0.1"
    dimse_destination_port: int | None = Field(None, ge=1, le=65535)
    dimse_spool_dir: Path | None = Field(
        None, description="received instances until their job ends; default state_dir/dimse"
    )
    dimse_model: str | None = Field(None, description="NAME[:VERSION|ALIAS] run on received images")
    # checked here, so a typo stops the node at start-up instead of failing every association
    dimse_explain_method: Literal["gradcam", "gradcam++"] = Field(
        "gradcam", description="the overlay in the Secondary Capture"
    )

    dimse_robustness: Literal["none", "flip", "certify", "all"] = Field(
        "none", description="the SR also records each prediction's robustness block"
    )

    # trust at serve time: robustness=flip|certify|all on /predict and /explain (service/api/
    # trust.py); a request over any limit gets 422 before any work
    trust_max_n: int = Field(10_000, ge=1, description="certify: most estimation samples")
    trust_max_n0: int = Field(1_000, ge=1, description="certify: most selection samples")
    trust_max_steps: int = Field(50, ge=1, le=1000, description="flip: most attack steps per run")
    trust_max_restarts: int = Field(5, ge=1, le=20, description="flip: most restarts per ε")
    trust_max_epsilon: float = Field(
        64.0, gt=0, le=255, description="flip: largest L∞ ε searched, pixel units"
    )
    trust_max_epsilon_l2: float = Field(
        4096.0, gt=0, description="flip: largest L2 ε searched, pixel units"
    )
    trust_max_model_calls: int = Field(
        5000, ge=1, le=1_000_000, description="flip: model calls per norm per answer"
    )
    trust_batch_size: int = Field(256, ge=1, le=4096, description="certify: noisy images per call")
    trust_deadline_s: float = Field(
        60.0, gt=0, description="a robustness block's wall-clock budget; past it: 503"
    )
    trust_concurrency: int = Field(1, ge=1, description="robustness blocks computed at once")

    @property
    def resolved_dimse_spool_dir(self) -> Path:
        return self.dimse_spool_dir or self.state_dir / "dimse"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.state_dir / 'jobs.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once; tests build their own ``Settings(...)`` instead."""
    return Settings()
