"""Self-check: run one notebook the way grading does and judge only the visible checks.

One engine, two front ends:
  * `grader check NOTEBOOK` (grader.selfcheck.project), for those who have the project;
  * `assignments/<id>/selfcheck.py`, the single file students download. `grader.selfcheck.bundle` generates
    it: it embeds this package and every grader module it imports (so the steps, check kinds,
    verdicts and messages are the grader's own), the spec's visible checks only, and the
    reference's *public events*.

Public events are the reference run's evidence reduced to what visible check kinds read from the
reference side (shapes, lengths, the parameter count): never hashes, arrays, models, histories or
accuracies, and nothing of hidden checks. The same check kinds then run unchanged against an
`Evidence` built from them, in the project and in the downloaded file alike.

Only the standard library, numpy, nbformat and nbclient may be imported at module level here and in
what this imports (Colab has them; tests prove it in a venv with nothing else).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from grader.engine import pipeline
from grader.engine.session import make_session as make_grader_session
from grader.judge.checks import MANUAL, PASS
from grader.errors import ConfigError
from grader.evidence.evaluate import ModelEvaluation
from grader.evidence.reader import Evidence
from grader.isolation.launch import Launcher
from grader.engine.pipeline import ReferenceRun, Session, StudentRun, Submission
from grader.results import GRADED, StudentResult
from grader.assignment.spec import AssignmentSpec, parse_spec

SELF_CHECK_BUDGET = "quick"

# For each evidence event kind the visible check kinds read from the *reference*, the fields kept.
# Array summaries inside them keep only SUMMARY_KEYS. If a check kind starts reading another
# reference field, the agreement test (tests/test_selfcheck_end_to_end.py) fails: add it here.
PUBLIC_FIELDS: dict[str, tuple[str, ...]] = {
    "flow": ("flow", "datagen", "batch_size", "length", "x", "y"),  # input_shape, flow_length, first_batch_*
    "batch": ("flow", "x", "y"),  # first_batch_shape, first_batch_one_hot
    "split": ("outputs",),  # split_sizes
    "fit_start": ("fit", "params_count", "input", "validation_x"),  # model_params, fit_validation_data
    "fit_end": ("fit",),  # Evidence.training_fit prefers finished fits
}
SUMMARY_KEYS = ("type", "shape", "dtype", "one_hot")
TA_ONLY_FIELDS = ("rubric", "question")  # the TA's rubric and stock comments do not ship to students

# Kinds that need what never leaves the grader (test-set hashes of the reference's training data,
# the reference's saved model and accuracy). A visible check of such a kind cannot be self-checked.
SERVER_ONLY_KINDS = frozenset({"no_test_overlap", "trusted_test_accuracy"})


# ---------------------------------------------------------------- what ships: spec and events
def public_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """The spec (as parsed TOML) reduced to the visible checks and the self-check budget."""
    checks = list(raw.get("checks", []))
    visible = [{k: v for k, v in c.items() if k not in TA_ONLY_FIELDS} for c in checks if c.get("visible", True)]
    hidden = [c for c in checks if not c.get("visible", True)]
    server_only = [c["id"] for c in visible if c.get("kind") in SERVER_ONLY_KINDS]
    if server_only:
        raise ConfigError(f"visible checks {server_only} need the grader's own data and cannot be self-checked; "
                          "make them hidden (visible = false)")
    budgets = raw.get("budgets", {})
    if SELF_CHECK_BUDGET not in budgets:
        raise ConfigError(f"the spec has no [budgets.{SELF_CHECK_BUDGET}], which the self-check runs with")
    meta = {k: v for k, v in raw.get("assignment", {}).items() if k in ("id", "title", "seed")}
    meta["default_budget"] = SELF_CHECK_BUDGET
    return {
        "assignment": meta,
        "limits": dict(raw.get("limits", {})),
        "budgets": {SELF_CHECK_BUDGET: dict(budgets[SELF_CHECK_BUDGET])},
        "checks": visible,
        "hidden": {"checks": len(hidden), "points": sum(int(c.get("points", 0)) for c in hidden)},
    }


def load_public_spec(public: dict[str, Any], root: Path) -> AssignmentSpec:
    source = json.dumps(public, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return parse_spec(public, root=root, project_root=root, source_bytes=source)


def public_events(evidence: Evidence) -> list[dict[str, Any]]:
    """The reference evidence reduced to PUBLIC_FIELDS (deterministic: no times, no file names)."""
    events = []
    for event in evidence.events:
        keep = PUBLIC_FIELDS.get(event.get("kind", ""))
        if keep is None:
            continue
        reduced: dict[str, Any] = {"seq": event.get("seq"), "kind": event["kind"]}
        reduced.update({key: _reduce(event[key]) for key in keep if key in event})
        events.append(reduced)
    return events


def _reduce(value: Any) -> Any:
    if isinstance(value, dict) and "shape" in value:
        return {k: value[k] for k in SUMMARY_KEYS if k in value}
    if isinstance(value, list):
        return [_reduce(v) for v in value]
    return value


def public_reference(events: list[dict[str, Any]], folder: Path) -> ReferenceRun:
    """A ReferenceRun whose evidence is only the public events (no files, no evaluation)."""
    return ReferenceRun(
        evidence=Evidence(dir=folder, events=[dict(e) for e in events]),
        evaluation=ModelEvaluation(fit=None, problem="not part of the self-check"),
        seconds=0.0,
        key="public",
    )


# ---------------------------------------------------------------- running one notebook
@dataclass
class Outcome:
    """What a self-check found: the grader's result on the visible checks, plus the run itself."""

    result: StudentResult
    run: StudentRun
    seconds: float
    hidden: dict[str, int] = field(default_factory=dict)
    page: Path | None = None  # the HTML report written for it (grader.selfcheck.page), if any

    @property
    def all_visible_ok(self) -> bool:
        """Every visible check passed, or (manual) awaits a TA with something to score."""
        return all(c.status in (PASS, MANUAL) for c in self.result.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.all_visible_ok and self.result.status == GRADED else 1

    def to_dict(self) -> dict[str, Any]:
        return {"result": self.result.to_dict(), "seconds": round(self.seconds, 2), "hidden": self.hidden,
                "all_visible_ok": self.all_visible_ok, "exit_code": self.exit_code}


def self_check_steps(load_test_hashes: Callable[[StudentRun], np.ndarray | None]) -> list[pipeline.Step]:
    """The grader's own steps, minus the trusted evaluation and the cross-checks (hidden checks and
    grader.judge.integrity read them; both need the grader's own data).

    The grader's test-set hashes are loaded just before judging: a self-check reads them from the
    Keras cache that the notebook itself filled.
    """

    async def find_test_set(run: StudentRun, session: Session) -> None:
        if session.test_hashes is None:
            run.test_hashes = load_test_hashes(run)

    steps: list[pipeline.Step] = []
    for step in pipeline.STEPS:
        if step in (pipeline.start_predictor, pipeline.evaluate_model, pipeline.cross_check):  # the grader's own data
            continue
        if step is pipeline.judge_checks:
            steps.append(find_test_set)
        steps.append(step)
    return steps


async def run_self_check(submission: Submission, session: Session, *,
                         load_test_hashes: Callable[[StudentRun], np.ndarray | None],
                         hidden: dict[str, int] | None = None) -> Outcome:
    """Like pipeline.grade_submission, with self_check_steps; keeps the run for diagnosis."""
    started = time.monotonic()
    run = StudentRun(submission=submission, out_dir=session.out_dir / submission.student)
    await pipeline.run_steps(run, session, self_check_steps(load_test_hashes))
    return Outcome(pipeline.build_result(run, session), run, time.monotonic() - started, dict(hidden or {}))


def make_session(*, spec: AssignmentSpec, reference: ReferenceRun, launcher: Launcher, data_dir: Path,
                 out_dir: Path, work_root: Path, lang: str, test_hashes: np.ndarray | None = None,
                 versions: dict[str, str] | None = None) -> Session:
    """The grader's own factory, with the self-check's budget, no trusted test set (no evaluation
    step) and the kernel's versions only (the grader's may not be installed here)."""
    return make_grader_session(
        spec=spec, budget=spec.budget(SELF_CHECK_BUDGET), launcher=launcher, data_dir=data_dir,
        test_hashes=test_hashes, reference=reference, out_dir=out_dir, work_root=work_root, lang=lang,
        threads=os.cpu_count() or 1, versions=dict(versions or {}))
