"""Preprocessing and data hygiene: input shape and scale, the split, no test images in training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from grader.checks import PASS, CheckContext, DatasetHashes, Observation, kind, missing, verdict
from grader.checks.generator import assignment_flow
from grader.evidence import Evidence


def _training_images(evidence: Evidence) -> dict[str, Any] | None:
    """Summary of the images fed to the assignment's generator (the preprocessed training set)."""
    flow = assignment_flow(evidence)
    return (flow or {}).get("x")


def _per_sample(summary: dict[str, Any] | None) -> list[int] | None:
    shape = (summary or {}).get("shape")
    return list(shape[1:]) if isinstance(shape, list) and shape else None


@kind("input_shape")
def input_shape(ctx: CheckContext) -> Observation:
    """Each image's shape, e.g. (28, 28, 1): how many images were flowed is not the question."""
    expected = _per_sample(_training_images(ctx.reference))
    summary = _training_images(ctx.student)
    if summary is None:
        return missing("no_flow", expected)
    actual = _per_sample(summary)
    return verdict(actual == expected, actual, expected, "shape_differs")


def _yielded(evidence: Evidence, flow: dict[str, Any]) -> dict[str, Any] | None:
    """Value range of what the generator yields: its first batch (after `rescale`), else its input × rescale."""
    batch = evidence.batch(flow.get("flow"))
    if batch and batch.get("x"):
        x = batch["x"]
        return {"min": x.get("min"), "max": x.get("max"), "dtype": x.get("dtype"), "from": "batch"}
    x = flow.get("x") or {}
    rescale = ((evidence.datagen(flow.get("datagen")) or {}).get("params") or {}).get("rescale")
    low, high, dtype = x.get("min"), x.get("max"), x.get("dtype")
    if isinstance(rescale, (int, float)) and not isinstance(rescale, bool) and rescale and \
            isinstance(low, (int, float)) and isinstance(high, (int, float)):
        low, high, dtype = low * rescale, high * rescale, "float32"  # flow() casts to float32 first
    return {"min": low, "max": high, "dtype": dtype, "from": "input"} if x else None


def _in_unit_range(values: dict[str, Any]) -> bool:
    low, high = values.get("min"), values.get("max")
    return (isinstance(low, (int, float)) and isinstance(high, (int, float))
            and low >= 0.0 and 0.5 < high <= 1.0 + 1e-6 and str(values.get("dtype", "")).startswith("float"))


def _judged_flows(evidence: Evidence) -> list[dict[str, Any]]:
    """The assignment's flow and the flow that fed the counted fit (once each)."""
    fit = evidence.training_fit()
    flows = [assignment_flow(evidence), evidence.flow(((fit or {}).get("input") or {}).get("flow"))]
    unique: list[dict[str, Any]] = []
    for flow in flows:
        if flow and all(flow.get("flow") != f.get("flow") for f in unique):
            unique.append(flow)
    return unique


@kind("input_scaled")
def input_scaled(ctx: CheckContext) -> Observation:
    """What the generator yields is in 0–1: pixels / 255 beforehand, or `rescale=1/255` in the generator.

    Judged on the assignment's generator and the one the model trained on: floats in [0, 1]
    reaching above 0.5 (so not scaled twice).
    """
    expected = {"min": 0.0, "max": 1.0, "dtype": "float"}
    flows = _judged_flows(ctx.student)
    if not flows:
        return missing("no_flow", expected)
    seen = {f"flow #{flow['flow']}": values for flow in flows if (values := _yielded(ctx.student, flow))}
    if not seen:
        return missing("no_flow", expected)
    bad = {name: values for name, values in seen.items() if not _in_unit_range(values)}
    shown = next(iter(bad.values())) if bad else next(iter(seen.values()))
    actual = {"min": shown.get("min"), "max": shown.get("max"), "dtype": shown.get("dtype")}
    return verdict(not bad, actual, expected, "not_scaled")


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


def _overlap(evidence: Evidence, test_hashes: np.ndarray, known: Any = None) -> int | None:
    """How many test images were in training or validation data. With the grader's own images
    (`known`, grader.known_data): distinct public test images, exact or near copies (±1/255,
    rescaled), over every training call (each fit, train_on_batch); otherwise exact copies in the
    counted fit."""
    if known is not None:
        from grader.known_data import public_images_in

        touched = public_images_in(evidence, known, validation=True)
        return None if touched is None else len(touched)
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
    reference = _overlap(ctx.reference, ctx.test_hashes, ctx.known) or 0
    tolerance = int(ctx.params.get("tolerance", 0))
    expected = f"≤ {reference + tolerance}"
    actual = _overlap(ctx.student, ctx.test_hashes, ctx.known)
    if actual is None:
        return missing("no_fit", expected)
    return verdict(actual <= reference + tolerance, actual, expected, "test_leak", count=actual)


# ---------------------------------------------------------------- which data set
def load_dataset_hashes(data_dir: Path) -> DatasetHashes | None:
    """Source hashes of the grader's own training and test images (whatever data set is in force);
    None when they cannot be read (the check then says so)."""
    from grader.data import DATA_FILES, read_idx
    from grader.errors import GraderError
    from grader.kernel.grader_kernel import source_hashes

    try:
        return DatasetHashes(train=source_hashes(read_idx(data_dir / DATA_FILES[0])),
                             test=source_hashes(read_idx(data_dir / DATA_FILES[2])))
    except (GraderError, OSError):
        return None


def _loaded_datasets(evidence: Evidence) -> list[str]:
    return sorted({str(e.get("dataset")) for e in evidence.of("load_data") if e.get("dataset")})


@kind("data_source")
def data_source(ctx: CheckContext) -> Observation:
    """The images flowed are Fashion-MNIST: their hashes are in the grader's own copy.

    Hashes survive per-image rescaling (x/255, standardisation), so preprocessing does not matter;
    which copy the images came from does not either (a CSV copy holds the same pictures). MNIST
    digits or any other images match (almost) nothing. Judged on the assignment's generator and
    the one the model trained on; the report says what was seen.
    """
    min_fraction = float(ctx.params.get("min_fraction", 0.9))
    expected = f"Fashion-MNIST ≥ {min_fraction:.0%}"
    if ctx.dataset_hashes is None:
        return missing("no_dataset_copy", expected)
    flows = _judged_flows(ctx.student)
    if not flows:
        return missing("no_flow", expected)
    hashes = [h for flow in flows if (h := ctx.student.arrays(flow.get("x_source")).get("hashes")) is not None]
    if not hashes:
        return missing("no_source_hashes", expected)
    flowed = np.unique(np.concatenate(hashes))
    in_train = float(np.isin(flowed, ctx.dataset_hashes.train).mean())
    in_any = float(np.isin(flowed, np.concatenate([ctx.dataset_hashes.train, ctx.dataset_hashes.test])).mean())
    loaded = _loaded_datasets(ctx.student)
    if in_any >= min_fraction:
        seen = "source_fashion_mnist_train" if in_train >= min_fraction else "source_fashion_mnist_with_test"
        return Observation(PASS, f"Fashion-MNIST {in_any:.0%}", expected, seen,
                           {"share": f"{in_any:.0%}", "train": f"{in_train:.0%}"})
    seen = "source_mnist" if "mnist" in loaded else ("source_keras_other" if [d for d in loaded if d != "fashion_mnist"]
                                                       else "source_other")
    other = ", ".join(d for d in loaded if d != "fashion_mnist")
    return verdict(False, f"Fashion-MNIST {in_any:.0%}" + (f" ({other})" if other else ""), expected, seen,
                   share=f"{in_any:.0%}", dataset=other)
