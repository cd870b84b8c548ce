"""One DICOM instance in, its SR and Secondary Capture out: what every PACS path runs per image.

Backend-free (it calls ``training/`` for decoding, the model and Grad-CAM, and
:mod:`service.pacs.results` for the DICOM objects), so the DICOMweb job, the DIMSE node and tests
share it. Unsuitable instances raise :class:`training.dicom.DicomInputError` (its subclasses say
why: not an image, unsupported transfer syntax, wrong modality for the model ...); callers report
those as skipped rather than failed.

The probabilities come from the model's serving runtime, as ``/predict``'s do: a
:class:`training.runtimes.ServingModel` (what the worker loads, under ``MEDROBUST_SERVE_RUNTIME``)
carries the runtime that passed its parity gate, a plain loaded model is served by Keras fp32.
Grad-CAM and the robustness block always run on the Keras model (gradients stay in Keras).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
from pydicom import Dataset

from service.pacs.results import (
    Finding,
    ResultObjects,
    RuntimeIdentity,
    build_secondary_capture,
    build_structured_report,
)
from training.dicom import check_acceptance, dicom_to_image
from training.explain.cam import get_method
from training.explain.overlay import overlay
from training.model_ref import ModelIdentity
from training.predict import prediction_from_probabilities
from training.preprocess import prepare_image
from training.runtimes import KERAS, forward_of
from training.store import LoadedModel

if TYPE_CHECKING:
    from service.pacs.trust import PacsTrust

#: Longest side of the Secondary Capture: a full-resolution radiograph as 8-bit RGB is ~11 MB,
#: and a heatmap from a 7x7 feature map gains nothing from more pixels than a screen shows.
MAX_OVERLAY_SIDE = 1024


def analyze_dataset(
    source: Dataset,
    loaded: LoadedModel,
    method: str = "gradcam",
    *,
    check_modality: bool = True,
    max_overlay_side: int = MAX_OVERLAY_SIDE,
    trust: PacsTrust | None = None,
) -> ResultObjects:
    """Classify ``source`` with ``loaded`` and explain the predicted class with ``method``.

    ``check_modality`` refuses (``ModalityMismatchError``) an instance whose modality or body
    part the model does not declare it accepts. The overlay is drawn over the whole decoded image
    (scaled to at most ``max_overlay_side`` pixels on its longest side), not over the model's
    square input as ``training.explain.explain_image`` draws it, so the Secondary Capture keeps
    the source's aspect ratio and orientation and can be read next to it. The model's
    preprocessing resizes without cropping, so the map covers exactly that image.

    ``trust`` adds the prediction's robustness block (computed on the same prepared pixels the
    model classified) to the SR and to the returned objects; a block past its deadline is left
    out, with the reason.

    The SR names the runtime that computed the probabilities (and its artefact's sha256); the
    overlay explains the class that runtime predicted, so finding and map always agree.
    """
    manifest = loaded.manifest
    if check_modality:
        check_acceptance(source, manifest.accepts, model=manifest.ref)
    image = dicom_to_image(source)
    pixels = prepare_image(image, manifest.preprocess)[None]
    cam = get_method(method)
    forward = forward_of(loaded)
    if forward.runtime == KERAS:  # Grad-CAM's own forward pass is Keras fp32's: no second one
        explanation = cam.explain(loaded.model, pixels)
        probabilities = explanation.probabilities[0]
    else:
        probabilities = forward(pixels)[0]
        explanation = cam.explain(loaded.model, pixels, int(np.argmax(probabilities)))
    prediction = prediction_from_probabilities(manifest, probabilities)
    model = ModelIdentity.of(manifest)
    finding = Finding(prediction.top_class, prediction.top_probability, prediction.probabilities)
    shown = overlay(_fit(image, max_overlay_side), explanation.maps[0])
    robustness, skipped = (None, None) if trust is None else trust.block(loaded, pixels[0])
    runtime = RuntimeIdentity.of(forward)
    return ResultObjects(
        sr=build_structured_report(source, finding, model, robustness=robustness, runtime=runtime),
        sc=build_secondary_capture(source, shown, model, method=method, layer=cam.layer),
        robustness=robustness,
        robustness_skipped=skipped,
        runtime=runtime,
    )


def _fit(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` scaled down (area interpolation) so that its longest side is ``max_side``."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
