"""The PACS analysis through the serving runtime (``MEDROBUST_SERVE_RUNTIME``, training/runtimes/).

The model is the project's ResNet-50 baseline at 32 px for the seven HAM10000 classes (Grad-CAM
needs its ``conv5_block3_out``), random init with its logits bias centred on real HAM10000 images
so that its predictions spread over the classes, stored with a training spec whose validation
split is real HAM10000 (the parity gate's calibration). The sources are real HAM10000 test images
as DICOM Secondary Captures. The worker test runs the DIMSE
job function in this process against a real job database and a real pynetdicom storage SCP as
the destination (no Orthanc needed), as the worker would run it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pynetdicom import AE, StoragePresentationContexts, evt
from test_results_dicom import dciodvfy, validator  # noqa: F401 (a fixture)

from service.config import Settings
from service.dicom_node import DicomNode
from service.jobs.dispatch import make_app
from service.jobs.repository import this_holder
from service.jobs.requests import DimseRequest
from service.jobs.runtime import JobRuntime
from service.jobs.schemas import JobState
from service.pacs.analysis import MAX_OVERLAY_SIDE, analyze_dataset
from service.pacs.results import Finding, RuntimeIdentity, build_structured_report
from service.worker.context import WorkerContext
from service.worker.pacs_tasks import run_pacs_dimse
from tests.support.dicom_factory import make_dataset
from tests.support.net import free_port
from tests.support.runtime_models import (
    HAM_CLASSES,
    SIZE,
    model_dir,
    plant_channel_swapped_ir,
    store_ham_model,
)
from training import gradients
from training.data import load_ham10000
from training.dicom import dicom_to_image
from training.explain.cam import get_method
from training.explain.overlay import overlay
from training.model_ref import ModelIdentity
from training.models import LOGITS_LAYER, build_model
from training.preprocess import prepare_image, read_image
from training.runtimes import (
    KERAS,
    OPENVINO,
    ServingCache,
    ServingForward,
    ServingModel,
    keras_fp32,
    read_record,
    runtime_dir,
)
from training.store import LoadedModel

pytestmark = [pytest.mark.data, pytest.mark.slow]

# OpenVINO and TensorFlow both compute in float32 but sum in different orders: over dot products
# of ~10^3 terms each logit may move by ~10^3 · 2^-24 ≈ 6e-5 relative, far below this bound.
PROBABILITY_TOLERANCE = 1e-3
#: images of the HAM10000 test split turned into DICOM sources
SOURCES = 12


@pytest.fixture(scope="module")
def ham_sources(data_dir: Path) -> list[Dataset]:
    """Real HAM10000 test images (200 x 150 RGB) as DICOM Secondary Captures, modality XC."""
    ham = load_ham10000(data_dir / "ham10000_200x150")
    test = np.flatnonzero(ham.source_split == "test")[:SOURCES]
    return [
        make_dataset(read_image(ham.paths[i]), Modality="XC", BodyPartExamined="SKIN") for i in test
    ]


@pytest.fixture(scope="module")
def ham_resnet(tiny_ham: Any) -> keras.Model:
    """The ResNet-50 baseline (see the module docstring), centred on the HAM10000 test images."""
    keras.utils.set_random_seed(0)
    model = build_model("baseline", num_classes=len(HAM_CLASSES), input_size=SIZE)
    layer = model.get_layer(LOGITS_LAYER)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias - gradients.logits(model, tiny_ham.x_test).mean(axis=0)])
    return model


@pytest.fixture()
def stored(
    ham_resnet: keras.Model, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, LoadedModel]:
    """(store root, LoadedModel) of ``ham_resnet`` with a spec whose dataset is readable here."""
    monkeypatch.setenv("MEDROBUST_DATA_DIR", str(data_dir))
    return store_ham_model(ham_resnet, tmp_path / "models")


def _content_items(dataset: Dataset) -> Iterator[Dataset]:
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _content_items(item)


def _texts(sr: Dataset) -> list[str]:
    return [str(item.TextValue) for item in _content_items(sr) if item.ValueType == "TEXT"]


def _sr_probabilities(sr: Dataset) -> dict[str, float]:
    """Class meaning → probability, from the per-class measurement groups."""
    found = {}
    for item in _content_items(sr):
        if item.ValueType == "CONTAINER" and item.ConceptNameCodeSequence[0].CodeValue == "125007":
            finding = next(i for i in item.ContentSequence if i.ValueType == "CODE")
            number = next(i for i in item.ContentSequence if i.ValueType == "NUM")
            found[finding.ConceptCodeSequence[0].CodeMeaning] = float(
                number.MeasuredValueSequence[0].NumericValue
            )
    return found


def _prepared(loaded: LoadedModel, source: Dataset) -> np.ndarray:
    return prepare_image(dicom_to_image(source), loaded.manifest.preprocess)[None]


def test_probabilities_come_from_the_runtime_and_the_map_explains_its_class(
    stored: tuple[Path, LoadedModel], ham_sources: list[Dataset]
) -> None:
    """A runtime that answers differently from Keras (the Keras model behind an RGB → BGR swap,
    the broken conversion the parity gate exists to catch, here served on purpose) must be what
    the SR reports, and the overlay must explain the class it predicted, not Keras's."""
    _, loaded = stored
    keras = keras_fp32(loaded.model)

    def swapped(pixels: np.ndarray) -> np.ndarray:
        return keras(pixels[..., ::-1])

    differing = [
        s
        for s in ham_sources
        if keras(_prepared(loaded, s)).argmax() != swapped(_prepared(loaded, s)).argmax()
    ]
    assert differing, f"the swap changes no top-1 class on {len(ham_sources)} images"
    source = differing[0]
    forward = ServingForward("bgr-swapped", "bgr-swapped", swapped, artefact_sha256="ab" * 32)
    served = ServingModel(loaded.model, loaded.manifest, forward)

    results = analyze_dataset(source, served, check_modality=False)

    pixels = _prepared(loaded, source)
    expected = swapped(pixels)[0]
    classes = loaded.manifest.class_names
    reported = _sr_probabilities(results.sr)
    assert reported.keys() == set(classes)
    for index, name in enumerate(classes):
        assert reported[name] == pytest.approx(float(expected[index]), abs=1e-6)
    texts = _texts(results.sr)
    assert "runtime=bgr-swapped" in texts and f"runtime_artefact_sha256={'ab' * 32}" in texts
    assert results.runtime == RuntimeIdentity("bgr-swapped", "ab" * 32)

    cam = get_method("gradcam")
    image = dicom_to_image(source)
    assert max(image.shape[:2]) <= MAX_OVERLAY_SIDE  # drawn at full size
    runtime_class, keras_class = int(expected.argmax()), int(keras(pixels)[0].argmax())
    shown = results.sc.pixel_array.astype(int)
    distances = {
        k: np.abs(shown - overlay(image, cam.explain(loaded.model, pixels, k).maps[0])).mean()
        for k in (runtime_class, keras_class)
    }
    assert distances[runtime_class] < distances[keras_class]


