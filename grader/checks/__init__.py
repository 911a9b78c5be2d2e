"""Check kinds: small functions from evidence to an Observation, registered by name.

A spec's `[[checks]]` entry names a kind and its params; the kind compares what the
student's run produced with what the reference run produced on the same data and budget.
Kinds never see the kernel: only the evidence files and the grader's own data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from grader.evaluate import ModelEvaluation
from grader.evidence import Evidence

PASS, FAIL, MANUAL, NOT_RUN, ERROR = "pass", "fail", "manual", "not_run", "error"


@dataclass(frozen=True)
class AccuracyThreshold:
    """The test-accuracy threshold in force and where it came from (decided once per batch)."""

    value: float
    rule: str  # "calibrated" | "single_reference"
    source: str  # one line for people: "calibration: 3 runs, mean 0.612 ± 0.021" / "single reference run 0.653"
    calibration: dict[str, Any] | None = None  # runs, mean, std, seeds, file (calibrated only)


@dataclass(frozen=True)
class DatasetHashes:
    """Source hashes (grader_kernel.source_hashes) of the grader's own training and test images."""

    train: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class CheckContext:
    student: Evidence
    reference: Evidence
    params: dict[str, Any]
    budget: str
    student_eval: ModelEvaluation | None = None
    reference_eval: ModelEvaluation | None = None
    test_hashes: np.ndarray | None = None
    notebook: Any = None  # the submitted notebook (nbformat node), read as data
    threshold: AccuracyThreshold | None = None  # for trusted_test_accuracy; None: the single-reference rule
    dataset_hashes: DatasetHashes | None = None  # for data_source: what the grader's data set looks like
    known: Any = None  # grader.known_data.GraderData: the grader's own images (exact and near-copy lookups)


@dataclass(frozen=True)
class Observation:
    status: str
    actual: Any = None
    expected: Any = None
    reason: str | None = None  # key into grader/messages.toml, saying why it failed
    reason_args: dict[str, Any] = field(default_factory=dict)


CheckKind = Callable[[CheckContext], Observation]
KINDS: dict[str, CheckKind] = {}


def kind(name: str) -> Callable[[CheckKind], CheckKind]:
    def register(function: CheckKind) -> CheckKind:
        KINDS[name] = function
        return function

    return register


def verdict(ok: bool, actual: Any, expected: Any, reason: str | None = None, **args: Any) -> Observation:
    return Observation(PASS if ok else FAIL, actual, expected, None if ok else reason, args)


def missing(reason: str, expected: Any = None, **args: Any) -> Observation:
    """The evidence needed was never produced (the code did not run or was not written)."""
    return Observation(NOT_RUN, None, expected, reason, args)


from grader.checks import compat, data, generator, notebook, training  # noqa: E402,F401  (registers kinds)
