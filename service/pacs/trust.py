"""What a PACS job computes of each prediction's robustness, under the API's limits and σ policy.

A PACS job asks only ``robustness`` (``none|flip|certify|all``): it names no n, steps or σ. It
gets exactly the plan ``/predict`` builds for a request that names nothing else
(:func:`service.api.trust.plan_for`): the defaults capped by the ``trust_*`` settings, the
model's own training σ for certification, and one ``trust_deadline_s`` budget per image.

Certifying a model trained without Gaussian noise is refused by the API (422). A job is not
refused for it: a DIMSE sender has nobody to read a 422, and a study's findings are worth
storing without a certificate. The job computes what remains (``all`` → ``flip``) and its
summary says why the certificate is missing (``robustness_skipped``); the same for an image
whose block ran past its deadline, which keeps its SR without the block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.api.trust import TrustParams, plan_for
from service.config import Settings
from training.store import LoadedModel
from training.trust import Deadline, TrustDeadlineExceeded
from training.trust.answer import Robustness, RobustnessBlock, TrustPlan, robustness_answer, wants
from training.trust.smoothing import noise_sigma_of


@dataclass(frozen=True)
class PacsTrust:
    """One job's robustness plan (None: nothing to compute), and why part of it was dropped."""

    plan: TrustPlan | None
    deadline_s: float
    skipped: str | None = None

    def block(
        self, loaded: LoadedModel, pixels: np.ndarray
    ) -> tuple[RobustnessBlock | None, str | None]:
        """The block for one prepared image ``(S, S, 3)``, or None and the reason it is missing."""
        if self.plan is None:
            return None, None
        deadline = Deadline(self.deadline_s, "robustness block")
        try:
            answer = robustness_answer(loaded.model, loaded.manifest, pixels, self.plan, deadline)
        except TrustDeadlineExceeded as exc:
            return None, f"{exc} (setting trust_deadline_s)"
        return answer.block, None


def pacs_trust(loaded: LoadedModel, robustness: Robustness, settings: Settings) -> PacsTrust:
    """The plan for a job asking ``robustness`` of ``loaded``'s predictions."""
    do_flip, do_certify = wants(robustness)
    skipped = None
    if do_certify and noise_sigma_of(loaded.manifest) is None:
        do_certify = False
        skipped = (
            f"certify skipped: {loaded.manifest.ref} was trained without Gaussian noise (no "
            "train.noise_sigma), and a PACS job certifies only at the model's own σ; retrain "
            "with train.noise_sigma, or use /predict with noise_sigma to certify anyway"
        )
    asked: Robustness = "all" if do_flip and do_certify else "flip" if do_flip else "certify"
    plan = (
        plan_for(loaded, TrustParams(robustness=asked), settings) if do_flip or do_certify else None
    )
    return PacsTrust(plan=plan, deadline_s=settings.trust_deadline_s, skipped=skipped)
