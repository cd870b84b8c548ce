"""Every gradient the project takes (attacks, Grad-CAM) and every compiled forward pass goes
through this module.

It is the one place where model computation depends on the Keras backend: TensorFlow
(``tf.GradientTape`` inside a compiled ``tf.function``) or JAX (``jax.grad`` of
``model.stateless_call`` under ``jax.jit``, weights passed as arguments so updated weights never
meet a stale compiled function). Callers pass plain numpy arrays and get numpy arrays back, so
attacks, explanations and training stay backend-free. (The input pipeline and the device banner
differ per backend too, in ``pipeline.py`` and ``devices.py``; TensorFlow is imported only on
its own backend.)

Compiled functions are cached on the model object itself (:func:`cached`), so they go when the
model does; they capture no per-call state, so one model can serve concurrent callers. (Not in a
``WeakKeyDictionary``: its values, closures over the model, would keep every model alive.)

Everything runs the network in inference mode (batch-norm moving statistics, no dropout) unless
``training=True``: then it runs as in a training step (batch statistics, the dropout masks the
layers' seed state gives) but *statelessly*, so batch norm's moving statistics and the dropout
seeds are left as they were. Adversarial training makes its examples that way (see
:mod:`training.defenses`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import keras
import numpy as np

BACKEND = keras.backend.backend()

_Made = TypeVar("_Made")

# the model's attribute holding what :func:`cached` made for it: set past Keras' attribute
# tracking (which would wrap the dict), and dunder-named because Keras' saving walks every other
# attribute and would write the split models kept here into the model's file
_CACHE_ATTRIBUTE = "__medrobust_compiled"


def cached(model: keras.Model, key: Hashable, make: Callable[[], _Made]) -> _Made:
    """``make()`` once per (model, key): compiled functions, split or derived models.

    Kept in a dict on ``model`` itself: what is made usually refers back to the model, a cycle
    the garbage collector frees with the model, where a module-level cache keyed by the model
    would hold both forever (a served model replaced, a test's model dropped).
    """
    per_model = model.__dict__.get(_CACHE_ATTRIBUTE)
    if per_model is None:
        per_model = {}
        object.__setattr__(model, _CACHE_ATTRIBUTE, per_model)
    if key not in per_model:
        per_model[key] = make()
    return per_model[key]


def _cross_entropy(logits: Any, onehot: Any) -> Any:
    """Per-example cross-entropy on logits (summed by callers so gradients stay per-example)."""
    return keras.ops.categorical_crossentropy(onehot, logits, from_logits=True)


def loss_input_gradient(
    model: keras.Model, pixels: np.ndarray, onehot: np.ndarray, training: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(d Σ_i CE(model(x_i), y_i) / d x, logits) for a batch; pixels in raw [0, 255] space.

    The sum keeps each example's gradient equal to the gradient of its own loss.
    """
    step = cached(
        model,
        ("loss_input_gradient", training),
        lambda: _make_loss_input_gradient(model, training),
    )
    gradient, logits = step(pixels.astype(np.float32), onehot.astype(np.float32))
    return np.asarray(gradient), np.asarray(logits)


def logits(model: keras.Model, pixels: np.ndarray, training: bool = False) -> np.ndarray:
    """Logits as numpy (inference mode unless ``training``), compiled once per model and mode."""
    forward = cached(model, ("logits", training), lambda: _make_forward(model, training))
    return np.asarray(forward(pixels.astype(np.float32)))


def linf_ascent_steps(
    model: keras.Model,
    x_adv: np.ndarray,
    x: np.ndarray,
    onehot: np.ndarray,
    steps: int,
    step_size: float,
    epsilon: float,
    clip: tuple[float, float],
    targeted: bool,
    training: bool = False,
) -> np.ndarray:
    """PGD-L∞'s iterations: ``steps`` times ``x_adv ← clip(Π_ε(x_adv + α·sign(±∇CE)))``.

    The sign is of the loss gradient of ``onehot`` (ascending it; descending when ``targeted``),
    NaN entries count as 0, Π_ε clips to ``[x − ε, x + ε]`` and ``clip`` to the pixel range.
    TensorFlow does the step arithmetic in numpy, as its runs always have; JAX runs each whole
    step as one compiled call and keeps the images on the device between steps, because moving
    a batch of 224-px images through host numpy every step costs more than the gradient itself.
    """
    x_adv, x = np.asarray(x_adv, np.float32), np.asarray(x, np.float32)
    return _linf_ascent_steps(
        model,
        x_adv,
        x,
        onehot.astype(np.float32),
        steps,
        step_size,
        epsilon,
        clip,
        targeted,
        training,
    )


def loss_step(
    model: keras.Model, key: Hashable, loss: Callable, update: Callable, training: bool = False
) -> Callable[[tuple, tuple], tuple]:
    """A compiled ``step(state, constants) -> state`` for attacks that iterate on their own loss.

    ``state[0]`` is the batch of images where the step stands. The step evaluates the per-example
    ``loss(logits, constants)`` there and its input gradient (of the sum, so each example gets
    the gradient of its own loss), then returns ``update(state, constants, loss_values, gradient,
    logits)``. ``loss`` and ``update`` must be written with ``keras.ops`` so one definition
    compiles on every backend; everything a step needs that changes between calls (flags, step
    sizes) goes in ``constants`` as arrays, never Python numbers, or each new value recompiles.

    Gradient and bookkeeping are one compiled call, and the state stays on the device between
    calls (backend tensors; ``np.asarray`` them at the end): an attack whose per-example state is
    several image-sized arrays would otherwise spend longer moving them through numpy each step
    than computing the gradient. ``key`` names the (loss, update) pair in the per-model cache.
    """
    return cached(
        model, ("loss_step", key, training), lambda: _make_loss_step(model, loss, update, training)
    )


def batch_logits(model: keras.Model, pixels: Any) -> np.ndarray:
    """Logits of one input-pipeline batch, for evaluation during and after training.

    TensorFlow keeps the eager call its training runs have always used, so a run resumed under
    this code computes bit-identical validation metrics; JAX uses the compiled :func:`logits`
    (eager JAX dispatches every op of ResNet-50 separately).
    """
    if BACKEND == "tensorflow":
        return np.asarray(model(pixels, training=False))
    return logits(model, np.asarray(pixels))


def layer_activations_and_gradients(
    model: keras.Model, layer_name: str, pixels: np.ndarray, class_indices: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Activations A of ``layer_name``, dScore/dA, logits and the classes c_i explained, where
    Score = Σ_i logit_i[c_i].

    ``class_indices`` None (or -1 entries) picks each image's predicted class inside the same
    pass, so explaining the prediction costs one forward pass, not two. Grad-CAM needs the
    gradient at an inner layer: the model is split there into ``pixels → A`` and ``A → logits``
    so every backend can differentiate the (cheap) second half.
    """
    if class_indices is None:
        class_indices = np.full(len(pixels), -1)
    head, tail = cached(model, ("split", layer_name), lambda: _split_at(model, layer_name))
    step = cached(model, ("layer_grad", layer_name), lambda: _make_layer_gradient(head, tail))
    activations, gradient, out, classes = step(
        pixels.astype(np.float32), np.asarray(class_indices).astype(np.int32)
    )
    return np.asarray(activations), np.asarray(gradient), np.asarray(out), np.asarray(classes)


def _split_at(model: keras.Model, layer_name: str) -> tuple[keras.Model, keras.Model]:
    layer = model.get_layer(layer_name)  # ValueError names the layer if absent
    tensor = layer.output
    if isinstance(tensor, list | tuple):
        raise ValueError(f"layer {layer_name!r} has several outputs; pick a single-output layer")
    head = keras.Model(model.input, tensor, name=f"{model.name}_to_{layer_name}")
    tail = keras.Model(tensor, model.output, name=f"{model.name}_from_{layer_name}")
    return head, tail


if BACKEND == "tensorflow":
    import tensorflow as tf

    # a model whose output does not depend on its input (e.g. behind a stop-gradient) has a zero
    # gradient, as on JAX, instead of TensorFlow's None
    ZERO = tf.UnconnectedGradients.ZERO

    def _network(model: keras.Model, training: bool) -> Callable[[tf.Tensor], tf.Tensor]:
        """``model`` as a function of its input: the plain inference call, or a training-mode
        ``stateless_call`` whose variable updates (moving statistics, seeds) are dropped."""
        if not training:
            return lambda pixels: model(pixels, training=False)

        def call(pixels: tf.Tensor) -> tf.Tensor:
            trainable = [v.value for v in model.trainable_variables]
            non_trainable = [v.value for v in model.non_trainable_variables]
            out, _ = model.stateless_call(trainable, non_trainable, pixels, training=True)
            return out

        return call

    def _make_forward(model: keras.Model, training: bool) -> Callable:
        network = _network(model, training)

        @tf.function(reduce_retracing=True)
        def forward(pixels: tf.Tensor) -> tf.Tensor:
            return network(pixels)

        return forward

    def _make_loss_input_gradient(model: keras.Model, training: bool) -> Callable:
        network = _network(model, training)

        @tf.function(reduce_retracing=True)
        def step(pixels: tf.Tensor, onehot: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            with tf.GradientTape() as tape:
                tape.watch(pixels)
                out = network(pixels)
                loss = tf.reduce_sum(_cross_entropy(out, onehot))
            # a dense input's gradient is a Tensor (IndexedSlices only arise from gathers)
            gradient = tf.convert_to_tensor(tape.gradient(loss, pixels, unconnected_gradients=ZERO))
            return gradient, out

        return step

    def _linf_ascent_steps(
        model: keras.Model,
        x_adv: np.ndarray,
        x: np.ndarray,
        onehot: np.ndarray,
        steps: int,
        step_size: float,
        epsilon: float,
        clip: tuple[float, float],
        targeted: bool,
        training: bool,
    ) -> np.ndarray:
        for _ in range(steps):
            grad, _ = loss_input_gradient(model, x_adv, onehot, training)
            grad = np.nan_to_num(grad.astype(np.float32, copy=False), nan=0.0)
            direction = np.sign(-grad if targeted else grad)
            moved = np.clip(x_adv + step_size * direction, x - epsilon, x + epsilon)
            x_adv = np.clip(moved, clip[0], clip[1])
        return x_adv

    def _make_loss_step(
        model: keras.Model, loss: Callable, update: Callable, training: bool
    ) -> Callable:
        network = _network(model, training)

        @tf.function(reduce_retracing=True)
        def step(state: tuple, constants: tuple) -> tuple:
            pixels = state[0]
            with tf.GradientTape() as tape:
                tape.watch(pixels)
                out = network(pixels)
                values = loss(out, constants)
                total = tf.reduce_sum(values)
            grad = tape.gradient(total, pixels, unconnected_gradients=ZERO)
            return update(state, constants, values, grad, out)

        return step

    def _make_layer_gradient(head: keras.Model, tail: keras.Model) -> Callable:
        @tf.function(reduce_retracing=True)
        def step(pixels: tf.Tensor, classes: tf.Tensor) -> tuple[tf.Tensor, ...]:
            activations = head(pixels, training=False)
            with tf.GradientTape() as tape:
                tape.watch(activations)
                out = tail(activations, training=False)
                predicted = tf.argmax(out, axis=1, output_type=tf.int32)
                classes = tf.where(classes < 0, predicted, classes)
                score = tf.reduce_sum(tf.gather(out, classes, axis=1, batch_dims=1))
            grad = tape.gradient(score, activations, unconnected_gradients=ZERO)
            return activations, grad, out, classes

        return step

elif BACKEND == "jax":
    import jax
    import jax.numpy as jnp

    def _weights(model: keras.Model) -> tuple[list[Any], list[Any]]:
        """Current weight values, passed as arguments so a compiled function never goes stale."""
        return (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
        )

    def _pure(model: keras.Model, training: bool = False) -> Callable:
        """``model`` as a pure function of (weights, x); training-mode updates are dropped."""

        def call(weights: tuple[list[Any], list[Any]], x: Any) -> Any:
            out, _ = model.stateless_call(weights[0], weights[1], x, training=training)
            return out

        return call

    def _make_forward(model: keras.Model, training: bool) -> Callable:
        forward = jax.jit(_pure(model, training))
        return lambda pixels: forward(_weights(model), pixels)

    def _make_loss_input_gradient(model: keras.Model, training: bool) -> Callable:
        call = _pure(model, training)

        def loss(pixels: Any, weights: Any, onehot: Any) -> tuple[Any, Any]:
            out = call(weights, pixels)
            return jnp.sum(_cross_entropy(out, onehot)), out

        grad = jax.jit(jax.grad(loss, has_aux=True))
        return lambda pixels, onehot: grad(pixels, _weights(model), onehot)

    def _make_linf_step(model: keras.Model, training: bool) -> Callable:
        call = _pure(model, training)

        def loss(pixels: Any, weights: Any, onehot: Any) -> Any:
            return jnp.sum(_cross_entropy(call(weights, pixels), onehot))

        grad = jax.grad(loss)

        @jax.jit
        def step(weights: Any, x_adv: Any, x: Any, onehot: Any, numbers: Any) -> Any:
            # numbers: (direction sign, α, ε, pixel min, pixel max) as traced scalars, so a new
            # ε or step size does not recompile
            sign, step_size, epsilon, low, high = numbers
            direction = sign * jnp.sign(jnp.nan_to_num(grad(x_adv, weights, onehot), nan=0.0))
            moved = jnp.clip(x_adv + step_size * direction, x - epsilon, x + epsilon)
            return jnp.clip(moved, low, high)

        return step

    def _linf_ascent_steps(
        model: keras.Model,
        x_adv: np.ndarray,
        x: np.ndarray,
        onehot: np.ndarray,
        steps: int,
        step_size: float,
        epsilon: float,
        clip: tuple[float, float],
        targeted: bool,
        training: bool,
    ) -> np.ndarray:
        step = cached(model, ("linf_step", training), lambda: _make_linf_step(model, training))
        numbers = jnp.asarray(
            [-1.0 if targeted else 1.0, step_size, epsilon, clip[0], clip[1]], jnp.float32
        )
        weights = _weights(model)
        device_x, device_onehot = jnp.asarray(x), jnp.asarray(onehot)
        device_adv = jnp.asarray(x_adv)
        for _ in range(steps):
            device_adv = step(weights, device_adv, device_x, device_onehot, numbers)
        return np.asarray(device_adv)

    def _make_loss_step(
        model: keras.Model, loss: Callable, update: Callable, training: bool
    ) -> Callable:
        call = _pure(model, training)

        def objective(pixels: Any, weights: Any, constants: tuple) -> tuple[Any, Any]:
            out = call(weights, pixels)
            values = loss(out, constants)
            return jnp.sum(values), (values, out)

        grad = jax.grad(objective, has_aux=True)

        @jax.jit
        def step(weights: Any, state: tuple, constants: tuple) -> tuple:
            gradient, (values, out) = grad(state[0], weights, constants)
            return update(state, constants, values, gradient, out)

        return lambda state, constants: step(_weights(model), tuple(state), tuple(constants))

    def _make_layer_gradient(head: keras.Model, tail: keras.Model) -> Callable:
        head_call, tail_call = _pure(head), _pure(tail)

        def score(activations: Any, weights: Any, classes: Any) -> tuple[Any, Any]:
            out = tail_call(weights, activations)
            predicted = jnp.argmax(jax.lax.stop_gradient(out), axis=1).astype(jnp.int32)
            classes = jnp.where(classes < 0, predicted, classes)
            return jnp.sum(jnp.take_along_axis(out, classes[:, None], axis=1)), (out, classes)

        grad = jax.grad(score, has_aux=True)

        @jax.jit
        def step(pixels: Any, head_weights: Any, tail_weights: Any, classes: Any) -> tuple:
            activations = head_call(head_weights, pixels)
            gradient, (out, chosen) = grad(activations, tail_weights, classes)
            return activations, gradient, out, chosen

        return lambda pixels, classes: step(pixels, _weights(head), _weights(tail), classes)

else:  # pragma: no cover - torch and others are not supported
    raise ImportError(f"training.gradients supports the tensorflow and jax backends, not {BACKEND}")
