"""Classification metrics against scikit-learn's reference implementations."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as sk

from training.metrics import classification_metrics, roc_auc

RNG = np.random.default_rng(5)


def test_metrics_match_scikit_learn_on_an_imbalanced_three_class_problem():
    labels = RNG.choice(3, size=300, p=[0.7, 0.2, 0.1])
    logits = RNG.normal(size=(300, 3)) + np.eye(3)[labels] * 1.2
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    got = classification_metrics(labels, probabilities)
    predicted = probabilities.argmax(axis=1)
    assert got.n == 300
    assert np.isclose(got.accuracy, sk.accuracy_score(labels, predicted))
    assert np.isclose(got.balanced_accuracy, sk.balanced_accuracy_score(labels, predicted))
    assert np.isclose(got.macro_roc_auc, sk.roc_auc_score(labels, probabilities, multi_class="ovr"))
    assert got.confusion_matrix == sk.confusion_matrix(labels, predicted).tolist()
    np.testing.assert_allclose(
        got.per_class_recall, sk.recall_score(labels, predicted, average=None)
    )


def test_auc_counts_ties_as_half_and_is_undefined_without_both_groups():
    scores = np.array([0.1, 0.5, 0.5, 0.9])
    positive = np.array([0, 0, 1, 1])
    assert roc_auc(scores, positive) == sk.roc_auc_score(positive, scores) == 0.875
    assert roc_auc(scores, np.ones(4)) is None


def test_a_class_absent_from_the_labels_has_no_recall_and_is_left_out_of_the_balance():
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    got = classification_metrics(labels, probabilities)
    assert got.per_class_recall == [0.5, 0.5, None]
    assert got.balanced_accuracy == 0.5
