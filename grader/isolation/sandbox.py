"""Sandboxed launchers for untrusted processes (kernels, model prediction) and how we pick one.

Layers, strongest first; `choose_launcher` takes the first that works here and says which:

  bubblewrap as root   read-only system, only the interpreter/data/job folder visible, private
                       /tmp and /dev/shm, no network, own PID/IPC/UTS namespaces, seccomp
                       filter, privilege drop to a per-job uid (setpriv), rlimits, a
                       size-limited tmpfs as the job folder, killed with the grader.
  bubblewrap, user     the same inside an unprivileged user namespace, minus the uid change and
                       the size-limited job folder (RLIMIT_FSIZE still caps each file).
  unshare              network namespace only (no filesystem hiding): last resort.
  none                 refused unless the user passes --no-sandbox.

Every layer goes through the same `Launcher` seam as the unsandboxed `LocalLauncher`.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from grader.errors import ExecutionSetupError
from grader.isolation.launch import KERNEL_DIR, KernelJob, LocalLauncher, base_environment
from grader.isolation.seccomp import build_filter
from grader.isolation.seccomp import supported as seccomp_supported

FIRST_SANDBOX_UID = 61000  # one uid per concurrent job: RLIMIT_NPROC counts per uid machine-wide
SANDBOX_UIDS = 1000
UID_LOCK_DIR = Path("/run/lock/kadai-grader")  # one lock file per uid, shared by all grader processes
ALWAYS_HIDDEN = ("/root", "/home", "/run", "/var/tmp", "/srv", "/mnt", "/media")


@dataclass(frozen=True)
class SandboxLimits:
    memory_mb: int = 8192  # RLIMIT_AS; TensorFlow needs ≥ 3 GiB of address space
    processes: int = 256  # RLIMIT_NPROC for the job's own uid (TF spawns threads, counted here)
    open_files: int = 4096
    file_mb: int = 1024  # RLIMIT_FSIZE, per file
    disk_mb: int = 2048  # size of the job's tmpfs (root only)
    cpu_s: int = 3600  # RLIMIT_CPU
    gpu: bool = False  # pass the NVIDIA devices in; CUDA reserves huge address space, so RLIMIT_AS is lifted


@dataclass
class SandboxPolicy:
    """What the kernel must never see, and what it needs to see read-only."""

    hidden: list[Path] = field(default_factory=list)
    readable: list[Path] = field(default_factory=list)


def interpreter_paths() -> list[Path]:
    """The venv and the interpreter it links to (pyenv under /root is hidden otherwise)."""
    paths = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parent}
    return sorted(paths)


class BwrapLauncher:
    """bubblewrap + prlimit (+ setpriv when root). See the module docstring for the layers."""

    def __init__(self, *, policy: SandboxPolicy, limits: SandboxLimits, as_root: bool) -> None:
        self.policy = policy
        self.limits = limits
        self.as_root = as_root
        self.name = "bubblewrap (root, uid drop)" if as_root else "bubblewrap (user namespace)"
        self.needs_ipc = True  # --unshare-net: TCP loopback is another network, ZMQ must use ipc
        self._uid_locks: dict[int, int] = {}
        self._bwrap = shutil.which("bwrap") or "bwrap"
        self._filter = build_filter() if seccomp_supported() else None

    # -- job lifecycle ------------------------------------------------------------------
    def setup_job(self, job: KernelJob) -> None:
        """Give the job a uid, a size-limited tmpfs (root) and folders the uid may write."""
        if self.as_root:
            job.uid = self._take_uid()
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.limits.disk_mb}m,mode=0755",
                            "tmpfs", str(job.work_dir)], check=True, capture_output=True)
        job.create()
        if self._filter is not None:
            (job.work_dir / "seccomp.bpf").write_bytes(self._filter)
        if job.uid is not None:
            for folder in job.writable_dirs():
                os.chown(folder, job.uid, job.uid)

    def _take_uid(self) -> int:
        """A uid no other job, in this or any other grader process, is using (flock per uid).

        Uids are shared machine-wide: two batches with the same uid would count each other's
        processes against RLIMIT_NPROC and kill each other's kernels at teardown.
        """
        UID_LOCK_DIR.mkdir(parents=True, exist_ok=True)
        for uid in range(FIRST_SANDBOX_UID, FIRST_SANDBOX_UID + SANDBOX_UIDS):
            fd = os.open(UID_LOCK_DIR / f"{uid}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._uid_locks[uid] = fd
            kill_uid(uid)  # orphans of a grader that crashed
            return uid
        raise ExecutionSetupError(f"all {SANDBOX_UIDS} sandbox uids are in use")

    def _release_uid(self, uid: int) -> None:
        fd = self._uid_locks.pop(uid, None)
        if fd is not None:
            os.close(fd)  # closing drops the flock

    def kill_processes(self, job: KernelJob) -> None:
        """Nothing of the job may outlive its kernel: its uid is private, so kill all it owns."""
        if job.uid is not None:
            kill_uid(job.uid)

    def teardown_job(self, job: KernelJob) -> None:
        self.kill_processes(job)
        if self.as_root:
            subprocess.run(["umount", "-l", str(job.work_dir)], capture_output=True)
        if job.uid is not None:
            self._release_uid(job.uid)
            job.uid = None

    def share_file(self, job: KernelJob, path: Path) -> None:
        """Make a grader-written file (the connection file) readable by the job's uid."""
        if job.uid is not None:
            os.chown(path, job.uid, job.uid)

    # -- the command --------------------------------------------------------------------
    def command(self, argv: list[str], job: KernelJob) -> list[str]:
        env = self.environment(job)
        scratch = str(self.limits.disk_mb * 2**20)  # /tmp and /dev/shm are RAM: cap them like the job folder
        bwrap = [self._bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                 "--perms", "1777", "--size", scratch, "--tmpfs", "/tmp",
                 "--perms", "1777", "--size", scratch, "--tmpfs", "/dev/shm"]
        for hidden in self._hidden():
            bwrap += ["--tmpfs", str(hidden)]
        if self.limits.gpu:
            for device in sorted(glob.glob("/dev/nvidia*")):
                bwrap += ["--dev-bind", device, device]
        for readable in self._readable(job):
            bwrap += [*_traversable_parents(readable), "--ro-bind", str(readable), str(readable)]
        bwrap += [*_traversable_parents(job.work_dir), "--bind", str(job.work_dir), str(job.work_dir)]
        if not self.as_root:
            bwrap += ["--unshare-user", "--uid", "65534", "--gid", "65534"]
        bwrap += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                  "--die-with-parent", "--new-session", "--clearenv", "--chdir", str(job.cwd)]
        for key, value in env.items():
            bwrap += ["--setenv", key, value]
        if self._filter is not None:
            bwrap += ["--seccomp", "9"]
        inner = list(argv)
        if job.uid is not None:
            inner = ["setpriv", f"--reuid={job.uid}", f"--regid={job.uid}", "--clear-groups",
                     "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--", *inner]
        limits = self.limits
        address_space = "unlimited" if limits.gpu else str(limits.memory_mb * 2**20)
        prlimit = ["prlimit", f"--as={address_space}", f"--nproc={limits.processes}",
                   f"--nofile={limits.open_files}", f"--fsize={limits.file_mb * 2**20}",
                   f"--cpu={limits.cpu_s}", "--core=0", "--"]
        full = [*prlimit, *bwrap, "--", *inner]
        if self._filter is None:
            return full
        # bwrap reads the filter from fd 9; a tiny shell opens it and execs the rest.
        return ["/bin/sh", "-c", 'exec "$@" 9<"$0"', str(job.work_dir / "seccomp.bpf"), *full]

    def environment(self, job: KernelJob) -> dict[str, str]:
        return base_environment(job)

    def _hidden(self) -> list[Path]:
        """Existing folders to cover with an empty tmpfs, outermost only (a later mount over a
        parent would uncover nothing but would hide what was re-bound inside it)."""
        hidden = {p.resolve() for p in [*map(Path, ALWAYS_HIDDEN), *self.policy.hidden] if p.is_dir()}
        private = {Path("/tmp"), Path("/dev/shm")}  # already fresh tmpfs mounts of their own
        covered = hidden | private
        return sorted(p for p in hidden - private if not any(q != p and q in p.parents for q in covered))

    def _readable(self, job: KernelJob) -> list[Path]:
        paths = [*interpreter_paths(), KERNEL_DIR, job.data_dir.resolve(), *self.policy.readable]
        return [p for p in dict.fromkeys(paths) if p.exists()]


