"""`grader manual`: record a TA's score for one check of one student (e.g. the 考察), or list them.

Scores live in the gradebook's own table (grader.gradebook.store), keyed by student and check; grading
never writes it, and every `grade` applies them on top of the automatic result, so they survive
regrades. Recording one re-renders that student's report and the class pages at once (nothing is
executed).
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from pathlib import Path

from grader.errors import ConfigError
from grader.assignment.spec import load_spec
from grader.gradebook.publish import republish
from grader.gradebook.reviews import ReviewStore
from grader.gradebook.store import GRADEBOOK_FILE, Gradebook, ManualScore
from grader.assignment.student_ids import normalise


@dataclass
class ManualOutcome:
    scores: dict[str, dict[str, ManualScore]]
    student_score: int | None = None
    max_score: int | None = None


def main(*, out: Path, project_root: Path, assignment: str, student: str | None = None, check: str | None = None,
         points: int | None = None, comment: str = "", scorer: str | None = None,
         delete: bool = False) -> ManualOutcome:
    if not (out / GRADEBOOK_FILE).is_file():
        raise ConfigError(f"no gradebook in {out}: grade the class first (grader grade --out {out})")
    spec = load_spec(project_root, assignment)
    with Gradebook.open(out) as book:
        if student is None:
            return ManualOutcome(book.manual_scores(spec.id))
        student = normalise(student)  # ids are NFC (grader.assignment.student_ids); a macOS terminal may type NFD
        stored = book.result(spec.id, student)
        if stored is None:
            raise ConfigError(f"{student} has no result in {out}")
        checks = {c.id: c for c in spec.checks}
        if check not in checks:
            raise ConfigError(f"unknown check {check!r}; the spec has: {', '.join(checks)}")
        if delete:
            book.delete_manual_score(spec.id, student, check)
        else:
            if points is None or not 0 <= points <= checks[check].points:
                raise ConfigError(f"points for {check} must be 0–{checks[check].points}")
            book.set_manual_score(spec.id, student, check, points, comment=comment,
                                  scorer=scorer if scorer is not None else getpass.getuser())
        scores = book.manual_scores(spec.id)
        with ReviewStore(out) as store:  # the review log keeps every change, whichever tool made it
            store.log_manual(spec.id, student, check, None if delete else points, comment,
                             scorer if scorer is not None else getpass.getuser())
    final = republish(out, project_root, assignment, students=[student])[student]
    return ManualOutcome(scores, final.score, final.max_score)
