"""The sandbox's parts without TensorFlow: the seccomp program, the command line, and one real
bubblewrap run of a plain Python process (skipped where bubblewrap as root is unavailable)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from grader.isolation import seccomp
from grader.isolation.launch import KERNEL_DIR, KernelJob, LocalLauncher
from grader.isolation.sandbox import BwrapLauncher, SandboxLimits, SandboxPolicy, probe_layers

ROOT = Path(__file__).resolve().parents[2]


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


def test_command_hides_parents_before_rebinding_what_the_kernel_needs(tmp_path):
    launcher, job = make_launcher(tmp_path, as_root=True)
    job.work_dir.mkdir()
    job.uid = 61999
    command = launcher.command([sys.executable, "-c", "pass"], job)
    tmpfs = [command[i + 1] for i, arg in enumerate(command) if arg == "--tmpfs"]
    binds = [command[i + 1] for i, arg in enumerate(command) if arg == "--ro-bind"]
    assert "/tmp" in tmpfs and str(tmp_path / "secret") not in tmpfs  # already under the private /tmp
    assert str(ROOT) in tmpfs or str(ROOT.parent) in tmpfs
    assert str(KERNEL_DIR) in binds and str(job.data_dir) in binds
    last_tmpfs = max(i for i, arg in enumerate(command) if arg == "--tmpfs")
    assert all(i > last_tmpfs for i, arg in enumerate(command) if arg == "--ro-bind" and command[i + 1] != "/")
    assert [a for a in command if a.startswith(("--reuid", "--regid"))] == ["--reuid=61999", "--regid=61999"]
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
    assert lines["shadow"] == "PermissionError"
    assert lines["net"] == "101"  # ENETUNREACH: a network namespace with no interfaces
    assert lines["unshare"] == "-1 1"  # EPERM from the seccomp filter
    assert written == "ok"  # its own work folder is writable


def test_without_any_layer_grading_is_refused_unless_asked(monkeypatch):
    import grader.isolation.sandbox as sandbox
    from grader.errors import ExecutionSetupError

    monkeypatch.setattr(sandbox, "probe_layers", lambda: [sandbox.LayerReport("bubblewrap", False, "missing")])
    with pytest.raises(ExecutionSetupError, match="--no-sandbox"):
        sandbox.choose_launcher(policy=SandboxPolicy(), limits=SandboxLimits())
    chosen = sandbox.choose_launcher(policy=SandboxPolicy(), limits=SandboxLimits(), no_sandbox=True)
    assert isinstance(chosen, LocalLauncher)


def test_doctor_says_which_layer_grading_uses():
    done = subprocess.run([sys.executable, "-m", "grader", "doctor"], capture_output=True, text=True, timeout=120)
    assert "seccomp filter" in done.stdout
    if any(r.works for r in probe_layers()):
        assert done.returncode == 0 and "grading will use:" in done.stdout
    else:
        assert done.returncode == 1 and "no sandbox available" in done.stdout
