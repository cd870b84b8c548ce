"""The model store: versions, aliases, provenance, and refusal of tampered artifacts."""

from __future__ import annotations

import re

import numpy as np
import pytest

from training.model_ref import REF_PATTERN, ModelIdentity, ModelRef, ModelRefError, defense_of
from training.models import ArchitectureConfig, build_from_config
from training.preprocess import PreprocessConfig
from training.store import IntegrityError, ModelStore, ModelStoreError, sha256_file

ARCH = ArchitectureConfig(architecture="attention", num_classes=2, input_size=32)
PIXELS = np.random.default_rng(2).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")


@pytest.fixture(scope="module")
def model():
    return build_from_config(ARCH)


def _save(store: ModelStore, model, name: str = "derm"):
    return store.save(
        model,
        name,
        ARCH,
        PreprocessConfig(input_size=32),
        ["benign", "malignant"],
        data_fingerprint="f" * 64,
    )


def test_save_then_load_gives_the_same_model_and_its_provenance(tmp_path, model):
    store = ModelStore(tmp_path)
    manifest = _save(store, model)
    assert manifest.ref == "derm:1"
    assert manifest.weights_sha256 == sha256_file(tmp_path / "derm" / "1" / "model.keras")
    assert manifest.code_version.startswith("0.1.0")
    loaded = store.load("derm")
    assert loaded.manifest.architecture == ARCH
    assert loaded.manifest.data_fingerprint == "f" * 64
    np.testing.assert_array_equal(np.asarray(model(PIXELS)), np.asarray(loaded.model(PIXELS)))


def test_versions_increase_and_aliases_resolve(tmp_path, model):
    store = ModelStore(tmp_path)
    _save(store, model)
    _save(store, model)
    assert store.versions("derm") == [1, 2]
    assert store.resolve("derm", "latest") == 2
    store.set_alias("derm", "production", 1)
    assert store.resolve("derm", "production") == 1
    assert store.manifest("derm", "1").aliases == ["production"]
    assert [m.ref for m in store.list()] == ["derm:1", "derm:2"]


def test_a_tampered_artifact_is_refused(tmp_path, model):
    store = ModelStore(tmp_path)
    _save(store, model)
    weights = tmp_path / "derm" / "1" / "model.keras"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match"):
        store.load("derm", "1")


def test_unknown_names_versions_and_aliases_are_clear_errors(tmp_path, model):
    store = ModelStore(tmp_path)
    _save(store, model)
    with pytest.raises(ModelStoreError, match="no model named 'chest'.*derm"):
        store.load("chest")
    with pytest.raises(ModelStoreError, match="no version 7"):
        store.resolve("derm", "7")
    with pytest.raises(ModelStoreError, match="no alias 'prod'"):
        store.resolve("derm", "prod")
    with pytest.raises(ValueError, match="alias"):
        store.set_alias("derm", "latest", 1)
    with pytest.raises(ValueError, match="model name"):
        _save(store, model, name="../escape")


def test_model_refs_parse_with_and_without_a_selector():
    assert ModelRef.parse("derm") == ModelRef("derm", "latest")
    assert ModelRef.parse("derm:") == ModelRef("derm", "latest")
    assert ModelRef.parse("derm:3") == ModelRef("derm", "3")
    assert ModelRef.parse("derm:production") == ModelRef("derm", "production")
    assert str(ModelRef.parse("derm")) == "derm:latest"


# paths, separators and what a store folder or alias could never be named
UNSTORABLE_REFS = [
    "",
    ":3",
    "../escape",
    "derm:../1",
    "a/b",
    "derm:a/b",
    "-derm",
    "derm:.x",
    "derm:3:4",
    "d" * 65,
    "derm:" + "7" * 65,
    "derm\n",
]


@pytest.mark.parametrize("ref", UNSTORABLE_REFS)
def test_model_refs_no_store_could_hold_are_refused(ref):
    with pytest.raises(ModelRefError, match="bad model ref"):
        ModelRef.parse(ref)


@pytest.mark.parametrize("ref", [*UNSTORABLE_REFS, "derm", "derm:3", "derm:prod.v2", "d" * 64])
def test_the_ref_pattern_for_schemas_admits_what_parse_admits(ref):
    """The API checks refs with REF_PATTERN before they reach ModelRef.parse: the two agree."""
    assert bool(re.fullmatch(REF_PATTERN, ref)) == _parses(ref)


def _parses(ref: str) -> bool:
    try:
        ModelRef.parse(ref)
    except ModelRefError:
        return False
    return True


def test_a_stored_models_identity_names_it_and_its_weights(tmp_path, model):
    manifest = _save(ModelStore(tmp_path), model)

    identity = ModelIdentity.of(manifest)

    assert (identity.key, identity.weights_sha256) == ("derm:1", manifest.weights_sha256)
    assert (identity.architecture, identity.attention_variant) == ("attention", "paper")
    assert identity.describe() == f"model derm:1 (weights sha256 {manifest.weights_sha256})"


@pytest.mark.parametrize(
    ("train", "expected"),
    [
        ({}, None),
        ({"noise_sigma": 0.0}, None),
        ({"noise_sigma": 32.0}, "gaussian-noise σ=32"),
        ({"adversarial": {"method": "pgd", "epsilon": 2.0, "steps": 3}}, "pgd-at ε=2 steps=3"),
        (
            {"adversarial": {"method": "trades", "epsilon": 4.0, "steps": 5, "beta": 6.0}},
            "trades ε=4 steps=5 β=6",
        ),
    ],
)
def test_a_models_defense_is_named_from_its_training_spec(train, expected):
    assert defense_of({"train": train}) == expected
    assert defense_of(None) is None
