"""ImageDataGenerator.flow(): length, batch shape, one-hot labels, augmentation applied."""

from __future__ import annotations

from typing import Any

import numpy as np

from grader.checks import CheckContext, Observation, kind, missing, verdict
from grader.evidence import Evidence


def _samples(summary: dict[str, Any] | None) -> int | None:
    shape = (summary or {}).get("shape") or []
    return shape[0] if shape and isinstance(shape[0], int) else None


def assignment_flow(evidence: Evidence) -> dict[str, Any] | None:
    """The flow() the assignment's generator questions are about, found the same way in every run.

    Real notebooks often start with a demo: one image flowed with batch_size=1 to show what the
    augmentation does. The assignment asks about the generator over the training images with
    their labels, so, in order:
      1. the first flow with labels over as many images as `load_data` gave for training;
      2. the first flow with labels over more than one image;
      3. the flow that fed the counted `fit`;
      4. the first flow.
    The reference run is searched with the same rule, so expected values stay comparable.
    """
    flows = evidence.of("flow")
    if not flows:
        return None
    labelled = [f for f in flows if f.get("y") is not None and (_samples(f.get("x")) or 0) > 1]
    loaded = evidence.first("load_data")
    n_train = _samples((loaded or {}).get("x_train"))
    for candidates in ([f for f in labelled if n_train and _samples(f.get("x")) == n_train], labelled):
        if candidates:
            return candidates[0]
    fit = evidence.training_fit()
    fed = evidence.flow(((fit or {}).get("input") or {}).get("flow"))
    return fed or flows[0]


_first_flow = assignment_flow  # the name the checks below grew up with


def no_batch(evidence: Evidence, expected: Any) -> Observation:
    """No batch of the assignment's flow: say whether making one failed (and how) or was never asked."""
    flow = assignment_flow(evidence) or {}
    failed = next((e for e in evidence.of("batch_error") if e.get("flow") == flow.get("flow")), None)
    if failed is not None:
        return missing("batch_failed", expected, error=str(failed.get("error", ""))[:200])
    return missing("no_batch", expected)


@kind("flow_length")
def flow_length(ctx: CheckContext) -> Observation:
    expected = (_first_flow(ctx.reference) or {}).get("length")
    flow = _first_flow(ctx.student)
    if flow is None:
        return missing("no_flow", expected)
    return verdict(flow.get("length") == expected, flow.get("length"), expected, "length_differs",
                   batch_size=flow.get("batch_size"))


def _batch_shapes(evidence: Evidence) -> dict[str, Any] | None:
    flow = _first_flow(evidence)
    batch = evidence.batch(flow["flow"]) if flow else None
    if batch is None:
        return None
    return {"x": (batch.get("x") or {}).get("shape"), "y": (batch.get("y") or {}).get("shape")}


@kind("first_batch_shape")
def first_batch_shape(ctx: CheckContext) -> Observation:
    expected = _batch_shapes(ctx.reference)
    if _first_flow(ctx.student) is None:
        return missing("no_flow", expected)
    actual = _batch_shapes(ctx.student)
    if actual is None:
        return no_batch(ctx.student, expected)
    return verdict(actual == expected, actual, expected, "shape_differs")


@kind("first_batch_one_hot")
def first_batch_one_hot(ctx: CheckContext) -> Observation:
    """Labels of the first batch are one-hot rows of the right width, unchanged by augmentation."""
    ref_flow = _first_flow(ctx.reference)
    ref_batch = ctx.reference.batch(ref_flow["flow"]) if ref_flow else None
    classes = ((ref_batch or {}).get("y") or {}).get("shape", [None, None])[-1]
    expected = {"one_hot": True, "classes": classes}
    flow = _first_flow(ctx.student)
    if flow is None:
        return missing("no_flow", expected)
    batch = ctx.student.batch(flow["flow"])
    if batch is None:
        return no_batch(ctx.student, expected)
    y = batch.get("y") or {}
    shape = y.get("shape") or []
    actual = {"one_hot": bool(y.get("one_hot")), "classes": shape[-1] if len(shape) == 2 else None,
              "shape": shape}
    if not actual["one_hot"] or actual["classes"] != classes:
        return verdict(False, actual, expected, "not_one_hot")
    arrays = ctx.student.arrays(batch.get("file"))
    if "y" in arrays and "y_orig" in arrays and not np.array_equal(arrays["y"], arrays["y_orig"]):
        return verdict(False, actual, expected, "labels_changed")
    return verdict(True, actual, expected)


@kind("augmentation_applied")
def augmentation_applied(ctx: CheckContext) -> Observation:
    """Some generator configured with `param == value` produced images that differ from the originals."""
    param, value = ctx.params["param"], ctx.params["value"]
    min_changed = float(ctx.params.get("min_changed_fraction", 0.01))
    expected = {param: value, "images_changed": True}
    datagens = [d["datagen"] for d in ctx.student.of("datagen") if d.get("params", {}).get(param) == value]
    if not datagens:
        seen = [d.get("params", {}).get(param) for d in ctx.student.of("datagen")]
        return verdict(False, {param: [s for s in seen if s is not None] or None}, expected, "augmentation_not_configured",
                       param=param, value=value)
    flows = [f for f in ctx.student.of("flow") if f.get("datagen") in datagens]
    batches = [b for f in flows if (b := ctx.student.batch(f["flow"])) is not None]
    if not batches:
        return missing("no_augmented_batch", expected, param=param)
    changed = max(float(b.get("changed_fraction") or 0.0) for b in batches)
    actual = {param: value, "images_changed": changed >= min_changed, "changed_fraction": round(changed, 3)}
    return verdict(changed >= min_changed, actual, expected, "images_unchanged")
