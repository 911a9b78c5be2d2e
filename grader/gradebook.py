"""The class gradebook: one SQLite file in the output folder, the index and memory of grading.

    OUT/gradebook.sqlite
      submissions    one row per student: the notebook last seen and its sha256
      runs           one row per `grader grade`: when, budget, jobs, how many executed / reused,
                     `running` until it finishes (`interrupted` when its process died)
      executions     one row per notebook execution, written when it starts and when it ends,
                     so a killed batch shows exactly which students were in flight
      results        the latest result per student: the input fingerprint it was graded from,
                     status, score and the whole result JSON (result.json is a copy of it)
      manual_scores  a TA's points per (student, check); grading never writes this table
      refused_submissions  names in the submissions folder that were not graded, and why (last scan)

A result is written the moment its student finishes (one transaction each, WAL journal), so
`kill -9` in the middle of a batch loses only the students that were still running. The
fingerprint (see `input_fingerprint`) decides whether a student must run again.

One connection, used from the grader's event loop thread only.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from grader.results import GRADER_ERROR, StudentResult

GRADEBOOK_FILE = "gradebook.sqlite"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    assignment      TEXT NOT NULL,
    student         TEXT NOT NULL,
    path            TEXT NOT NULL,
    notebook_sha256 TEXT NOT NULL,
    last_seen       TEXT NOT NULL,
    PRIMARY KEY (assignment, student)
);
CREATE TABLE IF NOT EXISTS runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    assignment     TEXT NOT NULL,
    budget         TEXT NOT NULL,
    jobs           INTEGER NOT NULL,
    threads        INTEGER NOT NULL,
    grader_version TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    started_at     TEXT NOT NULL,
    finished_at    TEXT,
    status         TEXT NOT NULL,            -- running | finished | interrupted
    students       INTEGER NOT NULL DEFAULT 0,
    executed       INTEGER NOT NULL DEFAULT 0,
    reused         INTEGER NOT NULL DEFAULT 0,
    seconds        REAL
);
CREATE TABLE IF NOT EXISTS executions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    assignment  TEXT NOT NULL,
    student     TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    status      TEXT,                        -- the student's status, NULL while running or when killed
    seconds     REAL
);
CREATE INDEX IF NOT EXISTS executions_student ON executions (assignment, student);
CREATE TABLE IF NOT EXISTS results (
    assignment  TEXT NOT NULL,
    student     TEXT NOT NULL,
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    fingerprint TEXT NOT NULL,
    status      TEXT NOT NULL,
    score       INTEGER NOT NULL,
    max_score   INTEGER NOT NULL,
    seconds     REAL,
    graded_at   TEXT NOT NULL,
    report_key  TEXT NOT NULL DEFAULT '',
    result_json TEXT NOT NULL,
    PRIMARY KEY (assignment, student)
);
CREATE TABLE IF NOT EXISTS refused_submissions (  -- handed-in names not graded (grader.student_ids), last scan
    assignment TEXT NOT NULL,
    name       TEXT NOT NULL,
    reason     TEXT NOT NULL,
    seen_at    TEXT NOT NULL,
    PRIMARY KEY (assignment, name)
);
CREATE TABLE IF NOT EXISTS manual_scores (
    assignment TEXT NOT NULL,
    student    TEXT NOT NULL,
    check_id   TEXT NOT NULL,
    points     INTEGER NOT NULL,
    comment    TEXT NOT NULL DEFAULT '',
    scorer     TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL,
    PRIMARY KEY (assignment, student, check_id)
);
"""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- rows
@dataclass(frozen=True)
class SubmissionRow:
    assignment: str
    student: str
    path: str
    notebook_sha256: str
    last_seen: str


@dataclass(frozen=True)
class RunRow:
    id: int
    assignment: str
    budget: str
    jobs: int
    threads: int
    grader_version: str
    pid: int
    started_at: str
    finished_at: str | None
    status: str
    students: int
    executed: int
    reused: int
    seconds: float | None


@dataclass(frozen=True)
class ExecutionRow:
    id: int
    run_id: int
    assignment: str
    student: str
    fingerprint: str
    started_at: str
    finished_at: str | None
    status: str | None
    seconds: float | None


@dataclass(frozen=True)
class ResultRow:
    assignment: str
    student: str
    run_id: int
    fingerprint: str
    status: str
    score: int
    max_score: int
    seconds: float | None
    graded_at: str
    report_key: str
    result_json: str

    @property
    def result(self) -> StudentResult:
        return StudentResult.from_dict(json.loads(self.result_json))

    @property
    def reusable(self) -> bool:
        """A grader_error says nothing about the notebook: always try again."""
        return self.status != GRADER_ERROR


@dataclass(frozen=True)
class ManualScore:
    assignment: str
    student: str
    check_id: str
    points: int
    comment: str
    scorer: str
    updated_at: str