def test_a_gated_openvino_runtime_serves_the_analysis_and_is_named(
    stored: tuple[Path, LoadedModel], ham_sources: list[Dataset]
) -> None:
    root, loaded = stored
    cache = ServingCache()
    served = cache.get(loaded, OPENVINO, model_dir(root, loaded))
    record = read_record(runtime_dir(model_dir(root, loaded), OPENVINO))
    assert record is not None and record.parity is not None and record.parity.passed
    assert record.parity.calibration == "validation split"
    assert served.forward.runtime == OPENVINO
    assert served.forward.artefact_sha256 == record.artefact_sha256
    assert cache.get(loaded, OPENVINO, model_dir(root, loaded)) is served  # derived once

    source = ham_sources[0]
    results = analyze_dataset(source, served, check_modality=False)
    plain = analyze_dataset(source, loaded, check_modality=False)  # Keras fp32, as before

    texts = _texts(results.sr)
    assert "runtime=openvino" in texts
    assert f"runtime_artefact_sha256={record.artefact_sha256}" in texts
    assert f"weights_sha256={loaded.manifest.weights_sha256}" in texts
    comment = next(text for text in texts if text.startswith("Predicted class"))
    assert f"openvino (artefact sha256 {record.artefact_sha256}) runtime" in comment
    assert "runtime=keras" in _texts(plain.sr)
    assert not any(text.startswith("runtime_artefact_sha256=") for text in _texts(plain.sr))

    ours, reference = _sr_probabilities(results.sr), _sr_probabilities(plain.sr)
    assert max(ours, key=ours.__getitem__) == max(reference, key=reference.__getitem__)
    for name, p in reference.items():
        assert ours[name] == pytest.approx(p, abs=PROBABILITY_TOLERANCE)
    # another runtime's SR is another document; Keras fp32's keeps the UID it always had
    assert results.sr.SOPInstanceUID != plain.sr.SOPInstanceUID
    assert results.sc.SOPInstanceUID == plain.sc.SOPInstanceUID
    finding = Finding("nv", 0.5, {"mel": 0.5, "nv": 0.5})
    model = ModelIdentity.of(loaded.manifest)
    unnamed = build_structured_report(source, finding, model)
    named = build_structured_report(source, finding, model, runtime=RuntimeIdentity(KERAS))
    assert unnamed.SOPInstanceUID == named.SOPInstanceUID


