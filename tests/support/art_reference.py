"""ART (Adversarial Robustness Toolbox) as the reference the attack cross-checks compare with.

Import only after ``pytest.importorskip("art")``: ART is a test extra, absent on some machines.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from art.estimators.classification import TensorFlowV2Classifier


def art_classifier(model: keras.Model, num_classes: int) -> TensorFlowV2Classifier:
    """``model`` (logits of raw [0, 255] pixels) as ART sees it: cross-entropy on logits, the
    same pixel range as our attacks clip to, and no preprocessing of ART's own."""
    shape = model.input_shape[1:]
    return TensorFlowV2Classifier(
        model,
        nb_classes=num_classes,
        input_shape=shape,
        loss_object=tf.keras.losses.CategoricalCrossentropy(from_logits=True),
        clip_values=(0, 255),
    )


def onehot(y: np.ndarray, num_classes: int) -> np.ndarray:
    """ART's label format."""
    return np.eye(num_classes, dtype=np.float32)[y]
