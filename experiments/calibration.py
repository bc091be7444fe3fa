"""Scores of a classifier's predictive probabilities: accuracy, NLL, expected calibration error, Brier score, and the
AUROC of telling in-distribution from out-of-distribution inputs by the confidence."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def _checked(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"probabilities must be (examples, classes) with one label per example; got {probs.shape} "
                         f"and labels {labels.shape}")
    if not np.all(np.isfinite(probs)):
        raise ValueError("predictive probabilities have non-finite entries")
    return probs, labels


def scores(probs: np.ndarray, labels: np.ndarray, *, bins: int = 15) -> dict[str, float]:
    """``accuracy``; ``nll`` = mean ``-log p_y`` (probabilities floored at 1e-12); ``ece`` = sum over ``bins``
    equal-width confidence bins of (bin share) x |accuracy - mean confidence| (Guo et al. 2017); ``brier`` = mean
    ``sum_c (p_c - 1[c = y])^2``."""
    probs, labels = _checked(probs, labels)
    n = labels.shape[0]
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = predicted == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = sum(abs(correct[which == k].mean() - confidence[which == k].mean()) * np.mean(which == k)
              for k in range(bins) if np.any(which == k))
    onehot = np.eye(probs.shape[1])[labels]
    return {"accuracy": float(correct.mean()),
            "nll": float(-np.mean(np.log(np.maximum(probs[np.arange(n), labels], 1e-12)))),
            "ece": float(ece), "brier": float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))}


def ood_auroc(in_probs: np.ndarray, out_probs: np.ndarray) -> float:
    """AUROC of the maximum probability as the score that an input is in-distribution (1: perfectly separated,
    0.5: chance)."""
    score = np.concatenate([np.max(in_probs, axis=1), np.max(out_probs, axis=1)])
    truth = np.concatenate([np.ones(len(in_probs)), np.zeros(len(out_probs))])
    return float(roc_auc_score(truth, score))
