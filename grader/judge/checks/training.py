"""The model and its training: architecture, generator-fed fit, steps, validation, test accuracy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from grader.i18n import t
from grader.judge.checks import ERROR, MANUAL, AccuracyThreshold, CheckContext, Observation, kind, missing, verdict


def _saved_params(evaluation: Any) -> int | None:
    """The parameter count of the saved model as the grader's predictor read it from the file."""
    count = ((getattr(evaluation, "model", None) or {}) if evaluation is not None else {}).get("params_count")
    return count if isinstance(count, int) else None


@kind("model_params")
def model_params(ctx: CheckContext) -> Observation:
    """Same parameter count as the reference CNN; a different network goes to the TA. The count is the
    saved model's, read by the grader (grader.evidence.evaluate), when there is one; else the kernel's record."""
    expected = _saved_params(ctx.reference_eval) or (ctx.reference.training_fit() or {}).get("params_count")
    fit = ctx.student.training_fit()
    if fit is None:
        return missing("no_fit", expected)
    actual = _saved_params(ctx.student_eval) or fit.get("params_count")
    if actual == expected:
        return verdict(True, actual, expected)
    layers = " → ".join(layer.get("class", "?") for layer in fit.get("layers", []))
    return Observation(MANUAL, actual, expected, "architecture_differs", {"layers": layers})


def _augmenting_datagens(ctx: CheckContext) -> set[int]:
    keys = ctx.params.get("augmentation_params", ["rotation_range", "vertical_flip", "horizontal_flip"])
    return {d["datagen"] for d in ctx.student.of("datagen") if any(d.get("params", {}).get(k) for k in keys)}


@kind("fit_uses_augmented_flow")
def fit_uses_augmented_flow(ctx: CheckContext) -> Observation:
    expected = "flow() of an augmenting ImageDataGenerator"
    fits = ctx.student.of("fit_start")
    if not fits:
        return missing("no_fit", expected)
    augmenting = _augmenting_datagens(ctx)
    for fit in fits:
        flow = ctx.student.flow(fit.get("input", {}).get("flow"))
        if flow and flow.get("datagen") in augmenting:
            return verdict(True, f"flow #{flow['flow']} (datagen #{flow['datagen']})", expected)
    kinds = sorted({f.get("input", {}).get("kind", "?") for f in fits})
    return verdict(False, ", ".join(kinds), expected, "fit_without_augmentation")


@kind("fit_steps_per_epoch")
def fit_steps_per_epoch(ctx: CheckContext) -> Observation:
    """steps_per_epoch given, covering the training data once: len(x) / batch_size (±1)."""
    fit = ctx.student.training_fit()
    if fit is None:
        return missing("no_fit")
    requested = fit.get("requested", {}).get("steps_per_epoch")
    flow = ctx.student.flow(fit.get("input", {}).get("flow"))
    expected = flow.get("length") if flow else None
    if requested is None:
        return verdict(False, None, expected, "steps_missing")
    ok = expected is not None and abs(math.ceil(requested) - expected) <= 1
    return verdict(ok, requested, expected, "steps_differs")


@kind("fit_validation_data")
def fit_validation_data(ctx: CheckContext) -> Observation:
    ref_fit = ctx.reference.training_fit() or {}
    expected = (ref_fit.get("validation_x") or {}).get("shape", [None])[0]
    fit = ctx.student.training_fit()
    if fit is None:
        return missing("no_fit", expected)
    actual = (fit.get("validation_x") or {}).get("shape", [None])[0]
    if actual is None:
        return verdict(False, fit.get("requested", {}).get("validation_data"), expected, "no_validation")
    return verdict(actual == expected, actual, expected, "validation_size_differs")


@kind("evaluated_on_test_set")
def evaluated_on_test_set(ctx: CheckContext) -> Observation:
    """model.evaluate() was called on the test images (by content, not by variable name)."""
    expected = ctx.params.get("min_fraction", 0.95)
    calls = ctx.student.of("evaluate")
    if not calls:
        return missing("no_evaluate", f"≥ {expected:.0%}")
    if ctx.test_hashes is None:
        return missing("no_test_set")
    best = 0.0
    for call in calls:
        hashes = ctx.student.arrays(call.get("x_hashes")).get("hashes")
        if hashes is not None and len(hashes):
            covered = np.isin(ctx.test_hashes, hashes).mean()
            best = max(best, float(covered))
    return verdict(best >= expected, f"{best:.0%}", f"≥ {expected:.0%}", "not_test_set")


