"""The test-accuracy threshold: decided by one function, from the spec's rule, the reference's
accuracy and a calibration when there is one (grader.judge.checks.training.threshold_for).

A batch decides it once and carries it on its frozen Session; stored results are re-judged and the
class page drawn with the same function, so every number and sentence about the threshold agrees.
"""

from __future__ import annotations

from typing import Any

from grader.assignment.spec import AssignmentSpec
from grader.judge.checks import AccuracyThreshold
from grader.judge.checks.training import threshold_for

ACCURACY_KIND = "trusted_test_accuracy"


def accuracy_rule(spec: AssignmentSpec) -> dict[str, Any] | None:
    """The params of the spec's accuracy check (its threshold rule), or None when it has none."""
    return next((c.params for c in spec.checks if c.kind == ACCURACY_KIND), None)


def decide_threshold(spec: AssignmentSpec, budget: str, *, reference_accuracy: float | None,
                     calibration: dict[str, Any] | None = None, lang: str = "ja") -> AccuracyThreshold | None:
    """The threshold in force for this budget, or None (no accuracy check, or nothing to derive it from)."""
    rule = accuracy_rule(spec)
    if rule is None:
        return None
    return threshold_for(rule, budget, reference_accuracy=reference_accuracy, calibration=calibration, lang=lang)
