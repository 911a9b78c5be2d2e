"""Trusted test accuracy: the grader's own test set, the student's saved model, predictions
computed in a separate process, accuracy computed here. Nothing the notebook printed or
returned is used.

One fresh (sandboxed) process predicts both parts of the test set at once: the public part, which
the notebook had as `x_test`, and the private part, which no sandbox ever sees. The score is the
accuracy on the private part. The two accuracies are compared by a one-sided two-proportion
z-test (pooled standard error): a model that never saw either part scores them alike, one trained
on the public part scores it higher (see `gap_statistic`; the bound is the spec's
`[integrity] gap_z`). The same process reads what the saved file says about the model
(grader.kernel.predict.model_facts).
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grader.evidence.reader import Evidence
from grader.i18n import LANGS, t
from grader.isolation.launch import KERNEL_DIR, KernelJob, Launcher

PREDICT_TIMEOUT_S = 300  # when there is no reference time to scale from (the reference run itself)
MAX_PREDICTIONS_BYTES = 50_000_000
MAX_FACTS_BYTES = 100_000
NUM_CLASSES = 10
FACT_TYPES = {"params_count": int, "layers": list, "bias_layers": int, "zero_bias_layers": int,
              "optimizer_iterations": int}


@dataclass
class ModelEvaluation:
    """Accuracy of one saved model on the grader's test set (or why there is none)."""

    fit: int | None
    accuracy: float | None = None  # on the private part: images the notebook never saw
    per_class: list[float] = field(default_factory=list)  # private part
    confusion: list[list[int]] = field(default_factory=list)  # private part
    input_scale: float = 1.0
    problem: str | None = None
    public_accuracy: float | None = None  # on the public part (the notebook's own x_test)
    n_public: int = 0
    n_private: int = 0
    gap_z: float | None = None  # (public − private accuracy) / pooled standard error
    predict_seconds: float | None = None  # wall time of the prediction process (import, load, predict)
    predict_timeout_s: float | None = None  # the limit it ran under
    predict_timed_out: bool = False  # stopped at that limit (a pathological model), reported as predict_failed
    model: dict[str, Any] = field(default_factory=dict)  # what the saved file says (model_facts)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def gap_statistic(correct_public: int, n_public: int, correct_private: int, n_private: int) -> float | None:
    """One-sided two-proportion z: (p_public − p_private) / sqrt(p(1−p)(1/n_public + 1/n_private)),
    p pooled. None when it is undefined (an empty part, or both parts all right or all wrong)."""
    if n_public <= 0 or n_private <= 0:
        return None
    pooled = (correct_public + correct_private) / (n_public + n_private)
    variance = pooled * (1.0 - pooled) * (1.0 / n_public + 1.0 / n_private)
    if variance <= 0.0:
        return None
    return round((correct_public / n_public - correct_private / n_private) / math.sqrt(variance), 3)


def predict_timeout(reference_seconds: float | None, *, min_s: float, factor: float, max_s: float = 180.0) -> float:
    """The limit for one model's prediction: `factor` × the reference model's own, within [min_s, max_s]."""
    if not reference_seconds or reference_seconds <= 0:
        return float(PREDICT_TIMEOUT_S)
    return round(min(float(max_s), max(float(min_s), float(factor) * reference_seconds)), 1)


def input_scale_for(evidence: Evidence, fit: dict[str, Any]) -> float:
    """Feed test images on the scale the model trained on (0–1 or 0–255).

    For a generator that is what it yielded (its first batch, after `rescale`), not what was
    passed to flow(): ImageDataGenerator(rescale=1/255) on raw pixels trains on 0–1.
    """
    summary = fit.get("train_x") or {}
    peak = summary.get("max")
    if fit.get("input", {}).get("kind") == "flow":
        flow = evidence.flow(fit["input"].get("flow")) or {}
        batch = (evidence.batch(flow.get("flow")) or {}).get("x") or {}
        rescale = ((evidence.datagen(flow.get("datagen")) or {}).get("params") or {}).get("rescale")
        peak = batch.get("max", (flow.get("x") or summary).get("max"))
        if not batch and isinstance(peak, (int, float)) and isinstance(rescale, (int, float)) and rescale:
            peak *= rescale
    return 1.0 if isinstance(peak, (int, float)) and peak > 1.5 else 1.0 / 255.0


def score_predictions(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, list[float], list[list[int]]]:
    if probabilities.ndim != 2 or len(probabilities) != len(labels):
        raise ValueError(f"predictions have shape {probabilities.shape}, expected ({len(labels)}, classes)")
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=int)
    np.add.at(confusion, (labels.astype(int), np.clip(predicted, 0, NUM_CLASSES - 1)), 1)
    per_class = (np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)).round(4).tolist()
    return float((predicted == labels).mean()), per_class, confusion.tolist()


