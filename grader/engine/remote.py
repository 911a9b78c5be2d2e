"""The worker's half of grading on several machines (`grader grade --cluster`, grader.batch.cluster).

A worker (a Dask worker process on one of the instructor's machines, with its own checkout of the
grader and its own copy of the data, private test part included) runs the steps that need the
notebook's machine: read, prepare the job, execute in the worker's own sandbox, collect the signed
evidence, evaluate the saved model in a fresh sandboxed process. It returns a `WorkerBundle`: plain
data and the files the coordinator keeps (executed notebook, evidence, logs), each within the
existing size caps. The coordinator checks the bundle again (`check_bundle`), then cross-checks,
judges and writes everything, so a result is the same wherever its notebook ran.

Nothing here imports Dask: the functions are plain and picklable; Dask only carries them.
Where the worker's copy lives: GRADER_PROJECT_ROOT and GRADER_KERAS_HOME in the worker's
environment, else the checkout the grader runs from and its .data/keras.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import os
import re
import socket
import tempfile
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from grader.assignment.data import dataset_dir, fingerprint, load_dataset
from grader.assignment.paths import DATA_HOME, PROJECT_ROOT
from grader.assignment.spec import load_spec
from grader.engine.execute import CellError, ExecutionResult
from grader.engine.launcher import sandbox_for
from grader.engine.pipeline import (
    MAX_NOTEBOOK_BYTES, NOTEBOOK_STEPS, ReferenceRun, Session, StudentRun, Submission, run_steps,
)
from grader.engine.reference import library_versions
from grader.engine.session import make_session
from grader.evidence.evaluate import ModelEvaluation
from grader.evidence.reader import Evidence
from grader.isolation.workroot import work_root
from grader.results import GRADED, STUDENT_STATUSES

WORKER_STEPS = NOTEBOOK_STEPS  # the predictor starts beside the kernel on the worker too
MAX_LOG_BYTES = 200_000  # keep_kernel_log's tail, and grader_error.txt
FILE_NAME = re.compile(r"^(executed\.ipynb|kernel\.log|predict\.log|grader_error\.txt|evidence/[\w.\-/]+)$")
GRADER_PACKAGE = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class WorkerTask:
    """One notebook and what the worker needs to grade it as the coordinator would."""

    student: str
    notebook: bytes
    assignment: str
    budget: str
    lang: str
    threads: int
    no_sandbox: bool
    identity: dict[str, Any]  # the coordinator's (worker_identity): checked again on the worker
    reference_predict_seconds: float | None  # the reference model's prediction time (the model's time limit)


@dataclass
class WorkerBundle:
    """What comes back: the run's data and the files to keep under OUT/<student>/."""

    student: str
    status: str
    message: str
    files: dict[str, bytes] = field(default_factory=dict)
    execution: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    skipped_evidence: list[str] = field(default_factory=list)
    problems: list[str] | None = None  # the evidence's problems (None: no evidence was collected)
    step_seconds: dict[str, float] = field(default_factory=dict)
    sandbox: str = ""
    limits: dict[str, Any] = field(default_factory=dict)
    worker: str = ""


class BundleError(ValueError):
    """A bundle that breaks the contract (a name, a type, a size): that student's grader_error."""


# ---------------------------------------------------------------- who the worker is
def worker_paths() -> tuple[Path, Path]:
    """(project root, KERAS_HOME) of this machine's grader copy."""
    return (Path(os.environ.get("GRADER_PROJECT_ROOT") or PROJECT_ROOT),
            Path(os.environ.get("GRADER_KERAS_HOME") or DATA_HOME))


def source_hash(package: Path = GRADER_PACKAGE) -> str:
    """sha256 over the grader's own source (modules, templates, messages): same code, same results."""
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.is_file() and p.suffix in (".py", ".toml", ".j2")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def worker_identity(assignment: str, project_root: Path | None = None, keras_home: Path | None = None,
                    probe_sandbox: bool = True) -> dict[str, Any]:
    """What must match between the coordinator and a worker: grader source, libraries, the
    assignment's spec and reference, the data (private part included), and a working sandbox."""
    default_root, default_home = worker_paths()
    root, home = project_root or default_root, keras_home or default_home
    identity: dict[str, Any] = {"grader_source": source_hash(), **library_identity()}
    try:
        spec = load_spec(root, assignment)
        identity["assignment"] = hashlib.sha256(spec.source_bytes + spec.reference.read_bytes()).hexdigest()[:16]
    except Exception as exc:  # noqa: BLE001 - reported as what differs, not a crashed worker
        identity["assignment"] = f"unusable: {type(exc).__name__}: {exc}"[:200]
    try:
        identity["data"] = fingerprint(home)
    except OSError as exc:
        identity["data"] = f"missing: {exc}"[:200]
    if probe_sandbox:
        identity["sandbox"] = sandbox_name(root, assignment)
    return identity


