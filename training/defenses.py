"""Defended training: the batch a model trains on in place of each clean batch, and its loss.

Three recipes (``TrainConfig.adversarial`` / ``TrainConfig.noise_sigma``), all in pixel units on
the [0, 255] scale the attacks use:

- **PGD adversarial training** (Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning
  Models Resistant to Adversarial Attacks", ICLR 2018): the first ``fraction`` of each (shuffled)
  batch is replaced by PGD-L∞ examples with a random start, made by the project's own
  :class:`~training.attacks.pgd.PGDLinf` against the current weights; the loss is the usual
  class-weighted cross-entropy on the mixed batch.
- **TRADES** (Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan, "Theoretically Principled Trade-off
  between Robustness and Accuracy", ICML 2019): ``x'`` starts at ``x + 0.001·N(0, 1)`` in [0, 1]
  units (``0.255·N(0, 1)`` pixels) and climbs ``KL(f(x) ‖ f(x'))`` by projected sign steps; the
  model then trains on ``CE(f(x), y) + β · KL(f(x) ‖ f(x'))`` (:class:`TradesLoss`). Clean and
  adversarial halves go through the network as one batch of 2B, so batch normalisation sees
  both (the reference code runs them separately; one batch keeps the step a plain Keras step
  on every backend).
- **Gaussian noise augmentation** (Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness
  via Randomized Smoothing", ICML 2019): ``x + N(0, σ²)``, not clipped, so the model learns the
  noisy inputs randomized smoothing will later classify with the same σ.

By default (``attack_mode: train``) the examples are made against the network exactly as the
training step then runs it: batch statistics and the step's own dropout masks, with batch norm's
moving statistics left untouched (a stateless call, :mod:`training.gradients`). Madry et al.'s
reference code attacks its train-mode graph the same way. ``attack_mode: inference`` attacks the
moving-statistics network instead, as many PyTorch implementations do (``model.eval()``); from
scratch that is a different function for a long time (the moving averages trail weights that
change fast), and the study's first PGD-AT runs, made that way, learned next to nothing
(docs/results/reproduce-cpu-strong). Every random draw (PGD starts, TRADES starts, noise, dropout
masks) is a pure function of ``(seed, epoch, batch)``; with the weights restored from a
checkpoint, a resumed run therefore trains on exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from training import gradients
from training.attacks._common import MADRY_STEP_FACTOR
from training.attacks.pgd import PGDLinf
from training.config import PGDTraining, TradesTraining, TrainConfig

TRADES_START_SCALE = 0.001 * 255.0
"""TRADES' ``0.001·N(0, 1)`` start, from [0, 1] units to pixels."""

_TINY = 1e-12  # keeps log(p) finite where a clean probability underflows to 0
_PIXELS = (0.0, 255.0)

# Independent random streams under one seed, so no two kinds of draw ever share numbers.
_TRADES_STREAM, _NOISE_STREAM, _DROPOUT_STREAM = 1, 2, 3


class DefendedBatch(NamedTuple):
    """What one training step consumes: inputs, one-hot targets and per-row sample weights."""

    x: np.ndarray
    y: np.ndarray
    sample_weight: np.ndarray


