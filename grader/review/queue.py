"""The TA scoring queue: one student's written answer at a time, scored from the keyboard.

    GET  /queue                   → the first student not yet scored (or the "all scored" page)
    GET  /queue/<student>         → the question (from the assignment's template), the student's answer,
                                    the rubric (spec: [[checks.rubric]]), the points box focused
    POST /queue/<student>         → saved as a manual score (gradebook + review log), then on to the
                                    next student not yet scored; the report, index.html and grades.csv
                                    are regenerated in the background (grader.review.state.Publisher)

`?check=<id>` picks the check (default: the first with a rubric, else the first a TA must score).
Keys (queue.js, the app's only script, allowed by its hash): 1…9 pick rubric item n (points + its
stock comment) unless the TA is typing a comment or a name; ↑/↓ adjust the points; Enter saves.
A refused save (no points, out of range, no reviewer) comes back as 422 with everything typed and the
field at fault marked (aria-invalid). The student's answer is shown as escaped text only.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import nbformat
from flask import Flask, abort, redirect, render_template, request, url_for
from markdown_it import MarkdownIt
from markupsafe import Markup

from grader.assignment.spec import AssignmentSpec, CheckSpec
from grader.gradebook.reviews import ReviewStore
from grader.gradebook.store import Gradebook, ManualScore
from grader.i18n import t
from grader.judge.checks.notebook import answer_after_heading
from grader.report.render_notebook import sanitize_html
from grader.results import MANUAL, StudentResult
from grader.review.state import (LANG, REVIEWER_COOKIE, ClassReview, Publisher, Refusal, parse_points,
                                  remember_reviewer)

QUEUE_SCRIPT = Path(__file__).with_name("queue.js").read_text(encoding="utf-8")
_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")


def script_hash(script: str) -> str:
    """The CSP source that allows exactly this inline script."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii") + "'"


@dataclass(frozen=True)
class Queue:
    """The students a TA scores for one check, in order, and what is scored so far."""

    check: CheckSpec
    students: tuple[str, ...]
    scored: dict[str, ManualScore] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)

    def unscored_after(self, student: str | None) -> str | None:
        """The next student not yet scored after `student` (from the start when None), wrapping round."""
        order = list(self.students)
        start = order.index(student) + 1 if student in order else 0
        return next((name for name in order[start:] + order[:start] if name not in self.scored), None)

    def neighbours(self, student: str) -> tuple[str | None, str | None]:
        at = self.students.index(student)
        return (self.students[at - 1] if at > 0 else None,
                self.students[at + 1] if at + 1 < len(self.students) else None)


def build_queue(review: ClassReview, wanted: str | None) -> Queue | None:
    """The queue for check `wanted` (or the default one): everyone whose answer waits for a TA or who
    already has the TA's points for it. None when the spec has no such check."""
    spec = review.spec
    with Gradebook.open(review.out) as book:
        current = book.submissions(spec.id)
        rows = {name: row.result for name, row in book.results(spec.id).items() if not current or name in current}
        manual = book.manual_scores(spec.id)
    check = pick_check(spec, rows, wanted)
    if check is None:
        return None
    waiting = {name for name, r in rows.items() if any(c.id == check.id and c.status == MANUAL for c in r.checks)}
    students = tuple(sorted(waiting | {name for name in rows if check.id in manual.get(name, {})}))
    return Queue(check=check, students=students,
                 scored={name: manual[name][check.id] for name in students if check.id in manual.get(name, {})},
                 answers={name: rows[name].answers.get(check.id, "") for name in students})


def pick_check(spec: AssignmentSpec, rows: dict[str, StudentResult], wanted: str | None) -> CheckSpec | None:
    checks = {c.id: c for c in spec.checks}
    if wanted is not None:
        return checks.get(wanted)
    manual = {c.id for r in rows.values() for c in r.checks if c.status == MANUAL}
    return next((c for c in spec.checks if c.rubric), None) or next((c for c in spec.checks if c.id in manual), None)


@cache
def question_html(template: Path, heading: str) -> Markup:
    """The question a TA reads: the template's cell under `heading`, as sanitized markdown."""
    if not heading or not template.is_file():
        return Markup("")
    text = answer_after_heading(nbformat.read(template, as_version=4), heading)
    return Markup(sanitize_html(_markdown.render(text)))


