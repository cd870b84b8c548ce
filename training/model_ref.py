"""How a stored model is named (:class:`ModelRef`) and identified (:class:`ModelIdentity`).

Keras-free on purpose: the API, the job submitters and the DIMSE listener validate model refs and
describe models without loading the ML stack. :mod:`training.store` resolves a ref to a version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Self

from pydantic import BaseModel, Field

LATEST = "latest"
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
#: model names, versions and aliases: what the store accepts as a folder or alias name (so a
#: name can never be a path such as ``..`` or ``a/b``); ``\Z``, not ``$``, which would also
#: admit a trailing newline
NAME_PATTERN = re.compile(rf"^{_NAME}\Z")
#: a whole ref as one string, for schemas that check refs before :meth:`ModelRef.parse` sees them
#: (the API's OpenAPI documents it). A JSON Schema regex, whose ``$`` ends the text: it admits
#: what ``parse`` admits, less the empty selector (``name:``)
REF_PATTERN = rf"^{_NAME}(:{_NAME})?$"


class ModelRefError(ValueError):
    """A ref that names no model any store could hold (so it never reaches the disk)."""


@dataclass(frozen=True)
class ModelRef:
    """``name``, ``name:VERSION`` or ``name:ALIAS``: a stored model before it is resolved."""

    name: str
    selector: str = LATEST

    @classmethod
    def parse(cls, ref: str) -> Self:
        """``"derm"`` → (derm, latest); ``"derm:3"``, ``"derm:production"`` → (derm, that).

        Raises :class:`ModelRefError` (a ``ValueError``) for a name or selector the store could
        never hold, so callers can refuse it before touching the disk.
        """
        name, _, selector = ref.partition(":")
        selector = selector or LATEST
        if not NAME_PATTERN.match(name) or not NAME_PATTERN.match(selector):
            raise ModelRefError(
                f"bad model ref {ref!r}: refs look like 'name', 'name:3' or 'name:alias'"
            )
        return cls(name, selector)

    def __str__(self) -> str:
        return f"{self.name}:{self.selector}"


class ModelIdentity(BaseModel):
    """Which model produced a result: enough to find it again and verify its weights."""

    name: str
    version: int
    weights_sha256: str
    architecture: str | None = None
    attention_variant: str | None = None
    defense: str | None = Field(
        None, description="how it was trained to resist attacks, e.g. 'pgd-at ε=2 steps=3'"
    )

    @property
    def key(self) -> str:
        """``name:version``, the model's fixed ref."""
        return f"{self.name}:{self.version}"

    def describe(self) -> str:
        """``model NAME:VERSION (weights sha256 …)``: how result objects name their model."""
        return f"model {self.key} (weights sha256 {self.weights_sha256})"

    @classmethod
    def of(cls, manifest: Any) -> Self:
        """From a ``training.store.ModelManifest`` (duck-typed: no Keras import here)."""
        architecture = manifest.architecture
        return cls(
            name=manifest.name,
            version=manifest.version,
            weights_sha256=manifest.weights_sha256,
            architecture=architecture.architecture,
            attention_variant=(
                architecture.attention_variant if architecture.architecture == "attention" else None
            ),
            defense=defense_of(manifest.training_spec),
        )


def defense_of(training_spec: dict[str, Any] | None) -> str | None:
    """A model's defense in a few words, read from its recorded training spec (None: none).

    ``train.adversarial`` (PGD-AT, TRADES) or ``train.noise_sigma`` (Gaussian noise, the σ of
    randomized smoothing); specs recorded before defenses existed have neither.
    """
    train = (training_spec or {}).get("train") or {}
    adversarial = train.get("adversarial")
    if adversarial:
        method = adversarial.get("method")
        label = "pgd-at" if method == "pgd" else str(method)
        words = [label, f"ε={adversarial.get('epsilon'):g}", f"steps={adversarial.get('steps')}"]
        if method == "trades":
            words.append(f"β={adversarial.get('beta'):g}")
        return " ".join(words)
    sigma = train.get("noise_sigma")
    return f"gaussian-noise σ={sigma:g}" if sigma else None
