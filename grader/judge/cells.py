"""Which notebook cell a check is about: the cell that made the record the check judged.

Every kernel record carries `cell` (the execution count of the cell that was running,
grader.kernel.grader_kernel); the report turns it into a link to that cell of the executed notebook.
"""

from __future__ import annotations

from typing import Any, Callable

from grader.evidence.reader import Evidence
from grader.judge.checks.generator import assignment_flow

Locate = Callable[[Evidence], "dict[str, Any] | None"]


def _flow(evidence: Evidence) -> dict[str, Any] | None:
    return assignment_flow(evidence)


def _batch(evidence: Evidence) -> dict[str, Any] | None:
    flow = assignment_flow(evidence)
    return (evidence.batch(flow["flow"]) if flow else None) or flow


def _datagen(evidence: Evidence) -> dict[str, Any] | None:
    flow = assignment_flow(evidence)
    number = (flow or {}).get("datagen")
    return evidence.datagen(number) if isinstance(number, int) else evidence.first("datagen")


def _fit(evidence: Evidence) -> dict[str, Any] | None:
    return evidence.training_fit() or evidence.first("fit_start")


RECORD_OF_KIND: dict[str, Locate] = {
    "input_shape": _flow, "input_scaled": _flow, "data_source": _flow, "flow_length": _flow,
    "first_batch_shape": _batch, "first_batch_one_hot": _batch, "augmentation_applied": _datagen,
    "split_sizes": lambda e: e.first("split"), "model_params": _fit, "fit_uses_augmented_flow": _fit,
    "fit_steps_per_epoch": _fit, "fit_validation_data": _fit, "no_test_overlap": _fit,
    "evaluated_on_test_set": lambda e: e.first("evaluate"), "trusted_test_accuracy": _fit,
}


def check_cell(kind: str, evidence: Evidence) -> int | None:
    """Execution count of the cell behind a check of `kind`; None when the record was never made."""
    locate = RECORD_OF_KIND.get(kind)
    try:
        record = locate(evidence) if locate else None
    except (KeyError, TypeError, AttributeError):  # malformed evidence only loses the link
        return None
    cell = (record or {}).get("cell")
    return cell if isinstance(cell, int) and not isinstance(cell, bool) else None
