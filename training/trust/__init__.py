"""How far one prediction can be trusted: the smallest flipping perturbation (an empirical
bracket, :mod:`training.trust.flip`) and a certified L2 radius by randomized smoothing
(:mod:`training.trust.smoothing`), their evaluation summaries and plots.

Pure ML core: the service calls these and maps their specs' limits and deadline to HTTP.
"""

from training.trust.budget import CallTally, Deadline, TrustDeadlineExceeded
from training.trust.flip import Flip, FlipReport, FlipSpec, smallest_flip
from training.trust.smoothing import (
    Certification,
    SmoothedPrediction,
    SmoothingSpec,
    certify,
    noise_sigma_of,
    predict,
)
from training.trust.summary import (
    CertifiedAccuracyCurve,
    FlipDistribution,
    certified_accuracy_curve,
    flip_distribution,
)

__all__ = [
    "CallTally",
    "Certification",
    "CertifiedAccuracyCurve",
    "Deadline",
    "Flip",
    "FlipDistribution",
    "FlipReport",
    "FlipSpec",
    "SmoothedPrediction",
    "SmoothingSpec",
    "TrustDeadlineExceeded",
    "certified_accuracy_curve",
    "certify",
    "flip_distribution",
    "noise_sigma_of",
    "predict",
    "smallest_flip",
]
