"""Expected and actual values as short phrases a beginner can read, in Japanese and English.

The check kinds (grader.judge.checks) keep their values as data (result.json is a contract); this is
the one place that says them in words, with units:

    first_batch_shape  {"x": [16, 28, 28, 1], "y": [16, 10]}  → 「(16, 28, 28, 1) の画像と (16, 10) のラベル」
    first_batch_one_hot {"one_hot": false, "shape": [16]}     → 「整数ラベル (16,)」
    written_answer     "≥ 30"                                 → 「30 文字以上」
    flow_length        3750                                   → 「3,750 バッチ」

A value of a kind it does not know (or a result.json older than `CheckResult.kind`) is still shown
readably (`plain`): tuples for shapes, "name: value" pairs, never JSON braces.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from grader.i18n import listing, t
from grader.results import CheckResult

Phrase = Callable[[Any, str], str]
AT_LEAST = re.compile(r"^\s*[≥>]=?\s*([0-9.]+)\s*(%?)\s*(?:\((.*)\))?\s*$")
AT_MOST = re.compile(r"^\s*[≤<]=?\s*([0-9.]+)\s*$")
PERCENT = re.compile(r"^\s*([0-9.]+)\s*%\s*$")
SOURCE = re.compile(r"^Fashion-MNIST\s+(≥\s*)?([0-9.]+)%(?:\s*\((.*)\))?$")
FLOW = re.compile(r"^flow #(\d+) \(datagen #(\d+)\)$")
CALIBRATION = re.compile(r"^calibration (\d+) runs ([0-9.]+) ± ([0-9.]+)$")
REFERENCE = re.compile(r"^reference ([0-9.]+)$")


# ---------------------------------------------------------------- readable forms of anything
def number(value: Any) -> str:
    """3750 → "3,750"; 0.5 → "0.5"; bool/None/other as `plain`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return plain(value, "ja")
    return f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"


def shape(value: Any) -> str:
    """[16, 28, 28, 1] → "(16, 28, 28, 1)"; [16] → "(16,)" (how numpy prints shapes)."""
    if not isinstance(value, (list, tuple)):
        return plain(value, "ja")
    inner = ", ".join("?" if v is None else str(v) for v in value)
    return f"({inner},)" if len(value) == 1 else f"({inner})"


def plain(value: Any, lang: str) -> str:
    """Any JSON value, compactly and without braces or quotes."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return t("phrase.yes" if value else "phrase.no", lang)
    if isinstance(value, (int, float)):
        return number(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        if value and all((isinstance(v, int) and not isinstance(v, bool)) or v is None for v in value):
            return shape(value)
        return listing([plain(v, lang) for v in value], lang) if value else t("phrase.none", lang)
    if isinstance(value, dict):
        return listing([f"{k}: {plain(v, lang)}" for k, v in value.items()], lang)
    return str(value)


def accuracy(value: Any, lang: str) -> str:
    """0.903 → "0.903（90.3%）" — the ratio beside the percentage beginners read."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—"
    return t("phrase.accuracy", lang, ratio=f"{value:.3f}", percent=f"{value:.1%}")


def _at_least(value: Any) -> tuple[str, str, str] | None:
    """"≥ 30" → ("30", "", ""); "≥ 95%" → ("95", "%", "");
    "≥ 0.700 (reference 0.850)" → ("0.700", "", "reference 0.850")."""
    match = AT_LEAST.match(value) if isinstance(value, str) else None
    return (match.group(1), match.group(2), match.group(3) or "") if match else None


# ---------------------------------------------------------------- each check kind
def _input_shape(value: Any, lang: str) -> str:
    return t("phrase.image_shape", lang, shape=shape(value)) if isinstance(value, list) else plain(value, lang)


def _input_scaled(value: Any, lang: str) -> str:
    if not isinstance(value, dict):
        return plain(value, lang)
    low, high, dtype = value.get("min"), value.get("max"), value.get("dtype") or "?"
    return t("phrase.value_range", lang, low=number(low), high=number(high), dtype=dtype)


def _data_source(value: Any, lang: str) -> str:
    match = SOURCE.match(value) if isinstance(value, str) else None
    if not match:
        return plain(value, lang)
    at_least, share, other = match.groups()
    text = t("phrase.source_at_least" if at_least else "phrase.source_share", lang, share=share)
    return text + (t("phrase.source_loaded", lang, datasets=other) if other else "")


def _flow_length(value: Any, lang: str) -> str:
    return t("phrase.batches", lang, count=number(value)) if isinstance(value, int) else plain(value, lang)


def _batch_shape(value: Any, lang: str) -> str:
    if not isinstance(value, dict) or "x" not in value:
        return plain(value, lang)
    if value.get("y") is None:
        return t("phrase.images_no_labels", lang, x=shape(value.get("x")))
    return t("phrase.images_and_labels", lang, x=shape(value.get("x")), y=shape(value.get("y")))


def _one_hot(value: Any, lang: str) -> str:
    if not isinstance(value, dict):
        return plain(value, lang)
    if "shape" not in value:  # the expected side: what the labels should be
        return t("phrase.one_hot_classes", lang, classes=number(value.get("classes")))
    key = "phrase.one_hot_labels" if value.get("one_hot") else (
        "phrase.integer_labels" if len(value.get("shape") or []) == 1 else "phrase.other_labels")
    return t(key, lang, shape=shape(value.get("shape")))


