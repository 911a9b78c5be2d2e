"""Grades and feedback back into the LMS (`grader export`, `grader feedback`), provisional vs final
scores, and the CLI's answers to common mistakes — on the report fixtures' class (no kernels).

The column lists below are the ones the LMSs document (cited beside each); the tests read the written
files back with the csv module and compare, so a renamed or reordered column fails.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from review_fixtures import build_reviewable_class
from grader.cli import main as cli
from grader.errors import LmsMappingError
from grader.gradebook.publish import republish
from grader.gradebook.reviews import ReviewStore
from grader.gradebook.store import Gradebook
from grader.lms.export import export
from grader.lms.feedback import release
from grader.results import FLAGGED, MANUAL, StudentResult

ROOT = Path(__file__).resolve().parents[2]
DISCUSSION = "discussion.answered"
# Moodle's grading worksheet as Moodle writes it (English UI): mod/assign/lang/en/assign.php and the
# offline feedback plugin; its importer (mod/assign/feedback/offline/importgradeslib.php) needs
# "Identifier", "Grade" and "Last modified (grade)" by name, and reads "Feedback comments".
MOODLE_WORKSHEET = ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                    "Grade can be changed", "Last modified (submission)", "Last modified (grade)", "Feedback comments"]
# Canvas Gradebook import: Student, ID, SIS User ID, SIS Login ID, Section, then "<assignment> (<id>)"
# (https://teaching.resources.osu.edu/toolsets/carmencanvas/guides/calculating-final-grades/import-csv-file-carmen-grades,
# https://nemogb-dev.github.io/nemogb-r/articles/detailed-canvas-export-info.html).
CANVAS_FIXED = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
MOODLE_NAMES = {"s001_pass": "山田 太郎", "s002_fail": "Hanako Sato", "s003_error": "Jiro Ito",
                "s004_timeout": "佐々木 花子", "s005_died": "Ken Mori", "s006_invalid": "Aya Kato"}


def moodle_folder(student: str) -> str:
    return f"{MOODLE_NAMES[student]}_{participant(student)}_assignsubmission_file_"


def participant(student: str) -> int:
    return 770000 + int(student[1:4])  # distinctive: a leak check looks for it in every file


def write_manifest(out: Path, students, layout: str = "moodle") -> None:
    """What `grader pull` writes (and `grade` copies into OUT) for a Moodle download."""
    entries = [{"student": s, "original_name": "kadai8.ipynb", "submitted_at": "2026-07-10T21:30:00+09:00",
                "late": False, "late_by_s": 0, "layout": layout, "lms_id": str(participant(s)),
                "source": f"{moodle_folder(s)}/kadai8.ipynb" if layout == "moodle" else f"{s}.ipynb",
                "attempt": None, "superseded": []} for s in students]
    (out / "submissions.json").write_text(json.dumps({"students": entries}, ensure_ascii=False), encoding="utf-8")


@pytest.fixture
def graded(tmp_path, report_class):
    """The six-student class with a gradebook and Moodle's names, nobody's 考察 scored yet."""
    out, results = build_reviewable_class(tmp_path, report_class)
    write_manifest(out, results)
    return out, results


def score_discussion(out: Path, student: str, points: int, comment: str) -> None:
    with Gradebook.open(out) as book:
        book.set_manual_score("kadai8", student, DISCUSSION, points, comment=comment, scorer="鈴木TA")


def read_csv(path: Path, encoding: str = "utf-8") -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding=encoding))))


# ---------------------------------------------------------------- provisional vs final
def test_a_result_is_final_only_when_every_manual_check_is_scored_and_a_flag_is_decided(report_class):
    passed = report_class[1]["s001_pass"]
    assert passed.pending_manual == 1 and not passed.complete
    scored = StudentResult.from_dict(passed.to_dict())
    next(c for c in scored.checks if c.id == DISCUSSION).status = "pass"
    assert scored.complete and scored.to_dict()["complete"] is True
    scored.status, scored.integrity = FLAGGED, {"ok": False, "review": None}
    assert not scored.complete  # a TA must still decide
    scored.integrity["review"] = {"decision": "rejected"}
    assert scored.complete


def test_class_page_and_grades_csv_mark_provisional_scores_and_keep_them_out_of_the_statistics(graded):
    out, _ = graded
    score_discussion(out, "s001_pass", 9, "よく書けています")
    everyone = republish(out, ROOT, "kadai8")
    final = [r.score for r in everyone.values() if r.complete]
    assert sorted(s for s, r in everyone.items() if r.complete) == ["s001_pass", "s006_invalid"]
    index = (out / "index.html").read_text(encoding="utf-8")
    assert f"<b>{sum(final) / len(final):.1f}</b> / 100" in index  # the mean of final scores only
    provisional = re.search(r'<div id="provisional-stats">(.*?)</div>', index).group(1)
    assert "暫定" in provisional and "<b>4</b>" in provisional
    assert f"{sum(r.score for r in everyone.values()) / 6:.1f}" in provisional
    rows = {row["student"]: row for row in csv.DictReader(io.StringIO((out / "grades.csv").read_text("utf-8-sig")))}
    assert rows["s001_pass"]["complete"] == "1" and rows["s002_fail"]["complete"] == "0"
    assert 'id="provisional"' in (out / "s002_fail" / "report.html").read_text(encoding="utf-8")
    assert 'id="provisional"' not in (out / "s001_pass" / "report.html").read_text(encoding="utf-8")


# ---------------------------------------------------------------- export
def test_moodle_worksheet_has_moodles_columns_participant_ids_and_no_grade_while_provisional(graded):
    out, _ = graded
    score_discussion(out, "s001_pass", 9, "靴の向きに触れていて良い")
    finals = republish(out, ROOT, "kadai8")
    done = export(out=out, project_root=ROOT, assignment="kadai8", format="moodle")
    assert done.path == out / "grader-export-moodle.csv"
    header, *rows = read_csv(done.path)
    assert header == MOODLE_WORKSHEET
    by_id = {row[0]: dict(zip(header, row)) for row in rows}
    assert set(by_id) == {f"Participant {participant(s)}" for s in finals}
    yamada = by_id[f"Participant {participant('s001_pass')}"]
    assert yamada["Grade"] == str(finals["s001_pass"].score) and yamada["Maximum Grade"] == "100"
    assert yamada["Full name"] == "山田 太郎"
    assert yamada["Feedback comments"].startswith("靴の向きに触れていて良い\n")
    assert f"{finals['s001_pass'].score} / 100" in yamada["Feedback comments"]
    assert yamada["Last modified (grade)"] >= "2026"  # ISO 8601, which Moodle's strtotime() reads
    sato = by_id[f"Participant {participant('s002_fail')}"]
    assert sato["Grade"] == "" and "暫定" in sato["Feedback comments"]  # nothing provisional reaches Moodle
    assert sorted(done.provisional) == ["s002_fail", "s003_error", "s004_timeout", "s005_died"]


def test_moodle_formats_refuse_a_class_that_was_not_pulled_from_moodle(graded):
    out, results = graded
    write_manifest(out, results, layout="plain")
    with pytest.raises(LmsMappingError, match="grader pull"):
        export(out=out, project_root=ROOT, assignment="kadai8", format="moodle")
    with pytest.raises(LmsMappingError, match="--format folder"):
        release(out=out, project_root=ROOT, assignment="kadai8", format="moodle")


def test_canvas_import_has_canvas_columns_and_a_points_possible_row(graded):
    out, _ = graded
    score_discussion(out, "s001_pass", 7, "")
    finals = republish(out, ROOT, "kadai8")
    done = export(out=out, project_root=ROOT, assignment="kadai8", format="canvas", canvas_assignment_id="4567",
                  to=out.parent / "canvas.csv")
    header, points, *rows = read_csv(done.path)
    assert header[:5] == CANVAS_FIXED and re.fullmatch(r".+ \(4567\)", header[5]) and len(header) == 6
    assert points[0].strip() == "Points Possible" and points[5] == "100"
    by_sis = {row[2]: row for row in rows}
    assert by_sis["s001_pass"][5] == str(finals["s001_pass"].score)
    assert by_sis["s002_fail"][5] == ""


def test_generic_csv_has_complete_and_the_tas_comment(graded):
    out, _ = graded
    score_discussion(out, "s001_pass", 8, "もう少し具体的に")
    finals = republish(out, ROOT, "kadai8")
    done = export(out=out, project_root=ROOT, assignment="kadai8", format="csv")
    rows = {r["student"]: r for r in csv.DictReader(io.StringIO(done.path.read_text(encoding="utf-8-sig")))}
    assert (rows["s001_pass"]["complete"], rows["s001_pass"]["ta_comments"]) == ("1", "もう少し具体的に")
    assert rows["s001_pass"]["score"] == str(finals["s001_pass"].score)
    assert rows["s002_fail"]["complete"] == "0" and rows["s002_fail"]["score"] == str(finals["s002_fail"].score)


# ---------------------------------------------------------------- feedback
def leaks(text: str, student: str, results: dict[str, StudentResult]) -> list[str]:
    """Anything in a student's file that belongs to someone else or must stay with the grader."""
    found = [f"link to {what}" for what in ("../index.html", "result.json", "kernel.log") if what in text]
    for other in results:
        if other != student:
            found += [f"{other}: {v}" for v in (other, MOODLE_NAMES[other], str(participant(other))) if v in text]
    reference = next(iter(results.values())).reference
    threshold = reference["threshold"]
    secrets = {f"{threshold:.3f}", f"{threshold:.4f}", f"{reference['accuracy']:.3f}"}
    secrets |= {c.expected for r in results.values() for c in r.checks
                if not c.visible and isinstance(c.expected, str) and len(c.expected) >= 5}
    return found + [f"hidden value {s}" for s in secrets if s in text]


