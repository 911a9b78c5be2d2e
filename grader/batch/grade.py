"""Grading a class (`grader grade`): every notebook in a folder into per-student results and class pages.

Fast, resumable and incremental:
  * the gradebook (OUT/gradebook.sqlite, grader.gradebook) records each student's result the
    moment it is finished, so a batch killed halfway loses only the notebooks still running;
  * a student whose input fingerprint (notebook, spec, reference, harness, versions, data, budget)
    matches a finished result is not executed again (grader.batch.plan): the stored result is
    reused, the accuracy threshold re-judged (a new calibration applies without re-execution), the
    TA's manual scores applied, and the report re-rendered only when its inputs changed; a result in
    another language is judged again from its kept evidence (grader.engine.rejudge), still without
    executing; `--force` and `--student` regrade on purpose, grader_error results are always retried;
  * `jobs` kernels run at once, each with cores ÷ jobs TensorFlow threads.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from functools import partial
from typing import Callable

from grader import __version__
from grader.assignment.content import load_content
from grader.assignment.data import dataset_dir, fingerprint, load_dataset
from grader.assignment.spec import AssignmentSpec, load_spec
from grader.assignment.student_ids import Refusal, normalise
from grader.batch.plan import Planned, SubmissionScan, default_budget, plan_batch, scan_submissions  # noqa: F401 - re-exported
from grader.batch.executors import Executor, open_executor
from grader.batch.progress import BatchProgress, NoProgress
from grader.engine.calibration import load_calibration
from grader.engine.launcher import sandbox_for
from grader.engine.pipeline import Session, Submission, public_messages, threshold_summary
from grader.engine.reference import library_versions, with_reference
from grader.engine.rejudge import can_rejudge, rejudge
from grader.engine.session import make_session
from grader.errors import ClusterError, ConfigError, NoSubmissionsError
from grader.evidence.evaluate import ModelEvaluation
from grader.evidence.predictor import WAITING_MB as PREDICTOR_WAITING_MB
from grader.gradebook.final import Reviews
from grader.gradebook.manifest import keep_manifest
from grader.gradebook.publish import write_class, write_student
from grader.gradebook.store import Gradebook, ResultRow, batch_inputs, input_fingerprint, sha256_bytes
from grader.i18n import both, t
from grader.isolation.launch import Launcher
from grader.isolation.machine import default_jobs, threads_per_job
from grader.isolation.workroot import exclusive_output, work_root
from grader.judge.checks import AccuracyThreshold, CheckContext
from grader.judge.threshold import ACCURACY_KIND, decide_threshold
from grader.judge.verdicts import judge, not_run_results, observe
from grader.kernel import harness_source
from grader.results import FAIL, GRADER_ERROR, INTERRUPTED, PASS, StudentResult, result_json

log = logging.getLogger("grader.grade")


@dataclass(frozen=True)
class GradeRequest:
    """What `grader grade` was asked to do (its options)."""

    assignment: str
    submissions: Path
    out: Path
    project_root: Path
    keras_home: Path
    cache_root: Path
    budget: str | None = None
    jobs: int | None = None  # None: as many as the machine fits (cores, memory ÷ the spec's limit per kernel)
    threads: int | None = None
    lang: str = "ja"
    force: bool = False
    students: tuple[str, ...] = ()  # only these execute; the others keep their results
    calibration_root: Path | None = None
    launcher: Launcher | None = None  # None: the strongest sandbox available
    no_sandbox: bool = False
    cluster: str | None = None  # a Dask scheduler's address, or "slurm" (grader.batch.cluster); None: local
    cluster_config: Path | None = None  # the [slurm] settings for --cluster slurm


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


async def grade_all(request: GradeRequest, *, progress: BatchProgress | None = None,
                    on_result: Callable[[StudentResult], None] | None = None) -> BatchSummary:
    """Grade the class; one grader at a time per output folder (a lock), a gradebook run per call."""
    started = time.monotonic()
    grading = ClassGrading(request, progress=progress or NoProgress(), on_result=on_result)
    with exclusive_output(request.out), Gradebook.open(request.out) as book:
        return await grading.run(book, started)


class ClassGrading:
    """One `grade` run: what was found and planned, the results so far, the summary."""

    def __init__(self, request: GradeRequest, *, progress: BatchProgress,
                 on_result: Callable[[StudentResult], None] | None) -> None:
        self.request, self.progress, self.on_result = request, progress, on_result
        self.spec = load_spec(request.project_root, request.assignment)
        self.budget = self.spec.budget(request.budget or default_budget(self.spec))
        self.scan = scan_submissions(request.submissions)
        self.found = self.scan.submissions
        if not self.found and not self.scan.refused:  # not an empty class page that looks like success
            raise NoSubmissionsError(both("cli_error.no_submissions", path=request.submissions))
        self.only = sorted({normalise(s) for s in request.students})  # a name typed on macOS may arrive decomposed
        unknown = sorted(set(self.only) - {s.student for s in self.found})
        if unknown:
            raise ConfigError(f"--student: no submission for {', '.join(unknown)} in {request.submissions}")
        self.data_fingerprint = data_fingerprint(request.keras_home)
        self.jobs = request.jobs or default_jobs(self.spec.limits.memory_mb + PREDICTOR_WAITING_MB)  # + its predictor
        self.threads = request.threads or threads_per_job(self.jobs)
        self.versions = library_versions()
        self.calibration = load_calibration(request.calibration_root, self.spec, self.budget, self.data_fingerprint)
        self.content = load_content(self.spec.root)
        self.results: dict[str, StudentResult] = {}
        self.seconds: dict[str, float] = {}  # executed, report not drawn yet
        self.renderer: ThreadPoolExecutor | None = None  # draws executed students' reports (`execute`)
        self.summary = BatchSummary(request.out, [], self.budget.name, None, 0.0, "", jobs=self.jobs,
                                    threads=self.threads, refused=self.scan.refused)

    def threshold(self, reference_accuracy: float | None) -> AccuracyThreshold | None:
        return decide_threshold(self.spec, self.budget.name, reference_accuracy=reference_accuracy,
                                calibration=self.calibration, lang=self.request.lang)

    async def run(self, book: Gradebook, started: float) -> BatchSummary:
        self.book = book
        self.run_id = self.summary.run_id = book.start_run(
            assignment=self.spec.id, budget=self.budget.name, jobs=self.jobs, threads=self.threads,
            grader_version=__version__)
        try:
            plan = self.plan()
            to_run = [p for p in plan if p.run]
            self.progress.start(total=len(plan), to_run=len(to_run), jobs=min(self.jobs, max(1, len(to_run))))
            rerender = self.reuse(plan)  # first: cheap, and the class pages need them whatever happens next
            if to_run or rerender:
                await self.execute(to_run, rerender)
            self.finish(started)
        except BaseException:  # killed politely (Ctrl-C) or a batch-level error: say so in the gradebook
            book.finish_run(self.run_id, students=len(self.results), executed=len(self.summary.executed),
                            reused=len(self.summary.reused), seconds=time.monotonic() - started, status=INTERRUPTED)
            self.progress.close()
            raise
        return self.summary

    def plan(self) -> list[Planned]:
        """Fingerprint every notebook, record it, and decide who executes; read what TAs added."""
        request, spec = self.request, self.spec
        shared = batch_inputs(spec_source=spec.source_bytes,
                              reference=spec.reference.read_bytes() if spec.reference.is_file() else b"",
                              kernel=harness_source(), versions=self.versions,
                              data_fingerprint=self.data_fingerprint, budget=self.budget.name)
        fingerprints = {}
        for submission in self.found:
            data = submission.path.read_bytes()
            fingerprints[submission.student] = input_fingerprint(data, batch_inputs=shared)
            self.book.record_submission(spec.id, submission.student, submission.path, sha256_bytes(data))
        if not self.only:  # a --student run scans the same folder but must not forget the others' state
            self.book.set_refused(spec.id, [(r.name, r.reason) for r in self.scan.refused])
        plan = plan_batch(self.found, fingerprints, self.book.results(spec.id), force=request.force,
                          only=self.only or None)
        plan = [replace(p, run=True, reason="language") if self.must_execute_for_language(p) else p for p in plan]
        keep_manifest(request.submissions, request.out)
        self.reviews = Reviews.load(request.out, spec.id)
        for planned in plan:
            if planned.run:
                log.info("%s: will run (%s)", planned.submission.student, planned.reason)
        return plan

    def must_execute_for_language(self, planned: Planned) -> bool:
        """A result in another language whose kept evidence is gone can only be had by executing."""
        stored = planned.previous.result if planned.previous else None
        return (not planned.run and planned.reason != "not selected" and stored is not None
                and stored.lang != self.request.lang and not can_rejudge(stored, self.request.out / stored.student))

    def reuse(self, plan: list[Planned]) -> list[Planned]:
        """Stored results of unchanged students, re-judged with the threshold in force, published;
        returns those in another language, judged again once the session is open (rerender)."""
        other_language = []
        for planned in plan:
            if planned.run or planned.previous is None:
                continue
            stored = planned.previous.result
            if stored.lang != self.request.lang and can_rejudge(stored, self.request.out / stored.student):
                other_language.append(planned)
                continue
            if stored.execution.get("budget") == self.budget.name:  # (--student may keep other budgets' rows)
                stored = rejudge_accuracy(stored, self.spec, self.threshold((stored.reference or {}).get("accuracy")))
            self.publish(stored, reused=True, seconds=None, row=planned.previous)
        return other_language

    async def rerender(self, planned: Planned, session: Session) -> None:
        """A reused result judged again in this run's language from its kept evidence (nothing runs)."""
        previous = planned.previous
        assert previous is not None
        result = await rejudge(previous.result, planned.submission, session)
        self.publish(result, reused=True, seconds=None, row=previous)

    async def execute(self, to_run: list[Planned], rerender: list[Planned]) -> None:
        """The reference (cached), results in another language judged again, then `jobs` students
        at once in sandboxed kernels."""
        request = self.request
        data = load_dataset(request.keras_home)
        launcher = request.launcher or sandbox_for(
            self.spec, self.budget, no_sandbox=request.no_sandbox,
            hidden=[request.project_root, request.out, request.submissions, request.cache_root, request.keras_home,
                    *([request.calibration_root] if request.calibration_root else [])])
        log.info("sandbox: %s; %d jobs × %d threads", launcher.name, self.jobs, self.threads)
        self.summary.sandbox = launcher.name if to_run else ""
        with work_root() as work:
            session = make_session(spec=self.spec, budget=self.budget, launcher=launcher, data=data,
                                   data_dir=dataset_dir(request.keras_home).resolve(), out_dir=request.out,
                                   work_root=work, lang=request.lang, threads=self.threads, versions=self.versions)
            session = await with_reference(session, cache_root=request.cache_root,
                                           data_fingerprint=self.data_fingerprint, calibration=self.calibration)
            assert session.reference is not None  # with_reference sets it
            self.summary.reference_accuracy = session.reference.evaluation.accuracy
            self.summary.reference_seconds = session.reference.seconds
            for planned in rerender:
                await self.rerender(planned, session)
            self.executor: Executor | None = await self.open_executor(session) if to_run else None
            try:
                limit = asyncio.Semaphore(max(1, (self.executor and self.executor.slots) or self.jobs))
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix="report") as self.renderer:
                    await asyncio.gather(*(self.execute_one(p, session, limit) for p in to_run))
            finally:
                if self.executor is not None:
                    await self.executor.close()

    async def open_executor(self, session: Session) -> Executor:
        """Where notebooks run: here, or on checked Dask workers (--cluster: grader.batch.executors)."""
        from grader.engine.remote import worker_identity  # (no Dask in it)

        request = self.request
        identity = worker_identity(self.spec.id, request.project_root, request.keras_home,
                                   probe_sandbox=False) if request.cluster else {}
        return await open_executor(cluster=request.cluster, cluster_config=request.cluster_config, session=session,
                                   identity=identity, no_sandbox=request.no_sandbox, threads=request.threads)

    async def execute_one(self, planned: Planned, session: Session, limit: asyncio.Semaphore) -> None:
        submission = planned.submission
        async with limit:
            execution_id = self.book.start_execution(self.run_id, self.spec.id, submission.student, planned.fingerprint)
            began = time.monotonic()
            try:
                assert self.executor is not None  # opened before any student executes
                result = await self.executor.grade(submission, session)
            except ClusterError:
                raise  # the scheduler is gone: a batch-level error; the results so far are kept
            except Exception as exc:  # noqa: BLE001 - a bug on one student is a row, not a lost batch
                log.exception("grading %s failed", submission.student)
                result = grader_error_result(submission, session, exc)
            final = self.record(result, seconds=time.monotonic() - began, execution_id=execution_id,
                                key=planned.fingerprint)
        await self.render(result, final)  # the slot is free: the next kernel starts while this report is drawn

    def publish(self, automatic: StudentResult, *, reused: bool, seconds: float | None, row: ResultRow | None = None,
                execution_id: int | None = None, key: str = "") -> StudentResult:
        """The final result (grader.gradebook.final) written out, the gradebook row kept current."""
        final = self.reviews.final(automatic)
        previous_key = row.report_key if reused and row is not None else None
        rkey = write_student(final, self.request.out / automatic.student, content=self.content,
                             previous_key=previous_key)
        if reused:
            if row is None or row.report_key != rkey or row.result_json != result_json(automatic):
                self.book.update_result(automatic, report_key=rkey)
        else:
            self.book.record_result(self.run_id, automatic, fingerprint=key, seconds=seconds, report_key=rkey,
                                    execution_id=execution_id)
        self.announce(final, reused=reused, seconds=seconds)
        return final

    def record(self, automatic: StudentResult, *, seconds: float, execution_id: int, key: str) -> StudentResult:
        """An executed student's result committed at once (resumable), its report not drawn yet (report
        key ""): a batch killed before `render` draws it in the next run, like any stale report."""
        self.book.record_result(self.run_id, automatic, fingerprint=key, seconds=seconds, report_key="",
                                execution_id=execution_id)
        self.seconds[automatic.student] = seconds
        return self.reviews.final(automatic)

    async def render(self, automatic: StudentResult, final: StudentResult) -> None:
        """result.json and report.html drawn in the report thread (one at a time, off the event loop that
        drives the kernels); the gradebook is written here, on the loop's thread, in completion order."""
        folder = self.request.out / automatic.student
        rkey = await asyncio.get_running_loop().run_in_executor(
            self.renderer, partial(write_student, final, folder, content=self.content))
        if rkey:
            self.book.update_result(automatic, report_key=rkey)
        self.announce(final, reused=False, seconds=self.seconds.pop(automatic.student, None))

    def announce(self, final: StudentResult, *, reused: bool, seconds: float | None) -> None:
        self.results[final.student] = final
        (self.summary.executed if not reused else self.summary.reused).append(final.student)
        self.progress.finished(final, reused=reused, seconds=seconds)
        if self.on_result:
            self.on_result(final)

    def finish(self, started: float) -> None:
        """The class pages, the summary, and the run closed in the gradebook."""
        summary = self.summary
        summary.results = [self.results[s.student] for s in self.found if s.student in self.results]
        if summary.reference_accuracy is None:  # nothing ran: the reference of the stored results
            summary.reference_accuracy = next((r.reference["accuracy"] for r in summary.results
                                               if (r.reference or {}).get("accuracy") is not None), None)
        summary.threshold = self.threshold(summary.reference_accuracy)
        write_class(summary.results, self.request.out, spec=self.spec, budget=self.budget, lang=self.request.lang,
                    refused=self.book.refused(self.spec.id))
        summary.seconds = time.monotonic() - started
        self.book.finish_run(self.run_id, students=len(summary.results), executed=len(summary.executed),
                             reused=len(summary.reused), seconds=summary.seconds)
        self.progress.close()


