"""The gradebook, the batch plan, thresholds, calibration files, work roots and progress: no kernels."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from grader.engine.calibration import calibration_path, load_calibration, save_calibration, summarize
from grader.judge.checks.training import threshold_for
from grader.batch.grade import rejudge_accuracy
from grader.batch.plan import plan_batch
from grader.gradebook.final import final_result
from grader.report.freshness import report_key
from grader.gradebook.store import GRADEBOOK_FILE, Gradebook, batch_inputs, input_fingerprint
from grader.isolation.machine import available_memory_mb, default_jobs, threads_per_job
from grader.engine.pipeline import Submission, threshold_summary
from grader.batch.progress import PlainProgress, format_seconds
from grader.results import StudentResult
from grader.assignment.spec import load_spec
from grader.judge.verdicts import not_run_results
from grader.isolation.workroot import OWNER_FILE, clean_stale_work_roots, exclusive_output, mounts_under, work_root

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec(ROOT, "kadai8")
ACCURACY_PARAMS = next(c.params for c in SPEC.checks if c.id == "model.test_accuracy")


def make_result(student: str = "s001", *, accuracy: float | None = 0.6, status: str = "graded",
                reference_accuracy: float = 0.7, budget: str = "quick") -> StudentResult:
    """A graded result shaped like the pipeline's: every check passes, the accuracy check by the
    single-reference rule (threshold 0.55 for reference 0.7 on quick)."""
    checks = not_run_results(SPEC, "ja", "")
    for check in checks:
        check.status, check.points, check.message = "pass", check.max_points, ""
    threshold = threshold_for(ACCURACY_PARAMS, budget, reference_accuracy=reference_accuracy)
    accuracy_check = next(c for c in checks if c.id == "model.test_accuracy")
    if accuracy is not None and accuracy < threshold.value:
        accuracy_check.status, accuracy_check.points = "fail", 0
    accuracy_check.actual = accuracy
    discussion = next(c for c in checks if c.id == "discussion.answered")
    discussion.status, discussion.points = "manual", 0
    result = StudentResult(
        student=student, assignment="kadai8", status=status, message="", score=sum(c.points for c in checks),
        max_score=SPEC.max_score, checks=checks, execution={"budget": budget},
        evaluation=None if accuracy is None else {"fit": 1, "accuracy": accuracy, "per_class": [], "confusion": [],
                                                   "input_scale": 1.0, "problem": None},
        reference={"accuracy": reference_accuracy, **threshold_summary(threshold)}, graded_at="2026-01-01T00:00:00+00:00")
    return rejudge_accuracy(result, SPEC, threshold)  # the accuracy check exactly as the pipeline judges it


def check(result: StudentResult, check_id: str):
    return next(c for c in result.checks if c.id == check_id)


@pytest.fixture
def book(tmp_path):
    with Gradebook.open(tmp_path) as gradebook:
        yield gradebook


# ---------------------------------------------------------------- schema and rows
def test_the_gradebook_is_sqlite_in_wal_mode_with_its_tables(tmp_path, book):
    assert (tmp_path / GRADEBOOK_FILE).is_file()
    db = sqlite3.connect(tmp_path / GRADEBOOK_FILE)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"submissions", "runs", "executions", "results", "manual_scores"} <= tables
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    Gradebook.open(tmp_path).close()  # opening again keeps everything


def test_a_result_is_stored_and_read_back_and_replaced_by_the_next(book):
    run = book.start_run(assignment="kadai8", budget="quick", jobs=2, threads=1, grader_version="t")
    first = make_result(accuracy=0.6)
    execution = book.start_execution(run, "kadai8", "s001", "fp1")
    book.record_result(run, first, fingerprint="fp1", seconds=12.3, report_key="r1", execution_id=execution)
    row = book.result("kadai8", "s001")
    assert (row.fingerprint, row.status, row.score, row.report_key, row.seconds) == ("fp1", "graded", first.score, "r1", 12.3)
    assert row.result.to_dict() == first.to_dict()
    assert [(e.student, e.status, e.finished_at is not None) for e in book.executions("kadai8")] == [("s001", "graded", True)]
    second = make_result(accuracy=0.1)
    book.record_result(run, second, fingerprint="fp2", seconds=1.0)
    assert book.result("kadai8", "s001").fingerprint == "fp2"
    assert book.result("kadai8", "s001").score == second.score < first.score
    assert list(book.results("kadai8")) == ["s001"]


def test_a_run_left_running_by_a_dead_grader_becomes_interrupted(book):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    book.db.execute("INSERT INTO runs (assignment, budget, jobs, threads, grader_version, pid, started_at, status) "
                    "VALUES ('kadai8', 'quick', 1, 2, 't', ?, 'then', 'running')", (dead.pid,))
    old = book.db.execute("SELECT max(id) FROM runs").fetchone()[0]
    book.start_execution(old, "kadai8", "s001", "fp")
    new = book.start_run(assignment="kadai8", budget="quick", jobs=1, threads=2, grader_version="t")
    statuses = {r.id: r.status for r in book.runs()}
    assert statuses == {old: "interrupted", new: "running"}
    assert [e.status for e in book.executions("kadai8", "s001")] == ["interrupted"]
    book.finish_run(new, students=1, executed=0, reused=1, seconds=0.5)
    assert book.runs()[-1].status == "finished" and book.runs()[-1].reused == 1


def test_a_committed_result_survives_the_process_being_killed(tmp_path):
    """A writer killed with SIGKILL right after a commit: the row is there for the next reader."""
    script = (f"import sys, os, signal; sys.path.insert(0, {str(ROOT)!r})\n"
              "from pathlib import Path\nfrom grader.gradebook.store import Gradebook\n"
              "from tests.unit.test_gradebook import make_result\n"
              f"book = Gradebook.open(Path({str(tmp_path)!r}))\n"
              "run = book.start_run(assignment='kadai8', budget='quick', jobs=1, threads=1, grader_version='t')\n"
              "book.record_result(run, make_result('s009'), fingerprint='fp', seconds=1.0)\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT)
    assert done.returncode == -9
    with Gradebook.open(tmp_path) as book:
        assert book.result("kadai8", "s009").status == "graded"


# ---------------------------------------------------------------- manual scores
def test_manual_scores_survive_regrades_and_override_the_automatic_points(book):
    run = book.start_run(assignment="kadai8", budget="quick", jobs=1, threads=1, grader_version="t")
    book.record_result(run, make_result(), fingerprint="fp1", seconds=1.0)
    book.set_manual_score("kadai8", "s001", "discussion.answered", 8, comment="よく書けています", scorer="ta1")
    book.record_result(run, make_result(), fingerprint="fp2", seconds=1.0)  # a regrade
    book.record_result(run, make_result(), fingerprint="fp3", seconds=1.0)
    scores = book.manual_scores("kadai8")
    assert scores["s001"]["discussion.answered"].points == 8
    final = final_result(book.result("kadai8", "s001").result, manual=scores["s001"])
    discussion = check(final, "discussion.answered")
    assert (discussion.status, discussion.points) == ("pass", 8)
    assert "TA 採点: 8 / 10" in discussion.message and "よく書けています" in discussion.public_message
    assert final.score == make_result().score + 8
    assert any("discussion.answered" in note and "ta1" in note for note in final.notes)
    book.set_manual_score("kadai8", "s001", "discussion.answered", 0)
    assert check(final_result(final, manual=book.manual_scores("kadai8")["s001"]), "discussion.answered").status == "fail"
    assert book.delete_manual_score("kadai8", "s001", "discussion.answered")
    assert book.manual_scores("kadai8") == {}


def test_manual_points_are_clamped_to_the_check(book):
    book.set_manual_score("kadai8", "s001", "discussion.answered", 99)
    final = final_result(make_result(), manual=book.manual_scores("kadai8")["s001"])
    assert check(final, "discussion.answered").points == 10


# ---------------------------------------------------------------- fingerprints and the plan
def shared(**change) -> str:
    parts = dict(spec_source=b"spec", reference=b"ref", kernel=b"kernel", versions={"grader": "1", "keras": "3"},
                 data_fingerprint="data", budget="quick")
    return batch_inputs(**{**parts, **change})


@pytest.mark.parametrize("change", [
    {"spec_source": b"spec2"}, {"reference": b"ref2"}, {"kernel": b"kernel2"}, {"versions": {"grader": "2", "keras": "3"}},
    {"versions": {"grader": "1", "keras": "3.1"}}, {"data_fingerprint": "other"}, {"budget": "standard"},
])
def test_the_fingerprint_changes_with_every_ingredient(change):
    base = input_fingerprint(b"notebook", batch_inputs=shared())
    assert input_fingerprint(b"notebook", batch_inputs=shared()) == base
    assert input_fingerprint(b"notebook", batch_inputs=shared(**change)) != base
    assert input_fingerprint(b"notebook ", batch_inputs=shared()) != base


def rows(book, **fingerprints_and_status):
    run = book.start_run(assignment="kadai8", budget="quick", jobs=1, threads=1, grader_version="t")
    for student, (fingerprint, status) in fingerprints_and_status.items():
        book.record_result(run, make_result(student, status=status), fingerprint=fingerprint, seconds=1.0)
    return book.results("kadai8")


def test_the_plan_runs_new_changed_and_failed_students_and_reuses_the_rest(book):
    found = [Submission(s, Path(f"{s}.ipynb")) for s in ("a", "b", "c", "d")]
    previous = rows(book, a=("fa", "graded"), b=("old", "graded"), c=("fc", "grader_error"))
    plan = plan_batch(found, {"a": "fa", "b": "fb", "c": "fc", "d": "fd"}, previous)
    assert [(p.submission.student, p.run, p.reason) for p in plan] == [
        ("a", False, "unchanged"), ("b", True, "changed"), ("c", True, "retry"), ("d", True, "new")]
    forced = plan_batch(found, {"a": "fa", "b": "fb", "c": "fc", "d": "fd"}, previous, force=True)
    assert all(p.run for p in forced) and {p.reason for p in forced} == {"forced"}
    only_a = plan_batch(found, {"a": "fa", "b": "fb", "c": "fc", "d": "fd"}, previous, only=["a"])
    assert [(p.submission.student, p.run, p.reason) for p in only_a] == [
        ("a", True, "selected"), ("b", False, "not selected"), ("c", False, "not selected")]  # d: never graded


def test_report_key_follows_the_result_and_the_report_code():
    result = make_result()
    assert report_key(result, "code1") == report_key(make_result(), "code1")
    assert report_key(result, "code2") != report_key(result, "code1")
    assert report_key(make_result(accuracy=0.1), "code1") != report_key(result, "code1")


# ---------------------------------------------------------------- thresholds and calibration
CALIBRATION = {"runs": [{"seed": 8, "accuracy": 0.60}, {"seed": 9, "accuracy": 0.64}, {"seed": 10, "accuracy": 0.62}],
               "mean": 0.62, "std": 0.02, "n": 3, "file": "/c.json", "key": "k"}


def test_a_calibration_gives_mean_minus_sigmas_times_spread():
    threshold = threshold_for(ACCURACY_PARAMS, "quick", reference_accuracy=0.7, calibration=CALIBRATION, lang="en")
    assert threshold.rule == "calibrated"
    assert threshold.value == pytest.approx(0.62 - 3 * 0.02)
    assert threshold.source.startswith("calibration: 3 runs, mean 0.620 ± 0.020")
    assert threshold.calibration["seeds"] == [8, 9, 10]


def test_the_calibrated_spread_has_a_minimum_and_the_floor_holds():
    exact = {**CALIBRATION, "std": 0.0}
    assert threshold_for(ACCURACY_PARAMS, "quick", reference_accuracy=0.7, calibration=exact).value == \
        pytest.approx(0.62 - 3 * 0.01)
    low = {**CALIBRATION, "mean": 0.21}
    assert threshold_for(ACCURACY_PARAMS, "quick", reference_accuracy=0.7, calibration=low).value == 0.2


def test_without_enough_calibration_runs_the_single_reference_rule_applies_and_says_why():
    none = threshold_for(ACCURACY_PARAMS, "quick", reference_accuracy=0.7, lang="en")
    assert (none.rule, none.value) == ("single_reference", 0.55)
    assert none.source == "single reference run 0.700 − margin 0.15 (no calibration)"
    two = {**CALIBRATION, "runs": CALIBRATION["runs"][:2]}
    fallback = threshold_for(ACCURACY_PARAMS, "quick", reference_accuracy=0.7, calibration=two, lang="en")
    assert fallback.rule == "single_reference" and "fewer than 3" in fallback.source
    no_rule = {k: v for k, v in ACCURACY_PARAMS.items() if k != "threshold"}
    assert threshold_for(no_rule, "quick", reference_accuracy=0.7, calibration=CALIBRATION).rule == "single_reference"
    assert threshold_for(ACCURACY_PARAMS, "quick", reference_accuracy=None) is None


def test_a_stored_result_is_rejudged_by_a_new_threshold_without_running_again():
    result = make_result(accuracy=0.6)  # passes the single-reference threshold 0.55
    assert check(result, "model.test_accuracy").status == "pass"
    strict = threshold_for(ACCURACY_PARAMS, "quick", reference_accuracy=0.7,
                           calibration={**CALIBRATION, "mean": 0.70, "std": 0.01})
    rejudged = rejudge_accuracy(result, SPEC, strict)
    accuracy = check(rejudged, "model.test_accuracy")
    assert (accuracy.status, accuracy.points) == ("fail", 0)
    assert accuracy.expected.startswith("≥ 0.670 (calibration 3 runs")
    assert accuracy.public_message == SPEC.checks[[c.id for c in SPEC.checks].index("model.test_accuracy")].fail.ja
    assert rejudged.score == result.score - 10
    assert rejudged.reference["threshold_rule"] == "calibrated" and rejudged.reference["threshold"] == 0.67
    assert check(result, "model.test_accuracy").status == "pass"  # the stored result itself is untouched
    same = rejudge_accuracy(result, SPEC, threshold_for(ACCURACY_PARAMS, "quick", reference_accuracy=0.7))
    assert same.to_dict() == result.to_dict()  # same threshold: identical, so the report is not redrawn


def test_rejudging_leaves_a_result_without_accuracy_alone():
    result = make_result(accuracy=None)
    check(result, "model.test_accuracy").status = "not_run"
    strict = threshold_for(ACCURACY_PARAMS, "quick", reference_accuracy=0.7, calibration=CALIBRATION)
    assert check(rejudge_accuracy(result, SPEC, strict), "model.test_accuracy").status == "not_run"


def test_calibration_files_are_keyed_by_budget_data_and_versions(tmp_path):
    runs = [{"seed": 8, "accuracy": 0.5, "seconds": 1}, {"seed": 9, "accuracy": 0.7, "seconds": 1},
            {"seed": 10, "accuracy": None, "seconds": 1, "problem": "timed out"}]
    assert summarize(runs) == {"n": 2, "mean": 0.6, "std": pytest.approx(0.1414, abs=1e-4), "min": 0.5, "max": 0.7}
    quick = SPEC.budget("quick")
    info = save_calibration(calibration_path(tmp_path, SPEC, quick, "data1"), spec=SPEC, budget=quick,
                            data_fingerprint="data1", runs=runs)
    loaded = load_calibration(tmp_path, SPEC, quick, "data1")
    assert loaded["mean"] == info["mean"] == 0.6 and loaded["file"].endswith(".json")
    assert load_calibration(tmp_path, SPEC, quick, "data2") is None
    assert load_calibration(tmp_path, SPEC, SPEC.budget("standard"), "data1") is None
    assert load_calibration(None, SPEC, quick, "data1") is None


# ---------------------------------------------------------------- the machine
def test_default_jobs_fit_cores_and_memory(tmp_path):
    assert default_jobs(8192, cores=16, available_mb=20_000) == 2
    assert default_jobs(8192, cores=2, available_mb=100_000) == 2
    assert default_jobs(8192, cores=4, available_mb=1_000) == 1
    assert threads_per_job(2, cores=2) == 1 and threads_per_job(1, cores=2) == 2 and threads_per_job(3, cores=2) == 1
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   19922944 kB\n")
    assert available_memory_mb(meminfo) == 19456
    assert available_memory_mb(tmp_path / "missing") is None


# ---------------------------------------------------------------- work roots of killed graders
def test_work_roots_of_dead_graders_are_removed_and_live_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    stale = tmp_path / "grader-stale"
    (stale / "job").mkdir(parents=True)
    (stale / OWNER_FILE).write_text("12345\n")
    unrelated = tmp_path / "grader-check-x"  # no owner file: not a batch work root
    unrelated.mkdir()
    with work_root() as live:
        assert live.parent == tmp_path and (live / OWNER_FILE).is_file()
        assert not stale.exists() and unrelated.is_dir()
        assert clean_stale_work_roots(tmp_path) == []  # our own lock is held
        assert live.is_dir()
    assert not live.exists()


def test_a_work_root_locked_by_another_live_process_is_kept(tmp_path):
    folder = tmp_path / "grader-other"
    folder.mkdir()
    (folder / OWNER_FILE).write_text("")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(folder / OWNER_FILE)!r}, os.O_RDWR)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\ntime.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert clean_stale_work_roots(tmp_path) == [] and folder.is_dir()
    finally:
        holder.kill()
        holder.wait()
    assert clean_stale_work_roots(tmp_path) == [folder] and not folder.exists()


def test_mountinfo_is_read_deepest_first(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text("22 1 0:5 / /tmp/grader-x rw - tmpfs tmpfs rw\n"
                    "23 22 0:6 / /tmp/grader-x/job\\040a rw - tmpfs tmpfs rw\n"
                    "24 1 0:7 / /tmp/other rw - tmpfs tmpfs rw\n")
    assert mounts_under(Path("/tmp/grader-x"), info) == [Path("/tmp/grader-x/job a"), Path("/tmp/grader-x")]


def test_one_grader_at_a_time_per_output_folder(tmp_path):
    from grader.errors import ConfigError

    with exclusive_output(tmp_path):
        holder = subprocess.run([sys.executable, "-c", (
            f"import sys; sys.path.insert(0, {str(ROOT)!r})\nfrom pathlib import Path\n"
            "from grader.isolation.workroot import exclusive_output\n"
            f"with exclusive_output(Path({str(tmp_path)!r})): pass\n")], capture_output=True, text=True)
        assert holder.returncode != 0 and "another grader" in holder.stderr
    with exclusive_output(tmp_path):  # released
        pass
    # flock is per open file: a second open in one process is refused too
    with pytest.raises(ConfigError), exclusive_output(tmp_path), exclusive_output(tmp_path):
        pass


# ---------------------------------------------------------------- progress
def test_plain_progress_prints_one_line_per_student_with_counts_and_eta():
    stream = io.StringIO()
    progress = PlainProgress(stream)
    progress.start(total=3, to_run=2, jobs=1)
    progress.finished(make_result("s001"), reused=True, seconds=None)
    progress.finished(make_result("s002"), reused=False, seconds=20.0)
    progress.finished(make_result("s003", status="timeout"), reused=False, seconds=30.0)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "3 notebooks: 2 to run (1 at once), 1 unchanged"
    assert lines[1].startswith("[1/3] s001") and "unchanged" in lines[1]
    assert lines[2].startswith("[2/3 ETA 20s] s002") and "20.0 s" in lines[2] and f"{make_result().score} / 100" in lines[2]
    assert lines[3].startswith("[3/3] s003") and "timeout" in lines[3]
    assert format_seconds(125) == "2m05s" and format_seconds(None) == "?"
