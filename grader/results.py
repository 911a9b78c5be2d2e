"""Typed results: what one check and one student got. `result.json` is their dict form.

The field names are an output contract other tools read; add fields, never rename.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Student-level statuses. Every status except invalid/grader_error still has graded checks.
GRADED, ERROR, TIMEOUT, KERNEL_DIED, INVALID, GRADER_ERROR = (
    "graded", "error", "timeout", "kernel_died", "invalid", "grader_error")


@dataclass
class CheckResult:
    id: str
    status: str  # pass | fail | error | not_run | manual
    points: int
    max_points: int
    message: str
    expected: Any = None
    actual: Any = None
    title: str = ""
    hint: str = ""
    visible: bool = True


@dataclass
class StudentResult:
    student: str
    assignment: str
    status: str
    message: str
    score: int
    max_score: int
    checks: list[CheckResult] = field(default_factory=list)
    execution: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None
    reference: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    graded_at: str = ""
    lang: str = "ja"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def pending_manual(self) -> int:
        return sum(1 for c in self.checks if c.status == "manual")
