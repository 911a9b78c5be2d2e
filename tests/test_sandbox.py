"""The sandbox's parts without TensorFlow: the seccomp program, the command line, and one real
bubblewrap run of a plain Python process (skipped where bubblewrap as root is unavailable)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from grader import seccomp
from grader.launch import KERNEL_DIR, KernelJob, LocalLauncher
from grader.sandbox import BwrapLauncher, SandboxLimits, SandboxPolicy, probe_layers

ROOT = Path(__file__).resolve().parent.parent


def root_bwrap_works() -> bool:
    return any(r.name == "bubblewrap (root, uid drop)" and r.works for r in probe_layers())


needs_root_bwrap = pytest.mark.skipif(not root_bwrap_works(), reason="needs root with bubblewrap (CI has it)")


@pytest.mark.skipif(not seccomp.supported(), reason="filter is x86_64-only")
def test_seccomp_program_is_well_formed_and_ends_in_allow():
    program = seccomp.build_filter()
    assert len(program) % 8 == 0
    instructions = [struct.unpack("<HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    assert instructions[0] == (seccomp.LD_W_ABS, 0, 0, seccomp.OFFSET_ARCH)
    assert instructions[-1] == (seccomp.RET, 0, 0, seccomp.RET_ALLOW)
    refused = {k for code, _, _, k in instructions if code == seccomp.JEQ}
    assert {165, 272, 308, 101, 321, 250} <= refused  # mount, unshare, setns, ptrace, bpf, keyctl
    assert len(instructions) < 4096  # the kernel's BPF_MAXINSNS


def make_launcher(tmp_path: Path, *, as_root: bool) -> tuple[BwrapLauncher, KernelJob]:
    hidden = [tmp_path / "secret", ROOT]
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "answers.txt").write_text("42")
    launcher = BwrapLauncher(policy=SandboxPolicy(hidden=hidden), limits=SandboxLimits(disk_mb=64), as_root=as_root)
    data = tmp_path / "data"
    data.mkdir()
    return launcher, KernelJob(work_dir=tmp_path / "job", data_dir=data)


def test_command_starts_from_an_empty_root_and_binds_only_the_allowlist(tmp_path):
    launcher, job = make_launcher(tmp_path, as_root=True)
    job.work_dir.mkdir()
    job.uid = 61999
    command = launcher.command([sys.executable, "-c", "pass"], job)
    pairs = [(arg, command[i + 1]) for i, arg in enumerate(command) if arg in ("--ro-bind", "--bind", "--tmpfs")]
    binds = [path for kind, path in pairs if kind in ("--ro-bind", "--bind")]
    assert ("--ro-bind", "/") not in pairs and "/" not in binds  # no host root underneath
    assert ("--tmpfs", "/tmp") in pairs and ("--tmpfs", "/dev/shm") in pairs
    assert str(KERNEL_DIR) in binds and str(job.data_dir) in binds and ("--bind", str(job.work_dir)) in pairs
    assert not [p for p in binds if p in ("/root", "/home", "/work", "/opt", "/var", "/etc", str(ROOT), "/etc/shadow")
                or p.startswith(("/etc/ssh", "/etc/shadow", "/etc/gshadow", str(tmp_path / "secret")))]
    assert "/etc/machine-id" not in binds and "/etc/ld.so.cache" in binds
    assert ["--reuid=61999", "--regid=61999"] == [a for a in command if a.startswith(("--reuid", "--regid"))]
    assert "--unshare-net" in command and "--die-with-parent" in command and "--clearenv" in command
    assert any(a.startswith("--as=") for a in command) and any(a.startswith("--nproc=") for a in command)


def test_unprivileged_layer_uses_a_user_namespace_and_no_setpriv(tmp_path):
    launcher, job = make_launcher(tmp_path, as_root=False)
    command = launcher.command(["true"], job)
    assert "--unshare-user" in command and "setpriv" not in command


def test_local_launcher_leaves_the_command_alone(tmp_path):
    job = KernelJob(work_dir=tmp_path, data_dir=tmp_path)
    assert LocalLauncher().command(["python", "x"], job) == ["python", "x"]
    assert LocalLauncher().environment(job)["MPLBACKEND"] == "Agg"


@needs_root_bwrap
def test_a_sandboxed_process_is_unprivileged_offline_and_blind(tmp_path):
    launcher, job = make_launcher(tmp_path, as_root=True)
    job.work_dir.mkdir()
    launcher.setup_job(job)
    probe = f"""
import ctypes, os, socket
print("uid", os.getuid())
for label, path in [("secret", {str(tmp_path / 'secret' / 'answers.txt')!r}), ("repo", {str(ROOT / 'README.md')!r}),
                    ("shadow", "/etc/shadow")]:
    try:
        open(path).read(); print(label, "READ")
    except OSError as exc:
        print(label, type(exc).__name__)
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2); print("net", "CONNECTED")
except OSError as exc:
    print("net", exc.errno)
