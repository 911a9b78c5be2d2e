"""Tamper evidence: is what the kernel reported consistent with what the grader measured itself?

Trusted side. Everything a notebook's kernel records can be rewritten by the notebook (the harness
lives in the same process), so the score rests on what the grader measures outside the kernel, and
what the kernel reports is cross-checked here. Each disagreement is a *finding*:

  code       a static scan of the submitted code (grader.judge.code_scan): reaching into the grader/runtime
  accuracy   the saved model scores the public test part (the notebook's x_test) higher than the
             private part (never in a sandbox) by more than chance allows: trained on the test set
  evidence   training calls fed public test images (exact or near copies); a recorded first batch whose
             originals are not images of the data set, or that is no plausible transform of them;
             flow() lengths or split sizes that do not add up; a fit beyond the budget's caps
  model      the saved file (read in the sandboxed predictor) disagrees with the fit events: another
             parameter count, more optimizer steps than recorded or than the budget allows, weights
             still at their initial values after training

Any finding flags the submission (`result.integrity.ok` false, status `flagged`): its automatic
points are held — the score counts only what a TA scores by hand — until a TA accepts (points
restored) or rejects it in the review app, with a reason kept in the review log. The student sees
only that the submission is under review. `hold_for_review` is that rule, applied when a result is
published (like the TA's manual scores and overrides), so the stored automatic result stays whole.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from grader.judge.code_scan import describe, scan_notebook
from grader.evidence.evaluate import ModelEvaluation
from grader.evidence.reader import Evidence
from grader.evidence.known_data import GraderData, public_images_in, training_records
from grader.kernel.grader_kernel import image_hashes, image_signatures
from grader.i18n import t
from grader.results import FLAGGED, MANUAL, StudentResult

DEFAULT_GAP_Z = 4.0
DEFAULT_TRAINED_ON_TEST_MIN = 10
# Parameters of ImageDataGenerator that only move, flip or zoom pixels: the output stays within the
# original's value range (interpolation never overshoots; fill_mode repeats existing pixels).
GEOMETRIC = {"rotation_range", "width_shift_range", "height_shift_range", "shear_range", "zoom_range",
             "horizontal_flip", "vertical_flip", "fill_mode", "interpolation_order", "data_format", "dtype"}



@dataclass
class Finding:
    id: str  # "code.patch", "accuracy.gap", "evidence.trained_on_test", "model.params", …
    source: str  # code | accuracy | evidence | model
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class IntegrityReport:
    findings: list[Finding] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        findings = [asdict(f) for f in self.findings]
        return {"ok": self.ok, "findings": findings, "checked": list(self.checked), "seconds": round(self.seconds, 3),
                "key": findings_key(findings)}


def findings_key(findings: list[dict[str, Any]]) -> str:
    """Names this set of findings, so a TA's decision applies to exactly what the TA saw. Built from the
    findings' ids and details, not their texts: the same findings keep their key in either language."""
    text = json.dumps(sorted(json.dumps([f.get("id"), f.get("detail")], sort_keys=True, ensure_ascii=False, default=str)
                             for f in findings), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _number(value: Any) -> int:
    """An event's object number, or -1 (matches nothing) when the event carries something else."""
    return value if isinstance(value, int) else -1


def _text(key: str, lang: str, **args: Any) -> str:
    return t(f"integrity.{key}", lang, **args)


# ---------------------------------------------------------------- the checks
def check_integrity(*, notebook: Any, evidence: Evidence | None, evaluation: ModelEvaluation | None,
                    data: GraderData | None, budget: dict[str, Any], params: dict[str, Any],
                    lang: str = "ja") -> IntegrityReport:
    started = time.monotonic()
    report = IntegrityReport()
    if notebook is not None:
        report.checked.append("code")
        for hit in scan_notebook(notebook):
            report.findings.append(Finding(
                f"code.{hit.rule}", "code",
                _text("code", lang, cell=hit.cell + 1, line=hit.line, what=describe(hit.rule, lang), code=hit.code),
                hit.to_dict()))
    if evaluation is not None:
        report.checked.append("accuracy")
        report.findings += accuracy_gap(evaluation, float(params.get("gap_z", DEFAULT_GAP_Z)), lang)
    if evidence is not None:
        report.checked.append("evidence")
        report.findings += evidence_findings(evidence, data, budget, params, lang)
        if evaluation is not None and evaluation.model:
            report.checked.append("model")
            report.findings += model_findings(evidence, evaluation, budget, lang)
    report.seconds = time.monotonic() - started
    return report


def accuracy_gap(evaluation: ModelEvaluation, bound: float, lang: str) -> list[Finding]:
    z = evaluation.gap_z
    if z is None or evaluation.public_accuracy is None or evaluation.accuracy is None or z <= bound:
        return []
    detail = {"public": evaluation.public_accuracy, "private": evaluation.accuracy, "z": z, "bound": bound,
              "n_public": evaluation.n_public, "n_private": evaluation.n_private}
    return [Finding("accuracy.gap", "accuracy", _text("accuracy.gap", lang, **detail), detail)]


def evidence_findings(evidence: Evidence, data: GraderData | None, budget: dict[str, Any], params: dict[str, Any],
                      lang: str) -> list[Finding]:
    found: list[Finding] = []
    if data is not None:
        touched = public_images_in(evidence, data, validation=False)
        minimum = int(params.get("trained_on_test_min", DEFAULT_TRAINED_ON_TEST_MIN))
        if touched is not None and len(touched) >= minimum:
            found.append(Finding("evidence.trained_on_test", "evidence",
                                 _text("evidence.trained_on_test", lang, count=len(touched)), {"count": len(touched)}))
        found += batch_findings(evidence, data, lang)
    for flow in evidence.of("flow"):
        samples = ((flow.get("x") or {}).get("shape") or [None])[0]
        batch, length = flow.get("batch_size"), flow.get("length")
        if isinstance(samples, int) and isinstance(batch, int) and batch > 0 and isinstance(length, int) \
                and length != math.ceil(samples / batch):
            detail = {"flow": flow.get("flow"), "length": length, "samples": samples, "batch": batch}
            found.append(Finding("evidence.flow_length", "evidence", _text("evidence.flow_length", lang, **detail), detail))
    for split in evidence.of("split"):
        rows = [((o or {}).get("shape") or [None])[0] for o in split.get("outputs") or []]
        inputs = [((i or {}).get("shape") or [None])[0] for i in split.get("inputs") or []]
        if len(rows) == 2 * len(inputs) and all(isinstance(r, int) for r in rows + inputs) and any(
                rows[2 * k] + rows[2 * k + 1] != inputs[k] for k in range(len(inputs))):
            detail = {"outputs": rows, "inputs": inputs[0] if inputs else None}
            found.append(Finding("evidence.split_sizes", "evidence", _text("evidence.split_sizes", lang, **detail), detail))
    found += budget_findings(evidence, budget, lang)
    return found


def budget_findings(evidence: Evidence, budget: dict[str, Any], lang: str) -> list[Finding]:
    found = []
    for fit in evidence.of("fit_start"):
        effective = fit.get("effective") or {}
        over = []
        for key, cap in (("epochs", budget.get("max_epochs")), ("steps_per_epoch", budget.get("max_steps_per_epoch"))):
            value = effective.get(key)  # None: the notebook's own value, already within the cap
            if cap and isinstance(value, (int, float)) and value > cap:
                over.append(f"{key} {value} > {cap}")
        if over:
            detail = {"fit": fit.get("fit"), "what": ", ".join(over)}
            found.append(Finding("evidence.beyond_budget", "evidence", _text("evidence.beyond_budget", lang, **detail),
                                 detail))
    return found


def trains_on_the_data(evidence: Evidence, data: GraderData) -> bool:
    """Did some training call get mostly the grader's own training images (exact copies)?"""
    for name in training_records(evidence, validation=False):
        hashes = evidence.arrays(name).get("hashes")
        if hashes is not None and hashes.dtype == np.uint64 and len(hashes) and data.is_train(hashes).mean() > 0.5:
            return True
    return False


def batch_findings(evidence: Evidence, data: GraderData, lang: str) -> list[Finding]:
    """A first batch's originals must be images of the data set when the notebook trained on it (one that
    trains on other images, e.g. MNIST by mistake, is wrong but not forging: `data.source` says so), and the
    batch a plausible transform of them."""
    found = []
    on_data = trains_on_the_data(evidence, data)
    for batch in evidence.of("batch"):
        arrays = evidence.arrays(batch.get("file"))
        originals, produced = arrays.get("x_orig"), arrays.get("x")
        if originals is None or produced is None or not len(originals):
            continue
        n = len(originals)
        known = _known_images(originals, data) if on_data else None
        if known is not None and (n - known) * 2 > n:
            detail = {"flow": batch.get("flow"), "count": n - known, "n": n}
            found.append(Finding("evidence.batch_not_from_data", "evidence",
                                 _text("evidence.batch_not_from_data", lang, **detail), detail))
            continue
        flow = evidence.flow(_number(batch.get("flow"))) or {}
        params = (evidence.datagen(_number(flow.get("datagen"))) or {}).get("params") or {}
        implausible = _implausible(originals, produced, params)
        if implausible is not None and implausible * 2 > n:
            detail = {"flow": batch.get("flow"), "count": implausible, "n": n}
            found.append(Finding("evidence.batch_not_a_transform", "evidence",
                                 _text("evidence.batch_not_a_transform", lang, **detail), detail))
    return found


def _known_images(images: np.ndarray, data: GraderData) -> int | None:
    """How many of `images` are the grader's training or public test images (exactly, or nearly)."""
    signatures = image_signatures(images)
    if signatures is None:
        return None
    hashes = image_hashes(images)
    exact = data.is_train(hashes) | (data.public_index(hashes) >= 0)
    if exact.all():
        return len(images)
    rest = ~exact
    near = data.near_train(signatures[rest]) | (data.near_public(signatures[rest]) >= 0)
    return int(exact.sum() + near.sum())


def _implausible(originals: np.ndarray, produced: np.ndarray, params: dict[str, Any]) -> int | None:
    """Images of the batch outside their original's value range, for purely geometric generators."""
    if produced.shape != originals.shape or not set(params) <= GEOMETRIC:
        return None  # brightness, rescale, normalisation … change values legitimately
    a = originals.reshape(len(originals), -1).astype(np.float64)
    b = produced.reshape(len(produced), -1).astype(np.float64)
    low, high = a.min(axis=1), a.max(axis=1)
    slack = 1e-3 * np.maximum(high - low, 1e-6)
    cval = float(params.get("cval", 0.0) or 0.0) if params.get("fill_mode") == "constant" else None
    low = np.minimum(low, cval) if cval is not None else low
    high = np.maximum(high, cval) if cval is not None else high
    outside = (b.min(axis=1) < low - slack) | (b.max(axis=1) > high + slack)
    return int(outside.sum())


def model_findings(evidence: Evidence, evaluation: ModelEvaluation, budget: dict[str, Any],
                   lang: str) -> list[Finding]:
    """The saved file (as the sandboxed predictor read it) against the fit events."""
    facts, found = evaluation.model, []
    fit = next((f for f in evidence.of("fit_start") if f.get("fit") == evaluation.fit), None) or {}
    end = next((e for e in evidence.of("fit_end") if e.get("fit") == evaluation.fit), None) or {}
    saved = next((e for e in evidence.of("model_saved") if e.get("fit") == evaluation.fit), None) or {}
    params = facts.get("params_count")
    if isinstance(params, int) and isinstance(fit.get("params_count"), int) and params != fit["params_count"]:
        detail = {"fit": evaluation.fit, "file": params, "claimed": fit["params_count"]}
        found.append(Finding("model.params", "model", _text("model.params", lang, **detail), detail))
    steps = facts.get("optimizer_iterations")
    if isinstance(steps, int):
        if isinstance(saved.get("iterations"), int) and steps != saved["iterations"]:
            detail = {"file": steps, "claimed": saved["iterations"]}
            found.append(Finding("model.saved_steps", "model", _text("model.saved_steps", lang, **detail), detail))
        recorded = end.get("total_steps")
        if isinstance(recorded, int) and steps > recorded:
            detail = {"file": steps, "recorded": recorded}
            found.append(Finding("model.untraced_steps", "model", _text("model.untraced_steps", lang, **detail), detail))
        total = budget.get("max_total_steps")
        if total and steps > int(total):
            detail = {"file": steps, "total": int(total)}
            found.append(Finding("model.beyond_budget", "model", _text("model.beyond_budget", lang, **detail), detail))
    trained = end.get("steps")
    if facts.get("bias_layers") and facts.get("zero_bias_layers") == facts.get("bias_layers") \
            and isinstance(trained, int) and trained > 0:
        detail = {"fit": evaluation.fit, "steps": trained}
        found.append(Finding("model.untrained", "model", _text("model.untrained", lang, **detail), detail))
    return found


# ---------------------------------------------------------------- holding points for review
def under_review_text(lang: str, decision: str | None = None) -> str:
    return t("integrity.rejected" if decision == "rejected" else "integrity.under_review", lang)


def hold_for_review(result: StudentResult, decision: dict[str, Any] | None = None) -> StudentResult:
    """A flagged result as published: status `flagged`, every automatically scored point held (the
    points a TA gives by hand stay the TA's). A TA's decision on exactly these findings (same key):
    accepted → the automatic result as it was; rejected → the points stay held."""
    integrity = result.integrity
    if not integrity or integrity.get("ok", True):
        return result
    applies = decision if decision is not None and decision.get("key") == integrity.get("key") else None
    result = copy.deepcopy(result)
    result.integrity = {**integrity, "review": dict(applies) if applies else None}
    if applies and applies.get("decision") == "accepted":
        return result
    held = 0
    text = under_review_text(result.lang, applies.get("decision") if applies else None)
    for check in result.checks:
        if check.points and check.status != MANUAL:
            held += check.points
            check.held = {"points": check.points, "status": check.status}
            check.points = 0
            check.message = check.public_message = text
    result.integrity["held_points"] = held
    result.integrity["status_before"] = result.status
    result.status = FLAGGED
    result.message = text
    result.score = sum(c.points for c in result.checks)
    return result
