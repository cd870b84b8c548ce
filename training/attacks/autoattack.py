"""AutoAttack, the "standard" L∞ ensemble, in the project's ε units.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, §5.

The parts run in order, each only on the images every earlier part left correctly classified,
so the result is the per-image worst case over the parts: an image counts as robust only if no
part fools it. Default parts: APGD-CE (:class:`APGDCE`), APGD-T (:class:`APGDT`), then the
black-box Square Attack (:class:`Square`), which gradient masking cannot fool. (The paper's
version also runs FAB-T; its authors found it rarely changes robust accuracy after APGD-T.)
Any part can also run alone by its registry name.

Input ``x``: float32 ``(N, H, W, 3)`` raw pixels in ``[0, 255]``; ``y``: int ``(N,)`` true
labels (untargeted only). Output: float32, same shape, with ``‖x_adv − x‖∞ ≤ ε`` (pixel units):
per image the first part's fooling image, else the first part's output (clean misclassified
images are returned unchanged). Deterministic given ``seed``, per image as its parts are.
"""

from __future__ import annotations

from typing import TypedDict

import keras
import numpy as np

from training import gradients
from training.attacks._common import check_count
from training.attacks.apgd import APGDCE, APGDDLR, APGDT
from training.attacks.base import Attack, AttackError
from training.attacks.square import Square

PARTS = ("apgd_ce", "apgd_dlr", "apgd_t", "square")
STANDARD = "apgd_ce,apgd_t,square"
#: the DLR losses rank logits: they need this many classes (a binary model has no third logit)
MIN_CLASSES = {"apgd_dlr": 3, "apgd_t": 4}


class _Shared(TypedDict):
    """The settings every part takes from the ensemble."""

    epsilon: float
    clip_min: float
    clip_max: float
    seed: int


class AutoAttack(Attack):
    """APGD-CE → APGD-T → Square on the images still correct; ``parts`` (comma-separated names
    from ``apgd_ce, apgd_dlr, apgd_t, square``) picks and orders them. ``steps``, ``targets``
    and ``queries`` go to the parts that take them."""

    name = "autoattack"
    kind = "ensemble"
    norm = "inf"

    def __init__(
        self,
        epsilon: float,
        parts: str = STANDARD,
        steps: int = 100,
        targets: int = 9,
        queries: int = 5000,
        targeted: bool = False,
        clip_min: float = 0.0,
        clip_max: float = 255.0,
        seed: int = 0,
    ) -> None:
        if targeted:
            raise AttackError(f"{self.name} is untargeted: y is the true label")
        super().__init__(epsilon, clip_min=clip_min, clip_max=clip_max, seed=seed)
        names = [p.strip().lower().replace("-", "_") for p in str(parts).split(",") if p.strip()]
        unknown = sorted(set(names) - set(PARTS))
        if not names or unknown or len(set(names)) != len(names):
            raise AttackError(
                f"{self.name}: parts must be distinct names from {', '.join(PARTS)}, "
                f"comma-separated; got {parts!r}"
            )
        self.parts = ",".join(names)
        self.steps = check_count(self.name, "steps", steps)
        self.targets = check_count(self.name, "targets", targets)
        self.queries = check_count(self.name, "queries", queries)

    def components(self, num_classes: int | None = None) -> list[Attack]:
        """The parts, in order, as configured attacks; with ``num_classes``, only those whose
        loss is defined for that many classes: on a binary task APGD-T and APGD-DLR drop out
        and the standard ensemble is APGD-CE → Square."""
        common: _Shared = {
            "epsilon": self.epsilon,
            "clip_min": self.clip_min,
            "clip_max": self.clip_max,
            "seed": self.seed,
        }
        made = {
            "apgd_ce": lambda: APGDCE(steps=self.steps, **common),
            "apgd_dlr": lambda: APGDDLR(steps=self.steps, **common),
            "apgd_t": lambda: APGDT(steps=self.steps, targets=self.targets, **common),
            "square": lambda: Square(queries=self.queries, **common),
        }
        names = [
            name
            for name in self.parts.split(",")
            if num_classes is None or num_classes >= MIN_CLASSES.get(name, 2)
        ]
        return [made[name]() for name in names]

    def _perturb(
        self, model: keras.Model, x: np.ndarray, onehot: np.ndarray, sample_ids: np.ndarray
    ) -> np.ndarray:
        labels = np.argmax(onehot, axis=1)
        result = x.copy()
        robust = np.argmax(gradients.logits(model, x), axis=1) == labels
        for position, part in enumerate(self.components(onehot.shape[1])):
            index = np.flatnonzero(robust)
            if len(index) == 0:
                break
            x_adv = part.generate(model, x[index], labels[index], sample_ids[index])
            fooled = np.argmax(gradients.logits(model, x_adv), axis=1) != labels[index]
            keep = fooled if position > 0 else np.ones_like(fooled)
            result[index[keep]] = x_adv[keep]
            robust[index[fooled]] = False
        return result
