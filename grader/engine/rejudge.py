"""Judging a stored result again from what its run kept, executing nothing.

A graded student's output folder keeps the signed evidence the harness wrote (OUT/<id>/evidence),
and the gradebook keeps the trusted evaluation and how the execution went. Those, the submitted
notebook and the session's reference are all the verdicts need, so a result can be judged again in
another language (`grade --lang en` after `--lang ja`) without running the notebook: the same
steps' judging and result-building code runs, on a restored StudentRun.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grader.engine.execute import CellError, ExecutionResult
from grader.engine.pipeline import (
    Session, Step, StudentRun, Submission, build_result, cross_check, judge_checks, read_submission, run_steps,
)
from grader.evidence.evaluate import ModelEvaluation
from grader.evidence.reader import Evidence
from grader.results import INVALID, StudentResult

PROBLEM, SKIPPED = "evidence: ", "evidence skipped: "  # how notes_for wrote them (language-neutral)


def can_rejudge(stored: StudentResult, folder: Path) -> bool:
    """Whether the output folder still holds what judging needs (an invalid notebook needs nothing)."""
    return stored.status == INVALID or (folder / "evidence").is_dir()


async def rejudge(stored: StudentResult, submission: Submission, session: Session) -> StudentResult:
    """`stored` judged again with this session (its language, reference and threshold)."""
    run = StudentRun(submission=submission, out_dir=session.out_dir / submission.student)
    await run_steps(run, session, (read_submission, restore(stored), cross_check, judge_checks))
    result = build_result(run, session)
    result.execution, result.versions = dict(stored.execution), dict(stored.versions)
    result.graded_at = stored.graded_at
    return result


def restore(stored: StudentResult) -> Step:
    """A step standing in for prepare → execute → collect evidence → evaluate: what they left."""

    async def restore_run(run: StudentRun, session: Session) -> None:
        run.execution = execution_from(stored.execution)
        run.step_seconds = dict(stored.execution.get("steps") or {})
        kept = run.out_dir / "evidence"
        if kept.is_dir():
            run.evidence = Evidence.load(kept)
            run.evidence.problems[:] = [n.removeprefix(PROBLEM) for n in stored.notes if n.startswith(PROBLEM)]
        run.skipped_evidence = [n.removeprefix(SKIPPED) for n in stored.notes if n.startswith(SKIPPED)]
        run.evaluation = ModelEvaluation(**stored.evaluation) if stored.evaluation else None

    return restore_run


def execution_from(data: dict[str, Any]) -> ExecutionResult:
    """The ExecutionResult a result's `execution` dict was written from (ExecutionResult.to_dict)."""
    return ExecutionResult(
        seconds=float(data.get("seconds") or 0.0), timed_out=bool(data.get("timed_out")),
        timeout_scope=data.get("timeout_scope"), truncated_cells=list(data.get("truncated_cells") or []),
        kernel_died=bool(data.get("kernel_died")), start_failure=data.get("start_failure"),
        errors=[CellError(**e) for e in data.get("errors") or []], memory_kills=int(data.get("memory_kills") or 0),
        memory_limit_mb=data.get("memory_limit_mb"), memory_peak_mb=data.get("memory_peak_mb"))
