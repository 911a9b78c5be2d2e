"""Incremental, resumable, parallel grading through real kernels on the tiny synthetic data set.

One small class is graded in parallel first; the tests that follow regrade the same output folder
(in file order) and read the gradebook's execution log to see who was executed again. The resume
test kills a real `python -m grader grade` process with SIGKILL halfway through its batch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from grader.commands import grade
from grader.gradebook.store import GRADEBOOK_FILE, Gradebook
from grader.isolation.workroot import OWNER_FILE, mounts_under

from conftest import FIXTURES, ROOT
from report_fixtures import JAPANESE, japanese_in_grader_text

pytestmark = pytest.mark.slow

CLASS = ("batch32", "correct", "integer_labels")
RESUME_CLASS = ("batch32", "correct", "integer_labels", "no_discussion")


def copy_class(folder: Path, names) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(FIXTURES / f"{name}.ipynb", folder / f"{name}.ipynb")
    return folder


@pytest.fixture(scope="module")
def klass(tmp_path_factory, tiny_keras_home, test_project, reference_cache):
    """The class graded once with two kernels at once (one TensorFlow thread each)."""
    base = tmp_path_factory.mktemp("incremental")
    submissions = copy_class(base / "submissions", CLASS)
    out = base / "out"

    def run(**options):
        settings = dict(assignment="kadai8", submissions=submissions, out=out, budget="quick", jobs=2, threads=1,
                        lang="ja", project_root=test_project, keras_home=tiny_keras_home, cache_root=reference_cache,
                        calibration_root=base / "calibration")
        return grade.main(**{**settings, **options})

    first = run()
    return {"run": run, "out": out, "submissions": submissions, "first": first,
            "automatic": automatic_results(out)}


def automatic_results(out: Path) -> dict:
    """The gradebook's results (without manual scores on top), by student."""
    with Gradebook.open(out) as book:
        return {student: row.result for student, row in book.results("kadai8").items()}


def execution_counts(out: Path) -> dict[str, int]:
    with Gradebook.open(out) as book:
        counts: dict[str, int] = {}
        for execution in book.executions("kadai8"):
            counts[execution.student] = counts.get(execution.student, 0) + 1
        return counts


def mtimes(out: Path, students) -> dict[str, int]:
    return {s: (out / s / "executed.ipynb").stat().st_mtime_ns for s in students}


def untimed(evaluation: dict | None) -> dict | None:
    """The trusted evaluation without the prediction's wall time (the one thing load may change)."""
    return None if evaluation is None else {k: v for k, v in evaluation.items() if k != "predict_seconds"}


def comparable(result) -> dict:
    """Per check: status, points, expected and actual value."""
    return {"status": result.status,
            "checks": {c.id: (c.status, c.points, c.expected, c.actual) for c in result.checks}}


# ---------------------------------------------------------------- in file order, on one output folder
def test_the_first_batch_grades_everyone_and_logs_each_execution(klass):
    first = klass["first"]
    assert sorted(first.executed) == sorted(CLASS) and first.reused == []
    assert {r.student: r.status for r in first.results} == {s: "graded" for s in CLASS}
    assert execution_counts(klass["out"]) == {s: 1 for s in CLASS}
    with Gradebook.open(klass["out"]) as book:
        run = book.runs()[-1]
        assert (run.status, run.executed, run.reused, run.jobs, run.threads) == ("finished", 3, 0, 2, 1)
        assert all(row.fingerprint and row.report_key for row in book.results("kadai8").values())
    for student in CLASS:
        stored = json.loads((klass["out"] / student / "result.json").read_text(encoding="utf-8"))
        assert stored["reference"]["threshold_rule"] == "single_reference"
        assert "（較正なし）" in stored["reference"]["threshold_source"]