def kill_uid(uid: int, timeout_s: float = 20.0) -> None:
    """SIGKILL every process of `uid` and wait until they are gone: dying processes still count
    against RLIMIT_NPROC, so the next job with this uid could not even start its threads."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        subprocess.run(["pkill", "-KILL", "-U", str(uid)], capture_output=True)
        if subprocess.run(["pgrep", "-U", str(uid)], capture_output=True).returncode != 0:
            return
        time.sleep(0.1)
    raise ExecutionSetupError(f"processes of sandbox uid {uid} would not die")


def _traversable_parents(path: Path) -> list[str]:
    """bwrap makes missing mount points mode 0700, which the dropped uid cannot traverse."""
    args: list[str] = []
    for parent in reversed(path.parents[:-1]):  # outermost first, "/" excluded
        args += ["--perms", "0755", "--dir", str(parent)]
    return args


class UnshareLauncher:
    """Last resort: a private network namespace (and PID namespace) via util-linux `unshare`."""

    needs_ipc = True

    def __init__(self, *, as_root: bool) -> None:
        self.as_root = as_root
        self.name = "unshare (network only)"

    def setup_job(self, job: KernelJob) -> None:
        job.create()

    def kill_processes(self, job: KernelJob) -> None:
        pass  # --kill-child ends the PID namespace with the kernel

    def teardown_job(self, job: KernelJob) -> None:
        pass

    def share_file(self, job: KernelJob, path: Path) -> None:
        pass

    def command(self, argv: list[str], job: KernelJob) -> list[str]:
        user = [] if self.as_root else ["--map-root-user"]
        return ["unshare", *user, "--net", "--pid", "--fork", "--kill-child", "--", *argv]

    def environment(self, job: KernelJob) -> dict[str, str]:
        return base_environment(job)


# ---------------------------------------------------------------- choosing a layer
@dataclass
class LayerReport:
    name: str
    works: bool
    why: str


def _probe(command: list[str]) -> tuple[bool, str]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return done.returncode == 0, (done.stderr or done.stdout).strip()[:200]


def probe_layers() -> list[LayerReport]:
    as_root = os.geteuid() == 0
    reports = []
    bwrap = shutil.which("bwrap")
    if not bwrap:
        reports.append(LayerReport("bubblewrap", False, "bwrap not installed (apt-get install bubblewrap)"))
    else:
        base = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-net", "--unshare-pid"]
        if as_root:
            ok, why = _probe([*base, "--", "setpriv", f"--reuid={FIRST_SANDBOX_UID}", f"--regid={FIRST_SANDBOX_UID}",
                              "--clear-groups", "--no-new-privs", "--", "true"])
            reports.append(LayerReport("bubblewrap (root, uid drop)", ok, why or "namespaces + setpriv work"))
        ok, why = _probe([*base, "--unshare-user", "--", "true"])
        reports.append(LayerReport("bubblewrap (user namespace)", ok, why or "unprivileged user namespaces work"))
    unshare = ["unshare", "--net", "--pid", "--fork", "--", "true"] if as_root else \
        ["unshare", "--map-root-user", "--net", "--pid", "--fork", "--", "true"]
    ok, why = _probe(unshare) if shutil.which("unshare") else (False, "unshare not installed")
    reports.append(LayerReport("unshare (network only)", ok, why or "network namespace works"))
    reports.append(LayerReport("seccomp filter", seccomp_supported(),
                               "x86_64 filter" if seccomp_supported() else "no filter for this architecture"))
    return reports


def choose_launcher(*, policy: SandboxPolicy, limits: SandboxLimits, no_sandbox: bool = False):
    """The strongest working layer; refuses to run unsandboxed unless asked to."""
    if no_sandbox:
        return LocalLauncher()
    works = {r.name for r in probe_layers() if r.works}
    as_root = os.geteuid() == 0
    if "bubblewrap (root, uid drop)" in works:
        return BwrapLauncher(policy=policy, limits=limits, as_root=True)
    if "bubblewrap (user namespace)" in works:
        return BwrapLauncher(policy=policy, limits=limits, as_root=False)
    if "unshare (network only)" in works:
        return UnshareLauncher(as_root=as_root)
    raise ExecutionSetupError(
        "no sandbox layer works here (no bubblewrap, no network namespace); student code would run "
        "with your privileges and network. Install bubblewrap (`make setup` as root does), or pass "
        "--no-sandbox if you trust every notebook. `grader doctor` shows the details.")
