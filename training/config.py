"""Training specifications: what to train on, which model, with which recipe.

A :class:`TrainingSpec` is plain data (YAML/JSON in, JSON out) so the CLI, the job queue and the
model store all describe a run the same way. The defaults are the paper's recipe (§3.3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from training.architecture import DEFAULT_TAP_LAYER, Architecture, ArchitectureConfig
from training.data.registry import DatasetSpec
from training.dicom import DicomAcceptance
from training.preprocess import PreprocessConfig


class _AdversarialTraining(BaseModel):
    """What both adversarial-training methods share: an L∞ ball in pixel units, sign steps."""

    model_config = ConfigDict(extra="forbid")

    epsilon: float = Field(gt=0, le=255, description="L∞ radius in pixel units ([0, 255] scale)")
    steps: int = Field(7, ge=1, description="inner-maximisation steps per batch")
    step_size: float | None = Field(
        None, gt=0, description="pixel units; None: Madry's 2.5 · epsilon / steps"
    )
    ramp_epochs: int = Field(
        0, ge=0, description="ε (and the step size) grow linearly to full over these epochs"
    )
    attack_mode: Literal["train", "inference"] = Field(
        "train",
        description=(
            "how the network runs while the examples are made: 'train' as the training step runs"
            " it (batch statistics, its dropout masks; moving statistics untouched), 'inference'"
            " with batch norm's moving statistics and no dropout"
        ),
    )

    def epsilon_at(self, epoch: int) -> float:
        """ε for 0-based ``epoch``: ``epsilon · min(1, (epoch + 1) / ramp_epochs)``."""
        if not self.ramp_epochs:
            return self.epsilon
        return self.epsilon * min(1.0, (epoch + 1) / self.ramp_epochs)


class PGDTraining(_AdversarialTraining):
    """PGD adversarial training (Madry et al. 2018): a ``fraction`` of every batch is replaced
    by PGD-L∞ examples (random start) made against the current weights."""

    method: Literal["pgd"]
    fraction: float = Field(1.0, gt=0, le=1, description="share of each batch made adversarial")


class TradesTraining(_AdversarialTraining):
    """TRADES (Zhang et al. 2019): CE(f(x), y) + β · KL(f(x) ‖ f(x')), x' maximising the KL."""

    method: Literal["trades"]
    beta: float = Field(6.0, ge=0, description="weight of the robustness (KL) term; paper: 6")


AdversarialTraining = Annotated[PGDTraining | TradesTraining, Field(discriminator="method")]


class TrainConfig(BaseModel):
    """The optimisation recipe. Defaults: Adam(lr 0.01, ε 0.1), CCE, inverse-frequency class
    weights, ≤ 300 epochs, early stopping (patience 40, min_delta 0.001, best weights restored).

    At most one defense: ``adversarial`` (PGD-AT or TRADES) or ``noise_sigma`` (see
    :mod:`training.defenses`); both default to off, so older specs validate unchanged."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(300, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(0.01, gt=0)
    adam_epsilon: float = Field(0.1, gt=0)
    warmup_epochs: int = Field(0, ge=0, description="linear learning-rate warm-up (from scratch)")
    class_weighting: Literal["inverse_frequency", "none"] = "inverse_frequency"
    epoch_fraction: float = Field(1.0, gt=0, le=1, description="share of the train set per epoch")
    monitor: Literal["val_loss", "val_accuracy", "val_balanced_accuracy", "val_macro_auc"] = (
        "val_loss"
    )
    patience: int = Field(40, ge=1)
    min_delta: float = Field(0.001, ge=0)
    seed: int = 0
    adversarial: AdversarialTraining | None = Field(
        None, description="adversarial training (PGD-AT or TRADES); None: clean training"
    )
    noise_sigma: float = Field(
        0.0,
        ge=0,
        description="Gaussian noise augmentation σ in pixel units (randomized smoothing's σ)",
    )

    @model_validator(mode="after")
    def _one_defense(self) -> TrainConfig:
        if self.adversarial is not None and self.noise_sigma > 0:
            raise ValueError("choose one defense: train.adversarial or train.noise_sigma, not both")
        return self

    @property
    def defended(self) -> bool:
        """Whether batches are transformed per step (adversarial examples or noise)."""
        return self.adversarial is not None or self.noise_sigma > 0


class ModelOptions(BaseModel):
    """The architecture choices a user makes; class count and input size come from the data."""

    model_config = ConfigDict(extra="forbid")

    architecture: Architecture = "baseline"
    attention_variant: Literal["paper", "datta-reference"] = "paper"
    attention_heads: int = Field(16, ge=1)
    tap_layer: str = DEFAULT_TAP_LAYER
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    weights: str | None = Field(None, description='None, "imagenet" or a backbone weights file')

    def architecture_config(self, num_classes: int, input_size: int) -> ArchitectureConfig:
        options = self.model_dump(exclude={"weights"})
        return ArchitectureConfig(num_classes=num_classes, input_size=input_size, **options)


class TrainingSpec(BaseModel):
    """One training run: a name for the resulting model, its data, model and recipe."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    dataset: DatasetSpec
    model: ModelOptions = ModelOptions()
    preprocess: PreprocessConfig = PreprocessConfig()
    train: TrainConfig = TrainConfig()
    accepts: DicomAcceptance = Field(
        default_factory=DicomAcceptance,
        description="DICOM modalities / body parts the model is for (default: any); serving "
        "refuses other DICOM images unless the caller overrides",
    )


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``train.epochs`` → 5) in a nested dict, in place; returns it."""
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return raw


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainingSpec:
    """Read a YAML or JSON spec file and apply dotted ``overrides``."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    return TrainingSpec.model_validate(apply_overrides(raw, overrides or {}))