def library_identity() -> dict[str, str]:
    """The libraries by what they are: `tensorflow-cpu` here and `tensorflow` (CUDA) on a GPU worker are
    one TensorFlow when their versions agree."""
    return {f"library {'tensorflow' if name == 'tensorflow-cpu' else name}": version
            for name, version in library_versions().items()}


def sandbox_name(root: Path, assignment: str) -> str:
    """The sandbox this machine would grade in, or "" when none works."""
    try:
        spec = load_spec(root, assignment)
        return sandbox_for(spec, spec.budget(next(iter(spec.budgets))), hidden=[], no_sandbox=False).name
    except Exception:  # noqa: BLE001 - no sandbox: the coordinator decides (refused unless --no-sandbox)
        return ""


def identity_differences(coordinator: dict[str, Any], worker: dict[str, Any], *, no_sandbox: bool) -> list[str]:
    """Human-readable differences; [] when the worker may grade."""
    differences = [f"{key}: {worker.get(key, '—')} ≠ {value}" for key, value in coordinator.items()
                   if key != "sandbox" and worker.get(key) != value]
    differences += [f"{key}: {value} (not on the coordinator)" for key, value in worker.items()
                    if key not in coordinator and key != "sandbox"]
    if not no_sandbox and not worker.get("sandbox"):
        differences.append("sandbox: none works on this worker (install bubblewrap, or grade with --no-sandbox)")
    return differences


# ---------------------------------------------------------------- grading on the worker
_SESSIONS: dict[tuple[Any, ...], Session] = {}
_IDENTITY: dict[str, dict[str, Any]] = {}
_ROOTS = contextlib.ExitStack()
atexit.register(_ROOTS.close)


def worker_session(task: WorkerTask) -> Session:
    """This worker's Session for the task's assignment and budget, made once per worker process."""
    key = (task.assignment, task.budget, task.lang, task.threads, task.no_sandbox)
    if key not in _SESSIONS:
        root, home = worker_paths()
        spec = load_spec(root, task.assignment)
        budget = spec.budget(task.budget)
        launcher = sandbox_for(spec, budget, no_sandbox=task.no_sandbox, hidden=[root, home])
        _SESSIONS[key] = make_session(
            spec=spec, budget=budget, launcher=launcher, data=load_dataset(home), data_dir=dataset_dir(home).resolve(),
            out_dir=Path(tempfile.gettempdir()), work_root=_ROOTS.enter_context(work_root()), lang=task.lang,
            threads=task.threads, versions=library_versions())
    return _SESSIONS[key]


def grade_on_worker(task: WorkerTask) -> WorkerBundle:
    """The Dask task: the worker's steps in its own sandbox, then the bundle (a fresh event loop:
    Dask runs tasks in threads of its own)."""
    if task.assignment not in _IDENTITY:
        _IDENTITY[task.assignment] = worker_identity(task.assignment, probe_sandbox=False)
    mine = {k: v for k, v in task.identity.items() if k != "sandbox"}
    differences = identity_differences(mine, _IDENTITY[task.assignment], no_sandbox=True)
    if differences:  # the coordinator checked; a worker changed since (a new checkout) must not grade
        raise RuntimeError("worker no longer matches the coordinator: " + "; ".join(differences))
    session = worker_session(task)
    reference = ReferenceRun(evidence=None, seconds=0.0, key="",  # type: ignore[arg-type]  # only the time is read
                             evaluation=ModelEvaluation(fit=None, predict_seconds=task.reference_predict_seconds))
    return asyncio.run(run_on_worker(task, replace(session, reference=reference)))


