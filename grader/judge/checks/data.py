"""Preprocessing and data hygiene: input shape and scale, the split, no test images in training."""

from __future__ import annotations

from typing import Any

import numpy as np

from grader.judge.checks import CheckContext, Observation, kind, missing, verdict
from grader.evidence.reader import Evidence


def _training_images(evidence: Evidence) -> dict[str, Any] | None:
    """Summary of the images fed to the first generator (the preprocessed training set)."""
    flow = evidence.first("flow")
    return (flow or {}).get("x")


@kind("input_shape")
def input_shape(ctx: CheckContext) -> Observation:
    expected = (_training_images(ctx.reference) or {}).get("shape")
    summary = _training_images(ctx.student)
    if summary is None:
        return missing("no_flow", expected)
    return verdict(summary.get("shape") == expected, summary.get("shape"), expected, "shape_differs")


@kind("input_scaled")
def input_scaled(ctx: CheckContext) -> Observation:
    """Pixels divided by 255: a float array whose values lie in [0, 1] and reach above 0.5."""
    expected = {"min": 0.0, "max": 1.0, "dtype": "float"}
    summary = _training_images(ctx.student)
    if summary is None:
        return missing("no_flow", expected)
    low, high = summary.get("min"), summary.get("max")
    actual = {"min": low, "max": high, "dtype": summary.get("dtype")}
    ok = (
        isinstance(low, (int, float)) and isinstance(high, (int, float))
        and low >= 0.0 and 0.5 < high <= 1.0 and str(summary.get("dtype", "")).startswith("float")
    )
    return verdict(ok, actual, expected, "not_scaled")


def _split_sizes(evidence: Evidence) -> list[int] | None:
    split = evidence.first("split")
    if split is None:
        return None
    return [(o or {}).get("shape", [None])[0] for o in split.get("outputs", [])]


@kind("split_sizes")
def split_sizes(ctx: CheckContext) -> Observation:
    expected = _split_sizes(ctx.reference)
    actual = _split_sizes(ctx.student)
    if actual is None:
        return missing("no_split", expected)
    return verdict(actual == expected, actual, expected, "split_differs")


def _overlap(evidence: Evidence, test_hashes: np.ndarray) -> int | None:
    """How many training and validation images of the counted fit are test images."""
    fit = evidence.training_fit()
    if fit is None:
        return None
    found = [evidence.arrays(fit.get(key)).get("hashes") for key in ("train_hashes", "validation_hashes")]
    found = [h for h in found if h is not None]
    if not found:
        return None
    return int(np.isin(np.concatenate(found), test_hashes).sum())


@kind("no_test_overlap")
def no_test_overlap(ctx: CheckContext) -> Observation:
    """Training images must not include test images (beyond what the reference itself has)."""
    if ctx.test_hashes is None:
        return missing("no_test_set")
    reference = _overlap(ctx.reference, ctx.test_hashes) or 0
    tolerance = int(ctx.params.get("tolerance", 0))
    expected = f"≤ {reference + tolerance}"
    actual = _overlap(ctx.student, ctx.test_hashes)
    if actual is None:
        return missing("no_fit", expected)
    return verdict(actual <= reference + tolerance, actual, expected, "test_leak", count=actual)
