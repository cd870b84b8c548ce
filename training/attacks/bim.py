"""Basic Iterative Method (BIM, also "I-FGSM"), an L∞ iterative attack without random start.

Kurakin, Goodfellow & Bengio, "Adversarial Examples in the Physical World", ICLR 2017 workshop.

From ``x₀ = x``::

    x_{k+1} = clip_[0,255]( Π_{‖·−x‖∞ ≤ ε}( x_k + α · sign(∇ₓ CE(f(x_k), y)) ) )

i.e. :class:`~training.attacks.pgd.PGDLinf` with ``random_start=False`` and one restart, so it
is deterministic. (Kurakin et al. used α = 1/255 of the range and ``min(ε + 4, 1.25 ε)`` steps
with ε in 0–255 units; here the defaults are ``steps=10`` and α = ``2.5 · ε / steps``.)

Input ``x``: float32 ``(N, H, W, 3)`` raw pixels in ``[0, 255]``; ``y``: int ``(N,)``.
Output: float32 ``(N, H, W, 3)`` in ``[clip_min, clip_max]`` with ``‖x_adv − x‖∞ ≤ ε``.
"""

from __future__ import annotations

from training.attacks.pgd import PGDLinf


class BIM(PGDLinf):
    """BIM / I-FGSM: PGD-L∞ from the clean image (no random start, one run)."""

    name = "bim"
    norm = "inf"
    kind = "iterative"

    def __init__(
        self,
        epsilon: float,
        step_size: float | None = None,
        steps: int = 10,
        targeted: bool = False,
        clip_min: float = 0.0,
        clip_max: float = 255.0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            epsilon,
            step_size=step_size,
            steps=steps,
            random_start=False,
            restarts=1,
            targeted=targeted,
            clip_min=clip_min,
            clip_max=clip_max,
            seed=seed,
        )