libc = ctypes.CDLL(None, use_errno=True)
print("unshare", libc.unshare(0x10000000), ctypes.get_errno())
open(os.path.join({str(job.cwd)!r}, "written.txt"), "w").write("ok")
"""
    try:
        done = subprocess.run(launcher.command([sys.executable, "-c", probe], job), env=launcher.environment(job),
                              capture_output=True, text=True, timeout=60)
        lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
        written = (job.cwd / "written.txt").read_text()
    finally:
        launcher.teardown_job(job)
    assert done.returncode == 0, done.stderr
    assert lines["uid"] == "61000" or int(lines["uid"]) >= 61000
    assert lines["secret"] == "FileNotFoundError" and lines["repo"] == "FileNotFoundError"
    assert lines["shadow"] == "FileNotFoundError"  # not even there: /etc is an allowlist
    assert lines["net"] == "101"  # ENETUNREACH: a network namespace with no interfaces
    assert lines["unshare"] == "-1 1"  # EPERM from the seccomp filter
    assert written == "ok"  # its own work folder is writable


def test_without_any_layer_grading_is_refused_unless_asked(monkeypatch):
    import grader.sandbox as sandbox
    from grader.errors import ExecutionSetupError

    monkeypatch.setattr(sandbox, "probe_layers", lambda: [sandbox.LayerReport("bubblewrap", False, "missing")])
    with pytest.raises(ExecutionSetupError, match="--no-sandbox"):
        sandbox.choose_launcher(policy=SandboxPolicy(), limits=SandboxLimits())
    chosen = sandbox.choose_launcher(policy=SandboxPolicy(), limits=SandboxLimits(), no_sandbox=True)
    assert isinstance(chosen, LocalLauncher)


def test_doctor_says_which_layer_grading_uses():
    done = subprocess.run([sys.executable, "-m", "grader", "doctor"], capture_output=True, text=True, timeout=120)
    assert "seccomp filter" in done.stdout and "cgroup limits" in done.stdout
    if any(r.works for r in probe_layers()):
        assert done.returncode == 0 and "grading will use:" in done.stdout
    else:
        assert done.returncode == 1 and "no sandbox available" in done.stdout


@needs_root_bwrap
def test_memfd_pages_beyond_the_job_limit_are_killed_and_counted(tmp_path):
    """No TensorFlow: a plain process holds memfd pages it never maps (RLIMIT_AS cannot see them)."""
    if launcher_cgroups() is None:
        pytest.skip("no usable cgroup hierarchy here")
    launcher = BwrapLauncher(policy=SandboxPolicy(), limits=SandboxLimits(memory_mb=256, disk_mb=64), as_root=True)
    job = KernelJob(work_dir=tmp_path / "job", data_dir=tmp_path)
    job.work_dir.mkdir()
    launcher.setup_job(job)
    group = launcher._groups[job.work_dir]
    hold = "import os\nfor i in range(8):\n    fd = os.memfd_create('x'); os.posix_fallocate(fd, 0, 64 << 20); print(i, flush=True)"
    try:
        done = subprocess.run(launcher.command([sys.executable, "-c", hold], job), env=launcher.environment(job),
                              capture_output=True, text=True, timeout=120)
        kills, peak = launcher.memory_kills(job), launcher.memory_peak_mb(job)
    finally:
        launcher.teardown_job(job)
    assert done.returncode == 137 and len(done.stdout.split()) < 4  # SIGKILL before 256 MiB were held
    assert kills == 1 and peak <= 256
    assert not any(d.exists() for d in group.dirs.values())  # the job's cgroup is gone
    assert "cgroup" in launcher.limits_in_force["memory"] and "memfd" in launcher.limits_in_force["memory"]


def launcher_cgroups():
    from grader.cgroups import detect

    return detect()[0]


def test_cgroup_files_are_parsed_for_both_hierarchies(tmp_path):
    from grader.cgroups import _own_dir, own_groups, read_mounts

    (tmp_path / "mountinfo").write_text(
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "41 31 0:38 /docker/abc /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n", encoding="utf-8")
    (tmp_path / "cgroup").write_text("4:memory:/process_api/x\n1:cpu,cpuacct:/\n0::/docker/abc/grader\n",
                                     encoding="utf-8")
    mounts = {m.point.name: m for m in read_mounts(tmp_path / "mountinfo")}
    groups = own_groups(tmp_path / "cgroup")
    assert groups == {"memory": "/process_api/x", "cpu": "/", "cpuacct": "/", "unified": "/docker/abc/grader"}
    assert "cpu" in mounts["cpu,cpuacct"].options and mounts["unified"].fstype == "cgroup2"
    assert _own_dir(mounts["memory"], groups["memory"]) == Path("/sys/fs/cgroup/memory/process_api/x")
    assert _own_dir(mounts["unified"], groups["unified"]) == Path("/sys/fs/cgroup/unified/grader")
