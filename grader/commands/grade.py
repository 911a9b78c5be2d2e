"""`grader grade`: grade every notebook in a folder into per-student results and class pages.

Fast, resumable and incremental:
  * the gradebook (OUT/gradebook.sqlite, grader.gradebook) records each student's result the
    moment it is finished, so a batch killed halfway loses only the notebooks still running;
  * a student whose input fingerprint (notebook, spec, reference, harness, versions, data, budget,
    language) matches a finished result is not executed again: the stored result is reused, the
    accuracy threshold re-judged (a new calibration applies without re-execution), the TA's manual
    scores applied, and the report re-rendered only when its inputs changed; `--force` and
    `--student` regrade on purpose, and grader_error results are always retried;
  * `jobs` kernels run at once, each with cores ÷ jobs TensorFlow threads.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from grader import __version__
from grader.calibration import load_calibration
from grader.checks import PASS, FAIL, AccuracyThreshold, CheckContext
from grader.checks.training import threshold_for
from grader.data import dataset_dir, fingerprint, load_dataset
from grader.errors import ConfigError
from grader.evaluate import ModelEvaluation
from grader.integrity import hold_for_review
from grader.gradebook import (
    Gradebook, ManualScore, ResultRow, batch_inputs, input_fingerprint, result_json, sha256_bytes,
)
from grader.kernel import harness_source
from grader.kernel.grader_kernel import image_hashes
from grader.known_data import GraderData
from grader.launch import Launcher
from grader.manifest import keep_manifest, with_submission
from grader.machine import default_jobs, gpu_available, threads_per_job
from grader.paths import PROJECT_ROOT
from grader.pipeline import Session, Submission, grade_submission, public_messages, threshold_summary
from grader.progress import BatchProgress, NoProgress
from grader.reference import ensure_reference, library_versions
from grader.report import write_class_outputs, write_student_report
from grader.results import GRADER_ERROR, StudentResult
from grader.sandbox import SandboxLimits, SandboxPolicy, choose_launcher
from grader.spec import AssignmentSpec, Budget, load_spec
from grader.student_ids import Refusal, group_sources, normalise
from grader.verdicts import judge, not_run_results, observe
from grader.workroot import exclusive_output, work_root

log = logging.getLogger("grader.grade")
ACCURACY_KIND = "trusted_test_accuracy"
# What a report.html is rendered from besides the result: when any of these change, reports are redrawn.
REPORT_CODE = ("report.py", "figures.py", "render_notebook.py", "templates")


@dataclass
class BatchSummary:
    out_dir: Path
    results: list[StudentResult]
    budget: str
    reference_accuracy: float | None
    reference_seconds: float
    sandbox: str
    executed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    threshold: AccuracyThreshold | None = None
    seconds: float = 0.0
    jobs: int = 1
    threads: int = 1
    run_id: int = 0
    refused: list[Refusal] = field(default_factory=list)  # handed-in names not graded, and why


@dataclass(frozen=True)
class Planned:
    """What happens to one student in this batch, and why."""

    submission: Submission
    fingerprint: str
    run: bool
    reason: str  # new | changed | forced | selected | retry | unchanged | not selected
    previous: ResultRow | None = None


@dataclass
class SubmissionScan:
    """What a submissions folder holds: the notebooks to grade, and the names refused (with why)."""

    submissions: list[Submission]
    refused: list[Refusal] = field(default_factory=list)


def scan_submissions(folder: Path) -> SubmissionScan:
    """`DIR/<id>.ipynb` → id is the file stem; `DIR/<id>/<name>.ipynb` → id is the folder name.

    Ids follow grader.student_ids: kept as written (NFC); a name the rules refuse, or two names
    that would be one id, are not graded and come back as refusals, never as a crash.
    """
    if not folder.is_dir():
        raise ConfigError(f"submissions folder not found: {folder}")
    named: dict[str, list[str]] = {}
    notebook_of: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_symlink():
            continue
        if path.is_file() and path.suffix == ".ipynb":
            named.setdefault(path.stem, []).append(path.name)
            notebook_of[path.stem] = path
        elif path.is_dir():
            notebooks = sorted(p for p in path.glob("*.ipynb") if not p.name.startswith(".") and p.is_file())
            if notebooks:  # several: the most recently saved is the submission
                named.setdefault(path.name, []).append(path.name + "/")
                notebook_of[path.name] = max(notebooks, key=lambda p: (p.stat().st_mtime, p.name))
    usable, refused = group_sources(named)
    for refusal in refused:
        log.warning("not graded: %s — %s", refusal.name, refusal.reason)
    return SubmissionScan([Submission(student, notebook_of[raw]) for student, raw in sorted(usable.items())], refused)


def find_submissions(folder: Path) -> list[Submission]:
    """The gradable notebooks of a folder (see scan_submissions for the refused ones)."""
    return scan_submissions(folder).submissions


def default_budget(spec: AssignmentSpec) -> str:
    """The spec's default, or `full` when TensorFlow sees a GPU (and the spec defines `full`)."""
    if "full" in spec.budgets and spec.default_budget != "full" and gpu_available():
        log.info("TensorFlow sees a GPU: default budget full")
        return "full"
    return spec.default_budget


