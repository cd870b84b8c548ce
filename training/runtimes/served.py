"""A loaded model together with the forward pass that serves it, for paths outside the API.

The API keeps each model's :class:`~training.runtimes.forward.ServingForward` next to its
micro-batcher. A worker's PACS analysis passes a :class:`~training.store.LoadedModel` through
several layers (DICOMweb or DIMSE loop, robustness plan, summary) that only need the Keras model
and the manifest; :class:`ServingModel` *is* such a loaded model and carries its serving forward
pass along, so those layers stay as they are while the analysis at the bottom reads its
probabilities from the runtime (:func:`forward_of`) and its gradients from ``model``.

:class:`ServingCache` keeps one per (model version, weights, runtime) in a process: deriving a
runtime and running its parity gate costs seconds to minutes and must not be paid per job.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.runtimes.forward import KERAS, ServingForward, keras_fp32
from training.runtimes.serving import serving_forward
from training.store import LoadedModel


@dataclass(frozen=True)
class ServingModel(LoadedModel):
    """A loaded model whose probabilities come from ``forward`` (gated against its Keras fp32
    forward pass); ``model`` stays the Keras model every gradient is taken on."""

    forward: ServingForward


def forward_of(loaded: LoadedModel) -> ServingForward:
    """The forward pass that serves ``loaded``: a :class:`ServingModel`'s own, else Keras fp32."""
    if isinstance(loaded, ServingModel):
        return loaded.forward
    return ServingForward(KERAS, KERAS, keras_fp32(loaded.model))


def runtime_summary(served: ServingModel) -> dict[str, Any]:
    """What a result says about the runtime behind its probabilities (as ``/predict`` does):
    the runtime and its artefact's sha256, and after a fallback the runtime asked for. The
    fallback's reason, which may name server paths, stays in the log."""
    forward = served.forward
    summary: dict[str, Any] = {
        "runtime": forward.runtime,
        "runtime_artefact_sha256": forward.artefact_sha256,
    }
    if forward.runtime != forward.requested:
        summary["runtime_requested"] = forward.requested
    return summary


class ServingCache:
    """:class:`ServingModel` per (name, version, weights sha256, runtime), least recently used
    dropped beyond ``capacity`` (each holds a Keras model and possibly a compiled runtime)."""

    def __init__(self, capacity: int = 4) -> None:
        self.capacity = capacity
        self._served: OrderedDict[tuple[str, int, str, str], ServingModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, loaded: LoadedModel, runtime: str, model_dir: Path) -> ServingModel:
        """``loaded`` served by ``runtime`` (gated, falling back to Keras fp32 with a logged
        reason: :func:`~training.runtimes.serving.serving_forward`); ``model_dir`` is the
        stored version's directory, where the runtime's artefact is cached."""
        manifest = loaded.manifest
        key = (manifest.name, manifest.version, manifest.weights_sha256, runtime)
        with self._lock:  # one derivation per key, even when two tasks ask at once
            served = self._served.get(key)
            if served is None or served.model is not loaded.model:
                forward = serving_forward(loaded, runtime, model_dir)
                served = ServingModel(loaded.model, manifest, forward)
                self._served[key] = served
            self._served.move_to_end(key)
            while len(self._served) > self.capacity:
                self._served.popitem(last=False)
            return served