def test_feedback_folders_hold_each_students_own_report_and_notebook_and_nothing_else(graded):
    out, results = graded
    score_discussion(out, "s001_pass", 9, "靴の向きに触れていて良い")
    with ReviewStore(out) as store:  # an override whose reason names another student stays with the TA
        store.set_override("kadai8", "s002_fail", "model.architecture", 0, reason="s003_error と同一のコード",
                           reviewer="鈴木TA")
    finals = republish(out, ROOT, "kadai8")
    done = release(out=out, project_root=ROOT, assignment="kadai8", to=out.parent / "fb")
    assert sorted(done.students) == sorted(results)
    for student in results:
        folder = done.path / student
        names = sorted(p.name for p in folder.iterdir())
        assert names == (["report.html"] if student == "s006_invalid" else ["executed.ipynb", "report.html"])
        html = (folder / "report.html").read_text(encoding="utf-8")
        assert leaks(html, student, results) == [], student
        assert "TA 採点: ______" not in html and "TA 用" not in html
    yamada = (done.path / "s001_pass" / "report.html").read_text(encoding="utf-8")
    assert "靴の向きに触れていて良い" in yamada and 'id="provisional"' not in yamada
    assert "鈴木TA" not in yamada  # the scorer's name is the TA's business
    sato = (done.path / "s002_fail" / "report.html").read_text(encoding="utf-8")
    assert 'id="provisional"' in sato and "確認中" in sato and "同一のコード" not in sato
    assert f"{finals['s002_fail'].score}<span> / 100" in sato
    ta_copy = (out / "s002_fail" / "report.html").read_text(encoding="utf-8")
    assert "同一のコード" in ta_copy and "../index.html" in ta_copy  # the TA's report is as it was
    # A rerun replaces its own folder; a folder it did not write is never emptied.
    release(out=out, project_root=ROOT, assignment="kadai8", to=out.parent / "fb")
    (out.parent / "mine").mkdir()
    (out.parent / "mine" / "keep.txt").write_text("x")
    with pytest.raises(Exception, match="not empty"):
        release(out=out, project_root=ROOT, assignment="kadai8", to=out.parent / "mine")
    assert (out.parent / "mine" / "keep.txt").is_file()


