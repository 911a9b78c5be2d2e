"""`grader grade`: grade every notebook in a folder into per-student results and class pages."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from grader.data import dataset_dir, fingerprint, load_dataset
from grader.errors import ConfigError
from grader.kernel.grader_kernel import image_hashes
from grader.launch import Launcher
from grader.paths import PROJECT_ROOT
from grader.sandbox import SandboxLimits, SandboxPolicy, choose_launcher
from grader.pipeline import Session, Submission, grade_submission
from grader.reference import ensure_reference, library_versions
from grader.report import write_class_outputs, write_student_report
from grader.results import GRADER_ERROR, StudentResult
from grader.verdicts import not_run_results
from grader.spec import AssignmentSpec, Budget, load_spec

log = logging.getLogger("grader.grade")
SAFE_ID = re.compile(r"[^0-9A-Za-z_.\-]")


@dataclass
class BatchSummary:
    out_dir: Path
    results: list[StudentResult]
    budget: str
    reference_accuracy: float | None
    reference_seconds: float
    sandbox: str


def find_submissions(folder: Path) -> list[Submission]:
    """`DIR/<id>.ipynb` → id is the file stem; `DIR/<id>/<name>.ipynb` → id is the folder name."""
    if not folder.is_dir():
        raise ConfigError(f"submissions folder not found: {folder}")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file() and path.suffix == ".ipynb":
            found[safe_id(path.stem)] = path
        elif path.is_dir():
            notebooks = sorted(p for p in path.glob("*.ipynb") if not p.name.startswith("."))
            if notebooks:  # several: the most recently saved is the submission
                found[safe_id(path.name)] = max(notebooks, key=lambda p: (p.stat().st_mtime, p.name))
    return [Submission(student, path) for student, path in sorted(found.items())]


def safe_id(raw: str) -> str:
    return SAFE_ID.sub("_", raw.strip()) or "unnamed"


def default_jobs() -> int:
    return 1


async def grade_all(
    *,
    assignment: str,
    submissions: Path,
    out: Path,
    budget: str | None,
    jobs: int,
    lang: str,
    project_root: Path,
    keras_home: Path,
    cache_root: Path,
    launcher: Launcher | None,
    no_sandbox: bool = False,
    on_result: Callable[[StudentResult], None] | None = None,
) -> BatchSummary:
    spec = load_spec(project_root, assignment)
    chosen = spec.budget(budget or spec.default_budget)
    found = find_submissions(submissions)
    data = load_dataset(keras_home)
    out.mkdir(parents=True, exist_ok=True)
    if launcher is None:
        launcher = sandbox_for(spec, chosen, hidden=[project_root, out, submissions, cache_root, keras_home],
                               no_sandbox=no_sandbox)
    log.info("sandbox: %s", launcher.name)
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    with tempfile.TemporaryDirectory(prefix="grader-") as work:
        session = Session(
            spec=spec, budget=chosen, launcher=launcher, data_dir=dataset_dir(keras_home).resolve(),
            x_test=data.x_test, y_test=data.y_test, test_hashes=image_hashes(data.x_test), reference=None,
            out_dir=out, work_root=Path(work), lang=lang, threads=threads, versions=library_versions(),
        )
        session.reference = await ensure_reference(session, cache_root=cache_root,
                                                   data_fingerprint=fingerprint(keras_home))
        limit = asyncio.Semaphore(max(1, jobs))

        async def one(submission: Submission) -> StudentResult:
            async with limit:
                try:
                    result = await grade_submission(submission, session)
                    write_student_report(result, out / submission.student)
                except Exception as exc:  # noqa: BLE001 - a bug on one student is a row, not a lost batch
                    log.exception("grading %s failed", submission.student)
                    result = grader_error_result(submission, session, exc)
                    write_student_report(result, out / submission.student)
                if on_result:
                    on_result(result)
                return result

        results = list(await asyncio.gather(*(one(s) for s in found)))
    write_class_outputs(results, out, lang=lang, title=spec.title.get(lang), budget_summary=
                        f"{chosen.name} ({chosen.summary(lang)})")
    return BatchSummary(out, results, chosen.name, session.reference.evaluation.accuracy,
                        session.reference.seconds, launcher.name)


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
                           processes=spec.limits.processes, cpu_s=budget.notebook_timeout_s * 4 + 120)
    return choose_launcher(policy=SandboxPolicy(hidden=folders), limits=limits, no_sandbox=no_sandbox)


def main(
    *,
    assignment: str,
    submissions: Path,
    out: Path,
    budget: str | None = None,
    jobs: int = 1,
    lang: str = "ja",
    project_root: Path,
    keras_home: Path,
    cache_root: Path,
    launcher: Launcher | None = None,
    no_sandbox: bool = False,
    on_result: Callable[[StudentResult], None] | None = None,
) -> BatchSummary:
    return asyncio.run(grade_all(
        assignment=assignment, submissions=submissions, out=out, budget=budget, jobs=jobs, lang=lang,
        project_root=project_root, keras_home=keras_home, cache_root=cache_root,
        launcher=launcher, no_sandbox=no_sandbox, on_result=on_result,
    ))