def test_an_unchanged_class_is_not_executed_again(klass):
    out = klass["out"]
    before = mtimes(out, CLASS)
    reports = {s: (out / s / "report.html").stat().st_mtime_ns for s in CLASS}
    started = time.monotonic()
    again = klass["run"]()
    assert again.executed == [] and sorted(again.reused) == sorted(CLASS)
    assert time.monotonic() - started < 15  # no kernel, no data set, no reference: seconds
    assert execution_counts(out) == {s: 1 for s in CLASS}
    assert mtimes(out, CLASS) == before
    assert {s: (out / s / "report.html").stat().st_mtime_ns for s in CLASS} == reports  # nothing to redraw
    assert [r.to_dict() for r in again.results] == [r.to_dict() for r in klass["first"].results]
    assert (out / "index.html").is_file() and (out / "grades.csv").is_file()


def test_grading_again_in_english_executes_nobody_and_writes_english(klass, tmp_path):
    """The language is not an input: results are judged again from their kept evidence."""
    english = tmp_path / "out-en"
    shutil.copytree(klass["out"], english)
    again = klass["run"](out=english, lang="en")
    assert again.executed == [] and sorted(again.reused) == sorted(CLASS)
    assert execution_counts(english) == {s: 1 for s in CLASS}
    assert {r.student: (r.status, r.score) for r in again.results} == \
        {r.student: (r.status, r.score) for r in klass["first"].results}
    for result in again.results:
        assert result.lang == "en" and japanese_in_grader_text(result) == [], result.student
        html = (english / result.student / "report.html").read_text(encoding="utf-8")
        assert '<html lang="en">' in html
        graders_part = re.sub(r'<div class="answer">.*?</div>', "", html.split('<h2 id="notebook">')[0], flags=re.S)
        assert not JAPANESE.search(graders_part.replace("考察", "")), result.student
    with Gradebook.open(english) as book:
        assert {row.result.lang for row in book.results("kadai8").values()} == {"en"}
    assert '<html lang="en">' in (english / "index.html").read_text(encoding="utf-8")


def test_forced_serial_regrade_equals_the_parallel_one_and_keeps_manual_scores(klass):
    """--force with one kernel at a time gives exactly what two at once gave.

    Both batches use one TensorFlow thread per kernel (the default would give 2 threads serially and
    1 in parallel, and float sums in another order), and the harness seeds every kernel just before
    its first cell and feeds `fit` without prefetching, so even the accuracies are equal. (Before
    those two harness fixes, two runs of one notebook could differ by 0.17 in accuracy under load.)
    """
    out = klass["out"]
    with Gradebook.open(out) as book:
        book.set_manual_score("kadai8", "correct", "discussion.answered", 7, comment="要点は押さえている", scorer="ta")
    serial = klass["run"](jobs=1, force=True)
    assert sorted(serial.executed) == sorted(CLASS)
    assert execution_counts(out) == {s: 2 for s in CLASS}
    parallel, now = klass["automatic"], automatic_results(out)
    differences = {(s, check): (was, got) for s in CLASS
                   for check, was in comparable(parallel[s])["checks"].items()
                   if (got := comparable(now[s])["checks"][check]) != was}
    assert differences == {}
    assert {s: now[s].status for s in CLASS} == {s: parallel[s].status for s in CLASS}
    assert {s: untimed(now[s].evaluation) for s in CLASS} == {s: untimed(parallel[s].evaluation) for s in CLASS}
    correct = next(r for r in serial.results if r.student == "correct")
    discussion = next(c for c in correct.checks if c.id == "discussion.answered")
    assert (discussion.status, discussion.points) == ("pass", 7)
    assert correct.score == now["correct"].score + 7
    stored = json.loads((out / "correct" / "result.json").read_text(encoding="utf-8"))
    assert stored["score"] == correct.score
    with Gradebook.open(out) as book:
        assert book.runs()[-1].jobs == 1


def test_student_option_regrades_only_that_student(klass):
    out = klass["out"]
    before = mtimes(out, CLASS)
    again = klass["run"](students=["batch32"])
    assert again.executed == ["batch32"] and sorted(again.reused) == ["correct", "integer_labels"]
    assert execution_counts(out) == {"batch32": 3, "correct": 2, "integer_labels": 2}
    after = mtimes(out, CLASS)
    assert after["batch32"] != before["batch32"]
    assert {s: after[s] for s in ("correct", "integer_labels")} == {s: before[s] for s in ("correct", "integer_labels")}
    assert len(again.results) == 3  # the class pages still list everyone