def data_fingerprint(keras_home: Path) -> str:
    try:
        return fingerprint(keras_home)
    except OSError:
        load_dataset(keras_home)  # raises the data error that says what is missing
        raise


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
            student=None, reference=None,  # type: ignore[arg-type]  # the accuracy kind reads only evaluations
            params=check_spec.params, budget=result.execution.get("budget", ""),
            student_eval=ModelEvaluation(**evaluation),
            reference_eval=ModelEvaluation(fit=None, accuracy=reference_accuracy), threshold=threshold)
        result.checks[index] = public_messages([judge(check_spec, observe(check_spec, context), result.lang)],
                                               spec, result.lang)[0]
    result.score = sum(c.points for c in result.checks)
    result.reference = {**(result.reference or {}), **threshold_summary(threshold)}
    return result


def grader_error_result(submission: Submission, session: Session, exc: Exception) -> StudentResult:
    checks = not_run_results(session.spec, session.lang, t("run.not_run", session.lang))
    return StudentResult(
        student=submission.student, assignment=session.spec.id, status=GRADER_ERROR,
        message=t("run.grader_error", session.lang, error=f"{type(exc).__name__}: {exc}")[:500], score=0,
        max_score=session.spec.max_score, checks=checks,
        execution={"budget": session.budget.name, "sandbox": session.launcher.name}, lang=session.lang)