def _augmentation(value: Any, lang: str) -> str:
    if not isinstance(value, dict):
        return plain(value, lang)
    params = {k: v for k, v in value.items() if k not in ("images_changed", "changed_fraction")}
    parts = []
    for name, setting in params.items():
        if setting is None or setting == []:
            parts.append(t("phrase.param_not_set", lang, param=name))
        elif isinstance(setting, list):
            parts.append(listing([f"{name}={plain(s, lang)}" for s in setting], lang))
        else:
            parts.append(f"{name}={plain(setting, lang)}")
    if "changed_fraction" in value:
        parts.append(t("phrase.images_changed_share", lang, share=f"{float(value['changed_fraction']):.0%}"))
    elif value.get("images_changed"):
        parts.append(t("phrase.images_change", lang))
    return t("phrase.comma", lang).join(parts)


def _split(value: Any, lang: str) -> str:
    if not isinstance(value, list):
        return plain(value, lang)
    return t("phrase.split_sizes", lang, sizes=" / ".join(number(v) for v in value))


def _params(value: Any, lang: str) -> str:
    return t("phrase.parameters", lang, count=number(value)) if isinstance(value, int) else plain(value, lang)


def _augmented_flow(value: Any, lang: str) -> str:
    if value == "flow() of an augmenting ImageDataGenerator":  # the expected side, as the check writes it
        return t("phrase.augmenting_flow", lang)
    match = FLOW.match(value) if isinstance(value, str) else None
    if match:
        return t("phrase.flow_number", lang, flow=match.group(1), datagen=match.group(2))
    if isinstance(value, str) and value:
        return t("phrase.fit_input", lang, kinds=value)
    return plain(value, lang)


def _steps(value: Any, lang: str) -> str:
    if value is None:
        return t("phrase.not_given", lang)
    return t("phrase.steps", lang, count=number(value)) if isinstance(value, (int, float)) else plain(value, lang)


def _validation(value: Any, lang: str) -> str:
    if value is None:
        return t("phrase.not_given", lang)
    return t("phrase.images", lang, count=number(value)) if isinstance(value, int) else plain(value, lang)


def _overlap(value: Any, lang: str) -> str:
    match = AT_MOST.match(value) if isinstance(value, str) else None
    if match:
        return t("phrase.test_images_at_most", lang, count=match.group(1))
    return t("phrase.test_images", lang, count=number(value)) if isinstance(value, int) else plain(value, lang)


def _evaluated(value: Any, lang: str) -> str:
    bound = _at_least(value)
    if bound:
        return t("phrase.test_share_at_least", lang, share=bound[0] + bound[1])
    match = PERCENT.match(value) if isinstance(value, str) else None
    return t("phrase.test_share", lang, share=match.group(1) + "%") if match else plain(value, lang)


def _test_accuracy(value: Any, lang: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return accuracy(value, lang)
    bound = _at_least(value)
    if not bound:
        return plain(value, lang)
    text = t("phrase.at_least", lang, value=accuracy(float(bound[0]), lang))
    calibration, reference = CALIBRATION.match(bound[2]), REFERENCE.match(bound[2])
    if calibration:
        runs, mean, std = calibration.groups()
        text += t("phrase.calibrated_from", lang, runs=runs, mean=mean, std=std)
    elif reference:
        text += t("phrase.reference_was", lang, accuracy=accuracy(float(reference.group(1)), lang))
    return text


def _answer(value: Any, lang: str) -> str:
    bound = _at_least(value)
    if bound:
        return t("phrase.characters_at_least", lang, count=bound[0])
    return t("phrase.characters", lang, count=number(value)) if isinstance(value, int) else plain(value, lang)


def _keras_apis(value: Any, lang: str) -> str:
    if value == [] or value is None:
        return t("phrase.none", lang)
    return listing([str(v) for v in value], lang) if isinstance(value, list) else plain(value, lang)


KINDS: dict[str, Phrase] = {
    "input_shape": _input_shape, "input_scaled": _input_scaled, "data_source": _data_source,
    "flow_length": _flow_length, "first_batch_shape": _batch_shape, "first_batch_one_hot": _one_hot,
    "augmentation_applied": _augmentation, "split_sizes": _split, "model_params": _params,
    "fit_uses_augmented_flow": _augmented_flow, "fit_steps_per_epoch": _steps,
    "fit_validation_data": _validation, "no_test_overlap": _overlap, "evaluated_on_test_set": _evaluated,
    "trusted_test_accuracy": _test_accuracy, "written_answer": _answer, "keras3_api": _keras_apis,
}


def guessed_kind(value: Any) -> str:
    """For results written before checks carried their kind: the kinds whose values look unlike any other."""
    if isinstance(value, dict):
        if "x" in value and "y" in value:
            return "first_batch_shape"
        if "one_hot" in value:
            return "first_batch_one_hot"
        if {"min", "max"} <= value.keys():
            return "input_scaled"
        if "images_changed" in value:
            return "augmentation_applied"
    if isinstance(value, str) and (SOURCE.match(value) or FLOW.match(value)):
        return "data_source" if SOURCE.match(value) else "fit_uses_augmented_flow"
    return ""


def phrase(value: Any, kind: str, lang: str) -> str:
    """`value` (a check's expected or actual) as a short phrase for a reader of `lang`."""
    if value is None:
        return "—"
    say = KINDS.get(kind or guessed_kind(value))
    try:
        return say(value, lang) if say else plain(value, lang)
    except (TypeError, ValueError, KeyError, IndexError):  # an odd value is shown plainly, never a failed report
        return plain(value, lang)


def expected_text(check: CheckResult, lang: str) -> str:
    return phrase(check.expected, getattr(check, "kind", ""), lang)


def actual_text(check: CheckResult, lang: str) -> str:
    return phrase(check.actual, getattr(check, "kind", ""), lang)
