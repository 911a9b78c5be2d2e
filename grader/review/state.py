"""What the review app's pages share: the class it serves, the reviewer's name, points from a form.

A refused save re-renders its form with what was typed (`submitted`) and the fields at fault
(`invalid`: field name → message, shown next to the field with aria-invalid), never a blank form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from flask import Response, render_template

from grader.assignment.spec import AssignmentSpec
from grader.gradebook.final import Reviews
from grader.gradebook.reviews import ReviewStore
from grader.gradebook.store import Gradebook
from grader.i18n import t
from grader.report.pages import STATUS_LABELS, STATUS_MARKS
from grader.results import CheckResult, StudentResult

LANG = "ja"  # the review app is Japanese (shared templates and the catalogue ask for a language)
REVIEWER_COOKIE = "grader_reviewer"
REVIEWER_DAYS = 365  # a persistent cookie: the name is there again in the next browser session


@dataclass
class Refusal:
    """A form the app refused: what was typed, and the fields at fault with why."""

    submitted: dict[str, str] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)

    def refuse(self, name: str, message: str) -> None:
        self.invalid.setdefault(name, message)

    @property
    def errors(self) -> list[str]:
        return list(self.invalid.values())


@dataclass(frozen=True)
class ClassReview:
    """The graded class a review app serves: where it is and its spec."""

    out: Path
    project_root: Path
    assignment: str
    spec: AssignmentSpec

    def load(self) -> dict[str, StudentResult]:
        """Everyone's final result (held while flagged, manual scores and overrides applied), from the gradebook."""
        out, spec = self.out, self.spec
        reviews = Reviews.load(out, spec.id)
        with Gradebook.open(out) as book:
            current = book.submissions(spec.id)
            return {name: reviews.final(row.result) for name, row in book.results(spec.id).items()
                    if not current or name in current}

    def automatic(self, student: str) -> dict[str, CheckResult]:
        with Gradebook.open(self.out) as book:
            row = book.result(self.spec.id, student)
            return {c.id: c for c in row.result.checks} if row else {}

    def student_page(self, student: str, results: dict[str, StudentResult], *, token: str, reviewer: str,
                     refusal: Refusal | None = None, saved: str | None = None) -> str:
        """One student's page: checks, findings, the 考察, manual points, overrides and the history.
        After a refused save the form shows what was typed and marks the fields at fault."""
        refusal = refusal or Refusal()
        with Gradebook.open(self.out) as book, ReviewStore(self.out) as store:
            manual = book.manual_scores(self.spec.id).get(student, {})
            history = store.history(self.spec.id, student)
        return render_template("review_student.html.j2", ja=True, r=results[student], auto=self.automatic(student),
                               manual=manual, history=history, labels=STATUS_LABELS[LANG], marks=STATUS_MARKS,
                               token=token, reviewer=reviewer, errors=refusal.errors, submitted=refusal.submitted,
                               invalid=refusal.invalid, saved=saved, title=self.spec.title.get(LANG))


def remember_reviewer(response: Response, name: str) -> Response:
    """The reviewer's name for every later page, in this and the next browser sessions (127.0.0.1 only)."""
    if name:
        response.set_cookie(REVIEWER_COOKIE, name, max_age=REVIEWER_DAYS * 86400, httponly=True, samesite="Strict")
    return response


def parse_points(raw: str, maximum: int) -> tuple[int | None, str | None]:
    """A whole number of points from 0 to `maximum` (7.0 is 7), or why not (inf, nan, 1e400, -1, …)."""
    try:
        value = float(raw)
    except ValueError:
        return None, t("review.points_not_a_number", LANG)
    if not math.isfinite(value) or value != int(value):
        return None, t("review.points_not_whole", LANG, maximum=maximum)
    if not 0 <= value <= maximum:
        return None, t("review.points_out_of_range", LANG, maximum=maximum)
    return int(value), None
