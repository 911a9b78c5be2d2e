"""The one seam through which every kernel (and every trusted-evaluation process) starts.

A Launcher turns "run this command for this job" into a concrete command line and
environment. `LocalLauncher` runs the process directly with a scrubbed environment; the
sandbox (bubblewrap, privilege drop, limits) plugs in here as another Launcher without
touching the executor or the pipeline.
"""

from __future__ import annotations

import os
import sys
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

KERNEL_DIR = Path(__file__).resolve().parent / "kernel"


@dataclass
class KernelJob:
    """The private folders of one execution. Everything the kernel may write is under work_dir."""

    work_dir: Path
    data_dir: Path  # the dataset files, read-only for the kernel
    threads: int = 1
    memory_mb: int = 8192
    uid: int | None = None  # set by a sandbox that drops privileges
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))  # signs the evidence

    @property
    def key_file(self) -> Path:
        return self.home / ".grader-evidence-key"  # in a folder the kernel may delete from

    @property
    def cwd(self) -> Path:
        return self.work_dir / "cwd"

    @property
    def evidence_dir(self) -> Path:
        return self.work_dir / "evidence"

    @property
    def keras_home(self) -> Path:
        return self.work_dir / "keras"

    @property
    def home(self) -> Path:
        return self.work_dir / "home"

    @property
    def harness_config(self) -> Path:
        return self.work_dir / "harness.json"

    @property
    def ipc_dir(self) -> Path:
        return self.work_dir / "ipc"

    @property
    def predict_dir(self) -> Path:
        return self.work_dir / "predict"

    def writable_dirs(self) -> list[Path]:
        """Folders the untrusted process may write; the rest of work_dir stays the grader's."""
        return [self.cwd, self.evidence_dir, self.home, self.keras_home, self.keras_home / "datasets",
                self.ipc_dir, self.predict_dir]

    def create(self) -> None:
        """Make the folders; Keras needs a writable KERAS_HOME, so the data is linked in."""
        for folder in self.writable_dirs():
            folder.mkdir(parents=True, exist_ok=True)
        link = self.keras_home / "datasets" / "fashion-mnist"
        if not link.exists():
            link.symlink_to(self.data_dir, target_is_directory=True)


class Launcher(Protocol):
    name: str
    needs_ipc: bool  # True when the kernel has no network, so ZMQ must use unix sockets

    def setup_job(self, job: KernelJob) -> None:
        """Create the job's folders (and whatever isolation needs around them)."""

    def kill_processes(self, job: KernelJob) -> None:
        """End every process the job started (called as soon as its kernel is shut down)."""

    def teardown_job(self, job: KernelJob) -> None:
        """Make sure nothing of the job keeps running; release what setup took."""

    def share_file(self, job: KernelJob, path: Path) -> None:
        """Let the job's process read a file the grader wrote (e.g. the connection file)."""

    def command(self, argv: list[str], job: KernelJob) -> list[str]:
        """The full command line that runs argv for this job."""

    def environment(self, job: KernelJob) -> dict[str, str]:
        """The complete environment (nothing is inherited implicitly)."""


def base_environment(job: KernelJob) -> dict[str, str]:
    """What every kernel gets, whatever isolates it: no grader secrets, fixed locale, few threads."""
    threads = str(max(1, job.threads))
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(job.home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONPATH": str(KERNEL_DIR),
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": str(job.home / ".matplotlib"),
        "KERAS_HOME": str(job.keras_home),
        "KERAS_BACKEND": "tensorflow",
        "GRADER_HARNESS_CONFIG": str(job.harness_config),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "MALLOC_ARENA_MAX": "2",
    }
    env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"  # several kernels share one GPU (no-op without one)
    if "CUDA_VISIBLE_DEVICES" in os.environ:  # keep the instructor's GPU choice
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env


class LocalLauncher:
    """No isolation beyond a private work folder and a scrubbed environment (`--no-sandbox`)."""

    name = "none (--no-sandbox)"
    needs_ipc = False
    limits_in_force = {"memory": "none: no sandbox, no cgroup, no rlimits (--no-sandbox)"}

    def setup_job(self, job: KernelJob) -> None:
        job.create()

    def kill_processes(self, job: KernelJob) -> None:
        pass

    def teardown_job(self, job: KernelJob) -> None:
        pass

    def share_file(self, job: KernelJob, path: Path) -> None:
        pass

    def command(self, argv: list[str], job: KernelJob) -> list[str]:
        return list(argv)

    def environment(self, job: KernelJob) -> dict[str, str]:
        return base_environment(job)
