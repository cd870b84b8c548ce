"""build_model: the paper's two architectures, from raw pixels to logits."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from training.models import (
    WeightsUnavailableError,
    attention_maps_model,
    build_model,
    with_softmax,
)

SIZE = 32  # the smallest input ResNet-50 takes: keeps these tests fast on 2 cores
PIXELS = np.random.default_rng(1).uniform(0, 255, size=(2, SIZE, SIZE, 3)).astype("float32")


@pytest.fixture(scope="module")
def attention_model() -> keras.Model:
    return build_model("attention", num_classes=3, input_size=SIZE)


def test_attention_adds_under_1_3_percent_of_resnet50_parameters(attention_model):
    backbone = keras.applications.ResNet50(include_top=False, weights=None)
    added = attention_model.get_layer("soft_attention").count_params()
    ratio = added / backbone.count_params()
    print(
        f"soft attention adds {added:,} parameters = {ratio:.3%} of ResNet-50's "
        f"{backbone.count_params():,}"
    )
    assert added == 294_928
    assert ratio < 0.013


def test_both_architectures_output_logits_and_softmax_is_separate(attention_model):
    baseline = build_model("baseline", num_classes=3, input_size=SIZE)
    for model in (baseline, attention_model):
        logits = np.asarray(model(PIXELS))
        assert logits.shape == (2, 3)
        assert model.get_layer("logits").get_config()["activation"] == "linear"
        probabilities = np.asarray(with_softmax(model)(PIXELS))
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        expected = shifted / shifted.sum(axis=1, keepdims=True)
        # absolute tolerance: random-init logits are large, so most probabilities are ~0
        np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-6)


def test_layer_names_are_fixed_for_grad_cam(attention_model):
    names = {layer.name for layer in attention_model.layers}
    assert {
        "pixels",
        "caffe_preprocess",
        "conv5_block3_out",
        "soft_attention",
        "attention_pool",
        "features_pool",
        "concat",
        "head_relu",
        "head_dropout",
        "gap",
        "logits",
    } <= names
    again = build_model("attention", num_classes=3, input_size=SIZE)
    assert [layer.name for layer in again.layers] == [
        layer.name for layer in attention_model.layers
    ]


def test_tap_layer_is_a_parameter():
    model = build_model("attention", num_classes=2, input_size=SIZE, tap_layer="conv5_block3_add")
    attention = model.get_layer("soft_attention")
    assert attention.input.name == model.get_layer("conv5_block3_add").output.name
    with pytest.raises(ValueError, match="tap_layer"):
        build_model("baseline", input_size=SIZE, tap_layer="no_such_layer")


def test_attention_maps_are_readable(attention_model):
    maps = np.asarray(attention_maps_model(attention_model)(PIXELS))
    assert maps.shape == (2, 1, 1, 16)  # a 32-px input leaves a 1x1 feature map
    with pytest.raises(ValueError, match="soft_attention"):
        attention_maps_model(build_model("baseline", input_size=SIZE))


@pytest.mark.parametrize(
    "architecture,variant",
    [("baseline", "paper"), ("attention", "paper"), ("attention", "datta-reference")],
)
def test_save_and_load_round_trip_gives_identical_predictions(tmp_path, architecture, variant):
    model = build_model(architecture, num_classes=4, input_size=SIZE, attention_variant=variant)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(model(PIXELS)), np.asarray(loaded(PIXELS)))
    if architecture == "attention":
        assert loaded.get_layer("soft_attention").get_config()["variant"] == variant


def test_imagenet_weights_offline_give_a_clear_error(monkeypatch, tmp_path):
    """The download is replaced by the failure the network gives here (no internet)."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached weights file

    def offline(*args, **kwargs):
        raise ConnectionError("URL fetch failure: no route to storage.googleapis.com")

    monkeypatch.setattr("keras.src.applications.resnet.file_utils.get_file", offline)
    with pytest.raises(WeightsUnavailableError, match="notop.h5"):
        build_model("baseline", input_size=SIZE, weights="imagenet")


def test_a_local_backbone_weights_file_loads(tmp_path):
    source = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(SIZE, SIZE, 3)
    )
    path = tmp_path / "resnet50_notop.weights.h5"
    source.save_weights(path)
    model = build_model("attention", input_size=SIZE, weights=path)
    for name in ("conv1_conv", "conv5_block3_3_conv", "conv5_block3_3_bn"):
        for got, want in zip(
            model.get_layer(name).get_weights(), source.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(got, want)


def test_a_missing_weights_file_is_named():
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        build_model("baseline", input_size=SIZE, weights=Path("/nowhere.h5"))
