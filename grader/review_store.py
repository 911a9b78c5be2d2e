"""TA overrides and the review log, in the gradebook's SQLite file (own tables), and republishing.

The gradebook (grader.gradebook) owns `manual_scores` (a TA's points for a `manual` check such as
the 考察). This module adds, in the same file:

    overrides   (assignment, student, check) → points, reason, reviewer, time: the TA replaces a
                check's automatic points (any check); a reason and a name are required
    review_log  append-only history of every manual score and override set or removed, and of every
                integrity decision
    integrity_reviews  (assignment, student) → a TA's decision on a flagged submission (grader.integrity):
                accepted (its automatic points count again) or rejected (they stay held), with a reason,
                tied to the findings it was made on (their key): new findings need a new decision

How the final score is made (`final_result`): the automatic result, its points held when it is flagged
and not accepted (grader.integrity.hold_for_review), then manual scores (a manual
check's points replace its 0), then overrides (the check's points become the TA's value, clamped
to 0…max, and the check carries `override` = {points, automatic_points, reason, reviewer, at},
which the report shows). result.json, report.html, index.html and grades.csv always show the final.
"""

from __future__ import annotations

import copy
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from grader.gradebook import GRADEBOOK_FILE, Gradebook, ManualScore, now
from grader.integrity import hold_for_review
from grader.manifest import read_manifest, with_submission
from grader.results import StudentResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS overrides (
    assignment TEXT NOT NULL,
    student    TEXT NOT NULL,
    check_id   TEXT NOT NULL,
    points     INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    reviewer   TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (assignment, student, check_id)
);
CREATE TABLE IF NOT EXISTS review_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    assignment TEXT NOT NULL,
    student    TEXT NOT NULL,
    check_id   TEXT NOT NULL,
    action     TEXT NOT NULL,            -- manual | manual_deleted | override | override_deleted
    points     INTEGER,
    text       TEXT NOT NULL DEFAULT '', -- the comment or the reason
    reviewer   TEXT NOT NULL DEFAULT '',
    at         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS integrity_reviews (
    assignment TEXT NOT NULL,
    student    TEXT NOT NULL,
    key        TEXT NOT NULL,            -- the findings it was made on (result.integrity.key)
    decision   TEXT NOT NULL,            -- accepted | rejected
    reason     TEXT NOT NULL,
    reviewer   TEXT NOT NULL,
    at         TEXT NOT NULL,
    PRIMARY KEY (assignment, student)
)
"""
INTEGRITY_DECISIONS = ("accepted", "rejected")


@dataclass(frozen=True)
class Override:
    assignment: str
    student: str
    check_id: str
    points: int
    reason: str
    reviewer: str
    updated_at: str


class ReviewStore:
    """Overrides and the review log of one output folder (a second connection to the gradebook file)."""

    def __init__(self, out_dir: Path) -> None:
        self.db = sqlite3.connect(out_dir / GRADEBOOK_FILE, timeout=30)
        self.db.row_factory = sqlite3.Row
        with self.db:
            for statement in SCHEMA.split(";"):
                self.db.execute(statement)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ReviewStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_override(self, assignment: str, student: str, check_id: str, points: int, *, reason: str,
                     reviewer: str) -> None:
        if not reason.strip() or not reviewer.strip():
            raise ValueError("an override needs a reason and the reviewer's name")
        at = now()
        with self.db:
            self.db.execute(
                "INSERT INTO overrides VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (assignment, student, check_id) DO "
                "UPDATE SET points = excluded.points, reason = excluded.reason, reviewer = excluded.reviewer, "
                "updated_at = excluded.updated_at",
                (assignment, student, check_id, int(points), reason.strip(), reviewer.strip(), at))
            self._log(assignment, student, check_id, "override", points, reason, reviewer, at)

    def delete_override(self, assignment: str, student: str, check_id: str, *, reviewer: str) -> bool:
        with self.db:
            cursor = self.db.execute("DELETE FROM overrides WHERE assignment = ? AND student = ? AND check_id = ?",
                                     (assignment, student, check_id))
            if cursor.rowcount:
                self._log(assignment, student, check_id, "override_deleted", None, "", reviewer, now())
            return cursor.rowcount > 0

    def log_manual(self, assignment: str, student: str, check_id: str, points: int | None, comment: str,
                   reviewer: str) -> None:
        with self.db:
            self._log(assignment, student, check_id, "manual" if points is not None else "manual_deleted", points,
                      comment, reviewer, now())

    def _log(self, assignment, student, check_id, action, points, text, reviewer, at) -> None:
        self.db.execute("INSERT INTO review_log (assignment, student, check_id, action, points, text, reviewer, at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (assignment, student, check_id, action, points, text,
                                                            reviewer, at))

    def set_integrity_decision(self, assignment: str, student: str, *, key: str, decision: str, reason: str,
                               reviewer: str) -> None:
        """A TA accepts or rejects a flagged submission (the findings named by `key`), with a reason."""
        if decision not in INTEGRITY_DECISIONS:
            raise ValueError(f"decision must be one of {INTEGRITY_DECISIONS}")
        if not reason.strip() or not reviewer.strip() or not key:
            raise ValueError("an integrity decision needs the findings' key, a reason and the reviewer's name")
        at = now()
        with self.db:
            self.db.execute(
                "INSERT INTO integrity_reviews VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (assignment, student) DO "
                "UPDATE SET key = excluded.key, decision = excluded.decision, reason = excluded.reason, "
                "reviewer = excluded.reviewer, at = excluded.at",
                (assignment, student, key, decision, reason.strip(), reviewer.strip(), at))
            self._log(assignment, student, "integrity", f"integrity_{decision}", None, reason.strip(), reviewer.strip(),
                      at)

    def integrity_decisions(self, assignment: str) -> dict[str, dict]:
        rows = self.db.execute("SELECT student, key, decision, reason, reviewer, at FROM integrity_reviews "
                               "WHERE assignment = ?", (assignment,))
        return {row["student"]: {k: row[k] for k in ("key", "decision", "reason", "reviewer", "at")} for row in rows}

    def overrides(self, assignment: str) -> dict[str, dict[str, Override]]:
        found: dict[str, dict[str, Override]] = {}
        for row in self.db.execute("SELECT * FROM overrides WHERE assignment = ?", (assignment,)):
            found.setdefault(row["student"], {})[row["check_id"]] = Override(**dict(row))
        return found

    def history(self, assignment: str, student: str) -> list[dict]:
        rows = self.db.execute("SELECT * FROM review_log WHERE assignment = ? AND student = ? ORDER BY id DESC",
                               (assignment, student))
        return [dict(r) for r in rows]


def apply_overrides(result: StudentResult, overrides: dict[str, Override] | None) -> StudentResult:
    if not overrides:
        return result
    result = copy.deepcopy(result)
    ja = result.lang != "en"
    for check in result.checks:
        o = overrides.get(check.id)
        if o is None:
            continue
        points = max(0, min(int(o.points), check.max_points))
        check.override = {"points": points, "automatic_points": check.points, "automatic_status": check.status,
                          "reason": o.reason, "reviewer": o.reviewer, "at": o.updated_at}
        check.points = points
        check.status = "pass" if points > 0 else "fail"
        result.notes.append((f"{check.id}: TA が {points} / {check.max_points} 点に上書き（理由：{o.reason}）— "
                             if ja else f"{check.id}: overridden to {points} / {check.max_points} by the TA "
                             f"(reason: {o.reason}) — ") + f"{o.reviewer}, {o.updated_at}")
    result.score = sum(c.points for c in result.checks)
    return result


def final_result(result: StudentResult, manual: dict[str, ManualScore] | None,
                 overrides: dict[str, Override] | None, submission: dict | None = None,
                 decision: dict | None = None) -> StudentResult:
    """Automatic result → held while flagged → manual scores → overrides (see the module docstring), with
    the submission's time and lateness from `grader pull`'s manifest (grader.manifest) when there is one."""
    from grader.commands.grade import apply_manual_scores

    held = hold_for_review(result, decision)
    return with_submission(apply_overrides(apply_manual_scores(held, manual), overrides), submission)


def republish(out: Path, project_root: Path, assignment: str, students: list[str] | None = None) -> dict[str, StudentResult]:
    """Re-render the given students' result.json + report.html (all when None), then index.html and
    grades.csv, from the gradebook's stored results with manual scores and overrides applied."""
    from grader.commands.grade import report_code_digest, report_key
    from grader.report import write_class_outputs, write_student_report
    from grader.spec import load_spec

    spec = load_spec(project_root, assignment)
    handed_in = read_manifest(out)  # copied there by `grader grade`
    with Gradebook.open(out) as book, ReviewStore(out) as store:
        manual, overrides = book.manual_scores(spec.id), store.overrides(spec.id)
        decisions = store.integrity_decisions(spec.id)
        rows = book.results(spec.id)
        current = book.submissions(spec.id)
        everyone: dict[str, StudentResult] = {}
        for name, row in rows.items():
            if current and name not in current:
                continue
            final = final_result(row.result, manual.get(name), overrides.get(name), handed_in.get(name),
                                 decisions.get(name))
            everyone[name] = final
            if students is None or name in students:
                write_student_report(final, out / name)
                book.update_result(row.result, report_key=report_key(final, report_code_digest()))
        runs = book.runs()
        budget = spec.budget(runs[-1].budget) if runs else spec.budget(spec.default_budget)
        lang = next(iter(everyone.values())).lang if everyone else "ja"
        write_class_outputs(everyone.values(), out, lang=lang, title=spec.title.get(lang),
                            budget_summary=f"{budget.name} ({budget.summary(lang)})", refused=book.refused(spec.id))
        return everyone
