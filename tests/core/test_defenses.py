"""Defended training (PGD-AT, TRADES, Gaussian noise): the batches it trains on, its loss, and a
resumed run that is the same run as an uninterrupted one."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from pydantic import ValidationError

from tests.support.training_specs import TINY, tiny_spec
from training import defenses, gradients
from training.config import ModelOptions, PGDTraining, TradesTraining, TrainConfig
from training.fit import STATE_FILE, ProgressEvent, train
from training.models import ArchitectureConfig, build_from_config
from training.pipeline import prepared_arrays

PGD = {"method": "pgd", "epsilon": 4.0, "steps": 2, "fraction": 0.5, "ramp_epochs": 2}
TRADES = {"method": "trades", "epsilon": 4.0, "steps": 2, "beta": 6.0}


def _attention_spec(**train: object):
    # The attention model has the only dropout layer: its masks must also resume exactly.
    return tiny_spec(**train).model_copy(update={"model": ModelOptions(architecture="attention")})


@pytest.fixture(scope="module")
def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    return build_from_config(ArchitectureConfig(num_classes=2, input_size=TINY), weights=None)


@pytest.fixture
def tiny_batch(tiny_images) -> tuple[np.ndarray, np.ndarray]:
    config = tiny_spec().preprocess
    pixels = prepared_arrays(tiny_images.subset(np.arange(8)), config)
    return pixels, np.eye(2, dtype=np.float32)[tiny_images.labels[:8]]


def test_a_recipe_takes_one_defense_with_valid_parameters():
    config = TrainConfig(adversarial=PGD)
    assert isinstance(config.adversarial, PGDTraining) and config.defended
    assert isinstance(TrainConfig(adversarial=TRADES).adversarial, TradesTraining)
    assert TrainConfig(noise_sigma=12.0).defended and not TrainConfig().defended
    with pytest.raises(ValidationError, match="choose one defense"):
        TrainConfig(adversarial=PGD, noise_sigma=12.0)
    for bad in ({**PGD, "fraction": 1.5}, {**PGD, "epsilon": 0}, {**PGD, "method": "fgsm"}):
        with pytest.raises(ValidationError):
            TrainConfig(adversarial=bad)
    with pytest.raises(ValidationError):  # beta is TRADES', not PGD's
        TrainConfig(adversarial={**PGD, "beta": 6.0})


def test_epsilon_ramps_linearly_to_full():
    ramp = PGDTraining(**PGD)
    assert [ramp.epsilon_at(e) for e in range(3)] == [2.0, 4.0, 4.0]
    assert PGDTraining(**{**PGD, "ramp_epochs": 0}).epsilon_at(0) == 4.0


def test_pgd_replaces_a_fraction_of_the_batch_inside_the_ramped_ball(tiny_model, tiny_batch):
    pixels, onehot = tiny_batch
    config = TrainConfig(adversarial=PGD, seed=5)
    weights = np.ones(8, np.float32)

    def batch(epoch: int, index: int) -> np.ndarray:
        return defenses.defended_batch(
            tiny_model, config, pixels, onehot, weights, epoch, index, 2
        ).x

    first = batch(0, 0)
    np.testing.assert_array_equal(first[4:], pixels[4:])  # fraction 0.5 of 8 rows
    distance = np.abs(first[:4] - pixels[:4]).max(axis=(1, 2, 3))
    assert (distance > 0).all()
    # epoch 0 of a 2-epoch ramp: ε = 2; float32 rounding of 255-scale values is < 1e-4
    assert distance.max() <= 2.0 + 1e-4 and first.min() >= 0 and first.max() <= 255
    assert np.abs(batch(1, 0)[:4] - pixels[:4]).max() > 2.0 + 1e-4  # full ε = 4 after the ramp
    np.testing.assert_array_equal(batch(0, 0), first)  # a pure function of (seed, epoch, batch)
    assert not np.array_equal(batch(0, 1), first)  # another batch, other random starts


def test_trades_climbs_the_kl_inside_the_ball(tiny_model, tiny_batch):
    pixels, onehot = tiny_batch
    config = TrainConfig(adversarial=TRADES)
    weights = np.arange(1, 9, dtype=np.float32)
    x, y, w = defenses.defended_batch(tiny_model, config, pixels, onehot, weights, 0, 0, 1)
    np.testing.assert_array_equal(x[:8], pixels)
    np.testing.assert_array_equal(y, np.concatenate([onehot, onehot]))
    np.testing.assert_array_equal(w, np.concatenate([weights, weights]))
    adversarial = x[8:]
    assert np.abs(adversarial - pixels).max() <= 4.0 + 1e-4
    clean = gradients.logits(tiny_model, pixels)
    start_rng = np.random.default_rng(0)
    start = np.clip(pixels + 0.255 * start_rng.standard_normal(pixels.shape), 0, 255)

    def kl(images: np.ndarray) -> float:
        logits = gradients.logits(tiny_model, images.astype(np.float32))
        return float(np.sum(keras.ops.convert_to_numpy(defenses.kl_divergence(clean, logits))))

    assert kl(adversarial) > kl(start)


def test_a_train_mode_attack_sees_batch_statistics_and_changes_no_state(tiny_model, tiny_batch):
    """``attack_mode: train`` (the default) attacks the network a training step runs, batch
    statistics and all, through a stateless call: batch norm's moving statistics stay put."""
    pixels, onehot = tiny_batch

    def state() -> list[np.ndarray]:
        return [keras.ops.convert_to_numpy(v) for v in tiny_model.non_trainable_variables]

    before = state()
    inference = gradients.logits(tiny_model, pixels)
    train_mode = gradients.logits(tiny_model, pixels, training=True)
    for defense in (PGD, TRADES):
        config = TrainConfig(adversarial=defense)
        assert config.adversarial.attack_mode == "train"
        defenses.defended_batch(tiny_model, config, pixels, onehot, np.ones(8, np.float32), 0, 0, 1)
    for old, new in zip(before, state(), strict=True):
        np.testing.assert_array_equal(new, old)

    # what a training-mode call computes (on a copy: that call does update the statistics)
    copy = keras.models.clone_model(tiny_model)
    copy.set_weights(tiny_model.get_weights())
    expected = keras.ops.convert_to_numpy(copy(pixels, training=True))
    scale = np.abs(expected).max()
    # the same float32 operations compiled and eager differ by rounding, ~1e-6 of the logits'
    # scale through ResNet-50; a fresh model's moving statistics (mean 0, variance 1) are far
    # from its batch statistics, so the two modes differ by a sizeable share of that scale
    np.testing.assert_allclose(train_mode, expected, rtol=0, atol=1e-4 * scale)
    assert np.abs(train_mode - inference).max() > 0.1 * scale


