"""Any evasion attack of the Adversarial Robustness Toolbox (ART) behind the project's interface.

Nicolae et al., "Adversarial Robustness Toolbox v1.0.0", arXiv:1807.01069 (2018); each ART class
cites its own paper (e.g. ``DeepFool``: Moosavi-Dezfooli et al., CVPR 2016; ``CarliniL2Method``:
Carlini & Wagner, IEEE S&P 2017).

ART is an optional extra (``pip install adversarial-robustness-toolbox``). The Keras model is
wrapped as an ART ``TensorFlowV2Classifier`` on logits (``CategoricalCrossentropy(from_logits=
True)``, ``clip_values=(clip_min, clip_max)`` = ``(0, 255)``, ``nb_classes`` from the model) and
the attack's ``generate(x, y=onehot)`` is called. ART takes its own gradients with
``tf.GradientTape``, so this adapter is the one attack that needs the TensorFlow Keras backend.

Input ``x``: float32 ``(N, H, W, 3)`` raw pixels in ``[0, 255]``; ``y``: int ``(N,)``.
Output: float32 ``(N, H, W, 3)`` in ``[clip_min, clip_max]``.

ε: when the ART class takes an ``eps`` parameter, ``epsilon`` is passed as ``eps`` (pixel units,
in the attack's own norm). When it does not (DeepFool, Carlini–Wagner, ...), a given ``epsilon``
bounds the result by projecting ART's output onto the ε-ball of the attack's norm (L∞ or L2), so
the attack can take part in an ε sweep; ``epsilon=None`` leaves it unbounded. ART parameters
named like the adapter's own (``epsilon``, ``targeted``, ``seed``, ...) are passed with an
``art_`` prefix, e.g. ``art_epsilon=0.02`` for DeepFool's overshoot.

Randomness: ART draws from numpy's global generator; it is seeded with ``seed`` for the call
(and restored afterwards), so results repeat for the same batch, but random starts are not per
sample as in the built-in attacks.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from training.attacks._common import project_l2, project_linf
from training.attacks.base import Attack, AttackError

INSTALL_HINT = "ART is an optional extra: pip install adversarial-robustness-toolbox"

# Norms of ART attacks that have no ``norm`` parameter of their own.
_KNOWN_NORMS = {
    "DeepFool": "2",
    "NewtonFool": "2",
    "CarliniL2Method": "2",
    "CarliniLInfMethod": "inf",
    "CarliniL0Method": "0",
    "ElasticNet": "1",
    "SaliencyMapMethod": "0",
    "PixelAttack": "0",
    "ThresholdAttack": "0",
    "BasicIterativeMethod": "inf",
    "MomentumIterativeMethod": "inf",
}


def _art_evasion() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "PyTorch not found" and similar import notices
            import art.attacks.evasion as evasion
    except ImportError as error:
        raise AttackError(f"ART attacks are not available: {INSTALL_HINT}") from error
    return evasion


def art_evasion_attacks() -> list[str]:
    """Names of the ART evasion attack classes, or ``[]`` when ART is not installed."""
    try:
        evasion = _art_evasion()
    except AttackError:
        return []
    from art.attacks.attack import EvasionAttack

    return sorted(
        name
        for name, value in vars(evasion).items()
        if inspect.isclass(value) and issubclass(value, EvasionAttack)
    )


def _norm_name(value: Any) -> str:
    if isinstance(value, str):
        return "inf" if value.lower() == "inf" else value
    if np.isinf(value):
        return "inf"
    return str(int(value)) if float(value).is_integer() else str(value)


class ARTAttack(Attack):
    """An ART evasion attack by class name, e.g. ``ARTAttack("DeepFool", max_iter=5)``."""

    name = "art"
    norm = "unspecified"

    def __init__(
        self,
        art_class_name: str,
        epsilon: float | None = None,
        targeted: bool = False,
        clip_min: float = 0.0,
        clip_max: float = 255.0,
        seed: int = 0,
        **art_params: Any,
    ) -> None:
        bounded = epsilon is not None
        super().__init__(
            epsilon if epsilon is not None else clip_max - clip_min,
            targeted=targeted,
            clip_min=clip_min,
            clip_max=clip_max,
            seed=seed,
        )
        if keras.backend.backend() != "tensorflow":
            raise AttackError(
                f"ART attacks need the TensorFlow Keras backend, not {keras.backend.backend()}"
            )
        evasion = _art_evasion()
        art_class = getattr(evasion, art_class_name, None)
        if art_class_name.startswith("_") or not inspect.isclass(art_class):
            raise AttackError(
                f"{art_class_name!r} is not an ART evasion attack; choose one of "
                f"{', '.join(art_evasion_attacks())}"
            )
        params = {
            (key[4:] if key.startswith("art_") else key): value for key, value in art_params.items()
        }
        signature = inspect.signature(art_class.__init__)
        accepted = [n for n in list(signature.parameters)[2:] if n not in ("args", "kwargs")]
        takes_any = any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()
        )
        unknown = sorted(set(params) - set(accepted))
        if unknown and not takes_any:
            raise AttackError(
                f"ART {art_class_name} takes no parameter(s) {unknown}; it takes {accepted}"
            )
        if "eps" in params and bounded:
            raise AttackError(f"ART {art_class_name}: give epsilon or eps, not both")
        self.uses_art_eps = bounded and "eps" in accepted
        if self.uses_art_eps:
            params["eps"] = self.epsilon
        if "targeted" in accepted:
            params["targeted"] = self.targeted
        elif self.targeted:
            raise AttackError(f"ART {art_class_name} has no targeted mode")
        if "verbose" in accepted:
            params.setdefault("verbose", False)

        if "norm" in params:
            norm = _norm_name(params["norm"])
        elif "norm" in signature.parameters and signature.parameters["norm"].default is not (
            inspect.Parameter.empty
        ):
            norm = _norm_name(signature.parameters["norm"].default)
        else:
            norm = _KNOWN_NORMS.get(art_class_name, "unspecified")
        if bounded and not self.uses_art_eps and norm not in ("inf", "2"):
            raise AttackError(
                f"ART {art_class_name} has no eps and norm {norm!r}: an epsilon bound can only be "
                "applied for L∞ or L2 attacks; pass epsilon=None for an unbounded attack"
            )
        self.norm = norm  # type: ignore[misc]  # per instance: depends on the ART class
        self.art_class_name = art_class_name
        self.bounded = bounded
        self._art_class: Callable[..., Any] = art_class
        self._art_params = params

    def params(self) -> dict[str, Any]:
        """Adapter parameters plus the JSON-safe ART parameters (``art.<name>``)."""
        out = {k: v for k, v in super().params().items() if not k.startswith("_")}
        for key, value in self._art_params.items():
            if isinstance(value, int | float | bool | str):
                out[f"art.{key}"] = value
            elif isinstance(value, np.floating | np.integer):
                out[f"art.{key}"] = value.item()
        return out

    def _perturb(
        self, model: keras.Model, x: np.ndarray, onehot: np.ndarray, sample_ids: np.ndarray
    ) -> np.ndarray:
        import tensorflow as tf
        from art.estimators.classification import TensorFlowV2Classifier

        classifier = TensorFlowV2Classifier(
            model,
            nb_classes=onehot.shape[1],
            input_shape=tuple(x.shape[1:]),
            loss_object=tf.keras.losses.CategoricalCrossentropy(from_logits=True),
            clip_values=(self.clip_min, self.clip_max),
        )
        try:
            attack = self._art_class(classifier, **self._art_params)
        except (TypeError, ValueError) as error:
            raise AttackError(f"ART {self.art_class_name}: {error}") from error
        state = np.random.get_state()
        np.random.seed(self.seed % 2**32)
        try:
            x_adv = np.asarray(attack.generate(x=x, y=onehot), dtype=np.float32)
        finally:
            np.random.set_state(state)
        if self.bounded and not self.uses_art_eps:
            project = project_linf if self.norm == "inf" else project_l2
            x_adv = project(x_adv, x, self.epsilon, self.clip_min, self.clip_max)
        return x_adv
