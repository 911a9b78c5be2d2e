"""Run the reference notebook once per (data, budget, versions) and cache what it produced.

Expected values are never constants in the spec: they are the reference's own evidence on
the same data and budget, and its accuracy evaluated by the same trusted path as students'.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from importlib import metadata
from dataclasses import replace
from pathlib import Path
from typing import Any

from grader import __version__
from grader.errors import ReferenceRunError
from grader.evidence.evaluate import ModelEvaluation
from grader.evidence.reader import Evidence
from grader.judge.threshold import decide_threshold
from grader.kernel import harness_source
from grader.results import GRADED
from grader.engine.pipeline import (
    ReferenceRun, Session, StudentRun, Submission,
    collect_evidence, evaluate_model, execute, prepare_job, read_submission, run_steps, start_predictor,
)

log = logging.getLogger("grader.reference")
REFERENCE_STEPS = (read_submission, prepare_job, start_predictor, execute, collect_evidence, evaluate_model)


def library_versions() -> dict[str, str]:
    versions = {"grader": __version__}
    for name in ("tensorflow-cpu", "tensorflow", "keras", "numpy", "nbclient"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def cache_key(session: Session, data_fingerprint: str) -> str:
    digest = hashlib.sha256()
    for part in (
        session.spec.source_bytes,
        session.spec.reference.read_bytes(),
        harness_source(),
        json.dumps(session.budget.caps(), sort_keys=True).encode(),
        json.dumps(library_versions(), sort_keys=True).encode(),
        data_fingerprint.encode(),
    ):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:20]


async def ensure_reference(session: Session, *, cache_root: Path, data_fingerprint: str) -> ReferenceRun:
    """Load the cached reference run for this key, or run the reference notebook now."""
    if not session.spec.reference.is_file():
        raise ReferenceRunError(f"reference notebook not found: {session.spec.reference}")
    key = cache_key(session, data_fingerprint)
    folder = cache_root / session.spec.id / f"{session.budget.name}-{key}"
    saved = folder / "reference.json"
    if saved.is_file():
        info = json.loads(saved.read_text(encoding="utf-8"))
        log.info("reference: cached run %s (accuracy %.4f)", folder.name, info["evaluation"]["accuracy"])
        return ReferenceRun(Evidence.load(folder / "evidence"), ModelEvaluation(**info["evaluation"]),
                            info["seconds"], key)
    log.info("reference: running %s with budget %s", session.spec.reference.name, session.budget.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    run = StudentRun(submission=Submission("reference", session.spec.reference), out_dir=folder)
    await run_steps(run, session, REFERENCE_STEPS)
    if run.status != GRADED:  # a step stopped it or crashed
        raise ReferenceRunError(f"the reference notebook could not be graded: {run.message}")
    problems = describe_reference_problems(run)
    if problems:
        raise ReferenceRunError(f"the reference run is not usable ({problems}); see {folder / 'executed.ipynb'}")
    info = {"evaluation": run.evaluation.to_dict(), "seconds": round(run.execution.seconds, 2),
            "execution": run.execution.to_dict(), "key": key}
    saved.write_text(json.dumps(info, ensure_ascii=False, indent=1), encoding="utf-8")
    return ReferenceRun(run.evidence, run.evaluation, run.execution.seconds, key)


async def with_reference(session: Session, *, cache_root: Path, data_fingerprint: str,
                         calibration: dict[str, Any] | None = None) -> Session:
    """The session with the reference run (cached per inputs) and the threshold decided from it, once."""
    reference = await ensure_reference(session, cache_root=cache_root, data_fingerprint=data_fingerprint)
    threshold = decide_threshold(session.spec, session.budget.name, reference_accuracy=reference.evaluation.accuracy,
                                 calibration=calibration, lang=session.lang)
    return replace(session, reference=reference, threshold=threshold)


def describe_reference_problems(run: StudentRun) -> str:
    execution = run.execution
    if execution.timed_out:
        return "timed out"
    if execution.kernel_died:
        return "kernel died"
    if execution.errors:
        first = execution.errors[0]
        return f"cell error {first.ename}: {first.evalue[:200]}"
    if run.evaluation is None or run.evaluation.accuracy is None:
        return f"no test accuracy ({run.evaluation.problem if run.evaluation else 'no evaluation'})"
    return ""
