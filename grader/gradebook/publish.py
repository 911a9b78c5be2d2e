"""Publishing: the final results written where people and tools read them.

Per student `result.json` and `report.html` (grader.report), for the class `index.html` and
`grades.csv`, always from the *final* result (grader.gradebook.final) and never touching the stored
automatic one. `grade` publishes each student as they finish; `review`, `manual` and `similarity`
republish from the gradebook after a change (nothing is executed).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from grader.assignment.content import Content, load_content
from grader.assignment.spec import AssignmentSpec, Budget, load_spec
from grader.gradebook.final import Reviews
from grader.gradebook.store import Gradebook
from grader.report.freshness import report_code_digest, report_key
from grader.report.pages import write_class_outputs, write_student_report
from grader.results import StudentResult

log = logging.getLogger("grader.publish")


def write_student(final: StudentResult, folder: Path, *, content: Content, previous_key: str | None = None) -> str:
    """result.json + report.html, unless `previous_key` says they are already what this result
    draws; returns the report key ("" when drawing failed: a report bug must not lose a grade)."""
    key = student_report_key(final, content)
    if previous_key == key and (folder / "report.html").is_file() and (folder / "result.json").is_file():
        return key
    try:
        write_student_report(final, folder, content)
    except Exception:  # noqa: BLE001 - a report bug must not lose the graded result
        log.exception("report for %s failed", final.student)
        return ""
    return key


def student_report_key(final: StudentResult, content: Content) -> str:
    """What a report is drawn from: the final result, the report code and the assignment's content."""
    return report_key(final, report_code_digest() + content.digest)


def write_class(results: Iterable[StudentResult], out: Path, *, spec: AssignmentSpec, budget: Budget,
                lang: str, refused: Iterable[tuple[str, str]] = ()) -> None:
    """index.html and grades.csv for these final results; `refused`: names handed in but not graded."""
    write_class_outputs(results, out, lang=lang, title=spec.title.get(lang),
                        budget_summary=f"{budget.name} ({budget.summary(lang)})", refused=refused)


def final_class(out: Path, spec: AssignmentSpec, reviews: Reviews | None = None) -> dict[str, StudentResult]:
    """Every current student's final result (grader.gradebook.final) from the gradebook, by student; a
    student whose notebook is no longer among the submissions is left out. Nothing is written."""
    reviews = reviews or Reviews.load(out, spec.id)
    with Gradebook.open(out) as book:
        current = book.submissions(spec.id)
        return {name: reviews.final(row.result) for name, row in sorted(book.results(spec.id).items())
                if not current or name in current}


def republish(out: Path, project_root: Path, assignment: str,
              students: list[str] | None = None) -> dict[str, StudentResult]:
    """Re-render the given students' result.json + report.html (all when None), then index.html and
    grades.csv, from the gradebook's stored results with manual scores and overrides applied."""
    spec = load_spec(project_root, assignment)
    content = load_content(spec.root)
    reviews = Reviews.load(out, spec.id)
    with Gradebook.open(out) as book:
        rows = book.results(spec.id)
        current = book.submissions(spec.id)
        everyone: dict[str, StudentResult] = {}
        for name, row in rows.items():
            if current and name not in current:
                continue
            final = reviews.final(row.result)
            everyone[name] = final
            if students is None or name in students:
                write_student_report(final, out / name, content)
                book.update_result(row.result, report_key=student_report_key(final, content))
        runs = book.runs()
        budget = spec.budget(runs[-1].budget) if runs else spec.budget(spec.default_budget)
        lang = next(iter(everyone.values())).lang if everyone else "ja"
        write_class(everyone.values(), out, spec=spec, budget=budget, lang=lang, refused=book.refused(spec.id))
        return everyone
