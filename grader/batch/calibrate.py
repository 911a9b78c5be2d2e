"""Calibration runs (`grader calibrate`): run the reference notebook several times with different seeds and store the
spread of its trusted test accuracy, from which `grade` derives the accuracy threshold.

Run i uses seed = spec seed + i (run 0 is the seed every student's kernel gets). Each run goes
through the same steps as the reference run of `grade` (sandboxed kernel, evidence, the saved
model evaluated in a separate process on the grader's test set); see grader.engine.calibration.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from grader.assignment.data import dataset_dir, fingerprint, load_dataset
from grader.assignment.spec import load_spec
from grader.engine.calibration import calibration_path, save_calibration
from grader.engine.launcher import sandbox_for
from grader.engine.pipeline import Session, StudentRun, Submission, run_steps
from grader.engine.reference import REFERENCE_STEPS, describe_reference_problems, library_versions
from grader.engine.session import make_session
from grader.errors import ReferenceRunError
from grader.isolation.launch import Launcher
from grader.evidence.predictor import WAITING_MB as PREDICTOR_WAITING_MB
from grader.isolation.machine import default_jobs, threads_per_job
from grader.isolation.workroot import work_root
from grader.judge.threshold import decide_threshold
from grader.results import GRADED

log = logging.getLogger("grader.calibrate")


@dataclass
class CalibrationSummary:
    path: Path
    info: dict[str, Any]
    threshold: float | None
    threshold_source: str
    seconds: float


async def run_reference(session: Session, seed: int, folder: Path) -> dict[str, Any]:
    """One reference run with `seed`; its accuracy, or why there is none."""
    run = StudentRun(submission=Submission(f"reference-seed{seed}", session.spec.reference), out_dir=folder)
    started = time.monotonic()
    await run_steps(run, replace(session, seed=seed), REFERENCE_STEPS)
    problem = run.message if run.status != GRADED else describe_reference_problems(run)
    accuracy = None if problem or run.evaluation is None else run.evaluation.accuracy
    return {"seed": seed, "accuracy": None if accuracy is None else round(accuracy, 4),
            "seconds": round(time.monotonic() - started, 2), **({"problem": problem[:300]} if problem else {})}


async def calibrate_all(*, assignment: str, budget: str, runs: int, jobs: int | None, project_root: Path,
                        keras_home: Path, calibration_root: Path, launcher: Launcher | None, no_sandbox: bool,
                        lang: str, on_run: Callable[[dict[str, Any]], None] | None) -> CalibrationSummary:
    started = time.monotonic()
    spec = load_spec(project_root, assignment)
    chosen = spec.budget(budget)
    if not spec.reference.is_file():
        raise ReferenceRunError(f"reference notebook not found: {spec.reference}")
    data = load_dataset(keras_home)
    data_fingerprint = fingerprint(keras_home)
    jobs = jobs or min(runs, default_jobs(spec.limits.memory_mb + PREDICTOR_WAITING_MB))
    if launcher is None:
        launcher = sandbox_for(spec, chosen, hidden=[project_root, calibration_root, keras_home], no_sandbox=no_sandbox)
    with work_root() as work:
        session = make_session(spec=spec, budget=chosen, launcher=launcher, data=data,  # data → grader_data too
                               data_dir=dataset_dir(keras_home).resolve(), out_dir=work / "out", work_root=work,
                               lang=lang, threads=threads_per_job(jobs), versions=library_versions())
        limit = asyncio.Semaphore(jobs)

        async def one(seed: int) -> dict[str, Any]:
            async with limit:
                outcome = await run_reference(session, seed, work / "out" / f"seed-{seed}")
                log.info("calibration run seed %d: accuracy %s (%.1f s)", seed, outcome["accuracy"], outcome["seconds"])
                if on_run:
                    on_run(outcome)
                return outcome

        outcomes = list(await asyncio.gather(*(one(spec.seed + i) for i in range(runs))))
    failed = [o for o in outcomes if o["accuracy"] is None]
    if len(failed) == len(outcomes):
        raise ReferenceRunError(f"no calibration run produced an accuracy: {failed[0].get('problem')}")
    path = calibration_path(calibration_root, spec, chosen, data_fingerprint)
    info = save_calibration(path, spec=spec, budget=chosen, data_fingerprint=data_fingerprint, runs=outcomes)
    threshold = decide_threshold(spec, chosen.name, reference_accuracy=None, calibration=info, lang=lang)
    return CalibrationSummary(path, info, threshold.value if threshold else None,
                              threshold.source if threshold else
                              "too few runs for the spec's rule: grade keeps the single-reference rule",
                              time.monotonic() - started)