@keras.saving.register_keras_serializable(package="medrobust")
class TradesLoss(keras.losses.Loss):
    """TRADES' outer loss on logits of ``[clean; adversarial]`` stacked along the batch (2B rows).

    ``y_true`` is the one-hot labels stacked the same way. Each example's
    ``CE(f(x), y) + β · KL(softmax f(x) ‖ softmax f(x'))`` is returned on both of its rows, so with
    the sample weights also stacked twice, Keras' mean over 2B rows is the weighted mean over the
    B examples.
    """

    def __init__(
        self, beta: float = 6.0, name: str = "trades", reduction: str = "sum_over_batch_size"
    ) -> None:
        super().__init__(name=name, reduction=reduction)
        self.beta = float(beta)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        clean, adversarial = ops.split(y_pred, 2, axis=0)
        onehot, _ = ops.split(y_true, 2, axis=0)
        cross_entropy = ops.categorical_crossentropy(onehot, clean, from_logits=True)
        per_example = cross_entropy + self.beta * kl_divergence(clean, adversarial)
        return ops.concatenate([per_example, per_example], axis=0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta": self.beta}


def kl_divergence(clean_logits: Any, other_logits: Any) -> Any:
    """Per-example ``KL(softmax(clean) ‖ softmax(other))`` in nats, with ``keras.ops``."""
    log_p = ops.log_softmax(clean_logits, axis=-1)
    return ops.sum(ops.exp(log_p) * (log_p - ops.log_softmax(other_logits, axis=-1)), axis=-1)


def training_loss(config: TrainConfig) -> keras.losses.Loss:
    """The loss a recipe compiles with: TRADES' when TRADES is on, else CE on the logits."""
    if isinstance(config.adversarial, TradesTraining):
        return TradesLoss(config.adversarial.beta)
    return keras.losses.CategoricalCrossentropy(from_logits=True)


class TrainModePGD(PGDLinf):
    """PGD-L∞ against the network as the training step runs it (``attack_mode: train``)."""

    network_training = True


def defended_batch(
    model: keras.Model,
    config: TrainConfig,
    pixels: np.ndarray,
    onehot: np.ndarray,
    sample_weight: np.ndarray,
    epoch: int,
    batch: int,
    steps_per_epoch: int,
) -> DefendedBatch:
    """The batch ``config``'s defense trains on in place of ``(pixels, onehot)``.

    ``epoch`` (0-based) and ``batch`` (0-based within the epoch) seed every random draw and pick
    the ε of an ε ramp; ``steps_per_epoch`` makes PGD's per-sample start ids unique over the run.
    """
    pixels = np.asarray(pixels, np.float32)
    onehot = np.asarray(onehot, np.float32)
    defense = config.adversarial
    if isinstance(defense, PGDTraining):
        first_id = (epoch * steps_per_epoch + batch) * len(pixels)
        x = pgd_examples(model, defense, pixels, onehot, epoch, config.seed, first_id)
        return DefendedBatch(x, onehot, sample_weight)
    if isinstance(defense, TradesTraining):
        rng = _rng(config.seed, _TRADES_STREAM, epoch, batch)
        x_adv = trades_examples(model, defense, pixels, epoch, rng)
        return DefendedBatch(
            np.concatenate([pixels, x_adv]),
            np.concatenate([onehot, onehot]),
            np.concatenate([sample_weight, sample_weight]),
        )
    if config.noise_sigma > 0:
        rng = _rng(config.seed, _NOISE_STREAM, epoch, batch)
        noise = rng.normal(0.0, config.noise_sigma, pixels.shape).astype(np.float32)
        return DefendedBatch(pixels + noise, onehot, sample_weight)
    return DefendedBatch(pixels, onehot, sample_weight)


def pgd_examples(
    model: keras.Model,
    defense: PGDTraining,
    pixels: np.ndarray,
    onehot: np.ndarray,
    epoch: int,
    seed: int,
    first_id: int,
) -> np.ndarray:
    """``pixels`` with its first ``ceil(fraction · B)`` rows replaced by PGD-L∞ examples.

    Row ``i`` gets the random start of sample id ``first_id + i`` (ids never repeat in a run).
    """
    count = int(np.ceil(defense.fraction * len(pixels)))
    epsilon = defense.epsilon_at(epoch)
    attack = (TrainModePGD if defense.attack_mode == "train" else PGDLinf)(
        epsilon,
        step_size=_ramped_step_size(defense, epsilon),
        steps=defense.steps,
        random_start=True,
        seed=seed,
    )
    ids = first_id + np.arange(count)
    labels = np.argmax(onehot[:count], axis=1)
    mixed = pixels.copy()
    mixed[:count] = attack.generate(model, pixels[:count], labels, sample_ids=ids)
    return mixed


def trades_examples(
    model: keras.Model,
    defense: TradesTraining,
    pixels: np.ndarray,
    epoch: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """TRADES' inner maximisation: ``steps`` projected sign steps up ``KL(f(x) ‖ f(x'))``."""
    epsilon = defense.epsilon_at(epoch)
    step_size = _ramped_step_size(defense, epsilon)
    training = defense.attack_mode == "train"
    clean_logits = gradients.logits(model, pixels, training=training)
    start = pixels + TRADES_START_SCALE * rng.standard_normal(pixels.shape).astype(np.float32)
    x_adv = np.clip(start, *_PIXELS).astype(np.float32)
    numbers = np.array([step_size, epsilon, *_PIXELS], np.float32)
    step = gradients.loss_step(
        model, "trades_kl", _kl_objective, _projected_sign_step, training=training
    )
    state: tuple = (x_adv,)
    for _ in range(defense.steps):
        state = step(state, (pixels, clean_logits, numbers))
    return np.asarray(state[0], np.float32)


def reseed_dropout(model: keras.Model, seed: int, epoch: int, batch: int) -> None:
    """Set every dropout-style layer's seed state from ``(seed, epoch, batch, layer)``.

    Keras does not save a seed generator's state in a checkpoint (a loaded model draws a fresh
    one), so without this a resumed run would drop different units than an uninterrupted one.
    """
    for index, layer in enumerate(model.layers):
        generator = getattr(layer, "seed_generator", None)
        if generator is None:
            continue
        value = _rng(seed, _DROPOUT_STREAM, epoch, batch, index).integers(0, 2**31 - 1)
        generator.state.assign(np.array([value, 0], dtype=generator.state.dtype))


def class_sample_weights(onehot: np.ndarray, class_weight: dict[int, float] | None) -> np.ndarray:
    """Per-row weights ``class_weight[label]`` (all ones without class weighting)."""
    if class_weight is None:
        return np.ones(len(onehot), np.float32)
    table = np.array([class_weight[k] for k in range(onehot.shape[1])], np.float32)
    return table[np.argmax(onehot, axis=1)]


def _ramped_step_size(defense: PGDTraining | TradesTraining, epsilon: float) -> float:
    """The step size at (ramped) ``epsilon``: Madry's ``2.5 · ε / steps`` by default, else the
    configured one scaled by ``ε / epsilon`` so a ramp keeps the steps-to-radius ratio."""
    if defense.step_size is None:
        return MADRY_STEP_FACTOR * epsilon / defense.steps
    return defense.step_size * epsilon / defense.epsilon


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def _kl_objective(logits: Any, constants: tuple) -> Any:
    """TRADES' inner objective ``KL(f(x) ‖ f(x'))``; ``constants[1]`` holds the clean logits."""
    return kl_divergence(constants[1], logits)


def _projected_sign_step(
    state: tuple, constants: tuple, values: Any, gradient: Any, logits: Any
) -> tuple:
    """``x' ← clip(Π_ε(x' + α · sign ∇))``, NaN gradients counting as 0 (as in PGD's steps)."""
    x_adv, (x, _, numbers) = state[0], constants
    step_size, epsilon, low, high = numbers[0], numbers[1], numbers[2], numbers[3]
    direction = ops.sign(ops.nan_to_num(gradient, nan=0.0))
    moved = ops.minimum(ops.maximum(x_adv + step_size * direction, x - epsilon), x + epsilon)
    return (ops.clip(moved, low, high),)