def test_trades_loss_is_weighted_ce_plus_beta_kl():
    rng = np.random.default_rng(1)
    clean, adversarial = rng.normal(size=(2, 5, 3)).astype(np.float32)
    onehot = np.eye(3, dtype=np.float32)[[0, 2, 1, 1, 0]]
    weights = np.array([1.0, 2.0, 0.5, 1.0, 3.0], np.float32)
    loss = defenses.TradesLoss(beta=6.0)(
        np.concatenate([onehot, onehot]),
        np.concatenate([clean, adversarial]),
        sample_weight=np.concatenate([weights, weights]),
    )

    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    p_log, q_log = (
        log_softmax(clean.astype(np.float64)),
        log_softmax(adversarial.astype(np.float64)),
    )
    ce = -(onehot * p_log).sum(axis=1)
    kl = (np.exp(p_log) * (p_log - q_log)).sum(axis=1)
    expected = np.mean(weights * (ce + 6.0 * kl))
    # float32 softmax/log on O(1) logits: relative error ~1e-6; 1e-5 leaves a margin
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert defenses.TradesLoss.from_config(defenses.TradesLoss(2.0).get_config()).beta == 2.0


def test_noise_augmentation_adds_unclipped_gaussian_noise_of_sigma(tiny_model, tiny_batch):
    pixels, onehot = tiny_batch
    config = TrainConfig(noise_sigma=12.0)
    ones = np.ones(8, np.float32)
    x = defenses.defended_batch(tiny_model, config, pixels, onehot, ones, 0, 0, 1).x
    noise = (x - pixels).ravel()
    # n = 8·32·32·3 = 24576 draws: the sample std's relative standard error is 1/sqrt(2n) ≈ 0.5 %,
    # so 3 % is six standard errors
    assert noise.std() == pytest.approx(12.0, rel=0.03)
    again = defenses.defended_batch(tiny_model, config, pixels, onehot, ones, 0, 0, 1).x
    np.testing.assert_array_equal(again, x)
    black = defenses.defended_batch(tiny_model, config, 0 * pixels, onehot, ones, 0, 0, 1).x
    assert (black < 0).any()  # not clipped: smoothing's noise is Gaussian, not clipped Gaussian


