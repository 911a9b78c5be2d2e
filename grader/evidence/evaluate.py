"""Trusted test accuracy: the grader's own test set, the student's saved model, predictions
computed in a separate process, accuracy computed here. Nothing the notebook printed or
returned is used.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grader.evidence.reader import Evidence
from grader.isolation.launch import KERNEL_DIR, KernelJob, Launcher

PREDICT_TIMEOUT_S = 300
MAX_PREDICTIONS_BYTES = 50_000_000
NUM_CLASSES = 10


@dataclass
class ModelEvaluation:
    """Accuracy of one saved model on the grader's test set (or why there is none)."""

    fit: int | None
    accuracy: float | None = None
    per_class: list[float] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    input_scale: float = 1.0
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def input_scale_for(evidence: Evidence, fit: dict[str, Any]) -> float:
    """Feed test images on the scale the student trained on (0–1 or 0–255)."""
    summary = fit.get("train_x") or {}
    if fit.get("input", {}).get("kind") == "flow":
        flow = evidence.flow(fit["input"].get("flow")) or {}
        summary = flow.get("x") or summary
    peak = summary.get("max")
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
    evidence: Evidence, *, x_test: np.ndarray, y_test: np.ndarray, launcher: Launcher, job: KernelJob
) -> ModelEvaluation:
    fit = evidence.training_fit()
    if fit is None:
        return ModelEvaluation(fit=None, problem="no_fit")
    model = evidence.model_file(fit["fit"])
    if model is None:
        return ModelEvaluation(fit=fit["fit"], problem="no_model")
    scale = input_scale_for(evidence, fit)
    result = ModelEvaluation(fit=fit["fit"], input_scale=scale)
    try:
        probabilities = await predict_in_subprocess(model, x_test, scale, launcher=launcher, job=job)
        result.accuracy, result.per_class, result.confusion = score_predictions(probabilities, y_test)
    except (RuntimeError, ValueError, OSError) as exc:
        result.problem = f"predict_failed: {exc}"[:500]
    return result


async def predict_in_subprocess(
    model: Path, x_test: np.ndarray, scale: float, *, launcher: Launcher, job: KernelJob
) -> np.ndarray:
    """Predict in a fresh process started through the launcher (the sandbox, when there is one).

    The process gets the model and the test images only, never the labels; the grader reads
    back a plain float array and checks its shape before trusting any of it.
    """
    folder = job.predict_dir
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    shutil.copyfile(model, folder / "model.keras", follow_symlinks=False)
    np.save(folder / "images.npy", x_test, allow_pickle=False)
    out = folder / "out.npy"
    argv = [sys.executable, str(KERNEL_DIR / "predict.py"), str(folder / "model.keras"),
            str(folder / "images.npy"), repr(scale), str(out)]
    process = await asyncio.create_subprocess_exec(
        *launcher.command(argv, job), env=launcher.environment(job), cwd=str(folder),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, pass_fds=(),
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=PREDICT_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError("prediction timed out") from None
    (job.work_dir / "predict.log").write_bytes(stderr[-200_000:])
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
