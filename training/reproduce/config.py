"""What a reproduction of the paper's study runs: tasks × model variants × seeds, one recipe.

A :class:`StudyConfig` is one YAML file (``configs/reproduce-*.yaml``). It names the study (every
result carries that name), the shared training recipe, the variants compared (baseline and the
two attention variants), the attack sweep and, per task, the data and whatever departs from the
shared recipe. Everything is plain data so the results folder can hold the exact config it ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from training.config import ModelOptions, TrainConfig, TrainingSpec, apply_overrides
from training.data.registry import DatasetSpec
from training.preprocess import PreprocessConfig
from training.robustness.spec import AttackSpec, EvaluationSpec

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$"
#: variant labels may also join a model and a recipe change with ``+`` (``baseline+pgd-at``)
VARIANT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,40}$"


class VariantSpec(BaseModel):
    """One model under comparison, e.g. ``attention-paper`` or ``baseline+pgd-at``: an
    architecture, and what it changes in the task's recipe (a defense, say)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=VARIANT_NAME)
    model: ModelOptions
    train: dict[str, Any] = Field(
        default_factory=dict, description="overrides of the task's recipe, e.g. adversarial"
    )

    @property
    def slug(self) -> str:
        """The label as it may appear in a model name (the store allows no ``+``)."""
        return self.name.replace("+", "_")


class AttackPlan(BaseModel):
    """The ε sweep every task is attacked with, and the ε the headline quotes.

    ``typical_epsilon`` and ``extreme_epsilon`` must be in ``epsilons``: the paper's "typical
    adversarial scenarios" and "extreme cases" (where the baseline collapses).
    """

    model_config = ConfigDict(extra="forbid")

    attacks: list[AttackSpec] = Field(min_length=1)
    epsilons: list[float] = Field(min_length=1)
    typical_epsilon: float
    extreme_epsilon: float
    batch_size: int = Field(32, ge=1)
    limit: int | None = Field(None, ge=1, description="stratified cap on test images per task")
    explain: Literal["gradcam", "gradcam++"] = "gradcam"
    panel_images: int = Field(4, ge=0, description="example heatmap rows per task")

    @model_validator(mode="after")
    def _headline_epsilons_swept(self) -> AttackPlan:
        for epsilon in (self.typical_epsilon, self.extreme_epsilon):
            if epsilon not in self.epsilons:
                raise ValueError(f"headline ε {epsilon} is not in the sweep {self.epsilons}")
        return self

    def evaluation_spec(self, seed: int) -> EvaluationSpec:
        return EvaluationSpec(
            attacks=self.attacks,
            epsilons=self.epsilons,
            batch_size=self.batch_size,
            seed=seed,
            explain=self.explain,
        )


class TaskSpec(BaseModel):
    """One of the paper's tasks on one dataset, with what it changes in the shared recipe."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)
    title: str
    caveat: str = Field("", description="what a reader must know to read the numbers")
    dataset: DatasetSpec
    preprocess: PreprocessConfig
    train: dict[str, Any] = Field(
        default_factory=dict, description="overrides of the shared recipe"
    )
    lesion_masks: str | None = Field(
        None, description="npz of lesion masks (relative: MEDROBUST_DATA_DIR); scores Grad-CAM"
    )


class StudyConfig(BaseModel):
    """The whole study; see the module docstring."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)
    description: str
    seeds: list[int] = Field(min_length=1)
    weights: str | None = Field(
        None, description='backbone start for every variant: None, "imagenet" or a weights file'
    )
    train: TrainConfig
    variants: list[VariantSpec] = Field(min_length=1)
    evaluation: AttackPlan
    tasks: list[TaskSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> StudyConfig:
        for what, names in (
            ("variant", [v.slug for v in self.variants]),
            ("task", [t.name for t in self.tasks]),
        ):
            if len(set(names)) != len(names):
                raise ValueError(f"{what} names must be unique, got {names}")
        if any(v.model.weights is not None for v in self.variants):
            raise ValueError("set backbone weights once, in the study's `weights`, not per variant")
        return self

    def task(self, name: str) -> TaskSpec:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"no task {name!r}; the config has {[t.name for t in self.tasks]}")

    def training_spec(self, task: TaskSpec, variant: VariantSpec, seed: int) -> TrainingSpec:
        """The one training run of (task, variant, seed): shared recipe, then the task's and the
        variant's overrides, then the seed."""
        overrides = {**task.train, **variant.train, "seed": seed}
        recipe = apply_overrides(self.train.model_dump(), overrides)
        return TrainingSpec(
            name=model_name(self.name, task.name, variant.slug, seed),
            dataset=task.dataset,
            model=variant.model.model_copy(update={"weights": self.weights}),
            preprocess=task.preprocess,
            train=TrainConfig.model_validate(recipe),
        )


def model_name(study: str, task: str, variant: str, seed: int) -> str:
    """The store name of one trained model, e.g. ``cpu-ham10000-baseline-s0``; ``variant`` is
    a :attr:`VariantSpec.slug`."""
    return f"{study}-{task}-{variant}-s{seed}"[:64]


def load_study(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read a study YAML file and apply dotted ``overrides`` (``weights`` → None)."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    return StudyConfig.model_validate(apply_overrides(raw, overrides or {}))