def moodle_participant_of(path: str) -> int | None:
    """Moodle's rule (mod/assign/feedback/file/importziplib.php, is_valid_filename_for_import): the
    first path part that splits at "_" into ≥ 4 pieces with a number second names the participant."""
    for part in path.split("/")[:-1]:
        pieces = part.split("_", 4)
        if len(pieces) >= 4 and pieces[1].isdigit() and pieces[2] == "assignsubmission":
            return int(pieces[1])
    return None


def test_moodle_feedback_zip_puts_every_file_in_the_students_own_submission_folder(graded):
    out, results = graded
    done = release(out=out, project_root=ROOT, assignment="kadai8", format="moodle")
    assert done.path == out / "grader-feedback-moodle.zip"
    with zipfile.ZipFile(done.path) as archive:
        names = archive.namelist()
        assert all(info.flag_bits & 0x800 for info in archive.infolist() if not info.filename.isascii())
        for name in names:
            student = name.split("/")[0].split("_")[0]
            owner = next(s for s in results if MOODLE_NAMES[s] == student)
            assert moodle_participant_of(name) == participant(owner), name
            if name.endswith(".html"):
                assert leaks(archive.read(name).decode("utf-8"), owner, results) == [], name
    assert {n.split("/")[0] for n in names} == {moodle_folder(s) for s in results}


