"""The trusted evaluation's process, started early: one per student, one model per process.

Importing Keras (TensorFlow) takes 3–5 s; predicting the test set about as long again. So the
predictor is started when the student's notebook starts (`start_predictor`): it imports Keras and
reads the test images while the notebook runs, then blocks on its stdin. After the kernel is stopped
and the model copied out of the student's reach, `hand_over` copies that file into the predictor's
inbox and writes its path on stdin; the predictor loads it, predicts, writes its results and exits.

Isolation is that of the process it replaces, and more: the predictor is a job of its own through the
same Launcher seam (its own sandbox uid, memory cgroup and size-limited folder, never the student's),
so the student's processes, while they run, can neither see nor write anything it reads, and killing
the student's job after execution leaves it alone. Its inbox (test images, then the one model) is
written by the grader and only readable by the predictor's uid. It has seen no other student's model:
it is started per student and ends after one model (or on `close_predictor`, whatever happened).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from grader.i18n import LANGS, t
from grader.isolation.launch import KERNEL_DIR, KernelJob, Launcher

# A waiting predictor's memory next to its student's kernel (measured: 235–320 MiB charged to its own
# memory cgroup, 570–670 MiB RSS with the shared libraries); the default number of jobs counts it.
WAITING_MB = 512
MAX_PREDICTIONS_BYTES = 50_000_000
MAX_FACTS_BYTES = 100_000
MAX_LOG_BYTES = 200_000
FACT_TYPES = {"params_count": int, "layers": list, "bias_layers": int, "zero_bias_layers": int,
              "optimizer_iterations": int}
# What the process says about itself: models it loaded (always 1), time to get ready (wall, CPU), CPU for the model
PROCESS_TYPES = {"models_loaded": int, "ready_seconds": float, "ready_cpu_seconds": float,
                 "evaluate_seconds": float, "evaluate_cpu_seconds": float}


class PredictionTimeout(RuntimeError):
    """The model's prediction ran past its limit and was stopped."""


@dataclass
class Predictor:
    """A started predictor: its job (folders, uid, cgroup), its process, its log."""

    job: KernelJob
    launcher: Launcher
    process: asyncio.subprocess.Process
    started: float
    n_images: int
    handed_at: float | None = None  # when the model was handed over (None: never)
    info: dict[str, Any] = field(default_factory=dict)  # what it said about itself (models_loaded, ready_seconds)

    @property
    def inbox(self) -> Path:
        """Written by the grader only; the predictor's uid may read it."""
        return self.job.work_dir / "inbox"

    @property
    def log_path(self) -> Path:
        return self.job.work_dir / "predict.log"


async def start_predictor(images: np.ndarray, *, launcher: Launcher, work_root: Path, data_dir: Path,
                          threads: int, memory_mb: int) -> Predictor:
    """A fresh sandboxed predictor that gets ready (Keras imported, images read) and waits for one model."""
    job = KernelJob(work_dir=Path(tempfile.mkdtemp(prefix="predictor-", dir=work_root)), data_dir=data_dir,
                    threads=threads, memory_mb=memory_mb)
    launcher.setup_job(job)
    inbox = job.work_dir / "inbox"
    inbox.mkdir(mode=0o755)
    np.save(inbox / "images.npy", images, allow_pickle=False)
    argv = [sys.executable, str(KERNEL_DIR / "predict.py"), str(inbox / "images.npy"), str(job.predict_dir)]
    try:
        with open(job.work_dir / "predict.log", "wb") as log:  # a file, not a pipe: nobody reads it while it waits
            process = await asyncio.create_subprocess_exec(
                *launcher.command(argv, job), env=launcher.environment(job), cwd=str(job.cwd),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=log, pass_fds=())
    except BaseException:
        launcher.teardown_job(job)
        shutil.rmtree(job.work_dir, ignore_errors=True)
        raise
    return Predictor(job, launcher, process, time.monotonic(), len(images))