async def run_on_worker(task: WorkerTask, session: Session) -> WorkerBundle:
    folder = Path(tempfile.mkdtemp(prefix="remote-", dir=session.work_root))
    try:
        notebook = folder / "submission.ipynb"
        notebook.write_bytes(task.notebook)
        run = StudentRun(submission=Submission(task.student, notebook), out_dir=folder / "out")
        await run_steps(run, session, WORKER_STEPS)
        return WorkerBundle(
            student=task.student, status=run.status, message=run.message, files=kept_files(run.out_dir, session),
            execution={**run.execution.to_dict(), "memory_limit_mb": run.execution.memory_limit_mb}
            if run.execution else None,
            evaluation=run.evaluation.to_dict() if run.evaluation else None,
            skipped_evidence=list(run.skipped_evidence),
            problems=list(run.evidence.problems) if run.evidence is not None else None,
            step_seconds=dict(run.step_seconds), sandbox=session.launcher.name,
            limits=dict(getattr(session.launcher, "limits_in_force", {})),
            worker=f"{socket.gethostname()}:{os.getpid()}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def size_caps(session: Session) -> tuple[int, int]:
    """(executed notebook, evidence in all): the submission plus its capped outputs; the evidence cap."""
    limits = session.spec.limits
    return MAX_NOTEBOOK_BYTES + 2 * limits.max_output_mb * 1_000_000, limits.max_evidence_mb * 1_000_000 + 1_000_000


def kept_files(out_dir: Path, session: Session) -> dict[str, bytes]:
    """The plain files the pipeline left for OUT/<student>/, within the caps (checked again on receipt)."""
    files = {}
    for path in sorted(out_dir.rglob("*")):
        if path.is_file() and not path.is_symlink():
            name = path.relative_to(out_dir).as_posix()
            if FILE_NAME.match(name):
                files[name] = path.read_bytes()
    check_files(files, *size_caps(session))
    return files


# ---------------------------------------------------------------- the coordinator's side of the contract
def check_files(files: Any, notebook_cap: int, evidence_cap: int) -> None:
    if not isinstance(files, dict):
        raise BundleError("files is not a mapping")
    evidence = 0
    for name, data in files.items():
        if not isinstance(name, str) or not isinstance(data, bytes) or not FILE_NAME.match(name) or ".." in name:
            raise BundleError(f"unexpected file {name!r}")
        if name == "executed.ipynb" and len(data) > notebook_cap:
            raise BundleError(f"executed notebook over {notebook_cap} bytes")
        if name.endswith((".log", ".txt")) and not name.startswith("evidence/") and len(data) > MAX_LOG_BYTES:
            raise BundleError(f"{name} over {MAX_LOG_BYTES} bytes")
        evidence += len(data) if name.startswith("evidence/") else 0
    if evidence > evidence_cap:
        raise BundleError(f"evidence over {evidence_cap} bytes")


def check_bundle(bundle: Any, student: str, session: Session) -> WorkerBundle:
    """The bundle as the coordinator accepts it: its type, student, status, fields and sizes."""
    if not isinstance(bundle, WorkerBundle) or bundle.student != student:
        raise BundleError(f"not this student's bundle: {type(bundle).__name__}")
    if bundle.status not in STUDENT_STATUSES or not isinstance(bundle.message, str):
        raise BundleError(f"unknown status {bundle.status!r}")
    for name in ("execution", "evaluation"):
        if not isinstance(getattr(bundle, name), (dict, type(None))):
            raise BundleError(f"{name} is not a mapping")
    if not all(isinstance(x, str) for x in [*bundle.skipped_evidence, *(bundle.problems or [])]):
        raise BundleError("notes are not text")
    check_files(bundle.files, *size_caps(session))
    return bundle


def apply_bundle(run: StudentRun, bundle: WorkerBundle) -> None:
    """The worker's run as if it had happened here: files under OUT/<student>/, then the run's data."""
    shutil.rmtree(run.out_dir / "evidence", ignore_errors=True)
    for name, data in bundle.files.items():
        target = run.out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    run.execution = execution_from_dict(bundle.execution) if bundle.execution is not None else None
    run.evaluation = ModelEvaluation(**bundle.evaluation) if bundle.evaluation is not None else None
    if bundle.problems is not None:
        run.evidence = Evidence.load(run.out_dir / "evidence")
        run.evidence.problems[:] = bundle.problems
    run.skipped_evidence = list(bundle.skipped_evidence)
    run.step_seconds.update(bundle.step_seconds)


def execution_from_dict(data: dict[str, Any]) -> ExecutionResult:
    """ExecutionResult.to_dict read back (the derived `memory_exceeded` dropped)."""
    fields = {k: v for k, v in data.items() if k in ExecutionResult.__dataclass_fields__ and k != "errors"}
    return ExecutionResult(**fields, errors=[CellError(**e) for e in data.get("errors") or []])


def stopped(bundle: WorkerBundle) -> bool:
    return bundle.status != GRADED