async def evaluate_training_model(
    evidence: Evidence, *, x_test: np.ndarray, y_test: np.ndarray, launcher: Launcher, job: KernelJob,
    x_private: np.ndarray | None = None, y_private: np.ndarray | None = None,
    timeout_s: float = PREDICT_TIMEOUT_S,
) -> ModelEvaluation:
    fit = evidence.training_fit()
    if fit is None:
        return ModelEvaluation(fit=None, problem="no_fit")
    model = evidence.model_file(fit["fit"])
    if model is None:
        return ModelEvaluation(fit=fit["fit"], problem="no_model")
    scale = input_scale_for(evidence, fit)
    result = ModelEvaluation(fit=fit["fit"], input_scale=scale, predict_timeout_s=timeout_s)
    split = x_private is not None and y_private is not None and len(y_private) > 0
    images = np.concatenate([x_test, x_private]) if split else x_test
    started = time.monotonic()
    try:
        probabilities = await predict_in_subprocess(model, images, scale, launcher=launcher, job=job,
                                                    timeout_s=timeout_s, facts=result.model)
        if split:
            score_parts(result, probabilities, y_test, y_private)
        else:
            result.accuracy, result.per_class, result.confusion = score_predictions(probabilities, y_test)
    except PredictionTimeout as exc:
        result.predict_timed_out = True
        result.problem = f"predict_failed: {exc}"[:500]
    except (RuntimeError, ValueError, OSError) as exc:
        result.problem = f"predict_failed: {exc}"[:500]
    result.predict_seconds = round(time.monotonic() - started, 2)
    return result


def score_parts(result: ModelEvaluation, probabilities: np.ndarray, y_public: np.ndarray,
                y_private: np.ndarray) -> None:
    """The score from the private part; the public part only for the gap."""
    if probabilities.ndim != 2 or len(probabilities) != len(y_public) + len(y_private):
        raise ValueError(f"predictions have shape {probabilities.shape}, expected "
                         f"({len(y_public) + len(y_private)}, classes)")
    public, private = probabilities[:len(y_public)], probabilities[len(y_public):]
    result.accuracy, result.per_class, result.confusion = score_predictions(private, y_private)
    result.public_accuracy = score_predictions(public, y_public)[0] if len(y_public) else None
    result.n_public, result.n_private = len(y_public), len(y_private)
    correct_public = int((public.argmax(axis=1) == y_public).sum()) if len(y_public) else 0
    correct_private = int((private.argmax(axis=1) == y_private).sum())
    result.gap_z = gap_statistic(correct_public, len(y_public), correct_private, len(y_private))


class PredictionTimeout(RuntimeError):
    """The model's prediction ran past its limit and was stopped."""


async def predict_in_subprocess(
    model: Path, x_test: np.ndarray, scale: float, *, launcher: Launcher, job: KernelJob,
    timeout_s: float = PREDICT_TIMEOUT_S, facts: dict[str, Any] | None = None,
) -> np.ndarray:
    """Predict in a fresh process started through the launcher (the sandbox, when there is one).

    The process gets the model and the test images only, never the labels; the grader reads
    back a plain float array and checks its shape before trusting any of it. `facts`, when given,
    is filled with what the process read from the saved file (kept even when prediction fails).
    """
    folder = job.predict_dir
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    shutil.copyfile(model, folder / "model.keras", follow_symlinks=False)
    np.save(folder / "images.npy", x_test, allow_pickle=False)
    out, facts_file = folder / "out.npy", folder / "facts.json"
    argv = [sys.executable, str(KERNEL_DIR / "predict.py"), str(folder / "model.keras"),
            str(folder / "images.npy"), repr(scale), str(out), str(facts_file)]
    process = await asyncio.create_subprocess_exec(
        *launcher.command(argv, job), env=launcher.environment(job), cwd=str(folder),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, pass_fds=(),
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        launcher.kill_processes(job)  # whatever it started dies with it
        if facts is not None:
            facts.update(read_facts(facts_file))
        # Both languages: the problem is kept evidence, and the language is not part of the inputs.
        raise PredictionTimeout(" / ".join(t("predict.timed_out", lang, seconds=f"{timeout_s:.0f}")
                                           for lang in LANGS)) from None
    (job.work_dir / "predict.log").write_bytes(stderr[-200_000:])
    if facts is not None:
        facts.update(read_facts(facts_file))
    if process.returncode in (137, -9):  # SIGKILL: the job's memory cgroup (or a kill from outside)
        raise RuntimeError("the prediction was stopped (SIGKILL, exit 137): the model needs more memory than the "
                           "sandbox allows")
    if process.returncode != 0:
        lines = stderr.decode("utf-8", "replace").strip().splitlines()
        meaningful = [line for line in lines if "Error" in line or "error" in line] or lines[-1:] or [""]
        raise RuntimeError(f"model could not be loaded or run (exit {process.returncode}): {meaningful[-1][:300]}")
    if not out.is_file() or out.is_symlink() or out.stat().st_size > MAX_PREDICTIONS_BYTES:
        raise RuntimeError("no usable predictions were written")
    probabilities = np.load(out, allow_pickle=False)
    if probabilities.dtype.kind != "f" or probabilities.shape[0] != len(x_test):
        raise ValueError(f"predictions have dtype {probabilities.dtype} and shape {probabilities.shape}")
    return probabilities


def read_facts(path: Path) -> dict[str, Any]:
    """The predictor's model facts, as data: known keys of the expected types only."""
    if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_FACTS_BYTES:
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    facts = {key: raw[key] for key, kind in FACT_TYPES.items()
             if isinstance(raw.get(key), kind) and not isinstance(raw.get(key), bool)}
    if "layers" in facts:
        facts["layers"] = [str(name)[:60] for name in facts["layers"][:64]]
    return facts
