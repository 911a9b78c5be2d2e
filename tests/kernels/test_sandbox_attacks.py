"""Hostile notebooks, graded by the real grader in its sandbox: each gets a clear verdict,
the batch survives, nothing leaks, and the scores are the grader's own.

The notebooks in tests/fixtures/attacks/ print one `RESULT <label> <outcome>` line per attempt.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
import subprocess

import nbformat
import pytest

from grader.isolation.sandbox import FIRST_SANDBOX_UID, UID_LOCK_DIR, probe_layers
from conftest import FIXTURES, ROOT, TEST_DISK_MB

pytestmark = pytest.mark.slow
ATTACKS = ROOT / "tests" / "fixtures" / "attacks"


def strongest_layer() -> str:
    return next((r.name for r in probe_layers() if r.works), "")


requires_root_sandbox = pytest.mark.skipif(
    strongest_layer() != "bubblewrap (root, uid drop)",
    reason="needs root with bubblewrap (as in CI and `make setup`); this machine has: " + (strongest_layer() or "none"))


@pytest.fixture(scope="session")
def attack_batch(tmp_path_factory, tiny_keras_home, test_project, reference_cache):
    """Grade every attack notebook plus one honest notebook in one batch, two kernels at a time."""
    from grader.commands import grade

    if strongest_layer() != "bubblewrap (root, uid drop)":
        pytest.skip("needs root with bubblewrap")
    submissions = tmp_path_factory.mktemp("attack-submissions")
    out = tmp_path_factory.mktemp("attack-out")
    listener = socket.create_server(("127.0.0.1", 0))  # a host service the sandbox must not reach
    values = {"{{PROJECT_ROOT}}": str(test_project), "{{REPO}}": str(ROOT), "{{SUBMISSIONS}}": str(submissions),
              "{{OUT}}": str(out), "{{PORT}}": str(listener.getsockname()[1])}
    for notebook in ATTACKS.glob("*.ipynb"):
        text = notebook.read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace(key, value)
        (submissions / notebook.name).write_text(text, encoding="utf-8")
    shutil.copy(FIXTURES / "correct.ipynb", submissions / "honest.ipynb")
    try:
        summary = grade.main(assignment="kadai8", submissions=submissions, out=out, budget="quick", jobs=2,
                             project_root=test_project, keras_home=tiny_keras_home, cache_root=reference_cache)
    finally:
        listener.close()
    return {r.student: r for r in summary.results}, summary


def results_printed(summary, student: str) -> dict[str, list[str]]:
    """label → the words after it, from the executed notebook's RESULT lines."""
    executed = nbformat.read(summary.out_dir / student / "executed.ipynb", as_version=4)
    found: dict[str, list[str]] = {}
    for cell in executed.cells:
        for output in cell.get("outputs", []):
            for line in output.get("text", "").splitlines():
                if line.startswith("RESULT "):
                    label, *rest = line.split()[1:]
                    found[label] = rest
    return found


def test_the_batch_survives_and_every_attack_gets_a_verdict(attack_batch):
    results, summary = attack_batch
    assert set(results) == {p.stem for p in ATTACKS.glob("*.ipynb")} | {"honest"}
    assert all(r.status != "grader_error" for r in results.values()), {s: r.message for s, r in results.items()}
    assert results["honest"].status == "graded"
    assert {c.id: c.status for c in results["honest"].checks if c.status != "pass"} == {"discussion.answered": "manual"}
    assert summary.sandbox == "bubblewrap (root, uid drop)"


def test_reference_other_submissions_outputs_and_shadow_are_unreadable(attack_batch):
    _, summary = attack_batch
    printed = results_printed(summary, "read_secrets")
    assert set(printed) == {"reference", "spec", "repo_reference", "other_submission", "submissions_dir",
                            "output_dir", "shadow", "root_home"}
    assert not [label for label, words in printed.items() if words[0] == "LEAK"], printed
    assert printed["shadow"][0] == "PermissionError"  # readable only by root: the uid drop is real
    assert printed["reference"][0] == "FileNotFoundError"  # hidden: the folder is an empty tmpfs


def test_no_network_not_even_the_hosts_loopback(attack_batch):
    _, summary = attack_batch
    printed = results_printed(summary, "network")
    assert printed["host_loopback"][0] in {"ConnectionRefusedError", "OSError"}
    assert printed["internet"][0] == "OSError" and printed["internet"][1] == "101"  # ENETUNREACH
    assert printed["dns"][0] == "gaierror"


def test_fork_bomb_is_stopped_at_the_process_limit(attack_batch):
    _, summary = attack_batch
    words = results_printed(summary, "fork_bomb")["fork"]
    assert words[0] == "STOPPED" and int(words[1]) < 256 and words[2] == "11"  # EAGAIN


