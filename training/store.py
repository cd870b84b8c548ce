"""Versioned model artifacts on disk: weights, build config, provenance, metrics, sha256.

Layout::

    <root>/<name>/<version>/model.keras      weights + graph (Keras zip; no pickle)
    <root>/<name>/<version>/manifest.json    ModelManifest
    <root>/<name>/aliases.json               {"production": 3, ...}; "latest" is implicit

Loading verifies the sha256 recorded at save time before Keras opens the file, and opens it with
``safe_mode=True``: a tampered or truncated artifact is refused, never deserialised.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, Field

import training
from training.architecture import ArchitectureConfig
from training.dicom import DicomAcceptance
from training.metrics import ClassificationMetrics
from training.model_ref import LATEST, NAME_PATTERN
from training.preprocess import PreprocessConfig

if TYPE_CHECKING:
    import keras

WEIGHTS_FILE = "model.keras"
MANIFEST_FILE = "manifest.json"
ALIASES_FILE = "aliases.json"


class ModelStoreError(LookupError):
    """A model, version or alias does not exist."""


class IntegrityError(RuntimeError):
    """An artifact's bytes do not match the sha256 recorded when it was saved."""


class ModelManifest(BaseModel):
    """Everything known about one trained model; the model store's JSON record."""

    schema_version: int = 1
    name: str
    version: int
    created_at: str
    architecture: ArchitectureConfig
    preprocess: PreprocessConfig
    class_names: list[str]
    weights_sha256: str
    code_version: str
    data_fingerprint: str | None = None
    training_spec: dict[str, Any] | None = None
    history: dict[str, list[float]] = Field(default_factory=dict)
    best_epoch: int | None = None
    epochs_run: int | None = None
    metrics: dict[str, ClassificationMetrics] = Field(default_factory=dict)
    aliases: list[str] = Field(default_factory=list)
    # What DICOM input the model is for; manifests written before this field accept any.
    accepts: DicomAcceptance = Field(default_factory=DicomAcceptance)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class LoadedModel:
    model: keras.Model
    manifest: ModelManifest


class ModelLoader(Protocol):
    """What evaluating stored models needs from a store: load one by name and selector.

    :class:`ModelStore` is one; so is a cache in front of it (a worker process keeps the models
    it loaded between tasks), which need not offer saving, listing or aliases.
    """

    def load(self, name: str, selector: str = LATEST) -> LoadedModel: ...


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_version() -> str:
    """The package version plus the git commit when run from a checkout (``0.1.0+abc1234``)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return training.__version__
    return f"{training.__version__}+{commit}" if commit else training.__version__


class ModelStore:
    """A directory of versioned models. Cheap to create; holds no open files."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def save(
        self,
        model: keras.Model,
        name: str,
        architecture: ArchitectureConfig,
        preprocess: PreprocessConfig,
        class_names: list[str],
        **details: Any,
    ) -> ModelManifest:
        """Store ``model`` as the next version of ``name``; ``details`` fill the manifest."""
        if not NAME_PATTERN.match(name):
            raise ValueError(f"model name {name!r} must match {NAME_PATTERN.pattern}")
        if len(class_names) != architecture.num_classes:
            raise ValueError(
                f"{len(class_names)} class names for a {architecture.num_classes}-class model"
            )
        family = self.root / name
        family.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=family))
        model.save(staging / WEIGHTS_FILE)
        manifest = ModelManifest(
            name=name,
            version=0,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            architecture=architecture,
            preprocess=preprocess,
            class_names=list(class_names),
            weights_sha256=sha256_file(staging / WEIGHTS_FILE),
            code_version=code_version(),
            **details,
        )
        while True:  # claim the next version number atomically, even against a concurrent save
            manifest.version = max(self.versions(name), default=0) + 1
            (staging / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=1))
            try:
                os.rename(staging, family / str(manifest.version))
                return manifest
            except OSError:
                if not (family / str(manifest.version)).exists():
                    raise

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        family = self.root / name
        if not family.is_dir():
            return []
        return sorted(int(p.name) for p in family.iterdir() if p.name.isdigit())

    def list(self) -> list[ModelManifest]:
        """Every stored version of every model, newest version last within a name."""
        return [self.manifest(name, str(v)) for name in self.names() for v in self.versions(name)]

    def aliases(self, name: str) -> dict[str, int]:
        path = self.root / name / ALIASES_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` (e.g. "production") at ``version`` of ``name``."""
        if alias == LATEST or alias.isdigit() or not NAME_PATTERN.match(alias):
            raise ValueError(f"alias {alias!r} must be a name other than {LATEST!r}, not a number")
        if version not in self.versions(name):
            raise ModelStoreError(f"model {name!r} has no version {version}")
        aliases = {**self.aliases(name), alias: version}
        path = self.root / name / ALIASES_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(aliases, indent=1, sort_keys=True))
        tmp.replace(path)

    def resolve(self, name: str, selector: str = LATEST) -> int:
        """A version number from a number, an alias, or ``latest``."""
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise ModelStoreError(f"no model named {name!r} (stored models: {known})")
        if selector == LATEST:
            return versions[-1]
        if selector.isdigit():
            if int(selector) not in versions:
                raise ModelStoreError(f"model {name!r} has no version {selector} ({versions})")
            return int(selector)
        aliases = self.aliases(name)
        if selector not in aliases:
            raise ModelStoreError(f"model {name!r} has no alias {selector!r} ({sorted(aliases)})")
        return aliases[selector]

    def manifest(self, name: str, selector: str = LATEST) -> ModelManifest:
        version = self.resolve(name, selector)
        path = self.root / name / str(version) / MANIFEST_FILE
        manifest = ModelManifest.model_validate_json(path.read_text())
        manifest.aliases = sorted(a for a, v in self.aliases(name).items() if v == version)
        return manifest

    def load(self, name: str, selector: str = LATEST) -> LoadedModel:
        """The model and its manifest, after checking the weights' sha256."""
        manifest = self.manifest(name, selector)
        path = self.root / name / str(manifest.version) / WEIGHTS_FILE
        if not path.is_file():
            raise IntegrityError(f"{manifest.ref}: weights file {path} is missing")
        actual = sha256_file(path)
        if actual != manifest.weights_sha256:
            raise IntegrityError(
                f"{manifest.ref}: weights sha256 {actual} does not match the recorded "
                f"{manifest.weights_sha256}; the artifact is corrupted or was modified"
            )
        # Keras (and the custom layers' registration) only here: reading manifests, resolving
        # refs and listing the store stay free of the ML stack
        import keras

        import training.models  # noqa: F401 - registers the custom layers for deserialisation

        model = keras.saving.load_model(path, safe_mode=True, compile=False)
        return LoadedModel(model=model, manifest=manifest)
