"""Hostile notebooks, graded by the real grader in its sandbox: each gets a clear verdict,
the batch survives, nothing leaks, and the scores are the grader's own.

The notebooks in tests/fixtures/attacks/ print one `RESULT <label> <outcome>` line per attempt.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess

from pathlib import Path

import nbformat
import pytest

from grader.sandbox import FIRST_SANDBOX_UID, UID_LOCK_DIR
from conftest import ATTACKS, JAPANESE_NAMES, REFUSED_NAMES, TEST_DISK_MB, TEST_MEMORY_MB, strongest_layer

pytestmark = pytest.mark.slow


requires_root_sandbox = pytest.mark.skipif(
    strongest_layer() != "bubblewrap (root, uid drop)",
    reason="needs root with bubblewrap (as in CI and `make setup`); this machine has: " + (strongest_layer() or "none"))


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


def printed_json(summary, student: str, label: str):
    """The JSON after `RESULT <label> ` in the executed notebook."""
    executed = nbformat.read(summary.out_dir / student / "executed.ipynb", as_version=4)
    for cell in executed.cells:
        for output in cell.get("outputs", []):
            for line in output.get("text", "").splitlines():
                if line.startswith(f"RESULT {label} "):
                    return json.loads(line[len(f"RESULT {label} "):])
    raise AssertionError(f"{student} printed no RESULT {label}")


def test_the_batch_survives_and_every_attack_gets_a_verdict(attack_batch):
    results, summary = attack_batch
    assert set(results) == {p.stem for p in ATTACKS.glob("*.ipynb")} | {"honest", "s2601001", *JAPANESE_NAMES}
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
    assert printed["shadow"][0] == "FileNotFoundError"  # /etc is an allowlist: no shadow at all
    assert printed["reference"][0] == "FileNotFoundError"  # not bound: the project does not exist inside


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


def test_every_memory_route_is_stopped_at_the_cgroup_limit_and_reported(attack_run):
    """Touched pages, memfd pages never mapped (RLIMIT_AS never saw them), and tmpfs files plus
    anonymous memory: each kernel dies at the job's limit, and the TA reads "memory limit exceeded"."""
    results, summary = attack_run.results, attack_run.summary
    for student, label in (("memory_bomb", "memory"), ("memfd_bomb", "memfd"), ("tmpfs_then_anon", "anon")):
        result, printed = results[student], results_printed(summary, student)
        assert printed[label][0] == "HELD" and "DONE" not in printed.get(label, []), (student, printed)
        assert "after" not in printed  # the kernel was killed: the next cell never ran
        assert result.status == "kernel_died" and result.execution["memory_exceeded"], (student, result.message)
        assert "メモリ上限超過" in result.message and f"{TEST_MEMORY_MB} MiB" in result.message
        assert result.execution["memory_peak_mb"] <= TEST_MEMORY_MB
        assert "cgroup" in result.execution["limits"]["memory"]
    assert int(results_printed(summary, "memory_bomb")["memory"][1]) < TEST_MEMORY_MB
    assert int(results_printed(summary, "memfd_bomb")["memfd"][1]) < TEST_MEMORY_MB
    tmpfs = results_printed(summary, "tmpfs_then_anon")
    files, anon = int(tmpfs["tmpfs"][1]), int(tmpfs["anon"][1])
    assert files >= 3 * 150  # /dev/shm, /tmp and the job folder really held files …
    assert files + anon < TEST_MEMORY_MB  # … and they counted against the same limit as the arrays
    # without cgroups the bomb alone would take 16 GiB; two kernels at the limit take 4 (noise: other work)
    print(f"host MemAvailable fell at most {attack_run.host_drop_mb} MiB during the batch")
    assert attack_run.host_drop_mb < 8192, attack_run.host_drop_mb


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


