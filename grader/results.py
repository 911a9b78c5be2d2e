"""Typed results: what one check and one student got. `result.json` is their dict form.

The field names are an output contract other tools read; add fields, never rename.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Every status word lives here; code compares with these names, never with the strings.
# Student-level statuses. Every status except invalid/grader_error still has graded checks.
GRADED, ERROR, TIMEOUT, KERNEL_DIED, INVALID, GRADER_ERROR = (
    "graded", "error", "timeout", "kernel_died", "invalid", "grader_error")
# Integrity findings (grader.judge.integrity): the automatic points are held until a TA accepts or rejects.
FLAGGED = "flagged"
STUDENT_STATUSES = (GRADED, ERROR, TIMEOUT, KERNEL_DIED, INVALID, GRADER_ERROR, FLAGGED)
# Check-level statuses (CheckResult.status); `error` (the check itself crashed) is the same word.
PASS, FAIL, MANUAL, NOT_RUN = "pass", "fail", "manual", "not_run"
CHECK_STATUSES = (PASS, FAIL, ERROR, NOT_RUN, MANUAL)
# A `grader grade` run in the gradebook (runs.status; executions.status uses INTERRUPTED too).
RUNNING, FINISHED, INTERRUPTED = "running", "finished", "interrupted"
# The names, for templates (`S.MANUAL`): they compare with these too.
STATUS_NAMES = {"GRADED": GRADED, "ERROR": ERROR, "TIMEOUT": TIMEOUT, "KERNEL_DIED": KERNEL_DIED, "INVALID": INVALID,
                "GRADER_ERROR": GRADER_ERROR, "FLAGGED": FLAGGED, "PASS": PASS, "FAIL": FAIL, "MANUAL": MANUAL,
                "NOT_RUN": NOT_RUN}


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
    public_message: str = ""  # what a student may read: for hidden checks, no expected values
    override: dict[str, Any] | None = None  # a TA's override: points, automatic_points, reason, reviewer, at
    held: dict[str, Any] | None = None  # points held while the submission is flagged: {points, status}
    kind: str = ""  # the spec's check kind (grader.judge.checks), so pages can say expected/actual in words
    ta_score: dict[str, Any] | None = None  # a TA's score of a manual check: points, comment, scorer, at


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
    answers: dict[str, str] = field(default_factory=dict)  # written answers (考察) by check id, for the TA
    submission: dict[str, Any] | None = None  # from `grader pull`: submitted_at, late, late_by_s, original_name
    # grader.judge.integrity: {ok, findings: [{id, source, message, detail}], checked, seconds, key}, and once
    # published while flagged: held_points, status_before, review (a TA's decision, or None)
    integrity: dict[str, Any] | None = None

    @property
    def flagged(self) -> bool:
        return self.status == FLAGGED

    @property
    def late(self) -> bool:
        return bool((self.submission or {}).get("late"))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}  # `complete`: derived, written for other tools

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentResult:
        """The inverse of to_dict (unknown keys are ignored), e.g. to re-render reports from result.json."""
        known = {f.name for f in fields(cls)}
        check_fields = {f.name for f in fields(CheckResult)}
        values = {k: v for k, v in data.items() if k in known}
        values["checks"] = [CheckResult(**{k: v for k, v in c.items() if k in check_fields})
                            for c in data.get("checks", [])]
        return cls(**values)

    @property
    def pending_manual(self) -> int:
        return sum(1 for c in self.checks if c.status == MANUAL)

    @property
    def complete(self) -> bool:
        """The one decision "is this score final?" (class page, grades.csv, reports, exports, feedback):
        every manual check (考察) is scored by a TA, and a flagged submission has a TA's decision.
        Otherwise the score is provisional (暫定): what the student has so far, TA work still to come.
        It lives here, below the final score (grader.gradebook.final), because the pages use it too."""
        waiting_for_decision = self.status == FLAGGED and not (self.integrity or {}).get("review")
        return self.pending_manual == 0 and not waiting_for_decision


def result_json(result: StudentResult) -> str:
    """The canonical JSON of a result (what the gradebook stores, what report keys hash)."""
    return json.dumps(result.to_dict(), ensure_ascii=False, sort_keys=True)
