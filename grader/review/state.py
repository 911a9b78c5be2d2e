"""What the review app's pages share: the class it serves, the reviewer's name, points from a form.

A refused save re-renders its form with what was typed (`submitted`) and the fields at fault
(`invalid`: field name → message, shown next to the field with aria-invalid), never a blank form.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

from flask import render_template
from werkzeug.wrappers import Response

from grader.assignment.spec import AssignmentSpec
from grader.gradebook.final import Reviews
from grader.gradebook.publish import republish
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


_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def publishing_lock(out: Path) -> threading.Lock:
    """One lock per output folder, shared by every app in this process that serves it."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(out.resolve(), threading.Lock())


class Publisher:
    """Regenerates reports, index.html and grades.csv after a save, one run at a time. `now` returns when
    the files are written; `later` (the scoring queue) hands the student to a background thread so the
    next answer opens at once; saves made meanwhile are published together. Readers of the files
    (/files/, shutdown) `drain` first. The gradebook, which every page reads, is written before either."""

    def __init__(self, review: ClassReview) -> None:
        self.review = review
        self.running = publishing_lock(review.out)  # one republish at a time: they write the same class files
        self.changed = threading.Condition()
        self.pending: set[str] = set()
        self.busy = False
        threading.Thread(target=self._work, name="review-publisher", daemon=True).start()

    def now(self, students: list[str]) -> None:
        with self.running:
            republish(self.review.out, self.review.project_root, self.review.assignment, students)

    def later(self, student: str) -> None:
        with self.changed:
            self.pending.add(student)
            self.changed.notify_all()

    def drain(self, timeout: float = 300.0) -> None:
        with self.changed:
            self.changed.wait_for(lambda: not self.pending and not self.busy, timeout=timeout)

    def _work(self) -> None:
        while True:
            with self.changed:
                self.changed.wait_for(lambda: bool(self.pending))
                batch, self.pending, self.busy = sorted(self.pending), set(), True
            try:
                self.now(batch)
            except Exception:  # the gradebook has the save; the next save or `grader review` republishes
                logging.getLogger(__name__).exception("republishing %s failed", batch)
            finally:
                with self.changed:
                    self.busy = False
                    self.changed.notify_all()


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