def test_feedback_in_another_language_than_graded_says_how_to_rejudge(graded):
    out, _ = graded
    with pytest.raises(Exception, match="grader grade --lang en"):
        release(out=out, project_root=ROOT, assignment="kadai8", lang="en")


# ---------------------------------------------------------------- the CLI
def test_grade_given_a_zip_suggests_grader_pull(tmp_path):
    download = tmp_path / "kadai8-download.zip"
    with zipfile.ZipFile(download, "w") as archive:
        archive.writestr("Name_1_assignsubmission_file_/a.ipynb", "{}")
    run = CliRunner().invoke(cli, ["grade", "--assignment", "kadai8", "--submissions", str(download),
                                   "--out", str(tmp_path / "out")])
    assert run.exit_code == 2 and "grader pull --from" in run.output, run.output
    assert not (tmp_path / "out").exists()


def test_grade_on_an_empty_folder_is_an_error_and_writes_no_class_page(tmp_path):
    (tmp_path / "subs").mkdir()
    run = CliRunner().invoke(cli, ["grade", "--assignment", "kadai8", "--submissions", str(tmp_path / "subs"),
                                   "--out", str(tmp_path / "out")])
    assert run.exit_code == 2 and "ノートブック" in run.output and "no notebook" in run.output
    assert not (tmp_path / "out" / "index.html").exists()


def test_grade_without_data_names_grader_data(tmp_path):
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "s1.ipynb").write_text("{}", encoding="utf-8")
    run = CliRunner().invoke(cli, ["grade", "--assignment", "kadai8", "--submissions", str(tmp_path / "subs"),
                                   "--out", str(tmp_path / "out"), "--keras-home", str(tmp_path / "nodata")])
    assert run.exit_code == 3 and "grader data" in run.output and "make data" in run.output, run.output


def test_every_command_help_has_an_example():
    for name in cli.commands:
        run = CliRunner().invoke(cli, [name, "--help"])
        assert run.exit_code == 0 and re.search(r"Example:\n +grader ", run.output), name


def test_export_and_feedback_on_a_folder_that_was_not_graded_say_grade_first(tmp_path):
    for args in (["export", "--format", "csv"], ["feedback"]):
        run = CliRunner().invoke(cli, [*args, "--out", str(tmp_path)])
        assert run.exit_code == 2 and "grader grade --out" in run.output, run.output


def test_export_and_feedback_from_the_cli_write_their_files(graded):
    out, _ = graded
    run = CliRunner().invoke(cli, ["export", "--out", str(out), "--format", "moodle"])
    assert run.exit_code == 0 and "6 students (5 provisional)" in run.output, run.output
    run = CliRunner().invoke(cli, ["feedback", "--out", str(out), "--format", "moodle"])
    assert run.exit_code == 0 and (out / "grader-feedback-moodle.zip").is_file(), run.output
    assert MANUAL  # the status word the provisional decision rests on (grader.results)


def test_default_outputs_in_out_have_names_no_student_can_have(graded):
    """OUT's top level is shared with student folders (grader.assignment.student_ids)."""
    from grader.assignment import student_ids

    out, results = graded
    before = {p.name for p in out.iterdir()}
    for format in ("moodle", "canvas", "csv"):
        export(out=out, project_root=ROOT, assignment="kadai8", format=format)
    for format in ("folder", "moodle"):
        release(out=out, project_root=ROOT, assignment="kadai8", format=format)
    written = {p.name for p in out.iterdir()} - before
    assert len(written) == 5 and all("reserved" in student_ids.problem(name) for name in written), written
