"""Grading one submission: an ordered list of small steps.

submission → sandboxed execution → evidence → trusted evaluation → verdicts → outputs (the trusted
evaluation's process is started beside the execution, `start_predictor`, and handed the model after it).
Each step reads and fills a `StudentRun`. A step that finds the submission unusable raises
`StopGrading` with the status to record; anything unexpected becomes `grader_error` for that
student only. The batch never stops because of one notebook.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

import nbformat
import numpy as np

from grader.judge.checks import AccuracyThreshold, CheckContext, DatasetHashes
from grader.judge.checks.notebook import answer_after_heading
from grader.judge.compat_notes import bridge_notes, import_notes
from grader.assignment.data import FINGERPRINT_FILE
from grader.evidence.evaluate import ModelEvaluation, evaluate_training_model, predict_timeout, test_images
from grader.evidence.predictor import Predictor, close_predictor
from grader.evidence.predictor import summary as predictor_summary
from grader.evidence.predictor import start_predictor as start_predictor_process
from grader.evidence.reader import Evidence
from grader.engine.execute import ExecutionResult, execute_notebook, write_harness_config
from grader.evidence.known_data import GraderData
from grader.isolation.launch import KernelJob, Launcher
from grader.judge.integrity import check_integrity
from grader.results import (
    ERROR, FAIL, GRADED, GRADER_ERROR, INVALID, KERNEL_DIED, TIMEOUT, CheckResult, StudentResult,
)
from grader.assignment.spec import AssignmentSpec, Budget
from grader.i18n import t
from grader.judge.verdicts import judge_all, not_run_results

MAX_NOTEBOOK_BYTES = 20_000_000


@dataclass(frozen=True)
class Submission:
    student: str
    path: Path


@dataclass
class ReferenceRun:
    """The reference notebook's evidence and trusted accuracy for one data set and budget."""

    evidence: Evidence
    evaluation: ModelEvaluation
    seconds: float
    key: str


@dataclass(frozen=True)
class Session:
    """What every student's grading shares: spec, budget, data, reference, threshold, where to write.

    Frozen: concurrent jobs share it. Made by grader.engine.session (the one factory), which also
    decides the accuracy threshold once; a variant (another seed) is a `dataclasses.replace` copy."""

    spec: AssignmentSpec
    budget: Budget
    launcher: Launcher
    data_dir: Path
    x_test: np.ndarray | None  # None: no trusted evaluation in this session (the self-check)
    y_test: np.ndarray | None
    test_hashes: np.ndarray | None  # None: the steps may find them (StudentRun.test_hashes)
    reference: ReferenceRun | None
    out_dir: Path
    work_root: Path
    lang: str = "ja"
    threads: int = 1
    versions: dict[str, str] = field(default_factory=dict)
    seed: int | None = None  # overrides the spec's seed (calibration runs the reference with several)
    threshold: AccuracyThreshold | None = None  # test-accuracy threshold in force (grader.judge.threshold)
    dataset_hashes: DatasetHashes | None = None  # the grader's own images' source hashes (data_source checks)
    grader_data: GraderData | None = None  # the private test part and lookups over the grader's images


@dataclass
class StudentRun:
    submission: Submission
    out_dir: Path
    notebook: Any = None
    job: KernelJob | None = None
    execution: ExecutionResult | None = None
    evidence: Evidence | None = None
    evaluation: ModelEvaluation | None = None
    checks: list[CheckResult] = field(default_factory=list)
    status: str = GRADED
    message: str = ""
    skipped_evidence: list[str] = field(default_factory=list)
    test_hashes: np.ndarray | None = None  # found by a step when the session has none (the self-check)
    step_seconds: dict[str, float] = field(default_factory=dict)  # where the time went, per step
    integrity: dict[str, Any] | None = None  # grader.judge.integrity's findings (trusted side)
    predictor: Predictor | None = None  # this student's trusted-evaluation process, once started