def queue_pages(app: Flask, review: ClassReview, publisher: Publisher, *, token: str, reviewer: str) -> None:
    """GET /queue, GET and POST /queue/<student>."""

    def queue_or_404() -> Queue:
        queue = build_queue(review, request.args.get("check") or request.form.get("check") or None)
        if queue is None and request.args.get("check"):
            abort(404)
        return queue if queue is not None else Queue(check=review.spec.checks[0], students=())

    @app.get("/queue")
    def queue_start():
        queue = queue_or_404()
        first = queue.unscored_after(None)
        if first is not None:
            return redirect(url_for("queue_student", student=first, check=queue.check.id))
        saved = request.args.get("saved")
        return render_queue(review, queue, None, token=token, reviewer=reviewer_name(reviewer),
                            saved=saved if saved in queue.scored else None)

    @app.get("/queue/<student>")
    def queue_student(student: str):
        queue = queue_or_404()
        if student not in queue.students:
            abort(404)
        saved = request.args.get("saved")
        return render_queue(review, queue, student, token=token, reviewer=reviewer_name(reviewer),
                            saved=saved if saved in queue.scored else None)

    @app.post("/queue/<student>")
    def queue_save(student: str):
        queue = queue_or_404()
        if student not in queue.students:
            abort(404)
        name, refusal = request.form.get("reviewer", "").strip(), Refusal(submitted=request.form.to_dict())
        points, comment = queue_form(request.form, queue.check, name, refusal)
        if refusal.invalid or points is None:  # 422: everything typed comes back, the field at fault marked
            return render_queue(review, queue, student, token=token, reviewer=name, refusal=refusal), 422
        save_manual(review, queue.check, student, points, comment, name)
        publisher.later(student)  # report, class page, grades.csv: in the background, the next answer opens now
        after = build_queue(review, queue.check.id) or queue
        following = after.unscored_after(student)
        target = (url_for("queue_student", student=following, check=queue.check.id, saved=student) if following
                  else url_for("queue_start", check=queue.check.id, saved=student))
        return remember_reviewer(redirect(target), name)


def reviewer_name(default: str) -> str:
    return request.cookies.get(REVIEWER_COOKIE) or default


def queue_form(form, check: CheckSpec, name: str, refusal: Refusal) -> tuple[int | None, str]:
    """The points and comment the queue's form asks for; what is wrong goes into `refusal`."""
    raw = form.get("points", "").strip()
    points, problem = parse_points(raw, check.points) if raw else (None, t("queue.points_missing", LANG))
    if problem:
        refusal.refuse("points", problem)
    if not name:
        refusal.refuse("reviewer", t("review.reviewer_missing", LANG))
    return points, form.get("comment", "").strip()


def save_manual(review: ClassReview, check: CheckSpec, student: str, points: int, comment: str, name: str) -> None:
    """The TA's points through the gradebook (manual_scores + review log); the final score is
    grader.gradebook.final's alone, and every page reads it from there."""
    spec = review.spec
    with Gradebook.open(review.out) as book, ReviewStore(review.out) as store:
        book.set_manual_score(spec.id, student, check.id, points, comment=comment, scorer=name)
        store.log_manual(spec.id, student, check.id, points, comment, name)


def render_queue(review: ClassReview, queue: Queue, student: str | None, *, token: str, reviewer: str,
                 refusal: Refusal | None = None, saved: str | None = None) -> str:
    """One student of the queue, or (student None) the end state: everyone scored."""
    refusal = refusal or Refusal()
    check = queue.check
    current = queue.scored.get(student) if student else None
    values = {"points": str(current.points) if current else "", "comment": current.comment if current else "",
              "reviewer": reviewer, **refusal.submitted}
    previous, following = queue.neighbours(student) if student else (None, None)
    return render_template(
        "review_queue.html.j2", title=review.spec.title.get(LANG), check=check, check_title=check.title.get(LANG),
        student=student, answer=queue.answers.get(student or "", ""), current=current, values=values,
        invalid=refusal.invalid, errors=refusal.errors, token=token, previous=previous, following=following,
        next_unscored=queue.unscored_after(student), scored=len(queue.scored), total=len(queue.students),
        question=question_html(review.spec.template, check.question),
        rubric=[(number, item) for number, item in enumerate(check.rubric, start=1)],
        saved=saved, saved_score=queue.scored.get(saved) if saved else None, script=Markup(QUEUE_SCRIPT))