def plan_batch(found: list[Submission], fingerprints: dict[str, str], previous: dict[str, ResultRow], *,
               force: bool = False, only: Iterable[str] | None = None) -> list[Planned]:
    """Who runs and who is reused. `only`: run just these (on purpose); the others keep their last
    result whatever changed, and those never graded are left out."""
    selected = set(only) if only else None
    plan = []
    for submission in found:
        student, key = submission.student, fingerprints[submission.student]
        old = previous.get(student)
        if selected is not None and student not in selected:
            if old is not None:
                plan.append(Planned(submission, key, False, "not selected", old))
            continue
        if selected is not None:
            reason = "selected"
        elif force:
            reason = "forced"
        elif old is None:
            reason = "new"
        elif not old.reusable:
            reason = "retry"
        elif old.fingerprint != key:
            reason = "changed"
        else:
            plan.append(Planned(submission, key, False, "unchanged", old))
            continue
        plan.append(Planned(submission, key, True, reason, old))
    return plan


# ---------------------------------------------------------------- results that are reused or amended
def rejudge_accuracy(result: StudentResult, spec: AssignmentSpec, threshold: AccuracyThreshold | None) -> StudentResult:
    """Apply the threshold in force to a stored result: the accuracy is the grader's own number, so
    a new calibration changes the verdict without executing the notebook again."""
    if threshold is None:
        return result
    result = copy.deepcopy(result)
    evaluation = result.evaluation or {}
    reference_accuracy = (result.reference or {}).get("accuracy")
    by_id = {c.id: c for c in spec.checks}
    for index, check in enumerate(result.checks):
        check_spec = by_id.get(check.id)
        if check_spec is None or check_spec.kind != ACCURACY_KIND or check.status not in (PASS, FAIL):
            continue  # not_run/error: there is no accuracy to judge
        if evaluation.get("accuracy") is None:
            continue
        context = CheckContext(
            student=None, reference=None, params=check_spec.params, budget=result.execution.get("budget", ""),
            student_eval=ModelEvaluation(**evaluation),
            reference_eval=ModelEvaluation(fit=None, accuracy=reference_accuracy), threshold=threshold)
        result.checks[index] = public_messages([judge(check_spec, observe(check_spec, context), result.lang)],
                                               spec, result.lang)[0]
    result.score = sum(c.points for c in result.checks)
    result.reference = {**(result.reference or {}), **threshold_summary(threshold)}
    return result


def apply_manual_scores(result: StudentResult, scores: dict[str, ManualScore] | None) -> StudentResult:
    """The TA's points replace the automatic ones for those checks (they live in the gradebook's own
    table, so every regrade applies them again)."""
    if not scores:
        return result
    result = copy.deepcopy(result)
    ja = result.lang != "en"
    for check in result.checks:
        score = scores.get(check.id)
        if score is None:
            continue
        points = max(0, min(int(score.points), check.max_points))
        check.points = points
        check.status = PASS if points > 0 else FAIL
        text = (f"TA 採点: {points} / {check.max_points}" if ja else f"TA score: {points} / {check.max_points}")
        text += f"（{score.comment}）" if ja and score.comment else f" ({score.comment})" if score.comment else ""
        check.message = check.public_message = text
        result.notes.append(f"{check.id}: {text}" + (f" — {score.scorer}, {score.updated_at}" if score.scorer else
                                                      f" — {score.updated_at}"))
    result.score = sum(c.points for c in result.checks)
    return result


