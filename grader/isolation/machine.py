"""What the machine offers a batch: cores, memory, a GPU; and the defaults derived from them."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

log = logging.getLogger("grader.machine")
MEMINFO = Path("/proc/meminfo")


def cpu_count() -> int:
    """Cores this process may use (affinity and cgroup cpusets count, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def available_memory_mb(meminfo: Path = MEMINFO) -> int | None:
    """MemAvailable from /proc/meminfo (what can be used without swapping), or None."""
    try:
        for line in meminfo.read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024  # kB → MiB
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_jobs(memory_mb_per_job: int, *, cores: int | None = None, available_mb: int | None = None) -> int:
    """min(cores, available memory ÷ the spec's memory limit per kernel), at least 1."""
    cores = cpu_count() if cores is None else cores
    available_mb = available_memory_mb() if available_mb is None else available_mb
    by_memory = cores if available_mb is None else available_mb // max(1, memory_mb_per_job)
    return max(1, min(cores, by_memory))


def threads_per_job(jobs: int, *, cores: int | None = None) -> int:
    """TensorFlow/BLAS threads per kernel so that `jobs` kernels do not oversubscribe the cores."""
    cores = cpu_count() if cores is None else cores
    return max(1, cores // max(1, jobs))


@cache
def gpu_available() -> bool:
    """Whether TensorFlow in the grading interpreter sees a GPU.

    Cheap first (no NVIDIA tool or no GPU listed: no), then TensorFlow itself in a subprocess, so
    the grader process never imports TensorFlow and the answer is what kernels will see.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if listed.returncode != 0 or "GPU" not in listed.stdout:
        return False
    probe = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=180, env=env)
        seen = int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout.strip() else 0
    except (OSError, subprocess.TimeoutExpired, ValueError):
        seen = 0
    if not seen:
        log.warning("nvidia-smi lists a GPU but TensorFlow does not see it (tensorflow-cpu installed? "
                    "install `tensorflow[and-cuda]` to grade on the GPU)")
    return seen > 0