def grader_alive(work_root: str) -> bool:
    """A work root whose owner lock is held belongs to a grader that is still running (grader.workroot)."""
    owner = Path(work_root) / ".grader-owner"
    try:
        with open(owner, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def test_no_process_of_any_job_outlives_the_batch(attack_batch):
    listing = subprocess.run(["ps", "-eo", "uid=,comm="], capture_output=True, text=True, check=True).stdout
    uids = {int(line.split()[0]) for line in listing.splitlines()}
    leftovers = [uid for uid in uids if FIRST_SANDBOX_UID <= uid < FIRST_SANDBOX_UID + 100 and not uid_in_use(uid)]
    assert leftovers == []  # the fork bomb's children and the daemonised sleeper are gone
    mounts = open("/proc/mounts", encoding="utf-8").read()
    ours = "|".join(p.stem for p in ATTACKS.glob("*.ipynb"))
    left = [m for m in re.findall(rf" (/tmp/grader-[^/ ]+)/(?:{ours})-\S+ tmpfs ", mounts) if not grader_alive(m)]
    assert left == []  # every job folder unmounted (another helper's batch still running is not ours)
    from grader.cgroups import PARENT_NAME

    groups = [p for p in Path("/sys/fs/cgroup").glob(f"**/{PARENT_NAME}/job-*") if not uid_in_use(int(p.name[4:]))]
    assert groups == []  # every job's cgroup removed


def test_tampering_in_the_kernel_does_not_change_the_score(attack_batch, graded_batch):
    results, _ = attack_batch
    tamper = results["tamper"]
    accuracy = next(c for c in tamper.checks if c.id == "model.test_accuracy")
    honest = next(c for c in results["honest"].checks if c.id == "model.test_accuracy")
    assert accuracy.actual == pytest.approx(honest.actual)  # the grader's own evaluation of the model
    assert any("not written by the grader's harness were ignored" in note for note in tamper.notes)
    # Monkeypatching Keras/NumPy and naming the harness's files is tamper evidence: held for a TA.
    assert tamper.status == "flagged" and tamper.score <= results["honest"].score
    assert {f["id"] for f in tamper.integrity["findings"]} == {"code.patch", "code.evidence"}
    assert results["honest"].integrity["ok"]
    assert any("batch_flow1.npz" in note and "altered" in note for note in tamper.notes)


def test_the_grader_never_runs_as_the_student(attack_batch):
    """Evidence written inside the sandbox belongs to the job's uid, never root (proves the drop)."""
    results, _ = attack_batch
    assert os.geteuid() == 0
    assert all(r.execution.get("sandbox") == "bubblewrap (root, uid drop)" for r in results.values()
               if r.status != "invalid")


def test_a_kernel_sees_no_file_of_the_host_but_system_interpreter_data_and_its_own(attack_run, test_project):
    from grader.launch import KERNEL_DIR
    from grader.sandbox import interpreter_paths
    from conftest import ROOT

    summary = attack_run.summary
    found = [Path(p) for p in printed_json(summary, "walk_files", "found")]
    allowed = [Path("/usr"), Path("/etc"), *interpreter_paths()]
    outside = [p for p in found if not any(p.is_relative_to(root) for root in allowed)]
    assert outside == []  # not one notebook, spec, gradebook or CSV of a checkout, the decoy or the class
    assert {p.name for p in found} & {"reference.ipynb", "gradebook.sqlite", "grades.csv", "spec.toml"} == set()
    tops = set(printed_json(summary, "walk_files", "tops"))
    expected = {"bin", "dev", "etc", "lib", "lib64", "proc", "sbin", "sys", "tmp", "usr"}
    expected |= {p.parts[1] for p in [*interpreter_paths(), KERNEL_DIR]}
    assert tops <= expected | {"lib32", "libx32"}, tops - expected
    mounts = printed_json(summary, "walk_files", "mountinfo")
    for secret in (attack_run.decoy, ROOT, test_project, summary.out_dir, Path("/root"), Path("/home")):
        assert str(secret) not in mounts
    assert not [m for m in mounts if m.startswith(str(attack_run.decoy.parent))]


def test_display_updates_comms_and_repeated_errors_stay_under_the_output_cap(attack_run):
    from grader.execute import TRUNCATION_NOTE

    result, summary = attack_run.results["display_flood"], attack_run.summary
    executed_path = summary.out_dir / "display_flood" / "executed.ipynb"
    assert executed_path.stat().st_size < 10_000_000  # the spec's max_output_mb (was 200 MB)
    assert executed_path.stat().st_size < 2_000_000
    printed = results_printed(summary, "display_flood")
    assert printed["update"] == ["DONE"] and printed["comm"] == ["DONE"] and printed["after"] == ["DONE"]
    executed = nbformat.read(executed_path, as_version=4)
    displays = [o for o in executed.cells[1].outputs if o.output_type == "display_data"]
    assert len(displays) == 40 and all(o.data["text/plain"] == TRUNCATION_NOTE for o in displays)
    assert 1 in result.execution["truncated_cells"] and any("省略" in note for note in result.notes)
    assert "widgets" not in executed.metadata  # comm traffic is not stored
    errors = [o for o in executed.cells[4].outputs if o.output_type == "error"]
    assert errors and all(len(o.evalue) <= 2_000 for o in errors)


def test_evidence_keeps_only_harness_files_whatever_the_recorder_vouched_for(attack_run):
    result, summary = attack_run.results["review_script"], attack_run.summary
    assert results_printed(summary, "review_script")["evidence"] == ["PLANTED"]
    exported = {p.name for p in (summary.out_dir / "review_script" / "evidence").iterdir()}
    assert not {"evil.html", "evil.npz", "evil.svg"} & exported
    notes = "\n".join(result.notes)
    assert "evil.html (not a file name or type the harness writes)" in notes
    assert "evil.svg (not a file name or type the harness writes)" in notes
    assert "evil.npz (not the archive its name says)" in notes


def test_japanese_names_are_graded_as_written_and_bad_names_are_refused_as_data(attack_run):
    results, summary = attack_run.results, attack_run.summary
    for name in JAPANESE_NAMES:
        assert results[name].student == name and results[name].status == "graded"
        assert results_printed(summary, name)["name"] == [name]
        assert (summary.out_dir / name / "report.html").is_file()
    assert results_printed(summary, "s2601001")["real"] == ["s2601001"]  # the real one, not the impostor
    refused = {r.name: r.reason for r in summary.refused}
    assert set(refused) == {"s2601001\\u3000.ipynb", "s2601002\\u000a.ipynb", "index.html.ipynb", "grades.csv.ipynb",
                            "submissions.json.ipynb", "dup.ipynb", "dup/", "Twin.ipynb", "twin.ipynb"}
    assert "whitespace" in refused["s2601001\\u3000.ipynb"] and "U+000A" in refused["s2601002\\u000a.ipynb"]
    assert "reserved" in refused["index.html.ipynb"] and "one id" in refused["dup/"] and "one id" in refused["twin.ipynb"]
    assert (summary.out_dir / "index.html").is_file() and (summary.out_dir / "grades.csv").is_file()
    page = (summary.out_dir / "index.html").read_text(encoding="utf-8")
    assert "採点しなかった提出 (9)" in page and "s2601001\\u3000.ipynb" in page
    assert len(REFUSED_NAMES) == 9
    assert not [p for p in summary.out_dir.iterdir() if "\n" in p.name or p.name.casefold().startswith("twin")]