async def hand_over(predictor: Predictor, model: Path, scale: float, *, timeout_s: float,
                    facts: dict[str, Any]) -> np.ndarray:
    """Give the predictor its one model and wait (at most timeout_s) for the class probabilities.

    `model` is the grader's copy, made after the student's kernel was stopped; it is copied once more
    into the inbox, so the file the predictor reads is fixed before it is named. `facts` is filled
    with what the predictor read from the saved file (kept even when prediction fails)."""
    target = predictor.inbox / "model.keras"
    shutil.copyfile(model, target, follow_symlinks=False)
    os.chmod(target, 0o644)
    predictor.handed_at = time.monotonic()
    await send_line(predictor, json.dumps({"model": str(target), "scale": scale}))
    try:
        await asyncio.wait_for(predictor.process.wait(), timeout=timeout_s)
    except TimeoutError:
        stop(predictor)
        facts.update(read_facts(predictor))
        # Both languages: the problem is kept evidence, and the language is not part of the inputs.
        raise PredictionTimeout(" / ".join(t("predict.timed_out", lang, seconds=f"{timeout_s:.0f}")
                                           for lang in LANGS)) from None
    facts.update(read_facts(predictor))
    return read_predictions(predictor)


async def send_line(predictor: Predictor, line: str) -> None:
    stdin = predictor.process.stdin
    assert stdin is not None
    try:
        stdin.write(line.encode("utf-8") + b"\n")
        await stdin.drain()
        stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # it died while getting ready: its exit status and log say why


def read_predictions(predictor: Predictor) -> np.ndarray:
    """The predictions, checked: exit status, a plain float array of the right length."""
    code = predictor.process.returncode
    if code in (137, -9):  # SIGKILL: the predictor's memory cgroup (or a kill from outside)
        raise RuntimeError("the prediction was stopped (SIGKILL, exit 137): the model needs more memory than the "
                           "sandbox allows")
    if code != 0:
        lines = log_tail(predictor).decode("utf-8", "replace").strip().splitlines()
        meaningful = [line for line in lines if "Error" in line or "error" in line] or lines[-1:] or [""]
        raise RuntimeError(f"model could not be loaded or run (exit {code}): {meaningful[-1][:300]}")
    out = predictor.job.predict_dir / "out.npy"
    if not out.is_file() or out.is_symlink() or out.stat().st_size > MAX_PREDICTIONS_BYTES:
        raise RuntimeError("no usable predictions were written")
    probabilities = np.load(out, allow_pickle=False)
    if probabilities.dtype.kind != "f" or probabilities.shape[0] != predictor.n_images:
        raise ValueError(f"predictions have dtype {probabilities.dtype} and shape {probabilities.shape}")
    return probabilities


def read_facts(predictor: Predictor) -> dict[str, Any]:
    """The predictor's model facts, as data: known keys of the expected types only. What it says
    about itself (how many models it loaded, how long it took to get ready) goes to `predictor.info`."""
    path = predictor.job.predict_dir / "facts.json"
    if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_FACTS_BYTES:
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    predictor.info.update(typed(raw, PROCESS_TYPES))
    facts = typed(raw, FACT_TYPES)
    if "layers" in facts:
        facts["layers"] = [str(name)[:60] for name in facts["layers"][:64]]
    return facts


def typed(raw: dict[str, Any], types: dict[str, type]) -> dict[str, Any]:
    return {key: raw[key] for key, kind in types.items()
            if isinstance(raw.get(key), kind) and not isinstance(raw.get(key), bool)}


def log_tail(predictor: Predictor, max_bytes: int = MAX_LOG_BYTES) -> bytes:
    path = predictor.log_path
    if not path.is_file() or path.is_symlink():
        return b""
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - max_bytes))
        return handle.read()


def stop(predictor: Predictor) -> None:
    """Kill the predictor and everything it started (its cgroup, its uid)."""
    if predictor.process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            predictor.process.kill()
    predictor.launcher.kill_processes(predictor.job)


def close_predictor(predictor: Predictor, *, keep_log: Path | None = None) -> None:
    """However grading ended: no predictor process left, its folder gone; its log kept when it had a model."""
    try:
        stop(predictor)
        if keep_log is not None and predictor.handed_at is not None:
            keep_log.write_bytes(log_tail(predictor))
    finally:
        predictor.launcher.teardown_job(predictor.job)  # kills again, unmounts, gives the uid back
        shutil.rmtree(predictor.job.work_dir, ignore_errors=True)


def summary(predictor: Predictor) -> dict[str, Any]:
    """For result.json (`execution.predictor`, with the other timings): how many models it loaded (always 1),
    how long getting ready and evaluating took (wall, CPU), and how long it had been started before the model
    came. None of it is judged."""
    head_start = None if predictor.handed_at is None else round(predictor.handed_at - predictor.started, 2)
    return {**predictor.info, "started_before_s": head_start}
