"""What an evaluation request needs: attacks, the ε sweep, batches, seed; and shard ranges.

Keras-free on purpose: the API and the job submitters validate requests with these classes
without loading the ML stack (attacks are imported only when one is made).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from training.attacks import Attack

REPORT_SCHEMA_VERSION = 2  # 2: gradient-masking diagnostics
#: the largest magnitude of a numeric attack parameter (steps, queries, restarts, step size)
MAX_PARAMETER = 1_000_000
PIXEL_SPACE = "raw pixels in [0, 255]; epsilon in pixel units (epsilon=2 means 2/255)"


class AttackSpec(BaseModel):
    """An attack by name with its parameters other than ε (which the sweep supplies)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    params: dict[str, float | int | bool | str] = Field(default_factory=dict, max_length=16)

    @field_validator("params")
    @classmethod
    def _bounded(cls, value: dict[str, float | int | bool | str]) -> dict:
        """Numbers finite and at most ``MAX_PARAMETER`` in size, strings short: a request
        cannot make an attack overflow, or run for 10**400 steps."""
        for key, item in value.items():
            if isinstance(item, str) and len(item) > 200:
                raise ValueError(f"parameter {key!r}: at most 200 characters")
            # written so that NaN (every comparison False) and a huge int (no float overflow) fail
            bounded = isinstance(item, bool | str) or abs(item) <= MAX_PARAMETER
            if not bounded:
                raise ValueError(f"parameter {key!r} must be finite and |x| <= {MAX_PARAMETER}")
        return value

    def make(self, epsilon: float, seed: int) -> Attack:
        from training.attacks import make_attack

        return make_attack(self.name, epsilon=epsilon, seed=seed, **self.params)


class EvaluationSpec(BaseModel):
    """Which attacks at which ε, in which batches, from which seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attacks: list[AttackSpec] = Field(min_length=1, max_length=16)
    epsilons: list[float] = Field(min_length=1, max_length=64)
    batch_size: int = Field(32, ge=1, le=4096)
    seed: int = 0
    explain: Literal["gradcam", "gradcam++"] | None = Field(
        None, description="also compare clean vs adversarial maps of the true class"
    )

    @field_validator("epsilons")
    @classmethod
    def _sorted_non_negative(cls, value: list[float]) -> list[float]:
        if any(not np.isfinite(e) or e < 0 for e in value):
            raise ValueError("epsilons must be finite and >= 0")
        return sorted(set(value))

    def validate_attacks(self) -> None:
        """Make every attack once so bad parameters fail before any work starts."""
        for attack in self.attacks:
            for epsilon in self.epsilons:
                attack.make(epsilon, self.seed)


def shard_ranges(n: int, shards: int, batch_size: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into at most ``shards`` contiguous ranges on batch boundaries."""
    if shards < 1:
        raise ValueError("shards must be >= 1")
    batches = max(1, -(-n // batch_size))
    per_shard = -(-batches // shards)
    edges = [min(n, i * per_shard * batch_size) for i in range(shards + 1)]
    return [(start, stop) for start, stop in itertools.pairwise(edges) if stop > start]
