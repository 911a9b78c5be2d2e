"""Trusted test accuracy: the grader's own test set, the student's saved model, predictions
computed in a separate process, accuracy computed here. Nothing the notebook printed or
returned is used.

One fresh (sandboxed) process, started while the notebook runs (grader.evidence.predictor), predicts
both parts of the test set at once: the public part, which the notebook had as `x_test`, and the
private part, which no student's sandbox ever sees. The score is the
accuracy on the private part. The two accuracies are compared by a one-sided two-proportion
z-test (pooled standard error): a model that never saw either part scores them alike, one trained
on the public part scores it higher (see `gap_statistic`; the bound is the spec's
`[integrity] gap_z`). The same process reads what the saved file says about the model
(grader.kernel.predict.model_facts).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grader.evidence.reader import Evidence
from grader.evidence.predictor import PredictionTimeout, Predictor, hand_over

PREDICT_TIMEOUT_S = 300  # when there is no reference time to scale from (the reference run itself)
NUM_CLASSES = 10


@dataclass
class ModelEvaluation:
    """Accuracy of one saved model on the grader's test set (or why there is none)."""

    fit: int | None
    accuracy: float | None = None  # on the private part: images the notebook never saw
    per_class: list[float] = field(default_factory=list)  # private part
    confusion: list[list[int]] = field(default_factory=list)  # private part
    input_scale: float = 1.0
    problem: str | None = None
    public_accuracy: float | None = None  # on the public part (the notebook's own x_test)
    n_public: int = 0
    n_private: int = 0
    gap_z: float | None = None  # (public − private accuracy) / pooled standard error
    predict_seconds: float | None = None  # from handing the model to the predictor to its predictions (load, predict)
    predict_timeout_s: float | None = None  # the limit it ran under
    predict_timed_out: bool = False  # stopped at that limit (a pathological model), reported as predict_failed
    model: dict[str, Any] = field(default_factory=dict)  # what the saved file says (model_facts)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def gap_statistic(correct_public: int, n_public: int, correct_private: int, n_private: int) -> float | None:
    """One-sided two-proportion z: (p_public − p_private) / sqrt(p(1−p)(1/n_public + 1/n_private)),
    p pooled. None when it is undefined (an empty part, or both parts all right or all wrong)."""
    if n_public <= 0 or n_private <= 0:
        return None
    pooled = (correct_public + correct_private) / (n_public + n_private)
    variance = pooled * (1.0 - pooled) * (1.0 / n_public + 1.0 / n_private)
    if variance <= 0.0:
        return None
    return round((correct_public / n_public - correct_private / n_private) / math.sqrt(variance), 3)


def predict_timeout(reference_seconds: float | None, *, min_s: float, factor: float, max_s: float = 180.0) -> float:
    """The limit for one model's prediction: `factor` × the reference model's own, within [min_s, max_s]."""
    if not reference_seconds or reference_seconds <= 0:
        return float(PREDICT_TIMEOUT_S)
    return round(min(float(max_s), max(float(min_s), float(factor) * reference_seconds)), 1)


def input_scale_for(evidence: Evidence, fit: dict[str, Any]) -> float:
    """Feed test images on the scale the model trained on (0–1 or 0–255).

    For a generator that is what it yielded (its first batch, after `rescale`), not what was
    passed to flow(): ImageDataGenerator(rescale=1/255) on raw pixels trains on 0–1.
    """
    summary = fit.get("train_x") or {}
    peak = summary.get("max")
    if fit.get("input", {}).get("kind") == "flow":
        flow = evidence.flow(fit["input"].get("flow")) or {}
        batch = (evidence.batch(flow.get("flow")) or {}).get("x") or {}
        rescale = ((evidence.datagen(flow.get("datagen")) or {}).get("params") or {}).get("rescale")
        peak = batch.get("max", (flow.get("x") or summary).get("max"))
        if not batch and isinstance(peak, (int, float)) and isinstance(rescale, (int, float)) and rescale:
            peak *= rescale
    return 1.0 if isinstance(peak, (int, float)) and peak > 1.5 else 1.0 / 255.0


def score_predictions(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, list[float], list[list[int]]]:
    if probabilities.ndim != 2 or len(probabilities) != len(labels):
        raise ValueError(f"predictions have shape {probabilities.shape}, expected ({len(labels)}, classes)")
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=int)
    np.add.at(confusion, (labels.astype(int), np.clip(predicted, 0, NUM_CLASSES - 1)), 1)
    per_class = (np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)).round(4).tolist()
    return float((predicted == labels).mean()), per_class, confusion.tolist()


async def evaluate_training_model(
    evidence: Evidence, *, y_test: np.ndarray, predictor: Predictor, y_private: np.ndarray | None = None,
    timeout_s: float = PREDICT_TIMEOUT_S,
) -> ModelEvaluation:
    """The training fit's saved model, handed to this student's predictor (started with the public
    test images, then the private ones: `test_images`); scored here with labels it never sees."""
    fit = evidence.training_fit()
    if fit is None:
        return ModelEvaluation(fit=None, problem="no_fit")
    model = evidence.model_file(fit["fit"])
    if model is None:
        return ModelEvaluation(fit=fit["fit"], problem="no_model")
    scale = input_scale_for(evidence, fit)
    result = ModelEvaluation(fit=fit["fit"], input_scale=scale, predict_timeout_s=timeout_s)
    split = y_private is not None and len(y_private) > 0
    started = time.monotonic()
    try:
        probabilities = await hand_over(predictor, model, scale, timeout_s=timeout_s, facts=result.model)
        if split:
            score_parts(result, probabilities, y_test, y_private)
        else:
            result.accuracy, result.per_class, result.confusion = score_predictions(probabilities, y_test)
    except PredictionTimeout as exc:
        result.predict_timed_out = True
        result.problem = f"predict_failed: {exc}"[:500]
    except (RuntimeError, ValueError, OSError) as exc:
        result.problem = f"predict_failed: {exc}"[:500]
    result.predict_seconds = round(time.monotonic() - started, 2)
    return result


def test_images(x_test: np.ndarray, x_private: np.ndarray | None) -> np.ndarray:
    """What the predictor gets: the public part, then the private part (never any labels)."""
    return np.concatenate([x_test, x_private]) if x_private is not None and len(x_private) else x_test


def score_parts(result: ModelEvaluation, probabilities: np.ndarray, y_public: np.ndarray,
                y_private: np.ndarray) -> None:
    """The score from the private part; the public part only for the gap."""
    if probabilities.ndim != 2 or len(probabilities) != len(y_public) + len(y_private):
        raise ValueError(f"predictions have shape {probabilities.shape}, expected "
                         f"({len(y_public) + len(y_private)}, classes)")
    public, private = probabilities[:len(y_public)], probabilities[len(y_public):]
    result.accuracy, result.per_class, result.confusion = score_predictions(private, y_private)
    result.public_accuracy = score_predictions(public, y_public)[0] if len(y_public) else None
    result.n_public, result.n_private = len(y_public), len(y_private)
    correct_public = int((public.argmax(axis=1) == y_public).sum()) if len(y_public) else 0
    correct_private = int((private.argmax(axis=1) == y_private).sum())
    result.gap_z = gap_statistic(correct_public, len(y_public), correct_private, len(y_private))