class StopGrading(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


# ---------------------------------------------------------------- the steps
async def read_submission(run: StudentRun, session: Session) -> None:
    path = run.submission.path
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        raise StopGrading(INVALID, t("run.too_large", session.lang, mb=path.stat().st_size // 1_000_000))
    try:
        run.notebook = nbformat.read(path, as_version=4)
        nbformat.validate(run.notebook)
    except UnicodeDecodeError:
        raise StopGrading(INVALID, t("run.not_utf8", session.lang)) from None
    except (json.JSONDecodeError, nbformat.reader.NotJSONError) as exc:
        raise StopGrading(INVALID, t("run.not_json", session.lang, error=str(exc)[:200])) from None
    except nbformat.ValidationError as exc:
        raise StopGrading(INVALID, t("run.malformed", session.lang, error=exc.message[:200])) from None


async def prepare_job(run: StudentRun, session: Session) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"{run.submission.student}-", dir=session.work_root))
    run.job = KernelJob(work_dir=work, data_dir=session.data_dir, threads=session.threads,
                        memory_mb=session.spec.limits.memory_mb)
    session.launcher.setup_job(run.job)
    seed = session.spec.seed if session.seed is None else session.seed
    write_harness_config(run.job, budget_caps=session.budget.caps(), seed=seed,
                         max_evidence_mb=session.spec.limits.max_evidence_mb)


async def execute(run: StudentRun, session: Session) -> None:
    executed = nbformat.from_dict(json.loads(json.dumps(run.notebook)))  # keep the submission untouched
    run.execution = await execute_notebook(
        executed, job=run.job, launcher=session.launcher,
        cell_timeout_s=session.budget.cell_timeout_s, notebook_timeout_s=session.budget.notebook_timeout_s,
        max_output_bytes=session.spec.limits.max_output_mb * 1_000_000,
    )
    session.launcher.kill_processes(run.job)  # nothing the student started may touch what follows
    run.execution.memory_kills = memory_kills(session.launcher, run.job)
    peak = getattr(session.launcher, "memory_peak_mb", None)
    run.execution.memory_peak_mb = peak(run.job) if peak is not None else None
    if run.execution.memory_kills:
        run.execution.memory_limit_mb = session.spec.limits.memory_mb
    nbformat.write(executed, run.out_dir / "executed.ipynb")
    if run.execution.start_failure:
        raise StopGrading(GRADER_ERROR, t("run.kernel_start_failed", session.lang,
                                          error=run.execution.start_failure[:300]))


async def collect_evidence(run: StudentRun, session: Session) -> None:
    """Keep only what the harness signed, copied out of the job folder before it disappears."""
    keep = run.out_dir / "evidence"
    shutil.rmtree(keep, ignore_errors=True)
    recorded = Evidence.load(run.job.evidence_dir, key=run.job.key)
    run.skipped_evidence = recorded.export(keep, max_total_bytes=session.spec.limits.max_evidence_mb * 1_000_000)
    run.evidence = Evidence.load(keep)
    run.evidence.problems[:0] = recorded.problems
    if run.evidence.first("harness_failed") or not run.evidence.harness_ready:
        failed = run.evidence.first("harness_failed") or {}
        if run.execution and run.execution.kernel_died and not run.evidence.events:
            return  # died before the harness could write; graded as kernel death
        raise StopGrading(GRADER_ERROR, t("run.harness_failed", session.lang,
                                          error=failed.get("error") or t("run.nothing_recorded", session.lang)))


async def start_predictor(run: StudentRun, session: Session) -> None:
    """Start this student's predictor now, so that it imports Keras and reads the test images while
    the notebook runs (grader.evidence.predictor); it waits for the model (after `execute`)."""
    if session.x_test is None or run.predictor is not None:
        return  # no trusted evaluation in this session (the self-check)
    data = session.grader_data
    run.predictor = await start_predictor_process(
        test_images(session.x_test, data.x_private if data else None), launcher=session.launcher,
        work_root=session.work_root, data_dir=session.data_dir, threads=session.threads,
        memory_mb=session.spec.limits.memory_mb)


async def evaluate_model(run: StudentRun, session: Session) -> None:
    """The saved model on both test parts in this student's predictor, within a time relative to the
    reference model's own prediction (a pathological model is stopped, not waited for)."""
    data, limits = session.grader_data, session.spec.limits
    reference_seconds = session.reference.evaluation.predict_seconds if session.reference else None
    if run.predictor is None:  # a list of steps without start_predictor: start it now (cold)
        await start_predictor(run, session)
    assert run.predictor is not None and session.y_test is not None
    run.evaluation = await evaluate_training_model(
        run.evidence, y_test=session.y_test, predictor=run.predictor,
        y_private=data.y_private if data else None,
        timeout_s=predict_timeout(reference_seconds, min_s=limits.predict_timeout_min_s,
                                  factor=limits.predict_timeout_factor, max_s=limits.predict_timeout_max_s))


async def cross_check(run: StudentRun, session: Session) -> None:
    """Tamper evidence: the code, the kernel's records and the saved model against what the grader
    knows and measured itself (grader.judge.integrity). Findings flag the result; they never change a check."""
    run.integrity = check_integrity(
        notebook=run.notebook, evidence=run.evidence, evaluation=run.evaluation, data=session.grader_data,
        budget=session.budget.caps(), params=session.spec.integrity, lang=session.lang).to_dict()


async def judge_checks(run: StudentRun, session: Session) -> None:
    reference = session.reference

    def context(check) -> CheckContext:
        return CheckContext(
            student=run.evidence, reference=reference.evidence, params=check.params, budget=session.budget.name,
            student_eval=run.evaluation, reference_eval=reference.evaluation,
            test_hashes=run.test_hashes if run.test_hashes is not None else session.test_hashes,
            notebook=run.notebook, threshold=session.threshold, dataset_hashes=session.dataset_hashes,
            known=session.grader_data,
        )

    run.checks = judge_all(session.spec, context, session.lang)
    run.status, run.message = execution_status(run.execution, session.lang)


def memory_kills(launcher: Launcher, job: KernelJob) -> int:
    """Processes of the job the memory cgroup killed (launchers without cgroups report none)."""
    count = getattr(launcher, "memory_kills", None)
    return count(job) if count is not None else 0


Step = Callable[[StudentRun, Session], Awaitable[None]]
# Where the notebook runs (a local job slot, or a Dask worker: grader.engine.remote), then what the
# grading machine decides from the evidence (always the coordinator).
NOTEBOOK_STEPS: tuple[Step, ...] = (read_submission, prepare_job, start_predictor, execute, collect_evidence,
                                    evaluate_model)
JUDGING_STEPS: tuple[Step, ...] = (cross_check, judge_checks)
STEPS: tuple[Step, ...] = NOTEBOOK_STEPS + JUDGING_STEPS


def execution_status(execution: ExecutionResult | None, lang: str) -> tuple[str, str]:
    """The student-level status and its one-line explanation."""
    if execution is None:
        return GRADED, ""
    if execution.timed_out:
        scope = t(f"run.timeout_scope.{execution.timeout_scope or 'notebook'}", lang)
        return TIMEOUT, t("run.timeout", lang, scope=scope)
    if execution.kernel_died and execution.memory_kills:
        return KERNEL_DIED, t("run.memory_limit_exceeded", lang, limit_mb=execution.memory_limit_mb)
    if execution.kernel_died:
        return KERNEL_DIED, t("run.kernel_died", lang)
    if execution.errors:
        first = execution.errors[0]
        where = f"[{first.execution_count}]" if first.execution_count else f"#{first.cell_index + 1}"
        return ERROR, t("run.cell_error", lang, where=where, ename=first.ename, evalue=first.evalue[:120],
                        more=len(execution.errors) - 1)
    return GRADED, ""


# ---------------------------------------------------------------- running the steps
async def grade_submission(submission: Submission, session: Session, steps: tuple[Step, ...] = STEPS) -> StudentResult:
    run = StudentRun(submission=submission, out_dir=session.out_dir / submission.student)
    await run_steps(run, session, steps)
    return build_result(run, session)


async def run_steps(run: StudentRun, session: Session, steps: Sequence[Step]) -> None:
    """Run the steps in order; a stop or a crash becomes the run's status; the job is always released."""
    run.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for step in steps:
            started = time.monotonic()
            try:
                await step(run, session)
            finally:
                run.step_seconds[step.__name__] = round(time.monotonic() - started, 2)
    except StopGrading as stop:
        run.status, run.message = stop.status, stop.message
    except Exception as exc:  # noqa: BLE001 - a grader bug on one student is data, not a lost batch
        run.status = GRADER_ERROR
        run.message = t("run.grader_error", session.lang, error=f"{type(exc).__name__}: {exc}")[:500]
        (run.out_dir / "grader_error.txt").write_text(traceback.format_exc(), encoding="utf-8")
    finally:
        if run.job is not None or run.predictor is not None:
            started = time.monotonic()
            release_job(run, session)
            run.step_seconds["release_job"] = round(time.monotonic() - started, 2)


def release_job(run: StudentRun, session: Session) -> None:
    """The predictor (however far it got) and the student's job: nothing of either keeps running."""
    try:
        if run.predictor is not None:
            close_predictor(run.predictor, keep_log=run.out_dir / "predict.log")
    finally:
        if run.job is not None:
            keep_kernel_log(run)
            session.launcher.teardown_job(run.job)
            shutil.rmtree(run.job.work_dir, ignore_errors=True)


def keep_kernel_log(run: StudentRun, max_bytes: int = 200_000) -> None:
    """The tail of the kernel's stderr (crashes, TensorFlow aborts) for the TA (the predictor's: close_predictor)."""
    for name in ("kernel.log",):
        log = run.job.work_dir / name
        if log.is_file() and not log.is_symlink():
            with open(log, "rb") as handle:
                handle.seek(max(0, log.stat().st_size - max_bytes))
                (run.out_dir / name).write_bytes(handle.read())


def build_result(run: StudentRun, session: Session) -> StudentResult:
    spec, lang = session.spec, session.lang
    checks = public_messages(run.checks or not_run_results(
        spec, lang, t("run.not_run", lang)), spec, lang)
    ready = run.evidence.first("harness_ready") if run.evidence else None
    return StudentResult(
        student=run.submission.student,
        assignment=spec.id,
        status=run.status,
        message=run.message,
        score=sum(c.points for c in checks),
        max_score=spec.max_score,
        checks=checks,
        execution={**(run.execution.to_dict() if run.execution else {}), "budget": session.budget.name,
                   "sandbox": session.launcher.name, "steps": dict(run.step_seconds),
                   "predictor": predictor_summary(run.predictor) if run.predictor else None,
                   "limits": dict(getattr(session.launcher, "limits_in_force", {}))},
        budget={**session.budget.caps(), "summary": session.budget.summary(lang),
                "cell_timeout_s": session.budget.cell_timeout_s,
                "notebook_timeout_s": session.budget.notebook_timeout_s,
                "fits": training_budget(run)},
        notes=notes_for(run, lang),
        evaluation=run.evaluation.to_dict() if run.evaluation else None,
        reference=reference_summary(session),
        versions={**session.versions, **data_version(session), **((ready or {}).get("versions") or {})},
        graded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        lang=lang,
        answers=written_answers(run, spec),
        integrity=run.integrity,
    )


def public_messages(checks: list[CheckResult], spec: AssignmentSpec, lang: str) -> list[CheckResult]:
    """Hidden checks show a student only the outcome and the spec's failure text (no expected values)."""
    fail_text = {c.id: c.fail.get(lang) for c in spec.checks}
    for check in checks:
        hidden_text = fail_text.get(check.id, "") if check.status == FAIL else check.message
        check.public_message = check.message if check.visible else hidden_text
    return checks


def training_budget(run: StudentRun) -> list[dict[str, Any]]:
    """Each fit's requested vs effective epochs and steps ("2 / 50 epochs, 150 / 750 steps")."""
    fits = []
    for fit in run.evidence.of("fit_start") if run.evidence else []:
        requested, effective = fit.get("requested") or {}, fit.get("effective") or {}
        flow = run.evidence.flow((fit.get("input") or {}).get("flow"))
        steps = requested.get("steps_per_epoch")
        samples = ((fit.get("train_x") or {}).get("shape") or [None])[0]
        natural = flow.get("length") if flow else (
            math.ceil(samples / (requested.get("batch_size") or 32)) if isinstance(samples, int) else None)
        fits.append({
            "fit": fit.get("fit"),
            "requested_epochs": requested.get("epochs"),
            "effective_epochs": effective.get("epochs"),
            "requested_steps": math.ceil(steps) if isinstance(steps, (int, float)) else None,
            "natural_steps": natural,  # len(generator), or samples ÷ batch_size: what one epoch takes unspecified
            "effective_steps": effective.get("steps_per_epoch"),
        })
    return fits


def reference_summary(session: Session) -> dict[str, Any]:
    """The reference's trusted accuracy, per-class accuracy, and the accuracy threshold in force with
    where it came from (a calibration of several reference runs, or the single reference run)."""
    if not session.reference:
        return {}
    accuracy = session.reference.evaluation.accuracy
    summary = {"accuracy": accuracy, "key": session.reference.key,
               "per_class": session.reference.evaluation.per_class}
    if session.threshold is not None:
        summary.update(threshold_summary(session.threshold))
    return summary


def threshold_summary(threshold: AccuracyThreshold) -> dict[str, Any]:
    """The `result.reference` fields that say which threshold applied and why."""
    return {"threshold": threshold.value, "threshold_rule": threshold.rule, "threshold_source": threshold.source,
            "calibration": threshold.calibration}


def data_version(session: Session) -> dict[str, str]:
    """Where the data set came from, its fingerprint and its public/private test split, as `grader data`
    recorded them."""
    try:
        info = json.loads((session.data_dir / FINGERPRINT_FILE).read_text(encoding="utf-8"))
        version = {"data": f"{info.get('source', '?')} {info.get('fingerprint', '?')}"}
        if info.get("split"):
            version["data_split"] = str(info["split"])
        return version
    except (OSError, ValueError, AttributeError):
        return {}


def written_answers(run: StudentRun, spec: AssignmentSpec) -> dict[str, str]:
    """The text of written answers (考察), so the TA reads them in the report."""
    if run.notebook is None:
        return {}
    return {c.id: answer_after_heading(run.notebook, c.params.get("heading", ""))[:20_000]
            for c in spec.checks if c.kind == "written_answer" and c.params.get("heading")}


def notes_for(run: StudentRun, lang: str) -> list[str]:
    """Things the TA should know that are not checks: shims used, budget applied, odd evidence."""
    notes: list[str] = []
    evidence = run.evidence
    if evidence is None:
        return notes
    for shim in evidence.compat_shims():
        notes.append(t("note.shim", lang, shim=shim))
    notes.extend(bridge_notes(evidence, lang))  # Keras 2 APIs run as Keras 3: what to write instead
    notes.extend(import_notes(run.execution.errors if run.execution else [], lang))
    for fit in evidence.of("fit_start"):
        req, eff = fit.get("requested", {}), fit.get("effective", {})
        if (req.get("epochs"), req.get("steps_per_epoch")) != (eff.get("epochs"), eff.get("steps_per_epoch")):
            notes.append(t("note.budget_capped", lang, fit=fit["fit"], requested_epochs=req.get("epochs"),
                           effective_epochs=eff.get("epochs"), requested_steps=req.get("steps_per_epoch"),
                           effective_steps=eff.get("steps_per_epoch")))
    for claim in evidence.of("evaluate"):
        notes.append(t("note.claimed_evaluation", lang, claimed=claim.get("claimed")))
    notes.extend(f"evidence: {p}" for p in evidence.problems)
    notes.extend(f"evidence skipped: {s}" for s in run.skipped_evidence)
    if run.execution and run.execution.memory_kills and not run.execution.kernel_died:
        notes.append(t("note.memory_limit_exceeded", lang, kills=run.execution.memory_kills,
                       limit_mb=run.execution.memory_limit_mb))
    if run.execution and run.execution.truncated_cells:
        cells = ", ".join(str(i + 1) for i in run.execution.truncated_cells)
        notes.append(t("note.output_truncated", lang, cells=cells))
    return notes