def test_a_conversion_that_fails_the_gate_leaves_the_analysis_on_keras(
    stored: tuple[Path, LoadedModel], ham_sources: list[Dataset]
) -> None:
    root, loaded = stored
    plant_channel_swapped_ir(root, loaded)
    served = ServingCache().get(loaded, OPENVINO, model_dir(root, loaded))
    assert (served.forward.runtime, served.forward.requested) == (KERAS, OPENVINO)
    assert "parity gate failed" in (served.forward.fallback_reason or "")

    results = analyze_dataset(ham_sources[0], served, check_modality=False)
    plain = analyze_dataset(ham_sources[0], loaded, check_modality=False)
    assert results.runtime == RuntimeIdentity(KERAS)
    assert "runtime=keras" in _texts(results.sr)
    assert _sr_probabilities(results.sr) == _sr_probabilities(plain.sr)
    assert results.sr.SOPInstanceUID == plain.sr.SOPInstanceUID


@pytest.mark.usefixtures("validator")
def test_an_sr_naming_a_converted_runtime_passes_dciodvfy(tmp_path: Path) -> None:
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    model = ModelIdentity(name="ham", version=1, weights_sha256="0" * 64)
    finding = Finding("nv", 0.75, {"mel": 0.25, "nv": 0.75})
    sr = build_structured_report(
        source, finding, model, runtime=RuntimeIdentity(OPENVINO, "a" * 64)
    )
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    result = dciodvfy(path)
    assert not result.errors, result.output
    assert f"runtime_artefact_sha256={'a' * 64}" in _texts(sr)


# ---- the worker's DIMSE job -------------------------------------------------------------------


class StorageNode:
    """A real DICOM storage SCP on a loopback port that keeps what it receives."""

    aet = "RECEIVER"

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Dataset] = []
        self._lock = threading.Lock()
        ae = AE(ae_title=self.aet)
        ae.supported_contexts = StoragePresentationContexts
        handlers = [(evt.EVT_C_STORE, self._store)]
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)

    def _store(self, event: Any) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        with self._lock:
            self.received.append(dataset)
        return 0x0000

    @property
    def node(self) -> DicomNode:
        return DicomNode(aet=self.aet, host="127.0.0.1", port=self.port)

    def shutdown(self) -> None:
        self._server.shutdown()


@pytest.fixture()
def storage_node() -> Iterator[StorageNode]:
    node = StorageNode()
    yield node
    node.shutdown()


def _dimse_job(
    root: Path, tmp_path: Path, model: str, sources: list[Dataset], node: StorageNode
) -> dict[str, Any]:
    """Submit a DIMSE job for ``sources`` (spooled to files), run it here as the worker runs it
    under ``serve_runtime=openvino``; returns the finished job's result."""
    settings = Settings(state_dir=tmp_path / "state", store_dir=root, serve_runtime=OPENVINO)
    spool = tmp_path / "spool"
    spool.mkdir(parents=True)
    files = []
    for source in sources:
        files.append(spool / f"{source.SOPInstanceUID}.dcm")
        source.save_as(files[-1], enforce_file_format=True)
    request = DimseRequest(
        files=[str(f) for f in files], ae_title="MEDROBUST", destination=node.node, model=model
    )
    runtime = JobRuntime(settings, sweep=False)
    try:
        job, _ = runtime.submit_pacs_dimse(request)
    finally:
        runtime.close()
    ctx = WorkerContext.open(make_app(settings))
    try:
        claimed = ctx.repo.claim(job.id, this_holder()).job
        assert claimed is not None
        assert run_pacs_dimse(ctx, claimed) is not None
        done = ctx.repo.get(job.id)
    finally:
        ctx.close()
    assert done is not None and done.state == JobState.succeeded, done
    assert not any(f.exists() for f in files)  # the spooled copies are gone with the job
    return dict(done.result or {})


def test_a_dimse_job_serves_through_the_configured_runtime(
    stored: tuple[Path, LoadedModel],
    ham_sources: list[Dataset],
    storage_node: StorageNode,
    tmp_path: Path,
) -> None:
    root, loaded = stored
    store_ham_model(loaded.model, root, "ham-nospec", with_spec=False)  # no gate possible

    result = _dimse_job(root, tmp_path / "a", "ham", ham_sources[:2], storage_node)
    record = read_record(runtime_dir(model_dir(root, loaded), OPENVINO))
    assert record is not None and record.parity is not None and record.parity.passed
    assert result["runtime"] == OPENVINO
    assert result["runtime_artefact_sha256"] == record.artefact_sha256
    assert "runtime_requested" not in result
    assert result["analysed"] == 2
    reports = [d for d in storage_node.received if d.Modality == "SR"]
    assert len(reports) == 2
    for sr in reports:
        assert "runtime=openvino" in _texts(sr)
        assert f"runtime_artefact_sha256={record.artefact_sha256}" in _texts(sr)

    storage_node.received.clear()
    fallback = _dimse_job(root, tmp_path / "b", "ham-nospec", ham_sources[:1], storage_node)
    assert (fallback["runtime"], fallback["runtime_artefact_sha256"]) == (KERAS, None)
    assert fallback["runtime_requested"] == OPENVINO
    (sr,) = [d for d in storage_node.received if d.Modality == "SR"]
    assert "runtime=keras" in _texts(sr)