def accuracy_threshold(reference_accuracy: float, params: dict, budget: str) -> float:
    """Rule (also written in the spec): reference accuracy minus the budget's margin, never below the floor."""
    margins = params.get("margin", {})
    margin = float(margins.get(budget, 0.05)) if isinstance(margins, dict) else float(margins)
    return round(max(float(params.get("floor", 0.0)), reference_accuracy - margin), 4)


def _margin(params: dict, budget: str) -> float:
    margins = params.get("margin", {})
    return float(margins.get(budget, 0.05)) if isinstance(margins, dict) else float(margins)


def threshold_for(params: dict, budget: str, *, reference_accuracy: float | None,
                  calibration: dict[str, Any] | None = None, lang: str = "ja") -> AccuracyThreshold | None:
    """The threshold in force, by the rule the spec writes in `params.threshold`.

    rule = "calibrated" and a calibration with at least `min_runs` runs (`grader calibrate`):
        max(floor, mean − sigmas × max(std, min_std))
    otherwise (no calibration, too few runs, or no rule): the single-reference rule,
        max(floor, reference_accuracy − margin[budget])
    """
    rule = params.get("threshold") or {}
    floor = float(params.get("floor", 0.0))
    why_not = ""
    if isinstance(rule, dict) and rule.get("rule") == "calibrated":
        runs = [r for r in (calibration or {}).get("runs", []) if r.get("accuracy") is not None]
        min_runs = int(rule.get("min_runs", 3))
        if calibration and len(runs) >= min_runs:
            mean, std = float(calibration["mean"]), float(calibration["std"])
            sigmas, min_std = float(rule.get("sigmas", 3)), float(rule.get("min_std", 0.0))
            spread = max(std, min_std)
            value = round(max(floor, mean - sigmas * spread), 4)
            how = f"{mean:.3f} − {sigmas:g}×{spread:.3f}" + (f", floor {floor:g}" if value == floor else "")
            source = t("threshold.calibrated", lang, runs=len(runs), mean=mean, std=std, how=how)
            summary = {"runs": len(runs), "mean": round(mean, 4), "std": round(std, 4),
                       "seeds": [r.get("seed") for r in runs], "sigmas": sigmas, "min_std": min_std,
                       "file": calibration.get("file"), "key": calibration.get("key")}
            return AccuracyThreshold(value, "calibrated", source, summary)
        if calibration:
            why_not = t("threshold.too_few_runs", lang, runs=len(runs), min_runs=min_runs)
        else:
            why_not = t("threshold.no_calibration", lang)
    if reference_accuracy is None:
        return None
    value = accuracy_threshold(reference_accuracy, params, budget)
    margin = _margin(params, budget)
    source = t("threshold.single_reference", lang, accuracy=reference_accuracy, margin=margin, why_not=why_not)
    return AccuracyThreshold(value, "single_reference", source, reference=reference_accuracy)


@kind("trusted_test_accuracy")
def trusted_test_accuracy(ctx: CheckContext) -> Observation:
    threshold = ctx.threshold  # decided once per batch (grader.judge.threshold), never here
    if threshold is None:
        return Observation(ERROR, None, None, "reference_accuracy_missing")
    value, calibration = threshold.value, threshold.calibration or {}
    if threshold.rule == "calibrated":
        expected = (f"≥ {value:.3f} (calibration {calibration.get('runs')} runs "
                    f"{calibration.get('mean', 0):.3f} ± {calibration.get('std', 0):.3f})")
    else:
        expected = f"≥ {value:.3f} (reference {threshold.reference:.3f})"
    ev = ctx.student_eval
    if ev is None or ev.accuracy is None:
        problem = (ev.problem if ev else None) or ""
        if problem in ("", "no_fit", "no_model"):  # internal codes, not words for the student
            return missing("no_model", expected, detail="")
        return missing("predict_failed", expected, detail=problem.removeprefix("predict_failed: "))
    return verdict(ev.accuracy >= value, round(ev.accuracy, 4), expected, "accuracy_low", threshold=value)
