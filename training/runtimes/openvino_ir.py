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

Inference runs in float32 (``INFERENCE_PRECISION_HINT``), compiled twice. A batch of one goes to
a latency-hint compilation (one stream, every core on that one image). A larger batch is split
across the streams of a throughput-hint compilation (OpenVINO picks the streams: one per core on
a 2-core machine), which run at once, one core each. Why both: a server shares its cores with
the event loop that parses requests and writes answers. A single multi-threaded stream stalls
whenever one of its threads loses its core (the others wait for it at every layer), while a
single-threaded stream only slows down by the time it lost. On the 2-core development machine (AMD
Zen 3) with a Python thread busy 30 % of the time, the attention ResNet-50's batch-16 throughput
at 64 px dropped from 165-196 to 141 img/s in one stream, and from 188-226 to 175 img/s with
two. A lone image keeps its latency: in one single-threaded stream it took 13.1 ms vs 10.7 ms.
On quiet cores the split barely matters (AMD Zen 4, bf16, batch 16: 633 vs 657 img/s at 64 px,
57 vs 56 at 224 px), but behind the HTTP server it does: ``bench/http_predict.py`` at 64 px went
from 0.63-0.66 of raw throughput to 0.69 (347-333 to 418-460 img/s, fuller batches), interleaved.
The second compilation costs memory (about 200 MB more for a ResNet-50).

Threads are not pinned to cores (``ENABLE_CPU_PINNING``), for the same reason: a pinned thread
waits for its own core while another sits idle. On the 2-core machine with another job running,
pinning made the attention ResNet-50's batch-16 throughput swing between 79 and 197 img/s against
189-324 without it (Keras: ~220).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training.metrics import softmax
from training.runtimes.artefact import (
    ArtefactRecord,
    QuantisationRecord,
    read_record,
    write_record,
)
from training.runtimes.forward import OPENVINO, Forward

XML_FILE = "model.xml"
BIN_FILE = "model.bin"
COMPILE_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False}


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


def ir_record(
    runtime: str,
    weights_sha256: str,
    staging: Path,
    versions: dict[str, str],
    quantisation: QuantisationRecord | None = None,
) -> ArtefactRecord:
    """The record of an IR just written to ``staging``, stamped now."""
    return ArtefactRecord(
        runtime=runtime,
        source_weights_sha256=weights_sha256,
        artefact_sha256=artefact_sha256(staging),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        versions=versions,
        quantisation=quantisation,
    )


def valid_ir(
    directory: Path, weights_sha256: str, versions: dict[str, str]
) -> ArtefactRecord | None:
    """The record of the IR in ``directory`` if it derives from ``weights_sha256``, was made by
    ``versions`` and its bytes are still the ones recorded; else None (make it again)."""
    record = read_record(directory)
    if record is None or record.source_weights_sha256 != weights_sha256:
        return None
    if record.versions != versions:  # a new converter or runtime: convert again
        return None
    if not (directory / XML_FILE).is_file() or not (directory / BIN_FILE).is_file():
        return None
    if artefact_sha256(directory) != record.artefact_sha256:
        return None
    return record


def publish(
    directory: Path,
    make: Callable[[Path], ArtefactRecord],
    valid: Callable[[], ArtefactRecord | None],
) -> ArtefactRecord:
    """``make(staging)`` writes an IR and returns its record; the staging directory (beside
    ``directory``) then replaces ``directory`` by a rename. When another process renamed its own
    first, that one is kept if ``valid()`` accepts it."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{directory.name}-", dir=directory.parent))
    try:
        record = make(staging)
        write_record(staging, record)
        if directory.exists():  # stale, or another process just made one: replace it
            shutil.rmtree(directory, ignore_errors=True)
        try:
            staging.rename(directory)
        except OSError:
            kept = valid()  # another process won the rename
            if kept is None:
                raise
            return kept
        return record
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_ir(model: keras.Model, weights_sha256: str, directory: Path) -> ArtefactRecord:
    """The IR of ``model`` in ``directory``: the cached one if still valid, else a new one."""

    def valid() -> ArtefactRecord | None:
        return valid_ir(directory, weights_sha256, converter_versions())

    def make(staging: Path) -> ArtefactRecord:
        model.export(str(staging / XML_FILE), format="openvino", verbose=False)
        return ir_record(OPENVINO, weights_sha256, staging, converter_versions())

    return valid() or publish(directory, make, valid)


class OpenVinoForward:
    """A compiled IR's forward pass: one image on all cores, a batch split across streams.

    Each calling thread gets its own infer requests. ``split_batches=False`` compiles the latency
    form only, for a forward that only ever sees a few images (the bf16 runtime's fp32 recompute).
    """

    def __init__(
        self, xml_path: Path, config: dict[str, Any] | None = None, split_batches: bool = True
    ) -> None:
        import openvino

        core = openvino.Core()
        config = config or COMPILE_CONFIG
        self._latency = core.compile_model(
            str(xml_path), "CPU", {**config, "PERFORMANCE_HINT": "LATENCY"}
        )
        self._streams = (
            core.compile_model(str(xml_path), "CPU", {**config, "PERFORMANCE_HINT": "THROUGHPUT"})
            if split_batches
            else None
        )
        self.stream_count = int(self._streams.get_property("NUM_STREAMS")) if self._streams else 1
        self._local = threading.local()

    @property
    def precision(self) -> str:
        """The precision the plugin compiled the IR's arithmetic in: ``f32``, ``bf16`` …"""
        return str(self._latency.get_property("INFERENCE_PRECISION_HINT").get_type_name())

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        if self._streams is None or self.stream_count < 2 or len(pixels) < 2:
            request = getattr(self._local, "latency", None)
            if request is None:
                request = self._local.latency = self._latency.create_infer_request()
            return softmax(request.infer({0: pixels})[0])  # softmax copies out of the buffer
        requests = getattr(self._local, "streams", None)
        if requests is None:
            streams = self._streams
            requests = [streams.create_infer_request() for _ in range(self.stream_count)]
            self._local.streams = requests
        parts = np.array_split(pixels, min(len(requests), len(pixels)))
        for request, part in zip(requests, parts, strict=False):
            request.start_async({0: part})
        logits = []
        for request, _ in zip(requests, parts, strict=False):
            request.wait()
            logits.append(request.get_output_tensor(0).data)  # concatenate copies
        return softmax(np.concatenate(logits))


def openvino_forward(directory: Path) -> Forward:
    """The forward pass of the IR in ``directory`` (made by :func:`ensure_ir`)."""
    return OpenVinoForward(directory / XML_FILE)
