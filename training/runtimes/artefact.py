"""Where a runtime's derived files live and ``artefact.json``, the record kept with them.

Each runtime other than ``keras`` gets ``<model dir>/runtimes/<runtime>/`` beside the stored
model (``<store>/<name>/<version>/``). Its ``artefact.json`` says which stored weights it derives
from, the artefact's own sha256 (None when the runtime has no file of its own, as ``keras-bf16``),
the library versions, for an int8 artefact the images it was quantised on, for a bf16 runtime
the margin guard measured on the model's training images, and the last parity
gate run for it, so an operator can read why a runtime serves or does not serve a model without
starting the service.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pydantic import BaseModel, Field

from training.runtimes.parity import ParityReport

RUNTIMES_DIR = "runtimes"
RECORD_FILE = "artefact.json"


class QuantisationRecord(BaseModel):
    """The images an int8 artefact's quantisation ranges were calibrated on."""

    source: str = Field(description="e.g. 'training split'")
    images: int
    pixels_sha256: str = Field(description="sha256 of the prepared calibration pixels")
    preset: str = Field(description="the quantiser's preset, e.g. 'performance'")


class GuardRecord(BaseModel):
    """How a bf16 runtime's margin guard was set (:mod:`training.runtimes.openvino_bf16`)."""

    source: str = Field(description="e.g. 'training split'")
    images: int
    pixels_sha256: str = Field(description="sha256 of the prepared images it was measured on")
    max_abs_probability_diff: float = Field(description="largest bf16 vs f32 |Δp| on them")
    guard: float = Field(description="top-1/top-2 gaps at or below this are recomputed in f32")


class ArtefactRecord(BaseModel):
    """``artefact.json``: what a derived artefact was made from and how it fared at the gate."""

    runtime: str
    source_weights_sha256: str
    artefact_sha256: str | None = None
    created_at: str
    versions: dict[str, str]
    quantisation: QuantisationRecord | None = None
    guard: GuardRecord | None = None
    parity: ParityReport | None = None


def runtime_dir(model_dir: Path, runtime: str) -> Path:
    """``<model dir>/runtimes/<runtime>``: a runtime's files for one stored model version."""
    return model_dir / RUNTIMES_DIR / runtime


def read_record(directory: Path) -> ArtefactRecord | None:
    """The record in ``directory``, or None if there is none we can read."""
    path = directory / RECORD_FILE
    if not path.is_file():
        return None
    try:
        return ArtefactRecord.model_validate_json(path.read_text())
    except ValueError:
        return None  # a record we cannot read is one we do not trust: derive again


def write_record(directory: Path, record: ArtefactRecord) -> None:
    """Replace ``artefact.json`` atomically (a concurrent reader sees the old or the new one)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{RECORD_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(record.model_dump_json(indent=1))
    tmp.replace(directory / RECORD_FILE)