# ---------------------------------------------------------------- the fingerprint
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def input_fingerprint(notebook: bytes, *, batch_inputs: str) -> str:
    """What a student's result depends on: their notebook plus everything shared by the batch."""
    return sha256_bytes(bytes.fromhex(sha256_bytes(notebook)) + batch_inputs.encode("ascii"))[:32]


def batch_inputs(*, spec_source: bytes, reference: bytes, kernel: bytes, versions: dict[str, str],
                 data_fingerprint: str, budget: str, lang: str) -> str:
    """The part of every student's fingerprint that the batch shares: the spec file, the reference
    notebook, the kernel harness, grader and library versions, the data set, the budget and the
    report language. Any change re-executes everyone; the notebook's own bytes are added per student."""
    digest = hashlib.sha256()
    for part in (spec_source, reference, kernel, json.dumps(versions, sort_keys=True).encode(),
                 data_fingerprint.encode(), budget.encode(), lang.encode()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


# ---------------------------------------------------------------- the database
class Gradebook:
    """The gradebook of one output folder. Use as a context manager, or call close()."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)  # explicit transactions below
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed row survives kill -9
        self.db.execute("PRAGMA foreign_keys=ON")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"{path} was written by a newer grader (schema {version})")
        with self._transaction():
            for statement in _statements(SCHEMA):  # executescript would commit on its own
                self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @classmethod
    def open(cls, out_dir: Path) -> Gradebook:
        return cls(out_dir / GRADEBOOK_FILE)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Gradebook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self):
        return _Transaction(self.db)

    # -- runs ---------------------------------------------------------------------------
    def start_run(self, *, assignment: str, budget: str, jobs: int, threads: int, grader_version: str) -> int:
        """A new run; runs and executions left `running` by a dead grader become `interrupted`."""
        with self._transaction():
            for row in self.db.execute("SELECT id, pid FROM runs WHERE status = 'running'").fetchall():
                if not _alive(row["pid"]) or row["pid"] == os.getpid():
                    self.db.execute("UPDATE runs SET status = 'interrupted' WHERE id = ?", (row["id"],))
                    self.db.execute("UPDATE executions SET status = 'interrupted' WHERE run_id = ? AND "
                                    "finished_at IS NULL", (row["id"],))
            cursor = self.db.execute(
                "INSERT INTO runs (assignment, budget, jobs, threads, grader_version, pid, started_at, status) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'running')",
                (assignment, budget, jobs, threads, grader_version, os.getpid(), now()))
            return int(cursor.lastrowid)

    def finish_run(self, run_id: int, *, students: int, executed: int, reused: int, seconds: float,
                   status: str = "finished") -> None:
        with self._transaction():
            self.db.execute("UPDATE runs SET finished_at = ?, status = ?, students = ?, executed = ?, reused = ?, "
                            "seconds = ? WHERE id = ?",
                            (now(), status, students, executed, reused, round(seconds, 3), run_id))

    def runs(self) -> list[RunRow]:
        return [RunRow(**dict(r)) for r in self.db.execute("SELECT * FROM runs ORDER BY id")]

    # -- submissions and executions -----------------------------------------------------
    def record_submission(self, assignment: str, student: str, path: Path, notebook_sha256: str) -> None:
        with self._transaction():
            self.db.execute(
                "INSERT INTO submissions VALUES (?, ?, ?, ?, ?) ON CONFLICT (assignment, student) DO UPDATE SET "
                "path = excluded.path, notebook_sha256 = excluded.notebook_sha256, last_seen = excluded.last_seen",
                (assignment, student, str(path), notebook_sha256, now()))

    def submissions(self, assignment: str) -> dict[str, SubmissionRow]:
        rows = self.db.execute("SELECT * FROM submissions WHERE assignment = ?", (assignment,))
        return {r["student"]: SubmissionRow(**dict(r)) for r in rows}

    def set_refused(self, assignment: str, refused: Iterable[tuple[str, str]]) -> None:
        """Replace the refused names of the last scan: [(name, reason)]."""
        with self._transaction():
            self.db.execute("DELETE FROM refused_submissions WHERE assignment = ?", (assignment,))
            self.db.executemany("INSERT OR REPLACE INTO refused_submissions VALUES (?, ?, ?, ?)",
                                [(assignment, name, reason, now()) for name, reason in refused])

    def refused(self, assignment: str) -> list[tuple[str, str]]:
        rows = self.db.execute("SELECT name, reason FROM refused_submissions WHERE assignment = ? ORDER BY name",
                               (assignment,))
        return [(r["name"], r["reason"]) for r in rows]

    def start_execution(self, run_id: int, assignment: str, student: str, fingerprint: str) -> int:
        with self._transaction():
            cursor = self.db.execute(
                "INSERT INTO executions (run_id, assignment, student, fingerprint, started_at) VALUES (?, ?, ?, ?, ?)",
                (run_id, assignment, student, fingerprint, now()))
            return int(cursor.lastrowid)

    def finish_execution(self, execution_id: int, *, status: str, seconds: float) -> None:
        with self._transaction():
            self.db.execute("UPDATE executions SET finished_at = ?, status = ?, seconds = ? WHERE id = ?",
                            (now(), status, round(seconds, 3), execution_id))

    def executions(self, assignment: str, student: str | None = None) -> list[ExecutionRow]:
        query, args = "SELECT * FROM executions WHERE assignment = ?", [assignment]
        if student is not None:
            query, args = query + " AND student = ?", [*args, student]
        return [ExecutionRow(**dict(r)) for r in self.db.execute(query + " ORDER BY id", args)]

    # -- results ------------------------------------------------------------------------
    def record_result(self, run_id: int, result: StudentResult, *, fingerprint: str, seconds: float | None,
                      report_key: str = "", execution_id: int | None = None) -> None:
        """The student's latest result (replacing the previous one), in one transaction with the end
        of its execution: after a crash either both are there or neither."""
        with self._transaction():
            self._upsert_result(run_id, result, fingerprint=fingerprint, seconds=seconds, report_key=report_key)
            if execution_id is not None:
                self.db.execute("UPDATE executions SET finished_at = ?, status = ?, seconds = ? WHERE id = ?",
                                (now(), result.status, None if seconds is None else round(seconds, 3),
                                 execution_id))

    def update_result(self, result: StudentResult, *, report_key: str) -> None:
        """Keep a reused result current (threshold re-judged, manual scores applied, report rendered)."""
        with self._transaction():
            self.db.execute(
                "UPDATE results SET status = ?, score = ?, max_score = ?, report_key = ?, result_json = ? "
                "WHERE assignment = ? AND student = ?",
                (result.status, result.score, result.max_score, report_key, result_json(result),
                 result.assignment, result.student))

    def _upsert_result(self, run_id: int, result: StudentResult, *, fingerprint: str, seconds: float | None,
                       report_key: str) -> None:
        self.db.execute(
            "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (assignment, student) DO UPDATE "
            "SET run_id = excluded.run_id, fingerprint = excluded.fingerprint, status = excluded.status, "
            "score = excluded.score, max_score = excluded.max_score, seconds = excluded.seconds, "
            "graded_at = excluded.graded_at, report_key = excluded.report_key, result_json = excluded.result_json",
            (result.assignment, result.student, run_id, fingerprint, result.status, result.score, result.max_score,
             None if seconds is None else round(seconds, 3), result.graded_at or now(), report_key, result_json(result)))

    def result(self, assignment: str, student: str) -> ResultRow | None:
        row = self.db.execute("SELECT * FROM results WHERE assignment = ? AND student = ?",
                              (assignment, student)).fetchone()
        return ResultRow(**dict(row)) if row else None

    def results(self, assignment: str) -> dict[str, ResultRow]:
        rows = self.db.execute("SELECT * FROM results WHERE assignment = ? ORDER BY student", (assignment,))
        return {r["student"]: ResultRow(**dict(r)) for r in rows}

    # -- manual scores ------------------------------------------------------------------
    def set_manual_score(self, assignment: str, student: str, check_id: str, points: int, *,
                         comment: str = "", scorer: str = "") -> None:
        with self._transaction():
            self.db.execute(
                "INSERT INTO manual_scores VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (assignment, student, check_id) "
                "DO UPDATE SET points = excluded.points, comment = excluded.comment, scorer = excluded.scorer, "
                "updated_at = excluded.updated_at",
                (assignment, student, check_id, int(points), comment, scorer, now()))

    def delete_manual_score(self, assignment: str, student: str, check_id: str) -> bool:
        with self._transaction():
            cursor = self.db.execute("DELETE FROM manual_scores WHERE assignment = ? AND student = ? AND check_id = ?",
                                     (assignment, student, check_id))
            return cursor.rowcount > 0

    def manual_scores(self, assignment: str) -> dict[str, dict[str, ManualScore]]:
        """{student: {check id: score}}."""
        scores: dict[str, dict[str, ManualScore]] = {}
        for row in self.db.execute("SELECT * FROM manual_scores WHERE assignment = ? ORDER BY student, check_id",
                                   (assignment,)):
            scores.setdefault(row["student"], {})[row["check_id"]] = ManualScore(**dict(row))
        return scores


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on an exception); nests as a no-op."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.outer = False

    def __enter__(self) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
            self.outer = True

    def __exit__(self, exc_type, *exc: object) -> None:
        if self.outer:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _statements(script: str) -> Iterable[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def result_json(result: StudentResult) -> str:
    """The canonical JSON of a result (what the gradebook stores)."""
    return json.dumps(result.to_dict(), ensure_ascii=False, sort_keys=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
