"""``openvino``: the stored model converted to an OpenVINO IR, cached next to it.

Conversion goes through Keras's own exporter (``model.export(format="openvino")``: a TensorFlow
concrete function of the forward pass handed to ``openvino.convert_model``), so every layer the
model is made of, the custom ones included, is converted from the graph Keras itself would run.

The IR lives in ``<model dir>/runtimes/openvino/`` with ``artefact.json``: the stored weights'
sha256 it was made from, its own sha256 (of ``model.xml`` then ``model.bin``), the converter
versions and the last parity gate run on it. A cached IR is reused only while its source sha256
matches the stored weights, its bytes still match its recorded sha256 and the installed OpenVINO
and Keras are the versions that made it; otherwise it is made again. A new IR is written to a
staging directory and renamed into place, so two processes that convert at once never read half
an artefact.

Inference runs in float32 (``INFERENCE_PRECISION_HINT``) with the latency hint: the micro-batcher
sends one batch at a time, and each should use every core.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training.metrics import softmax
from training.runtimes.artefact import ArtefactRecord, read_record, write_record
from training.runtimes.forward import OPENVINO, Forward

XML_FILE = "model.xml"
BIN_FILE = "model.bin"
COMPILE_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}


def artefact_sha256(directory: Path) -> str:
    """sha256 over the IR's two files, the graph then the weights."""
    digest = hashlib.sha256()
    for name in (XML_FILE, BIN_FILE):
        with (directory / name).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def converter_versions() -> dict[str, str]:
    import openvino

    return {"openvino": openvino.__version__, "keras": keras.__version__}


def _valid(directory: Path, weights_sha256: str) -> ArtefactRecord | None:
    record = read_record(directory)
    if record is None or record.source_weights_sha256 != weights_sha256:
        return None
    if record.versions != converter_versions():  # a new converter or runtime: convert again
        return None
    if not (directory / XML_FILE).is_file() or not (directory / BIN_FILE).is_file():
        return None
    if artefact_sha256(directory) != record.artefact_sha256:
        return None
    return record


def ensure_ir(model: keras.Model, weights_sha256: str, directory: Path) -> ArtefactRecord:
    """The IR of ``model`` in ``directory``: the cached one if still valid, else a new one."""
    record = _valid(directory, weights_sha256)
    if record is not None:
        return record
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-openvino-", dir=directory.parent))
    try:
        model.export(str(staging / XML_FILE), format="openvino", verbose=False)
        record = ArtefactRecord(
            runtime=OPENVINO,
            source_weights_sha256=weights_sha256,
            artefact_sha256=artefact_sha256(staging),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            versions=converter_versions(),
        )
        write_record(staging, record)
        if directory.exists():  # stale, or another process just made one: replace it
            shutil.rmtree(directory, ignore_errors=True)
        try:
            staging.rename(directory)
        except OSError:
            valid = _valid(directory, weights_sha256)  # another process won the rename
            if valid is None:
                raise
            return valid
        return record
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class OpenVinoForward:
    """A compiled IR's forward pass; one infer request per calling thread."""

    def __init__(self, xml_path: Path, config: dict[str, Any] | None = None) -> None:
        import openvino

        self._compiled = openvino.Core().compile_model(
            str(xml_path), "CPU", config or COMPILE_CONFIG
        )
        self._output = self._compiled.output(0)
        self._local = threading.local()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        result = request.infer({0: np.ascontiguousarray(pixels, dtype=np.float32)})
        return softmax(result[self._output])  # softmax copies out of the request's buffer


def openvino_forward(directory: Path) -> Forward:
    """The forward pass of the IR in ``directory`` (made by :func:`ensure_ir`)."""
    return OpenVinoForward(directory / XML_FILE)
