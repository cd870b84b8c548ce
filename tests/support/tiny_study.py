"""The pieces of the tiny studies the reproduce tests run on the real data: seed 0, one epoch of
batches of 16, 32 px, a few dozen images a split, 16 attacked test images; the plumbing of
``medrobust reproduce``, not its science."""

from __future__ import annotations

import copy
from typing import Any

TRAIN = {"epochs": 1, "batch_size": 16, "learning_rate": 0.001, "patience": 1}

RETINAMNIST = {
    "name": "retinamnist",
    "title": "RetinaMNIST binary",
    "dataset": {
        "kind": "medmnist",
        "path": "retinamnist/retinamnist.npz",
        "task": "retina-binary",
        "split": "source",
        "limit_per_split": 16,
    },
    "preprocess": {"input_size": 32},
}


def tiny_study(
    description: str,
    variants: list[dict[str, Any]],
    tasks: list[dict[str, Any]],
    attacks: list[dict[str, Any]],
    epsilons: list[int],
) -> dict[str, Any]:
    """A study named ``tiny`` (the YAML ``medrobust reproduce`` reads, as a dict): :data:`TRAIN`
    for every variant, ``attacks`` at ``epsilons`` (typical 2, extreme the largest) on 16 test
    images in batches of 8, two of them in the heat-map panels. A deep copy: a test may change
    it, and ``yaml.safe_dump`` writes no anchors for pieces it shares with another study."""
    study = {
        "name": "tiny",
        "description": description,
        "seeds": [0],
        "train": TRAIN,
        "variants": variants,
        "evaluation": {
            "attacks": attacks,
            "epsilons": epsilons,
            "typical_epsilon": 2,
            "extreme_epsilon": max(epsilons),
            "batch_size": 8,
            "limit": 16,
            "panel_images": 2,
        },
        "tasks": tasks,
    }
    return copy.deepcopy(study)
