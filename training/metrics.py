"""Classification metrics from labels and class probabilities, in plain numpy.

Medical datasets are imbalanced (HAM10000 is two-thirds nevi), so balanced accuracy and macro
ROC-AUC sit next to plain accuracy; per-class recall and the confusion matrix show where it fails.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel


class ClassificationMetrics(BaseModel):
    """Metrics of one model on one labelled set; JSON-safe."""

    n: int
    accuracy: float
    balanced_accuracy: float
    macro_roc_auc: float | None
    per_class_recall: list[float | None]
    confusion_matrix: list[list[int]]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, shifted by the row maximum so it cannot overflow."""
    shifted = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(shifted - shifted.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve via the rank-sum (Mann-Whitney U) identity, ties counted half.

    None when one of the two groups is empty (AUC is undefined there).
    """
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(scores)]))
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    rank_sum = ranks[positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> ClassificationMetrics:
    """All metrics at once. ``probabilities`` is (N, K); recall of an absent class is None."""
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predicted, num_classes)
    support = matrix.sum(axis=1)
    recalls = [float(matrix[k, k] / support[k]) if support[k] else None for k in range(num_classes)]
    present = [r for r in recalls if r is not None]
    aucs = [roc_auc(probabilities[:, k], labels == k) for k in range(num_classes)]
    defined = [a for a in aucs if a is not None]
    return ClassificationMetrics(
        n=len(labels),
        accuracy=float((predicted == labels).mean()) if len(labels) else 0.0,
        balanced_accuracy=float(np.mean(present)) if present else 0.0,
        macro_roc_auc=float(np.mean(defined)) if defined else None,
        per_class_recall=recalls,
        confusion_matrix=matrix.tolist(),
    )