def test_class_weights_become_per_row_sample_weights():
    onehot = np.eye(2, dtype=np.float32)[[0, 1, 1]]
    weights = defenses.class_sample_weights(onehot, {0: 4 / 6, 1: 2.0})
    np.testing.assert_allclose(weights, [4 / 6, 2.0, 2.0])
    np.testing.assert_array_equal(defenses.class_sample_weights(onehot, None), [1, 1, 1])


@pytest.mark.slow
@pytest.mark.parametrize("adversarial", [PGD, TRADES], ids=["pgd", "trades"])
def test_adversarial_training_resumes_exactly_after_a_crash(
    tmp_path, tiny_images, tiny_splits, adversarial
):
    spec = _attention_spec(epochs=2, adversarial=adversarial, warmup_epochs=1)
    uninterrupted = train(spec, tiny_images, tiny_splits, tmp_path / "straight")

    def crash_in_epoch_two(event: ProgressEvent) -> None:
        if event.stage == "batch" and event.epoch == 2:
            raise RuntimeError("worker died")

    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="worker died"):
        train(spec, tiny_images, tiny_splits, crashed, listener=crash_in_epoch_two)
    assert json.loads((crashed / STATE_FILE).read_text())["epoch"] == 1
    resumed = train(spec, tiny_images, tiny_splits, crashed)

    assert resumed.history == uninterrupted.history
    assert resumed.best_epoch == uninterrupted.best_epoch
    for ours, theirs in zip(
        resumed.model.get_weights(), uninterrupted.model.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)
    assert set(uninterrupted.history) >= {"loss", "accuracy", "val_loss"}


def test_a_defended_epoch_logs_the_running_mean_of_its_batches(
    tmp_path, tiny_images, tiny_splits, monkeypatch
):
    """Keras 3's ``train_on_batch`` reports one batch: the epoch's history must be the mean over
    its rows, as ``fit`` reports it, not the last batch's values (16 images: two batches of 8)."""
    batches: list[tuple[int, dict[str, float]]] = []
    train_on_batch = keras.Model.train_on_batch

    def recorded(self, x, y=None, **kwargs):  # a spy: the real step runs
        result = train_on_batch(self, x, y, **kwargs)
        batches.append((len(x), {k: float(v) for k, v in result.items()}))
        return result

    monkeypatch.setattr(keras.Model, "train_on_batch", recorded)
    result = train(tiny_spec(epochs=1, adversarial=PGD), tiny_images, tiny_splits, tmp_path)

    assert [rows for rows, _ in batches] == [8, 8]
    for key in ("loss", "accuracy"):
        mean = sum(rows * logs[key] for rows, logs in batches) / 16
        assert result.history[key] == [pytest.approx(mean, rel=1e-6)], key
    assert batches[0][1]["loss"] != batches[1][1]["loss"]  # else the mean could be the last