def test_memory_bomb_becomes_a_memory_error(attack_batch):
    results, summary = attack_batch
    words = results_printed(summary, "memory_bomb")["memory"]
    assert words[0] == "STOPPED" and int(words[1]) < 8192
    assert results["memory_bomb"].status == "graded"


def test_disk_filler_hits_the_job_size_limit(attack_batch):
    _, summary = attack_batch
    printed = results_printed(summary, "disk_filler")
    assert printed["disk"][0] == "STOPPED" and int(printed["disk"][1]) <= TEST_DISK_MB and printed["disk"][3] == "28"
    assert printed["tmp"] == ["STOPPED", "28"]  # the private /tmp is capped too (ENOSPC)


def test_huge_output_is_truncated_and_the_notebook_stays_small(attack_batch):
    results, summary = attack_batch
    result = results["huge_output"]
    assert result.execution["truncated_cells"] == [1]
    assert (summary.out_dir / "huge_output" / "executed.ipynb").stat().st_size < 3_000_000
    assert results_printed(summary, "huge_output")["after_output"] == ["DONE"]
    assert any("省略" in note for note in result.notes)


def test_kill_minus_one_finds_nothing_to_kill_outside_the_sandbox(attack_batch):
    results, summary = attack_batch
    result = results["kill_all"]
    assert result.status == "error" and "ProcessLookupError" in result.message  # ESRCH: nobody else is visible
    assert results_printed(summary, "kill_all")["survived"] == []
    assert results["honest"].status == "graded"


def test_sleeping_loop_times_out(attack_batch):
    results, _ = attack_batch
    assert results["sleeping_loop"].status == "timeout"
    assert results["sleeping_loop"].execution["timeout_scope"] == "cell"


def test_namespace_mount_ptrace_and_setuid_are_refused(attack_batch):
    _, summary = attack_batch
    printed = results_printed(summary, "escape_syscalls")
    for label in ("unshare_user", "unshare_net", "mount", "ptrace"):
        assert printed[label] == ["PermissionError", "1"], (label, printed[label])  # EPERM from seccomp
    assert printed["setuid0"] == ["PermissionError", "1"]
    assert printed["unshare_cmd"][0] == "PermissionError"


def test_symlinks_left_behind_are_not_followed(attack_batch):
    results, summary = attack_batch
    folder = summary.out_dir / "symlinks"
    links = [p for p in folder.rglob("*") if p.is_symlink()]
    assert links == []
    assert not any(b"root:x:0:0" in p.read_bytes() for p in folder.rglob("*") if p.is_file())
    assert any("passwd.npz" in note for note in results["symlinks"].notes)


def uid_in_use(uid: int) -> bool:
    """A grader process holds the uid's lock while a job runs as it (ours or a concurrent batch)."""
    path = UID_LOCK_DIR / f"{uid}.lock"
    if not path.exists():
        return False
    with open(path, "rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def test_no_process_of_any_job_outlives_the_batch(attack_batch):
    listing = subprocess.run(["ps", "-eo", "uid=,comm="], capture_output=True, text=True, check=True).stdout
    uids = {int(line.split()[0]) for line in listing.splitlines()}
    leftovers = [uid for uid in uids if FIRST_SANDBOX_UID <= uid < FIRST_SANDBOX_UID + 100 and not uid_in_use(uid)]
    assert leftovers == []  # the fork bomb's children and the daemonised sleeper are gone
    mounts = open("/proc/mounts", encoding="utf-8").read()
    ours = "|".join(p.stem for p in ATTACKS.glob("*.ipynb"))
    assert not re.search(rf" /tmp/grader-[^/ ]+/({ours})-\S+ tmpfs ", mounts)  # every job folder unmounted


def test_tampering_in_the_kernel_does_not_change_the_score(attack_batch, graded_batch):
    results, _ = attack_batch
    tamper = results["tamper"]
    accuracy = next(c for c in tamper.checks if c.id == "model.test_accuracy")
    honest = next(c for c in results["honest"].checks if c.id == "model.test_accuracy")
    assert accuracy.actual == pytest.approx(honest.actual)  # the grader's own evaluation of the model
    assert any("not written by the grader's harness were ignored" in note for note in tamper.notes)
    assert any("batch_flow1.npz" in note and "altered" in note for note in tamper.notes)


def test_the_grader_never_runs_as_the_student(attack_batch):
    """Evidence written inside the sandbox belongs to the job's uid, never root (proves the drop)."""
    results, _ = attack_batch
    assert os.geteuid() == 0
    assert all(r.execution.get("sandbox") == "bubblewrap (root, uid drop)" for r in results.values()
               if r.status != "invalid")