def review_overrides(out: Path, assignment: str) -> dict:
    """The TA's overrides from `grader review` (grader.review_store), so a regrade keeps them."""
    try:
        from grader.review_store import ReviewStore
    except ImportError:
        return {}
    with ReviewStore(out) as store:
        return store.overrides(assignment)


def review_decisions(out: Path, assignment: str) -> dict:
    """The TA's accept/reject decisions on flagged submissions (grader.review_store)."""
    from grader.review_store import ReviewStore

    with ReviewStore(out) as store:
        return store.integrity_decisions(assignment)


def final_result(automatic: StudentResult, manual: dict[str, ManualScore] | None, overrides: dict | None,
                 submission: dict | None = None, decision: dict | None = None) -> StudentResult:
    """What result.json and the reports show: automatic → held while flagged (unless a TA accepted it,
    grader.integrity) → TA manual scores → TA overrides, with the submission time and lateness from the
    pull manifest."""
    if overrides:
        from grader.review_store import final_result as with_overrides

        return with_overrides(automatic, manual, overrides, submission, decision)
    return with_submission(apply_manual_scores(hold_for_review(automatic, decision), manual), submission)


def report_code_digest() -> str:
    """What reports are drawn with; a change re-renders every report (nothing is re-executed)."""
    base = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in REPORT_CODE:
        path = base / name
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file() and "__pycache__" not in file.parts:
                digest.update(file.relative_to(base).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def report_key(result: StudentResult, code_digest: str) -> str:
    return sha256_bytes((code_digest + result_json(result)).encode("utf-8"))[:32]


# ---------------------------------------------------------------- the batch
async def grade_all(
    *,
    assignment: str,
    submissions: Path,
    out: Path,
    budget: str | None,
    jobs: int | None,
    lang: str,
    project_root: Path,
    keras_home: Path,
    cache_root: Path,
    launcher: Launcher | None,
    no_sandbox: bool = False,
    on_result: Callable[[StudentResult], None] | None = None,
    threads: int | None = None,
    force: bool = False,
    students: Iterable[str] | None = None,
    calibration_root: Path | None = None,
    progress: BatchProgress | None = None,
) -> BatchSummary:
    started = time.monotonic()
    progress = progress or NoProgress()
    spec = load_spec(project_root, assignment)
    chosen = spec.budget(budget or default_budget(spec))
    scan = scan_submissions(submissions)
    found = scan.submissions
    only = sorted({normalise(s) for s in students or ()})  # a name typed on macOS may arrive decomposed
    unknown = sorted(set(only) - {s.student for s in found})
    if unknown:
        raise ConfigError(f"--student: no submission for {', '.join(unknown)} in {submissions}")
    try:
        data_fingerprint = fingerprint(keras_home)
    except OSError:
        load_dataset(keras_home)  # raises the data error that says what is missing
        raise
    jobs = jobs or default_jobs(spec.limits.memory_mb)
    threads = threads or threads_per_job(jobs)
    versions = library_versions()
    shared = batch_inputs(spec_source=spec.source_bytes, reference=spec.reference.read_bytes() if
                          spec.reference.is_file() else b"", kernel=harness_source(),
                          versions=versions, data_fingerprint=data_fingerprint, budget=chosen.name, lang=lang)
    calibration = load_calibration(calibration_root, spec, chosen, data_fingerprint)
    accuracy_rule = next((c.params for c in spec.checks if c.kind == ACCURACY_KIND), None)
    code_digest = report_code_digest()

    def threshold(reference_accuracy: float | None) -> AccuracyThreshold | None:
        if accuracy_rule is None:
            return None
        return threshold_for(accuracy_rule, chosen.name, reference_accuracy=reference_accuracy,
                             calibration=calibration, lang=lang)

    with exclusive_output(out), Gradebook.open(out) as book:
        run_id = book.start_run(assignment=spec.id, budget=chosen.name, jobs=jobs, threads=threads,
                                grader_version=__version__)
        results: dict[str, StudentResult] = {}
        summary = BatchSummary(out, [], chosen.name, None, 0.0, "", jobs=jobs, threads=threads, run_id=run_id,
                               refused=scan.refused)
        try:
            fingerprints = {}
            for submission in found:
                data = submission.path.read_bytes()
                fingerprints[submission.student] = input_fingerprint(data, batch_inputs=shared)
                book.record_submission(spec.id, submission.student, submission.path, sha256_bytes(data))
            if not only:  # a --student run scans the same folder but must not forget the others' state
                book.set_refused(spec.id, [(r.name, r.reason) for r in scan.refused])
            plan = plan_batch(found, fingerprints, book.results(spec.id), force=force, only=only or None)
            manual = book.manual_scores(spec.id)
            overrides = review_overrides(out, spec.id)
            decisions = review_decisions(out, spec.id)
            handed_in = keep_manifest(submissions, out)
            to_run = [p for p in plan if p.run]
            progress.start(total=len(plan), to_run=len(to_run), jobs=min(jobs, max(1, len(to_run))))
            for planned in to_run:
                log.info("%s: will run (%s)", planned.submission.student, planned.reason)

            def publish(automatic: StudentResult, *, reused: bool, seconds: float | None, row: ResultRow | None = None,
                        execution_id: int | None = None, key: str = "") -> StudentResult:
                """Manual scores on top, result.json + report.html when they changed, the gradebook row."""
                final = final_result(automatic, manual.get(automatic.student), overrides.get(automatic.student),
                                     handed_in.get(automatic.student), decisions.get(automatic.student))
                folder = out / automatic.student
                rkey = report_key(final, code_digest)
                if not reused or row is None or row.report_key != rkey or not (folder / "report.html").is_file() \
                        or not (folder / "result.json").is_file():
                    try:
                        write_student_report(final, folder)
                    except Exception:  # noqa: BLE001 - a report bug must not lose the graded result
                        log.exception("report for %s failed", automatic.student)
                        rkey = ""
                if reused:
                    if row is None or row.report_key != rkey or row.result_json != result_json(automatic):
                        book.update_result(automatic, report_key=rkey)
                else:
                    book.record_result(run_id, automatic, fingerprint=key, seconds=seconds, report_key=rkey,
                                       execution_id=execution_id)
                results[automatic.student] = final
                (summary.executed if not reused else summary.reused).append(automatic.student)
                progress.finished(final, reused=reused, seconds=seconds)
                if on_result:
                    on_result(final)
                return final

            # Reused results first: cheap, and the class pages need them whatever happens next.
            for planned in plan:
                if not planned.run:
                    stored = planned.previous.result
                    if stored.execution.get("budget") == chosen.name:  # (--student may keep other budgets' rows)
                        stored = rejudge_accuracy(stored, spec, threshold((stored.reference or {}).get("accuracy")))
                    publish(stored, reused=True, seconds=None, row=planned.previous)

            if to_run:
                data = load_dataset(keras_home)
                if launcher is None:
                    launcher = sandbox_for(spec, chosen, hidden=[project_root, out, submissions, cache_root, keras_home,
                                                                 *([calibration_root] if calibration_root else [])],
                                           no_sandbox=no_sandbox)
                log.info("sandbox: %s; %d jobs × %d threads", launcher.name, jobs, threads)
                summary.sandbox = launcher.name
                with work_root() as work:
                    session = Session(
                        spec=spec, budget=chosen, launcher=launcher, data_dir=dataset_dir(keras_home).resolve(),
                        x_test=data.x_test, y_test=data.y_test, test_hashes=image_hashes(data.x_test), reference=None,
                        grader_data=GraderData.from_dataset(data),
                        out_dir=out, work_root=work, lang=lang, threads=threads, versions=versions,
                    )
                    session.reference = await ensure_reference(session, cache_root=cache_root,
                                                               data_fingerprint=data_fingerprint)
                    session.threshold = threshold(session.reference.evaluation.accuracy)
                    summary.reference_accuracy = session.reference.evaluation.accuracy
                    summary.reference_seconds = session.reference.seconds
                    limit = asyncio.Semaphore(max(1, jobs))

                    async def one(planned: Planned) -> None:
                        submission = planned.submission
                        async with limit:
                            execution_id = book.start_execution(run_id, spec.id, submission.student, planned.fingerprint)
                            began = time.monotonic()
                            try:
                                result = await grade_submission(submission, session)
                            except Exception as exc:  # noqa: BLE001 - a bug on one student is a row, not a lost batch
                                log.exception("grading %s failed", submission.student)
                                result = grader_error_result(submission, session, exc)
                            publish(result, reused=False, seconds=time.monotonic() - began,
                                    execution_id=execution_id, key=planned.fingerprint)

                    await asyncio.gather(*(one(p) for p in to_run))

            summary.results = [results[s.student] for s in found if s.student in results]
            if summary.reference_accuracy is None:  # nothing ran: the reference of the stored results
                summary.reference_accuracy = next((r.reference["accuracy"] for r in summary.results
                                                   if (r.reference or {}).get("accuracy") is not None), None)
            summary.threshold = threshold(summary.reference_accuracy)
            write_class_outputs(summary.results, out, lang=lang, title=spec.title.get(lang),
                                budget_summary=f"{chosen.name} ({chosen.summary(lang)})",
                                refused=book.refused(spec.id))
            summary.seconds = time.monotonic() - started
            book.finish_run(run_id, students=len(summary.results), executed=len(summary.executed),
                            reused=len(summary.reused), seconds=summary.seconds)
            progress.close()
        except BaseException:  # killed politely (Ctrl-C) or a batch-level error: say so in the gradebook
            book.finish_run(run_id, students=len(results), executed=len(summary.executed),
                            reused=len(summary.reused), seconds=time.monotonic() - started, status="interrupted")
            progress.close()
            raise
    return summary


def grader_error_result(submission: Submission, session: Session, exc: Exception) -> StudentResult:
    checks = not_run_results(session.spec, session.lang, "実行されませんでした。" if session.lang != "en" else "Not run.")
    return StudentResult(
        student=submission.student, assignment=session.spec.id, status=GRADER_ERROR,
        message=f"採点システム内部のエラー: {type(exc).__name__}: {exc}"[:500], score=0,
        max_score=session.spec.max_score, checks=checks,
        execution={"budget": session.budget.name, "sandbox": session.launcher.name}, lang=session.lang)


def sandbox_for(spec: AssignmentSpec, budget: Budget, *, hidden: list[Path], no_sandbox: bool) -> Launcher:
    """The strongest isolation available, with limits from the spec and the budget."""
    folders = [p.resolve() for p in hidden if p.exists()]
    project = PROJECT_ROOT.resolve()
    folders += [project, project.parent] if project.parent != Path("/") else [project]
    limits = SandboxLimits(memory_mb=spec.limits.memory_mb, disk_mb=spec.limits.disk_mb,
                           processes=spec.limits.processes, cpu_s=budget.notebook_timeout_s * 4 + 120,
                           gpu=gpu_available())
    return choose_launcher(policy=SandboxPolicy(hidden=folders), limits=limits, no_sandbox=no_sandbox)


def main(
    *,
    assignment: str,
    submissions: Path,
    out: Path,
    budget: str | None = None,
    jobs: int | None = None,
    lang: str = "ja",
    project_root: Path,
    keras_home: Path,
    cache_root: Path,
    launcher: Launcher | None = None,
    no_sandbox: bool = False,
    on_result: Callable[[StudentResult], None] | None = None,
    threads: int | None = None,
    force: bool = False,
    students: Iterable[str] | None = None,
    calibration_root: Path | None = None,
    progress: BatchProgress | None = None,
) -> BatchSummary:
    """`jobs=None`: as many as the machine fits (cores, memory ÷ the spec's limit per kernel)."""
    return asyncio.run(grade_all(
        assignment=assignment, submissions=submissions, out=out, budget=budget, jobs=jobs, lang=lang,
        project_root=project_root, keras_home=keras_home, cache_root=cache_root,
        launcher=launcher, no_sandbox=no_sandbox, on_result=on_result, threads=threads, force=force,
        students=students, calibration_root=calibration_root, progress=progress,
    ))