def test_a_changed_notebook_is_executed_again_and_no_one_else(klass):
    path = klass["submissions"] / "integer_labels.ipynb"
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_markdown_cell("追記: 提出後に修正しました。"))
    nbformat.write(notebook, path)
    again = klass["run"]()
    assert again.executed == ["integer_labels"]
    assert execution_counts(klass["out"]) == {"batch32": 3, "correct": 2, "integer_labels": 3}


# ---------------------------------------------------------------- kill -9 in the middle of a batch
def finished_students(gradebook: Path) -> set[str]:
    if not gradebook.is_file():
        return set()
    try:
        db = sqlite3.connect(f"file:{gradebook}?mode=ro", uri=True, timeout=1)
        try:
            return {row[0] for row in db.execute("SELECT student FROM results")}
        finally:
            db.close()
    except sqlite3.Error:
        return set()  # created but not yet initialised


def stale_work_roots() -> list[Path]:
    """Batch work roots in the temp folder whose owner lock nobody holds."""
    import fcntl
    import tempfile

    stale = []
    for folder in Path(tempfile.gettempdir()).glob("grader-*"):
        owner = folder / OWNER_FILE
        if not owner.is_file():
            continue
        fd = os.open(owner, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            stale.append(folder)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
    return stale


def test_a_batch_killed_with_sigkill_resumes_without_losing_or_redoing_finished_students(
        tmp_path, tiny_keras_home, test_project, reference_cache, klass):
    # `klass` first: the reference run is cached, so the killed batch starts executing students at once.
    submissions = copy_class(tmp_path / "submissions", RESUME_CLASS)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "grader", "grade", "--assignment", "kadai8", "--submissions", str(submissions),
               "--out", str(out), "--budget", "quick", "--jobs", "1", "--threads", "1",
               "--keras-home", str(tiny_keras_home), "--cache", str(reference_cache),
               "--calibration", str(tmp_path / "calibration"), "--project", str(test_project)]
    log = open(tmp_path / "first.log", "w")
    batch = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while not finished_students(out / GRADEBOOK_FILE):
            assert batch.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline, "no student finished in 300 s"
            time.sleep(0.2)
    finally:
        os.killpg(batch.pid, signal.SIGKILL)
        batch.wait()
        log.close()
    finished = finished_students(out / GRADEBOOK_FILE)
    assert 1 <= len(finished) < len(RESUME_CLASS)
    before = mtimes(out, finished)
    with Gradebook.open(out) as book:
        in_flight = [e.student for e in book.executions("kadai8") if e.finished_at is None]
        assert len(in_flight) <= 1 and not set(in_flight) & finished
    left_behind = [p for p in stale_work_roots()]
    assert left_behind, "the killed grader's work folder should still be there (with its job's tmpfs)"

    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{len(RESUME_CLASS)} notebooks: {len(RESUME_CLASS) - len(finished)} to run" in rerun.stdout
    for folder in left_behind:  # the rerun cleaned up after the killed grader
        assert not folder.exists() and not mounts_under(folder)
    assert mtimes(out, finished) == before
    assert execution_counts(out) == {s: 1 + (s in in_flight) for s in RESUME_CLASS}
    with Gradebook.open(out) as book:
        assert {s: r.status for s, r in book.results("kadai8").items()} == {s: "graded" for s in RESUME_CLASS}
        runs = book.runs()
        assert [r.status for r in runs] == ["interrupted", "finished"]
        assert (runs[1].executed, runs[1].reused) == (len(RESUME_CLASS) - len(finished), len(finished))
        assert [e.status for e in book.executions("kadai8") if e.student in in_flight][:1] == ["interrupted"]
    rows = (out / "grades.csv").read_text(encoding="utf-8-sig").splitlines()
    assert len(rows) == 1 + len(RESUME_CLASS)
