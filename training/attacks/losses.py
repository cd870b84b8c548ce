"""Per-example objectives the attacker maximises, on logits, written with ``keras.ops``.

Written once with ``keras.ops`` so the same definition runs eagerly on numpy and compiles inside
:func:`training.gradients.loss_step` on TensorFlow and JAX. Every function maps logits ``(N, C)``
(and one-hot labels ``(N, C)``) to a loss ``(N,)`` that is *higher* when the attack is closer to
its goal.

The difference-of-logits-ratio losses are from Croce & Hein, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks", ICML 2020, §4: dividing the
margin by a spread of the top logits makes the loss invariant to shifting and rescaling the
logits, so a model cannot hide behind large logits the way it can against cross-entropy.
"""

from __future__ import annotations

from typing import Any

from keras import ops

_TINY = 1e-12  # keeps the DLR denominators positive when the top logits tie


def cross_entropy(logits: Any, onehot: Any) -> Any:
    """CE of the true class: the untargeted objective of PGD and APGD-CE."""
    return ops.categorical_crossentropy(onehot, logits, from_logits=True)


def negative_cross_entropy(logits: Any, onehot: Any) -> Any:
    """−CE of the target class: maximising it pulls the prediction to the target."""
    return -cross_entropy(logits, onehot)


def _true_logit(logits: Any, onehot: Any) -> Any:
    return ops.sum(logits * onehot, axis=-1)


def dlr(logits: Any, onehot: Any) -> Any:
    """DLR = −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3); positive once the image is misclassified.

    ``z_π1 ≥ z_π2 ≥ …`` are the sorted logits; needs at least 3 classes.
    """
    ranked = ops.sort(logits, axis=-1)
    others = ops.where(onehot > 0, ops.full_like(logits, -float("inf")), logits)
    margin = _true_logit(logits, onehot) - ops.max(others, axis=-1)
    return -margin / (ranked[:, -1] - ranked[:, -3] + _TINY)


def targeted_dlr(logits: Any, onehot: Any, target: Any) -> Any:
    """Targeted DLR = −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2); needs at least 4 classes.

    Raising it moves the target logit ``z_t`` above the true one ``z_y``.
    """
    ranked = ops.sort(logits, axis=-1)
    margin = _true_logit(logits, onehot) - _true_logit(logits, target)
    return -margin / (ranked[:, -1] - (ranked[:, -3] + ranked[:, -4]) / 2 + _TINY)
