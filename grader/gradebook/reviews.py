"""TA overrides and the review log, in the gradebook's SQLite file (own tables).

The gradebook (grader.gradebook) owns `manual_scores` (a TA's points for a `manual` check such as
the 考察). This module adds, in the same file:

    overrides   (assignment, student, check) → points, reason, reviewer, time: the TA replaces a
                check's automatic points (any check); a reason and a name are required
    review_log  append-only history of every manual score and override set or removed, and of every
                integrity decision
    integrity_reviews  (assignment, student) → a TA's decision on a flagged submission (grader.judge.integrity):
                accepted (its automatic points count again) or rejected (they stay held), with a reason,
                tied to the findings it was made on (their key): new findings need a new decision

How they make the final score: grader.gradebook.final.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from grader.gradebook.store import GRADEBOOK_FILE, now

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
