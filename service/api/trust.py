"""``robustness=flip|certify|all`` on ``/predict`` and ``/explain``: limits, σ policy, threads.

The computations themselves are :mod:`training.trust.answer`'s. This module decides what a
request may ask (each limit a setting; over a limit → 422 before any work), refuses certifying a
model trained without noise unless the request names ``noise_sigma`` (422, or a warning), and
runs the work in a pool of its own: ``trust_concurrency`` threads, never the micro-batchers' or
the decode pool's, so a plain ``/predict`` neither waits behind nor batches with it. One
:class:`~training.trust.budget.Deadline` per request, started when the request is accepted (so
time queued counts), is checked before each noise batch and each attack run: past it the thread
stops after at most one of those and the request gets 503 — no thread computes on for a client
that has been answered.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import numpy as np
from fastapi import Depends, Request
from pydantic import BaseModel, Field

from service.api.errors import ServiceUnavailable, Unprocessable
from service.config import Settings
from training.store import LoadedModel
from training.trust import Deadline, FlipSpec, SmoothingSpec, TrustDeadlineExceeded
from training.trust.answer import (
    NoiseSigmaMissing,
    Robustness,
    TrustAnswer,
    TrustPlan,
    robustness_answer,
    smoothing_sigma,
    wants,
)
from training.trust.smoothing import noise_sigma_of

DEFAULT_N, DEFAULT_N0, DEFAULT_STEPS = 1000, 100, 20


class TrustParams(BaseModel):
    """Request fields of the robustness block (JSON members or form fields)."""

    robustness: Robustness = Field(
        "none",
        description="add each model's robustness block: flip (smallest flipping ε, L∞ and L2), "
        "certify (randomized-smoothing certified L2 radius), all",
    )
    noise_sigma: float | None = Field(
        None, gt=0, le=255, description="certify: σ in pixel units (default: the model's own)"
    )
    certify_n: int | None = Field(None, ge=1, description="certify: estimation samples")
    certify_n0: int | None = Field(None, ge=1, description="certify: selection samples")
    certify_alpha: float = Field(0.001, gt=0, lt=0.5, description="certify: failure probability")
    flip_steps: int | None = Field(None, ge=1, description="flip: attack steps per run")
    flip_restarts: int = Field(1, ge=1, description="flip: random restarts per ε")
    flip_max_epsilon: float | None = Field(None, gt=0, description="flip: largest L∞ ε tried")
    flip_max_epsilon_l2: float | None = Field(None, gt=0, description="flip: largest L2 ε tried")
    robustness_deadline_s: float | None = Field(
        None, gt=0, description="wall-clock budget of the block (default and cap: the setting)"
    )


TRUST_FORM_FIELDS = {
    "robustness": {"type": "string", "enum": ["none", "flip", "certify", "all"]},
    "noise_sigma": {"type": "number"},
    "certify_n": {"type": "integer", "minimum": 1},
    "certify_n0": {"type": "integer", "minimum": 1},
    "certify_alpha": {"type": "number"},
    "flip_steps": {"type": "integer", "minimum": 1},
    "flip_restarts": {"type": "integer", "minimum": 1},
    "flip_max_epsilon": {"type": "number"},
    "flip_max_epsilon_l2": {"type": "number"},
    "robustness_deadline_s": {"type": "number"},
}


def _at_most(value: float, limit: float, what: str, setting: str) -> None:
    if value > limit:
        raise Unprocessable(
            f"{what} {value:g} is over this server's limit of {limit:g} ({setting})"
        )


def check_limits(params: TrustParams, settings: Settings) -> None:
    """422 for any request field over its setting; before a model or an image is touched."""
    if params.robustness == "none":
        return
    limits = (
        (params.certify_n, settings.trust_max_n, "certify_n", "trust_max_n"),
        (params.certify_n0, settings.trust_max_n0, "certify_n0", "trust_max_n0"),
        (params.flip_steps, settings.trust_max_steps, "flip_steps", "trust_max_steps"),
        (params.flip_restarts, settings.trust_max_restarts, "flip_restarts", "trust_max_restarts"),
        (
            params.flip_max_epsilon,
            settings.trust_max_epsilon,
            "flip_max_epsilon",
            "trust_max_epsilon",
        ),
        (
            params.flip_max_epsilon_l2,
            settings.trust_max_epsilon_l2,
            "flip_max_epsilon_l2",
            "trust_max_epsilon_l2",
        ),
        (
            params.robustness_deadline_s,
            settings.trust_deadline_s,
            "robustness_deadline_s",
            "trust_deadline_s",
        ),
    )
    for value, limit, what, setting in limits:
        if value is not None:
            _at_most(value, limit, what, setting)


def plan_for(loaded: LoadedModel, params: TrustParams, settings: Settings) -> TrustPlan | None:
    """What to compute for one model (None for ``robustness=none``); 422 on the σ policy."""
    do_flip, do_certify = wants(params.robustness)
    if not (do_flip or do_certify):
        return None
    flips: tuple[FlipSpec, ...] = ()
    if do_flip:
        common = {
            "steps": params.flip_steps or min(DEFAULT_STEPS, settings.trust_max_steps),
            "restarts": params.flip_restarts,
            "max_model_calls": settings.trust_max_model_calls,
        }
        inf_max = params.flip_max_epsilon or settings.trust_max_epsilon
        l2_max = params.flip_max_epsilon_l2 or settings.trust_max_epsilon_l2
        try:
            flips = (
                FlipSpec(
                    norm="inf", max_epsilon=inf_max, start_epsilon=min(0.5, inf_max), **common
                ),
                FlipSpec(norm="2", max_epsilon=l2_max, start_epsilon=min(16.0, l2_max), **common),
            )
        except ValueError as exc:  # pydantic's ValidationError: the spec's own hard ceilings
            raise Unprocessable(f"flip parameters: {exc}") from exc
    if not do_certify:
        return TrustPlan(flips=flips)
    try:
        sigma, warning = smoothing_sigma(loaded.manifest, params.noise_sigma)
    except NoiseSigmaMissing as exc:
        raise Unprocessable(str(exc)) from exc
    smoothing = SmoothingSpec(
        sigma=sigma,
        n=params.certify_n or min(DEFAULT_N, settings.trust_max_n),
        n0=params.certify_n0 or min(DEFAULT_N0, settings.trust_max_n0),
        alpha=params.certify_alpha,
        batch_size=settings.trust_batch_size,
    )
    return TrustPlan(
        flips=flips,
        smoothing=smoothing,
        trained_sigma=noise_sigma_of(loaded.manifest),
        warning=warning,
    )


class TrustPool:
    """A few threads of their own for robustness blocks (see the module docstring)."""

    def __init__(self, concurrency: int, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="trust")

    @classmethod
    def from_settings(cls, settings: Settings) -> TrustPool:
        return cls(settings.trust_concurrency, settings.trust_deadline_s)

    def deadline(self, params: TrustParams) -> Deadline:
        """The request's budget, started now; a request may only shorten the setting."""
        return Deadline(params.robustness_deadline_s or self.deadline_s, "robustness block")

    async def answer(
        self, loaded: LoadedModel, pixels: np.ndarray, plan: TrustPlan, deadline: Deadline
    ) -> TrustAnswer:
        """The block for one model, computed in a trust thread; 503 past the deadline."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor,
                robustness_answer,
                loaded.model,
                loaded.manifest,
                pixels,
                plan,
                deadline,
            )
        except TrustDeadlineExceeded as exc:
            raise ServiceUnavailable(
                f"{loaded.manifest.ref}: {exc}; ask for less (robustness, certify_n, flip_steps) "
                "or retry later",
                headers={"Retry-After": "1"},
            ) from exc

    def close(self) -> None:
        """Stop the threads once the blocks in flight finish (each bounded by its deadline)."""
        self._executor.shutdown(wait=True, cancel_futures=True)


async def get_trust_pool(request: Request) -> TrustPool:
    # async: FastAPI runs a sync dependency in its thread pool, a thread hop per request
    return request.app.state.trust


TrustPoolDep = Annotated[TrustPool, Depends(get_trust_pool)]
